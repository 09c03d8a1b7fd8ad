using ILGPU;
using ILGPU.Runtime;

namespace IlgpuSae.Kernels;

/// <summary>Matrix-product kernels: a barrier-free register-blocked strip kernel for CPUs, a shared-memory
/// tiled one for GPUs.</summary>
internal static class GemmKernels
{
    /// <summary>Rows of C computed by one work item of <see cref="GemmStripKernel{TLayout}"/>.</summary>
    public const int StripRows = 6;

    /// <summary>Columns of C computed by one work item of <see cref="GemmStripKernel{TLayout}"/> (two
    /// <see cref="Row16"/>).</summary>
    public const int StripCols = 2 * Row16.Width;

    /// <summary>Edge of the C tile computed by one group of <see cref="GemmTiledKernel{TLayout}"/>.</summary>
    public const int Tile = 64;

    /// <summary>Depth of the K slice staged in shared memory per step.</summary>
    public const int TileK = 16;

    /// <summary>
    /// CPU-shaped: each work item computes a 6×32 strip of C — six rows of op(A) times 32 adjacent columns of
    /// B —
    /// with 192 accumulators and no barrier. Per k it reads 32 contiguous floats of B's row k and one value
    /// of each
    /// of the six A rows, so a CPU compiler turns the columns into SIMD lanes: PoCL's LLVM vectorises the
    /// <see cref="Row16"/> arithmetic into twelve independent AVX-512 multiply-add chains, and ILGPU's CPU
    /// accelerator gets a long register-blocked inner loop. Strips are numbered down the columns (row blocks
    /// fastest), so consecutive work items reuse one K×32 panel of B from cache while streaming rows of A.
    /// Only for layouts whose B is stored [K, N] (NN and TN); NT products transpose B first
    /// (<see cref="DeviceOps.MatMul"/>). A strip that reaches past the last column takes a guarded scalar
    /// path;
    /// rows past the last are clamped for loading and skipped for storing.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void GemmStripKernel<TLayout>(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> a,
        ArrayView<float> b,
        ArrayView<float> c,
        GemmArgs p
    )
        where TLayout : struct, IGemmLayoutRowMajorB
    {
        for (int strip = gridIndex; strip < count; strip += stride)
        {
            var layout = default(TLayout);
            int rowBlocks = (p.M + StripRows - 1) / StripRows;
            int i0 = strip % rowBlocks * StripRows;
            int j0 = strip / rowBlocks * StripCols;
            int sa = layout.AStride(p.M, p.K);
            int a0 = layout.AOffset(i0, p.M, p.K);
            int a1 = layout.AOffset(Math.Min(i0 + 1, p.M - 1), p.M, p.K);
            int a2 = layout.AOffset(Math.Min(i0 + 2, p.M - 1), p.M, p.K);
            int a3 = layout.AOffset(Math.Min(i0 + 3, p.M - 1), p.M, p.K);
            int a4 = layout.AOffset(Math.Min(i0 + 4, p.M - 1), p.M, p.K);
            int a5 = layout.AOffset(Math.Min(i0 + 5, p.M - 1), p.M, p.K);
            if (j0 + StripCols <= p.N)
            {
                Row16 c0 = default,
                    c1 = default,
                    c2 = default,
                    c3 = default,
                    c4 = default,
                    c5 = default;
                Row16 d0 = default,
                    d1 = default,
                    d2 = default,
                    d3 = default,
                    d4 = default,
                    d5 = default;
                for (int k = 0; k < p.K; k++)
                {
                    int bk = k * p.N + j0;
                    var y = Row16.Load(b, bk);
                    var z = Row16.Load(b, bk + Row16.Width);
                    int ak = k * sa;
                    float x = a[a0 + ak];
                    Row16.MultiplyAdd(ref c0, x, y);
                    Row16.MultiplyAdd(ref d0, x, z);
                    x = a[a1 + ak];
                    Row16.MultiplyAdd(ref c1, x, y);
                    Row16.MultiplyAdd(ref d1, x, z);
                    x = a[a2 + ak];
                    Row16.MultiplyAdd(ref c2, x, y);
                    Row16.MultiplyAdd(ref d2, x, z);
                    x = a[a3 + ak];
                    Row16.MultiplyAdd(ref c3, x, y);
                    Row16.MultiplyAdd(ref d3, x, z);
                    x = a[a4 + ak];
                    Row16.MultiplyAdd(ref c4, x, y);
                    Row16.MultiplyAdd(ref d4, x, z);
                    x = a[a5 + ak];
                    Row16.MultiplyAdd(ref c5, x, y);
                    Row16.MultiplyAdd(ref d5, x, z);
                }

                StoreStrip(c, p, i0, j0, c0, d0);
                StoreStrip(c, p, i0 + 1, j0, c1, d1);
                StoreStrip(c, p, i0 + 2, j0, c2, d2);
                StoreStrip(c, p, i0 + 3, j0, c3, d3);
                StoreStrip(c, p, i0 + 4, j0, c4, d4);
                StoreStrip(c, p, i0 + 5, j0, c5, d5);
            }
            else
            {
                // The last, partial strip of a row block: one dot product per element.
                for (int r = 0; r < StripRows && i0 + r < p.M; r++)
                {
                    int ar = layout.AOffset(i0 + r, p.M, p.K);
                    for (int j = j0; j < p.N; j++)
                    {
                        float acc = 0f;
                        for (int k = 0; k < p.K; k++)
                        {
                            acc += a[ar + k * sa] * b[k * p.N + j];
                        }

                        Store(c, p, i0 + r, j, acc);
                    }
                }
            }
        }
    }

    private static void StoreStrip(ArrayView<float> c, GemmArgs p, int i, int j, Row16 left, Row16 right)
    {
        if (i >= p.M)
        {
            return;
        }

        int o = i * p.N + j;
        if (p.Beta == 0f)
        {
            Row16.Store(c, o, Row16.Scale(left, p.Alpha));
            Row16.Store(c, o + Row16.Width, Row16.Scale(right, p.Alpha));
        }
        else
        {
            Row16.Store(c, o, Row16.Combine(left, p.Alpha, Row16.Load(c, o), p.Beta));
            Row16.Store(
                c,
                o + Row16.Width,
                Row16.Combine(right, p.Alpha, Row16.Load(c, o + Row16.Width), p.Beta)
            );
        }
    }

    /// <summary>Writes <c>C[i, j] = α·acc + β·C[i, j]</c> (C unread when β = 0) when (i, j) lies inside
    /// C.</summary>
    internal static void Store(ArrayView<float> c, GemmArgs p, int i, int j, float acc)
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
    public static void GemmTiledKernel<TLayout>(
        ArrayView<float> a,
        ArrayView<float> b,
        ArrayView<float> c,
        GemmArgs p
    )
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

        float c00 = 0,
            c01 = 0,
            c02 = 0,
            c03 = 0,
            c10 = 0,
            c11 = 0,
            c12 = 0,
            c13 = 0;
        float c20 = 0,
            c21 = 0,
            c22 = 0,
            c23 = 0,
            c30 = 0,
            c31 = 0,
            c32 = 0,
            c33 = 0;
        for (int k0 = 0; k0 < p.K; k0 += TileK)
        {
            for (int l = 0; l < TileK * Tile / 256; l++)
            {
                int e = tid + l * 256;
                int m = layout.AKContiguous ? e / TileK : e % Tile;
                int ka = layout.AKContiguous ? e % TileK : e / Tile;
                int gi = rowBase + m;
                int gka = k0 + ka;
                aTile[ka * Tile + m] =
                    gi < p.M && gka < p.K ? a[layout.AOffset(gi, p.M, p.K) + gka * sa] : 0f;

                int n = layout.BKContiguous ? e / TileK : e % Tile;
                int kb = layout.BKContiguous ? e % TileK : e / Tile;
                int gj = colBase + n;
                int gkb = k0 + kb;
                bTile[kb * Tile + n] =
                    gj < p.N && gkb < p.K ? b[layout.BOffset(gj, p.K, p.N) + gkb * sb] : 0f;
            }

            Group.Barrier();
            for (int k = 0; k < TileK; k++)
            {
                int ak = k * Tile + ty;
                int bk = k * Tile + tx;
                float x0 = aTile[ak],
                    x1 = aTile[ak + 16],
                    x2 = aTile[ak + 32],
                    x3 = aTile[ak + 48];
                float y0 = bTile[bk],
                    y1 = bTile[bk + 16],
                    y2 = bTile[bk + 32],
                    y3 = bTile[bk + 48];
                c00 += x0 * y0;
                c01 += x0 * y1;
                c02 += x0 * y2;
                c03 += x0 * y3;
                c10 += x1 * y0;
                c11 += x1 * y1;
                c12 += x1 * y2;
                c13 += x1 * y3;
                c20 += x2 * y0;
                c21 += x2 * y1;
                c22 += x2 * y2;
                c23 += x2 * y3;
                c30 += x3 * y0;
                c31 += x3 * y1;
                c32 += x3 * y2;
                c33 += x3 * y3;
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

    private static void StoreStrided(
        ArrayView<float> c,
        GemmArgs p,
        int i,
        int j,
        float v0,
        float v1,
        float v2,
        float v3
    )
    {
        Store(c, p, i, j, v0);
        Store(c, p, i, j + 16, v1);
        Store(c, p, i, j + 32, v2);
        Store(c, p, i, j + 48, v3);
    }
}
