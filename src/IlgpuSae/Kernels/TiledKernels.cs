using ILGPU;

namespace IlgpuSae.Kernels;

/// <summary>Shared pieces of the GPU-shaped (explicitly grouped) kernels.</summary>
internal static class TiledKernels
{
    /// <summary>Threads per group of every GPU-shaped kernel (16×16 for GEMM, 256×1 otherwise).</summary>
    public const int GroupSize = 256;

    /// <summary>
    /// Reduces one value per thread of a 256-thread 1-D group with a shared-memory tree; every thread
    /// receives the result. Uses barriers only (no warp intrinsics: PoCL reports the whole group as one
    /// warp).
    /// </summary>
    public static float GroupReduce<TOp>(float value)
        where TOp : struct, IReduceOp
    {
        var op = default(TOp);
        var scratch = SharedMemory.Allocate<float>(GroupSize);
        int tid = Group.IdxX;
        scratch[tid] = value;
        Group.Barrier();
        for (int s = GroupSize / 2; s > 0; s >>= 1)
        {
            if (tid < s)
            {
                scratch[tid] = op.Combine(scratch[tid], scratch[tid + s]);
            }

            Group.Barrier();
        }

        float result = scratch[0];
        Group.Barrier();
        return result;
    }
}
