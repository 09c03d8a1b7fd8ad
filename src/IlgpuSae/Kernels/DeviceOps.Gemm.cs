using System.Collections.Concurrent;
using ILGPU;
using ILGPU.Runtime;
using IlgpuSae.Backends;
using IlgpuSae.Tensors;

namespace IlgpuSae.Kernels;

public sealed partial class DeviceOps
{
    // ------------------------------------------------------------------ matrix products

    /// <summary>
    /// <c>C = alpha·op(A)·op(B) + beta·C</c> on row-major float32 matrices. Shapes: NN A[M,K]·B[K,N];
    /// NT A[M,K]·B[N,K]ᵀ; TN A[K,M]ᵀ·B[K,N]; C[M,N]. With <paramref name="beta"/> = 0, C is only written.
    /// </summary>
    /// <exception cref="ArgumentException">A view is null, the shapes disagree, or C overlaps A or
    /// B.</exception>
    public void MatMul(
        MatrixView a,
        MatrixView b,
        MatrixView c,
        GemmLayout layout,
        float alpha = 1f,
        float beta = 0f
    )
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
            throw new ArgumentException(
                $"{Shapes()}: the inner dimensions differ (op(A) has {k} columns, op(B) has {kb} rows)."
            );
        }

        if (c.Rows != m || c.Cols != n)
        {
            throw new ArgumentException($"{Shapes()}: C must be [{m}, {n}].");
        }

        RequireNoOverlap(c.Data, a.Data, () => $"{Shapes()}: C overlaps A.");
        RequireNoOverlap(c.Data, b.Data, () => $"{Shapes()}: C overlaps B.");
        var args = new GemmArgs
        {
            M = m,
            N = n,
            K = k,
            Alpha = alpha,
            Beta = beta,
        };
        switch (layout)
        {
            case GemmLayout.NN:
                Gemm<LayoutNN>(a.Data, b.Data, c.Data, args);
                break;
            case GemmLayout.NT:
                Gemm<LayoutNT>(a.Data, b.Data, c.Data, args);
                break;
            case GemmLayout.TN:
                Gemm<LayoutTN>(a.Data, b.Data, c.Data, args);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(layout), layout, "Unknown GEMM layout.");
        }
    }

    private void Gemm<TLayout>(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, GemmArgs p)
        where TLayout : struct, IGemmLayout
    {
        if (_device.TensorCores)
        {
            var kernel = Kernel(
                "GemmMmaTf32",
                typeof(TLayout),
                () =>
                    Acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs>(
                        TensorCoreKernels.GemmMmaTf32Kernel<TLayout>
                    )
            );
            var grid = new Index2D(Ceil(p.N, TensorCoreKernels.Tile), Ceil(p.M, TensorCoreKernels.Tile));
            kernel(Stream, new KernelConfig(grid, new Index2D(TensorCoreKernels.Threads, 1)), a, b, c, p);
        }
        else if (Gpu)
        {
            var kernel = Kernel(
                "GemmTiled",
                typeof(TLayout),
                () =>
                    Acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs>(
                        GemmKernels.GemmTiledKernel<TLayout>
                    )
            );
            var grid = new Index2D(Ceil(p.N, GemmKernels.Tile), Ceil(p.M, GemmKernels.Tile));
            kernel(Stream, new KernelConfig(grid, new Index2D(16, 16)), a, b, c, p);
        }
        else if (typeof(TLayout) == typeof(LayoutNT))
        {
            // The strip kernel reads rows of B; B[N, K] is transposed into scratch [K, N] first (O(N·K),
            // against
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
        var kernel = Kernel(
            "GemmStrip",
            typeof(TLayout),
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    int,
                    int,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    GemmArgs
                >(GemmKernels.GemmStripKernel<TLayout>)
        );
        int strips = Ceil(p.M, GemmKernels.StripRows) * Ceil(p.N, GemmKernels.StripCols);
        kernel(Stream, Items(strips), strips, Items(strips), a, b, c, p);
    }

    /// <summary>
    /// The CPU-shaped NT product's scratch for the transposed B, grown on demand and kept for the device's
    /// lifetime
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
        _magnitudeScratch?.Dispose();
        _magnitudeScratch = null;
        DisposeTopKScratch();
    }
}
