using FluentAssertions;
using ILGPU;
using IlgpuSae.Backends;
using IlgpuSae.Kernels;
using IlgpuSae.Tests.Infrastructure;
using Xunit;

namespace IlgpuSae.Tests.Kernels;

/// <summary>Bad kernel arguments are refused on the host with an <see cref="ArgumentException"/> naming the
/// shapes.</summary>
[Collection(DeviceCollection.Name)]
public sealed class ArgumentValidationTests(DeviceFixture devices)
{
    private SaeDevice Device => devices.Get(new Target(BackendKind.Cpu, KernelVariant.CpuShaped));

    [Theory]
    [InlineData(GemmLayout.NN, 3, 4, 5, 6, 3, 6, "A[3, 4] B[5, 6] C[3, 6]")]
    [InlineData(GemmLayout.NT, 3, 4, 6, 5, 3, 6, "A[3, 4] B[6, 5] C[3, 6]")]
    [InlineData(GemmLayout.TN, 4, 3, 5, 6, 3, 6, "A[4, 3] B[5, 6] C[3, 6]")]
    public void MatMul_with_mismatched_inner_dimensions_names_the_shapes(
        GemmLayout layout,
        int ar,
        int ac,
        int br,
        int bc,
        int cr,
        int cc,
        string shapes
    )
    {
        using var a = Device.Allocate(ar, ac);
        using var b = Device.Allocate(br, bc);
        using var c = Device.Allocate(cr, cc);
        var act = () => Device.Ops.MatMul(a, b, c, layout);
        act.Should().Throw<ArgumentException>().WithMessage($"*{layout}*{shapes}*inner dimensions differ*");
    }

    [Fact]
    public void MatMul_with_a_wrong_output_shape_says_which_shape_it_needs()
    {
        using var a = Device.Allocate(3, 4);
        using var b = Device.Allocate(4, 5);
        using var c = Device.Allocate(5, 3);
        var act = () => Device.Ops.MatMul(a, b, c, GemmLayout.NN);
        act.Should().Throw<ArgumentException>().WithMessage("*C[5, 3]*C must be [3, 5]*");
    }

    [Fact]
    public void MatMul_with_a_null_view_is_refused()
    {
        using var b = Device.Allocate(4, 5);
        using var c = Device.Allocate(3, 5);
        var act = () => Device.Ops.MatMul(default, b, c, GemmLayout.NN);
        act.Should().Throw<ArgumentException>().WithMessage("*A is a null view*");
    }

    [Fact]
    public void MatMul_writing_into_its_own_input_is_refused()
    {
        using var a = Device.Allocate(4, 4);
        using var b = Device.Allocate(4, 4);
        var act = () => Device.Ops.MatMul(a, b, a, GemmLayout.NN);
        act.Should().Throw<ArgumentException>().WithMessage("*C overlaps A*");
    }

    [Fact]
    public void Map_with_different_lengths_is_refused()
    {
        using var x = Device.Allocate(1, 5);
        using var y = Device.Allocate(1, 6);
        var act = () => Device.Ops.Map(x.Data, y.Data, default(Relu));
        act.Should().Throw<ArgumentException>().WithMessage("*Relu*x[5]*y[6]*");
        var act2 = () => Device.Ops.Map(x.Data, default(ArrayView<float>), y.Data, default(Add));
        act2.Should().Throw<ArgumentException>().WithMessage("*b is a null or empty view*");
    }

    [Fact]
    public void Broadcast_with_a_vector_of_the_wrong_length_is_refused()
    {
        using var x = Device.Allocate(3, 4);
        using var v = Device.Allocate(1, 3);
        var act = () => Device.Ops.MapBroadcastRows<Add>(x, v.Data, x);
        act.Should().Throw<ArgumentException>().WithMessage("*x[3, 4] v[3]*v must have 4 values*");
    }

    [Fact]
    public void Reductions_check_the_output_length()
    {
        using var x = Device.Allocate(3, 4);
        using var y = Device.Allocate(1, 4);
        var rows = () => Device.Ops.ReduceRows<Sum>(x, y.Data);
        rows.Should()
            .Throw<ArgumentException>()
            .WithMessage("*ReduceRows<Sum>: x[3, 4] y[4]*one value per row (3)*");
        using var z = Device.Allocate(1, 3);
        var cols = () => Device.Ops.ReduceColumns<Max>(x, z.Data);
        cols.Should()
            .Throw<ArgumentException>()
            .WithMessage("*ReduceColumns<Max>: x[3, 4] y[3]*one value per column (4)*");
    }

    [Fact]
    public void NormalizeRows_checks_eps_and_the_norms_length()
    {
        using var x = Device.Allocate(3, 4);
        using var n = Device.Allocate(1, 4);
        var badNorms = () => Device.Ops.NormalizeRows(x, 1e-8f, n.Data);
        badNorms.Should().Throw<ArgumentException>().WithMessage("*x[3, 4] norms[4]*");
        var badEps = () => Device.Ops.NormalizeRows(x, 0f);
        badEps.Should().Throw<ArgumentException>().WithMessage("*eps must be positive*");
    }

    [Fact]
    public void AdamStep_checks_lengths_step_and_hyperparameters()
    {
        using var p = Device.Allocate(1, 8);
        using var g = Device.Allocate(1, 7);
        var settings = new AdamSettings();
        var lengths = () => Device.Ops.AdamStep(p.Data, g.Data, p.Data, p.Data, settings, 1);
        lengths.Should().Throw<ArgumentException>().WithMessage("*parameters[8]*gradients[7]*");
        var step = () => Device.Ops.AdamStep(p.Data, p.Data, p.Data, p.Data, settings, 0);
        step.Should().Throw<ArgumentOutOfRangeException>();
        var beta = () => Device.Ops.AdamStep(p.Data, p.Data, p.Data, p.Data, settings with { Beta2 = 1f }, 1);
        beta.Should().Throw<ArgumentException>().WithMessage("*β2=1*");
    }

    [Fact]
    public void Random_fills_check_their_parameters()
    {
        using var y = Device.Allocate(1, 8);
        var uniform = () => Device.Ops.FillUniform(y.Data, 1f, 1f, seed: 1);
        uniform.Should().Throw<ArgumentException>().WithMessage("*low < high*");
        var normal = () => Device.Ops.FillNormal(y.Data, 0f, -1f, seed: 1);
        normal.Should().Throw<ArgumentException>().WithMessage("*std*");
    }
}
