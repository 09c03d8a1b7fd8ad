using FluentAssertions;
using IlgpuSae.Backends;
using IlgpuSae.Tensors;
using IlgpuSae.Tests.Infrastructure;
using Xunit;

namespace IlgpuSae.Tests.Tensors;

/// <summary>Matrix views and uploads of the wrong size are refused with an <see cref="ArgumentException"/>
/// naming the shape.</summary>
[Collection(DeviceCollection.Name)]
public sealed class TensorArgumentValidationTests(DeviceFixture devices)
{
    private SaeDevice Device => devices.Get(new Target(BackendKind.Cpu, KernelVariant.CpuShaped));

    [Fact]
    public void MatrixView_rejects_a_view_of_the_wrong_length()
    {
        using var t = Device.Allocate(2, 3);
        var act = () => new MatrixView(t.Data, 4, 2, "W_enc");
        act.Should().Throw<ArgumentException>().WithMessage("*W_enc*[4, 2]*needs 8*has 6*");
    }

    [Fact]
    public void Upload_checks_the_value_count()
    {
        var act = () => Device.Upload(new float[5], 2, 3, "x");
        act.Should().Throw<ArgumentException>().WithMessage("*x[2, 3] needs 6 values, got 5*");
    }
}
