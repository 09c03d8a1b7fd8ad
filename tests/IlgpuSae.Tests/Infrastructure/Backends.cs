using IlgpuSae.Backends;
using Xunit;

namespace IlgpuSae.Tests.Infrastructure;

/// <summary>A backend and kernel shape to run a test body on.</summary>
public sealed record Target(BackendKind Backend, KernelVariant Variant)
{
    public override string ToString() =>
        $"{Backend.ToName()}/{(Variant == KernelVariant.CpuShaped ? "cpu-shaped" : "gpu-shaped")}";
}

/// <summary>
/// The targets every kernel test runs on: each backend with both kernel shapes. ILGPU's CPU accelerator
/// always runs; OpenCL and CUDA skip with a reason when absent — except that with
/// <c>ILGPUSAE_EXPECT_OPENCL=1</c> (set by CI inside its PoCL chroot) a missing OpenCL device fails, and with
/// <c>ILGPUSAE_EXPECT_CUDA=1</c> (set by perf/run-gpu.sh) a missing CUDA device fails.
/// </summary>
public static class Targets
{
    public static IEnumerable<Target> All()
    {
        foreach (var backend in new[] { BackendKind.Cpu, BackendKind.OpenCL, BackendKind.Cuda })
        {
            yield return new Target(backend, KernelVariant.CpuShaped);
            yield return new Target(backend, KernelVariant.GpuShaped);
        }
    }

    public static TheoryData<Target> Data()
    {
        var data = new TheoryData<Target>();
        foreach (var t in All())
        {
            data.Add(t);
        }

        return data;
    }
}

/// <summary>One <see cref="SaeDevice"/> per target, created on first use and shared by every test.</summary>
public sealed class DeviceFixture : IDisposable
{
    private readonly Dictionary<Target, (SaeDevice? Device, string? Missing)> _devices = [];
    private readonly Lock _lock = new();

    /// <summary>Returns the device for <paramref name="target"/>, or skips the test when it is
    /// absent.</summary>
    public SaeDevice Get(Target target)
    {
        lock (_lock)
        {
            if (!_devices.TryGetValue(target, out var entry))
            {
                try
                {
                    entry = (
                        SaeDevice.Create(
                            target.Backend,
                            null,
                            new SaeDeviceOptions { Variant = target.Variant }
                        ),
                        null
                    );
                }
                catch (BackendUnavailableException e)
                {
                    entry = (null, e.Message);
                }

                _devices[target] = entry;
            }

            if (entry.Device is null)
            {
                bool required =
                    target.Backend == BackendKind.Cpu
                    || (
                        target.Backend == BackendKind.OpenCL
                        && Environment.GetEnvironmentVariable("ILGPUSAE_EXPECT_OPENCL") == "1"
                    )
                    || (
                        target.Backend == BackendKind.Cuda
                        && Environment.GetEnvironmentVariable("ILGPUSAE_EXPECT_CUDA") == "1"
                    );
                if (required)
                {
                    throw new InvalidOperationException(
                        $"{target} is required here but missing: {entry.Missing}"
                    );
                }

                Skip.If(
                    true,
                    $"{target.Backend.ToName()} backend not available: {entry.Missing!.Split('\n')[0]}"
                );
            }

            return entry.Device!;
        }
    }

    public void Dispose()
    {
        foreach (var (device, _) in _devices.Values)
        {
            device?.Dispose();
        }
    }
}

[CollectionDefinition(Name)]
public sealed class DeviceCollection : ICollectionFixture<DeviceFixture>
{
    public const string Name = "devices";
}
