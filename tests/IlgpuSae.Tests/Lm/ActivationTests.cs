using System.Text.Json.Nodes;
using FluentAssertions;
using IlgpuSae.Backends;
using IlgpuSae.Data;
using IlgpuSae.Lm;
using IlgpuSae.Tests.Infrastructure;
using Xunit;

namespace IlgpuSae.Tests.Lm;

/// <summary>Activation caches and streamed activations from the bundled model.</summary>
[Collection(EnvironmentCollection.Name)]
public sealed class ActivationTests : IDisposable
{
    private readonly SaeDevice _device = SaeDevice.Create(BackendKind.Cpu);
    private readonly LanguageModel _model;
    private readonly LmTokenizer _tokenizer;
    private readonly TempFolder _temp;

    public ActivationTests()
    {
        _model = LanguageModel.Load(_device, LmTestData.BundledModel);
        _tokenizer = LmTokenizer.Load(LmTestData.BundledModel, _model.Config);
        // Last, so that a constructor that fails above leaves no folder behind (xunit does not dispose it).
        _temp = new TempFolder("ilgpusae-acts-");
    }

    public void Dispose()
    {
        _model.Dispose();
        _device.Dispose();
        _temp.Dispose();
    }

    private string P(string name) => _temp.Path(name);

    private ActivationPlan Plan(
        long tokens,
        bool excludeSpecial = true,
        string site = "blocks.1.hook_resid_post"
    ) =>
        ActivationPlan.Create(
            _model,
            _tokenizer,
            new ActivationRequest
            {
                Site = site,
                Corpus = LmTestData.HeldOut,
                Tokens = tokens,
                ContextSize = 64,
                Batch = 4,
                ExcludeSpecialTokens = excludeSpecial,
            }
        );

    private static Dictionary<string, int> RowMultiset(float[] rows, int width)
    {
        var set = new Dictionary<string, int>();
        for (int r = 0; r < rows.Length / width; r++)
        {
            var key = Convert.ToBase64String(
                System.Runtime.InteropServices.MemoryMarshal.AsBytes(rows.AsSpan(r * width, width))
            );
            set[key] = set.GetValueOrDefault(key) + 1;
        }

        return set;
    }

    [Fact]
    public void The_cache_holds_exactly_the_non_BOS_rows_of_the_model_shuffled_across_contexts()
    {
        var plan = Plan(3000);
        plan.Rows.Should().Be(3000);
        var manifest = ActivationCacheBuilder.Build(plan, P("cache"), shardRows: 512, seed: 3);
        manifest.TotalRows.Should().Be(3000);
        manifest.Shards.Should().HaveCount(6);
        manifest.Source["hook_name"].GetString().Should().Be("blocks.1.hook_resid_post");
        manifest.Source["context_size"].GetInt32().Should().Be(64);
        manifest
            .Source["normalization"]
            .GetProperty("norm_scaling_factor")
            .GetDouble()
            .Should()
            .BeGreaterThan(0);

        using var cache = ActivationCache.Open(P("cache"));
        cache.Verify();
        var cached = new float[3000 * 128];
        cache.ReadRows(0, cached);

        // The same rows computed directly, in corpus order.
        var direct = plan.Compute(0, plan.Contexts);
        direct.Length.Should().Be(3000 * 128);
        RowMultiset(cached, 128)
            .Should()
            .BeEquivalentTo(RowMultiset(direct, 128), "the cache is a permutation of the model's rows");
        cached
            .AsSpan(0, 128 * 64)
            .ToArray()
            .Should()
            .NotEqual(direct.AsSpan(0, 128 * 64).ToArray(), "rows are shuffled");

        // BOS rows: the BOS activation (position 0 of every context) is never in the cache.
        var bosRow = _model.Capture([1, 1], 1, "blocks.1.hook_resid_post").AsSpan(0, 128).ToArray();
        RowMultiset(cached, 128).Should().NotContainKey(RowMultiset(bosRow, 128).Keys.Single());
        var withBos = Plan(0, excludeSpecial: false);
        withBos
            .Rows.Should()
            .Be((long)withBos.Contexts * 64, "with special tokens kept every position is a row");
    }

    [Fact]
    public void An_interrupted_cache_build_resumes_to_the_same_cache_and_a_different_request_is_refused()
    {
        var plan = Plan(2500);
        var whole = ActivationCacheBuilder.Build(plan, P("whole"), shardRows: 400, seed: 9);

        using var cts = new CancellationTokenSource();
        var progress = new Progress(p =>
        {
            if (p.Rows > 1300)
            {
                cts.Cancel();
            }
        });
        FluentActions
            .Invoking(() => ActivationCacheBuilder.Build(plan, P("part"), 400, 9, progress, cts.Token))
            .Should()
            .Throw<OperationCanceledException>();
        File.Exists(P("part/manifest.json")).Should().BeFalse();
        var state = JsonNode.Parse(File.ReadAllText(P("part/progress.json")))!;
        state["shards"]!
            .AsArray()
            .Count.Should()
            .BeGreaterThan(0, "shards written before the interruption are kept");

        var resumed = ActivationCacheBuilder.Build(plan, P("part"), 400, 9);
        resumed
            .Shards.Select(s => s.Sha256)
            .Should()
            .Equal(whole.Shards.Select(s => s.Sha256), "resuming gives the same shards");
        File.Exists(P("part/progress.json")).Should().BeFalse();
        Directory.GetFiles(P("part"), "pending-*").Should().BeEmpty();

        ActivationCacheBuilder
            .Build(plan, P("part"), 400, 9)
            .TotalRows.Should()
            .Be(2500, "a finished cache is confirmed, not rebuilt");
        FluentActions
            .Invoking(() =>
                ActivationCacheBuilder.Build(Plan(2500, site: "blocks.0.hook_mlp_out"), P("part"), 400, 9)
            )
            .Should()
            .Throw<InvalidOperationException>()
            .WithMessage("*different request*");
    }

    [Fact]
    public void Streamed_rows_equal_the_model_rows_for_any_range()
    {
        var plan = Plan(4000);
        var direct = plan.Compute(0, plan.Contexts);
        using var stream = new StreamingModelActivations(plan);
        stream.Rows.Should().Be(4000);
        foreach (
            var (first, count) in new[] { (0L, 10), (1000L, 1024), (3990L, 10), (250L, 700), (0L, 4000) }
        )
        {
            var rows = new float[count * 128];
            stream.ReadRows(first, rows);
            rows.Should()
                .Equal(
                    direct.AsSpan((int)first * 128, count * 128).ToArray(),
                    $"rows [{first}, {first + count})"
                );
        }

        FluentActions
            .Invoking(() => stream.ReadRows(3999, new float[2 * 128]))
            .Should()
            .Throw<ArgumentOutOfRangeException>();
        FluentActions
            .Invoking(() => Plan(10_000_000))
            .Should()
            .Throw<ArgumentException>()
            .WithMessage("*fewer than the 10000000 asked for*");
    }

    private sealed class Progress(Action<ActivationProgress> report) : IProgress<ActivationProgress>
    {
        public void Report(ActivationProgress value) => report(value);
    }
}
