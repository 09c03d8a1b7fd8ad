using System.Collections.Concurrent;
using ILGPU;
using ILGPU.Runtime;
using IlgpuSae.Backends;
using IlgpuSae.Tensors;

namespace IlgpuSae.Kernels;

/// <summary>Settings of an Adam / AdamW step (PyTorch's defaults; the Gated SAE paper uses β1 = 0).</summary>
public sealed record AdamSettings
{
    /// <summary>Learning rate.</summary>
    public float LearningRate { get; init; } = 1e-3f;

    /// <summary>First-moment decay β1.</summary>
    public float Beta1 { get; init; } = 0.9f;

    /// <summary>Second-moment decay β2.</summary>
    public float Beta2 { get; init; } = 0.999f;

    /// <summary>ε added to √v̂.</summary>
    public float Epsilon { get; init; } = 1e-8f;

    /// <summary>Weight decay (0 disables it).</summary>
    public float WeightDecay { get; init; }

    /// <summary>Decoupled decay (AdamW, <c>p ← p − lr·wd·p</c>) when true; L2 decay added to the gradient (Adam) when false.</summary>
    public bool DecoupledWeightDecay { get; init; } = true;
}

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

    // ------------------------------------------------------------------ matrix products

    /// <summary>
    /// <c>C = alpha·op(A)·op(B) + beta·C</c> on row-major float32 matrices. Shapes: NN A[M,K]·B[K,N];
    /// NT A[M,K]·B[N,K]ᵀ; TN A[K,M]ᵀ·B[K,N]; C[M,N]. With <paramref name="beta"/> = 0, C is only written.
    /// </summary>
    /// <exception cref="ArgumentException">A view is null, the shapes disagree, or C overlaps A or B.</exception>
    public void MatMul(MatrixView a, MatrixView b, MatrixView c, GemmLayout layout, float alpha = 1f, float beta = 0f)
    {
        var (m, k, kb, n) = layout switch
        {
            GemmLayout.NN => (a.Rows, a.Cols, b.Rows, b.Cols),
            GemmLayout.NT => (a.Rows, a.Cols, b.Cols, b.Rows),
            GemmLayout.TN => (a.Cols, a.Rows, b.Rows, b.Cols),
            _ => throw new ArgumentOutOfRangeException(nameof(layout), layout, "Unknown GEMM layout."),
        };
        string Shapes() => $"MatMul {layout}: A{Dims(a)} B{Dims(b)} C{Dims(c)}";
        RequireValid(a, "A", Shapes);
        RequireValid(b, "B", Shapes);
        RequireValid(c, "C", Shapes);
        if (k != kb)
        {
            throw new ArgumentException($"{Shapes()}: the inner dimensions differ (op(A) has {k} columns, op(B) has {kb} rows).");
        }

        if (c.Rows != m || c.Cols != n)
        {
            throw new ArgumentException($"{Shapes()}: C must be [{m}, {n}].");
        }

        RequireNoOverlap(c.Data, a.Data, () => $"{Shapes()}: C overlaps A.");
        RequireNoOverlap(c.Data, b.Data, () => $"{Shapes()}: C overlaps B.");
        var args = new GemmArgs { M = m, N = n, K = k, Alpha = alpha, Beta = beta };
        switch (layout)
        {
            case GemmLayout.NN: Gemm<LayoutNN>(a.Data, b.Data, c.Data, args); break;
            case GemmLayout.NT: Gemm<LayoutNT>(a.Data, b.Data, c.Data, args); break;
            default: Gemm<LayoutTN>(a.Data, b.Data, c.Data, args); break;
        }
    }

    private void Gemm<TLayout>(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, GemmArgs p)
        where TLayout : struct, IGemmLayout
    {
        if (_device.TensorCores)
        {
            var kernel = Kernel("GemmMmaTf32", typeof(TLayout), () =>
                Acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs>(
                    TensorCoreKernels.GemmMmaTf32Kernel<TLayout>));
            var grid = new Index2D(Ceil(p.N, TensorCoreKernels.Tile), Ceil(p.M, TensorCoreKernels.Tile));
            kernel(Stream, new KernelConfig(grid, new Index2D(TensorCoreKernels.Threads, 1)), a, b, c, p);
        }
        else if (Gpu)
        {
            var kernel = Kernel("GemmTiled", typeof(TLayout), () =>
                Acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs>(
                    GemmKernels.GemmTiledKernel<TLayout>));
            var grid = new Index2D(Ceil(p.N, GemmKernels.Tile), Ceil(p.M, GemmKernels.Tile));
            kernel(Stream, new KernelConfig(grid, new Index2D(16, 16)), a, b, c, p);
        }
        else if (typeof(TLayout) == typeof(LayoutNT))
        {
            // The strip kernel reads rows of B; B[N, K] is transposed into scratch [K, N] first (O(N·K), against
            // the product's O(M·N·K)).
            var bt = GemmScratch((long)p.N * p.K);
            LaunchTranspose(b, bt, p.N, p.K);
            Strip<LayoutNN>(a, bt, c, p);
        }
        else if (typeof(TLayout) == typeof(LayoutTN))
        {
            Strip<LayoutTN>(a, b, c, p);
        }
        else
        {
            Strip<LayoutNN>(a, b, c, p);
        }
    }

    private void Strip<TLayout>(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, GemmArgs p)
        where TLayout : struct, IGemmLayoutRowMajorB
    {
        var kernel = Kernel("GemmStrip", typeof(TLayout), () =>
            Acc.LoadAutoGroupedKernel<Index1D, int, int, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs>(
                GemmKernels.GemmStripKernel<TLayout>));
        int strips = Ceil(p.M, GemmKernels.StripRows) * Ceil(p.N, GemmKernels.StripCols);
        kernel(Stream, Items(strips), strips, Items(strips), a, b, c, p);
    }

    /// <summary>
    /// The CPU-shaped NT product's scratch for the transposed B, grown on demand and kept for the device's lifetime
    /// (its largest NT operand; <see cref="Training.MemoryPlan"/> counts it).
    /// </summary>
    private ArrayView<float> GemmScratch(long length)
    {
        if (_gemmScratch is null || _gemmScratch.Length < length)
        {
            Stream.Synchronize(); // a queued product may still read the old buffer
            _gemmScratch?.Dispose();
            _gemmScratch = Acc.Allocate1D<float>(length);
        }

        return _gemmScratch.View.SubView(0, length);
    }

    /// <summary>Frees the device's scratch buffers.</summary>
    internal void DisposeScratch()
    {
        _gemmScratch?.Dispose();
        _gemmScratch = null;
    }

    // ------------------------------------------------------------------ element-wise

    /// <summary><c>y[i] = op(x[i])</c>; <paramref name="y"/> may be <paramref name="x"/>.</summary>
    public void Map<TOp>(ArrayView<float> x, ArrayView<float> y, TOp op = default)
        where TOp : struct, IUnaryOp
    {
        RequireValid(x, nameof(x));
        RequireValid(y, nameof(y));
        RequireSameLength(x, y, $"Map<{typeof(TOp).Name}>", nameof(x), nameof(y));
        var kernel = Kernel("Map", typeof(TOp), () =>
            Acc.LoadAutoGroupedKernel<Index1D, int, int, ArrayView<float>, ArrayView<float>, TOp>(ElementwiseKernels.MapKernel<TOp>));
        kernel(Stream, Items(ToIndex(x.Length)), ToIndex(x.Length), Items(ToIndex(x.Length)), x, y, op);
    }

    /// <summary><c>y[i] = op(a[i], b[i])</c>; <paramref name="y"/> may be <paramref name="a"/> or <paramref name="b"/>.</summary>
    public void Map<TOp>(ArrayView<float> a, ArrayView<float> b, ArrayView<float> y, TOp op = default)
        where TOp : struct, IBinaryOp
    {
        RequireValid(a, nameof(a));
        RequireValid(b, nameof(b));
        RequireValid(y, nameof(y));
        RequireSameLength(a, b, $"Map<{typeof(TOp).Name}>", nameof(a), nameof(b));
        RequireSameLength(a, y, $"Map<{typeof(TOp).Name}>", nameof(a), nameof(y));
        var kernel = Kernel("Map2", typeof(TOp), () =>
            Acc.LoadAutoGroupedKernel<Index1D, int, int, ArrayView<float>, ArrayView<float>, ArrayView<float>, TOp>(
                ElementwiseKernels.Map2Kernel<TOp>));
        kernel(Stream, Items(ToIndex(a.Length)), ToIndex(a.Length), Items(ToIndex(a.Length)), a, b, y, op);
    }

    /// <summary><c>y[r,c] = op(x[r,c], v[c])</c>: <paramref name="v"/> holds one value per column (e.g. a bias).</summary>
    public void MapBroadcastRows<TOp>(MatrixView x, ArrayView<float> v, MatrixView y, TOp op = default)
        where TOp : struct, IBinaryOp
    {
        string Shapes() => $"MapBroadcastRows<{typeof(TOp).Name}>: x{Dims(x)} v[{v.Length}] y{Dims(y)}";
        RequireBroadcast(x, v, y, x.Cols, Shapes);
        LaunchBroadcast(x, v, y, 1, x.Cols, op);
    }

    /// <summary><c>y[r,c] = op(x[r,c], v[r])</c>: <paramref name="v"/> holds one value per row.</summary>
    public void MapBroadcastColumns<TOp>(MatrixView x, ArrayView<float> v, MatrixView y, TOp op = default)
        where TOp : struct, IBinaryOp
    {
        string Shapes() => $"MapBroadcastColumns<{typeof(TOp).Name}>: x{Dims(x)} v[{v.Length}] y{Dims(y)}";
        RequireBroadcast(x, v, y, x.Rows, Shapes);
        LaunchBroadcast(x, v, y, x.Cols, x.Rows, op);
    }

    private void LaunchBroadcast<TOp>(MatrixView x, ArrayView<float> v, MatrixView y, int divisor, int modulus, TOp op)
        where TOp : struct, IBinaryOp
    {
        var kernel = Kernel("MapBroadcast", typeof(TOp), () =>
            Acc.LoadAutoGroupedKernel<Index1D, int, int, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, TOp>(
                ElementwiseKernels.MapBroadcastKernel<TOp>));
        kernel(Stream, Items(ToIndex(x.Length)), ToIndex(x.Length), Items(ToIndex(x.Length)), x.Data, v, y.Data, divisor, modulus, op);
    }

    /// <summary><c>y = xᵀ</c>: <paramref name="y"/> must be [x.Cols, x.Rows] and must not overlap <paramref name="x"/>.</summary>
    public void Transpose(MatrixView x, MatrixView y)
    {
        string Shapes() => $"Transpose: x{Dims(x)} y{Dims(y)}";
        RequireValid(x, "x", Shapes);
        RequireValid(y, "y", Shapes);
        if (y.Rows != x.Cols || y.Cols != x.Rows)
        {
            throw new ArgumentException($"{Shapes()}: y must be [{x.Cols}, {x.Rows}].");
        }

        RequireNoOverlap(y.Data, x.Data, () => $"{Shapes()}: y overlaps x.");
        LaunchTranspose(x.Data, y.Data, x.Rows, x.Cols);
    }

    /// <summary>Queues <c>dst[c, r] = src[r, c]</c> for src [rows, cols], one work item per 16×16 block (no checks).</summary>
    private void LaunchTranspose(ArrayView<float> src, ArrayView<float> dst, int rows, int cols)
    {
        var kernel = Kernel("Transpose", null, () =>
            Acc.LoadAutoGroupedKernel<Index1D, int, int, ArrayView<float>, ArrayView<float>, int, int>(ElementwiseKernels.TransposeKernel));
        int blocks = Ceil(rows, ElementwiseKernels.TransposeBlock) * Ceil(cols, ElementwiseKernels.TransposeBlock);
        kernel(Stream, Items(blocks), blocks, Items(blocks), src, dst, rows, cols);
    }

    /// <summary>Sets every element of <paramref name="y"/> to <paramref name="value"/>.</summary>
    public void Fill(ArrayView<float> y, float value) => Map(y, y, new Constant(value));

    /// <summary>Copies <paramref name="x"/> into <paramref name="y"/> (same length).</summary>
    public void Copy(ArrayView<float> x, ArrayView<float> y) => Map(x, y, default(Identity));

    // ------------------------------------------------------------------ reductions

    /// <summary>
    /// <c>y[r] = reduce over c of x[r,c]</c> (or combined into <c>y[r]</c> when <paramref name="accumulate"/>).
    /// </summary>
    public void ReduceRows<TOp>(MatrixView x, ArrayView<float> y, bool accumulate = false)
        where TOp : struct, IReduceOp
    {
        string Shapes() => $"ReduceRows<{typeof(TOp).Name}>: x{Dims(x)} y[{y.Length}]";
        RequireValid(x, "x", Shapes);
        RequireValid(y, "y");
        if (y.Length != x.Rows)
        {
            throw new ArgumentException($"{Shapes()}: y must have one value per row ({x.Rows}).");
        }

        int acc = accumulate ? 1 : 0;
        if (Gpu)
        {
            var kernel = Kernel("ReduceRowsTiled", typeof(TOp), () =>
                Acc.LoadKernel<ArrayView<float>, ArrayView<float>, int, int>(ReductionKernels.ReduceRowsTiledKernel<TOp>));
            kernel(Stream, new KernelConfig(x.Rows, TiledKernels.GroupSize), x.Data, y, x.Cols, acc);
        }
        else
        {
            var kernel = Kernel("ReduceRows", typeof(TOp), () =>
                Acc.LoadAutoGroupedKernel<Index1D, int, int, ArrayView<float>, ArrayView<float>, int, int>(
                    ReductionKernels.ReduceRowsKernel<TOp>));
            kernel(Stream, Items(x.Rows), x.Rows, Items(x.Rows), x.Data, y, x.Cols, acc);
        }
    }

    /// <summary>
    /// <c>y[c] = reduce over r of x[r,c]</c> (or combined into <c>y[c]</c> when <paramref name="accumulate"/>).
    /// </summary>
    public void ReduceColumns<TOp>(MatrixView x, ArrayView<float> y, bool accumulate = false)
        where TOp : struct, IReduceOp
    {
        string Shapes() => $"ReduceColumns<{typeof(TOp).Name}>: x{Dims(x)} y[{y.Length}]";
        RequireValid(x, "x", Shapes);
        RequireValid(y, "y");
        if (y.Length != x.Cols)
        {
            throw new ArgumentException($"{Shapes()}: y must have one value per column ({x.Cols}).");
        }

        var kernel = Kernel("ReduceColumns", typeof(TOp), () =>
            Acc.LoadAutoGroupedKernel<Index1D, int, int, ArrayView<float>, ArrayView<float>, int, int, int>(
                ReductionKernels.ReduceColumnsKernel<TOp>));
        kernel(Stream, Items(x.Cols), x.Cols, Items(x.Cols), x.Data, y, x.Rows, x.Cols, accumulate ? 1 : 0);
    }

    // ------------------------------------------------------------------ norms

    /// <summary><c>norms[r] = ‖x[r,:]‖₂</c>.</summary>
    public void RowL2Norms(MatrixView x, ArrayView<float> norms)
    {
        ReduceRows<SumOfSquares>(x, norms);
        Map(norms, norms, default(Sqrt));
    }

    /// <summary>
    /// Scales each row of <paramref name="x"/> in place to unit L2 norm, <c>x[r,:] /= max(‖x[r,:]‖₂, eps)</c>;
    /// writes the norms before scaling to <paramref name="norms"/> when it is a valid view.
    /// </summary>
    public void NormalizeRows(MatrixView x, float eps = 1e-12f, ArrayView<float> norms = default)
    {
        string Shapes() => $"NormalizeRows: x{Dims(x)} norms[{norms.Length}]";
        RequireValid(x, "x", Shapes);
        if (!(eps > 0f) || float.IsInfinity(eps))
        {
            throw new ArgumentException($"NormalizeRows: eps must be positive and finite, got {eps}.", nameof(eps));
        }

        int write = norms.IsValid ? 1 : 0;
        if (write == 1 && norms.Length != x.Rows)
        {
            throw new ArgumentException($"{Shapes()}: norms must have one value per row ({x.Rows}).");
        }

        var target = write == 1 ? norms : x.Data.SubView(0, 1);
        if (Gpu)
        {
            var kernel = Kernel("NormalizeRowsTiled", null, () =>
                Acc.LoadKernel<ArrayView<float>, ArrayView<float>, int, float, int>(NormKernels.NormalizeRowsTiledKernel));
            kernel(Stream, new KernelConfig(x.Rows, TiledKernels.GroupSize), x.Data, target, x.Cols, eps, write);
        }
        else
        {
            var kernel = Kernel("NormalizeRows", null, () =>
                Acc.LoadAutoGroupedKernel<Index1D, int, int, ArrayView<float>, ArrayView<float>, int, float, int>(
                    NormKernels.NormalizeRowsKernel));
            kernel(Stream, Items(x.Rows), x.Rows, Items(x.Rows), x.Data, target, x.Cols, eps, write);
        }
    }

    // ------------------------------------------------------------------ optimizer

    /// <summary>
    /// One Adam/AdamW step over flat views of equal length (usually <see cref="ParameterBuffer"/> sections).
    /// <paramref name="step"/> is the 1-based step number used for bias correction; gradients are multiplied by
    /// <paramref name="gradScale"/> first (gradient clipping).
    /// </summary>
    public void AdamStep(
        ArrayView<float> parameters, ArrayView<float> gradients, ArrayView<float> firstMoment,
        ArrayView<float> secondMoment, AdamSettings settings, long step, float gradScale = 1f)
    {
        ArgumentNullException.ThrowIfNull(settings);
        RequireValid(parameters, nameof(parameters));
        RequireValid(gradients, nameof(gradients));
        RequireValid(firstMoment, nameof(firstMoment));
        RequireValid(secondMoment, nameof(secondMoment));
        RequireSameLength(parameters, gradients, "AdamStep", nameof(parameters), nameof(gradients));
        RequireSameLength(parameters, firstMoment, "AdamStep", nameof(parameters), nameof(firstMoment));
        RequireSameLength(parameters, secondMoment, "AdamStep", nameof(parameters), nameof(secondMoment));
        if (step < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(step), step, "AdamStep: the step number starts at 1.");
        }

        if (settings.Beta1 is < 0f or >= 1f || settings.Beta2 is < 0f or >= 1f || !(settings.Epsilon > 0f))
        {
            throw new ArgumentException(
                $"AdamStep: need 0 ≤ β1, β2 < 1 and ε > 0; got β1={settings.Beta1}, β2={settings.Beta2}, ε={settings.Epsilon}.",
                nameof(settings));
        }

        var args = new AdamArgs
        {
            LearningRate = settings.LearningRate,
            Beta1 = settings.Beta1,
            Beta2 = settings.Beta2,
            Epsilon = settings.Epsilon,
            WeightDecay = settings.WeightDecay,
            BiasCorrection1 = (float)(1.0 - Math.Pow(settings.Beta1, step)),
            BiasCorrection2 = (float)(1.0 - Math.Pow(settings.Beta2, step)),
            GradScale = gradScale,
            Decoupled = settings.DecoupledWeightDecay ? 1 : 0,
        };
        var kernel = Kernel("Adam", null, () =>
            Acc.LoadAutoGroupedKernel<Index1D, int, int, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AdamArgs>(
                AdamKernels.AdamKernel));
        kernel(Stream, Items(ToIndex(parameters.Length)), ToIndex(parameters.Length), Items(ToIndex(parameters.Length)), parameters, gradients, firstMoment, secondMoment, args);
    }

    // ------------------------------------------------------------------ random init

    /// <summary>
    /// Fills <paramref name="y"/> from <paramref name="distribution"/> with Philox4x32-10 keyed by
    /// <paramref name="seed"/>; <paramref name="stream"/> selects an independent sequence (e.g. one per tensor).
    /// The same (seed, stream) gives the same values on every backend (uniform: bit-identical).
    /// </summary>
    public void FillRandom<TDist>(ArrayView<float> y, TDist distribution, ulong seed, ulong stream = 0)
        where TDist : struct, IRandomDistribution
    {
        RequireValid(y, nameof(y));
        var args = new RandomArgs
        {
            SeedLo = (uint)seed,
            SeedHi = (uint)(seed >> 32),
            StreamLo = (uint)stream,
            StreamHi = (uint)(stream >> 32),
            Length = ToIndex(y.Length),
        };
        var kernel = Kernel("RandomFill", typeof(TDist), () =>
            Acc.LoadAutoGroupedKernel<Index1D, int, int, ArrayView<float>, RandomArgs, TDist>(RandomKernels.RandomFillKernel<TDist>));
        int blocks = Ceil(args.Length, 4);
        kernel(Stream, Items(blocks), blocks, Items(blocks), y, args, distribution);
    }

    /// <summary>Uniform values on [<paramref name="low"/>, <paramref name="high"/>).</summary>
    public void FillUniform(ArrayView<float> y, float low, float high, ulong seed, ulong stream = 0)
    {
        if (!(high > low) || float.IsInfinity(high - low))
        {
            throw new ArgumentException($"FillUniform: need a finite interval with low < high, got [{low}, {high}).");
        }

        FillRandom(y, new UniformDistribution(low, high), seed, stream);
    }

    /// <summary>Normal values with the given mean and standard deviation.</summary>
    public void FillNormal(ArrayView<float> y, float mean, float std, ulong seed, ulong stream = 0)
    {
        if (!(std >= 0f) || float.IsInfinity(std) || !float.IsFinite(mean))
        {
            throw new ArgumentException($"FillNormal: need a finite mean and std ≥ 0, got mean {mean}, std {std}.");
        }

        FillRandom(y, new NormalDistribution(mean, std), seed, stream);
    }

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

    private static int ToIndex(long length) => length <= int.MaxValue
        ? (int)length
        : throw new ArgumentException($"Views longer than {int.MaxValue} elements are not supported (got {length}).");

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

    private static void RequireSameLength(ArrayView<float> a, ArrayView<float> b, string op, string nameA, string nameB)
    {
        if (a.Length != b.Length)
        {
            throw new ArgumentException($"{op}: {nameA}[{a.Length}] and {nameB}[{b.Length}] differ in length.");
        }
    }

    private static void RequireBroadcast(MatrixView x, ArrayView<float> v, MatrixView y, int vLength, Func<string> shapes)
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

    private static void RequireNoOverlap(ArrayView<float> output, ArrayView<float> input, Func<string> message)
    {
        IContiguousArrayView o = output, i = input;
        if (!ReferenceEquals(o.Buffer, i.Buffer))
        {
            return;
        }

        long o0 = o.Index, o1 = o.Index + output.Length;
        long i0 = i.Index, i1 = i.Index + input.Length;
        if (o0 < i1 && i0 < o1)
        {
            throw new ArgumentException(message());
        }
    }
}
