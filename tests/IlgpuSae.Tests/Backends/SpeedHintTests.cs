using FluentAssertions;
using IlgpuSae.Backends;
using Xunit;

namespace IlgpuSae.Tests.Backends;

/// <summary>The one-line hint every command prints first when it runs on ILGPU's CPU accelerator for want of
/// a usable OpenCL runtime.</summary>
public sealed class SpeedHintTests
{
    private static DeviceDescription Cpu(int index = 0) =>
        new(
            index,
            BackendKind.Cpu,
            0,
            "ILGPU CPU accelerator",
            "host",
            1L << 34,
            4,
            256,
            2,
            false,
            null,
            true
        );

    private static DeviceDescription OpenCl(int index, string? unsupported) =>
        new(
            index,
            BackendKind.OpenCL,
            0,
            "OpenCL CPU",
            "pthread-haswell (Portable Computing Language)",
            1L << 34,
            8,
            4096,
            2,
            false,
            unsupported,
            false
        );

    [Fact]
    public void With_no_OpenCL_runtime_the_CPU_accelerator_gets_a_hint_with_the_speed_up_and_how_to_install_PoCL()
    {
        var cpu = Cpu();
        var hint = DeviceCatalog.FasterBackendHint([cpu], cpu);
        hint.Should().NotBeNull();
        hint!.Should().StartWith("note: running on ILGPU's CPU accelerator (no OpenCL runtime is installed)");
        hint.Should().Contain(DeviceCatalog.OpenClSpeedup).And.Contain("apt install pocl-opencl-icd");
        hint.Should().Contain(".ci/pocl-chroot.sh");
    }

    [Fact]
    public void An_OpenCL_device_ILGPU_cannot_use_is_named_with_its_reason()
    {
        var cpu = Cpu(1);
        var hint = DeviceCatalog.FasterBackendHint([OpenCl(0, "no generic address space support"), cpu], cpu);
        hint.Should()
            .Contain("'pthread-haswell (Portable Computing Language)' is there but unusable: no generic");
    }

    [Fact]
    public void No_hint_when_a_usable_OpenCL_device_exists_or_is_chosen()
    {
        var cpu = Cpu(1);
        var cl = OpenCl(0, null);
        DeviceCatalog
            .FasterBackendHint([cl, cpu], cpu)
            .Should()
            .BeNull("the user chose the CPU with OpenCL there");
        DeviceCatalog.FasterBackendHint([cl, cpu], cl).Should().BeNull();
    }
}
