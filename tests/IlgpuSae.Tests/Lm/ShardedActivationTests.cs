using System.Runtime.InteropServices;
using FluentAssertions;
using IlgpuSae.Backends;
using IlgpuSae.Data;
using IlgpuSae.Lm;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Training;
using Xunit;

namespace IlgpuSae.Tests.Lm;

/// <summary>
/// The sharded activation cache and the sharded stream in one process, each "rank" a thread with its own
/// model (<see cref="ThreadGroup"/>: the collectives over a barrier), so that they run without MPI; the
/// MPI launches themselves are in <c>ShardedActivationsCliTests</c>.
/// </summary>
[Collection(EnvironmentCollection.Name)]
public sealed class ShardedActivationTests : IDisposable
{
    private readonly List<(SaeDevice Device, LanguageModel Model, LmTokenizer Tokenizer)> _ranks = [];
    private readonly TempFolder _temp;

    public ShardedActivationTests()
    {
        for (int r = 0; r < 3; r++)
        {
            var device = SaeDevice.Create(BackendKind.Cpu);
            var model = LanguageModel.Load(device, LmTestData.BundledModel);
            _ranks.Add((device, model, LmTokenizer.Load(LmTestData.BundledModel, model.Config)));
        }

        _temp = new TempFolder("ilgpusae-sharded-acts-");
    }

    public void Dispose()
    {
        foreach (var (device, model, _) in _ranks)
        {
            model.Dispose();
            device.Dispose();
        }

        _temp.Dispose();
    }

    private string P(string name) => _temp.Path(name);

    /// <summary>The request every test uses: 2500 rows from contexts of 64 tokens in batches of 4 (so
    /// about 10 batches, several per rank).</summary>
    private ActivationPlan Plan(int rank = 0) =>
        ActivationPlan.Create(
            _ranks[rank].Model,
            _ranks[rank].Tokenizer,
            new ActivationRequest
            {
                Site = "blocks.1.hook_resid_post",
                Corpus = LmTestData.HeldOut,
                Tokens = 2500,
                ContextSize = 64,
                Batch = 4,
            }
        );

    private static float[] ReadAll(string folder)
    {
        using var cache = ActivationCache.Open(folder);
        var rows = new float[cache.Rows * cache.Dim];
        cache.ReadRows(0, rows);
        return rows;
    }

    /// <summary>Rows as a sorted list of their bytes (the multiset, bit for bit).</summary>
    private static string[] SortedRows(float[] rows, int width) =>
        [
            .. Enumerable
                .Range(0, rows.Length / width)
                .Select(r => Convert.ToBase64String(MemoryMarshal.AsBytes(rows.AsSpan(r * width, width))))
                .Order(StringComparer.Ordinal),
        ];

    /// <summary>Runs <paramref name="body"/> as every rank of a <paramref name="size"/>-rank thread group
    /// and returns the ranks' results.</summary>
    private static T[] OnRanks<T>(int size, Func<ThreadGroup, T> body)
    {
        var shared = new ThreadGroup.Shared(size);
        var results = new T[size];
        var errors = new Exception?[size];
        var threads = Enumerable
            .Range(0, size)
            .Select(r => new Thread(() =>
            {
                try
                {
                    results[r] = body(new ThreadGroup(r, shared));
                }
                catch (Exception e)
                {
                    errors[r] = e;
                    shared.Barrier.RemoveParticipant();
                }
            }))
            .ToArray();
        foreach (var t in threads)
        {
            t.Start();
        }

        foreach (var t in threads)
        {
            t.Join(TimeSpan.FromMinutes(5)).Should().BeTrue("every rank finishes");
        }

        errors.Where(e => e is not null).Should().BeEmpty();
        return results;
    }

    [Fact]
    public void A_two_rank_cache_holds_the_single_process_rows_as_a_multiset_under_one_verified_manifest()
    {
        var single = ActivationCacheBuilder.Build(Plan(), P("single"), shardRows: 400, seed: 5);
        var manifests = OnRanks(
            2,
            g => ShardedActivationCacheBuilder.Build(Plan(g.Rank), P("sharded"), g, shardRows: 400, seed: 5)
        );

        var manifest = manifests[0];
        manifest.TotalRows.Should().Be(2500);
        manifest.Shards.Select(s => s.File).Should().Contain(f => f.StartsWith("shard-r000-"));
        manifest.Shards.Select(s => s.File).Should().Contain(f => f.StartsWith("shard-r001-"));
        Directory
            .GetFiles(P("sharded"))
            .Select(Path.GetFileName)
            .Should()
            .BeEquivalentTo(
                manifest.Shards.Select(s => s.File).Append("manifest.json"),
                "nothing else is left"
            );
        using (var cache = ActivationCache.Open(P("sharded")))
        {
            cache.Verify(); // every shard's SHA-256 against the one manifest
            cache.Manifest.Source["ranks"].GetInt32().Should().Be(2);
        }

        // The rows of each batch are computed from the same contexts in the same batch as the single
        // process, so they are the same bits; only their order differs.
        SortedRows(ReadAll(P("sharded")), 128).Should().Equal(SortedRows(ReadAll(P("single")), 128));
        foreach (var key in new[] { "mean_norm", "mean_squared_norm", "norm_scaling_factor" })
        {
            double a = single.Source["normalization"].GetProperty(key).GetDouble();
            double b = manifest.Source["normalization"].GetProperty(key).GetDouble();
            b.Should().Be(a, $"{key}: exact sums, the same bits whatever the split");
        }

        // A finished cache is confirmed, not rebuilt, by the ranks and by a single process; a record left
        // by a job stopped just after writing the manifest is cleared.
        File.WriteAllText(P("sharded/progress-r001-of-002.json"), "{}");
        OnRanks(2, g => ShardedActivationCacheBuilder.Build(Plan(g.Rank), P("sharded"), g, 400, 5))
            .Select(m => m.TotalRows)
            .Should()
            .Equal(2500, 2500);
        File.Exists(P("sharded/progress-r001-of-002.json")).Should().BeFalse();
        ActivationCacheBuilder
            .Build(Plan(), P("sharded"), 400, 5)
            .Shards.Should()
            .HaveCount(manifest.Shards.Count);
    }

    [Fact]
    public void An_interrupted_sharded_build_resumes_with_the_same_ranks_and_is_refused_otherwise()
    {
        var whole = OnRanks(2, g => ShardedActivationCacheBuilder.Build(Plan(g.Rank), P("whole"), g, 400, 9))[
            0
        ];

        // Rank 0 finished its part; rank 1 was stopped after its first shard.
        var source = ActivationCacheBuilder.Source(Plan(), 400, 9);
        Directory.CreateDirectory(P("part"));
        ActivationCacheBuilder.RunPart(
            Plan(),
            P("part"),
            new BuildPart(0, 2, true),
            source,
            400,
            9,
            null,
            default
        );
        using var cts = new CancellationTokenSource();
        var stop = new Progress(p =>
        {
            if (p.Rows > 900)
            {
                cts.Cancel();
            }
        });
        FluentActions
            .Invoking(() =>
                ActivationCacheBuilder.RunPart(
                    Plan(1),
                    P("part"),
                    new BuildPart(1, 2, true),
                    source,
                    400,
                    9,
                    stop,
                    cts.Token
                )
            )
            .Should()
            .Throw<OperationCanceledException>();
        File.Exists(P("part/manifest.json")).Should().BeFalse();
        File.Exists(P("part/progress-r001-of-002.json")).Should().BeTrue();

        FluentActions
            .Invoking(() => ShardedActivationCacheBuilder.Check(Plan(), P("part"), 3, 400, 9))
            .Should()
            .Throw<InvalidOperationException>()
            .WithMessage("*another number of ranks*");
        FluentActions
            .Invoking(() => ActivationCacheBuilder.Build(Plan(), P("part"), 400, 9))
            .Should()
            .Throw<InvalidOperationException>()
            .WithMessage("*several MPI ranks*same mpiexec -n*");
        FluentActions
            .Invoking(() => ShardedActivationCacheBuilder.Check(Plan(), P("part"), 2, 400, 10))
            .Should()
            .Throw<InvalidOperationException>()
            .WithMessage("*partial run of a different request (progress-r000-of-002.json)*");
        ShardedActivationCacheBuilder.Check(Plan(), P("part"), 2, 400, 9).Should().NotBeEmpty();

        var resumed = OnRanks(
            2,
            g => ShardedActivationCacheBuilder.Build(Plan(g.Rank), P("part"), g, 400, 9)
        )[0];
        resumed
            .Shards.Select(s => (s.File, s.Sha256))
            .Should()
            .Equal(whole.Shards.Select(s => (s.File, s.Sha256)), "resuming gives the same shards");
        Directory.GetFiles(P("part"), "progress*").Should().BeEmpty();
        Directory.GetFiles(P("part"), "pending*").Should().BeEmpty();

        // A partial single-process build is not taken over by ranks.
        using var cts1 = new CancellationTokenSource();
        var stop1 = new Progress(p =>
        {
            if (p.Rows > 1300)
            {
                cts1.Cancel();
            }
        });
        FluentActions
            .Invoking(() => ActivationCacheBuilder.Build(Plan(), P("single"), 400, 9, stop1, cts1.Token))
            .Should()
            .Throw<OperationCanceledException>();
        FluentActions
            .Invoking(() => ShardedActivationCacheBuilder.Check(Plan(), P("single"), 2, 400, 9))
            .Should()
            .Throw<InvalidOperationException>()
            .WithMessage("*single-process run*");
    }

    [Fact]
    public void The_sharded_stream_gives_every_rank_the_single_process_rows_and_splits_the_model_work()
    {
        var plan = Plan();
        using var reference = new StreamingModelActivations(plan);
        var expected = new float[plan.Rows * plan.Width];
        reference.ReadRows(0, expected);
        // The same reads on every rank, in an order that jumps about (as the shuffling loader's blocks do).
        long[] starts = [1800, 0, 700, 2400, 1100, 300];
        const int Length = 97;
        var results = OnRanks(
            3,
            g =>
            {
                using var source = new ShardedStreamingActivations(Plan(g.Rank), g);
                var before = new float[Length * plan.Width];
                source.ReadRows(5, before); // local, before lockstep (rank 0 alone may read here)
                source.EnterLockstep();
                var read = starts
                    .Select(s =>
                    {
                        var rows = new float[Length * plan.Width];
                        source.ReadRows(s, rows);
                        return rows;
                    })
                    .ToArray();
                return (before, read, source.ContextsComputed, source.GroupsComputed);
            }
        );
        foreach (var (before, read, _, _) in results)
        {
            before.Should().Equal(expected.AsSpan(5 * plan.Width, Length * plan.Width).ToArray());
            for (int i = 0; i < starts.Length; i++)
            {
                read[i]
                    .Should()
                    .Equal(
                        expected.AsSpan((int)(starts[i] * plan.Width), Length * plan.Width).ToArray(),
                        $"rows from {starts[i]}"
                    );
            }
        }

        long groups = results[0].GroupsComputed;
        results.Select(r => r.GroupsComputed).Should().AllBeEquivalentTo(groups);
        results
            .Sum(r => r.ContextsComputed)
            .Should()
            .BeLessThanOrEqualTo(groups * 3 * plan.Request.Batch, "each group's batches are split");
        results.Should().OnlyContain(r => r.ContextsComputed <= groups * plan.Request.Batch);
    }

    [Fact]
    public void Exact_sums_do_not_depend_on_order_or_grouping_and_round_to_nearest()
    {
        var tenths = new ExactSum();
        for (int i = 0; i < 10; i++)
        {
            tenths.Add(0.1);
        }

        tenths
            .ToDouble()
            .Should()
            .Be(1.0, "ten 0.1s sum to 1 + 5.6e-17, nearest 1 (naively 0.9999999999999999)");
        var cancel = new ExactSum();
        foreach (var v in new[] { 1e16, 1.0, -1e16, 3e-300, -3e-300, double.Epsilon })
        {
            cancel.Add(v);
        }

        cancel.ToDouble().Should().Be(1.0, "1 + 4.9e-324 rounds to 1; the large terms cancel exactly");
        var random = new Random(7);
        var values = Enumerable
            .Range(0, 5000)
            .Select(_ => random.NextDouble() * Math.Pow(10, random.Next(-8, 9)))
            .ToArray();
        var forward = new ExactSum();
        var backward = new ExactSum();
        var halves = new[] { new ExactSum(), new ExactSum() };
        for (int i = 0; i < values.Length; i++)
        {
            forward.Add(values[i]);
            backward.Add(values[^(i + 1)]);
            halves[i % 2].Add(values[i]);
        }

        var joined = ExactSum.Parse(halves[0].ToString());
        joined.Add(ExactSum.Parse(halves[1].ToString()));
        backward.ToString().Should().Be(forward.ToString());
        joined.ToString().Should().Be(forward.ToString());
        joined.ToDouble().Should().Be(forward.ToDouble());
        double naive = values.Sum();
        Math.Abs(forward.ToDouble() - naive).Should().BeLessThanOrEqualTo(1e-12 * naive);
    }

    private sealed class Progress(Action<ActivationProgress> report) : IProgress<ActivationProgress>
    {
        public void Report(ActivationProgress value) => report(value);
    }

    /// <summary>Ranks as threads of one process: <see cref="AllGather"/> over a barrier; the rest of
    /// <see cref="ITrainingGroup"/> is not needed here.</summary>
    private sealed class ThreadGroup(int rank, ThreadGroup.Shared shared) : ITrainingGroup
    {
        public sealed class Shared(int size)
        {
            public Barrier Barrier { get; } = new(size);

            public byte[]?[] Slots { get; } = new byte[size][];
        }

        public int Rank => rank;

        public int Size => shared.Slots.Length;

        public long BytesMoved => 0;

        public double CommunicationSeconds => 0;

        public byte[][] AllGather(byte[] value)
        {
            shared.Slots[rank] = value;
            shared.Barrier.SignalAndWait(TimeSpan.FromMinutes(2)).Should().BeTrue("every rank gathers");
            var all = shared.Slots.Select(s => s!).ToArray();
            shared.Barrier.SignalAndWait(TimeSpan.FromMinutes(2)).Should().BeTrue("every rank has read");
            return all;
        }

        public void SumToAll(float[] buffer) => throw new NotSupportedException();

        public void SumToAll(double[] buffer) => throw new NotSupportedException();

        public void Broadcast(float[] buffer, int root = 0) => throw new NotSupportedException();

        public void Broadcast(double[] buffer, int root = 0) => throw new NotSupportedException();

        public void Broadcast(long[] buffer, int root = 0) => throw new NotSupportedException();

        public float[]? Gather(float[] local, int root = 0) => throw new NotSupportedException();
    }
}
