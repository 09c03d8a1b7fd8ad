using FluentAssertions;
using IlgpuSae.Kernels;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Verification;
using MathNet.Numerics.LinearAlgebra;
using MathNet.Numerics.Statistics;
using Xunit;

namespace IlgpuSae.Tests.Verification;

/// <summary>
/// The double-precision references the kernels are tested against, checked independently: against
/// MathNet.Numerics, published test vectors, and closed forms.
/// </summary>
public sealed class ReferenceTests
{
    [Theory]
    [InlineData(GemmLayout.NN)]
    [InlineData(GemmLayout.NT)]
    [InlineData(GemmLayout.TN)]
    public void MatMul_reference_agrees_with_MathNet(GemmLayout layout)
    {
        var random = new Random(42);
        int m = 13,
            n = 9,
            k = 17;
        var (ar, ac) = layout == GemmLayout.TN ? (k, m) : (m, k);
        var (br, bc) = layout == GemmLayout.NT ? (n, k) : (k, n);
        var a = KernelChecks.RandomData(random, ar * ac);
        var b = KernelChecks.RandomData(random, br * bc);
        var c = KernelChecks.RandomData(random, m * n);
        var (values, _) = CpuReference.MatMul(a, b, c, layout, m, n, k, alpha: 0.5, beta: -2);

        var A = Matrix<double>.Build.Dense(ar, ac, (i, j) => a[i * ac + j]);
        var B = Matrix<double>.Build.Dense(br, bc, (i, j) => b[i * bc + j]);
        var C = Matrix<double>.Build.Dense(m, n, (i, j) => c[i * n + j]);
        var opA = layout == GemmLayout.TN ? A.Transpose() : A;
        var opB = layout == GemmLayout.NT ? B.Transpose() : B;
        var expected = 0.5 * (opA * opB) - 2 * C;
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
            {
                TestTolerances
                    .DoubleRoundOff.Accepts(values[i * n + j], expected[i, j])
                    .Should()
                    .BeTrue($"element ({i}, {j})");
            }
        }
    }

    [Fact]
    public void Reductions_and_norms_agree_with_MathNet()
    {
        var random = new Random(3);
        int rows = 6,
            cols = 11;
        var x = KernelChecks.RandomData(random, rows * cols);
        var X = Matrix<double>.Build.Dense(rows, cols, (i, j) => x[i * cols + j]);
        var sums = CpuReference.ReduceRows(x, rows, cols, v => v, (p, q) => p + q, 0);
        var colMax = CpuReference.ReduceColumns(x, rows, cols, v => v, Math.Max, double.NegativeInfinity);
        var norms = CpuReference.RowL2Norms(x, rows, cols);
        var normalized = CpuReference.NormalizeRows(x, rows, cols, 1e-12);
        for (int r = 0; r < rows; r++)
        {
            TestTolerances.DoubleRoundOff.Accepts(sums[r], X.Row(r).Sum()).Should().BeTrue();
            TestTolerances.DoubleRoundOff.Accepts(norms[r], X.Row(r).L2Norm()).Should().BeTrue();
            TestTolerances
                .DoubleRoundOff.Accepts(normalized.Skip(r * cols).Take(cols).Select(v => v * v).Sum(), 1)
                .Should()
                .BeTrue();
        }

        for (int c = 0; c < cols; c++)
        {
            colMax[c].Should().Be(X.Column(c).Maximum());
        }
    }

    [Fact]
    public void Adam_reference_first_step_moves_each_parameter_by_lr_against_the_gradient_sign()
    {
        // With m = v = 0, step 1 gives m̂ = g and v̂ = g², so Δp = −lr·g/(|g| + ε) ≈ −lr·sign(g).
        var settings = new AdamSettings
        {
            LearningRate = 0.01f,
            Beta1 = 0.9f,
            Beta2 = 0.999f,
            Epsilon = 1e-8f,
        };
        var p = new float[] { 1f, -2f, 0.5f };
        var g = new float[] { 0.3f, -4f, 1e-3f };
        var (np, nm, nv) = CpuReference.AdamStep(p, g, new float[3], new float[3], settings, 1);
        for (int i = 0; i < 3; i++)
        {
            np[i]
                .Should()
                .BeApproximately(
                    p[i] - (double)settings.LearningRate * g[i] / (Math.Abs(g[i]) + (double)settings.Epsilon),
                    TestTolerances.DoubleRoundOff.Atol
                );
            nm[i]
                .Should()
                .BeApproximately((1 - (double)settings.Beta1) * g[i], TestTolerances.DoubleRoundOff.Atol);
            nv[i]
                .Should()
                .BeApproximately(
                    (1 - (double)settings.Beta2) * g[i] * (double)g[i],
                    TestTolerances.AdamSecondMoment
                );
        }
    }

    [Fact]
    public void AdamW_reference_decays_weights_decoupled_from_the_gradient()
    {
        // Zero gradient: Adam+L2 moves by −lr·sign(p) (the decay passes through normalisation);
        // AdamW multiplies by (1 − lr·wd) exactly (m = v = 0 ⇒ no adaptive step).
        var decoupled = new AdamSettings
        {
            LearningRate = 0.1f,
            WeightDecay = 0.5f,
            DecoupledWeightDecay = true,
        };
        var coupled = decoupled with { DecoupledWeightDecay = false };
        var p = new float[] { 2f };
        var zero = new float[1];
        CpuReference
            .AdamStep(p, zero, zero, zero, decoupled, 1)
            .P[0]
            .Should()
            .BeApproximately(2 * (1 - 0.1f * 0.5f), TestTolerances.AdamWDecay);
        CpuReference
            .AdamStep(p, zero, zero, zero, coupled, 1)
            .P[0]
            .Should()
            .BeApproximately(2 - 0.1f, TestTolerances.AdamL2Step);
    }

    [Theory]
    // Known-answer vectors of Philox4x32-10 from Random123 (kat_vectors).
    [InlineData(0u, 0u, 0u, 0u, 0u, 0u, 0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u)]
    [InlineData(
        0xffffffffu,
        0xffffffffu,
        0xffffffffu,
        0xffffffffu,
        0xffffffffu,
        0xffffffffu,
        0x408f276du,
        0x41c83b0eu,
        0xa20bc7c6u,
        0x6d5451fdu
    )]
    [InlineData(
        0x243f6a88u,
        0x85a308d3u,
        0x13198a2eu,
        0x03707344u,
        0xa4093822u,
        0x299f31d0u,
        0xd16cfe09u,
        0x94fdccebu,
        0x5001e420u,
        0x24126ea1u
    )]
    public void Philox_matches_the_published_known_answers(
        uint c0,
        uint c1,
        uint c2,
        uint c3,
        uint k0,
        uint k1,
        uint e0,
        uint e1,
        uint e2,
        uint e3
    )
    {
        Philox.Block(c0, c1, c2, c3, k0, k1).Should().Be((e0, e1, e2, e3));
    }

    [Fact]
    public void Normal_reference_has_the_requested_moments()
    {
        var samples = CpuReference.Normal(200_000, 0.5, 2, seed: 11, stream: 0);
        samples.Mean().Should().BeApproximately(0.5, TestTolerances.SampleMoments);
        samples.StandardDeviation().Should().BeApproximately(2, TestTolerances.SampleMoments);
        var uniform = CpuReference
            .Uniform(200_000, -1f, 3f, seed: 11, stream: 1)
            .Select(v => (double)v)
            .ToArray();
        uniform.Min().Should().BeGreaterThanOrEqualTo(-1);
        uniform.Max().Should().BeLessThan(3);
        uniform.Mean().Should().BeApproximately(1, TestTolerances.SampleMoments);
    }
}
