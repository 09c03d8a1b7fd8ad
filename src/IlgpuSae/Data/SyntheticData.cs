namespace IlgpuSae.Data;

/// <summary>
/// A superposition toy with known ground truth: <paramref name="Features"/> random unit directions in R^d
/// (more features than dimensions), each row a sparse non-negative combination of them.
/// </summary>
/// <param name="Rows">Row-major activations [N, d].</param>
/// <param name="Directions">Row-major true feature directions [F, d], unit norm.</param>
/// <param name="N">Number of rows.</param>
/// <param name="D">Width.</param>
/// <param name="Features">Number of true features.</param>
public sealed record SyntheticData(float[] Rows, float[] Directions, int N, int D, int Features)
{
    /// <summary>
    /// Generates the toy: each feature fires independently with probability <paramref name="meanL0"/>/F and,
    /// when
    /// it fires, with magnitude 1 + Exp(1) (so magnitudes are bounded away from 0 and heavy-tailed, as SAE
    /// features are).
    /// </summary>
    public static SyntheticData Generate(int n, int d, int features, double meanL0, ulong seed)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(n);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(d);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(features);
        if (meanL0 <= 0 || meanL0 > features)
        {
            throw new ArgumentOutOfRangeException(nameof(meanL0), $"The mean L0 must be in (0, {features}].");
        }

        var rng = new SplitMix64(SplitMix64.Mix(seed, 0x5917));
        double Gaussian()
        {
            double u1 = 1 - rng.NextDouble(),
                u2 = rng.NextDouble();
            return Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
        }

        var directions = new float[(long)features * d];
        for (int f = 0; f < features; f++)
        {
            double norm = 0;
            var v = new double[d];
            for (int j = 0; j < d; j++)
            {
                v[j] = Gaussian();
                norm += v[j] * v[j];
            }

            norm = Math.Sqrt(norm);
            for (int j = 0; j < d; j++)
            {
                directions[(long)f * d + j] = (float)(v[j] / norm);
            }
        }

        double p = meanL0 / features;
        var rows = new float[(long)n * d];
        for (int r = 0; r < n; r++)
        {
            for (int f = 0; f < features; f++)
            {
                if (rng.NextDouble() < p)
                {
                    double magnitude = 1 - Math.Log(1 - rng.NextDouble());
                    for (int j = 0; j < d; j++)
                    {
                        rows[(long)r * d + j] += (float)(magnitude * directions[(long)f * d + j]);
                    }
                }
            }
        }

        return new SyntheticData(rows, directions, n, d, features);
    }
}
