using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using IlgpuSae.Backends;
using IlgpuSae.Data;
using IlgpuSae.IO;
using IlgpuSae.Lm;
using IlgpuSae.Sae;
using IlgpuSae.Training;
using Spectre.Console;

namespace IlgpuSae.Cli.Commands;

/// <summary><c>train</c>, <c>eval</c>, <c>export</c> and <c>encode</c>.</summary>
internal static class SaeCommands
{
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    private static Option<string?> Acts() => new("--acts")
    {
        Description = "Activations: a .npy [N, d] file, a .safetensors file (see --tensor) or a cache folder with manifest.json.",
    };

    private static string RequireActs(ParseResult parse, Option<string?> acts) =>
        parse.GetValue(acts) ?? throw new ArgumentException("Give the activations: --acts FILE|FOLDER, or --model DIR --site NAME --corpus FILE.");

    private static Option<string?> Tensor() => new("--tensor") { Description = "Tensor name inside a .safetensors activation file." };

    public static Command Train()
    {
        var arch = new Option<string>("--arch") { Description = "standard or gated.", Required = true };
        arch.AcceptOnlyFromAmong("standard", "gated");
        var mode = new Option<string>("--mode")
        {
            Description = "paper (default: unit-norm decoder, plain L1, frozen aux decoder), saelens (gated) or april-update (standard).",
            DefaultValueFactory = _ => "paper",
        };
        mode.AcceptOnlyFromAmong("paper", "saelens", "april-update");
        var ablation = new Option<string>("--ablation")
        {
            Description = "Gated ablations (paper §5.1): none, unfrozen-aux, no-rmag, untied.",
            DefaultValueFactory = _ => "none",
        };
        ablation.AcceptOnlyFromAmong("none", "unfrozen-aux", "no-rmag", "untied");
        var acts = Acts();
        var tensor = Tensor();
        var dSae = new Option<int?>("--d-sae") { Description = "Dictionary size (required unless --init or --rescale-shift-of)." };
        var l1 = new Option<float>("--l1") { Description = "Sparsity coefficient λ.", DefaultValueFactory = _ => 1f };
        var lr = new Option<float>("--lr") { Description = "Peak learning rate.", DefaultValueFactory = _ => 3e-4f };
        var batch = new Option<int>("--batch-size") { Description = "Rows per step.", DefaultValueFactory = _ => 4096 };
        var tokens = new Option<long>("--tokens") { Description = "Training tokens (rows); steps = tokens / batch size.", Required = true };
        var lrWarmup = new Option<int>("--lr-warmup") { Description = "Learning-rate warm-up steps.", DefaultValueFactory = _ => 1000 };
        var lrDecay = new Option<string>("--lr-decay") { Description = "none, linear or cosine (over the last 20%).", DefaultValueFactory = _ => "none" };
        lrDecay.AcceptOnlyFromAmong("none", "linear", "cosine");
        var l1Warmup = new Option<int>("--l1-warmup") { Description = "λ warm-up steps.", DefaultValueFactory = _ => 0 };
        var seed = new Option<ulong>("--seed") { Description = "Seed for initialisation, data order and resampling.", DefaultValueFactory = _ => 42UL };
        var beta1 = new Option<float>("--beta1") { Description = "Adam β1 (paper: 0).", DefaultValueFactory = _ => 0f };
        var beta2 = new Option<float>("--beta2") { Description = "Adam β2.", DefaultValueFactory = _ => 0.999f };
        var eps = new Option<float>("--adam-eps") { Description = "Adam ε.", DefaultValueFactory = _ => 1e-8f };
        var clip = new Option<float>("--grad-clip") { Description = "Clip the global gradient norm (0 = off; saelens/april default 1).", DefaultValueFactory = _ => 0f };
        var resample = new Option<int>("--resample-every") { Description = "Resample dead features every N steps (0 = never).", DefaultValueFactory = _ => 0 };
        var normalize = new Option<bool>("--normalize-activations") { Description = "Scale inputs so E‖x‖ = √d; folded into the saved weights." };
        var scale = new Option<string>("--loss-scale") { Description = "sum (default: Σ_j (x − x̂)²) or mean-d (the paper's /d).", DefaultValueFactory = _ => "sum" };
        scale.AcceptOnlyFromAmong("sum", "mean-d");
        var init = new Option<string?>("--init") { Description = "Start from this SAE folder (same architecture and shape)." };
        var rescaleOf = new Option<string?>("--rescale-shift-of") { Description = "Baseline + rescale & shift (paper §5.2): freeze this standard SAE and train only r_mag, b_mag of a gated wrapper." };
        var logEvery = new Option<int>("--log-every") { Description = "Metrics log period in steps.", DefaultValueFactory = _ => 100 };
        var ckptEvery = new Option<int>("--checkpoint-every") { Description = "Checkpoint period in steps (0 = none).", DefaultValueFactory = _ => 0 };
        var resume = new Option<bool>("--resume") { Description = "Continue from the newest checkpoint in --out." };
        var output = new Option<string>("--out") { Description = "Output folder: the SAE (cfg.json, sae_weights.safetensors), metrics.jsonl, checkpoints/.", Required = true };
        var lm = new LmCommands.ModelOptions();
        var cacheActs = new Option<string?>("--cache-activations") { Description = "With --model: write the activations to this cache folder first (resumable) and train from it, instead of streaming." };
        var command = new Command("train", "Train a standard or gated SAE on activations (from files, or streamed from a language model).")
        {
            arch, mode, ablation, acts, tensor, dSae, l1, lr, batch, tokens, lrWarmup, lrDecay, l1Warmup, seed, beta1, beta2, eps,
            clip, resample, normalize, scale, init, rescaleOf, logEvery, ckptEvery, resume, output, cacheActs,
        };
        foreach (var o in lm.All)
        {
            command.Options.Add(o);
        }
        command.SetAction((parse, cancel) => Task.FromResult(CommonOptions.Guard(() =>
        {
            // A run that fails before its first checkpoint leaves nothing behind in a folder it created.
            var outDir = parse.GetValue(output)!;
            bool created = !Directory.Exists(outDir);
            try
            {
                return TrainCore(parse, cancel);
            }
            catch when (created && Directory.Exists(outDir) && SaeTrainer.LatestCheckpoint(outDir) is null)
            {
                Directory.Delete(outDir, recursive: true);
                throw;
            }
        })));

        int TrainCore(ParseResult parse, CancellationToken cancel)
        {
            string archName = parse.GetValue(arch)!, modeName = parse.GetValue(mode)!, ablationName = parse.GetValue(ablation)!;
            bool gated = archName == "gated";
            if ((modeName == "saelens" && !gated) || (modeName == "april-update" && gated))
            {
                throw new ArgumentException($"--mode {modeName} applies to {(gated ? "standard" : "gated")} SAEs only.");
            }

            if (ablationName != "none" && !gated)
            {
                throw new ArgumentException("--ablation applies to gated SAEs only.");
            }

            int batchSize = parse.GetValue(batch);
            long steps = parse.GetValue(tokens) / batchSize;
            using var device = CommonOptions.OpenDevice(parse);
            var sourceMetadata = new Dictionary<string, object?>();
            using var data = OpenTrainingData(parse, device, acts, tensor, lm, cacheActs, parse.GetValue(tokens), sourceMetadata, cancel);
            if (steps < 1)
            {
                throw new ArgumentException($"--tokens {parse.GetValue(tokens)} is less than one batch of {batchSize}.");
            }

            var recipe = modeName switch { "saelens" => TrainingRecipe.SaeLens, "april-update" => TrainingRecipe.AprilUpdate, _ => TrainingRecipe.Paper };
            var options = new TrainerOptions
            {
                Steps = steps,
                BatchSize = batchSize,
                LearningRate = parse.GetValue(lr),
                Beta1 = parse.GetValue(beta1),
                Beta2 = parse.GetValue(beta2),
                Epsilon = parse.GetValue(eps),
                LrWarmupSteps = parse.GetValue(lrWarmup),
                LrDecay = Enum.Parse<LrDecay>(parse.GetValue(lrDecay)!, ignoreCase: true),
                L1WarmupSteps = parse.GetValue(l1Warmup),
                GradClipNorm = parse.GetValue(clip),
                ResampleEvery = parse.GetValue(resample),
                NormalizeActivations = parse.GetValue(normalize),
                Seed = parse.GetValue(seed),
                LogEvery = parse.GetValue(logEvery),
                CheckpointEvery = parse.GetValue(ckptEvery),
                Loss = new SaeLossOptions
                {
                    L1Coefficient = parse.GetValue(l1),
                    Scale = parse.GetValue(scale) == "mean-d" ? ReconstructionScale.MeanOverDim : ReconstructionScale.Sum,
                },
            }.WithRecipe(recipe);
            if (ablationName == "unfrozen-aux")
            {
                options = options with { Loss = options.Loss with { FreezeAuxDecoder = false } };
            }

            var outDir = parse.GetValue(output)!;
            if (parse.GetValue(init) is null && parse.GetValue(rescaleOf) is null)
            {
                var planned = new SaeConfig
                {
                    Architecture = gated ? SaeArchitecture.Gated : SaeArchitecture.Standard,
                    DIn = data.Dim,
                    DSae = parse.GetValue(dSae) ?? throw new ArgumentException("--d-sae is required for a new SAE."),
                    Untied = ablationName == "untied",
                };
                var plan = MemoryPlan.EnsureFits(planned, batchSize, device.Description.MemoryBytes, device.Description.Label);
                Console.WriteLine($"Device memory plan: {plan}; {device.Description.Label} has {device.Description.MemoryBytes / (double)(1L << 30):0.##} GiB.");
            }

            var metadata = new Dictionary<string, object?>
            {
                ["training"] = new Dictionary<string, object?>
                {
                    ["mode"] = modeName, ["ablation"] = ablationName, ["l1_coefficient"] = options.Loss.L1Coefficient,
                    ["lr"] = options.LearningRate, ["batch_size"] = batchSize, ["steps"] = steps, ["seed"] = options.Seed,
                    ["activations"] = data.Description, ["backend"] = device.Description.Label,
                },
            };
            foreach (var (k, v) in sourceMetadata)
            {
                metadata[k] = v;
            }

            using var sae = BuildSae(device, parse.GetValue(init), parse.GetValue(rescaleOf), gated, modeName, ablationName,
                parse.GetValue(dSae), data.Dim, options, metadata, out var trainable);
            if (trainable is not null)
            {
                options = options with { TrainableParameters = trainable, Loss = options.Loss with { L1Coefficient = 0f }, ConstrainDecoderNorm = false };
            }

            using var trainer = new SaeTrainer(sae, data, options, outDir);
            if (parse.GetValue(resume) && SaeTrainer.LatestCheckpoint(outDir) is { } checkpoint)
            {
                trainer.Resume(checkpoint);
                Console.WriteLine($"Resumed from {checkpoint} at step {trainer.Step}.");
            }
            else if (!parse.GetValue(resume) && File.Exists(Path.Combine(outDir, SaeTrainer.MetricsFile)))
            {
                throw new ArgumentException($"{outDir} already holds a training run; pass --resume to continue it or choose another --out.");
            }

            Console.WriteLine($"Training {SaeFiles.ArchitectureName(sae.Config.Architecture)} SAE {sae.DIn}×{sae.DSae} ({modeName}" +
                              $"{(ablationName == "none" ? "" : ", " + ablationName)}) on {device}: {steps} steps of {batchSize} rows from {data.Description}.");
            var last = RunWithProgress(trainer, options, cancel);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"Done. Final loss {last?.Total:G5} (mse {last?.Mse:G5}, L0 {last?.L0:F2}). SAE written to {outDir}."));
            return 0;
        }

        return command;
    }

    /// <summary>
    /// The training activations: a file or cache (--acts), or a language model's site over a corpus, streamed or
    /// first written to a cache (--cache-activations). Fills <paramref name="metadata"/> with SAELens' provenance keys.
    /// </summary>
    private static IActivationSource OpenTrainingData(
        ParseResult parse, SaeDevice device, Option<string?> acts, Option<string?> tensor, LmCommands.ModelOptions lm, Option<string?> cacheActs,
        long tokens, Dictionary<string, object?> metadata, CancellationToken cancel)
    {
        if (!lm.Given(parse))
        {
            var source = ActivationSources.Open(RequireActs(parse, acts), parse.GetValue(tensor));
            if (source is ActivationCache cache)
            {
                foreach (var key in new[] { "model_name", "hook_name", "context_size", "prepend_bos", "exclude_special_tokens" })
                {
                    string from = key == "model_name" ? "model" : key;
                    if (cache.Manifest.Source.TryGetValue(from, out var value))
                    {
                        metadata[key] = value;
                    }
                }
            }

            return source;
        }

        if (parse.GetValue(acts) is not null)
        {
            throw new ArgumentException("Give either --acts or --model, not both.");
        }

        var (model, tokenizer, site, corpus) = lm.Open(parse, device);
        try
        {
            var plan = ActivationPlan.Create(model, tokenizer, new ActivationRequest
            {
                Site = site, Corpus = corpus, Tokens = tokens, ContextSize = parse.GetValue(lm.Context), Batch = parse.GetValue(lm.LmBatch),
                AllowFewerTokens = true,
            }, cancel);
            metadata["model_name"] = model.Name;
            metadata["hook_name"] = site;
            metadata["context_size"] = plan.ContextSize;
            metadata["prepend_bos"] = true;
            metadata["exclude_special_tokens"] = true;
            metadata["dataset_path"] = Path.GetFullPath(corpus);
            if (plan.Rows < tokens)
            {
                Console.WriteLine($"{corpus} gives {plan.Rows} activation rows at {site}; training passes over them {tokens / (double)plan.Rows:0.##} times.");
            }

            if (parse.GetValue(cacheActs) is { } cacheDir)
            {
                LmCommands.WithProgress("activations", plan.Rows, report => ActivationCacheBuilder.Build(
                    plan, cacheDir, progress: new LmCommands.ActionProgress<ActivationProgress>(p => report(p.Rows)), cancellationToken: cancel));
                model.Dispose();
                return ActivationCache.Open(cacheDir);
            }

            return new ModelOwningSource(new StreamingModelActivations(plan), model);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>A streamed source that also disposes its model.</summary>
    private sealed class ModelOwningSource(IActivationSource inner, IDisposable model) : IActivationSource
    {
        public int Dim => inner.Dim;

        public long Rows => inner.Rows;

        public string Description => inner.Description;

        public void ReadRows(long firstRow, Span<float> destination) => inner.ReadRows(firstRow, destination);

        public void Dispose()
        {
            inner.Dispose();
            model.Dispose();
        }
    }

    private static SparseAutoencoder BuildSae(
        SaeDevice device, string? init, string? rescaleOf, bool gated, string mode, string ablation, int? dSae, int dIn,
        TrainerOptions options, Dictionary<string, object?> metadata, out IReadOnlyList<string>? trainable)
    {
        trainable = null;
        if (rescaleOf is not null)
        {
            if (!gated)
            {
                throw new ArgumentException("--rescale-shift-of builds a gated wrapper; use --arch gated.");
            }

            using var baseline = SaeFiles.Load(device, rescaleOf);
            trainable = ["r_mag", "b_mag"];
            return RescaleShift.Wrap(baseline, metadata);
        }

        if (init is not null)
        {
            var loaded = SaeFiles.Load(device, init);
            var expected = gated ? SaeArchitecture.Gated : SaeArchitecture.Standard;
            if (loaded.Config.Architecture != expected || (dSae is int m && m != loaded.DSae) || loaded.DIn != dIn)
            {
                var message = $"--init {init} holds a {loaded.Config.Architecture} SAE {loaded.DIn}×{loaded.DSae}; this run needs {expected} {dIn}×{dSae?.ToString(CultureInfo.InvariantCulture) ?? loaded.DSae.ToString(CultureInfo.InvariantCulture)}.";
                loaded.Dispose();
                throw new ArgumentException(message);
            }

            return loaded;
        }

        var config = new SaeConfig
        {
            Architecture = gated ? SaeArchitecture.Gated : SaeArchitecture.Standard,
            DIn = dIn,
            DSae = dSae ?? throw new ArgumentException("--d-sae is required for a new SAE."),
            ApplyBDecToInput = mode != "april-update",
            UseRMag = ablation != "no-rmag",
            Untied = ablation == "untied",
            Metadata = metadata,
        };
        return SparseAutoencoder.Create(device, config, options.Seed, options.DecoderInitNorm);
    }

    private static LossBreakdown? RunWithProgress(SaeTrainer trainer, TrainerOptions options, CancellationToken cancel)
    {
        if (Console.IsOutputRedirected)
        {
            return trainer.Train(new ActionProgress(p =>
            {
                if (p.Step % options.LogEvery == 0 || p.Step == p.TotalSteps)
                {
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"step {p.Step}/{p.TotalSteps}  tokens {p.Tokens}  {p.TokensPerSecond:F0} tok/s  L0 {p.Loss?.L0:F2}  mse {p.Loss?.Mse:G4}  dead {p.DeadFeatures}"));
                }
            }), cancel);
        }

        LossBreakdown? result = null;
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask("training", maxValue: options.Steps);
                task.Value = trainer.Step;
                result = trainer.Train(new ActionProgress(p =>
                {
                    task.Value = p.Step;
                    task.Description = string.Create(CultureInfo.InvariantCulture,
                        $"{p.TokensPerSecond:F0} tok/s  L0 {p.Loss?.L0:F1}  mse {p.Loss?.Mse:G3}");
                }), cancel);
            });
        return result;
    }

    /// <summary>Reports on the calling thread (System.Progress would post to the thread pool and reorder lines).</summary>
    private sealed class ActionProgress(Action<TrainingProgress> report) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => report(value);
    }

    public static Command Eval()
    {
        var sae = new Option<string>("--sae") { Description = "SAE folder (cfg.json + sae_weights.safetensors) or Gemma Scope params.npz.", Required = true };
        var acts = Acts();
        var tensor = Tensor();
        var tokens = new Option<long?>("--tokens") { Description = "Rows to evaluate (default: all of --acts; 16384 corpus tokens with --model)." };
        var batch = new Option<int>("--batch-size") { Description = "Rows per forward pass.", DefaultValueFactory = _ => 1024 };
        var json = new Option<bool>("--json") { Description = "Print JSON (SAELens metric names)." };
        var lm = new LmCommands.ModelOptions();
        lm.Site.Description += " Default with --model: the SAE's metadata hook_name.";
        var spliceSpecial = new Option<bool>("--splice-special-tokens") { Description = "Also replace the site at BOS/EOS/PAD positions (default: they keep clean activations, as SAEBench)." };
        var skipSpecialLoss = new Option<bool>("--exclude-special-from-loss") { Description = "Do not count predictions made at BOS/EOS/PAD positions (default: every next-token prediction counts)." };
        var command = new Command("eval", "Reconstruction and sparsity metrics of an SAE on activations; with --model also loss recovered (ce_loss_score) and the KL score.")
        {
            sae, acts, tensor, tokens, batch, json, spliceSpecial, skipSpecialLoss,
        };
        foreach (var o in lm.All)
        {
            command.Options.Add(o);
        }

        command.SetAction((parse, cancel) => Task.FromResult(CommonOptions.Guard(() =>
        {
            using var device = CommonOptions.OpenDevice(parse);
            using var model = SaeFiles.Load(device, parse.GetValue(sae)!);
            SaeMetrics metrics;
            DownstreamMetrics? downstream = null;
            if (lm.Given(parse))
            {
                if (parse.GetValue(acts) is not null)
                {
                    throw new ArgumentException("Give either --acts or --model, not both.");
                }

                downstream = EvaluateWithModel(parse, device, model, lm, parse.GetValue(tokens) ?? 16384,
                    new SpliceOptions { SpliceSpecialTokens = parse.GetValue(spliceSpecial), CountSpecialPositions = !parse.GetValue(skipSpecialLoss), Batch = parse.GetValue(lm.LmBatch) },
                    cancel);
                metrics = downstream.Reconstruction!;
            }
            else
            {
                using var data = ActivationSources.Open(RequireActs(parse, acts), parse.GetValue(tensor));
                metrics = SaeEvaluator.Evaluate(model, data, parse.GetValue(batch), parse.GetValue(tokens) ?? long.MaxValue, cancellationToken: cancel);
            }

            if (parse.GetValue(json))
            {
                Console.WriteLine(downstream is null ? JsonSerializer.Serialize(metrics, Indented) : JsonSerializer.Serialize(downstream, Indented));
                return 0;
            }

            var table = new Table().AddColumns("metric", "value");
            var rows = new List<(string, double)>
            {
                ("tokens", metrics.Tokens), ("l0", metrics.L0), ("l1", metrics.L1), ("mse", metrics.Mse),
                ("explained_variance", metrics.ExplainedVariance), ("explained_variance_legacy", metrics.ExplainedVarianceLegacy),
                ("cossim", metrics.CosSim), ("l2_ratio", metrics.L2Ratio),
                ("relative_reconstruction_bias (γ)", metrics.RelativeReconstructionBias), ("frac_alive", metrics.FractionAlive),
                ("dead_features", metrics.DeadFeatures),
            };
            if (downstream is not null)
            {
                rows.AddRange([
                    ("ce_loss_without_sae", downstream.CeLossWithoutSae), ("ce_loss_with_sae", downstream.CeLossWithSae),
                    ("ce_loss_with_ablation", downstream.CeLossWithAblation), ("ce_loss_score (loss recovered)", downstream.CeLossScore),
                    ("kl_div_with_sae", downstream.KlDivWithSae), ("kl_div_with_ablation", downstream.KlDivWithAblation),
                    ("kl_div_score", downstream.KlDivScore), ("ce_tokens", downstream.CountedTokens),
                ]);
            }

            foreach (var (name, value) in rows)
            {
                table.AddRow(name, value.ToString("G6", CultureInfo.InvariantCulture));
            }

            CommonOptions.CreateConsole().Write(table);
            if (downstream is not null)
            {
                Console.WriteLine($"Counted: {downstream.TokensCounted}; {downstream.Contexts} contexts of {downstream.ContextSize} tokens.");
            }

            return 0;
        })));
        return command;
    }

    private static DownstreamMetrics EvaluateWithModel(
        ParseResult parse, SaeDevice device, SparseAutoencoder sae, LmCommands.ModelOptions lm, long tokens, SpliceOptions options, CancellationToken cancel)
    {
        var folder = parse.GetValue(lm.Model)!;
        var site = parse.GetValue(lm.Site)
            ?? (sae.Config.Metadata.TryGetValue("hook_name", out var hook) && hook?.ToString() is { Length: > 0 } h ? h
                : throw new ArgumentException("--site is required: the SAE's metadata has no hook_name."));
        var corpus = parse.GetValue(lm.Corpus) ?? throw new ArgumentException("--corpus is required with --model.");
        using var model = LanguageModel.Load(device, folder);
        var tokenizer = LmTokenizer.Load(folder, model.Config);
        int context = parse.GetValue(lm.Context) == 0 ? model.Config.ContextLength : parse.GetValue(lm.Context);
        if (context < 2 || context > model.Config.ContextLength)
        {
            throw new ArgumentException($"--context {context} must be between 2 and the model's context of {model.Config.ContextLength}.");
        }

        if (tokens <= 0)
        {
            throw new ArgumentException($"--tokens must be positive (got {tokens}).");
        }

        var text = TokenCorpus.Load(corpus, tokenizer, model.Config.BosTokenId, tokens + 2L * context, cancel);
        int count = (int)Math.Min(text.ContextCount(context), Math.Max(1, tokens / (context - 1)));
        if (count == 0)
        {
            throw new ArgumentException($"{corpus} holds fewer than {context} tokens: not one context.");
        }

        var contexts = text.Contexts(0, count, context);
        Console.WriteLine($"Evaluating {sae.Config.Architecture} SAE {sae.DIn}×{sae.DSae} at {site} of {model.Name} on {device}: {count} contexts of {context} tokens from {corpus}.");
        return LmCommands.WithProgress("eval", count, report => DownstreamEvaluator.Evaluate(
            model, site, sae, contexts, context, options, new LmCommands.ActionProgress<int>(done => report(done)), cancel));
    }

    public static Command Export()
    {
        var sae = new Option<string>("--sae") { Description = "A gated SAE folder.", Required = true };
        var to = new Option<string>("--to") { Description = "Target architecture (jumprelu).", Required = true };
        to.AcceptOnlyFromAmong("jumprelu");
        var output = new Option<string>("--out") { Description = "Output SAE folder.", Required = true };
        var command = new Command("export", "Export a gated SAE as the exactly equivalent JumpReLU SAE (SAELens layout).") { sae, to, output };
        command.SetAction(parse => CommonOptions.Guard(() =>
        {
            using var device = CommonOptions.OpenDevice(parse);
            using var gated = SaeFiles.Load(device, parse.GetValue(sae)!);
            if (gated.Config.Architecture != SaeArchitecture.Gated)
            {
                throw new ArgumentException($"{parse.GetValue(sae)} is a {gated.Config.Architecture} SAE; export --to jumprelu needs a gated one.");
            }

            using var jump = SaeFiles.ExportJumpRelu(gated);
            SaeFiles.Save(jump, parse.GetValue(output)!);
            Console.WriteLine($"Wrote the JumpReLU form of {parse.GetValue(sae)} to {parse.GetValue(output)}.");
            return 0;
        }));
        return command;
    }

    public static Command Encode()
    {
        var sae = new Option<string>("--sae") { Description = "SAE folder or Gemma Scope params.npz.", Required = true };
        var acts = Acts();
        var tensor = Tensor();
        var output = new Option<string>("--out") { Description = "Output .safetensors file (CSR: indptr, indices, values).", Required = true };
        var tokens = new Option<long>("--tokens") { Description = "Encode at most this many rows.", DefaultValueFactory = _ => long.MaxValue };
        var batch = new Option<int>("--batch-size") { Description = "Rows per forward pass.", DefaultValueFactory = _ => 1024 };
        var command = new Command("encode", "Encode activations into sparse features (indices + values, CSR rows) in a safetensors file.")
        {
            sae, acts, tensor, output, tokens, batch,
        };
        command.SetAction(parse => CommonOptions.Guard(() =>
        {
            using var device = CommonOptions.OpenDevice(parse);
            using var model = SaeFiles.Load(device, parse.GetValue(sae)!);
            using var data = ActivationSources.Open(RequireActs(parse, acts), parse.GetValue(tensor));
            var (indptr, indices, values) = SparseEncoder.Encode(model, data, parse.GetValue(batch), parse.GetValue(tokens));
            SafetensorsWriter.Write(parse.GetValue(output)!,
            [
                new TensorToWrite("indptr", [indptr.Length], Longs: indptr),
                new TensorToWrite("indices", [indices.Length], Ints: indices),
                new TensorToWrite("values", [values.Length], values),
            ], new Dictionary<string, string> { ["d_sae"] = model.DSae.ToString(CultureInfo.InvariantCulture), ["format"] = "csr" });
            Console.WriteLine($"Encoded {indptr.Length - 1} rows ({values.Length} non-zeros, mean L0 {values.Length / (double)(indptr.Length - 1):F2}) to {parse.GetValue(output)}.");
            return 0;
        }));
        return command;
    }

    public static Command Synth()
    {
        var rows = new Option<int>("--rows") { Description = "Rows to generate.", DefaultValueFactory = _ => 65536 };
        var d = new Option<int>("--d") { Description = "Activation width.", DefaultValueFactory = _ => 32 };
        var features = new Option<int>("--features") { Description = "True features (directions).", DefaultValueFactory = _ => 128 };
        var l0 = new Option<double>("--l0") { Description = "Mean number of active true features per row.", DefaultValueFactory = _ => 4 };
        var seed = new Option<ulong>("--seed") { Description = "Seed.", DefaultValueFactory = _ => 1UL };
        var output = new Option<string>("--out") { Description = "Output .npy [rows, d]; the true directions go to <out>.directions.npy.", Required = true };
        var command = new Command("synth", "Write a superposition toy dataset with known sparse ground truth (for tests and demos).")
        {
            rows, d, features, l0, seed, output,
        };
        command.SetAction(parse => CommonOptions.Guard(() =>
        {
            var data = SyntheticData.Generate(parse.GetValue(rows), parse.GetValue(d), parse.GetValue(features), parse.GetValue(l0), parse.GetValue(seed));
            var path = parse.GetValue(output)!;
            Npy.WriteFloats(path, data.Rows, data.N, data.D);
            Npy.WriteFloats(Path.ChangeExtension(path, ".directions.npy"), data.Directions, data.Features, data.D);
            Console.WriteLine($"Wrote {data.N}×{data.D} activations from {data.Features} true directions to {path}.");
            return 0;
        }));
        return command;
    }
}
