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
                "Run the full-size study (4 sites, every arm, 5 λ, ITO; about an hour on 2 cores with PoCL) instead of the reduced default (about 10 minutes on 2 cores).",
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
                        return StudyConsole.Run(parse, config, outDir, cancel);
                    })
                )
        );
        return command;
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
