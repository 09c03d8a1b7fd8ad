using ILGPU;
using ILGPU.Runtime;

namespace IlgpuSae.Kernels;

/// <summary>Launchers of the top-k selection kernels (internal: used by the TopK and BatchTopK
/// families).</summary>
public sealed partial class DeviceOps
{
    private MemoryBuffer1D<int, Stride1D.Dense>? _topKScratch;

    private static readonly int[] NoEarlierTies = new int[TopKKernels.Bins];

    /// <summary>
    /// TopK activation per row (Gao et al. 2024): for each row of <paramref name="pre"/> [rows, m],
    /// <paramref name="f"/> keeps the <paramref name="k"/> largest positive values and is zero elsewhere,
    /// i.e. <c>f = TopK(ReLU(pre))</c>. Ties at the k-th value go to the lowest column index; with fewer than
    /// k positive values (or k ≥ m) every positive value is kept. NaN counts as non-positive.
    /// </summary>
    internal void TopKRows(ArrayView<float> pre, ArrayView<float> f, int rows, int m, int k)
    {
        string Shapes() => $"TopKRows: pre[{pre.Length}] f[{f.Length}] as [{rows}, {m}], k = {k}";
        RequireTopK(pre, f, rows, m, k, "k", Shapes);
        if (Gpu)
        {
            var kernel = Kernel(
                "TopKRowsTiled",
                null,
                () =>
                    Acc.LoadKernel<ArrayView<float>, ArrayView<float>, int, int>(
                        TopKKernels.TopKRowsTiledKernel
                    )
            );
            kernel(Stream, new KernelConfig(rows, TiledKernels.GroupSize), pre, f, m, k);
        }
        else
        {
            var kernel = Kernel(
                "TopKRows",
                null,
                () =>
                    Acc.LoadAutoGroupedKernel<
                        Index1D,
                        int,
                        int,
                        ArrayView<float>,
                        ArrayView<float>,
                        int,
                        int
                    >(TopKKernels.TopKRowsKernel)
            );
            kernel(Stream, Items(rows), rows, Items(rows), pre, f, m, k);
        }
    }

    /// <summary>
    /// BatchTopK activation (Bussmann et al. 2024): <paramref name="f"/> keeps the <paramref name="kTotal"/>
    /// (k·B) largest positive values of the whole batch <paramref name="pre"/> [rows, m], flattened
    /// row-major, and is zero elsewhere. Ties at the kTotal-th value go to the lowest flat index; with fewer
    /// than kTotal positive values every positive value is kept. The histograms of the radix passes are built
    /// per chunk of <see cref="TopKKernels.Chunk"/> elements in parallel and summed as integers, so the
    /// result does not depend on the launch shape.
    /// With <paramref name="ranks"/>, <paramref name="pre"/> is this rank's block of rows of a batch split
    /// across processes in rank order and <paramref name="kTotal"/> the whole batch's budget: every pass's
    /// histogram is summed over the ranks before its bin is chosen, and the ties of the ranks before this one
    /// count first, so the ranks together keep exactly the values one process would keep from the whole
    /// batch.
    /// </summary>
    internal void TopKBatch(
        ArrayView<float> pre,
        ArrayView<float> f,
        int rows,
        int m,
        int kTotal,
        RankExchange? ranks = null
    )
    {
        string Shapes() => $"TopKBatch: pre[{pre.Length}] f[{f.Length}] as [{rows}, {m}], kTotal = {kTotal}";
        RequireTopK(pre, f, rows, m, kTotal, "kTotal", Shapes);
        int n = rows * m;
        int chunks = Ceil(n, TopKKernels.Chunk);
        var scratch = TopKScratch(
            TopKKernels.StateLength + 2 * TopKKernels.Bins + chunks + (long)chunks * TopKKernels.Bins
        );
        var state = scratch.SubView(0, TopKKernels.StateLength);
        var totals = scratch.SubView(TopKKernels.StateLength, TopKKernels.Bins + chunks);
        var hist = scratch.SubView(
            TopKKernels.StateLength + TopKKernels.Bins + chunks,
            (long)chunks * TopKKernels.Bins
        );
        var earlier = scratch.SubView(
            TopKKernels.StateLength + TopKKernels.Bins + chunks + (long)chunks * TopKKernels.Bins,
            TopKKernels.Bins
        );
        if (ranks is null)
        {
            earlier.CopyFromCPU(Stream, NoEarlierTies);
        }

        var binTotals = Kernel(
            "TopKBatchBinTotals",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<Index1D, int, int, ArrayView<int>, ArrayView<int>, int>(
                    TopKKernels.TopKBatchBinTotalsKernel
                )
        );
        var select = Kernel(
            "TopKBatchSelect",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    ArrayView<int>,
                    ArrayView<int>,
                    ArrayView<int>,
                    ArrayView<int>,
                    int,
                    int,
                    int
                >(TopKKernels.TopKBatchSelectKernel)
        );
        for (int shift = 24; shift >= 0; shift -= 8)
        {
            if (Gpu)
            {
                var histogram = Kernel(
                    "TopKBatchHistogramTiled",
                    null,
                    () =>
                        Acc.LoadKernel<ArrayView<float>, ArrayView<int>, ArrayView<int>, int, int>(
                            TopKKernels.TopKBatchHistogramTiledKernel
                        )
                );
                histogram(
                    Stream,
                    new KernelConfig(chunks, TiledKernels.GroupSize),
                    pre,
                    hist,
                    state,
                    n,
                    shift
                );
            }
            else
            {
                var histogram = Kernel(
                    "TopKBatchHistogram",
                    null,
                    () =>
                        Acc.LoadAutoGroupedKernel<
                            Index1D,
                            int,
                            int,
                            ArrayView<float>,
                            ArrayView<int>,
                            ArrayView<int>,
                            int,
                            int
                        >(TopKKernels.TopKBatchHistogramKernel)
                );
                histogram(Stream, Items(chunks), chunks, Items(chunks), pre, hist, state, n, shift);
            }

            binTotals(
                Stream,
                Items(TopKKernels.Bins),
                TopKKernels.Bins,
                Items(TopKKernels.Bins),
                hist,
                totals,
                chunks
            );
            if (ranks is not null)
            {
                MergeBins(ranks, totals.SubView(0, TopKKernels.Bins), shift == 0 ? earlier : null);
            }

            select(Stream, 1, hist, totals, state, earlier, chunks, shift, kTotal);
        }

        if (Gpu)
        {
            var write = Kernel(
                "TopKBatchWriteTiled",
                null,
                () =>
                    Acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, int>(
                        TopKKernels.TopKBatchWriteTiledKernel
                    )
            );
            write(Stream, new KernelConfig(chunks, TiledKernels.GroupSize), pre, f, totals, state, n);
        }
        else
        {
            var write = Kernel(
                "TopKBatchWrite",
                null,
                () =>
                    Acc.LoadAutoGroupedKernel<
                        Index1D,
                        int,
                        int,
                        ArrayView<float>,
                        ArrayView<float>,
                        ArrayView<int>,
                        ArrayView<int>,
                        int
                    >(TopKKernels.TopKBatchWriteKernel)
            );
            write(Stream, Items(chunks), chunks, Items(chunks), pre, f, totals, state, n);
        }
    }

    /// <summary>
    /// One radix pass of a selection split across ranks: replaces this rank's batch histogram by the sum of
    /// every rank's, and (last pass) writes into <paramref name="earlier"/> the counts of the ranks before
    /// this one, whose values come first in the flattened batch.
    /// </summary>
    private void MergeBins(RankExchange ranks, ArrayView<int> totals, ArrayView<int>? earlier)
    {
        var local = new int[TopKKernels.Bins];
        Stream.Synchronize();
        totals.CopyToCPU(Stream, local);
        Stream.Synchronize();
        var all = ranks.AllGather(local);
        var sum = new int[TopKKernels.Bins];
        var before = new int[TopKKernels.Bins];
        for (int r = 0; r < all.Length; r++)
        {
            for (int b = 0; b < TopKKernels.Bins; b++)
            {
                sum[b] += all[r][b];
                if (r < ranks.Rank)
                {
                    before[b] += all[r][b];
                }
            }
        }

        totals.CopyFromCPU(Stream, sum);
        earlier?.CopyFromCPU(Stream, before);
        Stream.Synchronize();
    }

    private static void RequireTopK(
        ArrayView<float> pre,
        ArrayView<float> f,
        int rows,
        int m,
        int k,
        string kName,
        Func<string> shapes
    )
    {
        if (rows <= 0 || m <= 0)
        {
            throw new ArgumentException($"{shapes()}: rows and m must be positive.");
        }

        if (k <= 0)
        {
            throw new ArgumentException($"{shapes()}: {kName} must be at least 1.", kName);
        }

        if (!pre.IsValid || !f.IsValid)
        {
            throw new ArgumentException($"{shapes()}: {(pre.IsValid ? "f" : "pre")} is a null view.");
        }

        long n = (long)rows * m;
        if (n > int.MaxValue - TopKKernels.Chunk)
        {
            throw new ArgumentException($"{shapes()}: more than {int.MaxValue - TopKKernels.Chunk} values.");
        }

        if (pre.Length != n || f.Length != n)
        {
            throw new ArgumentException($"{shapes()}: pre and f must both hold rows·m = {n} values.");
        }

        RequireNoOverlap(f, pre, () => $"{shapes()}: f overlaps pre (the selection is not in place).");
    }

    /// <summary>The BatchTopK kernels' int scratch (state, bin totals, chunk offsets, chunk histograms),
    /// grown on demand like the GEMM scratch.</summary>
    private ArrayView<int> TopKScratch(long length)
    {
        if (_topKScratch is null || _topKScratch.Length < length)
        {
            Stream.Synchronize(); // a queued selection may still use the old buffer
            _topKScratch?.Dispose();
            _topKScratch = Acc.Allocate1D<int>(length);
        }

        return _topKScratch.View.SubView(0, length);
    }

    private void DisposeTopKScratch()
    {
        _topKScratch?.Dispose();
        _topKScratch = null;
    }
}

/// <summary>How a batch-wide selection split across processes reaches the other ranks: this rank's index
/// and an all-gather of integer arrays (one per rank, indexed by rank).</summary>
internal sealed record RankExchange(int Rank, Func<int[], int[][]> AllGather);
