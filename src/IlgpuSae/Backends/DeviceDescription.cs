using ILGPU.Runtime;

namespace IlgpuSae.Backends;

/// <summary>One device that ILGPU sees, as listed by <c>ilgpu-sae devices</c>.</summary>
/// <param name="Index">Position in the full device list (the number <c>--device</c> takes with <c>--backend
/// auto</c>).</param>
/// <param name="Backend">The backend the device belongs to.</param>
/// <param name="BackendIndex">Position among the devices of the same backend (the number <c>--device</c>
/// takes otherwise).</param>
/// <param name="Type">A human-readable device type, e.g. <c>CUDA GPU</c>, <c>OpenCL CPU</c>, <c>ILGPU CPU
/// accelerator</c>.</param>
/// <param name="Name">The device name reported by the driver.</param>
/// <param name="MemoryBytes">Device memory in bytes.</param>
/// <param name="WarpSize">The warp (sub-group) size ILGPU reports.</param>
/// <param name="MaxGroupSize">The largest work-group ILGPU allows on this device.</param>
/// <param name="Multiprocessors">The number of multiprocessors (compute units; parallel groups on the CPU
/// accelerator).</param>
/// <param name="IsGpu">Whether the device is a GPU.</param>
/// <param name="UnsupportedReason">Why ILGPU cannot run kernels on this device, or <see langword="null"/>
/// when it can.</param>
/// <param name="IsAutoChoice">Whether <c>--backend auto</c> picks this device.</param>
public sealed record DeviceDescription(
    int Index,
    BackendKind Backend,
    int BackendIndex,
    string Type,
    string Name,
    long MemoryBytes,
    int WarpSize,
    int MaxGroupSize,
    int Multiprocessors,
    bool IsGpu,
    string? UnsupportedReason,
    bool IsAutoChoice
)
{
    /// <summary>Whether kernels can run on this device.</summary>
    public bool IsSupported => UnsupportedReason is null;

    /// <summary>The kernel shape <see cref="KernelVariant.Auto"/> resolves to on this device.</summary>
    public KernelVariant DefaultVariant =>
        IsGpu && MaxGroupSize >= 256 ? KernelVariant.GpuShaped : KernelVariant.CpuShaped;

    /// <summary>A short label such as <c>opencl:0</c>.</summary>
    public string Label => $"{Backend.ToName()}:{BackendIndex}";

    internal Device? IlgpuDevice { get; init; }

    /// <inheritdoc/>
    public override string ToString() =>
        $"[{Index}] {Label} {Type} '{Name}', {MemoryBytes / (1024.0 * 1024 * 1024):0.##} GiB, warp {WarpSize}, "
        + $"max group {MaxGroupSize}"
        + (IsSupported ? "" : $" (unsupported: {UnsupportedReason})");
}
