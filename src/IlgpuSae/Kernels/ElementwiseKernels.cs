using ILGPU;

namespace IlgpuSae.Kernels;

/// <summary>Element-wise maps, one kernel per arity, specialised by operator struct.</summary>
internal static class ElementwiseKernels
{
    /// <summary><c>y[i] = op(x[i])</c>.</summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void MapKernel<TOp>(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> x,
        ArrayView<float> y,
        TOp op
    )
        where TOp : struct, IUnaryOp
    {
        for (int i = gridIndex; i < count; i += stride)
        {
            y[i] = op.Apply(x[i]);
        }
    }

    /// <summary><c>y[i] = op(a[i], b[i])</c>.</summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void Map2Kernel<TOp>(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> a,
        ArrayView<float> b,
        ArrayView<float> y,
        TOp op
    )
        where TOp : struct, IBinaryOp
    {
        for (int i = gridIndex; i < count; i += stride)
        {
            y[i] = op.Apply(a[i], b[i]);
        }
    }

    /// <summary>
    /// <c>y[i] = op(x[i], v[(i / divisor) % modulus])</c>: with divisor 1 and modulus = columns, v is a row
    /// vector added to every row (a bias); with divisor = columns and modulus = rows, v holds one value per
    /// row.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void MapBroadcastKernel<TOp>(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> x,
        ArrayView<float> v,
        ArrayView<float> y,
        int divisor,
        int modulus,
        TOp op
    )
        where TOp : struct, IBinaryOp
    {
        for (int i = gridIndex; i < count; i += stride)
        {
            y[i] = op.Apply(x[i], v[i / divisor % modulus]);
        }
    }

    /// <summary>Edge of the square block one work item of <see cref="TransposeKernel"/> moves.</summary>
    public const int TransposeBlock = 16;

    /// <summary>
    /// <c>dst[c, r] = src[r, c]</c> for a row-major src [rows, cols]; one work item per 16×16 block, so that
    /// the 16 source
    /// and 16 destination lines it touches stay in cache (a CPU reads and writes whole lines; a GPU would
    /// stage the
    /// block in shared memory, which this library does not need: its transposes are O(N·K) next to O(M·N·K)
    /// products).
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void TransposeKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> src,
        ArrayView<float> dst,
        int rows,
        int cols
    )
    {
        for (int block = gridIndex; block < count; block += stride)
        {
            int colBlocks = (cols + TransposeBlock - 1) / TransposeBlock;
            int r0 = block / colBlocks * TransposeBlock;
            int c0 = block % colBlocks * TransposeBlock;
            int r1 = Math.Min(r0 + TransposeBlock, rows);
            int c1 = Math.Min(c0 + TransposeBlock, cols);
            for (int c = c0; c < c1; c++)
            {
                for (int r = r0; r < r1; r++)
                {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}
