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
}
