namespace IlgpuSae.Training;

/// <summary>
/// Centres of a batch of rows for the <c>b_dec</c> initialisation, in double precision on the host: the mean,
/// and the geometric median <c>argmin_g Σ_b ‖x_b − g‖</c> by Weiszfeld's iteration as dictionary_learning and
/// OpenAI run it (start from the mean; weights <c>1/‖x_b − g‖</c>, normalised; at most 100 iterations; stop
/// once g moves less than 1e-5). dictionary_learning divides by zero when g lands on a row (e.g. a batch of
/// identical rows gives NaN); here a distance below <c>1e-12·(1 + ‖g‖)</c> counts as that floor, so such a
/// row pulls hard but finitely, and a batch of identical rows returns that row.
/// </summary>
public static class GeometricMedian
{
    /// <summary>The mean of <paramref name="rows"/> rows of width <paramref name="d"/>.</summary>
    public static double[] Mean(float[] x, int rows, int d)
    {
        ArgumentNullException.ThrowIfNull(x);
        Check(x, rows, d);
        var mean = new double[d];
        for (int b = 0; b < rows; b++)
        {
            for (int j = 0; j < d; j++)
            {
                mean[j] += x[(long)b * d + j];
            }
        }

        for (int j = 0; j < d; j++)
        {
            mean[j] /= rows;
        }

        return mean;
    }

    /// <summary>The geometric median of <paramref name="rows"/> rows of width <paramref name="d"/>.</summary>
    public static double[] Compute(
        float[] x,
        int rows,
        int d,
        int maxIterations = 100,
        double tolerance = 1e-5
    )
    {
        var g = Mean(x, rows, d);
        var weights = new double[rows];
        for (int iteration = 0; iteration < maxIterations; iteration++)
        {
            double norm = Math.Sqrt(g.Sum(v => v * v));
            double floor = 1e-12 * (1 + norm);
            double total = 0;
            for (int b = 0; b < rows; b++)
            {
                double s = 0;
                for (int j = 0; j < d; j++)
                {
                    double diff = x[(long)b * d + j] - g[j];
                    s += diff * diff;
                }

                weights[b] = 1 / Math.Max(Math.Sqrt(s), floor);
                total += weights[b];
            }

            var next = new double[d];
            for (int b = 0; b < rows; b++)
            {
                double w = weights[b] / total;
                for (int j = 0; j < d; j++)
                {
                    next[j] += w * x[(long)b * d + j];
                }
            }

            double moved = 0;
            for (int j = 0; j < d; j++)
            {
                moved += (next[j] - g[j]) * (next[j] - g[j]);
            }

            g = next;
            if (Math.Sqrt(moved) < tolerance)
            {
                break;
            }
        }

        return g;
    }

    private static void Check(float[] x, int rows, int d)
    {
        if (rows <= 0 || d <= 0 || x.LongLength < (long)rows * d)
        {
            throw new ArgumentException($"Need {rows}×{d} values, got {x.LongLength}.");
        }
    }
}
