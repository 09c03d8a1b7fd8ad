using FluentAssertions;
using IlgpuSae.Backends;
using IlgpuSae.Kernels;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Verification;
using Xunit;
using static IlgpuSae.Tests.Kernels.KernelTestSupport;

namespace IlgpuSae.Tests.Kernels;

/// <summary>
/// The top-k selection kernels (<c>TopKKernels</c>: per row for TopK, over the whole batch for BatchTopK)
/// against their sort-based definitions in <see cref="SaeKernelReference"/>, on every backend and kernel
/// shape. Selection only copies values, so the comparison is exact, bit for bit. Fresh seeded data of several
/// kinds (exact ties from a small set of values, rows with fewer than k positive values, values one ulp
/// apart, extreme magnitudes), odd sizes, outputs poisoned with NaN.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class TopKKernelTests(DeviceFixture devices)
{
    private static readonly string[] Kinds = ["uniform", "ties", "few positives", "last bit", "extremes"];

    // (rows, m, k): m = 1, 7, 37, 300, 1000; k = 1, middle, m − 1, m, more than m.
    private static readonly (int, int, int)[] RowShapes =
    [
        (3, 1, 1),
        (2, 1, 4),
        (5, 7, 1),
        (4, 7, 3),
        (3, 7, 6),
        (2, 7, 7),
        (2, 7, 20),
        (3, 37, 18),
        (2, 300, 1),
        (2, 300, 150),
        (1, 300, 299),
        (2, 1000, 500),
    ];

    // (rows, m, kTotal): kTotal across row boundaries, equal to and beyond rows·m; 9×1000 spans three
    // 4096-element chunks, so ties are ranked across chunks.
    private static readonly (int, int, int)[] BatchShapes =
    [
        (1, 1, 1),
        (3, 7, 1),
        (3, 7, 10),
        (3, 7, 21),
        (3, 7, 100),
        (4, 37, 74),
        (5, 300, 750),
        (2, 300, 599),
        (9, 1000, 4500),
    ];

    public static TheoryData<Target, string, int, int, int> RowCases()
    {
        var data = Cases(Kinds, RowShapes);
        foreach (var target in Targets.All().Where(t => t.Variant == KernelVariant.CpuShaped))
        {
            // 300 rows: more than the CPU accelerator's 256 work items, so the CPU-shaped kernel's
            // grid-stride loop turns (the GPU-shaped one launches one group per row whatever the count).
            data.Add(target, "ties", 300, 7, 2);
            data.Add(target, "uniform", 300, 7, 2);
        }

        return data;
    }

    public static TheoryData<Target, string, int, int, int> BatchCases() => Cases(Kinds, BatchShapes);

    [SkippableTheory]
    [MemberData(nameof(RowCases))]
    public void TopKRowsKernel_matches_its_sort_based_reference(
        Target target,
        string kind,
        int rows,
        int m,
        int k
    )
    {
        var device = devices.Get(target);
        int seed = Seed(target, "TopKRows", kind, rows, m, k);
        var pre = Data(new Random(seed), kind, rows, m, k);
        using var tp = device.Upload(pre, rows, m);
        using var tf = Poisoned(device, rows, m);
        device.Ops.TopKRows(tp.Data, tf.Data, rows, m, k);

        var reference = SaeKernelReference.TopKRows(pre, rows, m, k);
        ShouldMatchExactly($"TopKRows {kind} {rows}x{m} k={k}", tf.ToArray(), reference, target, seed);
    }

    [SkippableTheory]
    [MemberData(nameof(BatchCases))]
    public void TopKBatchKernel_matches_its_sort_based_reference(
        Target target,
        string kind,
        int rows,
        int m,
        int kTotal
    )
    {
        var device = devices.Get(target);
        int seed = Seed(target, "TopKBatch", kind, rows, m, kTotal);
        var pre = Data(new Random(seed), kind, rows, m, Math.Max(1, kTotal / rows));
        using var tp = device.Upload(pre, rows, m);
        using var tf = Poisoned(device, rows, m);
        device.Ops.TopKBatch(tp.Data, tf.Data, rows, m, kTotal);

        var reference = SaeKernelReference.TopKBatch(pre, rows, m, kTotal);
        ShouldMatchExactly(
            $"TopKBatch {kind} {rows}x{m} kTotal={kTotal}",
            tf.ToArray(),
            reference,
            target,
            seed
        );
    }

    /// <summary>
    /// BatchTopK with the batch's rows split across 3 ranks (data-parallel training): each rank selects from
    /// its block with the whole batch's budget, the radix histograms summed over the ranks and the earlier
    /// ranks' ties first. Together the blocks equal the one-process selection bit for bit, ties included
    /// (the "ties" data hold exact ties at the k·B-th value). The ranks are threads, each with its own
    /// device, and the exchange an in-memory all-gather.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(SplitCases))]
    public void TopKBatch_split_across_ranks_equals_the_whole_batch_selection(
        Target target,
        string kind,
        int rows,
        int m,
        int kTotal
    )
    {
        devices.Get(target); // skips when the backend is missing
        const int ranks = 3;
        int seed = Seed(target, "TopKBatch split", kind, rows, m, kTotal);
        var pre = Data(new Random(seed), kind, rows, m, Math.Max(1, kTotal / rows));
        var exchange = new InMemoryAllGather(ranks);
        int[] firstRow = [0, rows / 3, rows / 3 + (rows - rows / 3) / 2, rows];
        var result = new float[pre.Length];
        Parallel.For(
            0,
            ranks,
            new ParallelOptions { MaxDegreeOfParallelism = ranks },
            r =>
            {
                using var device = SaeDevice.Create(
                    target.Backend,
                    null,
                    new SaeDeviceOptions { Variant = target.Variant }
                );
                int local = firstRow[r + 1] - firstRow[r];
                var block = pre.AsSpan(firstRow[r] * m, local * m).ToArray();
                using var tp = device.Upload(block, local, m);
                using var tf = Poisoned(device, local, m);
                device.Ops.TopKBatch(
                    tp.Data,
                    tf.Data,
                    local,
                    m,
                    kTotal,
                    new RankExchange(r, values => exchange.AllGather(r, values))
                );
                tf.ToArray().CopyTo(result, firstRow[r] * m);
            }
        );

        var reference = SaeKernelReference.TopKBatch(pre, rows, m, kTotal);
        ShouldMatchExactly(
            $"TopKBatch split over {ranks} ranks {kind} {rows}x{m} kTotal={kTotal}",
            result,
            reference,
            target,
            seed
        );
    }

    // Each case starts 3 devices (kernels compiled for each), so few: exact ties within a chunk and across
    // 4096-element chunks, and a batch with fewer positive values than k·B.
    public static TheoryData<Target, string, int, int, int> SplitCases() =>
        Cases(["ties", "few positives"], [(9, 37, 100), (9, 1000, 4500)]);

    /// <summary>An all-gather among threads: every caller of round n receives every rank's array of round
    /// n.</summary>
    private sealed class InMemoryAllGather(int ranks)
    {
        private readonly Barrier _barrier = new(ranks);
        private readonly int[][] _slots = new int[ranks][];

        public int[][] AllGather(int rank, int[] values)
        {
            _slots[rank] = [.. values];
            _barrier.SignalAndWait();
            int[][] all = [.. _slots.Select(v => v.ToArray())];
            _barrier.SignalAndWait(); // nobody overwrites a slot before every rank has read the round
            return all;
        }
    }

    [SkippableTheory]
    [MemberData(nameof(TargetData))]
    public void TopKBatch_reuses_its_scratch_across_calls_of_different_sizes(Target target)
    {
        // A second, smaller call must not see the first call's state or histograms.
        var device = devices.Get(target);
        int seed = Seed(target, "TopKBatch reuse");
        var random = new Random(seed);
        foreach (var (rows, m, kTotal) in new[] { (9, 1000, 3000), (2, 7, 5), (3, 37, 40) })
        {
            var pre = Data(random, "ties", rows, m, kTotal / rows);
            using var tp = device.Upload(pre, rows, m);
            using var tf = Poisoned(device, rows, m);
            device.Ops.TopKBatch(tp.Data, tf.Data, rows, m, kTotal);
            var reference = SaeKernelReference.TopKBatch(pre, rows, m, kTotal);
            ShouldMatchExactly(
                $"TopKBatch {rows}x{m} kTotal={kTotal}",
                tf.ToArray(),
                reference,
                target,
                seed
            );
        }
    }

    public static TheoryData<Target> TargetData() => Targets.Data();

    // ------------------------------------------------------------------ the reference itself

    [Fact]
    public void The_reference_keeps_the_lowest_index_among_ties_and_only_positive_values()
    {
        float[] pre = [2f, 1f, 3f, 1f, 1f, -5f, 0f, float.NaN];
        SaeKernelReference.TopKRows(pre, 1, 8, 3).Should().Equal(2, 1, 3, 0, 0, 0, 0, 0);
        SaeKernelReference.TopKRows(pre, 1, 8, 8).Should().Equal(2, 1, 3, 1, 1, 0, 0, 0);
        SaeKernelReference.TopKRows(pre, 2, 4, 1).Should().Equal(0, 0, 3, 0, 1, 0, 0, 0);
        SaeKernelReference.TopKBatch(pre, 2, 4, 4).Should().Equal(2, 1, 3, 1, 0, 0, 0, 0);
    }

    // ------------------------------------------------------------------ arguments

    private SaeDevice Device => devices.Get(new Target(BackendKind.Cpu, KernelVariant.CpuShaped));

    [Theory]
    [InlineData(0)]
    [InlineData(-3)]
    public void TopK_with_k_below_one_is_refused_naming_the_shapes(int k)
    {
        using var pre = Device.Allocate(3, 4);
        using var f = Device.Allocate(3, 4);
        var rowsAct = () => Device.Ops.TopKRows(pre.Data, f.Data, 3, 4, k);
        rowsAct
            .Should()
            .Throw<ArgumentException>()
            .WithMessage($"TopKRows: pre[12] f[12] as [3, 4], k = {k}: k must be at least 1.*");
        var batchAct = () => Device.Ops.TopKBatch(pre.Data, f.Data, 3, 4, k);
        batchAct
            .Should()
            .Throw<ArgumentException>()
            .WithMessage($"TopKBatch: pre[12] f[12] as [3, 4], kTotal = {k}: kTotal must be at least 1.*");
    }

    [Theory]
    [InlineData(3, 5, 3, 4)]
    [InlineData(3, 4, 2, 4)]
    [InlineData(2, 4, 3, 4)]
    public void TopK_with_wrong_lengths_is_refused_naming_the_shapes(int preRows, int fRows, int rows, int m)
    {
        using var pre = Device.Allocate(preRows, 4);
        using var f = Device.Allocate(fRows, 4);
        var rowsAct = () => Device.Ops.TopKRows(pre.Data, f.Data, rows, m, 2);
        rowsAct
            .Should()
            .Throw<ArgumentException>()
            .WithMessage(
                $"TopKRows: pre[{preRows * 4}] f[{fRows * 4}] as [{rows}, {m}], k = 2: pre and f must both hold rows·m = {rows * m} values."
            );
        var batchAct = () => Device.Ops.TopKBatch(pre.Data, f.Data, rows, m, 2);
        batchAct.Should().Throw<ArgumentException>().WithMessage("TopKBatch: *must both hold rows·m*");
    }

    [Fact]
    public void TopK_with_no_rows_a_null_view_or_in_place_is_refused()
    {
        using var pre = Device.Allocate(3, 4);
        using var f = Device.Allocate(3, 4);
        var noRows = () => Device.Ops.TopKRows(pre.Data, f.Data, 0, 4, 1);
        noRows.Should().Throw<ArgumentException>().WithMessage("*as [0, 4]*rows and m must be positive*");
        var nullView = () => Device.Ops.TopKBatch(pre.Data, default, 3, 4, 1);
        nullView.Should().Throw<ArgumentException>().WithMessage("*f is a null view*");
        var inPlace = () => Device.Ops.TopKRows(pre.Data, pre.Data, 3, 4, 1);
        inPlace.Should().Throw<ArgumentException>().WithMessage("*f overlaps pre*");
    }

    // ------------------------------------------------------------------ data and comparison

    /// <summary>Pre-activations of one kind; <paramref name="k"/> sets how sparse "few positives"
    /// is.</summary>
    private static float[] Data(Random random, string kind, int rows, int m, int k)
    {
        int n = rows * m;
        var x = new float[n];
        switch (kind)
        {
            case "uniform": // [-1, 1) with exact zeros and some values near ±4
                KernelChecks.RandomData(random, n).CopyTo(x, 0);
                break;
            case "ties": // a small set of values: ties at the k-th value within and across rows
                float[] set = [-1f, 0f, 0.25f, 0.5f, 1f, 2f];
                for (int i = 0; i < n; i++)
                {
                    x[i] = set[random.Next(set.Length)];
                }

                break;
            case "few positives": // about k/2 positive values per row, the first row all negative
                for (int i = 0; i < n; i++)
                {
                    bool positive = i >= m && random.NextDouble() < 0.5 * k / m;
                    x[i] = positive ? (float)random.NextDouble() + 0.5f : -(float)random.NextDouble();
                }

                break;
            case "last bit": // 1.5 and its next few floats up, with repeats; a few negative
                int one = BitConverter.SingleToInt32Bits(1.5f);
                for (int i = 0; i < n; i++)
                {
                    float v = BitConverter.Int32BitsToSingle(one + random.Next(4));
                    x[i] = random.Next(8) == 0 ? -v : v;
                }

                break;
            case "extremes": // huge, infinite, subnormal and NaN values of both signs
                float[] extremes =
                [
                    float.MaxValue,
                    -float.MaxValue,
                    3e38f,
                    1e30f,
                    float.PositiveInfinity,
                    float.NegativeInfinity,
                    float.Epsilon,
                    1e-40f,
                    -1e-40f,
                    float.NaN,
                    BitConverter.Int32BitsToSingle(0x7FC00000), // NaN with the sign bit clear
                    -0f,
                ];
                for (int i = 0; i < n; i++)
                {
                    x[i] =
                        random.Next(2) == 0
                            ? extremes[random.Next(extremes.Length)]
                            : (float)(random.NextDouble() * 2 - 1) * 1e20f;
                }

                break;
            default:
                throw new ArgumentException($"unknown data kind {kind}", nameof(kind));
        }

        return x;
    }

    /// <summary>Exact comparison (named tolerance) and, on top, bit for bit: kept values are copies, every
    /// other element is +0.</summary>
    private static void ShouldMatchExactly(
        string check,
        float[] actual,
        double[] reference,
        Target target,
        int seed
    )
    {
        KernelChecks.Compare(check, "SAE", actual, reference, Tolerance.Exact).ShouldPass(target, seed);
        actual
            .Select(BitConverter.SingleToInt32Bits)
            .Should()
            .Equal(
                reference.Select(r => BitConverter.SingleToInt32Bits((float)r)),
                $"{check} on {target} (seed {seed}) must copy the kept values bit for bit and write +0 elsewhere"
            );
    }
}
