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

    [Fact]
    public void Cross_family_verdicts_find_the_best_point_under_the_L0_budget_and_whole_family_dominance()
    {
        var config = (StudyConfig.Reduced("data") with { Sites = ["s"], VerdictL0 = 20 }).WithFamilies();
        RunResult F(string arm, int k, double l1, double l0, double lr, double gamma, double seconds) =>
            R(arm, l1, l0, lr, gamma) with
            {
                K = k,
                TrainSeconds = seconds,
                TrainTokens = 1024,
            };
        var results = new List<RunResult>
        {
            F(StudyArms.Gated, 0, 1, 36, 0.97, 1.01, 10),
            F(StudyArms.Gated, 0, 4, 10, 0.90, 1.00, 8),
            F(StudyArms.Standard, 0, 1, 38, 0.93, 0.95, 6),
            F(StudyArms.Standard, 0, 4, 11, 0.80, 0.85, 6),
            F(StudyArms.TopK, 8, 0, 8, 0.91, 1.02, 5),
            F(StudyArms.TopK, 32, 0, 32, 0.98, 1.00, 7),
            F(StudyArms.BatchTopK, 16, 0, 15, 0.93, 0.99, 5),
            F(StudyArms.Matryoshka, 16, 0, 16, 0.89, 0.97, 9),
            F(StudyArms.JumpRelu, 0, 0.3, 25, 0.94, 0.96, 4),
            F(StudyArms.JumpRelu, 0, 1, 12, 0.5, 3.0, 4) with
            {
                ExplainedVariance = -0.1,
            },
            // Other sites, ablations and ITO are not compared.
            F(StudyArms.NoRMag, 0, 1, 1, 1.0, 1.0, 1),
        };
        var rows = StudyReport.CompareFamilies(config, results);
        rows.Select(r => r.Arm)
            .Should()
            .Equal(
                StudyArms.Gated,
                StudyArms.Standard,
                StudyArms.TopK,
                StudyArms.BatchTopK,
                StudyArms.Matryoshka,
                StudyArms.JumpRelu
            );
        var topk = rows.Single(r => r.Arm == StudyArms.TopK);
        topk.Best!.K.Should().Be(8, "k 32 has L0 32 > the budget 20");
        topk.MeanTrainSeconds.Should().Be(6);
        topk.FrontierPoints.Should().Be(2);
        topk.DominatedBy.Should().BeEmpty();
        rows.Single(r => r.Arm == StudyArms.Standard)
            .DominatedBy.Should()
            .Equal(
                [StudyArms.Gated, StudyArms.TopK],
                "each of its points has a gated and a topk point with lower L0 and higher loss recovered"
            );
        var matryoshka = rows.Single(r => r.Arm == StudyArms.Matryoshka);
        matryoshka.DominatedBy.Should().Equal(StudyArms.Gated, StudyArms.TopK, StudyArms.BatchTopK);
        matryoshka.FrontierPoints.Should().Be(0);
        var jump = rows.Single(r => r.Arm == StudyArms.JumpRelu);
        jump.MeanGamma.Should().Be(0.96, "the collapsed point is left out of γ");
        jump.Best!.L1.Should().Be(1, "the only point under the budget, collapsed or not");
        jump.L0Min.Should().Be(12);
        jump.L0Max.Should().Be(25);
        rows.Single(r => r.Arm == StudyArms.BatchTopK).DominatedBy.Should().BeEmpty();

        var gatedOnly = results.Where(r => !StudyArms.IsFamily(r.Arm)).ToList();
        StudyReport
            .CompareFamilies(config, gatedOnly)
            .Should()
            .BeEmpty("no family ran: no cross-family table");
    }

    [Fact]
    public void Family_arms_need_their_sparsity_lists_and_leave_paper_studies_unchanged()
    {
        var reduced = StudyConfig.Reduced("data");
        reduced
            .ToJson()
            .Should()
            .NotContain("k_topk")
            .And.NotContain("l0_jumprelu")
            .And.NotContain("verdict_l0");
        reduced.Arms.Should().Equal(StudyArms.Gated, StudyArms.Standard);
        StudyConfig
            .Full("data")
            .Arms.Should()
            .Equal(StudyArms.All, "the full study runs the paper's arms only");

        var families = reduced.WithFamilies();
        families.Arms.Should().Equal([StudyArms.Gated, StudyArms.Standard, .. StudyArms.Families]);
        families.KTopK.Should().Equal(StudyConfig.DefaultKTopK);
        families
            .PointsOf(StudyArms.Matryoshka)
            .Should()
            .Equal(StudyConfig.DefaultKTopK.Select(k => (0.0, k)));
        families
            .PointsOf(StudyArms.JumpRelu)
            .Should()
            .Equal(StudyConfig.DefaultL0JumpRelu.Select(l => (l, 0)));
        families.PointsOf(StudyArms.Gated).Should().Equal(reduced.L1Gated.Select(l => (l, 0)));
        families.ToJson().Should().Contain("\"k_topk\"");
        families.Validate();

        var full = StudyConfig.Full("data").WithFamilies();
        full.ArmsAt("blocks.1.hook_resid_post")
            .Should()
            .Equal(
                [StudyArms.Gated, StudyArms.Standard, .. StudyArms.Families],
                "the families run at every site, the ablations at one"
            );

        FluentActions
            .Invoking(() => (reduced with { Arms = [StudyArms.TopK] }).Validate())
            .Should()
            .Throw<ArgumentException>()
            .WithMessage("*k_topk*");
        FluentActions
            .Invoking(() => (families with { KTopK = [0] }).Validate())
            .Should()
            .Throw<ArgumentException>();
        FluentActions
            .Invoking(() => (reduced with { Arms = [StudyArms.JumpRelu] }).Validate())
            .Should()
            .Throw<ArgumentException>()
            .WithMessage("*l0_jumprelu*");
        (reduced with { Arms = [StudyArms.TopK], KTopK = [4], L1Gated = [], L1Standard = [] }).Validate();

        StudyArms.MatryoshkaWidths(512).Should().Equal(64, 128, 256, 512);
        StudyArms.Recipe(StudyArms.Matryoshka, 16, 512).MatryoshkaWidths.Should().Equal(64, 128, 256, 512);
        StudyArms.Recipe(StudyArms.BatchTopK, 16, 512).K.Should().Be(16);
        StudyArms.Recipe(StudyArms.JumpRelu).ModeName.Should().Be("saelens");
        FluentActions.Invoking(() => StudyArms.Recipe(StudyArms.TopK)).Should().Throw<ArgumentException>();
    }

    [Fact]
    public void Results_with_k_round_trip_through_csv_and_omit_k_otherwise()
    {
        var plain = new List<RunResult> { R(StudyArms.Gated, 1, 10, 0.9, 1.0) };
        StudyResults.ToCsv(plain).Should().StartWith(string.Join(",", StudyResults.Columns) + "\n");
        StudyResults.ToJson(plain).Should().NotContain("\"k\"");
        var mixed = new List<RunResult>
        {
            R(StudyArms.Gated, 1, 10, 0.9, 1.0),
            R(StudyArms.TopK, 0, 16, 0.95, 1.0) with
            {
                K = 16,
            },
        };
        var csv = StudyResults.ToCsv(mixed);
        csv.Should().StartWith(string.Join(",", StudyResults.Columns) + ",k\n");
        var back = StudyResults.FromCsv(csv);
        back.Should().BeEquivalentTo(mixed);
        StudyResults.ToJson(mixed).Should().Contain("\"k\": 16");
    }
}
