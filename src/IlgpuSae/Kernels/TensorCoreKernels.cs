using ILGPU;
using ILGPU.Runtime.Cuda;

namespace IlgpuSae.Kernels;

/// <summary>The four float32 accumulators one lane holds of a 16×8 <c>mma</c> tile.</summary>
internal struct MmaAccumulator
{
    /// <summary>Element (g, 2t).</summary>
    public float C0;

    /// <summary>Element (g, 2t + 1).</summary>
    public float C1;

    /// <summary>Element (g + 8, 2t).</summary>
    public float C2;

    /// <summary>Element (g + 8, 2t + 1).</summary>
    public float C3;
}

/// <summary>
/// Matrix products on NVIDIA tensor cores in TF32 (sm_80+):
/// <c>mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32</c>
/// through ILGPU's inline PTX, which ptxas assembles to <c>HMMA.1688.F32.TF32</c>. Opt-in
/// (<see cref="Backends.SaeDeviceOptions.TensorCores"/>) until a GPU has verified it: inputs are rounded to
/// TF32
/// (10-bit mantissa, <c>cvt.rna</c>), products accumulate in float32.
/// <para>
/// Off CUDA the same kernel runs with <see cref="MmaTf32"/> emulated by warp shuffles on ILGPU's CPU
/// accelerator,
/// so the tiling, the fragment layout (PTX ISA, "Matrix Fragments for mma.m16n8k8", .tf32) and the edge
/// handling
/// are tested against the double-precision reference without a GPU; only the hardware instruction itself is
/// not.
/// </para>
/// </summary>
internal static class TensorCoreKernels
{
    /// <summary>Edge of the C tile of one group.</summary>
    public const int Tile = 64;

    /// <summary>Depth of the K slice staged in shared memory.</summary>
    public const int TileK = 16;

    /// <summary>Threads per group: four warps, each computing a 32×32 quarter of the tile.</summary>
    public const int Threads = 128;

    private const int AStride = TileK + 4; // [m][k] rows padded against bank conflicts
    private const int BStride = Tile + 8; // [k][n] rows padded against bank conflicts

    /// <summary>
    /// One group of 128 threads computes a 64×64 tile of <c>C = α·op(A)·op(B) + β·C</c>. Per K slice of 16
    /// the
    /// group stages op(A) as [m][k] and op(B) as [k][n] in shared memory, rounded to TF32; warp w then
    /// multiplies
    /// its 32×32 quarter (rows 32·(w/2), columns 32·(w%2)) as 2×4 tiles of 16×8 with two k-steps of 8.
    /// Rows, columns and k past the edges are staged as zeros and never stored.
    /// </summary>
    [Kernel(KernelGrouping.Explicit)]
    public static void GemmMmaTf32Kernel<TLayout>(
        ArrayView<float> a,
        ArrayView<float> b,
        ArrayView<float> c,
        GemmArgs p
    )
        where TLayout : struct, IGemmLayout
    {
        var layout = default(TLayout);
        var aTile = SharedMemory.Allocate<uint>(Tile * AStride);
        var bTile = SharedMemory.Allocate<uint>(TileK * BStride);
        int tid = Group.IdxX;
        int warp = tid / 32;
        int lane = tid % 32;
        int g = lane >> 2;
        int t = lane & 3;
        int rowBase = Grid.IdxY * Tile;
        int colBase = Grid.IdxX * Tile;
        int warpRow = warp / 2 * 32;
        int warpCol = warp % 2 * 32;
        int sa = layout.AStride(p.M, p.K);
        int sb = layout.BStride(p.K, p.N);

        MmaAccumulator c00 = default,
            c01 = default,
            c02 = default,
            c03 = default;
        MmaAccumulator c10 = default,
            c11 = default,
            c12 = default,
            c13 = default;
        for (int k0 = 0; k0 < p.K; k0 += TileK)
        {
            for (int l = 0; l < TileK * Tile / Threads; l++)
            {
                int e = tid + l * Threads;
                int m = layout.AKContiguous ? e / TileK : e % Tile;
                int ka = layout.AKContiguous ? e % TileK : e / Tile;
                int gi = rowBase + m;
                int gka = k0 + ka;
                aTile[m * AStride + ka] = ToTf32(
                    gi < p.M && gka < p.K ? a[layout.AOffset(gi, p.M, p.K) + gka * sa] : 0f
                );

                int n = layout.BKContiguous ? e / TileK : e % Tile;
                int kb = layout.BKContiguous ? e % TileK : e / Tile;
                int gj = colBase + n;
                int gkb = k0 + kb;
                bTile[kb * BStride + n] = ToTf32(
                    gj < p.N && gkb < p.K ? b[layout.BOffset(gj, p.K, p.N) + gkb * sb] : 0f
                );
            }

            Group.Barrier();
            for (int kk = 0; kk < TileK; kk += 8)
            {
                // A fragments of the warp's two 16-row tiles: a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3 (g
                // + 8, t + 4).
                int r0 = (warpRow + g) * AStride + kk + t;
                int r1 = (warpRow + 16 + g) * AStride + kk + t;
                uint x00 = aTile[r0],
                    x01 = aTile[r0 + 8 * AStride],
                    x02 = aTile[r0 + 4],
                    x03 = aTile[r0 + 8 * AStride + 4];
                uint x10 = aTile[r1],
                    x11 = aTile[r1 + 8 * AStride],
                    x12 = aTile[r1 + 4],
                    x13 = aTile[r1 + 8 * AStride + 4];

                // B fragments of the warp's four 8-column tiles: b0 (t, g), b1 (t + 4, g).
                int q = (kk + t) * BStride + warpCol + g;
                uint y00 = bTile[q],
                    y01 = bTile[q + 4 * BStride];
                uint y10 = bTile[q + 8],
                    y11 = bTile[q + 8 + 4 * BStride];
                uint y20 = bTile[q + 16],
                    y21 = bTile[q + 16 + 4 * BStride];
                uint y30 = bTile[q + 24],
                    y31 = bTile[q + 24 + 4 * BStride];

                MmaTf32(ref c00, x00, x01, x02, x03, y00, y01);
                MmaTf32(ref c01, x00, x01, x02, x03, y10, y11);
                MmaTf32(ref c02, x00, x01, x02, x03, y20, y21);
                MmaTf32(ref c03, x00, x01, x02, x03, y30, y31);
                MmaTf32(ref c10, x10, x11, x12, x13, y00, y01);
                MmaTf32(ref c11, x10, x11, x12, x13, y10, y11);
                MmaTf32(ref c12, x10, x11, x12, x13, y20, y21);
                MmaTf32(ref c13, x10, x11, x12, x13, y30, y31);
            }

            Group.Barrier();
        }

        int i0 = rowBase + warpRow + g;
        int j0 = colBase + warpCol + 2 * t;
        StoreTile(c, p, i0, j0, c00);
        StoreTile(c, p, i0, j0 + 8, c01);
        StoreTile(c, p, i0, j0 + 16, c02);
        StoreTile(c, p, i0, j0 + 24, c03);
        StoreTile(c, p, i0 + 16, j0, c10);
        StoreTile(c, p, i0 + 16, j0 + 8, c11);
        StoreTile(c, p, i0 + 16, j0 + 16, c12);
        StoreTile(c, p, i0 + 16, j0 + 24, c13);
    }

    /// <summary>Stores one lane's accumulators: (i, j), (i, j + 1), (i + 8, j), (i + 8, j + 1).</summary>
    private static void StoreTile(ArrayView<float> c, GemmArgs p, int i, int j, MmaAccumulator v)
    {
        GemmKernels.Store(c, p, i, j, v.C0);
        GemmKernels.Store(c, p, i, j + 1, v.C1);
        GemmKernels.Store(c, p, i + 8, j, v.C2);
        GemmKernels.Store(c, p, i + 8, j + 1, v.C3);
    }

    /// <summary>
    /// Rounds a float to TF32 (round to nearest, ties away from zero, as <c>cvt.rna.tf32.f32</c>) and returns
    /// its bits.
    /// </summary>
    public static uint ToTf32(float x)
    {
        if (CudaAsm.IsSupported)
        {
            CudaAsm.Emit("cvt.rna.tf32.f32 %0, %1;", out uint r, x);
            return r;
        }

        uint bits = Interop.FloatAsInt(x);
        // Finite values: add half of the dropped 13 bits to the magnitude, then clear them.
        return (bits & 0x7F800000u) == 0x7F800000u ? bits : (bits + 0x1000u) & 0xFFFFE000u;
    }

    /// <summary>
    /// <c>d += A·B</c> for one 16×8×8 tile held across the warp (PTX fragment layout, g = lane / 4, t = lane
    /// % 4):
    /// A as a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3 (g + 8, t + 4); B as b0 (t, g), b1 (t + 4, g); D as
    /// <see cref="MmaAccumulator"/>. On CUDA one tensor-core instruction; elsewhere every lane gathers its
    /// row
    /// and column elements with warp shuffles and accumulates in float32 in k order.
    /// </summary>
    public static void MmaTf32(ref MmaAccumulator d, uint a0, uint a1, uint a2, uint a3, uint b0, uint b1)
    {
        if (CudaAsm.IsSupported)
        {
            var d0 = new Ref<float> { Value = d.C0 };
            var d1 = new Ref<float> { Value = d.C1 };
            var d2 = new Ref<float> { Value = d.C2 };
            var d3 = new Ref<float> { Value = d.C3 };
            var ia0 = new Input<uint> { Value = a0 };
            var ia1 = new Input<uint> { Value = a1 };
            var ia2 = new Input<uint> { Value = a2 };
            var ia3 = new Input<uint> { Value = a3 };
            var ib0 = new Input<uint> { Value = b0 };
            var ib1 = new Input<uint> { Value = b1 };
            CudaAsm.EmitRef(
                "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};",
                ref d0,
                ref d1,
                ref d2,
                ref d3,
                ref ia0,
                ref ia1,
                ref ia2,
                ref ia3,
                ref ib0,
                ref ib1
            );
            d.C0 = d0.Value;
            d.C1 = d1.Value;
            d.C2 = d2.Value;
            d.C3 = d3.Value;
            return;
        }

        int lane = Warp.LaneIdx;
        int g = lane >> 2;
        int t = lane & 3;
        for (int k = 0; k < 8; k++)
        {
            // A[g, k] and A[g + 8, k] live in lane 4g + k%4 (a0/a1 for k < 4, a2/a3 above); B[k, n] in lane
            // 4n + k%4 (b0 / b1).
            bool low = k < 4;
            int aLane = g * 4 + (k & 3);
            float top = Interop.IntAsFloat(Warp.Shuffle(low ? a0 : a2, aLane));
            float bottom = Interop.IntAsFloat(Warp.Shuffle(low ? a1 : a3, aLane));
            float left = Interop.IntAsFloat(Warp.Shuffle(low ? b0 : b1, 2 * t * 4 + (k & 3)));
            float right = Interop.IntAsFloat(Warp.Shuffle(low ? b0 : b1, (2 * t + 1) * 4 + (k & 3)));
            d.C0 += top * left;
            d.C1 += top * right;
            d.C2 += bottom * left;
            d.C3 += bottom * right;
        }
    }
}
