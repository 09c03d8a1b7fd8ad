using System.Text.Json.Nodes;
using FluentAssertions;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Tests.Lm;
using Xunit;

namespace IlgpuSae.Tests.Cli;

/// <summary>The activations / eval / train commands with --model on the bundled model, and their handling of
/// bad arguments.</summary>
[Collection(EnvironmentCollection.Name)]
public sealed class ModelCliTests : IDisposable
{
    private readonly TempFolder _temp = new("ilgpusae-model-cli-");

    public void Dispose() => _temp.Dispose();

    private string P(string name) => _temp.Path(name);

    [Fact]
    public void Activations_eval_and_train_work_from_the_command_line_with_a_model()
    {
        var acts = CliRunner.Run(
            "--backend",
            "cpu",
            "activations",
            "--model",
            LmTestData.BundledModel,
            "--site",
            "blocks.0.hook_mlp_out",
            "--corpus",
            LmTestData.HeldOut,
            "--tokens",
            "3000",
            "--context",
            "64",
            "--shard-rows",
            "1024",
            "--out",
            P("acts")
        );
        acts.Code.Should().Be(0, acts.Err);
        acts.Out.Should().Contain("Wrote 3000 rows in 3 shard(s)");

        var train = CliRunner.Run(
            "--backend",
            "cpu",
            "train",
            "--arch",
            "gated",
            "--model",
            LmTestData.BundledModel,
            "--site",
            "blocks.0.hook_mlp_out",
            "--corpus",
            LmTestData.HeldOut,
            "--context",
            "64",
            "--tokens",
            "2048",
            "--batch-size",
            "512",
            "--d-sae",
            "256",
            "--l1",
            "1",
            "--lr",
            "1e-3",
            "--lr-warmup",
            "1",
            "--log-every",
            "2",
            "--out",
            P("sae")
        );
        train.Code.Should().Be(0, train.Err);
        train.Out.Should().Contain("step 4/4").And.Contain("(streamed)");
        var cfg = JsonNode.Parse(File.ReadAllText(P("sae/cfg.json")))!;
        cfg["metadata"]!["hook_name"]!.GetValue<string>().Should().Be("blocks.0.hook_mlp_out");
        cfg["metadata"]!["context_size"]!.GetValue<int>().Should().Be(64);

        var eval = CliRunner.Run(
            "--backend",
            "cpu",
            "eval",
            "--sae",
            P("sae"),
            "--model",
            LmTestData.BundledModel,
            "--corpus",
            LmTestData.HeldOut,
            "--context",
            "64",
            "--tokens",
            "1000",
            "--lm-batch",
            "4",
            "--json"
        );
        eval.Code.Should().Be(0, eval.Err);
        var json = JsonNode.Parse(eval.Out[eval.Out.IndexOf('{', StringComparison.Ordinal)..])!;
        double clean = json["ce_loss_without_sae"]!.GetValue<double>(),
            withSae = json["ce_loss_with_sae"]!.GetValue<double>();
        double zero = json["ce_loss_with_ablation"]!.GetValue<double>();
        zero.Should().BeGreaterThan(clean, "zero-ablating an MLP output hurts");
        json["ce_loss_score"]!
            .GetValue<double>()
            .Should()
            .BeApproximately((zero - withSae) / (zero - clean), TestTolerances.ReportedScoreRecomputed);
        json["kl_div_score"]!.GetValue<double>().Should().BeLessThanOrEqualTo(1);
        json["ce_tokens"]!
            .GetValue<long>()
            .Should()
            .Be(15 * 63, "1000 tokens make 15 contexts of 63 predictions (the last batch of 4 is partial)");
        json["tokens_counted"]!.GetValue<string>().Should().Contain("every next-token prediction");
        json["reconstruction"]!["l0"]!.GetValue<double>().Should().BeGreaterThan(0);

        var fromCache = CliRunner.Run(
            "--backend",
            "cpu",
            "eval",
            "--sae",
            P("sae"),
            "--acts",
            P("acts"),
            "--json"
        );
        fromCache.Code.Should().Be(0, fromCache.Err);
        JsonNode.Parse(fromCache.Out)!["tokens"]!.GetValue<long>().Should().Be(3000);
    }

    [Fact]
    public void Bad_model_arguments_are_clear_errors()
    {
        var noSite = CliRunner.Run(
            "--backend",
            "cpu",
            "activations",
            "--model",
            LmTestData.BundledModel,
            "--site",
            "blocks.7.hook_resid_post",
            "--corpus",
            LmTestData.HeldOut,
            "--tokens",
            "100",
            "--out",
            P("x")
        );
        noSite.Code.Should().Be(2);
        noSite.Err.Should().Contain("has 2 blocks");
        var longContext = CliRunner.Run(
            "--backend",
            "cpu",
            "activations",
            "--model",
            LmTestData.BundledModel,
            "--site",
            "blocks.0.hook_resid_post",
            "--corpus",
            LmTestData.HeldOut,
            "--tokens",
            "100",
            "--context",
            "4096",
            "--out",
            P("x")
        );
        longContext.Code.Should().Be(2);
        longContext.Err.Should().Contain("model's context of 128");
        var both = CliRunner.Run(
            "--backend",
            "cpu",
            "eval",
            "--sae",
            P("nothing"),
            "--acts",
            P("a.npy"),
            "--model",
            LmTestData.BundledModel
        );
        both.Code.Should().Be(2);
        var missing = CliRunner.Run(
            "--backend",
            "cpu",
            "activations",
            "--model",
            P("no-model"),
            "--site",
            "blocks.0.hook_resid_post",
            "--corpus",
            LmTestData.HeldOut,
            "--tokens",
            "100",
            "--out",
            P("x")
        );
        missing.Code.Should().Be(2);
        missing.Err.Should().Contain("does not exist");
    }
}
