using ILGPU;

namespace IlgpuSae.Kernels;

/// <summary>
/// Row reductions (one result per row) and column reductions (one result per column) of a row-major
/// matrix. With <c>accumulate</c> set, the result is combined into the existing output (parameter
/// gradients accumulate); otherwise it overwrites it.
/// </summary>
internal static class ReductionKernels
{
    /// <summary>CPU-shaped row reduction: one work item per row, four interleaved partial results.</summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void ReduceRowsKernel<TOp>(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> x,
        ArrayView<float> y,
        int cols,
        int accumulate
    )
        where TOp : struct, IReduceOp
    {
        for (int row = gridIndex; row < count; row += stride)
        {
            var op = default(TOp);
            int start = row * cols;
            float s0 = op.Identity,
                s1 = op.Identity,
                s2 = op.Identity,
                s3 = op.Identity;
            int j = 0;
            for (; j + 3 < cols; j += 4)
            {
                s0 = op.Combine(s0, op.Map(x[start + j]));
                s1 = op.Combine(s1, op.Map(x[start + j + 1]));
                s2 = op.Combine(s2, op.Map(x[start + j + 2]));
                s3 = op.Combine(s3, op.Map(x[start + j + 3]));
            }

            for (; j < cols; j++)
            {
                s0 = op.Combine(s0, op.Map(x[start + j]));
            }

            float result = op.Combine(op.Combine(s0, s1), op.Combine(s2, s3));
            y[row] = accumulate != 0 ? op.Combine(y[row], result) : result;
        }
    }

    /// <summary>GPU-shaped row reduction: one 256-thread group per row, strided loads, shared-memory
    /// tree.</summary>
    [Kernel(KernelGrouping.Explicit)]
    public static void ReduceRowsTiledKernel<TOp>(
        ArrayView<float> x,
        ArrayView<float> y,
        int cols,
        int accumulate
    )
        where TOp : struct, IReduceOp
    {
        var op = default(TOp);
        int row = Grid.IdxX;
        int start = row * cols;
        float partial = op.Identity;
        for (int j = Group.IdxX; j < cols; j += TiledKernels.GroupSize)
        {
            partial = op.Combine(partial, op.Map(x[start + j]));
        }

        float result = TiledKernels.GroupReduce<TOp>(partial);
        if (Group.IdxX == 0)
        {
            y[row] = accumulate != 0 ? op.Combine(y[row], result) : result;
        }
    }

    /// <summary>
    /// Column reduction: one work item per column walking down the rows (adjacent work items read
    /// adjacent addresses, so the same kernel suits CPUs and GPUs).
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void ReduceColumnsKernel<TOp>(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> x,
        ArrayView<float> y,
        int rows,
        int cols,
        int accumulate
    )
        where TOp : struct, IReduceOp
    {
        for (int col = gridIndex; col < count; col += stride)
        {
            var op = default(TOp);
            float s0 = op.Identity,
                s1 = op.Identity;
            int i = 0;
            for (; i + 1 < rows; i += 2)
            {
                s0 = op.Combine(s0, op.Map(x[i * cols + col]));
                s1 = op.Combine(s1, op.Map(x[(i + 1) * cols + col]));
            }

            if (i < rows)
            {
                s0 = op.Combine(s0, op.Map(x[i * cols + col]));
            }

            float result = op.Combine(s0, s1);
            y[col] = accumulate != 0 ? op.Combine(y[col], result) : result;
        }
    }
}
