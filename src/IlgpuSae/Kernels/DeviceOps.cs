using System.Collections.Concurrent;
using ILGPU;
using ILGPU.Runtime;
using IlgpuSae.Backends;
using IlgpuSae.Tensors;

namespace IlgpuSae.Kernels;

/// <summary>
/// The kernel core of one <see cref="SaeDevice"/>: each method checks its arguments on the host (throwing
/// <see cref="ArgumentException"/> that names the shapes), then queues one kernel on the device stream.
/// Kernels are compiled on first use and cached per accelerator. Results may differ in the last bits
/// between CUDA, OpenCL and the CPU (different summation orders and fast-math functions on GPUs).
/// </summary>
public sealed partial class DeviceOps
{
    private readonly SaeDevice _device;
    private readonly ConcurrentDictionary<(string Kernel, Type? Arg), Delegate> _cache = new();
    private MemoryBuffer1D<float, Stride1D.Dense>? _gemmScratch;

    internal DeviceOps(SaeDevice device) => _device = device;

    private Accelerator Acc => _device.Accelerator;

    private AcceleratorStream Stream => _device.Stream;

    private bool Gpu => _device.Variant == KernelVariant.GpuShaped;

    private T Kernel<T>(string name, Type? arg, Func<T> load)
        where T : Delegate => (T)_cache.GetOrAdd((name, arg), _ => load());

    // ------------------------------------------------------------------ argument checks

    private static int Ceil(int a, int b) => (a + b - 1) / b;

    /// <summary>
    /// Work items to launch for <paramref name="n"/> independent pieces of work; kernels walk the rest in a
    /// grid-stride loop. ILGPU's CPU accelerator pays ~2 µs per work item (one delegate call per simulated
    /// thread), so there a few hundred items each loop over many elements (measured: a 131 072-element map
    /// drops from ~240 ms to ~2 ms); real devices get one item per element.
    /// </summary>
    private int Items(int n) => _device.Backend == BackendKind.Cpu ? Math.Min(n, CpuItems) : n;

    /// <summary>Work items per launch on the CPU accelerator.</summary>
    private const int CpuItems = 256;

    private static string Dims(MatrixView m) => m.Data.IsValid ? $"[{m.Rows}, {m.Cols}]" : "[null]";

    private static int ToIndex(long length) =>
        length <= int.MaxValue
            ? (int)length
            : throw new ArgumentException(
                $"Views longer than {int.MaxValue} elements are not supported (got {length})."
            );

    private static void RequireValid(MatrixView m, string name, Func<string> shapes)
    {
        if (!m.IsValid)
        {
            throw new ArgumentException($"{shapes()}: {name} is a null view.", name);
        }

        ToIndex(m.Length);
    }

    private static void RequireValid(ArrayView<float> v, string name)
    {
        if (!v.IsValid || v.Length == 0)
        {
            throw new ArgumentException($"{name} is a null or empty view.", name);
        }
    }

    private static void RequireSameLength(
        ArrayView<float> a,
        ArrayView<float> b,
        string op,
        string nameA,
        string nameB
    )
    {
        if (a.Length != b.Length)
        {
            throw new ArgumentException(
                $"{op}: {nameA}[{a.Length}] and {nameB}[{b.Length}] differ in length."
            );
        }
    }

    private static void RequireBroadcast(
        MatrixView x,
        ArrayView<float> v,
        MatrixView y,
        int vLength,
        Func<string> shapes
    )
    {
        RequireValid(x, "x", shapes);
        RequireValid(y, "y", shapes);
        if (!v.IsValid)
        {
            throw new ArgumentException($"{shapes()}: v is a null view.", nameof(v));
        }

        if (v.Length != vLength)
        {
            throw new ArgumentException($"{shapes()}: v must have {vLength} values.");
        }

        if (y.Rows != x.Rows || y.Cols != x.Cols)
        {
            throw new ArgumentException($"{shapes()}: y must have the shape of x.");
        }
    }

    private static void RequireNoOverlap(
        ArrayView<float> output,
        ArrayView<float> input,
        Func<string> message
    )
    {
        IContiguousArrayView o = output,
            i = input;
        if (!ReferenceEquals(o.Buffer, i.Buffer))
        {
            return;
        }

        long o0 = o.Index,
            o1 = o.Index + output.Length;
        long i0 = i.Index,
            i1 = i.Index + input.Length;
        if (o0 < i1 && i0 < o1)
        {
            throw new ArgumentException(message());
        }
    }
}
