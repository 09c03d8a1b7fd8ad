using ILGPU;
using ILGPU.Runtime;

namespace IlgpuSae.Kernels;

/// <summary>Launchers of the gradient-pursuit kernels (public surface:
/// <see cref="Sae.GradientPursuit"/>).</summary>
public sealed partial class DeviceOps
{
    internal void PursuitDecode(
        ArrayView<float> baseValues,
        ArrayView<int> idx,
        ArrayView<float> coef,
        ArrayView<int> count,
        ArrayView<float> dictionary,
        ArrayView<float> output,
        int d,
        int k,
        bool baseIsRowVector,
        float sign
    )
    {
        int total = ToIndex(output.Length);
        var kernel = Kernel(
            "PursuitDecode",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    int,
                    int,
                    ArrayView<float>,
                    ArrayView<int>,
                    ArrayView<float>,
                    ArrayView<int>,
                    ArrayView<float>,
                    ArrayView<float>,
                    int,
                    int,
                    int,
                    float
                >(PursuitKernels.PursuitDecodeKernel)
        );
        kernel(
            Stream,
            Items(total),
            total,
            Items(total),
            baseValues,
            idx,
            coef,
            count,
            dictionary,
            output,
            d,
            k,
            baseIsRowVector ? 0 : d,
            sign
        );
    }

    internal void PursuitSelect(
        ArrayView<float> c,
        ArrayView<int> idx,
        ArrayView<float> coef,
        ArrayView<int> count,
        ArrayView<float> g,
        int rows,
        int m,
        int k
    )
    {
        var kernel = Kernel(
            "PursuitSelect",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    int,
                    int,
                    ArrayView<float>,
                    ArrayView<int>,
                    ArrayView<float>,
                    ArrayView<int>,
                    ArrayView<float>,
                    int,
                    int
                >(PursuitKernels.PursuitSelectKernel)
        );
        kernel(Stream, Items(rows), rows, Items(rows), c, idx, coef, count, g, m, k);
    }

    internal void PursuitStep(
        ArrayView<float> r,
        ArrayView<int> idx,
        ArrayView<float> coef,
        ArrayView<int> count,
        ArrayView<float> g,
        ArrayView<float> dictionary,
        int rows,
        int d,
        int k
    )
    {
        var kernel = Kernel(
            "PursuitStep",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    int,
                    int,
                    ArrayView<float>,
                    ArrayView<int>,
                    ArrayView<float>,
                    ArrayView<int>,
                    ArrayView<float>,
                    ArrayView<float>,
                    int,
                    int
                >(PursuitKernels.PursuitStepKernel)
        );
        kernel(Stream, Items(rows), rows, Items(rows), r, idx, coef, count, g, dictionary, d, k);
    }
}
