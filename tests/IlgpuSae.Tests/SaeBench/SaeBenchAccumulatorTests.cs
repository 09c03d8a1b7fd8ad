using FluentAssertions;
using IlgpuSae.SaeBench;
using Xunit;

namespace IlgpuSae.Tests.SaeBench;

/// <summary>
/// <see cref="SaeBenchAccumulator"/> against a literal double-precision transcription of SAEBench 0.6.0's
/// formulas (<c>evals/core/main.py</c>, <c>get_sparsity_and_variance_metrics</c>) on small random batches of
/// unequal sizes, and the explained-variance definitions on cases with known answers.
/// </summary>
public sealed class SaeBenchAccumulatorTests
{
    private const double Tol = 1e-10;

    /// <summary>One evaluation batch: x and x̂ [n, d], f [n, m], a prompt per row.</summary>
    private sealed record Batch(double[][] X, double[][] F, double[][] Xhat, int[] Prompts);

    private static List<Batch> RandomBatches(int d, int m, int seed, params int[] sizes)
    {
        var rng = new Random(seed);
        float R(double scale, double shift = 0) => (float)((rng.NextDouble() * 2 - 1) * scale + shift);
        var batches = new List<Batch>();
        int prompt = 0;
        foreach (var n in sizes)
        {
            var x = new double[n][];
            var f = new double[n][];
            var h = new double[n][];
            var p = new int[n];
            for (int t = 0; t < n; t++)
            {
                x[t] = [.. Enumerable.Range(0, d).Select(j => (double)R(1.5, 1.5 * j))];
                h[t] = [.. x[t].Select(v => (double)(float)(v + R(0.4)))];
                // Negative, zero and positive features: l0 counts ≠ 0, density counts > 0, l1 has no abs.
                f[t] = [.. Enumerable.Range(0, m).Select(_ => rng.Next(3) == 0 ? 0.0 : R(1, 0.3))];
                if (t > 0 && rng.Next(3) == 0)
                {
                    prompt++;
                }

                p[t] = prompt;
            }

            prompt++;
            batches.Add(new Batch(x, f, h, p));
        }

        return batches;
    }

    private static float[] Flat(double[][] rows) => [.. rows.SelectMany(r => r.Select(v => (float)v))];

    private static SaeBenchTokenMetrics Accumulate(List<Batch> batches, int d, int m, bool prompts = true)
    {
        var acc = new SaeBenchAccumulator(d, m);
        foreach (var b in batches)
        {
            acc.Add(Flat(b.X), Flat(b.F), Flat(b.Xhat), b.X.Length, prompts ? b.Prompts : default);
        }

        return acc.Result();
    }

    private static double Dot(double[] a, double[] b) => a.Zip(b, (u, v) => u * v).Sum();

    private static double Norm(double[] a) => Math.Sqrt(Dot(a, a));

    private static double Sse(double[] a, double[] b) => a.Zip(b, (u, v) => (u - v) * (u - v)).Sum();

    [Fact]
    public void Every_token_metric_matches_a_double_precision_transcription_of_SAEBench()
    {
        const int d = 5,
            m = 7;
        var batches = RandomBatches(d, m, seed: 11, 9, 4, 13);
        // Round-trip through float32 so the reference sees exactly what the accumulator sees.
        batches =
        [
            .. batches.Select(b => new Batch(
                [.. b.X.Select(r => r.Select(v => (double)(float)v).ToArray())],
                [.. b.F.Select(r => r.Select(v => (double)(float)v).ToArray())],
                [.. b.Xhat.Select(r => r.Select(v => (double)(float)v).ToArray())],
                b.Prompts
            )),
        ];
        var got = Accumulate(batches, d, m);

        var all = batches.SelectMany(b => b.X.Select((x, t) => (x, f: b.F[t], h: b.Xhat[t], b))).ToList();
        int n = all.Count;
        got.Tokens.Should().Be(n);
        got.Batches.Should().Be(3);
        got.L0.Should().BeApproximately(all.Average(r => r.f.Count(v => v != 0)), Tol);
        got.L1.Should().BeApproximately(all.Average(r => r.f.Sum()), Tol);
        got.L2NormIn.Should().BeApproximately(all.Average(r => Norm(r.x)), Tol);
        got.L2NormOut.Should().BeApproximately(all.Average(r => Norm(r.h)), Tol);
        got.L2Ratio.Should()
            .BeApproximately(all.Average(r => Norm(r.h) / (Norm(r.x) < 1e-4 ? 1 : Norm(r.x))), Tol);
        got.CosSim.Should().BeApproximately(all.Average(r => Dot(r.x, r.h) / (Norm(r.x) * Norm(r.h))), Tol);
        // mse: SSE_t divided by the tokens of t's batch, averaged over tokens.
        got.Mse.Should().BeApproximately(all.Average(r => Sse(r.x, r.h) / r.b.X.Length), Tol);
        got.MsePerElement.Should().BeApproximately(all.Average(r => Sse(r.x, r.h)) / d, Tol);
        got.RelativeReconstructionBias.Should()
            .BeApproximately(
                batches.Average(b =>
                    b.Xhat.Average(h => Dot(h, h)) / b.X.Select((x, t) => Dot(x, b.Xhat[t])).Average()
                ),
                Tol
            );

        // Correct: 1 − E[SSE] / Σ_j (E[x_j²] − E[x_j]²) over every token.
        double variance = Enumerable
            .Range(0, d)
            .Sum(j => all.Average(r => r.x[j] * r.x[j]) - Math.Pow(all.Average(r => r.x[j]), 2));
        got.ExplainedVariance.Should().BeApproximately(1 - all.Average(r => Sse(r.x, r.h)) / variance, Tol);
        // Legacy: the per-token ratio against the batch mean, averaged over tokens.
        double legacy = all.Average(r =>
        {
            var mu = Enumerable.Range(0, d).Select(j => r.b.X.Average(x => x[j])).ToArray();
            return 1 - Sse(r.x, r.h) / Sse(r.x, mu);
        });
        got.ExplainedVarianceLegacy.Should().BeApproximately(legacy, Tol);
        // Bug-compatible (SAEBench 0.6.0 lines 585-587, 617-627): batch means of per-batch means, and the
        // per-dimension mean of x_j² squared in place of Σ_j E[x_j]².
        double meanSse = batches.Average(b => b.X.Select((x, t) => Sse(x, b.Xhat[t])).Average());
        double meanSquares = batches.Average(b => b.X.Average(x => Dot(x, x)));
        double meanPerDim = batches.Average(b =>
            Enumerable.Range(0, d).Average(j => b.X.Average(x => x[j] * x[j]))
        );
        got.ExplainedVarianceBugCompatible.Should()
            .BeApproximately(1 - meanSse / (meanSquares - meanPerDim * meanPerDim), Tol);

        for (int i = 0; i < m; i++)
        {
            int active = all.Count(r => r.f[i] > 0);
            got.FeatureDensity[i].Should().BeApproximately(active / (double)n, Tol);
            var promptsWithActivation = batches.Sum(b =>
                b.Prompts.Where((p, t) => b.F[t][i] > 0).Distinct().Count()
            );
            if (promptsWithActivation == 0)
            {
                double.IsNaN(got.ConsistentActivationHeuristic[i]).Should().BeTrue();
            }
            else
            {
                got.ConsistentActivationHeuristic[i]
                    .Should()
                    .BeApproximately(active / (double)promptsWithActivation, Tol);
            }
        }
    }

    [Fact]
    public void Predicting_the_per_dimension_mean_explains_no_variance_and_a_perfect_reconstruction_all()
    {
        const int d = 6,
            m = 3;
        var batches = RandomBatches(d, m, seed: 3, 17, 5, 11);
        var all = batches.SelectMany(b => b.X).ToList();
        var mean = Enumerable.Range(0, d).Select(j => all.Average(x => (double)(float)x[j])).ToArray();
        var meanPrediction = batches
            .Select(b => b with { Xhat = [.. b.X.Select(_ => mean.ToArray())] })
            .ToList();
        // The mean is stored in float32, so it is off by up to an ulp: EV = 0 to about 1e-7.
        Accumulate(meanPrediction, d, m).ExplainedVariance.Should().BeApproximately(0, 1e-6);
        var perfect = batches.Select(b => b with { Xhat = b.X }).ToList();
        var exact = Accumulate(perfect, d, m);
        exact.ExplainedVariance.Should().Be(1);
        exact.ExplainedVarianceLegacy.Should().Be(1);
        exact.ExplainedVarianceBugCompatible.Should().Be(1);
        exact.Mse.Should().Be(0);
        exact.CosSim.Should().BeApproximately(1, 1e-12);
        exact.RelativeReconstructionBias.Should().BeApproximately(1, 1e-12);
    }

    [Fact]
    public void The_bug_compatible_explained_variance_differs_from_the_correct_one_on_offset_data()
    {
        // Data with a large mean: the buggy denominator E‖x‖² − (mean_j E[x_j²])² is not the total variance.
        var batches = RandomBatches(4, 2, seed: 5, 64);
        var got = Accumulate(batches, 4, 2);
        Math.Abs(got.ExplainedVariance - got.ExplainedVarianceBugCompatible).Should().BeGreaterThan(0.01);
        got.ExplainedVariance.Should().BeInRange(0, 1);
    }

    [Fact]
    public void Without_prompts_the_consistent_activation_heuristic_is_NaN()
    {
        var got = Accumulate(RandomBatches(3, 4, seed: 1, 8), 3, 4, prompts: false);
        got.ConsistentActivationHeuristic.Should().OnlyContain(v => double.IsNaN(v));
        got.FeatureDensity.Should().OnlyContain(v => v >= 0 && v <= 1);
    }

    [Fact]
    public void Bad_batches_are_clear_errors()
    {
        var acc = new SaeBenchAccumulator(2, 3);
        var act = () => acc.Add(new float[4], new float[6], new float[4], 2, [1, 0]);
        act.Should().Throw<ArgumentException>().WithMessage("*non-decreasing*");
        act = () => acc.Add(new float[4], new float[5], new float[4], 2);
        act.Should().Throw<ArgumentException>().WithMessage("*for 2 rows*");
        acc.Add(new float[4], new float[6], new float[4], 2, [0, 0]);
        act = () => acc.Add(new float[4], new float[6], new float[4], 2);
        act.Should().Throw<ArgumentException>().WithMessage("*every batch*");
        var empty = () => new SaeBenchAccumulator(2, 3).Result();
        empty.Should().Throw<InvalidOperationException>();
    }
}
