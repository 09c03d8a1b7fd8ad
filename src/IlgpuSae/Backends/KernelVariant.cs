namespace IlgpuSae.Backends;

/// <summary>
/// Which shape of kernel the heavy operations (matrix products, row reductions, row normalisation) use.
/// </summary>
/// <remarks>
/// ILGPU's CPU accelerator runs every work item as a call on an OS thread, so a group barrier costs
/// milliseconds there (measured: shared-memory tiled GEMM ~100× slower than a barrier-free kernel).
/// GPUs need the opposite: shared-memory tiles and cooperative groups.
/// </remarks>
public enum KernelVariant
{
    /// <summary>Choose from the device: <see cref="GpuShaped"/> on CUDA and OpenCL GPUs, otherwise
    /// <see cref="CpuShaped"/>.</summary>
    Auto,

    /// <summary>Coarse-grained, barrier-free, register-blocked kernels (one work item per output block or
    /// row).</summary>
    CpuShaped,

    /// <summary>Shared-memory tiled, register-blocked kernels with explicit 256-thread groups.</summary>
    GpuShaped,
}
