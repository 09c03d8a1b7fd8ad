using System.CommandLine;
using IlgpuSae.Study;

namespace IlgpuSae.Cli.Commands;

/// <summary><c>reproduce</c>: the paper's study on the bundled model (the main job).</summary>
internal static class ReproduceCommand
{
    public static Command Create()
    {
        var full = new Option<bool>("--full")
        {
            Description =
                "Run the full-size study (4 sites, every arm, 5 λ, ITO; about an hour on 2 cores with PoCL) instead of the reduced default (about 2 minutes on 2 cores with PoCL, about 20 on ILGPU's CPU accelerator, measured 2026-12-02).",
        };
        var families = new Option<bool>("--families")
        {
            Description =
                $"Also train the other SAE families ({string.Join(", ", StudyArms.Families)}) at the gated width on the same sites and tokens (k {string.Join(",", StudyConfig.DefaultKTopK)}; jumprelu L0 coefficient {string.Join(",", StudyConfig.DefaultL0JumpRelu.Select(l => l.ToString(System.Globalization.CultureInfo.InvariantCulture)))}, θ₀ {StudyConfig.DefaultJumpReluThresholdInit}) and add every family to one Pareto plot per site with a verdict table; the output folder gets a -families suffix. Off by default (it triples the reduced study's training time).",
        };
        var data = new Option<string?>("--data")
        {
            Description =
                "The bundled data folder (default: the data/ folder of this repository, found upwards from the current directory).",
        };
        var ratingStudy = new Option<bool>("--rating-study")
        {
            Description =
                "Also create the paper's blinded rating study (§4.3) from the gated and baseline SAEs at the first site whose L0 are closest (20 alive features each) in OUT/rating-study; the report says how to serve it.",
        };
        var output = new Option<string?>("--out")
        {
            Description =
                "Output folder (default: runs/reproduction, or runs/reproduction-full; with --families runs/reproduction-families or runs/reproduction-full-families).",
        };
        var command = new Command(
            "reproduce",
            "Reproduce the Gated SAE paper on the bundled model: train gated and baseline SAEs over λ at several sites, evaluate loss recovered, γ and ITO, and write a report with plots."
        )
        {
            full,
            families,
            ratingStudy,
            data,
            output,
        };
        command.SetAction(
            (parse, cancel) =>
                Task.FromResult(
                    CommonOptions.Guard(() =>
                    {
                        var folder =
                            parse.GetValue(data)
                            ?? FindData()
                            ?? throw new ArgumentException(
                                "The bundled data folder (data/lm, data/corpus) was not found above the current directory; pass --data DIR."
                            );
                        var config = parse.GetValue(full)
                            ? StudyConfig.Full(folder)
                            : StudyConfig.Reduced(folder);
                        bool withFamilies = parse.GetValue(families);
                        if (withFamilies)
                        {
                            config = config.WithFamilies();
                        }

                        var outDir =
                            parse.GetValue(output)
                            ?? Path.Combine(
                                "runs",
                                (parse.GetValue(full) ? "reproduction-full" : "reproduction")
                                    + (withFamilies ? "-families" : "")
                            );
                        return StudyConsole.Run(
                            parse,
                            config,
                            outDir,
                            cancel,
                            parse.GetValue(ratingStudy)
                                ? (device, results) =>
                                    CreateRatingStudy(device, config, results, outDir, cancel)
                                : null
                        );
                    })
                )
        );
        return command;
    }

    /// <summary>
    /// Creates the §4.3 rating study from the gated and baseline SAEs of the first site: the pair (one λ
    /// each) whose L0 are closest in log scale, 20 alive features each and dashboards over 8192 held-out
    /// tokens by default; returns the report section that says how to serve and analyze it.
    /// </summary>
    internal static string CreateRatingStudy(
        IlgpuSae.Backends.SaeDevice device,
        StudyConfig config,
        IReadOnlyList<RunResult> results,
        string outDir,
        CancellationToken cancel,
        int perSae = 20,
        long tokens = 8192
    )
    {
        var site = config.Sites[0];
        var gated = results
            .Where(r => r.Site == site && r.Arm == StudyArms.Gated && !r.IsIto && r.L0 > 0)
            .ToList();
        var baseline = results
            .Where(r => r.Site == site && r.Arm == StudyArms.Standard && !r.IsIto && r.L0 > 0)
            .ToList();
        if (gated.Count == 0 || baseline.Count == 0)
        {
            throw new InvalidOperationException(
                $"--rating-study needs a gated and a baseline SAE at {site}; the study has {gated.Count} and {baseline.Count}."
            );
        }

        var (g, b) = gated
            .SelectMany(x => baseline.Select(y => (x, y)))
            .MinBy(p => Math.Abs(Math.Log(p.x.L0) - Math.Log(p.y.L0)));
        var folder = Path.Combine(outDir, "rating-study");
        var saes = new[] { Path.Combine(outDir, g.Folder), Path.Combine(outDir, b.Folder) };
        var request = new IlgpuSae.Study.Dashboards.RatingStudyRequest
        {
            Saes = saes,
            PerSae = perSae,
            Seed = 0,
            MinDensity = 1e-4,
            Dashboards = new IlgpuSae.Study.Dashboards.DashboardRequest
            {
                Sae = saes[0],
                Model = config.Model,
                Corpus = config.EvalCorpus,
                Site = site,
                Tokens = tokens,
                Context = Math.Min(config.Context, 128),
                LmBatch = config.LmBatch,
            },
        };
        Console.WriteLine(
            string.Create(
                System.Globalization.CultureInfo.InvariantCulture,
                $"Rating study (§4.3): gated λ {g.L1} (L0 {g.L0:F1}) vs baseline λ {b.L1} (L0 {b.L0:F1}) at {site} → {folder}"
            )
        );
        var ids = RatingStudyCommand.Run(device, request, folder, cancel);
        return string.Join(
            "\n",
            "## Blinded rating study (paper §4.3)",
            "",
            string.Create(
                System.Globalization.CultureInfo.InvariantCulture,
                $"Created in `{folder}`: {ids.Count} features ({perSae} alive ones from each SAE) of the gated SAE `{g.Folder}` (λ {g.L1}, L0 {g.L0:F1}) and the baseline `{b.Folder}` (λ {b.L1}, L0 {b.L0:F1}) at `{site}`, the pair with the closest L0, shown behind opaque ids in a random order. The key is `{Path.Combine(folder, "key.json")}`: move it away from the raters."
            ),
            "",
            "Rate (Yes / Maybe / No, keys Y / M / N) in a browser on this machine, then unblind:",
            "",
            "```bash",
            $"ilgpu-sae serve --dir {folder}            # http://127.0.0.1:5180/rate.html, loopback only",
            $"ilgpu-sae rating-study analyze --dir {folder}",
            "```",
            "",
            "The study needs human raters, so this report claims no result from it; the paper finds a mean label difference (Gated − baseline) of 0.13, 90 % CI [0, 0.26].",
            ""
        );
    }

    /// <summary>The repository's data folder, searched upwards from the current directory, then from the
    /// tool's own folder.</summary>
    private static string? FindData()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                var candidate = Path.Combine(dir.FullName, "data");
                if (
                    File.Exists(Path.Combine(candidate, "lm", "config.json"))
                    && Directory.Exists(Path.Combine(candidate, "corpus"))
                )
                {
                    return candidate;
                }
            }
        }

        return null;
    }
}
