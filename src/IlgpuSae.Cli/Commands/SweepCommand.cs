using System.CommandLine;
using System.Globalization;
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
                "Study file (JSON; keys as in study.json: model, train_corpus, eval_corpus, sites, arms, ablation_sites, l1_gated, l1_standard, k_topk, l0_jumprelu, jumprelu_threshold_init, verdict_l0, expansion, baseline_width_factor, train_tokens, batch_size, lr, lr_warmup, l1_warmup, context, eval_tokens, lm_batch, seed, ito_site, ito_l0, ito_runs). Options below override it.",
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
            Description =
                $"Arms, space- or comma-separated: the paper's {string.Join(", ", StudyArms.All)}; the other families {string.Join(", ", StudyArms.Families)} (at the gated width; any of them adds the cross-family verdict table and plots with every family on one Pareto plot). Default: gated, standard.",
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
        var kTopK = new Option<string[]>("--k-topk")
        {
            Description =
                $"k values of the topk, batchtopk and matryoshka arms, one SAE per value and arm, e.g. 8,16,32 (default {string.Join(",", StudyConfig.DefaultKTopK)}: on the bundled model within the L0 range of the gated and baseline points).",
            AllowMultipleArgumentsPerToken = true,
        };
        var l0JumpRelu = new Option<string[]>("--l0-jumprelu")
        {
            Description =
                $"L0 coefficients λ of the jumprelu arm (its sparsity penalty λ·L0), one SAE per value (default {string.Join(",", StudyConfig.DefaultL0JumpRelu.Select(l => l.ToString(CultureInfo.InvariantCulture)))}).",
            AllowMultipleArgumentsPerToken = true,
        };
        var jumpReluTheta = new Option<double?>("--jumprelu-threshold-init")
        {
            Description =
                $"Initial threshold θ₀ of the jumprelu arm (default {StudyConfig.DefaultJumpReluThresholdInit}; SAELens's 0.01 leaves short runs dense: log θ moves by about lr per step).",
        };
        var verdictL0 = new Option<double?>("--verdict-l0")
        {
            Description =
                $"Cross-family verdict table: each family's best loss recovered at L0 ≤ this value (default {StudyConfig.DefaultVerdictL0}).",
        };
        var tokens = new Option<long?>("--tokens") { Description = "Training tokens per SAE (every arm)." };
        var expansion = new Option<int?>("--expansion")
        {
            Description =
                "Dictionary size M of gated and the other families as a multiple of the site width (default 4).",
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
        var ratingStudy = new Option<int>("--rating-study")
        {
            Description =
                "Also create the blinded rating study (paper §4.3) with this many features per SAE from the gated and baseline SAEs of the first site with the closest L0 (0 = none).",
            DefaultValueFactory = _ => 0,
        };
        var ratingTokens = new Option<long>("--rating-study-tokens")
        {
            Description = "Held-out tokens the rating study's dashboards read.",
            DefaultValueFactory = _ => 8192,
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
            kTopK,
            l0JumpRelu,
            jumpReluTheta,
            verdictL0,
            tokens,
            expansion,
            widthFactor,
            evalTokens,
            itoSite,
            itoL0,
            ratingStudy,
            ratingTokens,
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
                        var armList = Split(parse.GetValue(arms)) is { Length: > 0 } given
                            ? given
                            : baseConfig?.Arms ?? [StudyArms.Gated, StudyArms.Standard];
                        IReadOnlyList<T> List<T>(
                            T[]? v,
                            IReadOnlyList<T>? fallback,
                            string name,
                            bool needed = true
                        ) =>
                            v is { Length: > 0 }
                                ? v
                                : fallback
                                    ?? (
                                        needed
                                            ? throw new ArgumentException(
                                                $"{name} is required (or give --config)."
                                            )
                                            : []
                                    );
                        bool gatedArms = armList.Any(StudyArms.IsGated);
                        bool baselineArms = armList.Any(a =>
                            a is StudyArms.Standard or StudyArms.RescaleShift
                        );
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
                            L1Gated = List(
                                parse.GetValue(l1Gated),
                                baseConfig?.L1Gated,
                                "--l1-gated",
                                gatedArms
                            ),
                            L1Standard = List(
                                parse.GetValue(l1Standard),
                                baseConfig?.L1Standard,
                                "--l1-standard",
                                baselineArms
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
                            Arms = armList,
                            KTopK =
                                Numbers(parse.GetValue(kTopK), "--k-topk", int.Parse)
                                ?? baseConfig?.KTopK
                                ?? (armList.Any(StudyArms.IsTopKFamily) ? StudyConfig.DefaultKTopK : null),
                            L0JumpRelu =
                                Numbers(parse.GetValue(l0JumpRelu), "--l0-jumprelu", double.Parse)
                                ?? baseConfig?.L0JumpRelu
                                ?? (
                                    armList.Contains(StudyArms.JumpRelu)
                                        ? StudyConfig.DefaultL0JumpRelu
                                        : null
                                ),
                            JumpReluThresholdInit =
                                parse.GetValue(jumpReluTheta)
                                ?? baseConfig?.JumpReluThresholdInit
                                ?? (
                                    armList.Contains(StudyArms.JumpRelu)
                                        ? StudyConfig.DefaultJumpReluThresholdInit
                                        : null
                                ),
                            VerdictL0 = parse.GetValue(verdictL0) ?? baseConfig?.VerdictL0,
                            TrainTokens = parse.GetValue(tokens) ?? baseConfig?.TrainTokens ?? 1 << 20,
                            Expansion = parse.GetValue(expansion) ?? baseConfig?.Expansion ?? 4,
                            BaselineWidthFactor =
                                parse.GetValue(widthFactor) ?? baseConfig?.BaselineWidthFactor ?? 1.5,
                            EvalTokens = parse.GetValue(evalTokens) ?? baseConfig?.EvalTokens ?? 8192,
                            ItoSite = parse.GetValue(itoSite) ?? baseConfig?.ItoSite,
                            ItoL0 = parse.GetValue(itoL0) is { Length: > 0 } k ? k : baseConfig?.ItoL0 ?? [],
                        };
                        int perSae = parse.GetValue(ratingStudy);
                        if (perSae < 0)
                        {
                            throw new ArgumentException($"--rating-study must be 0 or more, got {perSae}.");
                        }

                        var outDir = parse.GetValue(output)!;
                        return StudyConsole.Run(
                            parse,
                            study,
                            outDir,
                            cancel,
                            perSae > 0
                                ? (device, results) =>
                                    ReproduceCommand.CreateRatingStudy(
                                        device,
                                        study,
                                        results,
                                        outDir,
                                        cancel,
                                        perSae,
                                        parse.GetValue(ratingTokens)
                                    )
                                : null
                        );
                    })
                )
        );
        return command;
    }

    /// <summary>The words of a list option, split at commas too (<c>--arms gated,topk</c>).</summary>
    private static string[] Split(string[]? values) =>
        [
            .. (values ?? []).SelectMany(v =>
                v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            ),
        ];

    /// <summary>A list option's numbers (invariant culture, space- or comma-separated), or null when not
    /// given.</summary>
    /// <exception cref="ArgumentException">A value is not a number.</exception>
    private static T[]? Numbers<T>(string[]? values, string name, Func<string, IFormatProvider, T> parse)
    {
        var words = Split(values);
        if (words.Length == 0)
        {
            return null;
        }

        try
        {
            return [.. words.Select(w => parse(w, CultureInfo.InvariantCulture))];
        }
        catch (FormatException)
        {
            throw new ArgumentException($"{name}: '{string.Join(",", words)}' is not a list of numbers.");
        }
    }
}
