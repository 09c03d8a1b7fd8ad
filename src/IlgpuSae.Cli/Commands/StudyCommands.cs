using System.CommandLine;
using System.Globalization;
using IlgpuSae.Study;
using Spectre.Console;

namespace IlgpuSae.Cli.Commands;

/// <summary><c>sweep</c> (any study) and <c>reproduce</c> (the paper's study on the bundled model: the main job).</summary>
internal static class StudyCommands
{
    public static Command Reproduce()
    {
        var full = new Option<bool>("--full") { Description = "Run the full-size study (4 sites, every arm, 5 λ, ITO; about an hour on 2 cores with PoCL) instead of the reduced default (about 10 minutes on 2 cores)." };
        var data = new Option<string?>("--data") { Description = "The bundled data folder (default: the data/ folder of this repository, found upwards from the current directory)." };
        var output = new Option<string?>("--out") { Description = "Output folder (default: runs/reproduction, or runs/reproduction-full)." };
        var command = new Command("reproduce", "Reproduce the Gated SAE paper on the bundled model: train gated and baseline SAEs over λ at several sites, evaluate loss recovered, γ and ITO, and write a report with plots.")
        {
            full, data, output,
        };
        command.SetAction((parse, cancel) => Task.FromResult(CommonOptions.Guard(() =>
        {
            var folder = parse.GetValue(data) ?? FindData() ?? throw new ArgumentException("The bundled data folder (data/lm, data/corpus) was not found above the current directory; pass --data DIR.");
            var config = parse.GetValue(full) ? StudyConfig.Full(folder) : StudyConfig.Reduced(folder);
            var outDir = parse.GetValue(output) ?? (parse.GetValue(full) ? Path.Combine("runs", "reproduction-full") : Path.Combine("runs", "reproduction"));
            return RunStudy(parse, config, outDir, cancel);
        })));
        return command;
    }

    public static Command Sweep()
    {
        var config = new Option<string?>("--config") { Description = "Study file (JSON; keys as in study.json: model, train_corpus, eval_corpus, sites, arms, l1_gated, l1_standard, expansion, baseline_width_factor, train_tokens, batch_size, lr, lr_warmup, l1_warmup, context, eval_tokens, lm_batch, seed, ito_site, ito_l0, ito_runs). Options below override it." };
        var model = new Option<string?>("--model") { Description = "Hugging Face model folder." };
        var trainCorpus = new Option<string?>("--corpus") { Description = "Training text." };
        var evalCorpus = new Option<string?>("--eval-corpus") { Description = "Held-out text for evaluation." };
        var sites = new Option<string[]>("--sites") { Description = "Hook sites.", AllowMultipleArgumentsPerToken = true };
        var arms = new Option<string[]>("--arms") { Description = $"Arms: {string.Join(", ", StudyArms.All)}.", AllowMultipleArgumentsPerToken = true };
        var l1Gated = new Option<double[]>("--l1-gated") { Description = "λ values of the gated arms.", AllowMultipleArgumentsPerToken = true };
        var l1Standard = new Option<double[]>("--l1-standard") { Description = "λ values of the baseline arms.", AllowMultipleArgumentsPerToken = true };
        var tokens = new Option<long?>("--tokens") { Description = "Training tokens per SAE." };
        var expansion = new Option<int?>("--expansion") { Description = "Gated width as a multiple of the site width." };
        var widthFactor = new Option<double?>("--baseline-width-factor") { Description = "Baseline width relative to gated (default 1.5, equal compute)." };
        var evalTokens = new Option<int?>("--eval-tokens") { Description = "Held-out tokens for evaluation." };
        var itoSite = new Option<string?>("--ito-site") { Description = "Site for inference-time optimisation." };
        var itoL0 = new Option<int[]>("--ito-l0") { Description = "Target L0 values for ITO.", AllowMultipleArgumentsPerToken = true };
        var output = new Option<string>("--out") { Description = "Study folder (re-running resumes).", Required = true };
        var command = new Command("sweep", "Train and evaluate a grid of SAEs (arms × λ × sites) on one model, with Pareto plots, γ plots, ITO and a report.")
        {
            config, model, trainCorpus, evalCorpus, sites, arms, l1Gated, l1Standard, tokens, expansion, widthFactor, evalTokens, itoSite, itoL0, output,
        };
        command.SetAction((parse, cancel) => Task.FromResult(CommonOptions.Guard(() =>
        {
            StudyConfig? baseConfig = parse.GetValue(config) is { } file ? StudyConfig.Load(file) : null;
            string Need(string? v, string? fallback, string name) => v ?? fallback ?? throw new ArgumentException($"{name} is required (or give --config).");
            IReadOnlyList<T> List<T>(T[]? v, IReadOnlyList<T>? fallback, string name) =>
                v is { Length: > 0 } ? v : fallback ?? throw new ArgumentException($"{name} is required (or give --config).");
            var study = new StudyConfig
            {
                Model = Need(parse.GetValue(model), baseConfig?.Model, "--model"),
                TrainCorpus = Need(parse.GetValue(trainCorpus), baseConfig?.TrainCorpus, "--corpus"),
                EvalCorpus = Need(parse.GetValue(evalCorpus), baseConfig?.EvalCorpus, "--eval-corpus"),
                Sites = List(parse.GetValue(sites), baseConfig?.Sites, "--sites"),
                L1Gated = List(parse.GetValue(l1Gated), baseConfig?.L1Gated, "--l1-gated"),
                L1Standard = List(parse.GetValue(l1Standard), baseConfig?.L1Standard, "--l1-standard"),
            };
            study = (baseConfig is null ? study : baseConfig with { Model = study.Model, TrainCorpus = study.TrainCorpus, EvalCorpus = study.EvalCorpus, Sites = study.Sites, L1Gated = study.L1Gated, L1Standard = study.L1Standard }) with
            {
                Arms = parse.GetValue(arms) is { Length: > 0 } a ? a : baseConfig?.Arms ?? [StudyArms.Gated, StudyArms.Standard],
                TrainTokens = parse.GetValue(tokens) ?? baseConfig?.TrainTokens ?? 1 << 20,
                Expansion = parse.GetValue(expansion) ?? baseConfig?.Expansion ?? 4,
                BaselineWidthFactor = parse.GetValue(widthFactor) ?? baseConfig?.BaselineWidthFactor ?? 1.5,
                EvalTokens = parse.GetValue(evalTokens) ?? baseConfig?.EvalTokens ?? 8192,
                ItoSite = parse.GetValue(itoSite) ?? baseConfig?.ItoSite,
                ItoL0 = parse.GetValue(itoL0) is { Length: > 0 } k ? k : baseConfig?.ItoL0 ?? [],
            };
            return RunStudy(parse, study, parse.GetValue(output)!, cancel);
        })));
        return command;
    }

    private static int RunStudy(ParseResult parse, StudyConfig config, string outDir, CancellationToken cancel)
    {
        config.Validate();
        using var device = CommonOptions.OpenDevice(parse);
        Console.WriteLine($"Study → {outDir} on {device}: sites {string.Join(", ", config.Sites)}; arms {string.Join(", ", config.Arms)}; " +
                          $"λ gated {string.Join("/", config.L1Gated.Select(l => l.ToString(CultureInfo.InvariantCulture)))}, baseline {string.Join("/", config.L1Standard.Select(l => l.ToString(CultureInfo.InvariantCulture)))}; {config.TrainTokens} tokens per SAE.");
        var started = DateTime.UtcNow;
        var runner = new StudyRunner(config, outDir, device);
        runner.Run(new LmCommands.ActionProgress<StudyProgress>(p =>
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[{p.Done}/{p.Total} {(DateTime.UtcNow - started).TotalMinutes:F1} min] {p.Current}"))),
            line => { if (line.StartsWith("  ", StringComparison.Ordinal)) { Console.WriteLine(line); } }, cancel);
        var report = Path.GetFullPath(Path.Combine(outDir, "report.md"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Done in {(DateTime.UtcNow - started).TotalMinutes:F1} min. Report: {report}"));
        return 0;
    }

    /// <summary>The repository's data folder, searched upwards from the current directory, then from the tool's own folder.</summary>
    private static string? FindData()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                var candidate = Path.Combine(dir.FullName, "data");
                if (File.Exists(Path.Combine(candidate, "lm", "config.json")) && Directory.Exists(Path.Combine(candidate, "corpus")))
                {
                    return candidate;
                }
            }
        }

        return null;
    }
}
