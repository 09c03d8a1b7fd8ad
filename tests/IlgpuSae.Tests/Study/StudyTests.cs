using FluentAssertions;
using IlgpuSae.Study;
using IlgpuSae.Tests.Infrastructure;
using Xunit;

namespace IlgpuSae.Tests.Study;

/// <summary>Pareto frontiers and claim checks on hand-made results, the results file, the plot
/// font.</summary>
[Collection(EnvironmentCollection.Name)]
public sealed class StudyTests : IDisposable
{
    private readonly TempFolder _temp = new("ilgpusae-study-");

    public void Dispose() => _temp.Dispose();

    private string P(string name) => _temp.Path(name);

    [Fact]
    public void Frontier_keeps_exactly_the_undominated_points_and_interpolates_in_log_L0()
    {
        var points = new[]
        {
            (10.0, 0.80),
            (20.0, 0.78),
            (5.0, 0.60),
            (40.0, 0.95),
            (20.0, 0.90),
            (80.0, 0.94),
            (double.NaN, 1.0),
        };
        StudyResults.Frontier(points).Should().Equal((5.0, 0.60), (10.0, 0.80), (20.0, 0.90), (40.0, 0.95));

        var frontier = StudyResults.Frontier(points);
        StudyResults.ScoreAt(frontier, 10).Should().Be(0.80);
        StudyResults
            .ScoreAt(frontier, Math.Sqrt(200))
            .Should()
            .BeApproximately(
                0.85,
                TestTolerances.DoubleRoundOff.Atol,
                "half-way in log L0 between 10 and 20"
            );
        StudyResults.ScoreAt(frontier, 4).Should().BeNull();
        StudyResults.ScoreAt(frontier, 41).Should().BeNull();
        StudyResults
            .L0For(frontier, 0.85)
            .Should()
            .BeApproximately(Math.Sqrt(200), TestTolerances.FrontierInverse);
        StudyResults.L0For(frontier, 0.5).Should().Be(5);
        StudyResults.L0For(frontier, 0.96).Should().BeNull();
    }

    private static RunResult R(string arm, double l1, double l0, double lr, double gamma) =>
        new()
        {
            Site = "s",
            Arm = arm,
            L1 = l1,
            L0 = l0,
            LossRecovered = lr,
            Gamma = gamma,
            DSae = 8,
            FracAlive = 1,
            ExplainedVariance = 0.9,
            Folder = "f",
        };

    [Fact]
    public void Claim_checks_follow_the_numbers()
    {
        var config = StudyConfig.Reduced("data") with
        {
            Sites = ["s"],
            Arms = [StudyArms.Gated, StudyArms.Standard, StudyArms.RescaleShift, StudyArms.NoRMag],
        };
        var results = new List<RunResult>
        {
            R(StudyArms.Gated, 1, 40, 0.97, 1.01),
            R(StudyArms.Gated, 2, 20, 0.95, 0.99),
            R(StudyArms.Gated, 4, 10, 0.90, 1.00),
            R(StudyArms.Standard, 1, 38, 0.93, 0.95),
            R(StudyArms.Standard, 2, 19, 0.88, 0.90),
            R(StudyArms.Standard, 4, 11, 0.80, 0.82),
            R(StudyArms.RescaleShift, 2, 19, 0.90, 1.00),
            R(StudyArms.NoRMag, 2, 20, 0.94, 1.0),
        };
        var byText = StudyReport.CheckClaims(config, results);
        byText
            .Single(c => c.Claim.StartsWith("Gated SAEs do not shrink", StringComparison.Ordinal))
            .Verdict.Should()
            .Be("holds");
        byText
            .Single(c => c.Claim.StartsWith("Baseline SAEs shrink", StringComparison.Ordinal))
            .Verdict.Should()
            .Be("holds");
        var pareto = byText.Single(c => c.Claim.StartsWith("Gated Pareto", StringComparison.Ordinal));
        pareto.Verdict.Should().Be("holds");
        pareto.Evidence.Should().Contain("3 of 3");
        byText
            .Single(c => c.Claim.Contains("gated-no-rmag", StringComparison.Ordinal))
            .Verdict.Should()
            .Be("holds");
        var rs = byText.Single(c => c.Claim.StartsWith("Baseline + rescale", StringComparison.Ordinal));
        rs.Verdict.Should().Be("holds");
        rs.Evidence.Should()
            .Contain(
                "30 %",
                "at L0 19 the gated frontier is 0.90 + 0.05·ln(1.9)/ln(2) = 0.9463, so (0.90 − 0.88) / (0.9463 − 0.88) = 30 % of the gap is closed"
            );

        // ITO: gated dictionaries ahead at k 4 but not at k 16 (partly); the gated encoder sits closer to its
        // ITO frontier.
        RunResult Ito(string arm, int k, double l0, double lr) =>
            new()
            {
                Site = "s",
                Arm = "ito:" + arm,
                L1 = 2,
                ItoK = k,
                L0 = l0,
                LossRecovered = lr,
                DSae = 8,
                Folder = "f",
            };
        var withIto = results
            .Concat([
                Ito(StudyArms.Gated, 4, 4, 0.85),
                Ito(StudyArms.Gated, 16, 16, 0.93),
                Ito(StudyArms.Gated, 64, 64, 0.99),
                Ito(StudyArms.Standard, 4, 4, 0.80),
                Ito(StudyArms.Standard, 16, 16, 0.95),
                Ito(StudyArms.Standard, 64, 64, 0.98),
            ])
            .ToList();
        var itoChecks = StudyReport.CheckClaims(config, withIto);
        var dictionaries = itoChecks.Single(c => c.Claim.StartsWith("Under ITO", StringComparison.Ordinal));
        dictionaries.Verdict.Should().Be("partly");
        dictionaries
            .Evidence.Should()
            .Contain("k 4: 85.00 % vs 80.00 %")
            .And.Contain("k 16: 93.00 % vs 95.00 %");
        var gap = itoChecks.Single(c =>
            c.Claim.StartsWith("The encoder-vs-ITO gap", StringComparison.Ordinal)
        );
        gap.Verdict.Should()
            .Be(
                "holds",
                "gated encoders sit within 0.01 of their ITO frontier (median −0.0003), baseline ones 0.04–0.11 below theirs (median 0.074)"
            );

        // A baseline that does not shrink at its smallest λ, or shrinks non-monotonically, only partly
        // supports the claim.
        var unpenalised = StudyReport.CheckClaims(
            config,
            [.. results.Select(r => r.Arm == StudyArms.Standard && r.L1 == 1 ? r with { Gamma = 1.04 } : r)]
        );
        unpenalised
            .Single(c => c.Claim.StartsWith("Baseline SAEs shrink", StringComparison.Ordinal))
            .Verdict.Should()
            .Be("partly");
        var none = StudyReport.CheckClaims(
            config,
            [.. results.Select(r => r.Arm == StudyArms.Standard ? r with { Gamma = 1.02 } : r)]
        );
        none.Single(c => c.Claim.StartsWith("Baseline SAEs shrink", StringComparison.Ordinal))
            .Verdict.Should()
            .Be("does not hold");

        // A collapsed baseline (too large a λ: explained variance ≤ 0, γ meaningless) is named but not
        // judged.
        var collapsed = R(StudyArms.Standard, 9, 1.9, -5.8, 3.7) with
        {
            ExplainedVariance = -0.13,
        };
        collapsed.IsDegenerate.Should().BeTrue();
        var withCollapsed = StudyReport.CheckClaims(config, [.. results, collapsed]);
        var shrink = withCollapsed.Single(c =>
            c.Claim.StartsWith("Baseline SAEs shrink", StringComparison.Ordinal)
        );
        shrink.Verdict.Should().Be("holds");
        shrink
            .Evidence.Should()
            .Contain("left out as collapsed")
            .And.Contain("λ 9 (L0 1.9, explained variance -0.130, γ 3.700)");

        // Flip the result: a baseline that beats gated and a shrinking gated SAE are reported as such.
        var flipped = results
            .Select(r => r.Arm == StudyArms.Standard ? r with { LossRecovered = r.LossRecovered + 0.2 } : r)
            .Select(r => r.Arm == StudyArms.Gated && r.L1 == 4 ? r with { Gamma = 0.7 } : r)
            .ToList();
        var checks = StudyReport.CheckClaims(config, flipped);
        checks
            .Single(c => c.Claim.StartsWith("Gated Pareto", StringComparison.Ordinal))
            .Verdict.Should()
            .Be("does not hold");
        checks
            .Single(c => c.Claim.StartsWith("Gated SAEs do not shrink", StringComparison.Ordinal))
            .Verdict.Should()
            .Be("partly");
    }

    [Fact]
    public void The_embedded_plot_font_is_DejaVu_Sans_and_draws_text()
    {
        using var typeface = PlotFonts.CreateTypeface();
        typeface.FamilyName.Should().Be("DejaVu Sans");
        var plot = new ScottPlot.Plot();
        PlotFonts.Apply(plot);
        plot.Title("Loss recovered vs L0");
        plot.SavePng(P("title.png"), 400, 300);
        PlotImages.DarkPixelsInTitleStrip(P("title.png")).Should().BeGreaterThan(100);
    }

    [Fact]
    public void Results_round_trip_through_csv()
    {
        var results = new List<RunResult>
        {
            R(StudyArms.Gated, 0.5, 12.25, 0.9, 1.0) with
            {
                Folder = "runs/a,b",
            },
            new()
            {
                Site = "s",
                Arm = "ito:gated",
                L1 = 0.5,
                ItoK = 4,
                L0 = 3.9,
                LossRecovered = 0.5,
                DSae = 8,
            },
        };
        var back = StudyResults.FromCsv(StudyResults.ToCsv(results));
        back.Should().HaveCount(2);
        back[0].Should().BeEquivalentTo(results[0]);
        back[1].Gamma.Should().Be(double.NaN);
        back[1].ItoK.Should().Be(4);
        FluentActions.Invoking(() => StudyResults.FromCsv("a,b\n1,2")).Should().Throw<InvalidDataException>();
    }
}
