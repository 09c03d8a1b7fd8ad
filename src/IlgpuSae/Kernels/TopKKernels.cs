using ILGPU;

namespace IlgpuSae.Kernels;

// Top-k selection for the TopK (Gao et al. 2024, "Scaling and evaluating sparse autoencoders") and BatchTopK
// (Bussmann et al. 2024, "BatchTopK Sparse Autoencoders") families: f = TopK(ReLU(pre)), per row or over the
// whole flattened batch. Selection only copies values, so every backend and kernel shape gives bit-identical
// results.
//
// Algorithm: radix select on the IEEE-754 bit pattern. For positive floats (the only candidates) the bit
// pattern read as an unsigned integer is monotonic in the value, so the k-th largest value T is found one
// byte at a time, most significant first: four passes of 256-bin histograms over the candidates that share
// the prefix found so far. Each pass picks the bin holding the k-th largest candidate and subtracts the
// candidates of the higher bins from k. After the fourth pass T is known exactly, together with the number
// of candidates equal to T still to keep; the output keeps every candidate above T and the first of those
// equal to T in index order (ties broken by lowest index). When no more than k values are positive, all of
// them are kept (T = 0, no ties to keep). Non-positive values and NaN are never candidates.
// Histograms are integer counts, so their order of accumulation does not matter: the result is deterministic
// without sorting.

/// <summary>Radix-select top-k kernels (per row and over the whole batch).</summary>
internal static class TopKKernels
{
    /// <summary>Bins of one radix pass (one byte of the bit pattern).</summary>
    public const int Bins = 256;

    /// <summary>Elements per chunk of the batch kernels (one histogram per chunk).</summary>
    public const int Chunk = 4096;

    /// <summary>Ints of the selection state: prefix of T, ties left to keep, "keep every positive" flag, and
    /// the number of candidates equal to T.</summary>
    public const int StateLength = 4;

    /// <summary>The bits of the candidates already matched by the passes before the one at
    /// <paramref name="shift"/> (24, 16, 8, 0).</summary>
    public static uint HighMask(int shift) => shift == 24 ? 0u : 0xFFFFFFFFu << (shift + 8);

    /// <summary>
    /// One pass of the selection from a 256-bin histogram: finds the bin that holds the
    /// <paramref name="remaining"/>-th largest candidate (scanning from the top bin), adds it to
    /// <paramref name="prefix"/> and subtracts the candidates of the higher bins from
    /// <paramref name="remaining"/>. The caller guarantees that the histogram holds at least
    /// <paramref name="remaining"/> candidates.
    /// </summary>
    private static void SelectBin(ArrayView<int> hist, int shift, ref uint prefix, ref int remaining)
    {
        int above = 0;
        for (int b = Bins - 1; b >= 0; b--)
        {
            int h = hist[b];
            if (above + h >= remaining)
            {
                prefix |= (uint)b << shift;
                remaining -= above;
                return;
            }

            above += h;
        }
    }

    private static int Sum(ArrayView<int> hist)
    {
        int total = 0;
        for (int b = 0; b < Bins; b++)
        {
            total += hist[b];
        }

        return total;
    }

    /// <summary>Whether the element is kept, given T's bit pattern and its rank among the candidates equal to
    /// T.</summary>
    private static bool Keep(uint bits, uint threshold, int tieRank, int ties) =>
        Candidate(bits) && (bits > threshold || (bits == threshold && tieRank < ties));

    /// <summary>
    /// Whether a value is positive, decided on its bit pattern: sign clear, not +0, not NaN (bits in [1,
    /// 0x7F800000], subnormals and +∞ included). Exact on every backend, whatever a device does with
    /// subnormals in float comparisons.
    /// </summary>
    private static bool Candidate(uint bits) => bits - 1u < 0x7F800000u;

    // ------------------------------------------------------------------ per row

    /// <summary>
    /// CPU-shaped per-row top-k: one work item per row (grid-stride over rows), the four passes with a
    /// 256-bin histogram in local memory, then one ordered write of the row.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void TopKRowsKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> pre,
        ArrayView<float> f,
        int m,
        int k
    )
    {
        var hist = LocalMemory.Allocate<int>(Bins);
        for (int row = gridIndex; row < count; row += stride)
        {
            int start = row * m;
            uint prefix = 0;
            int remaining = k;
            for (int shift = 24; shift >= 0; shift -= 8)
            {
                uint high = HighMask(shift);
                for (int b = 0; b < Bins; b++)
                {
                    hist[b] = 0;
                }

                for (int j = 0; j < m; j++)
                {
                    float v = pre[start + j];
                    uint bits = Interop.FloatAsInt(v);
                    if (Candidate(bits) && (bits & high) == prefix)
                    {
                        hist[(int)((bits >> shift) & 0xFF)]++;
                    }
                }

                if (shift == 24 && Sum(hist) <= k)
                {
                    remaining = 0; // every positive value is kept: T = 0, no ties
                    break;
                }

                SelectBin(hist, shift, ref prefix, ref remaining);
            }

            int rank = 0;
            for (int j = 0; j < m; j++)
            {
                float v = pre[start + j];
                uint bits = Interop.FloatAsInt(v);
                bool keep = Keep(bits, prefix, rank, remaining);
                if (Candidate(bits) && bits == prefix)
                {
                    rank++;
                }

                f[start + j] = keep ? v : 0f;
            }
        }
    }

    /// <summary>
    /// GPU-shaped per-row top-k: one 256-thread group per row. Each pass builds the histogram in shared
    /// memory (shared-memory integer atomics: counts, so the order does not matter), thread 0 picks the bin;
    /// the write walks the row in 256-element slices with a group prefix sum that ranks the ties in index
    /// order. Barriers only, no warp intrinsics.
    /// </summary>
    [Kernel(KernelGrouping.Explicit)]
    public static void TopKRowsTiledKernel(ArrayView<float> pre, ArrayView<float> f, int m, int k)
    {
        var hist = SharedMemory.Allocate<int>(Bins);
        var scan = SharedMemory.Allocate<int>(TiledKernels.GroupSize);
        var state = SharedMemory.Allocate<int>(StateLength);
        int tid = Group.IdxX;
        int start = Grid.IdxX * m;
        uint prefix = 0;
        int remaining = k;
        for (int shift = 24; shift >= 0; shift -= 8)
        {
            uint high = HighMask(shift);
            for (int b = tid; b < Bins; b += TiledKernels.GroupSize)
            {
                hist[b] = 0;
            }

            Group.Barrier();
            for (int j = tid; j < m; j += TiledKernels.GroupSize)
            {
                float v = pre[start + j];
                uint bits = Interop.FloatAsInt(v);
                if (Candidate(bits) && (bits & high) == prefix)
                {
                    Atomic.Add(ref hist[(int)((bits >> shift) & 0xFF)], 1);
                }
            }

            Group.Barrier();
            if (tid == 0)
            {
                int done = 0;
                if (shift == 24 && Sum(hist) <= k)
                {
                    remaining = 0;
                    done = 1;
                }
                else
                {
                    SelectBin(hist, shift, ref prefix, ref remaining);
                    state[3] = hist[(int)((prefix >> shift) & 0xFF)]; // after the last pass: count of T
                }

                state[0] = (int)prefix;
                state[1] = remaining;
                state[2] = done;
            }

            Group.Barrier();
            prefix = (uint)state[0];
            remaining = state[1];
            if (state[2] != 0)
            {
                break; // uniform: every thread read the same flag
            }
        }

        WriteSlices(pre, f, start, m, prefix, remaining, 0, state[3], scan);
    }

    /// <summary>
    /// Group-wide ordered write of <paramref name="length"/> elements from <paramref name="start"/>:
    /// 256-element slices, each ranking its candidates equal to T with an inclusive prefix sum in shared
    /// memory, starting from <paramref name="tieRank"/> ties already seen before <paramref name="start"/>.
    /// </summary>
    private static void WriteSlices(
        ArrayView<float> pre,
        ArrayView<float> f,
        int start,
        int length,
        uint threshold,
        int ties,
        int tieRank,
        int equal,
        ArrayView<int> scan
    )
    {
        int tid = Group.IdxX;
        if (ties == 0 || ties == equal)
        {
            // No tie to rank (none kept, or all of them): a plain parallel write without barriers. The
            // condition is the same for the whole group.
            for (int j = tid; j < length; j += TiledKernels.GroupSize)
            {
                float v = pre[start + j];
                uint bits = Interop.FloatAsInt(v);
                f[start + j] = Keep(bits, threshold, 0, ties == 0 ? 0 : 1) ? v : 0f;
            }

            return;
        }

        for (int slice = 0; slice < length; slice += TiledKernels.GroupSize)
        {
            int j = slice + tid;
            float v = j < length ? pre[start + j] : 0f;
            uint bits = Interop.FloatAsInt(v);
            int eq = Candidate(bits) && bits == threshold ? 1 : 0;
            int inclusive = InclusiveScan(eq, scan, out int total);
            if (j < length)
            {
                f[start + j] = Keep(bits, threshold, tieRank + inclusive - eq, ties) ? v : 0f;
            }

            tieRank += total;
        }
    }

    /// <summary>Inclusive prefix sum of one int per thread of a 256-thread group (Hillis–Steele, barriers
    /// only); <paramref name="total"/> receives the group's sum.</summary>
    private static int InclusiveScan(int value, ArrayView<int> scan, out int total)
    {
        int tid = Group.IdxX;
        scan[tid] = value;
        Group.Barrier();
        for (int offset = 1; offset < TiledKernels.GroupSize; offset <<= 1)
        {
            int add = tid >= offset ? scan[tid - offset] : 0;
            Group.Barrier();
            scan[tid] += add;
            Group.Barrier();
        }

        int result = scan[tid];
        total = scan[TiledKernels.GroupSize - 1];
        Group.Barrier();
        return result;
    }

    // ------------------------------------------------------------------ over the whole batch

    /// <summary>
    /// CPU-shaped BatchTopK histogram of one pass: one work item per chunk of <see cref="Chunk"/> flat
    /// elements (grid-stride), counting the candidates that match the prefix in state[0] into hist[chunk·256
    /// …].
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void TopKBatchHistogramKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> pre,
        ArrayView<int> hist,
        ArrayView<int> state,
        int n,
        int shift
    )
    {
        uint prefix = shift == 24 ? 0u : (uint)state[0]; // state is reset by the first selection
        uint high = HighMask(shift);
        for (int c = gridIndex; c < count; c += stride)
        {
            var h = hist.SubView(c * Bins, Bins);
            for (int b = 0; b < Bins; b++)
            {
                h[b] = 0;
            }

            int end = Math.Min(n, (c + 1) * Chunk);
            for (int j = c * Chunk; j < end; j++)
            {
                float v = pre[j];
                uint bits = Interop.FloatAsInt(v);
                if (Candidate(bits) && (bits & high) == prefix)
                {
                    h[(int)((bits >> shift) & 0xFF)]++;
                }
            }
        }
    }

    /// <summary>GPU-shaped <see cref="TopKBatchHistogramKernel"/>: one 256-thread group per chunk, the
    /// histogram in shared memory, then copied to hist[chunk·256 …].</summary>
    [Kernel(KernelGrouping.Explicit)]
    public static void TopKBatchHistogramTiledKernel(
        ArrayView<float> pre,
        ArrayView<int> hist,
        ArrayView<int> state,
        int n,
        int shift
    )
    {
        var local = SharedMemory.Allocate<int>(Bins);
        int tid = Group.IdxX;
        int c = Grid.IdxX;
        uint prefix = shift == 24 ? 0u : (uint)state[0]; // state is reset by the first selection
        uint high = HighMask(shift);
        for (int b = tid; b < Bins; b += TiledKernels.GroupSize)
        {
            local[b] = 0;
        }

        Group.Barrier();
        int end = Math.Min(n, (c + 1) * Chunk);
        for (int j = c * Chunk + tid; j < end; j += TiledKernels.GroupSize)
        {
            float v = pre[j];
            uint bits = Interop.FloatAsInt(v);
            if (Candidate(bits) && (bits & high) == prefix)
            {
                Atomic.Add(ref local[(int)((bits >> shift) & 0xFF)], 1);
            }
        }

        Group.Barrier();
        for (int b = tid; b < Bins; b += TiledKernels.GroupSize)
        {
            hist[c * Bins + b] = local[b];
        }
    }

    /// <summary>BatchTopK: the batch histogram, totals[b] = Σ over chunks of hist[chunk·256 + b]; one work
    /// item per bin (an integer sum: deterministic in any order). Suits CPUs and GPUs alike.</summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void TopKBatchBinTotalsKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<int> hist,
        ArrayView<int> totals,
        int chunks
    )
    {
        for (int b = gridIndex; b < count; b += stride)
        {
            int total = 0;
            for (int c = 0; c < chunks; c++)
            {
                total += hist[c * Bins + b];
            }

            totals[b] = total;
        }
    }

    /// <summary>
    /// BatchTopK: one pass's choice of bin, by a single work item, from the batch histogram in totals[0 …
    /// 256) into state (prefix, ties left, done). After the first pass it sets "keep every positive" when no
    /// more than <paramref name="kTotal"/> values are positive. After the last pass it writes each chunk's
    /// number of earlier ties (candidates equal to T in the chunks before it) into totals[256 + chunk], so
    /// that the write kernels rank the ties in flat index order; <paramref name="earlier"/>[bin] ties come
    /// before the first chunk (those of the ranks before this one when the batch is split; else 0).
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void TopKBatchSelectKernel(
        Index1D gridIndex,
        ArrayView<int> hist,
        ArrayView<int> totals,
        ArrayView<int> state,
        ArrayView<int> earlier,
        int chunks,
        int shift,
        int kTotal
    )
    {
        if (gridIndex != 0)
        {
            return;
        }

        if (shift == 24)
        {
            state[0] = 0;
            state[1] = kTotal;
            state[2] = Sum(totals.SubView(0, Bins)) <= kTotal ? 1 : 0;
            if (state[2] != 0)
            {
                state[1] = 0; // T = 0, no ties: every positive value is kept
            }
        }

        if (state[2] != 0)
        {
            return;
        }

        uint prefix = (uint)state[0];
        int remaining = state[1];
        SelectBin(totals.SubView(0, Bins), shift, ref prefix, ref remaining);
        state[0] = (int)prefix;
        state[1] = remaining;
        if (shift == 0)
        {
            int bin = (int)(prefix & 0xFF);
            state[3] = totals[bin]; // the number of candidates equal to T
            int before = earlier[bin];
            for (int c = 0; c < chunks; c++)
            {
                totals[Bins + c] = before;
                before += hist[c * Bins + bin];
            }
        }
    }

    /// <summary>CPU-shaped BatchTopK write: one work item per chunk (grid-stride), walking it in index
    /// order.</summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void TopKBatchWriteKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> pre,
        ArrayView<float> f,
        ArrayView<int> totals,
        ArrayView<int> state,
        int n
    )
    {
        uint threshold = (uint)state[0];
        int ties = state[1];
        bool all = state[2] != 0;
        for (int c = gridIndex; c < count; c += stride)
        {
            int rank = all ? 0 : totals[Bins + c];
            int end = Math.Min(n, (c + 1) * Chunk);
            for (int j = c * Chunk; j < end; j++)
            {
                float v = pre[j];
                uint bits = Interop.FloatAsInt(v);
                bool keep = Keep(bits, threshold, rank, ties);
                if (Candidate(bits) && bits == threshold)
                {
                    rank++;
                }

                f[j] = keep ? v : 0f;
            }
        }
    }

    /// <summary>GPU-shaped <see cref="TopKBatchWriteKernel"/>: one 256-thread group per chunk, ties ranked
    /// by a group prefix sum.</summary>
    [Kernel(KernelGrouping.Explicit)]
    public static void TopKBatchWriteTiledKernel(
        ArrayView<float> pre,
        ArrayView<float> f,
        ArrayView<int> totals,
        ArrayView<int> state,
        int n
    )
    {
        var scan = SharedMemory.Allocate<int>(TiledKernels.GroupSize);
        int c = Grid.IdxX;
        uint threshold = (uint)state[0];
        int ties = state[1];
        int rank = state[2] != 0 ? 0 : totals[Bins + c];
        int start = c * Chunk;
        WriteSlices(pre, f, start, Math.Min(Chunk, n - start), threshold, ties, rank, state[3], scan);
    }
}
