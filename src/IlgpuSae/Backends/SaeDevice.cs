using ILGPU;
using ILGPU.Runtime;
using IlgpuSae.Kernels;
using IlgpuSae.Tensors;

namespace IlgpuSae.Backends;

/// <summary>Options for <see cref="SaeDevice.Create(BackendKind, int?, SaeDeviceOptions?)"/>.</summary>
public sealed record SaeDeviceOptions
{
    /// <summary>The kernel shape for heavy operations; <see cref="KernelVariant.Auto"/> picks by device
    /// type.</summary>
    public KernelVariant Variant { get; init; } = KernelVariant.Auto;

    /// <summary>
    /// Run matrix products on TF32 tensor cores (<c>mma.sync</c> m16n8k8, CUDA sm_80 and newer): about 10-bit
    /// mantissa inputs, float32 accumulation. Off by default until a GPU has verified it; on ILGPU's CPU
    /// accelerator the same kernel runs with the instruction emulated (for tests); OpenCL refuses it.
    /// </summary>
    public bool TensorCores { get; init; }
}

/// <summary>
/// One compute device chosen at run time: it owns the ILGPU context, the accelerator, a stream and the
/// loaded kernels, and offers the kernel core through <see cref="Ops"/>.
/// </summary>
/// <example><code>
/// using var device = SaeDevice.Create(BackendKind.Auto);
/// using var a = device.Allocate(64, 32);
/// </code></example>
public sealed class SaeDevice : IDisposable
{
    private readonly Context _context;
    private bool _disposed;

    private SaeDevice(
        Context context,
        Accelerator accelerator,
        DeviceDescription description,
        KernelVariant variant,
        bool tensorCores
    )
    {
        TensorCores = tensorCores;
        _context = context;
        Accelerator = accelerator;
        Description = description;
        Variant = variant;
        Stream = accelerator.DefaultStream;
        Ops = new DeviceOps(this);
    }

    /// <summary>The backend this device belongs to.</summary>
    public BackendKind Backend => Description.Backend;

    /// <summary>The device as listed by <see cref="DeviceCatalog.ListDevices"/>.</summary>
    public DeviceDescription Description { get; }

    /// <summary>The kernel shape used for heavy operations (never
    /// <see cref="KernelVariant.Auto"/>).</summary>
    public KernelVariant Variant { get; }

    /// <summary>Whether matrix products run on TF32 tensor cores
    /// (<see cref="SaeDeviceOptions.TensorCores"/>).</summary>
    public bool TensorCores { get; }

    /// <summary>The ILGPU accelerator.</summary>
    public Accelerator Accelerator { get; }

    /// <summary>The stream every operation of <see cref="Ops"/> is queued on.</summary>
    public AcceleratorStream Stream { get; }

    /// <summary>The kernel core: matrix products, element-wise maps, reductions, norms, Adam, random
    /// init.</summary>
    public DeviceOps Ops { get; }

    /// <summary>
    /// Opens the device for <paramref name="backend"/> (resolve a user's choice with
    /// <see cref="BackendKinds.Resolve"/> first to honour <c>ILGPUSAE_BACKEND</c>).
    /// </summary>
    /// <param name="backend">Which backend to use.</param>
    /// <param name="deviceIndex">
    /// Which device of that backend (the full list's index for <see cref="BackendKind.Auto"/>);
    /// <see langword="null"/> for the first usable one.
    /// </param>
    /// <param name="options">Further options, or <see langword="null"/> for the defaults.</param>
    /// <exception cref="BackendUnavailableException">The backend or device is not there; the message lists
    /// what is.</exception>
    public static SaeDevice Create(
        BackendKind backend = BackendKind.Auto,
        int? deviceIndex = null,
        SaeDeviceOptions? options = null
    )
    {
        options ??= new SaeDeviceOptions();
        var context = DeviceCatalog.CreateContext();
        try
        {
            var description = DeviceCatalog.Choose(DeviceCatalog.Describe(context), backend, deviceIndex);
            var accelerator = description.IlgpuDevice!.CreateAccelerator(context);
            var variant =
                options.Variant == KernelVariant.Auto ? description.DefaultVariant : options.Variant;
            if (
                variant == KernelVariant.GpuShaped
                && accelerator.MaxNumThreadsPerGroup < TiledKernels.GroupSize
            )
            {
                accelerator.Dispose();
                throw new ArgumentException(
                    $"GPU-shaped kernels need work-groups of {TiledKernels.GroupSize} threads; "
                        + $"{description.Label} allows {accelerator.MaxNumThreadsPerGroup}.",
                    nameof(options)
                );
            }

            if (options.TensorCores)
            {
                string? why = accelerator switch
                {
                    ILGPU.Runtime.Cuda.CudaAccelerator cuda
                        when cuda.Architecture is { } arch
                            && arch < ILGPU.Runtime.Cuda.CudaArchitecture.SM_80 =>
                        $"{description.Label} is {arch}; TF32 mma needs sm_80 or newer",
                    ILGPU.Runtime.OpenCL.CLAccelerator => "OpenCL has no tensor-core instructions",
                    _ => null,
                };
                if (why is not null)
                {
                    accelerator.Dispose();
                    throw new ArgumentException($"Tensor cores are not available: {why}.", nameof(options));
                }
            }

            return new SaeDevice(context, accelerator, description, variant, options.TensorCores);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    /// <summary>Allocates an uninitialised <paramref name="rows"/>×<paramref name="cols"/> float32
    /// tensor.</summary>
    public DeviceTensor Allocate(int rows, int cols, string? name = null)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return new DeviceTensor(this, rows, cols, name);
    }

    /// <summary>Allocates a tensor and copies row-major <paramref name="data"/> into it.</summary>
    /// <exception cref="ArgumentException"><paramref name="data"/> does not hold rows×cols
    /// values.</exception>
    public DeviceTensor Upload(float[] data, int rows, int cols, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(data);
        var tensor = Allocate(rows, cols, name);
        try
        {
            tensor.CopyFrom(data);
        }
        catch
        {
            tensor.Dispose();
            throw;
        }

        return tensor;
    }

    /// <summary>Waits until every queued operation has finished.</summary>
    public void Synchronize() => Stream.Synchronize();

    /// <inheritdoc/>
    public override string ToString() =>
        $"{Description.Label} {Description.Type} '{Description.Name}' ({Variant} kernels{(TensorCores ? ", TF32 tensor cores" : "")})";

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        Ops.DisposeScratch();
        Accelerator.Dispose();
        _context.Dispose();
    }
}
