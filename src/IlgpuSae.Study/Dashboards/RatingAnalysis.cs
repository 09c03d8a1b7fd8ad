using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using IlgpuSae.Data;
using IlgpuSae.IO;
using ScottPlot;

namespace IlgpuSae.Study.Dashboards;

/// <summary>Label counts and mean of one SAE.</summary>
/// <param name="Sae">Its label.</param>
/// <param name="Yes">Yes ratings.</param>
/// <param name="Maybe">Maybe ratings.</param>
/// <param name="No">No ratings.</param>
/// <param name="Mean">Mean coded label.</param>
public sealed record SaeLabels(string Sae, int Yes, int Maybe, int No, double Mean)
{
    /// <summary>Ratings.</summary>
    public int N => Yes + Maybe + No;
}

/// <summary>The comparison of two SAEs.</summary>
/// <param name="A">First SAE.</param>
/// <param name="B">Second SAE.</param>
/// <param name="Difference">mean(A) − mean(B).</param>
/// <param name="CiLow">5th percentile of the bootstrap differences.</param>
/// <param name="CiHigh">95th percentile.</param>
/// <param name="PValue">Two-sided permutation-test p-value.</param>
public sealed record PairComparison(
    string A,
    string B,
    double Difference,
    double CiLow,
    double CiHigh,
    double PValue
);

/// <summary>
/// Unblinds a rating study and compares the SAEs as the paper's §4.3 does: labels coded Yes = 1, Maybe = 0.5,
/// No = 0; one unit per (rater, feature) — the rater's latest rating; per SAE the label counts and mean; per
/// pair of SAEs the mean difference with a 90 % bootstrap confidence interval (the ratings of each SAE
/// resampled with replacement, 10 000 times, 5th–95th percentile) and a two-sided permutation-test p-value
/// (the SAE labels of the pooled ratings shuffled 10 000 times; p = (1 + #|Δ*| ≥ |Δ|) / (1 + 10 000)).
/// </summary>
public static class RatingAnalysis
{
    /// <summary>Resamples and permutations.</summary>
    public const int Resamples = 10_000;

    /// <summary>Analyses the study in <paramref name="folder"/> with the key at <paramref name="keyPath"/>
    /// (default: the study's key.json), writes analysis.md, analysis.json and labels.png, and returns the
    /// Markdown.</summary>
    /// <exception cref="InvalidDataException">No key, or a key that does not cover the study.</exception>
    public static (
        IReadOnlyList<SaeLabels> Saes,
        IReadOnlyList<PairComparison> Pairs,
        string Markdown
    ) Analyze(string folder, string? keyPath = null, ulong seed = 0)
    {
        var ids = RatingStudy.ReadIds(folder);
        keyPath ??= Path.Combine(folder, RatingStudy.KeyFile);
        if (!File.Exists(keyPath))
        {
            throw new InvalidDataException(
                $"{folder} has no key ({keyPath} does not exist), so the ratings cannot be unblinded; give the key file with --key FILE."
            );
        }

        JsonNode key;
        try
        {
            key = JsonNode.Parse(File.ReadAllText(keyPath))!;
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{keyPath} is not a study key: {e.Message}", e);
        }

        var saeOf = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (id, entry) in key["features"]?.AsObject() ?? [])
        {
            saeOf[id] = entry?["sae"]?.GetValue<string>() ?? "";
        }

        var missing = ids.Where(i => !saeOf.ContainsKey(i)).ToList();
        if (missing.Count > 0)
        {
            throw new InvalidDataException(
                $"{keyPath} is not the key of this study: it lacks {missing.Count} of its features (e.g. {missing[0]})."
            );
        }

        var saes = key["saes"]!.AsArray().Select(s => s!["label"]!.GetValue<string>()).ToList();
        var log = RatingLog.Open(Path.Combine(folder, RatingStudy.RatingsFile));
        var latest = RatingLog.Latest(log.All.Where(r => saeOf.ContainsKey(r.Feature))).Values.ToList();
        var coded = saes.ToDictionary(
            s => s,
            s => latest.Where(r => saeOf[r.Feature] == s).Select(r => RatingLog.Coding[r.Label]).ToArray()
        );
        var perSae = saes.Select(s =>
            {
                var rs = latest.Where(r => saeOf[r.Feature] == s).ToList();
                return new SaeLabels(
                    s,
                    rs.Count(r => r.Label == "yes"),
                    rs.Count(r => r.Label == "maybe"),
                    rs.Count(r => r.Label == "no"),
                    rs.Count > 0 ? coded[s].Average() : double.NaN
                );
            })
            .ToList();
        var pairs = new List<PairComparison>();
        for (int a = 0; a < saes.Count; a++)
        {
            for (int b = a + 1; b < saes.Count; b++)
            {
                pairs.Add(
                    Compare(
                        saes[a],
                        coded[saes[a]],
                        saes[b],
                        coded[saes[b]],
                        SplitMix64.Mix(seed, (ulong)a, (ulong)b)
                    )
                );
            }
        }

        var raters = latest.Select(r => r.Rater).Distinct().Count();
        var md = Markdown(perSae, pairs, ids.Count, latest.Count, raters, log);
        AtomicFile.WriteAllText(Path.Combine(folder, "analysis.md"), md);
        var json = new JsonObject
        {
            ["label_coding"] = new JsonObject
            {
                ["yes"] = 1.0,
                ["maybe"] = 0.5,
                ["no"] = 0.0,
            },
            ["unit"] = "the latest rating of each (rater, feature)",
            ["features"] = ids.Count,
            ["ratings"] = latest.Count,
            ["raters"] = raters,
            ["resamples"] = Resamples,
            ["per_sae"] = JsonSerializer.SerializeToNode(perSae, DashboardJson.Options),
            ["pairs"] = JsonSerializer.SerializeToNode(pairs, DashboardJson.Options),
            ["paper"] =
                "Gated − baseline mean label difference 0.13, 90 % CI [0, 0.26] (Rajamanoharan et al. 2024, §4.3)",
        };
        AtomicFile.WriteAllText(
            Path.Combine(folder, "analysis.json"),
            json.ToJsonString(new() { WriteIndented = true })
        );
        Plot(perSae, Path.Combine(folder, "labels.png"));
        return (perSae, pairs, md);
    }

    /// <summary>Mean difference of two samples of coded labels, its bootstrap 90 % CI and permutation
    /// p-value.</summary>
    public static PairComparison Compare(string a, double[] xa, string b, double[] xb, ulong seed)
    {
        ArgumentNullException.ThrowIfNull(xa);
        ArgumentNullException.ThrowIfNull(xb);
        if (xa.Length == 0 || xb.Length == 0)
        {
            return new PairComparison(a, b, double.NaN, double.NaN, double.NaN, double.NaN);
        }

        double diff = xa.Average() - xb.Average();
        var rng = new SplitMix64(seed);
        var boot = new double[Resamples];
        for (int t = 0; t < Resamples; t++)
        {
            double sa = 0,
                sb = 0;
            for (int i = 0; i < xa.Length; i++)
            {
                sa += xa[rng.NextInt(xa.Length)];
            }

            for (int i = 0; i < xb.Length; i++)
            {
                sb += xb[rng.NextInt(xb.Length)];
            }

            boot[t] = sa / xa.Length - sb / xb.Length;
        }

        Array.Sort(boot);
        var pooled = xa.Concat(xb).ToArray();
        double total = pooled.Sum();
        int extreme = 0;
        for (int t = 0; t < Resamples; t++)
        {
            // A random split of the pooled labels into groups of the same sizes (partial Fisher–Yates).
            double s = 0;
            for (int i = 0; i < xa.Length; i++)
            {
                int j = i + rng.NextInt(pooled.Length - i);
                (pooled[i], pooled[j]) = (pooled[j], pooled[i]);
                s += pooled[i];
            }

            double d = s / xa.Length - (total - s) / xb.Length;
            if (Math.Abs(d) >= Math.Abs(diff) - 1e-12)
            {
                extreme++;
            }
        }

        return new PairComparison(
            a,
            b,
            diff,
            Quantile(boot, 0.05),
            Quantile(boot, 0.95),
            (extreme + 1.0) / (Resamples + 1.0)
        );
    }

    private static double Quantile(double[] sorted, double q)
    {
        double at = q * (sorted.Length - 1);
        int lo = (int)Math.Floor(at);
        int hi = Math.Min(lo + 1, sorted.Length - 1);
        return sorted[lo] + (at - lo) * (sorted[hi] - sorted[lo]);
    }

    private static string F(double v) =>
        double.IsNaN(v) ? "–" : v.ToString("0.000", CultureInfo.InvariantCulture);

    private static string Markdown(
        List<SaeLabels> saes,
        List<PairComparison> pairs,
        int features,
        int ratings,
        int raters,
        RatingLog log
    )
    {
        var sb = new StringBuilder();
        sb.AppendLine("# Rating study: unblinded results");
        sb.AppendLine();
        sb.AppendLine(
            CultureInfo.InvariantCulture,
            $"{ratings} ratings of {features} features by {raters} rater(s). Label coding: Yes = 1, Maybe = 0.5, No = 0 (as the paper). Unit: each rater's latest rating of a feature (earlier revisions stay in ratings.jsonl)."
        );
        if (log.Skipped > 0)
        {
            sb.AppendLine();
            sb.AppendLine(
                CultureInfo.InvariantCulture,
                $"Note: {log.Skipped} unreadable line(s) of ratings.jsonl were skipped."
            );
        }

        sb.AppendLine();
        sb.AppendLine("| SAE | ratings | Yes | Maybe | No | mean label |");
        sb.AppendLine("|---|---|---|---|---|---|");
        foreach (var s in saes)
        {
            sb.AppendLine(
                CultureInfo.InvariantCulture,
                $"| {s.Sae} | {s.N} | {s.Yes} | {s.Maybe} | {s.No} | {F(s.Mean)} |"
            );
        }

        sb.AppendLine();
        sb.AppendLine("| A | B | mean(A) − mean(B) | 90 % bootstrap CI | permutation p |");
        sb.AppendLine("|---|---|---|---|---|");
        foreach (var p in pairs)
        {
            sb.AppendLine(
                CultureInfo.InvariantCulture,
                $"| {p.A} | {p.B} | {F(p.Difference)} | [{F(p.CiLow)}, {F(p.CiHigh)}] | {F(p.PValue)} |"
            );
        }

        sb.AppendLine();
        sb.AppendLine(
            CultureInfo.InvariantCulture,
            $"Bootstrap: the ratings of each SAE resampled with replacement {Resamples} times (5th–95th percentile). Permutation test: the SAE labels of the pooled ratings shuffled {Resamples} times, two-sided."
        );
        sb.AppendLine();
        sb.AppendLine(
            "The paper (§4.3, Fig. 3) reports Gated − baseline 0.13, 90 % CI [0, 0.26]: the two are comparably interpretable. "
                + "These numbers come from this study's raters only; nothing here is a verdict on that claim unless enough raters rated enough features."
        );
        sb.AppendLine();
        sb.AppendLine("![labels per SAE](labels.png)");
        return sb.ToString();
    }

    private static void Plot(List<SaeLabels> saes, string path)
    {
        var plot = new Plot();
        PlotFonts.Apply(plot);
        var colors = new[]
        {
            new Color(0x2E, 0x8B, 0x57),
            new Color(0xE0, 0xA1, 0x00),
            new Color(0xC0, 0x39, 0x2B),
        };
        string[] names = ["Yes", "Maybe", "No"];
        var bars = new List<Bar>();
        for (int s = 0; s < saes.Count; s++)
        {
            int[] counts = [saes[s].Yes, saes[s].Maybe, saes[s].No];
            for (int l = 0; l < 3; l++)
            {
                bars.Add(
                    new Bar
                    {
                        Position = s * 4 + l,
                        Value = saes[s].N > 0 ? counts[l] / (double)saes[s].N : 0,
                        FillColor = colors[l],
                    }
                );
            }
        }

        plot.Add.Bars(bars);
        for (int l = 0; l < 3; l++)
        {
            plot.Legend.ManualItems.Add(new LegendItem { LabelText = names[l], FillColor = colors[l] });
        }

        var ticks = new ScottPlot.TickGenerators.NumericManual();
        for (int s = 0; s < saes.Count; s++)
        {
            ticks.AddMajor(s * 4 + 1, $"{saes[s].Sae} (n = {saes[s].N})");
        }

        plot.Axes.Bottom.TickGenerator = ticks;
        plot.Axes.Margins(bottom: 0);
        plot.Axes.SetLimitsY(0, 1);
        plot.YLabel("fraction of ratings");
        plot.Title("Interpretability ratings per SAE (blinded)");
        plot.ShowLegend(Alignment.UpperRight);
        PlotFonts.Apply(plot);
        plot.SavePng(path, 800, 480);
    }
}
