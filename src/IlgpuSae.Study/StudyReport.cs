using System.Globalization;
using System.Text;
using IlgpuSae.IO;
using ScottPlot;

namespace IlgpuSae.Study;

/// <summary>A claim of the paper checked against a study's numbers.</summary>
/// <param name="Site">Hook site.</param>
/// <param name="Claim">The claim.</param>
/// <param name="Verdict"><c>holds</c>, <c>partly</c>, <c>does not hold</c> or <c>not measured</c>.</param>
/// <param name="Evidence">The numbers behind the verdict.</param>
public sealed record ClaimCheck(string Site, string Claim, string Verdict, string Evidence);

/// <summary>One family's row of the cross-family verdict table at a site.</summary>
/// <param name="Site">Hook site.</param>
/// <param name="Arm">The arm (gated, standard or one of <see cref="StudyArms.Families"/>).</param>
/// <param name="DSae">Dictionary size.</param>
/// <param name="Points">SAEs of the arm at the site.</param>
/// <param name="L0Min">Smallest L0 of its SAEs.</param>
/// <param name="L0Max">Largest L0 of its SAEs.</param>
/// <param name="Best">Its SAE with the highest loss recovered at L0 ≤ the study's verdict L0 (null: none
/// that sparse).</param>
/// <param name="MeanGamma">Mean γ of its SAEs that did not collapse (NaN: none).</param>
/// <param name="MeanTrainSeconds">Mean measured training time per SAE (the compute).</param>
/// <param name="TrainTokens">Training tokens per SAE.</param>
/// <param name="FrontierPoints">Its SAEs that no SAE of another compared arm beats on both L0 and loss
/// recovered (the joint Pareto frontier).</param>
/// <param name="DominatedBy">The arms that Pareto-dominate every one of its SAEs.</param>
public sealed record FamilyVerdict(
    string Site,
    string Arm,
    int DSae,
    int Points,
    double L0Min,
    double L0Max,
    RunResult? Best,
    double MeanGamma,
    double MeanTrainSeconds,
    long TrainTokens,
    int FrontierPoints,
    IReadOnlyList<string> DominatedBy
);

/// <summary>How long a study invocation took.</summary>
/// <param name="Wall">Wall time from the start of <see cref="StudyRunner.Run"/> to the report.</param>
/// <param name="Resumed">Units (SAEs or ITO points) an earlier invocation had finished.</param>
/// <param name="Units">All units of the study.</param>
public sealed record StudyTiming(TimeSpan Wall, int Resumed, int Units);

/// <summary>Writes a study's results.csv, results.json, plots (PNG, ScottPlot) and report.md.</summary>
public static class StudyReport
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>Plot colours per arm (colour-blind-safe Okabe–Ito palette).</summary>
    private static readonly Dictionary<string, string> Colors = new()
    {
        [StudyArms.Gated] = "#0072B2",
        [StudyArms.Standard] = "#D55E00",
        [StudyArms.UnfrozenAux] = "#009E73",
        [StudyArms.NoRMag] = "#CC79A7",
        [StudyArms.Untied] = "#56B4E9",
        [StudyArms.RescaleShift] = "#E69F00",
        ["ito:" + StudyArms.Gated] = "#0072B2",
        ["ito:" + StudyArms.Standard] = "#D55E00",
        // The families share colours with the ablation arms (never on the same plot) and differ in marker.
        [StudyArms.TopK] = "#009E73",
        [StudyArms.BatchTopK] = "#56B4E9",
        [StudyArms.Matryoshka] = "#CC79A7",
        [StudyArms.JumpRelu] = "#000000",
    };

    /// <summary>Marker shapes of the families (every other arm: a filled circle, ITO an open
    /// triangle).</summary>
    private static readonly Dictionary<string, MarkerShape> Markers = new()
    {
        [StudyArms.TopK] = MarkerShape.FilledSquare,
        [StudyArms.BatchTopK] = MarkerShape.FilledDiamond,
        [StudyArms.Matryoshka] = MarkerShape.FilledTriangleUp,
        [StudyArms.JumpRelu] = MarkerShape.FilledTriangleDown,
    };

    /// <summary>Writes every file of the report into <paramref name="folder"/>; returns the report
    /// path.</summary>
    public static string Write(
        string folder,
        StudyConfig config,
        IReadOnlyList<RunResult> results,
        string device,
        StudyTiming? timing = null
    )
    {
        AtomicFile.WriteAllText(Path.Combine(folder, "results.csv"), StudyResults.ToCsv(results));
        AtomicFile.WriteAllText(Path.Combine(folder, "results.json"), StudyResults.ToJson(results));
        var plots = new List<(string Site, string File, string Caption)>();
        foreach (var site in config.Sites)
        {
            var here = results.Where(r => r.Site == site).ToList();
            if (here.Count == 0)
            {
                continue;
            }

            string slug = site.Replace('.', '-');
            // Which plots exist depends on the arms run; collapsed runs are left out of the points.
            var shown = here.Where(r => !r.IsDegenerate).ToList();
            var main = shown.Where(r => r.Arm is StudyArms.Gated or StudyArms.Standard).ToList();
            plots.Add(
                (
                    site,
                    $"loss-recovered-{slug}.png",
                    "Loss recovered vs L0, gated vs baseline, with Pareto frontiers (Fig. 1)"
                )
            );
            PlotFrontiers(
                Path.Combine(folder, plots[^1].File),
                $"{site}: loss recovered vs L0",
                main,
                "loss recovered (ce_loss_score)",
                r => r.LossRecovered
            );
            plots.Add((site, $"gamma-{slug}.png", "Relative reconstruction bias γ vs L0 (Fig. 4)"));
            PlotPoints(
                Path.Combine(folder, plots[^1].File),
                $"{site}: shrinkage",
                shown.Where(r => !r.IsIto && !StudyArms.IsFamily(r.Arm)).ToList(),
                "γ (1 = no shrinkage)",
                r => r.Gamma
            );
            if (
                here.Where(r => !r.IsIto && r.Arm is not StudyArms.Standard && !StudyArms.IsFamily(r.Arm))
                    .Select(r => r.Arm)
                    .Distinct()
                    .Count() > 1
            )
            {
                plots.Add(
                    (
                        site,
                        $"ablations-{slug}.png",
                        "Ablations and baseline + rescale & shift against the gated frontier (Figs. 8–9)"
                    )
                );
                PlotFrontiers(
                    Path.Combine(folder, plots[^1].File),
                    $"{site}: ablations",
                    shown.Where(r => !r.IsIto && !StudyArms.IsFamily(r.Arm)).ToList(),
                    "loss recovered",
                    r => r.LossRecovered
                );
            }

            if (here.Any(r => StudyArms.IsFamily(r.Arm)))
            {
                var families = shown.Where(r => IsCompared(r.Arm)).ToList();
                plots.Add(
                    (
                        site,
                        $"families-loss-recovered-{slug}.png",
                        "Every family: loss recovered vs L0, with each family's Pareto frontier"
                    )
                );
                PlotFrontiers(
                    Path.Combine(folder, plots[^1].File),
                    $"{site}: every family, loss recovered vs L0",
                    families,
                    "loss recovered (ce_loss_score)",
                    r => r.LossRecovered
                );
                plots.Add((site, $"families-gamma-{slug}.png", "Every family: γ vs L0"));
                PlotPoints(
                    Path.Combine(folder, plots[^1].File),
                    $"{site}: every family, shrinkage",
                    families,
                    "γ (1 = no shrinkage)",
                    r => r.Gamma
                );
            }

            if (here.Any(r => r.IsIto))
            {
                plots.Add(
                    (
                        site,
                        $"ito-{slug}.png",
                        "Inference-time optimisation (gradient pursuit) vs the encoders (Fig. 10)"
                    )
                );
                PlotFrontiers(
                    Path.Combine(folder, plots[^1].File),
                    $"{site}: ITO vs encoders",
                    shown.Where(r => r.IsIto || r.Arm is StudyArms.Gated or StudyArms.Standard).ToList(),
                    "loss recovered",
                    r => r.LossRecovered
                );
            }
        }

        var claims = CheckClaims(config, results);
        var path = Path.Combine(folder, "report.md");
        AtomicFile.WriteAllText(path, Markdown(config, results, claims, plots, device, timing));
        return path;
    }

    /// <summary>Checks the paper's claims site by site.</summary>
    public static IReadOnlyList<ClaimCheck> CheckClaims(StudyConfig config, IReadOnlyList<RunResult> results)
    {
        var checks = new List<ClaimCheck>();
        foreach (var site in config.Sites)
        {
            var gated = results.Where(r => r.Site == site && r.Arm == StudyArms.Gated).ToList();
            var baseline = results.Where(r => r.Site == site && r.Arm == StudyArms.Standard).ToList();
            if (gated.Count == 0 || baseline.Count == 0)
            {
                continue;
            }

            var gg = gated.Where(r => !r.IsDegenerate).OrderBy(r => r.L1).ToList();
            bool near1 = gg.Count > 0 && gg.All(r => Math.Abs(r.Gamma - 1) <= 0.05);
            checks.Add(
                new(
                    site,
                    "Gated SAEs do not shrink: γ ≈ 1",
                    gg.Count == 0 ? "not measured"
                        : near1 ? "holds"
                        : gg.Any(r => Math.Abs(r.Gamma - 1) <= 0.05) ? "partly"
                        : "does not hold",
                    "gated γ "
                        + string.Join(
                            ", ",
                            gg.Select(r =>
                                $"{r.Gamma.ToString("F3", Inv)} (λ {r.L1.ToString(Inv)}, L0 {r.L0:F1})"
                            )
                        )
                        + Excluded(gated)
                )
            );
            var bg = baseline.Where(r => !r.IsDegenerate).OrderBy(r => r.L1).ToList();
            // Holds: every baseline shrinks, more so as λ grows. Partly: most shrink (a barely penalised
            // baseline at the
            // smallest λ may not), or the trend is not monotone. Does not hold: most do not shrink.
            int shrinking = bg.Count(r => r.Gamma < 1);
            bool worseWithLambda = bg.Zip(bg.Skip(1)).All(p => p.Second.Gamma <= p.First.Gamma + 0.01);
            checks.Add(
                new(
                    site,
                    "Baseline SAEs shrink: γ < 1, lower as λ grows",
                    bg.Count == 0 ? "not measured"
                        : shrinking == bg.Count && worseWithLambda ? "holds"
                        : 2 * shrinking >= bg.Count ? "partly"
                        : "does not hold",
                    "baseline γ "
                        + string.Join(
                            ", ",
                            bg.Select(r =>
                                $"{r.Gamma.ToString("F3", Inv)} (λ {r.L1.ToString(Inv)}, L0 {r.L0:F1})"
                            )
                        )
                        + Excluded(baseline)
                )
            );

            var gf = StudyResults.Frontier(gated.Select(r => (r.L0, r.LossRecovered)));
            var bf = StudyResults.Frontier(baseline.Select(r => (r.L0, r.LossRecovered)));
            int compared = 0,
                above = 0;
            var ratios = new List<double>();
            foreach (var b in baseline)
            {
                if (StudyResults.ScoreAt(gf, b.L0) is { } g)
                {
                    compared++;
                    above += g >= b.LossRecovered ? 1 : 0;
                }

                if (StudyResults.L0For(gf, b.LossRecovered) is { } l0)
                {
                    ratios.Add(l0 / b.L0);
                }
            }

            string ratioText =
                ratios.Count == 0
                    ? "no baseline point lies within the gated frontier's range"
                    : $"at equal loss recovered the gated L0 is {ratios.Min():F2}–{ratios.Max():F2}× the baseline's (median {Median(ratios):F2})";
            checks.Add(
                new(
                    site,
                    "Gated Pareto-dominates the baseline (loss recovered vs L0, baseline 1.5× wider)",
                    compared == 0 ? "not measured"
                        : above == compared ? "holds"
                        : above > 0 ? "partly"
                        : "does not hold",
                    $"gated frontier ≥ baseline at {above} of {compared} baseline points in its L0 range; {ratioText}"
                )
            );

            foreach (var arm in new[] { StudyArms.UnfrozenAux, StudyArms.NoRMag, StudyArms.Untied })
            {
                var runs = results.Where(r => r.Site == site && r.Arm == arm).ToList();
                if (runs.Count == 0)
                {
                    continue;
                }

                var gaps = runs.Select(r =>
                        StudyResults.ScoreAt(gf, r.L0) is { } g ? r.LossRecovered - g : (double?)null
                    )
                    .Where(v => v is not null)
                    .Select(v => v!.Value)
                    .ToList();
                checks.Add(
                    new(
                        site,
                        $"Ablation {arm} is slightly worse than gated",
                        gaps.Count == 0 ? "not measured"
                            : gaps.All(g => g <= 0.002) ? "holds"
                            : gaps.Any(g => g <= 0.002) ? "partly"
                            : "does not hold",
                        gaps.Count == 0
                            ? "no point in the gated frontier's L0 range"
                            : $"loss recovered minus the gated frontier at the same L0: {string.Join(", ", gaps.Select(g => g.ToString("+0.0000;-0.0000", Inv)))}"
                    )
                );
            }

            var rescaled = results.Where(r => r.Site == site && r.Arm == StudyArms.RescaleShift).ToList();
            if (rescaled.Count > 0)
            {
                var closed = new List<string>();
                bool fixesShrinkage = rescaled.All(r => Math.Abs(r.Gamma - 1) <= 0.05);
                int partial = 0;
                foreach (var r in rescaled)
                {
                    var b = baseline.FirstOrDefault(x => x.L1 == r.L1);
                    if (
                        b is null
                        || StudyResults.ScoreAt(gf, r.L0) is not { } g
                        || StudyResults.ScoreAt(bf, r.L0) is not { } bs
                        || g <= bs
                    )
                    {
                        continue;
                    }

                    double fraction = (r.LossRecovered - bs) / (g - bs);
                    partial += fraction < 0.9 ? 1 : 0;
                    closed.Add(fraction.ToString("P0", Inv));
                }

                checks.Add(
                    new(
                        site,
                        "Baseline + rescale & shift fixes shrinkage but closes only part of the gap",
                        !fixesShrinkage ? "does not hold"
                            : closed.Count == 0 ? "partly"
                            : partial == closed.Count ? "holds"
                            : "partly",
                        $"γ {string.Join(", ", rescaled.Select(r => r.Gamma.ToString("F3", Inv)))}; gap to the gated frontier closed: {(closed.Count == 0 ? "not measurable (outside both frontiers)" : string.Join(", ", closed))}"
                    )
                );
            }

            var ito = results.Where(r => r.Site == site && r.IsIto).ToList();
            foreach (var group in ito.GroupBy(r => (r.Arm, r.L1)))
            {
                var source = results.FirstOrDefault(r =>
                    r.Site == site && r.Arm == group.Key.Arm[4..] && r.L1 == group.Key.L1
                );
                var enc = group.Key.Arm[4..] == StudyArms.Gated ? gf : bf;
                var points = group
                    .OrderBy(r => r.ItoK)
                    .Select(r => $"k {r.ItoK}: L0 {r.L0:F1}, {r.LossRecovered.ToString("P2", Inv)}")
                    .ToList();
                int better = group.Count(r =>
                    StudyResults.ScoreAt(enc, r.L0) is { } e && r.LossRecovered >= e
                );
                checks.Add(
                    new(
                        site,
                        $"ITO with the {group.Key.Arm[4..]} decoder (λ {group.Key.L1.ToString(Inv)}) traces its own frontier",
                        "measured",
                        $"{string.Join("; ", points)}; at or above the {group.Key.Arm[4..]} encoders' frontier at {better} of {group.Count()} points"
                            + (
                                source is null
                                    ? ""
                                    : $"; the encoder itself: L0 {source.L0:F1}, {source.LossRecovered.ToString("P2", Inv)}"
                            )
                    )
                );
            }

            var itoGated = ito.Where(r => r.Arm == "ito:" + StudyArms.Gated).ToList();
            var itoBaseline = ito.Where(r => r.Arm == "ito:" + StudyArms.Standard).ToList();
            if (itoGated.Count > 0 && itoBaseline.Count > 0)
            {
                // Best dictionary of each kind at each target L0 (the paper compares dictionaries at equal
                // k).
                var ks = itoGated
                    .Select(r => r.ItoK)
                    .Intersect(itoBaseline.Select(r => r.ItoK))
                    .Order()
                    .ToList();
                var pairs = ks.Select(k =>
                        (
                            K: k,
                            G: itoGated.Where(r => r.ItoK == k).Max(r => r.LossRecovered),
                            B: itoBaseline.Where(r => r.ItoK == k).Max(r => r.LossRecovered)
                        )
                    )
                    .ToList();
                int gatedAhead = pairs.Count(p => p.G >= p.B);
                checks.Add(
                    new(
                        site,
                        "Under ITO, gated decoders are (slightly) better dictionaries than baseline decoders",
                        pairs.Count == 0 ? "not measured"
                            : gatedAhead == pairs.Count ? "holds"
                            : gatedAhead > 0 ? "partly"
                            : "does not hold",
                        "best loss recovered at each k, gated vs baseline decoder: "
                            + string.Join(
                                "; ",
                                pairs.Select(p =>
                                    $"k {p.K}: {p.G.ToString("P2", Inv)} vs {p.B.ToString("P2", Inv)}"
                                )
                            )
                    )
                );

                // How far each encoder falls below what ITO gets from the same kind of dictionary at the same
                // L0.
                double? Gap(List<RunResult> itoRuns, List<RunResult> encoders)
                {
                    var frontier = StudyResults.Frontier(itoRuns.Select(r => (r.L0, r.LossRecovered)));
                    var gaps = encoders
                        .Where(r => !r.IsDegenerate)
                        .Select(r =>
                            StudyResults.ScoreAt(frontier, r.L0) is { } f
                                ? f - r.LossRecovered
                                : (double?)null
                        )
                        .Where(v => v is not null)
                        .Select(v => v!.Value)
                        .ToList();
                    return gaps.Count == 0 ? null : Median(gaps);
                }

                var gatedGap = Gap(itoGated, gated);
                var baselineGap = Gap(itoBaseline, baseline);
                checks.Add(
                    new(
                        site,
                        "The encoder-vs-ITO gap is smaller for gated than for the baseline",
                        gatedGap is null || baselineGap is null ? "not measured"
                            : gatedGap < baselineGap ? "holds"
                            : "does not hold",
                        gatedGap is null || baselineGap is null
                            ? "no encoder point lies within the ITO frontiers' L0 range"
                            : $"median (ITO frontier − encoder) loss recovered at the encoders' L0: gated {gatedGap.Value.ToString("+0.0000;-0.0000", Inv)}, baseline {baselineGap.Value.ToString("+0.0000;-0.0000", Inv)}"
                    )
                );
            }
        }

        return checks;
    }

    /// <summary>Whether an arm takes part in the cross-family comparison: gated, standard and the
    /// families (not the ablations, rescale &amp; shift or ITO).</summary>
    private static bool IsCompared(string arm) =>
        arm is StudyArms.Gated or StudyArms.Standard || StudyArms.IsFamily(arm);

    /// <summary>
    /// The cross-family verdict table: per site with a family arm, one row per compared arm (gated,
    /// standard, the families) — its best loss recovered at L0 ≤ <see cref="StudyConfig.VerdictL0"/>, mean
    /// γ, measured training time, its SAEs on the joint Pareto frontier and the arms that dominate all of
    /// them. An SAE is dominated by another when that one has L0 ≤ and loss recovered ≥ with one of them
    /// strict; an arm is Pareto-dominated by another arm when each of its SAEs is dominated by one of that
    /// arm's.
    /// </summary>
    public static IReadOnlyList<FamilyVerdict> CompareFamilies(
        StudyConfig config,
        IReadOnlyList<RunResult> results
    )
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(results);
        double budget = config.VerdictL0 ?? StudyConfig.DefaultVerdictL0;
        static bool Beats(RunResult b, RunResult a) =>
            b.L0 <= a.L0
            && b.LossRecovered >= a.LossRecovered
            && (b.L0 < a.L0 || b.LossRecovered > a.LossRecovered);
        var rows = new List<FamilyVerdict>();
        foreach (var site in config.Sites)
        {
            var here = results
                .Where(r =>
                    r.Site == site
                    && !r.IsIto
                    && IsCompared(r.Arm)
                    && double.IsFinite(r.L0)
                    && double.IsFinite(r.LossRecovered)
                )
                .ToList();
            if (!here.Any(r => StudyArms.IsFamily(r.Arm)))
            {
                continue;
            }

            var arms = here.Select(r => r.Arm).Distinct().OrderBy(a => StudyArms.Known.ToList().IndexOf(a));
            foreach (var arm in arms)
            {
                var mine = here.Where(r => r.Arm == arm).OrderBy(r => r.L0).ToList();
                var others = here.Where(r => r.Arm != arm).ToList();
                var alive = mine.Where(r => !r.IsDegenerate && double.IsFinite(r.Gamma)).ToList();
                var dominatedBy = others
                    .Select(r => r.Arm)
                    .Distinct()
                    .Where(o => mine.All(a => others.Any(b => b.Arm == o && Beats(b, a))))
                    .OrderBy(o => StudyArms.Known.ToList().IndexOf(o))
                    .ToList();
                rows.Add(
                    new FamilyVerdict(
                        site,
                        arm,
                        mine[0].DSae,
                        mine.Count,
                        mine[0].L0,
                        mine[^1].L0,
                        mine.Where(r => r.L0 <= budget).MaxBy(r => r.LossRecovered),
                        alive.Count == 0 ? double.NaN : alive.Average(r => r.Gamma),
                        mine.Average(r => r.TrainSeconds),
                        mine[0].TrainTokens,
                        mine.Count(a => !others.Any(b => Beats(b, a))),
                        dominatedBy
                    )
                );
            }
        }

        return rows;
    }

    /// <summary>The evidence suffix naming collapsed runs left out of a γ claim, with the numbers that show
    /// it.</summary>
    private static string Excluded(IEnumerable<RunResult> runs)
    {
        var bad = runs.Where(r => r.IsDegenerate).OrderBy(r => r.L1).ToList();
        return bad.Count == 0
            ? ""
            : "; left out as collapsed (explained variance ≤ 0): "
                + string.Join(
                    ", ",
                    bad.Select(r =>
                        string.Create(
                            Inv,
                            $"λ {r.L1} (L0 {r.L0:F1}, explained variance {r.ExplainedVariance:F3}, γ {r.Gamma:F3})"
                        )
                    )
                );
    }

    private static double Median(List<double> values)
    {
        var s = values.Order().ToList();
        return s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2;
    }

    private static string Markdown(
        StudyConfig config,
        IReadOnlyList<RunResult> results,
        IReadOnlyList<ClaimCheck> claims,
        List<(string Site, string File, string Caption)> plots,
        string device,
        StudyTiming? timing
    )
    {
        var sb = new StringBuilder();
        sb.AppendLine("# Gated vs baseline SAEs: reproduction report").AppendLine();
        sb.AppendLine(
            string.Create(
                Inv,
                $"Generated {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC by `ilgpu-sae` on {device}."
            )
        );
        if (timing is { } t)
        {
            sb.AppendLine(
                string.Create(
                    Inv,
                    $"Wall time of this invocation: {t.Wall.TotalMinutes:0.0} min (language model, training, evaluation, ITO and this report; the build and start-up not included){(t.Resumed > 0 ? $"; {t.Resumed} of {t.Units} units were finished by an earlier invocation and only read back" : "")}."
                )
            );
        }
        sb.AppendLine(
            string.Create(
                Inv,
                $"Model `{config.Model}`; training text `{config.TrainCorpus}`, evaluation text `{config.EvalCorpus}` ({config.EvalTokens} tokens, contexts of {config.Context})."
            )
        );
        sb.AppendLine(
            string.Create(
                Inv,
                $"Each SAE: {config.TrainTokens} training tokens, batch {config.BatchSize} ({config.TrainTokens / config.BatchSize} steps), lr {config.LearningRate}{(config.DecaySchedule == Training.LrDecay.None ? "" : $" decayed ({config.LrDecay}) to 0 from {(config.LrDecayStart ?? 0.8) * 100:0} % of the steps")}, paper recipe (unit-norm decoder, Adam β1 = 0, frozen aux decoder), activations normalised to E‖x‖ = √d (folded into the saved weights). Gated width {config.Expansion}× the site, baseline {config.BaselineWidthFactor}× wider (equal compute)."
            )
        );
        sb.AppendLine(
                "Loss recovered = (CE_zero − CE_sae) / (CE_zero − CE_clean) over every next-token prediction; BOS positions keep their clean activations."
            )
            .AppendLine();
        sb.AppendLine("## The paper's claims against these numbers").AppendLine();
        sb.AppendLine("| site | claim | verdict | evidence |").AppendLine("|---|---|---|---|");
        foreach (var c in claims)
        {
            sb.AppendLine($"| `{c.Site}` | {c.Claim} | **{c.Verdict}** | {c.Evidence} |");
        }

        sb.AppendLine();
        FamiliesSection(sb, config, results, plots);
        foreach (var site in config.Sites)
        {
            var here = results
                .Where(r => r.Site == site)
                .OrderBy(r => r.IsIto)
                .ThenBy(r =>
                    StudyArms.Known.ToList().IndexOf(r.Arm.Replace("ito:", "", StringComparison.Ordinal))
                )
                .ThenBy(r => r.L1)
                .ThenBy(r => r.K)
                .ThenBy(r => r.ItoK)
                .ToList();
            if (here.Count == 0)
            {
                continue;
            }

            sb.AppendLine($"## `{site}`").AppendLine();
            var first = here[0];
            sb.AppendLine(
                    string.Create(
                        Inv,
                        $"Clean CE {first.CeClean:F4} nats, zero-ablated {first.CeWithAblation:F4}."
                    )
                )
                .AppendLine();
            sb.AppendLine(
                here.Any(r => r.K > 0)
                    ? "| arm | λ or k | ITO k | d_sae | L0 | loss recovered | KL score | CE with SAE | γ | alive | expl. var. | train s |"
                    : "| arm | λ | ITO k | d_sae | L0 | loss recovered | KL score | CE with SAE | γ | alive | expl. var. | train s |"
            );
            sb.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            foreach (var r in here)
            {
                string F(double v, string f) => double.IsNaN(v) ? "–" : v.ToString(f, Inv);
                sb.AppendLine(
                    $"| {r.Arm}{(r.IsDegenerate ? " †" : "")} | {(r.K > 0 ? $"k {r.K}" : r.L1.ToString(Inv))} | {(r.IsIto ? r.ItoK.ToString(Inv) : "–")} | {r.DSae} | {F(r.L0, "F1")} | {F(r.LossRecovered, "P2")} | {F(r.KlScore, "P2")} | {F(r.CeWithSae, "F4")} | {F(r.Gamma, "F3")} | {F(r.FracAlive, "P0")} | {F(r.ExplainedVariance, "F3")} | {F(r.TrainSeconds, "F0")} |"
                );
            }

            sb.AppendLine();
            if (here.Any(r => r.IsDegenerate))
            {
                sb.AppendLine(
                        "† Collapsed: the reconstruction explains no variance (worse than predicting the batch mean) — λ is too large for this site, "
                            + "nearly every feature is dead and the L1 gradient has pulled b_dec off the data, so γ is meaningless. "
                            + "Listed here, left out of the plots and the γ claims."
                    )
                    .AppendLine();
            }

            foreach (
                var (_, file, caption) in plots.Where(p =>
                    p.Site == site && !p.File.StartsWith("families-", StringComparison.Ordinal)
                )
            )
            {
                sb.AppendLine($"![{caption}]({file})").AppendLine().AppendLine($"*{caption}.*").AppendLine();
            }
        }

        sb.AppendLine("## Files and how to re-run").AppendLine();
        sb.AppendLine(
                "`results.csv` / `results.json` hold every run; `runs/<site>/<arm>/l1-<λ>/` each SAE (SAELens layout) with `metrics.jsonl` and `result.json`; `ito/` the ITO points; `acts/` the activation caches; `study.json` the settings. Re-running the same command skips finished runs."
            )
            .AppendLine();
        sb.AppendLine("```bash");
        sb.AppendLine(
            "dotnet run --project src/IlgpuSae.Cli -c Release -- reproduce            # the reduced default study (this report, when it is the default)"
        );
        sb.AppendLine(
            "dotnet run --project src/IlgpuSae.Cli -c Release -- reproduce --full     # the full study on the bundled model: 4 sites, every arm, 5 λ, ITO"
        );
        sb.AppendLine(
            "dotnet run --project src/IlgpuSae.Cli -c Release -- sweep --config study.json --out DIR   # any model, sites, arms, λ"
        );
        sb.AppendLine("```");
        return sb.ToString();
    }

    /// <summary>The report's cross-family section (only when a family arm ran): what "matched" means, the
    /// recipes, and the verdict table per site with its two plots.</summary>
    private static void FamiliesSection(
        StringBuilder sb,
        StudyConfig config,
        IReadOnlyList<RunResult> results,
        List<(string Site, string File, string Caption)> plots
    )
    {
        var verdicts = CompareFamilies(config, results);
        if (verdicts.Count == 0)
        {
            return;
        }

        double budget = config.VerdictL0 ?? StudyConfig.DefaultVerdictL0;
        long steps = config.TrainTokens / config.BatchSize;
        sb.AppendLine("## Every family on one Pareto plot").AppendLine();
        sb.AppendLine(
                string.Create(
                    Inv,
                    $"**Matched by dictionary size and by compute.** At each site every SAE reads the same activation cache in the same order: {steps * config.BatchSize} training tokens ({steps} steps of {config.BatchSize}), peak lr {config.LearningRate}, seed {config.Seed}, activations normalised to E‖x‖ = √d. "
                )
                    + string.Create(
                        Inv,
                        $"Gated and the four families have the same dictionary size M = {config.Expansion}× the site width; the baseline (standard) is {config.BaselineWidthFactor}× wider, the paper's equal-compute width for a ReLU SAE against a gated one (set `baseline_width_factor` to 1 to match it by size instead). "
                    )
                    + "Equal tokens and width are not equal arithmetic — a gated encoder does two products, TopK a selection, Matryoshka one loss per level — so the table reports the measured training time per SAE on this device (train s), which is the compute each point cost."
            )
            .AppendLine();
        var jumpTheta = (config.JumpReluThresholdInit ?? 0.01).ToString(Inv);
        bool anyTopK = results.Any(r => StudyArms.IsTopKFamily(r.Arm));
        bool anyJumpRelu = results.Any(r => r.Arm == StudyArms.JumpRelu);
        sb.AppendLine(
                "**Recipes.** gated and standard: the paper's (above). "
                    + (
                        anyTopK
                            ? string.Create(
                                Inv,
                                $"topk, batchtopk, matryoshka: dictionary_learning's (Adam β1 0.9, gradient clip 1, unit-norm decoder, b_dec at the geometric median, AuxK with k_aux = d/2, α = 1/32 and a 10 M-token dead window, no sparsity penalty: k is the sparsity), k = {string.Join(", ", config.KTopK ?? [])}; batchtopk and matryoshka estimate their inference threshold (EMA β 0.999) from step {Math.Min(1000, steps / 2)} and are evaluated as the JumpReLU SAE they are saved as; matryoshka's nested widths are M/8, M/4, M/2, M with weights 1/G² each. "
                            )
                            : ""
                    )
                    + (
                        anyJumpRelu
                            ? string.Create(
                                Inv,
                                $"jumprelu: SAELens's (Adam β1 0.9, no lr warm-up, gradient clip 1, log θ, bandwidth ε 0.05, L0 penalty λ·Σ H(pre − θ)) with θ₀ = {jumpTheta}{(config.JumpReluThresholdInit is null ? "" : " (SAELens: 0.01; `jumprelu_threshold_init`)")}, λ = {string.Join(", ", (config.L0JumpRelu ?? []).Select(l => l.ToString(Inv)))}. "
                            )
                            : ""
                    )
                    + "Every family keeps the study's learning rate, λ warm-up and training length; these runs are short, so a family whose default recipe expects millions of tokens (AuxK's dead window, JumpReLU's slowly moving θ) may not have converged."
            )
            .AppendLine();
        foreach (var group in verdicts.GroupBy(v => v.Site))
        {
            sb.AppendLine($"### `{group.Key}`").AppendLine();
            sb.AppendLine(
                string.Create(
                    Inv,
                    $"| family | d_sae | SAEs | L0 range | best loss recovered at L0 ≤ {budget:G4} | mean γ | train s per SAE | on the joint frontier | Pareto-dominated |"
                )
            );
            sb.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---|");
            foreach (var v in group)
            {
                string best = v.Best is { } b
                    ? string.Create(
                        Inv,
                        $"{b.LossRecovered.ToString("P2", Inv)} ({(b.K > 0 ? $"k {b.K}" : $"λ {b.L1}")}, L0 {b.L0:F1})"
                    )
                    : "– (no SAE that sparse)";
                sb.AppendLine(
                    string.Create(
                        Inv,
                        $"| {v.Arm} | {v.DSae} | {v.Points} | {v.L0Min:F1}–{v.L0Max:F1} | {best} | {(double.IsNaN(v.MeanGamma) ? "–" : v.MeanGamma.ToString("F3", Inv))} | {v.MeanTrainSeconds:F1} | {v.FrontierPoints} of {v.Points} | {(v.DominatedBy.Count == 0 ? "no" : "yes, by " + string.Join(", ", v.DominatedBy))} |"
                    )
                );
            }

            sb.AppendLine();
            var leader = group.Where(v => v.Best is not null).MaxBy(v => v.Best!.LossRecovered);
            sb.AppendLine(
                    leader is null
                        ? string.Create(Inv, $"No SAE at this site has L0 ≤ {budget:G4}.")
                        : string.Create(
                            Inv,
                            $"Best at L0 ≤ {budget:G4}: **{leader.Arm}** ({leader.Best!.LossRecovered.ToString("P2", Inv)} at L0 {leader.Best.L0:F1}). "
                        )
                            + "On the joint frontier: an SAE no SAE of another family beats on both L0 and loss recovered. One seed per point."
                )
                .AppendLine();
            foreach (
                var (_, file, caption) in plots.Where(p =>
                    p.Site == group.Key && p.File.StartsWith("families-", StringComparison.Ordinal)
                )
            )
            {
                sb.AppendLine($"![{caption}]({file})").AppendLine().AppendLine($"*{caption}.*").AppendLine();
            }
        }
    }

    private static void PlotFrontiers(
        string path,
        string title,
        IReadOnlyList<RunResult> runs,
        string yLabel,
        Func<RunResult, double> y
    )
    {
        var plot = NewPlot(title, yLabel);
        foreach (var group in runs.GroupBy(r => r.Arm).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            var points = group
                .Select(r => (r.L0, Score: y(r)))
                .Where(p => p.L0 > 0 && double.IsFinite(p.Score))
                .ToList();
            if (points.Count == 0)
            {
                continue;
            }

            var color = Color.FromHex(Colors.GetValueOrDefault(group.Key, "#000000"));
            var scatter = plot.Add.ScatterPoints(
                points.Select(p => Math.Log10(p.L0)).ToArray(),
                points.Select(p => p.Score).ToArray(),
                color
            );
            scatter.MarkerSize = 8;
            scatter.MarkerShape = group.Key.StartsWith("ito:", StringComparison.Ordinal)
                ? MarkerShape.OpenTriangleUp
                : Markers.GetValueOrDefault(group.Key, MarkerShape.FilledCircle);
            scatter.LegendText = group.Key;
            var frontier = StudyResults.Frontier(points);
            if (frontier.Count > 1)
            {
                var line = plot.Add.ScatterLine(
                    frontier.Select(p => Math.Log10(p.L0)).ToArray(),
                    frontier.Select(p => p.Score).ToArray(),
                    color
                );
                line.LineWidth = 2;
                line.LinePattern = group.Key.StartsWith("ito:", StringComparison.Ordinal)
                    ? LinePattern.Dashed
                    : LinePattern.Solid;
            }
        }

        Save(plot, path, runs.Select(r => r.L0));
    }

    private static void PlotPoints(
        string path,
        string title,
        IReadOnlyList<RunResult> runs,
        string yLabel,
        Func<RunResult, double> y
    )
    {
        var plot = NewPlot(title, yLabel);
        foreach (var group in runs.GroupBy(r => r.Arm).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            var points = group.Where(r => r.L0 > 0 && double.IsFinite(y(r))).OrderBy(r => r.L0).ToList();
            if (points.Count == 0)
            {
                continue;
            }

            var s = plot.Add.Scatter(
                points.Select(r => Math.Log10(r.L0)).ToArray(),
                points.Select(y).ToArray(),
                Color.FromHex(Colors.GetValueOrDefault(group.Key, "#000000"))
            );
            s.MarkerSize = 8;
            if (Markers.TryGetValue(group.Key, out var shape))
            {
                s.MarkerShape = shape;
            }

            s.LegendText = group.Key;
        }

        var one = plot.Add.HorizontalLine(1);
        one.LineColor = Colors2.Gray;
        one.LinePattern = LinePattern.Dotted;
        Save(plot, path, runs.Select(r => r.L0));
    }

    private static Plot NewPlot(string title, string yLabel)
    {
        var plot = new Plot();
        PlotFonts.Apply(plot);
        plot.Title(title);
        plot.YLabel(yLabel);
        plot.XLabel("L0 (log scale)");
        plot.ShowLegend(Alignment.LowerRight);
        return plot;
    }

    private static void Save(Plot plot, string path, IEnumerable<double> l0s)
    {
        // Log-scaled x axis: values are plotted as log10(L0) and labelled at 1-2-5 steps.
        var values = l0s.Where(v => v > 0).ToList();
        if (values.Count > 0)
        {
            var ticks = new ScottPlot.TickGenerators.NumericManual();
            int lo = (int)Math.Floor(Math.Log10(values.Min())),
                hi = (int)Math.Ceiling(Math.Log10(values.Max()));
            for (int e = lo; e <= hi; e++)
            {
                foreach (var m in new[] { 1, 2, 5 })
                {
                    double v = m * Math.Pow(10, e);
                    ticks.AddMajor(Math.Log10(v), v.ToString("G4", Inv));
                }
            }

            plot.Axes.Bottom.TickGenerator = ticks;
        }

        plot.SavePng(path, 800, 520);
    }

    private static class Colors2
    {
        public static Color Gray => Color.FromHex("#808080");
    }
}
