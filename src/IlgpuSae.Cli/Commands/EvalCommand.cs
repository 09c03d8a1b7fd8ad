using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using IlgpuSae.Backends;
using IlgpuSae.Data;
using IlgpuSae.Lm;
using IlgpuSae.Sae;
using IlgpuSae.SaeBench;
using Spectre.Console;

namespace IlgpuSae.Cli.Commands;

/// <summary><c>eval</c>: reconstruction and sparsity metrics, and with <c>--model</c> loss recovered
/// (<see cref="DownstreamEvaluator"/>); with <c>--saebench-json</c> also SAEBench's core result file
/// (<see cref="SaeBenchCore"/>).</summary>
internal static class EvalCommand
{
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    public static Command Create()
    {
        var sae = new Option<string>("--sae")
        {
            Description = "SAE folder (cfg.json + sae_weights.safetensors) or Gemma Scope params.npz.",
            Required = true,
        };
        var acts = new ActivationOptions();
        var tokens = new Option<long?>("--tokens")
        {
            Description = "Rows to evaluate (default: all of --acts; 16384 corpus tokens with --model).",
        };
        var batch = new Option<int>("--batch-size")
        {
            Description = "Rows per forward pass.",
            DefaultValueFactory = _ => 1024,
        };
        var json = new Option<bool>("--json") { Description = "Print JSON (SAELens metric names)." };
        var lm = new ModelOptions();
        lm.Site.Description += " Default with --model: the SAE's metadata hook_name.";
        var spliceSpecial = new Option<bool>("--splice-special-tokens")
        {
            Description =
                "Also replace the site at BOS/EOS/PAD positions (default: they keep clean activations, as SAEBench).",
        };
        var skipSpecialLoss = new Option<bool>("--exclude-special-from-loss")
        {
            Description =
                "Do not count predictions made at BOS/EOS/PAD positions (default: every next-token prediction counts).",
        };
        var bench = new SaeBenchOptions();
        var command = new Command(
            "eval",
            "Reconstruction and sparsity metrics of an SAE on activations; with --model also loss recovered (ce_loss_score) and the KL score; with --saebench-json also SAEBench's core result file."
        )
        {
            sae,
            tokens,
            batch,
            json,
            spliceSpecial,
            skipSpecialLoss,
        };
        foreach (var o in bench.All)
        {
            command.Options.Add(o);
        }

        foreach (var o in acts.All.Concat(lm.All))
        {
            command.Options.Add(o);
        }

        command.SetAction(
            (parse, cancel) =>
                Task.FromResult(
                    CommonOptions.Guard(() =>
                    {
                        var saePath = parse.GetValue(sae)!;
                        if (lm.Given(parse) && parse.GetValue(acts.Acts) is not null)
                        {
                            throw new ArgumentException("Give either --acts or --model, not both.");
                        }

                        // Checked before anything is loaded, so a refused output costs nothing.
                        var target = bench.Prepare(parse, saePath, acts, lm);
                        using var device = CommonOptions.OpenDevice(parse);
                        using var model = SaeFiles.Load(device, saePath);
                        SaeMetrics metrics;
                        DownstreamMetrics? downstream = null;
                        SaeBenchTokenMetrics? benchTokens = null;
                        SaeBenchEvalSettings? settings = null;
                        if (lm.Given(parse))
                        {
                            (downstream, benchTokens, settings) = EvaluateWithModel(
                                parse,
                                device,
                                model,
                                lm,
                                parse.GetValue(tokens) ?? 16384,
                                new SpliceOptions
                                {
                                    SpliceSpecialTokens = parse.GetValue(spliceSpecial),
                                    // SAEBench never counts predictions made at BOS/EOS/PAD positions.
                                    CountSpecialPositions =
                                        !parse.GetValue(skipSpecialLoss) && target is null,
                                    Batch = parse.GetValue(lm.LmBatch),
                                },
                                target is not null,
                                cancel
                            );
                            metrics = downstream.Reconstruction!;
                        }
                        else
                        {
                            var actsPath = acts.Require(parse);
                            var provenance = new Dictionary<string, object?>();
                            using var data = TrainingActivations.OpenFile(
                                actsPath,
                                parse.GetValue(acts.Tensor),
                                provenance,
                                acts.Verify(parse)
                            );
                            WarnOnSiteMismatch(model, provenance, data.Description);
                            long maxTokens = parse.GetValue(tokens) ?? long.MaxValue;
                            int rowsPerBatch = parse.GetValue(batch);
                            long evaluated = Math.Min(data.Rows, maxTokens);
                            if (rowsPerBatch > evaluated)
                            {
                                Console.Error.WriteLine(
                                    $"warning: --batch-size {rowsPerBatch} exceeds the {evaluated} rows evaluated; they are evaluated as one batch of {evaluated}."
                                );
                            }
                            if (target is null)
                            {
                                metrics = SaeEvaluator.Evaluate(
                                    model,
                                    data,
                                    rowsPerBatch,
                                    maxTokens,
                                    cancellationToken: cancel
                                );
                            }
                            else
                            {
                                (metrics, benchTokens) = SaeBenchEvaluator.EvaluateActivations(
                                    model,
                                    data,
                                    rowsPerBatch,
                                    maxTokens,
                                    cancel
                                );
                                settings = new SaeBenchEvalSettings
                                {
                                    ModelName = MetadataString(model, "model_name") ?? "",
                                    Dataset = actsPath,
                                    ContextSize = 1,
                                    BatchSizePrompts = rowsPerBatch,
                                    Batches = benchTokens.Batches,
                                    TotalTokens = benchTokens.Tokens,
                                };
                            }
                        }

                        if (target is not null)
                        {
                            var written = SaeBenchOptions.Write(
                                target,
                                model,
                                benchTokens!,
                                settings!,
                                downstream,
                                Console.Error
                            );
                            (parse.GetValue(json) ? Console.Error : Console.Out).WriteLine(
                                $"Wrote SAEBench core results to {written}."
                            );
                        }

                        if (parse.GetValue(json))
                        {
                            Console.WriteLine(
                                downstream is null
                                    ? JsonSerializer.Serialize(metrics, Indented)
                                    : JsonSerializer.Serialize(downstream, Indented)
                            );
                            return 0;
                        }

                        var table = new Table().AddColumns("metric", "value");
                        var rows = new List<(string, double)>
                        {
                            ("tokens", metrics.Tokens),
                            ("l0", metrics.L0),
                            ("l1", metrics.L1),
                            ("mse", metrics.Mse),
                            ("explained_variance", metrics.ExplainedVariance),
                            ("explained_variance_legacy", metrics.ExplainedVarianceLegacy),
                            ("cossim", metrics.CosSim),
                            ("l2_ratio", metrics.L2Ratio),
                            ("relative_reconstruction_bias (γ)", metrics.RelativeReconstructionBias),
                            ("frac_alive", metrics.FractionAlive),
                            ("dead_features", metrics.DeadFeatures),
                        };
                        if (downstream is not null)
                        {
                            rows.AddRange([
                                ("ce_loss_without_sae", downstream.CeLossWithoutSae),
                                ("ce_loss_with_sae", downstream.CeLossWithSae),
                                ("ce_loss_with_ablation", downstream.CeLossWithAblation),
                                ("ce_loss_score (loss recovered)", downstream.CeLossScore),
                                ("kl_div_with_sae", downstream.KlDivWithSae),
                                ("kl_div_with_ablation", downstream.KlDivWithAblation),
                                ("kl_div_score", downstream.KlDivScore),
                                ("ce_tokens", downstream.CountedTokens),
                            ]);
                        }

                        foreach (var (name, value) in rows)
                        {
                            table.AddRow(name, value.ToString("G6", CultureInfo.InvariantCulture));
                        }

                        CommonOptions.CreateConsole().Write(table);
                        if (downstream is not null)
                        {
                            Console.WriteLine(
                                $"Counted: {downstream.TokensCounted}; {downstream.Contexts} contexts of {downstream.ContextSize} tokens."
                            );
                        }

                        return 0;
                    })
                )
        );
        return command;
    }

    /// <summary>Warns when the activations come from another hook site (or model) than the SAE was
    /// trained on, as both record them.</summary>
    private static void WarnOnSiteMismatch(
        SparseAutoencoder sae,
        Dictionary<string, object?> provenance,
        string description
    )
    {
        foreach (var key in new[] { "hook_name", "model_name" })
        {
            var expected = sae.Config.Metadata.TryGetValue(key, out var e) ? Text(e) : null;
            var actual = provenance.TryGetValue(key, out var a) ? Text(a) : null;
            if (expected is { Length: > 0 } && actual is { Length: > 0 } && expected != actual)
            {
                Console.Error.WriteLine(
                    $"warning: the SAE was trained on {key} '{expected}' but {description} holds '{actual}'; the metrics describe an SAE used off its site."
                );
            }
        }
    }

    private static string? Text(object? value) =>
        value switch
        {
            null => null,
            JsonElement { ValueKind: JsonValueKind.String } j => j.GetString(),
            JsonElement j => j.GetRawText(),
            _ => value.ToString(),
        };

    private static string? MetadataString(SparseAutoencoder sae, string key) =>
        sae.Config.Metadata.TryGetValue(key, out var v) && v?.ToString() is { Length: > 0 } text
            ? text
            : null;

    private static (
        DownstreamMetrics Downstream,
        SaeBenchTokenMetrics? SaeBench,
        SaeBenchEvalSettings? Settings
    ) EvaluateWithModel(
        ParseResult parse,
        SaeDevice device,
        SparseAutoencoder sae,
        ModelOptions lm,
        long tokens,
        SpliceOptions options,
        bool saeBench,
        CancellationToken cancel
    )
    {
        var hook = MetadataString(sae, "hook_name");
        if (parse.GetValue(lm.Site) is null && hook is null)
        {
            throw new ArgumentException("--site is required: the SAE's metadata has no hook_name.");
        }

        var (model, tokenizer, site, corpus) = lm.Open(parse, device, hook);
        using var _ = model;
        int context =
            parse.GetValue(lm.Context) == 0 ? model.Config.ContextLength : parse.GetValue(lm.Context);
        if (context < 2 || context > model.Config.ContextLength)
        {
            throw new ArgumentException(
                $"--context {context} must be between 2 and the model's context of {model.Config.ContextLength}."
            );
        }

        var (contexts, count) = TokenCorpus.EvaluationContexts(
            corpus,
            tokenizer,
            model.Config.BosTokenId,
            tokens,
            context,
            cancel
        );
        Console.WriteLine(
            $"Evaluating {sae.Architecture.Name} SAE {sae.DIn}×{sae.DSae} at {site} of {model.Name} on {device}: {count} contexts of {context} tokens from {corpus}."
        );
        if (!saeBench)
        {
            var plain = ConsoleProgress.Run(
                "eval",
                count,
                report =>
                    DownstreamEvaluator.Evaluate(
                        model,
                        site,
                        sae,
                        contexts,
                        context,
                        options,
                        new ConsoleProgress.Relay<int>(done => report(done)),
                        cancel
                    )
            );
            return (plain, null, null);
        }

        var (downstream, bench) = ConsoleProgress.Run(
            "eval",
            count,
            report =>
                SaeBenchModelEvaluator.Evaluate(
                    model,
                    site,
                    sae,
                    contexts,
                    context,
                    options,
                    new ConsoleProgress.Relay<int>(done => report(done)),
                    cancel
                )
        );
        int perBatch = Math.Clamp(options.Batch, 1, count);
        var settings = new SaeBenchEvalSettings
        {
            ModelName = model.Name,
            Dataset = corpus,
            ContextSize = context,
            BatchSizePrompts = perBatch,
            Batches = (count + perBatch - 1) / perBatch,
            TotalTokens = (long)count * context,
            ExcludeSpecialTokensFromReconstruction = !options.SpliceSpecialTokens,
        };
        return (downstream, bench, settings);
    }
}
