using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using IlgpuSae.Backends;
using IlgpuSae.Data;
using IlgpuSae.Lm;
using IlgpuSae.Sae;
using Spectre.Console;

namespace IlgpuSae.Cli.Commands;

/// <summary><c>eval</c>: reconstruction and sparsity metrics, and with <c>--model</c> loss recovered
/// (<see cref="DownstreamEvaluator"/>).</summary>
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
        var command = new Command(
            "eval",
            "Reconstruction and sparsity metrics of an SAE on activations; with --model also loss recovered (ce_loss_score) and the KL score."
        )
        {
            sae,
            tokens,
            batch,
            json,
            spliceSpecial,
            skipSpecialLoss,
        };
        foreach (var o in acts.All.Concat(lm.All))
        {
            command.Options.Add(o);
        }

        command.SetAction(
            (parse, cancel) =>
                Task.FromResult(
                    CommonOptions.Guard(() =>
                    {
                        using var device = CommonOptions.OpenDevice(parse);
                        using var model = SaeFiles.Load(device, parse.GetValue(sae)!);
                        SaeMetrics metrics;
                        DownstreamMetrics? downstream = null;
                        if (lm.Given(parse))
                        {
                            if (parse.GetValue(acts.Acts) is not null)
                            {
                                throw new ArgumentException("Give either --acts or --model, not both.");
                            }

                            downstream = EvaluateWithModel(
                                parse,
                                device,
                                model,
                                lm,
                                parse.GetValue(tokens) ?? 16384,
                                new SpliceOptions
                                {
                                    SpliceSpecialTokens = parse.GetValue(spliceSpecial),
                                    CountSpecialPositions = !parse.GetValue(skipSpecialLoss),
                                    Batch = parse.GetValue(lm.LmBatch),
                                },
                                cancel
                            );
                            metrics = downstream.Reconstruction!;
                        }
                        else
                        {
                            var provenance = new Dictionary<string, object?>();
                            using var data = TrainingActivations.OpenFile(
                                acts.Require(parse),
                                parse.GetValue(acts.Tensor),
                                provenance,
                                acts.Verify(parse)
                            );
                            WarnOnSiteMismatch(model, provenance, data.Description);
                            metrics = SaeEvaluator.Evaluate(
                                model,
                                data,
                                parse.GetValue(batch),
                                parse.GetValue(tokens) ?? long.MaxValue,
                                cancellationToken: cancel
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

    private static DownstreamMetrics EvaluateWithModel(
        ParseResult parse,
        SaeDevice device,
        SparseAutoencoder sae,
        ModelOptions lm,
        long tokens,
        SpliceOptions options,
        CancellationToken cancel
    )
    {
        var hook =
            sae.Config.Metadata.TryGetValue("hook_name", out var h) && h?.ToString() is { Length: > 0 } name
                ? name
                : null;
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
        return ConsoleProgress.Run(
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
    }
}
