using ILGPU;
using ILGPU.Runtime;

namespace IlgpuSae.Kernels;

/// <summary>Launchers of the AuxK, BatchTopK-threshold, Matryoshka and JumpReLU-training kernels (internal:
/// used by the SAE families).</summary>
public sealed partial class DeviceOps
{
    internal void AuxKSelect(
        ArrayView<float> pre,
        ArrayView<float> dead,
        ArrayView<float> a,
        int rows,
        int m,
        int k,
        bool raw
    )
    {
        if (k <= 0 || pre.Length != (long)rows * m || a.Length != pre.Length || dead.Length != m)
        {
            throw new ArgumentException(
                $"AuxKSelect: pre[{pre.Length}] a[{a.Length}] dead[{dead.Length}] as [{rows}, {m}], k = {k}."
            );
        }

        RequireNoOverlap(a, pre, () => "AuxKSelect: a overlaps pre.");
        var kernel = Kernel(
            "AuxKSelect",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    int,
                    int,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    int,
                    int,
                    int
                >(VariantKernels.AuxKSelectKernel)
        );
        kernel(Stream, Items(rows), rows, Items(rows), pre, dead, a, m, k, raw ? 1 : 0);
    }

    internal void DeadMask(
        ArrayView<float> steps,
        ArrayView<float> fired,
        ArrayView<float> dead,
        float window,
        bool includeCurrent
    )
    {
        int m = (int)dead.Length;
        var kernel = Kernel(
            "DeadMask",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    int,
                    int,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    float,
                    int
                >(VariantKernels.DeadMaskKernel)
        );
        kernel(Stream, Items(m), m, Items(m), steps, fired, dead, window, includeCurrent ? 1 : 0);
    }

    internal void ColumnSquaredDeviation(ArrayView<float> x, ArrayView<float> y, int rows)
    {
        int d = (int)y.Length;
        var kernel = Kernel(
            "ColumnSquaredDeviation",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<Index1D, int, int, ArrayView<float>, ArrayView<float>, int>(
                    VariantKernels.ColumnSquaredDeviationKernel
                )
        );
        kernel(Stream, Items(d), d, Items(d), x, y, rows);
    }

    internal void AuxResidual(
        ArrayView<float> xa,
        ArrayView<float> delta,
        ArrayView<float> bDec,
        ArrayView<float> da,
        ArrayView<float> stats,
        AuxResidualArgs p
    )
    {
        int n = (int)xa.Length;
        var kernel = Kernel(
            "AuxResidual",
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
                    AuxResidualArgs
                >(VariantKernels.AuxResidualKernel)
        );
        kernel(Stream, Items(n), n, Items(n), xa, delta, bDec, da, stats, p);
    }

    internal void TopKFamilyBackward(
        ArrayView<float> f,
        ArrayView<float> phi,
        ArrayView<float> a,
        ArrayView<float> psi,
        ArrayView<float> norms,
        ArrayView<float> du,
        ArrayView<float> gBEnc,
        ArrayView<float> sums,
        FamilyBackwardArgs p
    )
    {
        var kernel = Kernel(
            "TopKFamilyBackward",
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
                    ArrayView<float>,
                    ArrayView<float>,
                    FamilyBackwardArgs
                >(VariantKernels.TopKFamilyBackwardKernel)
        );
        kernel(Stream, Items(p.M), p.M, Items(p.M), f, phi, a, psi, norms, du, gBEnc, sums, p);
    }

    internal void TopKFamilySparseBackward(
        ArrayView<float> f,
        ArrayView<float> phi,
        ArrayView<float> a,
        ArrayView<float> psi,
        ArrayView<float> norms,
        ArrayView<float> du,
        ArrayView<float> gBEnc,
        ArrayView<float> sums,
        ArrayView<int> colIdx,
        ArrayView<int> colCount,
        FamilyBackwardArgs p
    )
    {
        var kernel = Kernel(
            "TopKFamilySparseBackward",
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
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<int>,
                    ArrayView<int>,
                    FamilyBackwardArgs
                >(VariantKernels.TopKFamilySparseBackwardKernel)
        );
        kernel(
            Stream,
            Items(p.M),
            p.M,
            Items(p.M),
            f,
            phi,
            a,
            psi,
            norms,
            du,
            gBEnc,
            sums,
            colIdx,
            colCount,
            p
        );
    }

    internal void GlobalThresholdEncode(
        ArrayView<float> u,
        ArrayView<float> bEnc,
        ArrayView<float> theta,
        ArrayView<float> f,
        int m
    )
    {
        int n = (int)u.Length;
        var kernel = Kernel(
            "GlobalThresholdEncode",
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
                    int
                >(VariantKernels.GlobalThresholdEncodeKernel)
        );
        kernel(Stream, Items(n), n, Items(n), u, bEnc, theta, f, m);
    }

    internal void ThresholdUpdate(ArrayView<float> theta, ArrayView<float> minPositive, ThresholdArgs p)
    {
        var kernel = Kernel(
            "ThresholdUpdate",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ThresholdArgs>(
                    VariantKernels.ThresholdUpdateKernel
                )
        );
        kernel(Stream, 1, theta, minPositive, p);
    }

    /// <summary>Per row of <paramref name="f"/> [rows, m], its first <paramref name="k"/> non-zero values in
    /// column order into <paramref name="values"/> [rows, k] (NaN after the last).</summary>
    internal void RowNonZeros(ArrayView<float> f, ArrayView<float> values, int rows, int m, int k)
    {
        var kernel = Kernel(
            "RowNonZeros",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<Index1D, int, int, ArrayView<float>, ArrayView<float>, int, int>(
                    VariantKernels.RowNonZerosKernel
                )
        );
        kernel(Stream, Items(rows), rows, Items(rows), f, values, m, k);
    }

    /// <summary>Keeps in each row b of <paramref name="f"/> [rows, m] the non-zero values above
    /// <paramref name="threshold"/>[b] and the first <paramref name="ties"/>[b] equal to it.</summary>
    internal void KeepAboveRowThreshold(
        ArrayView<float> f,
        ArrayView<float> threshold,
        ArrayView<float> ties,
        int rows,
        int m
    )
    {
        var kernel = Kernel(
            "KeepAboveRowThreshold",
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
                >(VariantKernels.KeepAboveRowThresholdKernel)
        );
        kernel(Stream, Items(rows), rows, Items(rows), f, threshold, ties, m);
    }

    internal void CopyPrefixColumns(ArrayView<float> src, ArrayView<float> dst, int rows, int m, int width)
    {
        int n = rows * width;
        var kernel = Kernel(
            "CopyPrefixColumns",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<Index1D, int, int, ArrayView<float>, ArrayView<float>, int, int>(
                    VariantKernels.CopyPrefixColumnsKernel
                )
        );
        kernel(Stream, Items(n), n, Items(n), src, dst, m, width);
    }

    internal void AddPrefixColumns(ArrayView<float> src, ArrayView<float> dst, int rows, int m, int width)
    {
        int n = rows * width;
        var kernel = Kernel(
            "AddPrefixColumns",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<Index1D, int, int, ArrayView<float>, ArrayView<float>, int, int>(
                    VariantKernels.AddPrefixColumnsKernel
                )
        );
        kernel(Stream, Items(n), n, Items(n), src, dst, m, width);
    }

    internal void JumpReluStepCount(
        ArrayView<float> u,
        ArrayView<float> bEnc,
        ArrayView<float> theta,
        ArrayView<float> rows,
        int m,
        bool onFeatures,
        bool relu = true
    )
    {
        int b = (int)rows.Length;
        if (m <= 0 || u.Length != (long)b * m || bEnc.Length != m || theta.Length != m)
        {
            throw new ArgumentException(
                $"JumpReluStepCount: u[{u.Length}] as [{b}, {m}], b_enc[{bEnc.Length}] θ[{theta.Length}]."
            );
        }

        var kernel = Kernel(
            "JumpReluStepCount",
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
                    int
                >(VariantKernels.JumpReluStepCountKernel)
        );
        kernel(Stream, Items(b), b, Items(b), u, bEnc, theta, rows, m, onFeatures ? 1 : 0, relu ? 1 : 0);
    }

    internal void JumpReluSupport(
        ArrayView<float> u,
        ArrayView<float> bEnc,
        ArrayView<float> theta,
        ArrayView<float> dead,
        ArrayView<float> support,
        int m,
        float invBandwidth,
        bool preAct
    )
    {
        long n = u.Length;
        if (
            m <= 0
            || n % m != 0
            || n > int.MaxValue
            || support.Length < n
            || bEnc.Length != m
            || theta.Length != m
            || (preAct && dead.Length < m)
        )
        {
            throw new ArgumentException(
                $"JumpReluSupport: u[{u.Length}] support[{support.Length}] with M = {m}, "
                    + $"b_enc[{bEnc.Length}] θ[{theta.Length}] dead[{dead.Length}]."
            );
        }

        var kernel = Kernel(
            "JumpReluSupport",
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
                    int,
                    float,
                    int
                >(VariantKernels.JumpReluSupportKernel)
        );
        int count = (int)n;
        kernel(
            Stream,
            Items(count),
            count,
            Items(count),
            u,
            bEnc,
            theta,
            preAct ? dead : theta,
            support,
            m,
            invBandwidth,
            preAct ? 1 : 0
        );
    }

    internal void JumpReluBackward(
        ArrayView<float> u,
        ArrayView<float> bEnc,
        ArrayView<float> theta,
        ArrayView<float> phi,
        ArrayView<float> norms,
        ArrayView<float> du,
        ArrayView<float> gBEnc,
        ArrayView<float> gTheta,
        ArrayView<float> sums,
        ArrayView<float> extra,
        FamilyBackwardArgs p
    )
    {
        long n = (long)p.Rows * p.M;
        if (
            u.Length != n
            || phi.Length < n
            || du.Length < n
            || bEnc.Length != p.M
            || theta.Length != p.M
            || gTheta.Length != p.M
            || norms.Length < p.M
            || sums.Length < 3L * p.M
            || (p.PreAct != 0 && extra.Length < 2L * p.M)
            || (p.TargetL0 != 0 && extra.Length < 2L * p.M + 1)
        )
        {
            throw new ArgumentException(
                $"JumpReluBackward: u[{u.Length}] phi[{phi.Length}] du[{du.Length}] as [{p.Rows}, {p.M}], "
                    + $"b_enc[{bEnc.Length}] θ[{theta.Length}] dθ[{gTheta.Length}] norms[{norms.Length}] "
                    + $"sums[{sums.Length}] extra[{extra.Length}]."
            );
        }

        var kernel = Kernel(
            "JumpReluBackward",
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
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    FamilyBackwardArgs
                >(VariantKernels.JumpReluBackwardKernel)
        );
        kernel(
            Stream,
            Items(p.M),
            p.M,
            Items(p.M),
            u,
            bEnc,
            theta,
            phi,
            norms,
            du,
            gBEnc,
            gTheta,
            sums,
            extra,
            p
        );
    }
}
