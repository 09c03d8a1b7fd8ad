using ILGPU;
using ILGPU.Runtime;
using IlgpuSae.Backends;
using IlgpuSae.Tensors;

namespace IlgpuSae.Kernels;

internal delegate void GatedBackwardSource(
    Index1D index,
    ArrayView<float> u,
    ArrayView<float> um,
    ArrayView<float> phiPsi,
    ArrayView<float> bGate,
    ArrayView<float> bMag,
    ArrayView<float> rMag,
    ArrayView<float> norms,
    ArrayView<float> du,
    ArrayView<float> dum,
    ArrayView<float> gBGate,
    ArrayView<float> gBMag,
    ArrayView<float> gRMag,
    ArrayView<float> sums,
    ArrayView<int> lists,
    GatedArgs p
);

internal delegate void GatedBackwardLauncher(
    AcceleratorStream stream,
    Index1D extent,
    ArrayView<float> u,
    ArrayView<float> um,
    ArrayView<float> phiPsi,
    ArrayView<float> bGate,
    ArrayView<float> bMag,
    ArrayView<float> rMag,
    ArrayView<float> norms,
    ArrayView<float> du,
    ArrayView<float> dum,
    ArrayView<float> gBGate,
    ArrayView<float> gBMag,
    ArrayView<float> gRMag,
    ArrayView<float> sums,
    ArrayView<int> lists,
    GatedArgs p
);

/// <summary>Launchers of the fused SAE kernels (internal: the public surface is
/// <see cref="Sae.SparseAutoencoder"/>).</summary>
public sealed partial class DeviceOps
{
    internal void GatedEncode(
        ArrayView<float> u,
        ArrayView<float> um,
        ArrayView<float> bGate,
        ArrayView<float> bMag,
        ArrayView<float> rMag,
        ArrayView<float> fa,
        GatedArgs p
    )
    {
        var k = Kernel(
            "GatedEncode",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    int,
                    int,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    GatedArgs
                >(SaeKernels.GatedEncodeKernel)
        );
        // s = exp(r_mag) once per feature, not once per element (the kernel reads s).
        var scale = rMag;
        if (p.UseRMag != 0)
        {
            scale = MagnitudeScratch(p.M);
            Map<Exp>(rMag.SubView(0, p.M), scale);
        }

        k(Stream, Items(p.Rows * p.M), p.Rows * p.M, Items(p.Rows * p.M), u, um, bGate, bMag, scale, fa, p);
    }

    private MemoryBuffer1D<float, Stride1D.Dense>? _magnitudeScratch;

    /// <summary>The gated encoder's per-feature magnitude scale exp(r_mag), grown on demand.</summary>
    private ArrayView<float> MagnitudeScratch(int length)
    {
        if (_magnitudeScratch is null || _magnitudeScratch.Length < length)
        {
            Stream.Synchronize(); // a queued encoder may still read the old buffer
            _magnitudeScratch?.Dispose();
            _magnitudeScratch = Acc.Allocate1D<float>(length);
        }

        return _magnitudeScratch.View.SubView(0, length);
    }

    internal void ReluEncode(ArrayView<float> u, ArrayView<float> bEnc, ArrayView<float> f, int m)
    {
        var k = Kernel(
            "ReluEncode",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    int,
                    int,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    int
                >(SaeKernels.ReluEncodeKernel)
        );
        k(Stream, Items((int)u.Length), (int)u.Length, Items((int)u.Length), u, bEnc, f, m);
    }

    internal void JumpReluEncode(
        ArrayView<float> u,
        ArrayView<float> bEnc,
        ArrayView<float> threshold,
        ArrayView<float> f,
        int m,
        bool relu = true
    )
    {
        var k = Kernel(
            "JumpReluEncode",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    int,
                    int,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    int,
                    int
                >(SaeKernels.JumpReluEncodeKernel)
        );
        k(
            Stream,
            Items((int)u.Length),
            (int)u.Length,
            Items((int)u.Length),
            u,
            bEnc,
            threshold,
            f,
            m,
            relu ? 1 : 0
        );
    }

    internal void Residual(
        ArrayView<float> xhat,
        ArrayView<float> x,
        ArrayView<float> bDec,
        ArrayView<float> delta,
        int d,
        int batch,
        float scale
    )
    {
        var k = Kernel(
            "Residual",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    int,
                    int,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    int,
                    int,
                    float
                >(SaeKernels.ResidualKernel)
        );
        k(
            Stream,
            Items((int)xhat.Length),
            (int)xhat.Length,
            Items((int)xhat.Length),
            xhat,
            x,
            bDec,
            delta,
            d,
            batch,
            scale
        );
    }

    internal void GatedBackward(
        ArrayView<float> u,
        ArrayView<float> um,
        ArrayView<float> phiPsi,
        ArrayView<float> bGate,
        ArrayView<float> bMag,
        ArrayView<float> rMag,
        ArrayView<float> norms,
        ArrayView<float> du,
        ArrayView<float> dum,
        ArrayView<float> gBGate,
        ArrayView<float> gBMag,
        ArrayView<float> gRMag,
        ArrayView<float> sums,
        ArrayView<int> lists,
        GatedArgs p
    )
    {
        var k = Kernel(
            "GatedBackward",
            null,
            // 15 arguments after the index: more than ILGPU's Action overloads take, hence own delegates.
            () =>
                Acc.LoadAutoGroupedKernel<GatedBackwardLauncher, GatedBackwardSource>(
                    SaeKernels.GatedBackwardKernel,
                    out _
                )
        );
        if (p.Sparse != 0 && lists.Length < p.M + (long)p.Rows * p.M)
        {
            throw new ArgumentException(
                $"GatedBackward (sparse): column lists of {lists.Length} ints for {p.Rows} rows × {p.M} "
                    + "features (M counts, then M·B indices)."
            );
        }

        p.Stride = Items(p.M);
        k(
            Stream,
            p.Stride,
            u,
            um,
            phiPsi,
            bGate,
            bMag,
            rMag,
            norms,
            du,
            dum,
            gBGate,
            gBMag,
            gRMag,
            sums,
            lists,
            p
        );
    }

    internal void StandardBackward(
        ArrayView<float> f,
        ArrayView<float> phi,
        ArrayView<float> norms,
        ArrayView<float> du,
        ArrayView<float> gBEnc,
        ArrayView<float> sums,
        StandardArgs p
    )
    {
        var k = Kernel(
            "StandardBackward",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    int,
                    int,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    StandardArgs
                >(SaeKernels.StandardBackwardKernel)
        );
        k(Stream, Items(p.M), p.M, Items(p.M), f, phi, norms, du, gBEnc, sums, p);
    }

    internal void CompactRows(
        ArrayView<float> active,
        ArrayView<int> rowIdx,
        ArrayView<int> rowCount,
        int rows,
        int m
    )
    {
        var k = Kernel(
            "CompactRows",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    int,
                    int,
                    ArrayView<float>,
                    ArrayView<int>,
                    ArrayView<int>,
                    int
                >(SparseKernels.CompactRowsKernel)
        );
        k(Stream, Items(rows), rows, Items(rows), active, rowIdx, rowCount, m);
    }

    internal void CompactColumns(
        ArrayView<float> active,
        ArrayView<int> colIdx,
        ArrayView<int> colCount,
        int rows,
        int m
    )
    {
        var k = Kernel(
            "CompactColumns",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    int,
                    int,
                    ArrayView<float>,
                    ArrayView<int>,
                    ArrayView<int>,
                    int,
                    int
                >(SparseKernels.CompactColumnsKernel)
        );
        int blocks = (m + SparseKernels.Strip - 1) / SparseKernels.Strip;
        k(Stream, Items(blocks), blocks, Items(blocks), active, colIdx, colCount, rows, m);
    }

    internal void SparseDecode(
        ArrayView<float> fa,
        ArrayView<float> wDec,
        ArrayView<float> bDec,
        ArrayView<float> x,
        ArrayView<int> rowIdx,
        ArrayView<int> rowCount,
        ArrayView<float> xhat,
        ArrayView<float> delta,
        SparseArgs p
    )
    {
        var k = Kernel(
            "SparseDecode",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    int,
                    int,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<int>,
                    ArrayView<int>,
                    ArrayView<float>,
                    ArrayView<float>,
                    SparseArgs
                >(SparseKernels.SparseDecodeKernel)
        );
        int n = p.Rows * ((p.D + SparseKernels.Strip - 1) / SparseKernels.Strip);
        k(Stream, Items(n), n, Items(n), fa, wDec, bDec, x, rowIdx, rowCount, xhat, delta, p);
    }

    internal void SparsePhiPsi(
        ArrayView<float> delta,
        ArrayView<float> wDec,
        ArrayView<int> rowIdx,
        ArrayView<int> rowCount,
        ArrayView<float> phiPsi,
        SparseArgs p
    )
    {
        var k = Kernel(
            "SparsePhiPsi",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    int,
                    int,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<int>,
                    ArrayView<int>,
                    ArrayView<float>,
                    SparseArgs
                >(SparseKernels.SparsePhiPsiKernel)
        );
        k(Stream, Items(p.Rows), p.Rows, Items(p.Rows), delta, wDec, rowIdx, rowCount, phiPsi, p);
    }

    internal void SparseWeightGrad(
        ArrayView<float> xc,
        ArrayView<float> du,
        ArrayView<float> dum,
        ArrayView<float> fa,
        ArrayView<float> delta,
        ArrayView<int> colIdx,
        ArrayView<int> colCount,
        ArrayView<float> gWEnc,
        ArrayView<float> gWMag,
        ArrayView<float> gWDec,
        SparseArgs p
    )
    {
        var k = Kernel(
            "SparseWeightGrad",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    int,
                    int,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<int>,
                    ArrayView<int>,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    SparseArgs
                >(SparseKernels.SparseWeightGradKernel)
        );
        int n = p.M * ((p.D + SparseKernels.Strip - 1) / SparseKernels.Strip);
        k(Stream, Items(n), n, Items(n), xc, du, dum, fa, delta, colIdx, colCount, gWEnc, gWMag, gWDec, p);
    }

    internal void DecoderNormPenaltyGrad(
        MatrixView wDec,
        ArrayView<float> colA,
        ArrayView<float> norms,
        MatrixView gWDec,
        float lambdaOverB
    )
    {
        var k = Kernel(
            "DecoderNormPenaltyGrad",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    int,
                    int,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    int,
                    float
                >(SaeKernels.DecoderNormPenaltyGradKernel)
        );
        k(
            Stream,
            Items((int)wDec.Length),
            (int)wDec.Length,
            Items((int)wDec.Length),
            wDec.Data,
            colA,
            norms,
            gWDec.Data,
            wDec.Cols,
            lambdaOverB
        );
    }

    /// <summary>
    /// Projects each row of <paramref name="gradient"/> onto the tangent space of the matching row of
    /// <paramref name="weights"/>: <c>g_i ← g_i − (g_i·w_i/‖w_i‖²)·w_i</c> (unit-norm decoder constraint).
    /// </summary>
    public void ProjectRows(MatrixView gradient, MatrixView weights)
    {
        string Shapes() => $"ProjectRows: gradient{Dims(gradient)} weights{Dims(weights)}";
        RequireValid(gradient, "gradient", Shapes);
        RequireValid(weights, "weights", Shapes);
        if (gradient.Rows != weights.Rows || gradient.Cols != weights.Cols)
        {
            throw new ArgumentException($"{Shapes()}: shapes differ.");
        }

        if (Gpu)
        {
            var k = Kernel(
                "ProjectRowsTiled",
                null,
                () =>
                    Acc.LoadKernel<ArrayView<float>, ArrayView<float>, int>(SaeKernels.ProjectRowsTiledKernel)
            );
            k(
                Stream,
                new KernelConfig(gradient.Rows, TiledKernels.GroupSize),
                gradient.Data,
                weights.Data,
                gradient.Cols
            );
        }
        else
        {
            var k = Kernel(
                "ProjectRows",
                null,
                () =>
                    Acc.LoadAutoGroupedKernel<Index1D, int, int, ArrayView<float>, ArrayView<float>, int>(
                        SaeKernels.ProjectRowsKernel
                    )
            );
            k(
                Stream,
                Items(gradient.Rows),
                gradient.Rows,
                Items(gradient.Rows),
                gradient.Data,
                weights.Data,
                gradient.Cols
            );
        }
    }
}
