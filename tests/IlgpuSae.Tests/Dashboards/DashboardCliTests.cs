using System.Text.Json.Nodes;
using FluentAssertions;
using IlgpuSae.Backends;
using IlgpuSae.Sae;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Tests.Lm;
using Xunit;

namespace IlgpuSae.Tests.Dashboards;

/// <summary>The dashboard command: static files, the Neuronpedia layout, resuming, bad arguments.</summary>
[Collection(EnvironmentCollection.Name)]
public sealed class DashboardCliTests : IDisposable
{
    private readonly TempFolder _temp = new("ilgpusae-dashboard-cli-");

    public void Dispose() => _temp.Dispose();

    private string[] Args(string sae, string output, params string[] more) =>
        [
            "--backend",
            "cpu",
            "dashboard",
            "--sae",
            sae,
            "--model",
            LmTestData.BundledModel,
            "--corpus",
            LmTestData.HeldOut,
            "--tokens",
            "600",
            "--context",
            "64",
            "--out",
            output,
            .. more,
        ];

    [Fact]
    public void Dashboard_writes_offline_pages_records_and_the_neuronpedia_layout_and_a_rerun_finds_it_complete()
    {
        using var device = SaeDevice.Create(BackendKind.Cpu);
        var sae = DashboardTestData.SaveRandomSae(
            device,
            _temp.Path("sae"),
            SaeArchitecture.Standard,
            160,
            1
        );
        var run = CliRunner.Run(Args(sae, _temp.Path("dash"), "--neuronpedia"));
        run.Code.Should().Be(0, run.Err);
        run.Out.Should().Contain("Wrote 160 feature dashboards").And.Contain("tokens/s");
        foreach (
            var f in new[]
            {
                "index.html",
                "feature.html",
                "dashboard.js",
                "dashboard.css",
                "index-data.js",
                "dashboard.json",
            }
        )
        {
            File.Exists(_temp.Combine("dash", f)).Should().BeTrue(f);
        }

        File.Exists(_temp.Combine("dash", "features", "159.json")).Should().BeTrue();
        File.ReadAllText(_temp.Combine("dash", "features", "3.js"))
            .Should()
            .StartWith("window.dashboardFeatureLoaded({");
        var batch1 = JsonNode.Parse(File.ReadAllText(_temp.Combine("dash", "neuronpedia", "batch-1.json")))!;
        batch1["layer"]!.GetValue<string>().Should().Be("0");
        var features = batch1["features"]!.AsArray();
        features.Count.Should().BeGreaterThan(0);
        var first = features[0]!;
        first["activations"]!.AsArray().Count.Should().BeGreaterThan(0);
        first["freq_hist_data_bar_heights"]!.AsArray().Count.Should().Be(50);
        first["pos_str"]!.AsArray().Count.Should().Be(10);
        File.Exists(_temp.Combine("dash", "neuronpedia", "skipped_indexes.json")).Should().BeTrue();
        File.Exists(_temp.Combine("dash", "neuronpedia", "run_settings.json")).Should().BeTrue();
        File.Exists(_temp.Combine("dash", ".ilgpusae.lock")).Should().BeFalse("the lock is released");

        var again = CliRunner.Run(Args(sae, _temp.Path("dash"), "--neuronpedia"));
        again.Code.Should().Be(0, again.Err);
        again.Err.Should().Contain("already complete");

        var other = CliRunner.Run(Args(sae, _temp.Path("dash"), "--features", "1,2"));
        other.Code.Should().Be(2);
        other.Err.Should().Contain("different request");
    }

    [Fact]
    public void Bad_feature_lists_and_sizes_are_one_line_errors()
    {
        using var device = SaeDevice.Create(BackendKind.Cpu);
        var sae = DashboardTestData.SaveRandomSae(device, _temp.Path("sae"), SaeArchitecture.Standard, 64, 1);
        foreach (
            var (extra, message) in new[]
            {
                (new[] { "--features", "1,x" }, "is not a feature index"),
                (new[] { "--features", "64" }, "outside the SAE"),
                (new[] { "--window", "-1" }, "--window"),
                (new[] { "--intervals", "0" }, "--intervals"),
            }
        )
        {
            var run = CliRunner.Run(Args(sae, _temp.Path("bad-" + Guid.NewGuid().ToString("N")), extra));
            run.Code.Should().Be(2, string.Join(' ', extra));
            run.Err.Should().Contain(message).And.StartWith("error:");
        }
    }
}

/// <summary><c>sweep --rating-study</c> (the hook <c>reproduce --rating-study</c> uses): a study from the
/// gated and baseline SAEs, and the report section that says how to serve it.</summary>
[Collection(EnvironmentCollection.Name)]
public sealed class StudyRatingCliTests : IDisposable
{
    private readonly TempFolder _temp = new("ilgpusae-study-rating-");

    public void Dispose() => _temp.Dispose();

    [Fact]
    public void A_sweep_with_rating_study_creates_a_blinded_study_of_its_gated_and_baseline_saes()
    {
        var run = CliRunner.Run(
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
            "--rating-study",
            "3",
            "--rating-study-tokens",
            "600",
            "--out",
            _temp.Path("study")
        );
        run.Code.Should().Be(0, run.Err + run.Out);
        var folder = _temp.Combine("study", "rating-study");
        JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "study.json")))!["features"]!
            .AsArray()
            .Should()
            .HaveCount(6);
        var key = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "key.json")))!;
        key["saes"]!
            .AsArray()
            .Select(s => s!["label"]!.GetValue<string>())
            .Should()
            .Equal("gated/l1-4", "standard/l1-4");
        var report = File.ReadAllText(_temp.Combine("study", "report.md"));
        report
            .Should()
            .Contain("## Blinded rating study (paper §4.3)")
            .And.Contain($"ilgpu-sae serve --dir {folder}");
        File.ReadAllText(Path.Combine(folder, "public", "index-data.js")).Should().NotContain("gated");
    }
}
