using FluentAssertions;
using IlgpuSae.Sae;
using IlgpuSae.Tests.Infrastructure;
using Xunit;

namespace IlgpuSae.Tests.Sae;

/// <summary>Gradient pursuit (ITO) on every backend against a dense double-precision transcription of the
/// algorithm.</summary>
[Collection(DeviceCollection.Name)]
public sealed class GradientPursuitTests(DeviceFixture devices)
{
    /// <summary>
    /// The dense algorithm of the paper's App. A in double precision: α = 0, S = ∅; k times: r = x − αD, c =
    /// r·Dᵀ,
    /// S ∪= argmax c, g = S ⊙ c, v = g·D, η = ⟨v, r⟩/⟨v, v⟩, α = max(α + ηg, 0). D has unit-norm rows.
    /// </summary>
    public static double[] Reference(double[] x, int rows, double[] dict, int m, int d, int k)
    {
        var alpha = new double[rows * m];
        for (int b = 0; b < rows; b++)
        {
            var selected = new bool[m];
            for (int it = 0; it < k; it++)
            {
                var r = new double[d];
                for (int j = 0; j < d; j++)
                {
                    r[j] = x[b * d + j];
                    for (int i = 0; i < m; i++)
                    {
                        r[j] -= alpha[b * m + i] * dict[i * d + j];
                    }
                }

                var c = new double[m];
                int best = 0;
                for (int i = 0; i < m; i++)
                {
                    for (int j = 0; j < d; j++)
                    {
                        c[i] += r[j] * dict[i * d + j];
                    }

                    if (c[i] > c[best])
                    {
                        best = i;
                    }
                }

                selected[best] = true;
                var g = c.Select((v, i) => selected[i] ? v : 0).ToArray();
                var vec = new double[d];
                for (int i = 0; i < m; i++)
                {
                    for (int j = 0; j < d; j++)
                    {
                        vec[j] += g[i] * dict[i * d + j];
                    }
                }

                double vr = vec.Select((v, j) => v * r[j]).Sum(),
                    vv = vec.Sum(v => v * v);
                double eta = vv > 0 ? vr / vv : 0;
                for (int i = 0; i < m; i++)
                {
                    alpha[b * m + i] = Math.Max(alpha[b * m + i] + eta * g[i], 0);
                }
            }
        }

        return alpha;
    }

    [SkippableTheory]
    [MemberData(nameof(Targets.Data), MemberType = typeof(Targets))]
    public void Device_pursuit_matches_the_dense_reference_and_respects_sign_and_sparsity(Target target)
    {
        var device = devices.Get(target);
        const int rows = 24,
            m = 40,
            d = 12;
        var rng = new Random(17);
        var dict = new double[m * d];
        for (int i = 0; i < m; i++)
        {
            double norm = 0;
            for (int j = 0; j < d; j++)
            {
                dict[i * d + j] = rng.NextDouble() * 2 - 1;
                norm += dict[i * d + j] * dict[i * d + j];
            }

            for (int j = 0; j < d; j++)
            {
                dict[i * d + j] /= Math.Sqrt(norm);
            }
        }

        // Sparse non-negative combinations of a few atoms plus noise, so the selections are well separated.
        var x = new double[rows * d];
        for (int b = 0; b < rows; b++)
        {
            for (int s = 0; s < 3; s++)
            {
                int atom = rng.Next(m);
                double weight = 0.5 + rng.NextDouble() * 2;
                for (int j = 0; j < d; j++)
                {
                    x[b * d + j] += weight * dict[atom * d + j];
                }
            }

            for (int j = 0; j < d; j++)
            {
                x[b * d + j] += 0.05 * (rng.NextDouble() - 0.5);
            }
        }

        // Scaled atoms: the device normalises them; coefficients refer to the unit-norm atoms.
        var scaled = dict.Select((v, i) => (float)(v * (1 + i / d % 3))).ToArray();
        using var pursuit = new GradientPursuit(device, scaled, m, d);
        foreach (int k in new[] { 1, 3, 6 })
        {
            var expected = Reference(x, rows, dict, m, d, k);
            var actual = pursuit.Coefficients(x.Select(v => (float)v).ToArray(), rows, k);
            for (int b = 0; b < rows; b++)
            {
                var row = actual.AsSpan(b * m, m).ToArray();
                row.Should().OnlyContain(a => a >= 0f && float.IsFinite(a), "coefficients are non-negative");
                row.Count(a => a > 0f).Should().BeLessThanOrEqualTo(k, $"at most k = {k} atoms");
                for (int i = 0; i < m; i++)
                {
                    actual[b * m + i]
                        .Should()
                        .BeApproximately(
                            (float)expected[b * m + i],
                            (float)TestTolerances.PursuitCoefficients.Bound(expected[b * m + i]),
                            $"α[{b}, {i}] with k = {k} on {target}"
                        );
                }
            }
        }

        // The device reconstruction is αD + b_dec, and more atoms never reconstruct worse on these rows.
        var bias = Enumerable.Range(0, d).Select(j => 0.1f * j).ToArray();
        using var withBias = new GradientPursuit(device, scaled, m, d, bias);
        var xs = x.Select((v, i) => (float)v + bias[i % d]).ToArray();
        using var tx = device.Upload(xs, rows, d);
        double previous = double.MaxValue;
        foreach (int k in new[] { 1, 2, 4, 8 })
        {
            var xhat = withBias.Reconstruct(tx, k);
            var host = new float[rows * d];
            ILGPU.Runtime.ArrayViewExtensions.CopyToCPU(xhat.Data, device.Stream, host);
            device.Synchronize();
            withBias.LastL0.Should().BeLessThanOrEqualTo(k).And.BeGreaterThan(0);
            double err = host.Select((v, i) => (v - xs[i]) * (double)(v - xs[i])).Sum();
            err.Should().BeLessThanOrEqualTo(previous + TestTolerances.PursuitErrorSlack, $"k = {k}");
            previous = err;
        }

        FluentActions.Invoking(() => withBias.Reconstruct(tx, 0)).Should().Throw<ArgumentException>();
        FluentActions.Invoking(() => withBias.Reconstruct(tx, m + 1)).Should().Throw<ArgumentException>();
    }
}
