using System.Text.Json;
using System.Text.Json.Nodes;
using FluentAssertions;
using IlgpuSae.IO;
using IlgpuSae.Tests.Infrastructure;
using Xunit;

namespace IlgpuSae.Tests.Cli;

/// <summary>train / eval / export / encode end to end, and their handling of bad input.</summary>
[Collection(EnvironmentCollection.Name)]
public sealed class SaeCliTests : IDisposable
{
    private readonly TempFolder _temp = new("ilgpusae-cli-");

    public void Dispose() => _temp.Dispose();

    private string P(string name) => _temp.Path(name);

    private static (int Code, string Out, string Err) Run(params string[] args) => CliRunner.Run(args);

    [Fact]
    public void Train_eval_export_and_encode_work_end_to_end()
    {
        Run("synth", "--rows", "4096", "--d", "8", "--features", "16", "--l0", "2", "--out", P("toy.npy"))
            .Code.Should()
            .Be(0);
        var train = Run(
            "--backend",
            "cpu",
            "train",
            "--arch",
            "gated",
            "--acts",
            P("toy.npy"),
            "--d-sae",
            "24",
            "--l1",
            "1",
            "--lr",
            "3e-3",
            "--batch-size",
            "256",
            "--tokens",
            "10240",
            "--lr-warmup",
            "5",
            "--log-every",
            "10",
            "--checkpoint-every",
            "20",
            "--out",
            P("gated")
        );
        train.Code.Should().Be(0, train.Err);
        train.Out.Should().Contain("step 40/40").And.Contain("SAE written to");
        File.Exists(P("gated/cfg.json")).Should().BeTrue();
        File.ReadAllLines(P("gated/metrics.jsonl")).Should().HaveCount(4);
        Directory
            .GetDirectories(P("gated/checkpoints"))
            .Should()
            .ContainSingle(d => d.EndsWith("step-00000020", StringComparison.Ordinal));

        var again = Run(
            "train",
            "--arch",
            "gated",
            "--acts",
            P("toy.npy"),
            "--d-sae",
            "24",
            "--tokens",
            "10240",
            "--batch-size",
            "256",
            "--out",
            P("gated")
        );
        again.Code.Should().Be(2);
        again.Err.Should().Contain("--resume");

        var finished = Run(
            "train",
            "--arch",
            "gated",
            "--acts",
            P("toy.npy"),
            "--d-sae",
            "24",
            "--tokens",
            "10240",
            "--batch-size",
            "256",
            "--resume",
            "--out",
            P("gated")
        );
        finished.Code.Should().Be(2);
        finished.Err.Should().Contain("finished run").And.Contain("--init");

        var eval = Run("eval", "--sae", P("gated"), "--acts", P("toy.npy"), "--json");
        eval.Code.Should().Be(0, eval.Err);
        using (var doc = JsonDocument.Parse(eval.Out))
        {
            foreach (
                var key in new[]
                {
                    "l0",
                    "l1",
                    "mse",
                    "explained_variance",
                    "explained_variance_legacy",
                    "cossim",
                    "l2_ratio",
                    "relative_reconstruction_bias",
                    "frac_alive",
                }
            )
            {
                doc.RootElement.TryGetProperty(key, out _).Should().BeTrue(key);
            }

            doc.RootElement.GetProperty("tokens").GetInt64().Should().Be(4096);
        }

        var export = Run("export", "--sae", P("gated"), "--to", "jumprelu", "--out", P("jump"));
        export.Code.Should().Be(0, export.Err);
        var evalJump = Run("eval", "--sae", P("jump"), "--acts", P("toy.npy"), "--json");
        using (var a = JsonDocument.Parse(eval.Out))
        using (var b = JsonDocument.Parse(evalJump.Out))
        {
            b.RootElement.GetProperty("l0")
                .GetDouble()
                .Should()
                .BeApproximately(a.RootElement.GetProperty("l0").GetDouble(), TestTolerances.ExportedL0);
            b.RootElement.GetProperty("mse")
                .GetDouble()
                .Should()
                .BeApproximately(a.RootElement.GetProperty("mse").GetDouble(), TestTolerances.ExportedMse);
        }

        var encode = Run(
            "encode",
            "--sae",
            P("gated"),
            "--acts",
            P("toy.npy"),
            "--tokens",
            "100",
            "--out",
            P("features.safetensors")
        );
        encode.Code.Should().Be(0, encode.Err);
        using var f = new SafetensorsFile(P("features.safetensors"));
        var indptr = f.ReadInt64("indptr");
        indptr.Should().HaveCount(101).And.BeInAscendingOrder();
        f.ReadInt64("indices").Should().HaveCount((int)indptr[^1]).And.OnlyContain(i => i >= 0 && i < 24);
        f.ReadFloats("values").Should().OnlyContain(v => v > 0);
    }

    [Fact]
    public void Bad_input_gives_a_clear_error_and_leaves_no_output()
    {
        var rows = new float[2048 * 4];
        for (int i = 0; i < rows.Length; i++)
        {
            rows[i] = (i % 7) - 3;
        }

        rows[1777 * 4 + 1] = float.PositiveInfinity;
        Npy.WriteFloats(P("inf.npy"), rows, 2048, 4);
        var inf = Run(
            "train",
            "--arch",
            "standard",
            "--acts",
            P("inf.npy"),
            "--d-sae",
            "8",
            "--batch-size",
            "2048",
            "--tokens",
            "2048",
            "--out",
            P("out-inf")
        );
        inf.Code.Should().Be(2);
        inf.Err.Should().Contain("row 1777").And.Contain("column 1");
        Directory.Exists(P("out-inf")).Should().BeFalse("a failed run leaves nothing behind");

        Run("synth", "--rows", "2048", "--d", "6", "--out", P("d6.npy")).Code.Should().Be(0);
        Run("synth", "--rows", "2048", "--d", "4", "--out", P("d4.npy")).Code.Should().Be(0);
        Run(
            "train",
            "--arch",
            "standard",
            "--acts",
            P("d4.npy"),
            "--d-sae",
            "8",
            "--batch-size",
            "1024",
            "--tokens",
            "1024",
            "--out",
            P("std4")
        )
            .Code.Should()
            .Be(0);
        var wrongD = Run("eval", "--sae", P("std4"), "--acts", P("d6.npy"));
        wrongD.Code.Should().Be(2);
        wrongD.Err.Should().Contain("d = 6").And.Contain("d_in = 4");
        var init = Run(
            "train",
            "--arch",
            "standard",
            "--acts",
            P("d6.npy"),
            "--d-sae",
            "8",
            "--init",
            P("std4"),
            "--batch-size",
            "1024",
            "--tokens",
            "1024",
            "--out",
            P("init")
        );
        init.Code.Should().Be(2);
        init.Err.Should().Contain("--init").And.Contain("4×8");
        Directory.Exists(P("init")).Should().BeFalse();
        var mode = Run(
            "train",
            "--arch",
            "standard",
            "--mode",
            "saelens",
            "--acts",
            P("d4.npy"),
            "--d-sae",
            "8",
            "--tokens",
            "1024",
            "--out",
            P("m")
        );
        mode.Code.Should().Be(2);
        mode.Err.Should().Contain("--mode saelens");
        var missing = Run("eval", "--sae", P("nothing"), "--acts", P("d4.npy"));
        missing.Code.Should().Be(2);
        missing.Err.Should().Contain("No SAE folder");
    }

    [Fact]
    public void Resuming_an_interrupted_run_with_another_learning_rate_needs_an_explicit_override()
    {
        Run("synth", "--rows", "2048", "--d", "6", "--features", "12", "--l0", "2", "--out", P("small.npy"))
            .Code.Should()
            .Be(0);
        string[] args =
        [
            "train",
            "--arch",
            "standard",
            "--acts",
            P("small.npy"),
            "--d-sae",
            "12",
            "--batch-size",
            "128",
            "--tokens",
            "2560",
            "--lr-warmup",
            "2",
            "--log-every",
            "5",
            "--checkpoint-every",
            "10",
            "--out",
            P("interrupted"),
        ];
        Run(args).Code.Should().Be(0);

        // As if the process died after the step-10 checkpoint: the final SAE was never written.
        File.Delete(P("interrupted/cfg.json"));
        File.Delete(P("interrupted/sae_weights.safetensors"));
        var changed = Run([.. args, "--resume", "--lr", "1e-2"]);
        changed.Code.Should().Be(2);
        changed.Err.Should().Contain("learning_rate").And.Contain("--override learning_rate");
        File.Exists(P("interrupted/cfg.json")).Should().BeFalse("a refused resume writes nothing");

        var accepted = Run([.. args, "--resume", "--lr", "1e-2", "--override", "learning_rate"]);
        accepted.Code.Should().Be(0, accepted.Err);
        accepted.Out.Should().Contain("Resumed from").And.Contain("step 10");
        File.Exists(P("interrupted/trainer_config.json")).Should().BeTrue();
    }

    [Fact]
    public void A_topk_SAE_trains_keeps_at_most_k_features_per_row_and_round_trips_with_its_k()
    {
        Run("synth", "--rows", "4096", "--d", "8", "--features", "16", "--l0", "2", "--out", P("topk.npy"))
            .Code.Should()
            .Be(0);
        string[] train =
        [
            "train",
            "--arch",
            "topk",
            "--acts",
            P("topk.npy"),
            "--d-sae",
            "24",
            "--lr",
            "3e-3",
            "--batch-size",
            "256",
            "--tokens",
            "5120",
            "--lr-warmup",
            "5",
            "--log-every",
            "5",
        ];
        var run = Run([.. train, "--k", "3", "--out", P("topk")]);
        run.Code.Should().Be(0, run.Err);
        var cfg = JsonNode.Parse(File.ReadAllText(P("topk/cfg.json")))!;
        cfg["architecture"]!.GetValue<string>().Should().Be("topk");
        cfg["k"]!.GetValue<int>().Should().Be(3);
        var eval = Run("eval", "--sae", P("topk"), "--acts", P("topk.npy"), "--json");
        eval.Code.Should().Be(0, eval.Err);
        using (var doc = JsonDocument.Parse(eval.Out))
        {
            double l0 = doc.RootElement.GetProperty("l0").GetDouble();
            l0.Should()
                .BeGreaterThan(1.0)
                .And.BeLessThanOrEqualTo(3.0, "a topk SAE keeps at most k features per row");
        }

        foreach (
            var (extra, message) in new[]
            {
                (new[] { "--k", "3", "--l1", "2" }, "--l1"),
                (new[] { "--k", "25" }, "k ≤ d_sae"),
            }
        )
        {
            var bad = Run([.. train, .. extra, "--out", P("topk-bad")]);
            bad.Code.Should().Be(2, string.Join(' ', extra));
            bad.Err.Should().Contain(message);
            Directory.Exists(P("topk-bad")).Should().BeFalse("a refused run writes nothing");
        }

        var noK = Run(
            "train",
            "--arch",
            "topk",
            "--acts",
            P("topk.npy"),
            "--d-sae",
            "24",
            "--tokens",
            "512",
            "--out",
            P("topk-bad")
        );
        noK.Err.Should().Contain("--k");
        var kOnStandard = Run(
            "train",
            "--arch",
            "standard",
            "--k",
            "3",
            "--acts",
            P("topk.npy"),
            "--d-sae",
            "24",
            "--tokens",
            "512",
            "--out",
            P("topk-bad")
        );
        kOnStandard.Err.Should().Contain("--k applies to the TopK family");
    }
}
