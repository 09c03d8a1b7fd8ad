using ILGPU;

namespace IlgpuSae.Kernels;

// Dense row-major float32 matrix products C = alpha·op(A)·op(B) + beta·C in the three layouts an SAE needs.
// M, N, K: rows of C, columns of C, inner dimension. Every matrix holds fewer than 2^31 values.
// When beta == 0, C is never read (it may hold garbage or NaN).

/// <summary>The operand layouts of a matrix product (row-major storage).</summary>
public enum GemmLayout
{
    /// <summary><c>C[M,N] = A[M,K] · B[K,N]</c>.</summary>
    NN,

    /// <summary><c>C[M,N] = A[M,K] · B[N,K]ᵀ</c> (e.g. encoder input times a weight stored [out, in]).</summary>
    NT,

    /// <summary><c>C[M,N] = A[K,M]ᵀ · B[K,N]</c> (e.g. a weight gradient Xᵀ·δ).</summary>
    TN,
}

/// <summary>Addressing of op(A)[i,k] and op(B)[k,j] for one <see cref="GemmLayout"/>, resolved at kernel compile time.</summary>
public interface IGemmLayout
{
    /// <summary>Offset of op(A)[i, 0].</summary>
    int AOffset(int i, int m, int k);

    /// <summary>Distance between op(A)[i, k] and op(A)[i, k + 1].</summary>
    int AStride(int m, int k);

    /// <summary>Offset of op(B)[0, j].</summary>
    int BOffset(int j, int k, int n);

    /// <summary>Distance between op(B)[k, j] and op(B)[k + 1, j].</summary>
    int BStride(int k, int n);

    /// <summary>Whether consecutive k are adjacent in A's storage (decides the coalesced tile load order).</summary>
    bool AKContiguous { get; }

    /// <summary>Whether consecutive k are adjacent in B's storage.</summary>
    bool BKContiguous { get; }
}

/// <summary><see cref="GemmLayout.NN"/> addressing.</summary>
public readonly struct LayoutNN : IGemmLayout
{
    /// <inheritdoc/>
    public int AOffset(int i, int m, int k) => i * k;

    /// <inheritdoc/>
    public int AStride(int m, int k) => 1;

    /// <inheritdoc/>
    public int BOffset(int j, int k, int n) => j;

    /// <inheritdoc/>
    public int BStride(int k, int n) => n;

    /// <inheritdoc/>
    public bool AKContiguous => true;

    /// <inheritdoc/>
    public bool BKContiguous => false;
}

/// <summary><see cref="GemmLayout.NT"/> addressing.</summary>
public readonly struct LayoutNT : IGemmLayout
{
    /// <inheritdoc/>
    public int AOffset(int i, int m, int k) => i * k;

    /// <inheritdoc/>
    public int AStride(int m, int k) => 1;

    /// <inheritdoc/>
    public int BOffset(int j, int k, int n) => j * k;

    /// <inheritdoc/>
    public int BStride(int k, int n) => 1;

    /// <inheritdoc/>
    public bool AKContiguous => true;

    /// <inheritdoc/>
    public bool BKContiguous => true;
}

/// <summary><see cref="GemmLayout.TN"/> addressing.</summary>
public readonly struct LayoutTN : IGemmLayout
{
    /// <inheritdoc/>
    public int AOffset(int i, int m, int k) => i;

    /// <inheritdoc/>
    public int AStride(int m, int k) => m;

    /// <inheritdoc/>
    public int BOffset(int j, int k, int n) => j;

    /// <inheritdoc/>
    public int BStride(int k, int n) => n;

    /// <inheritdoc/>
    public bool AKContiguous => false;

    /// <inheritdoc/>
    public bool BKContiguous => false;
}

/// <summary>Scalar arguments of a matrix product.</summary>
internal struct GemmArgs
{
    public int M;
    public int N;
    public int K;
    public float Alpha;
    public float Beta;
}

/// <summary>Matrix-product kernels: a barrier-free register-blocked one for CPUs, a shared-memory tiled one for GPUs.</summary>
internal static class GemmKernels
{
    /// <summary>Rows and columns of C computed by one work item of <see cref="GemmBlockedKernel{TLayout}"/>.</summary>
    public const int Block = 4;

    /// <summary>Edge of the C tile computed by one group of <see cref="GemmTiledKernel{TLayout}"/>.</summary>
    public const int Tile = 64;

    /// <summary>Depth of the K slice staged in shared memory per step.</summary>
    public const int TileK = 16;

    /// <summary>
    /// CPU-shaped: each work item computes a 4×4 block of C with 16 register accumulators and no barrier.
    /// Rows and columns past the edge are clamped for loading and skipped for storing.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void GemmBlockedKernel<TLayout>(
        Index1D gridIndex, int count, int stride, ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, GemmArgs p)
        where TLayout : struct, IGemmLayout
    {
        for (int block = gridIndex; block < count; block += stride)
        {
        var layout = default(TLayout);
        int colBlocks = (p.N + Block - 1) / Block;
        int i0 = block / colBlocks * Block;
        int j0 = block % colBlocks * Block;
        int sa = layout.AStride(p.M, p.K);
        int sb = layout.BStride(p.K, p.N);
        int a0 = layout.AOffset(i0, p.M, p.K);
        int a1 = layout.AOffset(Math.Min(i0 + 1, p.M - 1), p.M, p.K);
        int a2 = layout.AOffset(Math.Min(i0 + 2, p.M - 1), p.M, p.K);
        int a3 = layout.AOffset(Math.Min(i0 + 3, p.M - 1), p.M, p.K);
        int b0 = layout.BOffset(j0, p.K, p.N);
        int b1 = layout.BOffset(Math.Min(j0 + 1, p.N - 1), p.K, p.N);
        int b2 = layout.BOffset(Math.Min(j0 + 2, p.N - 1), p.K, p.N);
        int b3 = layout.BOffset(Math.Min(j0 + 3, p.N - 1), p.K, p.N);

        float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
        float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
        for (int k = 0; k < p.K; k++)
        {
            float x0 = a[a0 + k * sa], x1 = a[a1 + k * sa], x2 = a[a2 + k * sa], x3 = a[a3 + k * sa];
            float y0 = b[b0 + k * sb], y1 = b[b1 + k * sb], y2 = b[b2 + k * sb], y3 = b[b3 + k * sb];
            c00 += x0 * y0; c01 += x0 * y1; c02 += x0 * y2; c03 += x0 * y3;
            c10 += x1 * y0; c11 += x1 * y1; c12 += x1 * y2; c13 += x1 * y3;
            c20 += x2 * y0; c21 += x2 * y1; c22 += x2 * y2; c23 += x2 * y3;
            c30 += x3 * y0; c31 += x3 * y1; c32 += x3 * y2; c33 += x3 * y3;
        }

        StoreRow(c, p, i0, j0, c00, c01, c02, c03);
        StoreRow(c, p, i0 + 1, j0, c10, c11, c12, c13);
        StoreRow(c, p, i0 + 2, j0, c20, c21, c22, c23);
        StoreRow(c, p, i0 + 3, j0, c30, c31, c32, c33);
            }
    }

    private static void StoreRow(ArrayView<float> c, GemmArgs p, int i, int j, float v0, float v1, float v2, float v3)
    {
        if (i >= p.M)
        {
            return;
        }

        Store(c, p, i, j, v0);
        Store(c, p, i, j + 1, v1);
        Store(c, p, i, j + 2, v2);
        Store(c, p, i, j + 3, v3);
    }

    private static void Store(ArrayView<float> c, GemmArgs p, int i, int j, float acc)
    {
        if (i < p.M && j < p.N)
        {
            int index = i * p.N + j;
            c[index] = p.Beta == 0f ? p.Alpha * acc : p.Alpha * acc + p.Beta * c[index];
        }
    }

    /// <summary>
    /// GPU-shaped: a 16×16 group computes a 64×64 tile of C. Each K slice of 16 is staged in shared
    /// memory ([k][m] and [k][n], loaded in the order that is contiguous in global memory), and each
    /// thread accumulates a 4×4 register block at rows ty+16r, columns tx+16s (conflict-free reads).
    /// </summary>
    [Kernel(KernelGrouping.Explicit)]
    public static void GemmTiledKernel<TLayout>(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, GemmArgs p)
        where TLayout : struct, IGemmLayout
    {
        var layout = default(TLayout);
        var aTile = SharedMemory.Allocate<float>(TileK * Tile);
        var bTile = SharedMemory.Allocate<float>(TileK * Tile);
        int tx = Group.IdxX;
        int ty = Group.IdxY;
        int tid = ty * 16 + tx;
        int rowBase = Grid.IdxY * Tile;
        int colBase = Grid.IdxX * Tile;
        int sa = layout.AStride(p.M, p.K);
        int sb = layout.BStride(p.K, p.N);

        float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
        float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
        for (int k0 = 0; k0 < p.K; k0 += TileK)
        {
            for (int l = 0; l < TileK * Tile / 256; l++)
            {
                int e = tid + l * 256;
                int m = layout.AKContiguous ? e / TileK : e % Tile;
                int ka = layout.AKContiguous ? e % TileK : e / Tile;
                int gi = rowBase + m;
                int gka = k0 + ka;
                aTile[ka * Tile + m] = gi < p.M && gka < p.K ? a[layout.AOffset(gi, p.M, p.K) + gka * sa] : 0f;

                int n = layout.BKContiguous ? e / TileK : e % Tile;
                int kb = layout.BKContiguous ? e % TileK : e / Tile;
                int gj = colBase + n;
                int gkb = k0 + kb;
                bTile[kb * Tile + n] = gj < p.N && gkb < p.K ? b[layout.BOffset(gj, p.K, p.N) + gkb * sb] : 0f;
            }

            Group.Barrier();
            for (int k = 0; k < TileK; k++)
            {
                int ak = k * Tile + ty;
                int bk = k * Tile + tx;
                float x0 = aTile[ak], x1 = aTile[ak + 16], x2 = aTile[ak + 32], x3 = aTile[ak + 48];
                float y0 = bTile[bk], y1 = bTile[bk + 16], y2 = bTile[bk + 32], y3 = bTile[bk + 48];
                c00 += x0 * y0; c01 += x0 * y1; c02 += x0 * y2; c03 += x0 * y3;
                c10 += x1 * y0; c11 += x1 * y1; c12 += x1 * y2; c13 += x1 * y3;
                c20 += x2 * y0; c21 += x2 * y1; c22 += x2 * y2; c23 += x2 * y3;
                c30 += x3 * y0; c31 += x3 * y1; c32 += x3 * y2; c33 += x3 * y3;
            }

            Group.Barrier();
        }

        int i = rowBase + ty;
        int j = colBase + tx;
        StoreStrided(c, p, i, j, c00, c01, c02, c03);
        StoreStrided(c, p, i + 16, j, c10, c11, c12, c13);
        StoreStrided(c, p, i + 32, j, c20, c21, c22, c23);
        StoreStrided(c, p, i + 48, j, c30, c31, c32, c33);
    }

    private static void StoreStrided(ArrayView<float> c, GemmArgs p, int i, int j, float v0, float v1, float v2, float v3)
    {
        Store(c, p, i, j, v0);
        Store(c, p, i, j + 16, v1);
        Store(c, p, i, j + 32, v2);
        Store(c, p, i, j + 48, v3);
    }
}
