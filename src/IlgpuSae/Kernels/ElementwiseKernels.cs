using ILGPU;

namespace IlgpuSae.Kernels;

/// <summary>Element-wise maps, one kernel per arity, specialised by operator struct.</summary>
internal static class ElementwiseKernels
{
    /// <summary><c>y[i] = op(x[i])</c>.</summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void MapKernel<TOp>(Index1D gridIndex, int count, int stride, ArrayView<float> x, ArrayView<float> y, TOp op)
        where TOp : struct, IUnaryOp
    {
        for (int i = gridIndex; i < count; i += stride)
        {
        y[i] = op.Apply(x[i]);
            }
    }

    /// <summary><c>y[i] = op(a[i], b[i])</c>.</summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void Map2Kernel<TOp>(Index1D gridIndex, int count, int stride, ArrayView<float> a, ArrayView<float> b, ArrayView<float> y, TOp op)
        where TOp : struct, IBinaryOp
    {
        for (int i = gridIndex; i < count; i += stride)
        {
        y[i] = op.Apply(a[i], b[i]);
            }
    }

    /// <summary>
    /// <c>y[i] = op(x[i], v[(i / divisor) % modulus])</c>: with divisor 1 and modulus = columns, v is a row
    /// vector added to every row (a bias); with divisor = columns and modulus = rows, v holds one value per row.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void MapBroadcastKernel<TOp>(
        Index1D gridIndex, int count, int stride, ArrayView<float> x, ArrayView<float> v, ArrayView<float> y, int divisor, int modulus, TOp op)
        where TOp : struct, IBinaryOp
    {
        for (int i = gridIndex; i < count; i += stride)
        {
        y[i] = op.Apply(x[i], v[i / divisor % modulus]);
            }
    }

    /// <summary><c>dst[c, r] = src[r, c]</c> for a row-major src [rows, cols]; one work item per element of dst.</summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void TransposeKernel(Index1D gridIndex, int count, int stride, ArrayView<float> src, ArrayView<float> dst, int rows, int cols)
    {
        for (int e = gridIndex; e < count; e += stride)
        {
        int c = e / rows;
        int r = e - c * rows;
        dst[e] = src[r * cols + c];
            }
    }
}
