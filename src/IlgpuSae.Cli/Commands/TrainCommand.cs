using System.CommandLine;
using System.Globalization;
using IlgpuSae.Backends;
using IlgpuSae.Data;
using IlgpuSae.IO;
using IlgpuSae.Lm;
using IlgpuSae.Sae;
using IlgpuSae.Training;
using Spectre.Console;

namespace IlgpuSae.Cli.Commands;

/// <summary><c>train</c>: parses the options into an <see cref="SaeRecipe"/> and <see cref="TrainerOptions"/>
/// and runs <see cref="SaeTrainer"/>.</summary>
internal static class TrainCommand
{
    public static Command Create()
    {
        var o = new Options();
        var command = new Command(
            "train",
            "Train an SAE (standard, gated, topk, batchtopk, matryoshka or jumprelu) on activations (from files, or streamed from a language model)."
        )
        {
            o.Arch,
            o.K,
            o.AuxK,
            o.AuxCoefficient,
            o.DeadWindow,
            o.MatryoshkaWidths,
            o.LevelWeights,
            o.Bandwidth,
            o.L0Coefficient,
            o.ThresholdInit,
            o.SteToInput,
            o.JumpReluSparsity,
            o.TanhScale,
            o.PreActCoefficient,
            o.PreActLatents,
            o.TargetL0,
            o.L0StepOn,
            o.ThresholdStart,
            o.RescaleActs,
            o.BDecInit,
            o.Mode,
            o.Ablation,
            o.DSae,
            o.L1,
            o.Lr,
            o.Batch,
            o.Tokens,
            o.LrWarmup,
            o.LrDecay,
            o.L1Warmup,
            o.Seed,
            o.Beta1,
            o.Beta2,
            o.Eps,
            o.Clip,
            o.Resample,
            o.Normalize,
            o.Scale,
            o.Init,
            o.RescaleOf,
            o.LogEvery,
            o.CkptEvery,
            o.Resume,
            o.Overrides,
            o.Output,
            o.CacheActs,
            o.Parallel,
            o.ParallelCheck,
        };
        foreach (var option in o.Acts.All.Concat(o.Lm.All))
        {
            command.Options.Add(option);
        }

        command.SetAction(
            (parse, cancel) =>
                Task.FromResult(
                    CommonOptions.Guard(() =>
                    {
                        // A run that fails before its first checkpoint leaves nothing behind in a folder it
                        // created.
                        var outDir = parse.GetValue(o.Output)!;
                        using var launch = ParallelLaunch.Open(parse.GetValue(o.Parallel), outDir);
                        bool created =
                            (launch is null || launch.Group.Rank == 0) && !Directory.Exists(outDir);
                        try
                        {
                            return Run(o, parse, launch, cancel);
                        }
                        catch (Exception e) when (launch is not null && !launch.Started)
                        {
                            // Failed while setting up: the other ranks learn why in the start-up collective.
                            launch.Fail(e);
                            DeleteIfFresh(outDir, created);
                            throw;
                        }
                        catch (Exception e)
                            when (launch is { Agreed: true } && e is not OperationCanceledException)
                        {
                            // Failed mid-run: every other rank would wait forever in its next collective.
                            launch.AbortAll(e);
                            throw;
                        }
                        catch when (created)
                        {
                            DeleteIfFresh(outDir, created);
                            throw;
                        }
                    })
                )
        );

        return command;
    }

    /// <summary>Deletes <paramref name="outDir"/> if this run created it and it holds no
    /// checkpoint.</summary>
    private static void DeleteIfFresh(string outDir, bool created)
    {
        if (created && Directory.Exists(outDir) && SaeTrainer.LatestCheckpoint(outDir) is null)
        {
            Directory.Delete(outDir, recursive: true);
        }
    }

    /// <summary>
    /// Environment variable for tests: sleep this many milliseconds after every step, so that a test can
    /// act on a run mid-way (kill a rank) without a long run.
    /// </summary>
    internal const string StepDelayVariable = "ILGPUSAE_STEP_DELAY_MS";

    private static readonly int StepDelayMs = int.TryParse(
        Environment.GetEnvironmentVariable(StepDelayVariable),
        NumberStyles.Integer,
        CultureInfo.InvariantCulture,
        out int ms
    )
        ? ms
        : 0;

    private static void Pace()
    {
        if (StepDelayMs > 0)
        {
            Thread.Sleep(StepDelayMs);
        }
    }

    private static int Run(Options o, ParseResult parse, ParallelLaunch? launch, CancellationToken cancel)
    {
        var group = launch?.Group;
        bool root = group is null || group.Rank == 0;
        string? mode = parse.GetValue(o.Parallel);
        bool features = mode == "features";
        if (parse.GetValue(o.ParallelCheck) && launch is null)
        {
            throw new ArgumentException("--parallel-check applies to --parallel only.");
        }

        if (features && parse.GetValue(o.RescaleOf) is not null)
        {
            throw new ArgumentException(
                "--rescale-shift-of trains two scalars per feature; it is not sharded."
            );
        }

        if (features && parse.GetValue(o.DSae) is null)
        {
            throw new ArgumentException(
                "--parallel features needs --d-sae (every rank needs the width; only rank 0 reads --init)."
            );
        }

        string arch = parse.GetValue(o.Arch)!;
        if (features && arch == "matryoshka")
        {
            throw new NotSupportedException(FeatureShards.MatryoshkaRefusal);
        }

        var recipe = SaeRecipe.Parse(
            arch == "matryoshka" ? "matryoshka_batchtopk" : arch,
            parse.GetValue(o.Mode),
            parse.GetValue(o.Ablation)!,
            parse.GetValue(o.RescaleOf) is not null,
            parse.GetValue(o.K) ?? 0,
            ParseList(parse.GetValue(o.MatryoshkaWidths), "--matryoshka-widths", int.Parse),
            parse.GetValue(o.RescaleActs)
        );
        bool Given(Option option) => parse.GetResult(option) is { Implicit: false };
        if (recipe.K > 0 && (Given(o.L1) || Given(o.L1Warmup)))
        {
            throw new ArgumentException(
                $"--l1 and --l1-warmup do not apply to {recipe.Architecture.Name} SAEs: their sparsity is --k."
            );
        }

        bool jumpRelu = recipe.Architecture == SaeArchitecture.JumpRelu;
        if (jumpRelu && Given(o.L1))
        {
            throw new ArgumentException("JumpReLU's sparsity coefficient is --l0-coefficient, not --l1.");
        }

        foreach (
            var (option, applies, family) in new (Option, bool, string)[]
            {
                (o.AuxK, recipe.IsTopKFamily, "the TopK family"),
                (o.AuxCoefficient, recipe.IsTopKFamily, "the TopK family"),
                (
                    o.DeadWindow,
                    recipe.IsTopKFamily || (jumpRelu && Given(o.PreActCoefficient)),
                    "the TopK family (AuxK) and jumprelu SAEs with --pre-act-coefficient"
                ),
                (o.LevelWeights, recipe.Architecture == SaeArchitecture.Matryoshka, "matryoshka SAEs"),
                (o.Bandwidth, jumpRelu, "jumprelu SAEs"),
                (o.L0Coefficient, jumpRelu, "jumprelu SAEs"),
                (o.ThresholdInit, jumpRelu, "jumprelu SAEs"),
                (o.SteToInput, jumpRelu, "jumprelu SAEs"),
                (o.JumpReluSparsity, jumpRelu, "jumprelu SAEs"),
                (o.TanhScale, jumpRelu, "jumprelu SAEs"),
                (o.PreActCoefficient, jumpRelu, "jumprelu SAEs"),
                (o.PreActLatents, jumpRelu, "jumprelu SAEs"),
                (o.TargetL0, jumpRelu, "jumprelu SAEs"),
                (o.L0StepOn, jumpRelu, "jumprelu SAEs"),
                (o.ThresholdStart, recipe.Architecture is BatchTopKSae, "batchtopk and matryoshka SAEs"),
            }
        )
        {
            if (Given(option) && !applies)
            {
                throw new ArgumentException($"{option.Name} applies to {family} only.");
            }
        }

        bool dlJump = jumpRelu && recipe.Mode == TrainingRecipe.DictionaryLearning;
        foreach (
            var (option, dl) in new (Option, bool)[]
            {
                (o.SteToInput, false),
                (o.JumpReluSparsity, false),
                (o.TanhScale, false),
                (o.PreActCoefficient, false),
                (o.PreActLatents, false),
                (o.TargetL0, true),
                (o.L0StepOn, true),
            }
        )
        {
            if (jumpRelu && Given(option) && dl != dlJump)
            {
                throw new ArgumentException(
                    dl
                        ? $"{option.Name} applies to --mode dictionary-learning (dictionary_learning's target-L0 trainer), not to --mode {recipe.ModeName}."
                        : $"{option.Name} applies to --mode saelens; --mode dictionary-learning trains dictionary_learning's target-L0 loss."
                );
            }
        }

        if (Given(o.PreActLatents) && !Given(o.PreActCoefficient))
        {
            throw new ArgumentException(
                "--pre-act-latents chooses the latents of the pre-activation loss; give --pre-act-coefficient too."
            );
        }

        if (jumpRelu && Given(o.DeadWindow) && parse.GetValue(o.PreActLatents) == "all")
        {
            throw new ArgumentException(
                "--dead-window does not apply with --pre-act-latents all (every latent is penalised)."
            );
        }

        if (
            recipe.IsTopKFamily
            && recipe.Mode == TrainingRecipe.Paper
            && (Given(o.AuxK) || Given(o.AuxCoefficient))
        )
        {
            throw new ArgumentException(
                "--mode paper trains TopK without AuxK; use --mode dictionary-learning or saelens for --aux-k/--aux-coefficient."
            );
        }

        int batchSize = parse.GetValue(o.Batch);
        long steps = parse.GetValue(o.Tokens) / batchSize;
        var outDir = parse.GetValue(o.Output)!;
        // Reliability (issue 16): outputs never overlap inputs, one run per folder, and a log left by a run
        // killed before its first checkpoint is discarded rather than blocking or polluting this one.
        var inputs = new (string, string?)[]
        {
            ("--acts", parse.GetValue(o.Acts.Acts)),
            ("--init", parse.GetValue(o.Init)),
            ("--rescale-shift-of", parse.GetValue(o.RescaleOf)),
            ("--model", parse.GetValue(o.Lm.Model)),
            ("--corpus", parse.GetValue(o.Lm.Corpus)),
        };
        OutputPaths.EnsureSeparate("--out", outDir, inputs);
        OutputPaths.EnsureSeparate("--cache-activations", parse.GetValue(o.CacheActs), inputs);
        if (
            parse.GetValue(o.CacheActs) is { } cachePath
            && Path.TrimEndingDirectorySeparator(Path.GetFullPath(cachePath))
                == Path.TrimEndingDirectorySeparator(Path.GetFullPath(outDir))
        )
        {
            throw new ArgumentException("--cache-activations must be another folder than --out.");
        }
        // Data-parallel: rank 0 alone owns --out; the other ranks never touch it.
        using var folderLock = root ? FolderLock.Acquire(outDir, "train") : null;
        if (folderLock?.StaleNote is { } stale)
        {
            Console.Error.WriteLine($"note: {outDir}: {stale}.");
        }

        // Parallel: rank 0 locks the cache folder for the ranks that write it together.
        using var cacheLock =
            root && parse.GetValue(o.CacheActs) is { } cacheDir
                ? FolderLock.Acquire(cacheDir, "train --cache-activations")
                : null;
        var metricsPath = Path.Combine(outDir, SaeTrainer.MetricsFile);
        if (
            root
            && File.Exists(metricsPath)
            && SaeTrainer.LatestCheckpoint(outDir) is null
            && !File.Exists(Path.Combine(outDir, SaeFiles.ConfigFile))
        )
        {
            Console.Error.WriteLine(
                $"note: {outDir} holds the log of a run interrupted before its first checkpoint; it is discarded and training starts from step 0."
            );
            File.Delete(metricsPath);
        }

        if (root && !parse.GetValue(o.Resume) && File.Exists(metricsPath))
        {
            throw new ArgumentException(
                $"{outDir} already holds a training run; pass --resume to continue it or choose another --out."
            );
        }

        if (root && parse.GetValue(o.Resume) && File.Exists(Path.Combine(outDir, SaeFiles.ConfigFile)))
        {
            throw new ArgumentException(
                $"{outDir} holds a finished run, which is never overwritten; to train further, start a new run from it with --init {outDir} --out NEW_FOLDER."
            );
        }

        if (parse.GetValue(o.Overrides) is { Length: > 0 } && !parse.GetValue(o.Resume))
        {
            throw new ArgumentException("--override applies to --resume only.");
        }

        if (
            root
            && parse.GetValue(o.Overrides) is { Length: > 0 }
            && SaeTrainer.LatestCheckpoint(outDir) is null
        )
        {
            throw new ArgumentException(
                $"--override: {outDir} has no checkpoint to resume from, so there is nothing to override."
            );
        }

        using var device = CommonOptions.OpenDevice(
            parse,
            defaultIndex: launch?.DefaultDevice(BackendKinds.Resolve(parse.GetValue(CommonOptions.Backend)))
        );
        var provenance = new Dictionary<string, object?>();
        using var data = OpenData(
            parse,
            device,
            o.Acts,
            o.Lm,
            parse.GetValue(o.CacheActs),
            parse.GetValue(o.Tokens),
            provenance,
            launch,
            cancel
        );
        if (steps < 1)
        {
            throw new ArgumentException(
                $"--tokens {parse.GetValue(o.Tokens)} is less than one batch of {batchSize}."
            );
        }

        var options = recipe.Apply(o.ToTrainerOptions(parse, steps), data.Dim);
        options = o.WithExplicitOverrides(parse, options, recipe);
        foreach (var warning in TrainingWarnings.For(options, data.Rows, recipe.Architecture))
        {
            Console.Error.WriteLine($"warning: {warning}");
        }

        if (parse.GetValue(o.Init) is not null && parse.GetValue(o.RescaleOf) is not null)
        {
            throw new ArgumentException(
                "Give --init or --rescale-shift-of, not both: --rescale-shift-of starts from its baseline."
            );
        }
        if (parse.GetValue(o.Normalize) && recipe.RescaleShift)
        {
            throw new ArgumentException(
                "--normalize-activations does not apply to --rescale-shift-of: the baseline's normalisation is folded into its weights."
            );
        }

        if (parse.GetValue(o.Init) is null && !recipe.RescaleShift)
        {
            var planned = recipe.Config(
                data.Dim,
                parse.GetValue(o.DSae) ?? throw new ArgumentException("--d-sae is required for a new SAE.")
            );
            if (features)
            {
                planned = FeatureShards.ShardConfig(planned, group!.Size); // this rank's block
            }

            var plan = MemoryPlan.EnsureFits(
                planned,
                batchSize,
                device.Description.MemoryBytes,
                device.Description.Label
            );
            Console.WriteLine(
                $"Device memory plan: {plan}; {device.Description.Label} has {device.Description.MemoryBytes / (double)(1L << 30):0.##} GiB."
            );
        }

        var metadata = new Dictionary<string, object?>(provenance)
        {
            ["training"] = recipe.Provenance(
                options,
                new Dictionary<string, object?>
                {
                    ["activations"] = data.Description,
                    ["backend"] = device.Description.Label,
                    ["parallel"] = group is null ? null : $"{mode}, {group.Size} ranks",
                }
            ),
        };
        // Feature-sharded: rank 0 holds the whole SAE in host memory (created, or read from --init, as one
        // process would), sends each rank its block when training starts and gathers them to save.
        using var hostDevice = features && root ? SaeDevice.Create(BackendKind.Cpu) : null;
        var sourceDevice = hostDevice ?? device;
        using var whole =
            features && !root ? null
            : parse.GetValue(o.RescaleOf) is { } baselinePath
                ? Wrap(recipe, sourceDevice, baselinePath, metadata)
            : parse.GetValue(o.Init) is { } initPath
                ? WithMetadata(
                    recipe.LoadInitial(sourceDevice, initPath, data.Dim, parse.GetValue(o.DSae)),
                    new Dictionary<string, object?>(metadata) { ["initialized_from"] = initPath },
                    recipeSubtractsBDec: !(
                        recipe.Architecture == SaeArchitecture.JumpRelu
                        && recipe.Mode == TrainingRecipe.DictionaryLearning
                    )
                )
            : recipe.Create(sourceDevice, data.Dim, parse.GetValue(o.DSae)!.Value, options, metadata);
        FeatureShards? shards = null;
        SparseAutoencoder? block = null;
        if (features)
        {
            var wholeConfig =
                whole?.Config ?? recipe.Config(data.Dim, parse.GetValue(o.DSae)!.Value, metadata);
            shards = new FeatureShards(wholeConfig, whole);
            block = SparseAutoencoder.CreateEmpty(
                device,
                FeatureShards.ShardConfig(wholeConfig, group!.Size)
            );
        }

        using var blockOwner = block;
        var sae = block ?? whole!;
        using var trainer = new SaeTrainer(sae, data, options, outDir, group, shards)
        {
            VerifyReplicas =
                parse.GetValue(o.ParallelCheck)
                || Environment.GetEnvironmentVariable(ParallelLaunch.CheckVariable) == "1",
        };
        // In parallel, rank 0 resumes and sends its state to the others when training starts.
        if (root && parse.GetValue(o.Resume) && SaeTrainer.LatestCheckpoint(outDir) is { } checkpoint)
        {
            EnsureSameData(checkpoint, metadata, data.Description);
            if (parse.GetValue(o.Init) is { } ignoredInit)
            {
                Console.Error.WriteLine(
                    $"note: --init {ignoredInit} is not used: a resumed run continues from {checkpoint}."
                );
            }

            trainer.Resume(checkpoint, parse.GetValue(o.Overrides));
            Console.WriteLine($"Resumed from {checkpoint} at step {trainer.Step}.");
        }

        if (launch is not null)
        {
            // Streamed across the ranks: they must also split the same contexts into the same batches.
            launch.Agree([
                .. trainer.ConfigurationDigest(),
                .. (data as ShardedStreamingActivations)?.Digest ?? [],
            ]);
        }

        Console.WriteLine(
            $"Training {sae.Architecture.Name} SAE {sae.DIn}×{shards?.Whole.DSae ?? sae.DSae} ({recipe.ModeName}"
                + $"{(recipe.Ablation == GatedAblation.None ? "" : ", " + recipe.AblationName)}) on {device}: {steps} steps of {batchSize} rows from {data.Description}"
                + (
                    group is null ? "."
                    : features ? $", {group.Size} ranks × {sae.DSae} features."
                    : $", {group.Size} ranks × {batchSize / group.Size} rows."
                )
        );
        var last = RunWithProgress(trainer, options, cancel);
        Console.WriteLine(
            string.Create(
                CultureInfo.InvariantCulture,
                $"Done. Final loss {last?.Total:G5} (mse {last?.Mse:G5}, L0 {last?.L0:F2}). SAE written to {outDir}."
            )
        );
        if (data is ShardedStreamingActivations streamed && group is not null)
        {
            Console.WriteLine(
                $"Streamed across {group.Size} ranks: rank 0 ran the model on {streamed.ContextsComputed} contexts of the {streamed.GroupsComputed} context groups read during training."
            );
        }

        if (group is not null && trainer.StepTimings.Count > 0)
        {
            // After the first step (JIT, allocation): the median step and its share in collectives.
            var steady =
                trainer.StepTimings.Count > 1
                    ? trainer.StepTimings.Skip(1).ToArray()
                    : [.. trainer.StepTimings];
            static double Median(IEnumerable<double> v) => v.Order().ElementAt((v.Count() - 1) / 2);
            Console.WriteLine(
                string.Create(
                    CultureInfo.InvariantCulture,
                    $"Parallel {mode} on {group.Size} ranks (rank 0, {steady.Length} steps after the first): median step {Median(steady.Select(t => t.Seconds)):F4} s, of which {Median(steady.Select(t => t.CommunicationSeconds)):F4} s in collectives; {steady.Average(t => (double)t.CommunicationBytes) / 1e6:F2} MB moved per step."
                )
            );
        }
        return 0;
    }

    /// <summary>
    /// The SAE of <c>--init</c> with this run's metadata (its data's hook, model and context, this run's
    /// training entry) instead of the old SAE's, which would otherwise send <c>eval --model</c> to the old
    /// site.
    /// </summary>
    private static SparseAutoencoder WithMetadata(
        SparseAutoencoder loaded,
        IReadOnlyDictionary<string, object?> metadata,
        bool recipeSubtractsBDec = true
    )
    {
        try
        {
            // dictionary_learning's JumpReluTrainer never subtracts b_dec from the input (jumprelu.py,
            // loss): in that mode an --init SAE saved with apply_b_dec_to_input trains and saves without it.
            bool subtract = loaded.Config.ApplyBDecToInput && recipeSubtractsBDec;
            if (loaded.Config.ApplyBDecToInput && !subtract)
            {
                Console.Error.WriteLine(
                    "warning: the --init SAE subtracts b_dec from its input; this mode's trainer does not (dictionary_learning's JumpReluTrainer), so it trains and saves with apply_b_dec_to_input false."
                );
            }

            var fresh = SparseAutoencoder.CreateEmpty(
                loaded.Device,
                loaded.Config with
                {
                    Metadata = metadata,
                    ApplyBDecToInput = subtract,
                }
            );
            fresh.CopyParametersFrom(loaded);
            return fresh;
        }
        finally
        {
            loaded.Dispose();
        }
    }

    /// <summary>
    /// Refuses <c>--resume</c> onto activations of another model, hook, context or dataset than the
    /// checkpoint was trained on (as both record them), and notes a different activation path.
    /// </summary>
    private static void EnsureSameData(
        string checkpoint,
        IReadOnlyDictionary<string, object?> metadata,
        string description
    )
    {
        var saved = SaeFiles.ReadConfig(Path.Combine(checkpoint, SaeFiles.ConfigFile)).Metadata;
        static string? Text(object? v) =>
            v switch
            {
                null => null,
                System.Text.Json.Nodes.JsonValue j when j.TryGetValue<string>(out var s) => s,
                System.Text.Json.Nodes.JsonNode j => j.ToJsonString(),
                System.Text.Json.JsonElement { ValueKind: System.Text.Json.JsonValueKind.String } e =>
                    e.GetString(),
                System.Text.Json.JsonElement e => e.GetRawText(),
                string s => s,
                _ => System.Text.Json.JsonSerializer.Serialize(v),
            };
        var changed = new List<string>();
        foreach (var key in new[] { "model_name", "hook_name", "context_size", "dataset_path" })
        {
            string? before = saved.TryGetValue(key, out var b) ? Text(b) : null;
            string? now = metadata.TryGetValue(key, out var n) ? Text(n) : null;
            if (before != now)
            {
                changed.Add($"{key}: checkpoint {before ?? "(absent)"}, this run {now ?? "(absent)"}");
            }
        }

        if (changed.Count > 0)
        {
            throw new InvalidOperationException(
                $"{checkpoint} was trained on other activations: {string.Join("; ", changed)}. A resumed run reads the same data; start a new run (--init) for other data."
            );
        }

        if (
            saved.TryGetValue("training", out var t)
            && t is System.Text.Json.Nodes.JsonObject training
            && Text(training["activations"]) is { } path
            && path != description
        )
        {
            Console.Error.WriteLine(
                $"note: {checkpoint} was trained on {path}; this run reads {description} (same model, hook and context)."
            );
        }
    }

    private static SparseAutoencoder Wrap(
        SaeRecipe recipe,
        SaeDevice device,
        string baselinePath,
        Dictionary<string, object?> metadata
    )
    {
        using var baseline = SaeFiles.Load(device, baselinePath);
        return recipe.WrapBaseline(baseline, metadata);
    }

    /// <summary>The training activations: a file or cache (--acts), or a language model's site over a
    /// corpus.</summary>
    private static IActivationSource OpenData(
        ParseResult parse,
        SaeDevice device,
        ActivationOptions acts,
        ModelOptions lm,
        string? cacheFolder,
        long tokens,
        Dictionary<string, object?> metadata,
        ParallelLaunch? launch,
        CancellationToken cancel
    )
    {
        if (!lm.Given(parse))
        {
            return TrainingActivations.OpenFile(
                acts.Require(parse),
                parse.GetValue(acts.Tensor),
                metadata,
                acts.Verify(parse)
            );
        }

        if (parse.GetValue(acts.Acts) is not null)
        {
            throw new ArgumentException("Give either --acts or --model, not both.");
        }

        var (model, tokenizer, site, corpus) = lm.Open(parse, device);
        if (cacheFolder is null)
        {
            return TrainingActivations.FromModel(
                model,
                tokenizer,
                site,
                corpus,
                tokens,
                parse.GetValue(lm.Context),
                parse.GetValue(lm.LmBatch),
                null,
                metadata,
                log: Console.WriteLine,
                cancellationToken: cancel,
                group: launch?.Group
            );
        }

        return ConsoleProgress.Run(
            "activations",
            tokens,
            report =>
                TrainingActivations.FromModel(
                    model,
                    tokenizer,
                    site,
                    corpus,
                    tokens,
                    parse.GetValue(lm.Context),
                    parse.GetValue(lm.LmBatch),
                    cacheFolder,
                    metadata,
                    new ConsoleProgress.Relay<long>(report),
                    Console.WriteLine,
                    cancel,
                    launch?.Group,
                    digest =>
                        launch?.Agree(
                            digest,
                            "every rank must build the same activation cache (the same --model, --site, --corpus, --context, --lm-batch and --tokens)"
                        )
                )
        );
    }

    private static LossBreakdown? RunWithProgress(
        SaeTrainer trainer,
        TrainerOptions options,
        CancellationToken cancel
    )
    {
        if (Console.IsOutputRedirected)
        {
            return trainer.Train(
                new ConsoleProgress.Relay<TrainingProgress>(p =>
                {
                    Pace();
                    if (p.Step % options.LogEvery == 0 || p.Step == p.TotalSteps)
                    {
                        Console.WriteLine(
                            string.Create(
                                CultureInfo.InvariantCulture,
                                $"step {p.Step}/{p.TotalSteps}  tokens {p.Tokens}  {p.TokensPerSecond:F0} tok/s  L0 {p.Loss?.L0:F2}  mse {p.Loss?.Mse:G4}  dead {p.DeadFeatures}"
                            )
                        );
                    }
                }),
                cancel
            );
        }

        LossBreakdown? result = null;
        AnsiConsole
            .Progress()
            .Columns(
                new TaskDescriptionColumn(),
                new ProgressBarColumn(),
                new PercentageColumn(),
                new RemainingTimeColumn(),
                new SpinnerColumn()
            )
            .Start(ctx =>
            {
                var task = ctx.AddTask("training", maxValue: options.Steps);
                task.Value = trainer.Step;
                result = trainer.Train(
                    new ConsoleProgress.Relay<TrainingProgress>(p =>
                    {
                        Pace();
                        task.Value = p.Step;
                        task.Description = string.Create(
                            CultureInfo.InvariantCulture,
                            $"{p.TokensPerSecond:F0} tok/s  L0 {p.Loss?.L0:F1}  mse {p.Loss?.Mse:G3}"
                        );
                    }),
                    cancel
                );
            });
        return result;
    }

    /// <summary>A comma-separated list, or null.</summary>
    internal static T[]? ParseList<T>(string? text, string option, Func<string, IFormatProvider, T> parse)
    {
        if (text is null)
        {
            return null;
        }

        try
        {
            return
            [
                .. text.Split(',', StringSplitOptions.TrimEntries)
                    .Select(t => parse(t, CultureInfo.InvariantCulture)),
            ];
        }
        catch (Exception e) when (e is FormatException or OverflowException)
        {
            throw new ArgumentException($"{option} '{text}' is not a comma-separated list of numbers.", e);
        }
    }

    /// <summary>The options of <c>train</c>.</summary>
    private sealed class Options
    {
        public Options()
        {
            Arch.AcceptOnlyFromAmong("standard", "gated", "topk", "batchtopk", "matryoshka", "jumprelu");
            BDecInit.AcceptOnlyFromAmong("zero", "keep", "mean", "geometric-median");
            JumpReluSparsity.AcceptOnlyFromAmong("step", "tanh");
            PreActLatents.AcceptOnlyFromAmong("dead", "all");
            L0StepOn.AcceptOnlyFromAmong("f", "pre");
            Mode.AcceptOnlyFromAmong([.. SaeRecipe.ModeNames]);
            Ablation.AcceptOnlyFromAmong([.. SaeRecipe.AblationNames]);
            LrDecay.AcceptOnlyFromAmong("none", "linear", "cosine");
            Scale.AcceptOnlyFromAmong("sum", "mean-d");
            Parallel.AcceptOnlyFromAmong("data", "features");
        }

        public Option<string> Arch { get; } =
            new Option<string>("--arch")
            {
                Description =
                    "standard, gated, topk (k largest per row), batchtopk (k·B largest per batch), matryoshka (nested BatchTopK) or jumprelu (L0 penalty). The TopK family needs --k and has no L1.",
                Required = true,
            };

        public Option<int?> K { get; } =
            new Option<int?>("--k")
            {
                Description =
                    "TopK family: features kept per row (topk) or on average per row over the batch (batchtopk, matryoshka); 1 ≤ k ≤ --d-sae.",
            };

        public Option<int?> AuxK { get; } =
            new Option<int?>("--aux-k")
            {
                Description =
                    "TopK family: dead latents per row in the AuxK loss (default d_in/2, both libraries).",
            };

        public Option<float?> AuxCoefficient { get; } =
            new Option<float?>("--aux-coefficient")
            {
                Description =
                    "TopK family: AuxK coefficient α (default 1/32 dictionary-learning, 1 saelens; 0 turns AuxK off).",
            };

        public Option<long?> DeadWindow { get; } =
            new Option<long?>("--dead-window")
            {
                Description =
                    "TopK family: tokens without firing after which a latent is dead for AuxK (default 10000000 dictionary-learning; 1000 batches saelens). JumpReLU: the same for the pre-activation loss on dead latents (default 1000 batches, SAELens).",
            };

        public Option<string?> MatryoshkaWidths { get; } =
            new Option<string?>("--matryoshka-widths")
            {
                Description =
                    "Matryoshka: nested widths a,b,…,d_sae, strictly increasing, ending at --d-sae.",
            };

        public Option<string?> LevelWeights { get; } =
            new Option<string?>("--level-weights")
            {
                Description =
                    "Matryoshka: one loss weight per width (default 1 each with saelens; 1/G² each with dictionary-learning).",
            };

        public Option<float?> Bandwidth { get; } =
            new Option<float?>("--bandwidth")
            {
                Description =
                    "JumpReLU: bandwidth ε of the pseudo-derivatives (default 0.05, SAELens; 0.001 with --mode dictionary-learning; pick it relative to the pre-activation scale).",
            };

        public Option<float?> L0Coefficient { get; } =
            new Option<float?>("--l0-coefficient")
            {
                Description =
                    "JumpReLU: coefficient λ of the L0 penalty (default 1, SAELens; with --mode dictionary-learning the sparsity_penalty of λ·(L0/T − 1)², default 1).",
            };

        public Option<float?> ThresholdInit { get; } =
            new Option<float?>("--threshold-init")
            {
                Description =
                    "JumpReLU: initial threshold θ₀ of every feature (default 0.01, SAELens; 0.001 with --mode dictionary-learning).",
            };

        public Option<bool> SteToInput { get; } =
            new Option<bool>("--ste-to-input")
            {
                Description =
                    "JumpReLU: also pass the pseudo-derivatives to the pre-activations (newer SAELens jumprelu_ste_to_input).",
            };

        public Option<string?> JumpReluSparsity { get; } =
            new Option<string?>("--jumprelu-sparsity")
            {
                Description =
                    "JumpReLU: step (default, L0 penalty) or tanh (λ·Σ tanh(c·f·‖W_dec[i]‖), SAELens jumprelu_sparsity_loss_mode).",
            };

        public Option<float?> TanhScale { get; } =
            new Option<float?>("--tanh-scale")
            {
                Description = "JumpReLU tanh sparsity: the scale c (default 4, SAELens).",
            };

        public Option<float?> PreActCoefficient { get; } =
            new Option<float?>("--pre-act-coefficient")
            {
                Description =
                    "JumpReLU: coefficient λ_P ≥ 0 of the pre-activation loss (λ_P/B)·Σ ReLU(θ − z)·dead·‖W_dec[i]‖ (SAELens pre_act_loss_coefficient; default off; SAELens's docs use 3e-6).",
            };

        public Option<string?> PreActLatents { get; } =
            new Option<string?>("--pre-act-latents")
            {
                Description =
                    "JumpReLU pre-activation loss: dead (default, SAELens: latents with no non-zero value for more than --dead-window tokens) or all (Anthropic's recipe).",
            };

        public Option<float?> TargetL0 { get; } =
            new Option<float?>("--target-l0")
            {
                Description =
                    "JumpReLU, --mode dictionary-learning: the target T > 0 of the sparsity loss λ·(L0/T − 1)² (default 20, dictionary_learning's target_l0; λ is --l0-coefficient, default 1, warmed up over --l1-warmup 2000 steps).",
            };

        public Option<string?> L0StepOn { get; } =
            new Option<string?>("--l0-step-on")
            {
                Description =
                    "JumpReLU, --mode dictionary-learning: the step of the L0 term sees f (default, dictionary_learning's StepFunction(f, θ): inactive latents get no θ gradient once θ > ε/2, dictionary_learning#55) or pre (the pre-activation, as the paper and SAELens).",
            };

        public Option<bool?> RescaleActs { get; } =
            new Option<bool?>("--rescale-acts-by-decoder-norm")
            {
                Description =
                    "TopK family, --mode saelens: the selection ranks U ⊙ ‖W_dec[i]‖ and decodes the kept codes divided by the norms, so the norms choose the latents only (SAELens rescale_acts_by_decoder_norm, SAELens's training default; default false here, ranking U itself, because on the superposition toy the rescaled recipe recovered the true directions less well). The saved SAE has the norms folded in (unit-norm decoder rows, flag off), as SAELens saves it for inference; the training form stays under training_form/.",
            };

        public Option<long?> ThresholdStart { get; } =
            new Option<long?>("--threshold-start")
            {
                Description =
                    "BatchTopK/Matryoshka, dictionary-learning estimator: the inference threshold is updated at 0-based steps after this one, as dictionary_learning's step > threshold_start_step (default 1000; −1 = from the first step; SAELens's estimator starts at once).",
            };

        public Option<string?> BDecInit { get; } =
            new Option<string?>("--b-dec-init")
            {
                Description =
                    "zero, keep (with --init: its b_dec), mean or geometric-median of the first batch (default: geometric-median for the TopK family in dictionary-learning mode, with --init too, as dictionary_learning's update at step 0; zero otherwise, keep with --init).",
            };

        public Option<string?> Mode { get; } =
            new Option<string?>("--mode")
            {
                Description =
                    "paper (default for standard/gated: unit-norm decoder, plain L1, frozen aux decoder), saelens (gated, TopK family, default for jumprelu), april-update (standard), dictionary-learning (default for the TopK family; jumprelu: the target-L0 trainer). See README, 'SAE families'.",
            };

        public Option<string> Ablation { get; } =
            new Option<string>("--ablation")
            {
                Description = "Gated ablations (paper §5.1): none, unfrozen-aux, no-rmag, untied.",
                DefaultValueFactory = _ => "none",
            };

        public ActivationOptions Acts { get; } = new ActivationOptions();

        public Option<int?> DSae { get; } =
            new Option<int?>("--d-sae")
            {
                Description = "Dictionary size (required unless --init or --rescale-shift-of).",
            };

        public Option<float> L1 { get; } =
            new Option<float>("--l1")
            {
                Description = "Sparsity coefficient λ.",
                DefaultValueFactory = _ => 1f,
            };

        public Option<float> Lr { get; } =
            new Option<float>("--lr")
            {
                Description = "Peak learning rate.",
                DefaultValueFactory = _ => 3e-4f,
            };

        public Option<int> Batch { get; } =
            new Option<int>("--batch-size")
            {
                Description = "Rows per step.",
                DefaultValueFactory = _ => 4096,
            };

        public Option<long> Tokens { get; } =
            new Option<long>("--tokens")
            {
                Description = "Training tokens (rows); steps = tokens / batch size.",
                Required = true,
            };

        public Option<int> LrWarmup { get; } =
            new Option<int>("--lr-warmup")
            {
                Description = "Learning-rate warm-up steps.",
                DefaultValueFactory = _ => 1000,
            };

        public Option<string> LrDecay { get; } =
            new Option<string>("--lr-decay")
            {
                Description = "none, linear or cosine (over the last 20%).",
                DefaultValueFactory = _ => "none",
            };

        public Option<int> L1Warmup { get; } =
            new Option<int>("--l1-warmup")
            {
                Description =
                    "λ warm-up steps (JumpReLU: of --l0-coefficient; default 0, 2000 for jumprelu --mode dictionary-learning, whose factor is step/2000 from step 0).",
                DefaultValueFactory = _ => 0,
            };

        public Option<ulong> Seed { get; } =
            new Option<ulong>("--seed")
            {
                Description = "Seed for initialisation, data order and resampling.",
                DefaultValueFactory = _ => 42UL,
            };

        public Option<float> Beta1 { get; } =
            new Option<float>("--beta1")
            {
                Description = "Adam β1 (paper: 0).",
                DefaultValueFactory = _ => 0f,
            };

        public Option<float> Beta2 { get; } =
            new Option<float>("--beta2") { Description = "Adam β2.", DefaultValueFactory = _ => 0.999f };

        public Option<float> Eps { get; } =
            new Option<float>("--adam-eps") { Description = "Adam ε.", DefaultValueFactory = _ => 1e-8f };

        public Option<float> Clip { get; } =
            new Option<float>("--grad-clip")
            {
                Description =
                    "Clip the global gradient norm, measured after the decoder-gradient projection (0 = off; default 1 with saelens, april-update and dictionary-learning, as torch's clip_grad_norm_).",
                DefaultValueFactory = _ => 0f,
            };

        public Option<int> Resample { get; } =
            new Option<int>("--resample-every")
            {
                Description = "Resample dead features every N steps (0 = never).",
                DefaultValueFactory = _ => 0,
            };

        public Option<bool> Normalize { get; } =
            new Option<bool>("--normalize-activations")
            {
                Description = "Scale inputs so E‖x‖ = √d; folded into the saved weights.",
            };

        public Option<string> Scale { get; } =
            new Option<string>("--loss-scale")
            {
                Description = "sum (default: Σ_j (x − x̂)²) or mean-d (the paper's /d).",
                DefaultValueFactory = _ => "sum",
            };

        public Option<string?> Init { get; } =
            new Option<string?>("--init")
            {
                Description = "Start from this SAE folder (same architecture and shape).",
            };

        public Option<string?> RescaleOf { get; } =
            new Option<string?>("--rescale-shift-of")
            {
                Description =
                    "Baseline + rescale & shift (paper §5.2): freeze this standard SAE and train only r_mag, b_mag of a gated wrapper.",
            };

        public Option<int> LogEvery { get; } =
            new Option<int>("--log-every")
            {
                Description = "Metrics log period in steps.",
                DefaultValueFactory = _ => 100,
            };

        public Option<int> CkptEvery { get; } =
            new Option<int>("--checkpoint-every")
            {
                Description = "Checkpoint period in steps (0 = none).",
                DefaultValueFactory = _ => 0,
            };

        public Option<bool> Resume { get; } =
            new Option<bool>("--resume")
            {
                Description =
                    "Continue from the newest checkpoint in --out (every setting must equal the checkpoint's trainer_config.json).",
            };

        public Option<string[]> Overrides { get; } =
            new Option<string[]>("--override")
            {
                Description =
                    "With --resume: accept a changed setting, by its trainer_config.json name (e.g. --override learning_rate); repeatable. The SAE's shape, batch size and seed never change.",
                AllowMultipleArgumentsPerToken = false,
            };

        public Option<string> Output { get; } =
            new Option<string>("--out")
            {
                Description =
                    "Output folder: the SAE (cfg.json, sae_weights.safetensors), metrics.jsonl, checkpoints/.",
                Required = true,
            };

        public ModelOptions Lm { get; } = new ModelOptions();

        public Option<string?> Parallel { get; } =
            new Option<string?>("--parallel")
            {
                Description =
                    "data (each rank trains on an equal slice of every batch) or features (each rank owns an equal block of the features): train across the processes of an MPICH mpiexec launch (standard and gated; see README, 'Training on several devices and machines').",
            };

        public Option<bool> ParallelCheck { get; } =
            new Option<bool>("--parallel-check")
            {
                Description =
                    "With --parallel: hash every rank's weights after every step and stop if any differs from rank 0's (also ILGPUSAE_PARALLEL_CHECK=1).",
            };

        public Option<string?> CacheActs { get; } =
            new Option<string?>("--cache-activations")
            {
                Description =
                    "With --model: write the activations to this cache folder first (resumable) and train from it, instead of streaming.",
            };

        /// <summary>
        /// Options given on the command line win over the mode's defaults: β1, clipping, warm-up, the
        /// learning
        /// rate (dictionary_learning's TopK default is <c>2e-4/√(M/2^14)</c> when --lr is not given), and the
        /// family options.
        /// </summary>
        public TrainerOptions WithExplicitOverrides(
            ParseResult parse,
            TrainerOptions options,
            SaeRecipe recipe
        )
        {
            bool Given(Option option) => parse.GetResult(option) is { Implicit: false };
            var o = options;
            if (Given(Beta1))
            {
                o = o with { Beta1 = parse.GetValue(Beta1) };
            }

            if (Given(Clip))
            {
                o = o with { GradClipNorm = parse.GetValue(Clip) };
            }

            if (Given(LrWarmup))
            {
                o = o with { LrWarmupSteps = parse.GetValue(LrWarmup) };
            }

            if (Given(L1Warmup) && recipe.Architecture == SaeArchitecture.JumpRelu)
            {
                // The dictionary-learning recipe warms its target-L0 term up over 2000 steps by default.
                o = o with
                {
                    L1WarmupSteps = parse.GetValue(L1Warmup),
                };
            }

            if (
                !Given(Lr)
                && recipe.Architecture == SaeArchitecture.JumpRelu
                && recipe.Mode == TrainingRecipe.DictionaryLearning
            )
            {
                o = o with { LearningRate = 7e-5f }; // dictionary_learning's JumpReluTrainer default
            }

            if (
                !Given(Lr)
                && recipe.IsTopKFamily
                && recipe.Mode == TrainingRecipe.DictionaryLearning
                && parse.GetValue(DSae) is int m
            )
            {
                o = o with { LearningRate = (float)(2e-4 / Math.Sqrt(m / 16384.0)) };
            }

            var loss = o.Loss;
            if (loss.AuxK is { } aux)
            {
                aux = aux with
                {
                    KAux = parse.GetValue(AuxK) ?? aux.KAux,
                    Coefficient = parse.GetValue(AuxCoefficient) ?? aux.Coefficient,
                };
                loss = loss with { AuxK = aux.Coefficient > 0 ? aux : null };
            }

            if (parse.GetValue(LevelWeights) is { } weights)
            {
                loss = loss with { LevelWeights = ParseList(weights, "--level-weights", float.Parse) };
            }

            if (recipe.Architecture == SaeArchitecture.JumpRelu)
            {
                loss = loss with
                {
                    L1Coefficient = parse.GetValue(L0Coefficient) ?? 1f,
                    JumpRelu = loss.JumpRelu with
                    {
                        Bandwidth = parse.GetValue(Bandwidth) ?? loss.JumpRelu.Bandwidth,
                        SteToInput = parse.GetValue(SteToInput),
                        Sparsity = parse.GetValue(JumpReluSparsity) switch
                        {
                            "tanh" => Sae.JumpReluSparsity.Tanh,
                            "step" => Sae.JumpReluSparsity.Step,
                            _ => loss.JumpRelu.Sparsity,
                        },
                        TargetL0 = parse.GetValue(TargetL0) ?? loss.JumpRelu.TargetL0,
                        StepInput = parse.GetValue(L0StepOn) switch
                        {
                            "f" => JumpReluStepInput.Features,
                            "pre" => JumpReluStepInput.PreActivation,
                            _ => loss.JumpRelu.StepInput,
                        },
                        TanhScale = parse.GetValue(TanhScale) ?? loss.JumpRelu.TanhScale,
                        PreActCoefficient =
                            parse.GetValue(PreActCoefficient) ?? loss.JumpRelu.PreActCoefficient,
                        PreActLatents =
                            parse.GetValue(PreActLatents) == "all"
                                ? Sae.PreActLatents.All
                                : Sae.PreActLatents.Dead,
                    },
                };
                o = o with { InitialThreshold = parse.GetValue(ThresholdInit) ?? o.InitialThreshold };
            }

            if (parse.GetValue(ThresholdStart) is long start)
            {
                if (loss.Threshold.SaeLensStyle)
                {
                    throw new ArgumentException(
                        "--threshold-start applies to the dictionary-learning estimator; SAELens's starts at step 1."
                    );
                }

                loss = loss with { Threshold = loss.Threshold with { StartStep = start } };
            }

            o = o with
            {
                Loss = loss,
                AuxDeadWindowTokens = parse.GetValue(DeadWindow) ?? o.AuxDeadWindowTokens,
                DecoderBiasInit = parse.GetValue(BDecInit) switch
                {
                    null => o.DecoderBiasInit,
                    "zero" or "keep" => DecoderBiasInit.Keep,
                    "mean" => DecoderBiasInit.Mean,
                    _ => DecoderBiasInit.GeometricMedian,
                },
            };
            if (parse.GetValue(Init) is not null)
            {
                if (parse.GetValue(BDecInit) == "zero")
                {
                    throw new ArgumentException(
                        "--b-dec-init zero applies to new SAEs; with --init use keep (its b_dec), mean or geometric-median."
                    );
                }

                // dictionary_learning's TopK-family trainers set b_dec to the geometric median of the first
                // batch in update(step 0) whatever the weights, so --init does too in that mode unless told
                // to keep it; other modes keep the --init SAE's b_dec unless --b-dec-init says otherwise.
                bool dlTopK = recipe.IsTopKFamily && recipe.Mode == TrainingRecipe.DictionaryLearning;
                if (!Given(BDecInit) && !dlTopK)
                {
                    o = o with { DecoderBiasInit = DecoderBiasInit.Keep };
                }
            }

            return o;
        }

        /// <summary>The trainer options these settings give, before the recipe applies its own.</summary>
        public TrainerOptions ToTrainerOptions(ParseResult parse, long steps) =>
            new TrainerOptions
            {
                Steps = steps,
                BatchSize = parse.GetValue(Batch),
                LearningRate = parse.GetValue(Lr),
                Beta1 = parse.GetValue(Beta1),
                Beta2 = parse.GetValue(Beta2),
                Epsilon = parse.GetValue(Eps),
                LrWarmupSteps = parse.GetValue(LrWarmup),
                LrDecay = Enum.Parse<Training.LrDecay>(parse.GetValue(LrDecay)!, ignoreCase: true),
                L1WarmupSteps = parse.GetValue(L1Warmup),
                GradClipNorm = parse.GetValue(Clip),
                ResampleEvery = parse.GetValue(Resample),
                NormalizeActivations = parse.GetValue(Normalize),
                Seed = parse.GetValue(Seed),
                LogEvery = parse.GetValue(LogEvery),
                CheckpointEvery = parse.GetValue(CkptEvery),
                Loss = new SaeLossOptions
                {
                    L1Coefficient = parse.GetValue(L1),
                    Scale =
                        parse.GetValue(Scale) == "mean-d"
                            ? ReconstructionScale.MeanOverDim
                            : ReconstructionScale.Sum,
                },
            };
    }
}
