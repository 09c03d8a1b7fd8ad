using ILGPU;
using ILGPU.Algorithms;

namespace IlgpuSae.Kernels;

/// <summary>
/// Row normalisation to unit L2 norm: <c>x[r,:] /= max(‖x[r,:]‖₂, eps)</c>, optionally recording each
/// row's norm before scaling (decoder rows of an SAE are kept at unit norm this way).
/// </summary>
internal static class NormKernels
{
    /// <summary>CPU-shaped: one work item per row.</summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void NormalizeRowsKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> x,
        ArrayView<float> norms,
        int cols,
        float eps,
        int writeNorms
    )
    {
        for (int row = gridIndex; row < count; row += stride)
        {
            int start = row * cols;
            float s0 = 0f,
                s1 = 0f;
            int j = 0;
            for (; j + 1 < cols; j += 2)
            {
                float u = x[start + j];
                float w = x[start + j + 1];
                s0 += u * u;
                s1 += w * w;
            }

            if (j < cols)
            {
                float u = x[start + j];
                s0 += u * u;
            }

            float norm = XMath.Sqrt(s0 + s1);
            float scale = 1f / XMath.Max(norm, eps);
            for (j = 0; j < cols; j++)
            {
                x[start + j] *= scale;
            }

            if (writeNorms != 0)
            {
                norms[row] = norm;
            }
        }
    }

    /// <summary>GPU-shaped: one 256-thread group per row.</summary>
    [Kernel(KernelGrouping.Explicit)]
    public static void NormalizeRowsTiledKernel(
        ArrayView<float> x,
        ArrayView<float> norms,
        int cols,
        float eps,
        int writeNorms
    )
    {
        int row = Grid.IdxX;
        int start = row * cols;
        float partial = 0f;
        for (int j = Group.IdxX; j < cols; j += TiledKernels.GroupSize)
        {
            float u = x[start + j];
            partial += u * u;
        }

        float norm = XMath.Sqrt(TiledKernels.GroupReduce<Sum>(partial));
        float scale = 1f / XMath.Max(norm, eps);
        for (int j = Group.IdxX; j < cols; j += TiledKernels.GroupSize)
        {
            x[start + j] *= scale;
        }

        if (writeNorms != 0 && Group.IdxX == 0)
        {
            norms[row] = norm;
        }
    }
}
