using System.CommandLine;
using System.Globalization;
using IlgpuSae.Study;

namespace IlgpuSae.Cli.Commands;

/// <summary>Runs a study with progress lines (shared by <c>sweep</c> and <c>reproduce</c>).</summary>
internal static class StudyConsole
{
    public static int Run(
        ParseResult parse,
        StudyConfig config,
        string outDir,
        CancellationToken cancel,
        Func<Backends.SaeDevice, IReadOnlyList<RunResult>, string?>? after = null
    )
    {
        config.Validate();
        IlgpuSae.IO.OutputPaths.EnsureSeparate(
            "--out",
            outDir,
            ("--model", config.Model),
            ("--corpus", config.TrainCorpus),
            ("--eval-corpus", config.EvalCorpus)
        );
        using var folderLock = IlgpuSae.IO.FolderLock.Acquire(outDir, parse.CommandResult.Command.Name);
        if (folderLock.StaleNote is { } stale)
        {
            Console.Error.WriteLine($"note: {outDir}: {stale}.");
        }

        using var device = CommonOptions.OpenDevice(parse);
        Console.WriteLine(
            $"Study → {outDir} on {device}: sites {string.Join(", ", config.Sites)}; arms {string.Join(", ", config.Arms)}; "
                + $"λ gated {string.Join("/", config.L1Gated.Select(l => l.ToString(CultureInfo.InvariantCulture)))}, baseline {string.Join("/", config.L1Standard.Select(l => l.ToString(CultureInfo.InvariantCulture)))}; {config.TrainTokens} tokens per SAE."
                + (
                    config.KTopK is { } k
                        ? $" k (topk family) {string.Join("/", k.Select(v => v.ToString(CultureInfo.InvariantCulture)))}."
                        : ""
                )
                + (
                    config.L0JumpRelu is { } l0
                        ? $" jumprelu L0 coefficient {string.Join("/", l0.Select(v => v.ToString(CultureInfo.InvariantCulture)))}."
                        : ""
                )
        );
        var started = DateTime.UtcNow;
        var runner = new StudyRunner(config, outDir, device);
        var results = runner.Run(
            new ConsoleProgress.Relay<StudyProgress>(p =>
                Console.WriteLine(
                    string.Create(
                        CultureInfo.InvariantCulture,
                        $"[{p.Done}/{p.Total} {(DateTime.UtcNow - started).TotalMinutes:F1} min] {p.Current}"
                    )
                )
            ),
            line =>
            {
                if (line.StartsWith("  ", StringComparison.Ordinal))
                {
                    Console.WriteLine(line);
                }
            },
            cancel
        );
        var report = Path.GetFullPath(Path.Combine(outDir, "report.md"));
        if (after?.Invoke(device, results) is { } section)
        {
            IlgpuSae.IO.AtomicFile.WriteAllText(
                report,
                File.ReadAllText(report).TrimEnd() + "\n\n" + section
            );
        }

        Console.WriteLine(
            string.Create(
                CultureInfo.InvariantCulture,
                $"Done in {(DateTime.UtcNow - started).TotalMinutes:F1} min. Report: {report}"
            )
        );
        return 0;
    }
}
