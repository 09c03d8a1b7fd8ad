using System.CommandLine;
using IlgpuSae.Study;

namespace IlgpuSae.Cli.Commands;

/// <summary><c>sweep</c>: any study (arms × λ × sites) from a file and options (<see cref="StudyConfig"/>,
/// <see cref="StudyRunner"/>).</summary>
internal static class SweepCommand
{
    public static Command Create()
    {
        var config = new Option<string?>("--config")
        {
            Description =
                "Study file (JSON; keys as in study.json: model, train_corpus, eval_corpus, sites, arms, l1_gated, l1_standard, expansion, baseline_width_factor, train_tokens, batch_size, lr, lr_warmup, l1_warmup, context, eval_tokens, lm_batch, seed, ito_site, ito_l0, ito_runs). Options below override it.",
        };
        var model = new Option<string?>("--model") { Description = "Hugging Face model folder." };
        var trainCorpus = new Option<string?>("--corpus") { Description = "Training text." };
        var evalCorpus = new Option<string?>("--eval-corpus")
        {
            Description = "Held-out text for evaluation.",
        };
        var sites = new Option<string[]>("--sites")
        {
            Description = "Hook sites.",
            AllowMultipleArgumentsPerToken = true,
        };
        var arms = new Option<string[]>("--arms")
        {
            Description = $"Arms: {string.Join(", ", StudyArms.All)}.",
            AllowMultipleArgumentsPerToken = true,
        };
        var l1Gated = new Option<double[]>("--l1-gated")
        {
            Description = "λ values of the gated arms.",
            AllowMultipleArgumentsPerToken = true,
        };
        var l1Standard = new Option<double[]>("--l1-standard")
        {
            Description = "λ values of the baseline arms.",
            AllowMultipleArgumentsPerToken = true,
        };
        var tokens = new Option<long?>("--tokens") { Description = "Training tokens per SAE." };
        var expansion = new Option<int?>("--expansion")
        {
            Description = "Gated width as a multiple of the site width.",
        };
        var widthFactor = new Option<double?>("--baseline-width-factor")
        {
            Description = "Baseline width relative to gated (default 1.5, equal compute).",
        };
        var evalTokens = new Option<int?>("--eval-tokens")
        {
            Description = "Held-out tokens for evaluation.",
        };
        var itoSite = new Option<string?>("--ito-site")
        {
            Description = "Site for inference-time optimisation.",
        };
        var itoL0 = new Option<int[]>("--ito-l0")
        {
            Description = "Target L0 values for ITO.",
            AllowMultipleArgumentsPerToken = true,
        };
        var output = new Option<string>("--out")
        {
            Description = "Study folder (re-running resumes).",
            Required = true,
        };
        var command = new Command(
            "sweep",
            "Train and evaluate a grid of SAEs (arms × λ × sites) on one model, with Pareto plots, γ plots, ITO and a report."
        )
        {
            config,
            model,
            trainCorpus,
            evalCorpus,
            sites,
            arms,
            l1Gated,
            l1Standard,
            tokens,
            expansion,
            widthFactor,
            evalTokens,
            itoSite,
            itoL0,
            output,
        };
        command.SetAction(
            (parse, cancel) =>
                Task.FromResult(
                    CommonOptions.Guard(() =>
                    {
                        StudyConfig? baseConfig = parse.GetValue(config) is { } file
                            ? StudyConfig.Load(file)
                            : null;
                        string Need(string? v, string? fallback, string name) =>
                            v
                            ?? fallback
                            ?? throw new ArgumentException($"{name} is required (or give --config).");
                        IReadOnlyList<T> List<T>(T[]? v, IReadOnlyList<T>? fallback, string name) =>
                            v is { Length: > 0 }
                                ? v
                                : fallback
                                    ?? throw new ArgumentException($"{name} is required (or give --config).");
                        var study = new StudyConfig
                        {
                            Model = Need(parse.GetValue(model), baseConfig?.Model, "--model"),
                            TrainCorpus = Need(
                                parse.GetValue(trainCorpus),
                                baseConfig?.TrainCorpus,
                                "--corpus"
                            ),
                            EvalCorpus = Need(
                                parse.GetValue(evalCorpus),
                                baseConfig?.EvalCorpus,
                                "--eval-corpus"
                            ),
                            Sites = List(parse.GetValue(sites), baseConfig?.Sites, "--sites"),
                            L1Gated = List(parse.GetValue(l1Gated), baseConfig?.L1Gated, "--l1-gated"),
                            L1Standard = List(
                                parse.GetValue(l1Standard),
                                baseConfig?.L1Standard,
                                "--l1-standard"
                            ),
                        };
                        study = (
                            baseConfig is null
                                ? study
                                : baseConfig with
                                {
                                    Model = study.Model,
                                    TrainCorpus = study.TrainCorpus,
                                    EvalCorpus = study.EvalCorpus,
                                    Sites = study.Sites,
                                    L1Gated = study.L1Gated,
                                    L1Standard = study.L1Standard,
                                }
                        ) with
                        {
                            Arms = parse.GetValue(arms) is { Length: > 0 } a
                                ? a
                                : baseConfig?.Arms ?? [StudyArms.Gated, StudyArms.Standard],
                            TrainTokens = parse.GetValue(tokens) ?? baseConfig?.TrainTokens ?? 1 << 20,
                            Expansion = parse.GetValue(expansion) ?? baseConfig?.Expansion ?? 4,
                            BaselineWidthFactor =
                                parse.GetValue(widthFactor) ?? baseConfig?.BaselineWidthFactor ?? 1.5,
                            EvalTokens = parse.GetValue(evalTokens) ?? baseConfig?.EvalTokens ?? 8192,
                            ItoSite = parse.GetValue(itoSite) ?? baseConfig?.ItoSite,
                            ItoL0 = parse.GetValue(itoL0) is { Length: > 0 } k ? k : baseConfig?.ItoL0 ?? [],
                        };
                        return StudyConsole.Run(parse, study, parse.GetValue(output)!, cancel);
                    })
                )
        );
        return command;
    }
}
