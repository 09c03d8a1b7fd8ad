using System.Text.Json.Nodes;
using FluentAssertions;
using IlgpuSae.Study;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Tests.Lm;
using IlgpuSae.Tests.Study;
using Xunit;

namespace IlgpuSae.Tests.Cli;

/// <summary>A tiny end-to-end study sweep through the <c>sweep</c> command: results, plots, report, and
/// reruns.</summary>
[Collection(EnvironmentCollection.Name)]
public sealed class StudyCliTests : IDisposable
{
    private readonly TempFolder _temp = new("ilgpusae-study-cli-");

    public void Dispose() => _temp.Dispose();

    private string P(string name) => _temp.Path(name);

    [Fact]
    public void A_tiny_sweep_writes_results_plots_and_report_and_a_rerun_skips_finished_runs()
    {
        string[] args =
        [
            "--backend",
            "cpu",
            "sweep",
            "--model",
            LmTestData.BundledModel,
            "--corpus",
            LmTestData.HeldOut,
            "--eval-corpus",
            LmTestData.HeldOut,
            "--sites",
            "blocks.0.hook_mlp_out",
            "--arms",
            "gated",
            "standard",
            "standard-rescale-shift",
            "gated-no-rmag",
            "--l1-gated",
            "4",
            "--l1-standard",
            "4",
            "--tokens",
            "2048",
            "--expansion",
            "2",
            "--eval-tokens",
            "254",
            "--ito-site",
            "blocks.0.hook_mlp_out",
            "--ito-l0",
            "2",
            "8",
            "--out",
            P("study"),
        ];
        var run = CliRunner.Run(args);
        run.Code.Should().Be(0, run.Err + run.Out);
        run.Out.Should().Contain("Report: ");

        var results = StudyResults.FromCsv(File.ReadAllText(P("study/results.csv")));
        results.Should().HaveCount(4 + 2 * 2, "four arms and two decoders × two ITO targets");
        results
            .Where(r => !r.IsIto)
            .Should()
            .OnlyContain(r => r.L0 > 0 && double.IsFinite(r.LossRecovered) && double.IsFinite(r.Gamma));
        results.Single(r => r.Arm == "gated").DSae.Should().Be(256);
        results.Single(r => r.Arm == "standard").DSae.Should().Be(384, "the baseline is 1.5× wider");
        results.Where(r => r.IsIto).Should().OnlyContain(r => r.L0 <= r.ItoK && r.L0 > 0);
        JsonNode.Parse(File.ReadAllText(P("study/results.json")))!.AsArray().Should().HaveCount(8);
        var report = File.ReadAllText(P("study/report.md"));
        report
            .Should()
            .Contain("## The paper's claims against these numbers")
            .And.Contain("Gated Pareto-dominates")
            .And.Contain("| ito:gated |");
        foreach (var png in Directory.GetFiles(P("study"), "*.png"))
        {
            var bytes = File.ReadAllBytes(png);
            bytes
                .AsSpan(0, 8)
                .ToArray()
                .Should()
                .Equal([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], png);
            int width = (bytes[16] << 24) | (bytes[17] << 16) | (bytes[18] << 8) | bytes[19];
            width.Should().Be(800);
            report.Should().Contain(Path.GetFileName(png), "every plot is linked from the report");
            PlotImages
                .DarkPixelsInTitleStrip(png)
                .Should()
                .BeGreaterThan(
                    100,
                    $"{Path.GetFileName(png)} has a visible title (text renders even without installed fonts)"
                );
        }

        Directory
            .GetFiles(P("study"), "*.png")
            .Select(Path.GetFileName)
            .Should()
            .Contain([
                "loss-recovered-blocks-0-hook_mlp_out.png",
                "gamma-blocks-0-hook_mlp_out.png",
                "ablations-blocks-0-hook_mlp_out.png",
                "ito-blocks-0-hook_mlp_out.png",
            ]);

        var stamp = File.GetLastWriteTimeUtc(P("study/runs/blocks.0.hook_mlp_out/gated/l1-4/result.json"));
        var again = CliRunner.Run(args);
        again.Code.Should().Be(0, again.Err);
        again.Out.Should().NotContain("gated λ=4", "finished runs are skipped");
        File.GetLastWriteTimeUtc(P("study/runs/blocks.0.hook_mlp_out/gated/l1-4/result.json"))
            .Should()
            .Be(stamp);

        var changed = CliRunner.Run([.. args.Select(a => a == "2048" ? "4096" : a)]);
        changed.Code.Should().Be(2);
        changed.Err.Should().Contain("different settings");
        var badArm = CliRunner.Run([.. args.Select(a => a == "gated-no-rmag" ? "gated-nonsense" : a)]);
        badArm.Code.Should().Be(2);
        badArm.Err.Should().Contain("Unknown arm");
    }

    [Fact]
    public void A_tiny_cross_family_sweep_draws_every_family_on_one_plot_with_a_verdict_table()
    {
        string[] args =
        [
            "--backend",
            "cpu",
            "sweep",
            "--model",
            LmTestData.BundledModel,
            "--corpus",
            LmTestData.HeldOut,
            "--eval-corpus",
            LmTestData.HeldOut,
            "--sites",
            "blocks.0.hook_mlp_out",
            "--arms",
            "gated,standard,topk,batchtopk,matryoshka,jumprelu",
            "--l1-gated",
            "4",
            "--l1-standard",
            "4",
            "--k-topk",
            "8",
            "--l0-jumprelu",
            "0.3",
            "--tokens",
            "2048",
            "--expansion",
            "2",
            "--eval-tokens",
            "254",
            "--out",
            P("families"),
        ];
        var run = CliRunner.Run(args);
        run.Code.Should().Be(0, run.Err + run.Out);

        var results = StudyResults.FromCsv(File.ReadAllText(P("families/results.csv")));
        results
            .Select(r => r.Arm)
            .Should()
            .BeEquivalentTo(["gated", "standard", "topk", "batchtopk", "matryoshka", "jumprelu"]);
        results.Should().OnlyContain(r => r.L0 > 0 && double.IsFinite(r.LossRecovered) && r.TrainSeconds > 0);
        results
            .Where(r => r.Arm != "standard")
            .Should()
            .OnlyContain(r => r.DSae == 256, "every family is matched to the gated dictionary size");
        results.Should().OnlyContain(r => r.TrainTokens == 2048, "and to the same training tokens");
        results.Where(r => StudyArms.IsTopKFamily(r.Arm)).Should().OnlyContain(r => r.K == 8 && r.L1 == 0);
        results.Single(r => r.Arm == "jumprelu").L1.Should().Be(0.3);
        results
            .Single(r => r.Arm == "topk")
            .L0.Should()
            .BeLessThanOrEqualTo(8 + 1e-9, "TopK keeps k per row");
        JsonNode
            .Parse(File.ReadAllText(P("families/results.json")))!
            .AsArray()
            .Select(n => (string)n!["arm"]!)
            .Should()
            .HaveCount(6);
        File.Exists(P("families/runs/blocks.0.hook_mlp_out/topk/k-8/result.json")).Should().BeTrue();
        File.Exists(P("families/runs/blocks.0.hook_mlp_out/jumprelu/l0-coefficient-0.3/result.json"))
            .Should()
            .BeTrue();
        var cfg = JsonNode.Parse(
            File.ReadAllText(P("families/runs/blocks.0.hook_mlp_out/batchtopk/k-8/cfg.json"))
        )!;
        ((string)cfg["architecture"]!)
            .Should()
            .Be("jumprelu", "BatchTopK is evaluated in its inference form");

        foreach (
            var png in new[]
            {
                "families-loss-recovered-blocks-0-hook_mlp_out.png",
                "families-gamma-blocks-0-hook_mlp_out.png",
            }
        )
        {
            File.Exists(P("families/" + png)).Should().BeTrue(png);
            PlotImages.DarkPixelsInTitleStrip(P("families/" + png)).Should().BeGreaterThan(100, png);
        }

        File.Exists(P("families/ablations-blocks-0-hook_mlp_out.png"))
            .Should()
            .BeFalse("the families are not ablations");
        var report = File.ReadAllText(P("families/report.md"));
        report
            .Should()
            .Contain("## Every family on one Pareto plot")
            .And.Contain("Matched by dictionary size and by compute")
            .And.Contain("families-loss-recovered-blocks-0-hook_mlp_out.png")
            .And.Contain("families-gamma-blocks-0-hook_mlp_out.png")
            .And.Contain("| topk | k 8 |");
        var table = report[report.IndexOf("| family | d_sae |", StringComparison.Ordinal)..];
        table = table[..table.IndexOf("\n\n", StringComparison.Ordinal)];
        foreach (var arm in new[] { "gated", "standard", "topk", "batchtopk", "matryoshka", "jumprelu" })
        {
            table.Should().Contain($"\n| {arm} | ", $"the verdict table lists {arm}");
        }

        var zero = CliRunner.Run([
            .. args.Select(a =>
                a == "8" ? "0"
                : a == P("families") ? P("bad")
                : a
            ),
        ]);
        zero.Code.Should().Be(2);
        zero.Err.Should().Contain("k_topk values must be ≥ 1");
        var words = CliRunner.Run([
            .. args.Select(a =>
                a == "8" ? "8,x"
                : a == P("families") ? P("bad")
                : a
            ),
        ]);
        words.Code.Should().Be(2);
        words.Err.Should().Contain("--k-topk");
        Directory.Exists(P("bad")).Should().BeFalse("nothing is written for bad settings");
    }
}
