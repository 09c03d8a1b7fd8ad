using FluentAssertions;
using IlgpuSae.Backends;
using IlgpuSae.Tests.Infrastructure;
using Xunit;

namespace IlgpuSae.Tests.Backends;

/// <summary>Run-time backend choice: parsing, the environment variable, auto's order, and clear
/// errors.</summary>
[Collection(EnvironmentCollection.Name)]
public sealed class BackendSelectionTests
{
    private static DeviceDescription Fake(
        int index,
        BackendKind backend,
        int backendIndex,
        bool gpu,
        string? unsupported = null
    ) =>
        new(
            index,
            backend,
            backendIndex,
            gpu ? "GPU" : "CPU",
            $"dev{index}",
            1L << 30,
            32,
            1024,
            4,
            gpu,
            unsupported,
            false
        );

    [Theory]
    [InlineData("auto", BackendKind.Auto)]
    [InlineData("CPU", BackendKind.Cpu)]
    [InlineData(" opencl ", BackendKind.OpenCL)]
    [InlineData("cuda", BackendKind.Cuda)]
    public void Names_parse_case_insensitively(string name, BackendKind expected) =>
        BackendKinds.Parse(name).Should().Be(expected);

    [Fact]
    public void An_unknown_name_lists_the_known_ones() =>
        FluentActions
            .Invoking(() => BackendKinds.Parse("metal"))
            .Should()
            .Throw<ArgumentException>()
            .WithMessage("*metal*auto, cpu, opencl, cuda*");

    [Fact]
    public void The_option_wins_over_the_environment_variable_which_wins_over_auto()
    {
        using var env = new EnvironmentScope(BackendKinds.EnvironmentVariable, "opencl");
        BackendKinds.Resolve("cpu").Should().Be(BackendKind.Cpu);
        BackendKinds.Resolve(null).Should().Be(BackendKind.OpenCL);
        Environment.SetEnvironmentVariable(BackendKinds.EnvironmentVariable, null);
        BackendKinds.Resolve(null).Should().Be(BackendKind.Auto);
        Environment.SetEnvironmentVariable(BackendKinds.EnvironmentVariable, "vulkan");
        FluentActions
            .Invoking(() => BackendKinds.Resolve(null))
            .Should()
            .Throw<ArgumentException>()
            .WithMessage($"{BackendKinds.EnvironmentVariable}*vulkan*");
    }

    [Fact]
    public void Auto_prefers_cuda_then_opencl_gpu_then_opencl_cpu_then_the_cpu_accelerator()
    {
        var cpu = Fake(0, BackendKind.Cpu, 0, false);
        var clCpu = Fake(1, BackendKind.OpenCL, 0, false);
        var clGpu = Fake(2, BackendKind.OpenCL, 1, true);
        var badGpu = Fake(3, BackendKind.OpenCL, 2, true, "no generic address space");
        var cuda = Fake(4, BackendKind.Cuda, 0, true);
        DeviceCatalog.PickAuto([cpu, clCpu, clGpu, badGpu, cuda]).Should().Be(cuda);
        DeviceCatalog.PickAuto([cpu, clCpu, clGpu, badGpu]).Should().Be(clGpu);
        DeviceCatalog.PickAuto([cpu, clCpu, badGpu]).Should().Be(clCpu);
        DeviceCatalog.PickAuto([cpu, badGpu]).Should().Be(cpu);
    }

    [Fact]
    public void A_missing_backend_fails_with_a_list_of_what_is_there()
    {
        var devices = new[] { Fake(0, BackendKind.Cpu, 0, false) with { IsAutoChoice = true } };
        FluentActions
            .Invoking(() => DeviceCatalog.Choose(devices, BackendKind.Cuda, null))
            .Should()
            .Throw<BackendUnavailableException>()
            .WithMessage("*'cuda' is not available*Devices ILGPU sees here*cpu:0*dev0*--backend*");
    }

    [Fact]
    public void An_unsupported_device_or_index_is_refused_with_the_reason()
    {
        var devices = new[]
        {
            Fake(0, BackendKind.Cpu, 0, false) with
            {
                IsAutoChoice = true,
            },
            Fake(1, BackendKind.OpenCL, 0, false, "no generic address space"),
        };
        FluentActions
            .Invoking(() => DeviceCatalog.Choose(devices, BackendKind.OpenCL, null))
            .Should()
            .Throw<BackendUnavailableException>()
            .WithMessage("*'opencl' has no device ILGPU can use*");
        FluentActions
            .Invoking(() => DeviceCatalog.Choose(devices, BackendKind.OpenCL, 0))
            .Should()
            .Throw<BackendUnavailableException>()
            .WithMessage("*no generic address space*");
        FluentActions
            .Invoking(() => DeviceCatalog.Choose(devices, BackendKind.Cpu, 3))
            .Should()
            .Throw<BackendUnavailableException>()
            .WithMessage("*Device 3 of backend 'cpu' does not exist*");
        DeviceCatalog.Choose(devices, BackendKind.Auto, null).Index.Should().Be(0);
        DeviceCatalog.Choose(devices, BackendKind.Auto, 0).Index.Should().Be(0);
    }

    [Fact]
    public void The_real_catalog_always_has_a_multi_core_cpu_accelerator_and_one_auto_choice()
    {
        var devices = DeviceCatalog.ListDevices();
        devices.Should().ContainSingle(d => d.IsAutoChoice);
        var cpu = devices.Single(d => d.Backend == BackendKind.Cpu);
        cpu.Multiprocessors.Should().Be(Environment.ProcessorCount, "groups must run on every core");
        cpu.MaxGroupSize.Should().BeGreaterThanOrEqualTo(256);
        cpu.IsSupported.Should().BeTrue();
        devices.Select(d => d.Index).Should().BeInAscendingOrder();
    }

    [Fact]
    public void Creating_a_device_honours_the_requested_backend_and_variant()
    {
        using var device = SaeDevice.Create(
            BackendKind.Cpu,
            null,
            new SaeDeviceOptions { Variant = KernelVariant.GpuShaped }
        );
        device.Backend.Should().Be(BackendKind.Cpu);
        device.Variant.Should().Be(KernelVariant.GpuShaped);
        using var auto = SaeDevice.Create(BackendKind.Cpu);
        auto.Variant.Should().Be(KernelVariant.CpuShaped);
    }
}
