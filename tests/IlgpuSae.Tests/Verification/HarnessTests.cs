using FluentAssertions;
using IlgpuSae.Backends;
using IlgpuSae.Kernels;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Verification;
using Xunit;

namespace IlgpuSae.Tests.Verification;

/// <summary>The comparison harness itself must fail on wrong, missing and unwritten values.</summary>
[Collection(DeviceCollection.Name)]
public sealed class HarnessTests(DeviceFixture devices)
{
    [Theory]
    [InlineData(1.0, 1.0, true)]
    [InlineData(1.0 + 1e-7, 1.0, true)]
    [InlineData(1.001, 1.0, false)]
    [InlineData(double.NaN, 1.0, false)]
    [InlineData(double.NaN, double.NaN, true)]
    [InlineData(double.PositiveInfinity, double.PositiveInfinity, true)]
    [InlineData(double.PositiveInfinity, double.NegativeInfinity, false)]
    [InlineData(1e300, 1.0, false)]
    public void Tolerance_is_atol_plus_rtol_times_reference(double actual, double reference, bool accepted)
    {
        new Tolerance("t", 1e-9, 1e-6).Accepts(actual, reference).Should().Be(accepted);
    }

    [Fact]
    public void Compare_reports_the_first_wrong_element_and_flags_NaN_as_unwritten()
    {
        var reference = new double[] { 1, 2, 3, 4 };
        var wrong = KernelChecks.Compare("c", "f", [1f, 2f, 3.5f, 4f], reference, Tolerance.Elementwise);
        wrong.Passed.Should().BeFalse();
        wrong.Failure.Should().Contain("element 2");
        var unwritten = KernelChecks.Compare(
            "c",
            "f",
            [1f, float.NaN, 3f, 4f],
            reference,
            Tolerance.Elementwise
        );
        unwritten.Failure.Should().Contain("element 1").And.Contain("never written");
        var shorter = KernelChecks.Compare("c", "f", [1f, 2f, 3f], reference, Tolerance.Elementwise);
        shorter.Passed.Should().BeFalse();
        KernelChecks
            .Compare("c", "f", [1f, 2f, 3f, 4f], reference, Tolerance.Elementwise)
            .Passed.Should()
            .BeTrue();
    }

    [Fact]
    public void A_kernel_that_skips_an_element_fails_its_check()
    {
        // Write only the first half of a poisoned output: the comparison must catch the rest.
        var device = devices.Get(new Target(BackendKind.Cpu, KernelVariant.CpuShaped));
        var x = KernelChecks.RandomData(new Random(5), 64);
        using var tx = device.Upload(x, 1, 64);
        using var ty = device.Allocate(1, 64);
        device.Ops.Fill(ty.Data, float.NaN);
        device.Ops.Map(tx.Data.SubView(0, 32), ty.Data.SubView(0, 32), default(Relu));
        var result = KernelChecks.Compare(
            "half",
            "Map",
            ty.ToArray(),
            CpuReference.Map(x, v => Math.Max(v, 0)),
            Tolerance.Exact
        );
        result.Passed.Should().BeFalse();
        result.Failure.Should().Contain("element 32");
    }

    [Fact]
    public void Gemm_tolerance_is_tight_enough_to_catch_one_missing_term()
    {
        // Dropping the last k-term of a 65-term product changes results by ~1/65 of their scale.
        var random = new Random(9);
        int m = 7,
            n = 5,
            k = 65;
        var a = KernelChecks.RandomData(random, m * k, withZeros: false);
        var b = KernelChecks.RandomData(random, k * n, withZeros: false);
        var (full, magnitudes) = CpuReference.MatMul(a, b, null, GemmLayout.NN, m, n, k);
        var partial = (double[])full.Clone();
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
            {
                partial[i * n + j] -= a[i * k + k - 1] * (double)b[(k - 1) * n + j];
            }
        }

        var result = KernelChecks.Compare(
            "drop",
            "MatMul",
            partial.Select(v => (float)v).ToArray(),
            full,
            i => Tolerance.Accumulation(k + 1, magnitudes[i])
        );
        result.Passed.Should().BeFalse();
    }

    [Fact]
    public void The_check_list_covers_every_kernel_family_and_odd_sizes()
    {
        var families = KernelChecks.All.Select(c => c.Family).Distinct().ToArray();
        families
            .Should()
            .Contain([
                "MatMul",
                "Map",
                "Map2",
                "MapBroadcast",
                "ReduceRows",
                "ReduceColumns",
                "Norms",
                "Adam",
                "Random",
            ]);
        KernelChecks.All.Select(c => c.Name).Should().OnlyHaveUniqueItems();
        KernelChecks
            .GemmShapes.Should()
            .Contain(s => s.M == 1)
            .And.Contain(s => s.N == 1)
            .And.Contain(s => s.M % GemmKernels.Tile != 0 && s.M > GemmKernels.Tile);
        KernelChecks
            .MatrixShapes.Should()
            .Contain(s => s.Rows == 1)
            .And.Contain(s => s.Cols == 1)
            .And.Contain(s => s.Cols > 256 && s.Cols % 256 != 0);
    }
}
