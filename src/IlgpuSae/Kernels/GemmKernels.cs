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

/// <summary>A layout whose B operand is stored [K, N] (row k of op(B) is contiguous): NN and TN.</summary>
public interface IGemmLayoutRowMajorB : IGemmLayout
{
}

/// <summary><see cref="GemmLayout.NN"/> addressing.</summary>
public readonly struct LayoutNN : IGemmLayoutRowMajorB
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
public readonly struct LayoutTN : IGemmLayoutRowMajorB
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

/// <summary>
/// Sixteen adjacent floats of a matrix row, held as scalars so that kernels keep them in registers: one
/// AVX-512 vector (two AVX2 vectors) once a CPU compiler vectorises the element-wise statements.
/// </summary>
internal struct Row16
{
    /// <summary>Elements per row strip.</summary>
    public const int Width = 16;

    public float V0;

    public float V1;

    public float V2;

    public float V3;

    public float V4;

    public float V5;

    public float V6;

    public float V7;

    public float V8;

    public float V9;

    public float V10;

    public float V11;

    public float V12;

    public float V13;

    public float V14;

    public float V15;

    /// <summary>Reads <c>v[o .. o + 15]</c>.</summary>
    public static Row16 Load(ArrayView<float> v, int o)
    {
        Row16 r = default;
        r.V0 = v[o + 0];
        r.V1 = v[o + 1];
        r.V2 = v[o + 2];
        r.V3 = v[o + 3];
        r.V4 = v[o + 4];
        r.V5 = v[o + 5];
        r.V6 = v[o + 6];
        r.V7 = v[o + 7];
        r.V8 = v[o + 8];
        r.V9 = v[o + 9];
        r.V10 = v[o + 10];
        r.V11 = v[o + 11];
        r.V12 = v[o + 12];
        r.V13 = v[o + 13];
        r.V14 = v[o + 14];
        r.V15 = v[o + 15];
        return r;
    }

    /// <summary>Writes <c>v[o .. o + 15]</c>.</summary>
    public static void Store(ArrayView<float> v, int o, Row16 r)
    {
        v[o + 0] = r.V0;
        v[o + 1] = r.V1;
        v[o + 2] = r.V2;
        v[o + 3] = r.V3;
        v[o + 4] = r.V4;
        v[o + 5] = r.V5;
        v[o + 6] = r.V6;
        v[o + 7] = r.V7;
        v[o + 8] = r.V8;
        v[o + 9] = r.V9;
        v[o + 10] = r.V10;
        v[o + 11] = r.V11;
        v[o + 12] = r.V12;
        v[o + 13] = r.V13;
        v[o + 14] = r.V14;
        v[o + 15] = r.V15;
    }

    /// <summary><c>acc += x · y</c> element-wise.</summary>
    public static void MultiplyAdd(ref Row16 acc, float x, Row16 y)
    {
        acc.V0 += x * y.V0;
        acc.V1 += x * y.V1;
        acc.V2 += x * y.V2;
        acc.V3 += x * y.V3;
        acc.V4 += x * y.V4;
        acc.V5 += x * y.V5;
        acc.V6 += x * y.V6;
        acc.V7 += x * y.V7;
        acc.V8 += x * y.V8;
        acc.V9 += x * y.V9;
        acc.V10 += x * y.V10;
        acc.V11 += x * y.V11;
        acc.V12 += x * y.V12;
        acc.V13 += x * y.V13;
        acc.V14 += x * y.V14;
        acc.V15 += x * y.V15;
    }

    /// <summary><c>acc += x ⊙ y</c> element-wise.</summary>
    public static void MultiplyAdd(ref Row16 acc, Row16 x, Row16 y)
    {
        acc.V0 += x.V0 * y.V0;
        acc.V1 += x.V1 * y.V1;
        acc.V2 += x.V2 * y.V2;
        acc.V3 += x.V3 * y.V3;
        acc.V4 += x.V4 * y.V4;
        acc.V5 += x.V5 * y.V5;
        acc.V6 += x.V6 * y.V6;
        acc.V7 += x.V7 * y.V7;
        acc.V8 += x.V8 * y.V8;
        acc.V9 += x.V9 * y.V9;
        acc.V10 += x.V10 * y.V10;
        acc.V11 += x.V11 * y.V11;
        acc.V12 += x.V12 * y.V12;
        acc.V13 += x.V13 * y.V13;
        acc.V14 += x.V14 * y.V14;
        acc.V15 += x.V15 * y.V15;
    }

    /// <summary>The sum of the sixteen elements (pairwise).</summary>
    public static float Sum(Row16 v) =>
        (((v.V0 + v.V1) + (v.V2 + v.V3)) + ((v.V4 + v.V5) + (v.V6 + v.V7))) +
        (((v.V8 + v.V9) + (v.V10 + v.V11)) + ((v.V12 + v.V13) + (v.V14 + v.V15)));

    /// <summary><c>v[o + k·stride] += r[k]</c> for k = 0 … 15 (a column of a row-major matrix).</summary>
    public static void AddStrided(ArrayView<float> v, int o, int stride, Row16 r)
    {
        v[o + 0 * stride] += r.V0;
        v[o + 1 * stride] += r.V1;
        v[o + 2 * stride] += r.V2;
        v[o + 3 * stride] += r.V3;
        v[o + 4 * stride] += r.V4;
        v[o + 5 * stride] += r.V5;
        v[o + 6 * stride] += r.V6;
        v[o + 7 * stride] += r.V7;
        v[o + 8 * stride] += r.V8;
        v[o + 9 * stride] += r.V9;
        v[o + 10 * stride] += r.V10;
        v[o + 11 * stride] += r.V11;
        v[o + 12 * stride] += r.V12;
        v[o + 13 * stride] += r.V13;
        v[o + 14 * stride] += r.V14;
        v[o + 15 * stride] += r.V15;
    }

    /// <summary><c>alpha · v</c>.</summary>
    public static Row16 Scale(Row16 v, float alpha)
    {
        v.V0 *= alpha;
        v.V1 *= alpha;
        v.V2 *= alpha;
        v.V3 *= alpha;
        v.V4 *= alpha;
        v.V5 *= alpha;
        v.V6 *= alpha;
        v.V7 *= alpha;
        v.V8 *= alpha;
        v.V9 *= alpha;
        v.V10 *= alpha;
        v.V11 *= alpha;
        v.V12 *= alpha;
        v.V13 *= alpha;
        v.V14 *= alpha;
        v.V15 *= alpha;
        return v;
    }

    /// <summary><c>alpha · v + beta · w</c>.</summary>
    public static Row16 Combine(Row16 v, float alpha, Row16 w, float beta)
    {
        v.V0 = alpha * v.V0 + beta * w.V0;
        v.V1 = alpha * v.V1 + beta * w.V1;
        v.V2 = alpha * v.V2 + beta * w.V2;
        v.V3 = alpha * v.V3 + beta * w.V3;
        v.V4 = alpha * v.V4 + beta * w.V4;
        v.V5 = alpha * v.V5 + beta * w.V5;
        v.V6 = alpha * v.V6 + beta * w.V6;
        v.V7 = alpha * v.V7 + beta * w.V7;
        v.V8 = alpha * v.V8 + beta * w.V8;
        v.V9 = alpha * v.V9 + beta * w.V9;
        v.V10 = alpha * v.V10 + beta * w.V10;
        v.V11 = alpha * v.V11 + beta * w.V11;
        v.V12 = alpha * v.V12 + beta * w.V12;
        v.V13 = alpha * v.V13 + beta * w.V13;
        v.V14 = alpha * v.V14 + beta * w.V14;
        v.V15 = alpha * v.V15 + beta * w.V15;
        return v;
    }
}

/// <summary>Matrix-product kernels: a barrier-free register-blocked strip kernel for CPUs, a shared-memory tiled one for GPUs.</summary>
internal static class GemmKernels
{
    /// <summary>Rows of C computed by one work item of <see cref="GemmStripKernel{TLayout}"/>.</summary>
    public const int StripRows = 6;

    /// <summary>Columns of C computed by one work item of <see cref="GemmStripKernel{TLayout}"/> (two <see cref="Row16"/>).</summary>
    public const int StripCols = 2 * Row16.Width;

    /// <summary>Edge of the C tile computed by one group of <see cref="GemmTiledKernel{TLayout}"/>.</summary>
    public const int Tile = 64;

    /// <summary>Depth of the K slice staged in shared memory per step.</summary>
    public const int TileK = 16;

    /// <summary>
    /// CPU-shaped: each work item computes a 6×32 strip of C — six rows of op(A) times 32 adjacent columns of B —
    /// with 192 accumulators and no barrier. Per k it reads 32 contiguous floats of B's row k and one value of each
    /// of the six A rows, so a CPU compiler turns the columns into SIMD lanes: PoCL's LLVM vectorises the
    /// <see cref="Row16"/> arithmetic into twelve independent AVX-512 multiply-add chains, and ILGPU's CPU
    /// accelerator gets a long register-blocked inner loop. Strips are numbered down the columns (row blocks
    /// fastest), so consecutive work items reuse one K×32 panel of B from cache while streaming rows of A.
    /// Only for layouts whose B is stored [K, N] (NN and TN); NT products transpose B first
    /// (<see cref="DeviceOps.MatMul"/>). A strip that reaches past the last column takes a guarded scalar path;
    /// rows past the last are clamped for loading and skipped for storing.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void GemmStripKernel<TLayout>(
        Index1D gridIndex, int count, int stride, ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, GemmArgs p)
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
                Row16 c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default;
                Row16 d0 = default, d1 = default, d2 = default, d3 = default, d4 = default, d5 = default;
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
            Row16.Store(c, o + Row16.Width, Row16.Combine(right, p.Alpha, Row16.Load(c, o + Row16.Width), p.Beta));
        }
    }

    /// <summary>Writes <c>C[i, j] = α·acc + β·C[i, j]</c> (C unread when β = 0) when (i, j) lies inside C.</summary>
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
