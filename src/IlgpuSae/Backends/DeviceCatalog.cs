using ILGPU;
using ILGPU.Backends.OpenCL;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;

namespace IlgpuSae.Backends;

/// <summary>Enumerates the devices ILGPU sees and applies the <see cref="BackendKind.Auto"/> preference
/// order.</summary>
public static class DeviceCatalog
{
    /// <summary>
    /// The CPU accelerator IlgpuSae uses: 32-thread warps, 8 warps (256 threads) per group, and one
    /// multiprocessor per logical core so that groups run on every core. ILGPU's own default CPU device
    /// has a single multiprocessor and runs one group at a time.
    /// </summary>
    public static CPUDevice CpuDevice { get; } = new(32, 8, Math.Max(1, Environment.ProcessorCount));

    /// <summary>Creates an ILGPU context that knows every CUDA, OpenCL and CPU device IlgpuSae may
    /// use.</summary>
    internal static Context CreateContext() =>
        Context.Create(builder =>
            builder.Cuda().OpenCL(_ => true).CPU(CpuDevice).EnableAlgorithms().Optimize(OptimizationLevel.O1)
        );

    /// <summary>Lists every device ILGPU sees, supported or not, marking the one auto picks.</summary>
    public static IReadOnlyList<DeviceDescription> ListDevices()
    {
        using var context = CreateContext();
        return Describe(context);
    }

    internal static IReadOnlyList<DeviceDescription> Describe(Context context)
    {
        var raw = new List<DeviceDescription>();
        var perBackend = new Dictionary<BackendKind, int>();
        foreach (var device in context)
        {
            var backend = device.AcceleratorType switch
            {
                AcceleratorType.Cuda => BackendKind.Cuda,
                AcceleratorType.OpenCL => BackendKind.OpenCL,
                _ => BackendKind.Cpu,
            };
            perBackend.TryGetValue(backend, out var backendIndex);
            perBackend[backend] = backendIndex + 1;

            var (type, isGpu, unsupported) = device switch
            {
                CudaDevice => ("CUDA GPU", true, (string?)null),
                CLDevice cl => (
                    cl.DeviceType == CLDeviceType.CL_DEVICE_TYPE_GPU ? "OpenCL GPU"
                    : cl.DeviceType == CLDeviceType.CL_DEVICE_TYPE_CPU ? "OpenCL CPU"
                    : "OpenCL device",
                    cl.DeviceType == CLDeviceType.CL_DEVICE_TYPE_GPU,
                    OpenClUnsupportedReason(cl)
                ),
                _ => ("ILGPU CPU accelerator", false, (string?)null),
            };
            var name = device switch
            {
                CLDevice c => $"{device.Name} ({c.PlatformName})",
                CPUDevice =>
                    $"{HostProcessorName()} ({device.NumMultiprocessors} × {device.MaxNumThreadsPerGroup} threads)",
                _ => device.Name,
            };
            // The CPU accelerator reports long.MaxValue; the memory it can really use is the host's.
            var memory =
                device is CPUDevice ? GC.GetGCMemoryInfo().TotalAvailableMemoryBytes : device.MemorySize;
            raw.Add(
                new DeviceDescription(
                    raw.Count,
                    backend,
                    backendIndex,
                    type,
                    name,
                    memory,
                    device.WarpSize,
                    device.MaxNumThreadsPerGroup,
                    device.NumMultiprocessors,
                    isGpu,
                    unsupported,
                    IsAutoChoice: false
                )
                {
                    IlgpuDevice = device,
                }
            );
        }

        var auto = PickAuto(raw);
        return raw.Select(d => d with { IsAutoChoice = ReferenceEquals(d, auto) }).ToArray();
    }

    private static string HostProcessorName()
    {
        try
        {
            var line = File.Exists("/proc/cpuinfo")
                ? File.ReadLines("/proc/cpuinfo")
                    .FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))
                : null;
            return line is null
                ? "host CPU"
                : line[(line.IndexOf(':', StringComparison.Ordinal) + 1)..].Trim();
        }
        catch (IOException)
        {
            return "host CPU";
        }
    }

    /// <summary>
    /// ILGPU 1.5.3's OpenCL backend needs OpenCL C 2.0 or newer features, in particular the generic
    /// address space (the same test as ILGPU's default OpenCL device filter).
    /// </summary>
    private static string? OpenClUnsupportedReason(CLDevice device)
    {
        if (device.CLStdVersion < CLBackend.MinimumVersion)
        {
            return $"OpenCL C {device.CLStdVersion} is older than the {CLBackend.MinimumVersion} ILGPU needs";
        }

        return device.Capabilities.GenericAddressSpace
            ? null
            : "no generic address space support (ILGPU 1.5.3 needs it; e.g. PoCL 6 has it, PoCL 3.1 and rusticl do not)";
    }

    /// <summary>
    /// Training on ILGPU's CPU accelerator versus PoCL on the same cores, measured in one session
    /// (perf/results/sae-step-2026-12-01-{host,pocl}.md, gated 256 × 2048 × 1024): the dense step 21× and
    /// the sparse step 9× faster through PoCL; the main job (<c>reproduce</c>) in
    /// docs/reproduction.md's measured times.
    /// </summary>
    public const string OpenClSpeedup = "about 10–20×";

    /// <summary>
    /// When <paramref name="chosen"/> is ILGPU's CPU accelerator and no CUDA or OpenCL device ILGPU accepts
    /// is present, one line telling the user how much faster an OpenCL CPU runtime would be and how to get
    /// one (naming an OpenCL device that is there but unusable, with the reason); otherwise null.
    /// </summary>
    public static string? FasterBackendHint(
        IReadOnlyList<DeviceDescription> devices,
        DeviceDescription chosen
    )
    {
        ArgumentNullException.ThrowIfNull(devices);
        ArgumentNullException.ThrowIfNull(chosen);
        if (
            chosen.Backend != BackendKind.Cpu
            || devices.Any(d => d.Backend != BackendKind.Cpu && d.IsSupported)
        )
        {
            return null;
        }

        var unusable = devices.FirstOrDefault(d => d.Backend == BackendKind.OpenCL);
        string found = unusable is null
            ? "no OpenCL runtime is installed"
            : $"OpenCL device '{unusable.Name}' is there but unusable: {unusable.UnsupportedReason}";
        return $"note: running on ILGPU's CPU accelerator ({found}). An OpenCL CPU runtime with the generic "
            + $"address space (PoCL 5 or newer) trains {OpenClSpeedup} faster on the same cores: on Debian 13 or "
            + "Ubuntu 24.04 and later `sudo apt install pocl-opencl-icd`; on Debian 12 (PoCL 3.1) run the "
            + "command through the repository's `.ci/pocl-chroot.sh run …` (root). 'auto' then picks it.";
    }

    /// <summary>CUDA, then an OpenCL GPU, then an OpenCL CPU device ILGPU accepts, then the CPU
    /// accelerator.</summary>
    internal static DeviceDescription? PickAuto(IReadOnlyList<DeviceDescription> devices)
    {
        static int Rank(DeviceDescription d) =>
            d switch
            {
                { Backend: BackendKind.Cuda } => 0,
                { Backend: BackendKind.OpenCL, IsGpu: true } => 1,
                { Backend: BackendKind.OpenCL } => 2,
                _ => 3,
            };

        return devices.Where(d => d.IsSupported).OrderBy(Rank).ThenBy(d => d.Index).FirstOrDefault();
    }

    /// <summary>
    /// Chooses the device for <paramref name="backend"/>. <paramref name="deviceIndex"/> counts among the
    /// devices of that backend, or in the full list when <paramref name="backend"/> is
    /// <see cref="BackendKind.Auto"/>.
    /// </summary>
    /// <exception cref="BackendUnavailableException">No such (supported) device; the message lists what is
    /// there.</exception>
    public static DeviceDescription Choose(
        IReadOnlyList<DeviceDescription> devices,
        BackendKind backend,
        int? deviceIndex
    )
    {
        ArgumentNullException.ThrowIfNull(devices);
        DeviceDescription? chosen;
        if (backend == BackendKind.Auto)
        {
            chosen = deviceIndex is int i
                ? devices.FirstOrDefault(d => d.Index == i)
                : devices.FirstOrDefault(d => d.IsAutoChoice);
        }
        else
        {
            var ofKind = devices.Where(d => d.Backend == backend).ToArray();
            chosen = deviceIndex is int i
                ? ofKind.FirstOrDefault(d => d.BackendIndex == i)
                : ofKind.FirstOrDefault(d => d.IsSupported);
            if (chosen is null && deviceIndex is null && ofKind.Length > 0)
            {
                throw new BackendUnavailableException(
                    $"Backend '{backend.ToName()}' has no device ILGPU can use.",
                    devices
                );
            }
        }

        if (chosen is null)
        {
            var what = deviceIndex is int n
                ? $"Device {n} of backend '{backend.ToName()}' does not exist."
                : $"Backend '{backend.ToName()}' is not available on this machine.";
            throw new BackendUnavailableException(what, devices);
        }

        if (!chosen.IsSupported)
        {
            throw new BackendUnavailableException(
                $"Device {chosen.Label} '{chosen.Name}' cannot run ILGPU kernels: {chosen.UnsupportedReason}.",
                devices
            );
        }

        return chosen;
    }
}

/// <summary>Thrown when the requested backend or device is not available; the message lists the devices that
/// are.</summary>
public sealed class BackendUnavailableException : InvalidOperationException
{
    /// <summary>Creates the exception with a problem statement and the devices that exist.</summary>
    public BackendUnavailableException(string problem, IReadOnlyList<DeviceDescription> available)
        : base(Format(problem, available))
    {
        Available = available;
    }

    /// <summary>The devices that ILGPU sees on this machine.</summary>
    public IReadOnlyList<DeviceDescription> Available { get; }

    private static string Format(string problem, IReadOnlyList<DeviceDescription> available)
    {
        ArgumentNullException.ThrowIfNull(available);
        var lines =
            available.Count == 0
                ? "  (none)"
                : string.Join(Environment.NewLine, available.Select(d => "  " + d));
        var nl = Environment.NewLine;
        return $"{problem}{nl}Devices ILGPU sees here:{nl}{lines}{nl}"
            + "Choose one with --backend auto|cpu|opencl|cuda (or ILGPUSAE_BACKEND) and --device N.";
    }
}
