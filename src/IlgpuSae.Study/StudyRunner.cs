using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using IlgpuSae.Backends;
using IlgpuSae.Data;
using IlgpuSae.IO;
using IlgpuSae.Lm;
using IlgpuSae.Sae;
using IlgpuSae.Training;

namespace IlgpuSae.Study;

/// <summary>What the runner is doing, for progress displays.</summary>
/// <param name="Done">Units finished (trainings, evaluations and ITO points).</param>
/// <param name="Total">Units in the study.</param>
/// <param name="Current">What runs now.</param>
public readonly record struct StudyProgress(int Done, int Total, string Current);

/// <summary>
/// Runs a <see cref="StudyConfig"/>: per site an activation cache (shared by all runs), then every arm × λ
/// trained and evaluated on held-out text (loss recovered, KL score, L0, γ, fraction alive, explained
/// variance), then ITO points. Each finished run leaves <c>result.json</c> in its folder, so a re-run (or
/// a run after an interruption) skips it; unfinished trainings resume from their checkpoints.
/// </summary>
public sealed class StudyRunner(StudyConfig config, string folder, SaeDevice device)
{
    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>Whether a study folder holds anything computed: a finished run, an activation cache or
    /// the progress of one, or a training checkpoint or log.</summary>
    private static bool HasWork(string folder) =>
        Directory
            .EnumerateFiles(folder, "*", SearchOption.AllDirectories)
            .Select(Path.GetFileName)
            .Any(name =>
                name is "result.json" or "manifest.json" or "progress.json" or "metrics.jsonl"
                || name!.StartsWith("shard-", StringComparison.Ordinal)
            );

    /// <summary>The study folder.</summary>
    public string Folder { get; } = folder;

    /// <summary>Runs (or finishes) the study and writes results.csv, results.json, report.md and the
    /// plots.</summary>
    /// <exception cref="InvalidOperationException">The folder holds a study with different
    /// settings.</exception>
    public IReadOnlyList<RunResult> Run(
        IProgress<StudyProgress>? progress = null,
        Action<string>? log = null,
        CancellationToken cancellationToken = default
    )
    {
        config.Validate();
        var wall = Stopwatch.StartNew();
        int resumed = 0;
        Directory.CreateDirectory(Folder);
        var studyFile = Path.Combine(Folder, "study.json");
        var settings = config.ToJson();
        if (File.Exists(studyFile) && File.ReadAllText(studyFile) != settings && !HasWork(Folder))
        {
            // A study that failed before computing anything (a wrong path, a bad site) must not block its
            // corrected retry: its study.json is replaced.
            log?.Invoke($"  {Folder}: replacing the settings of a study that produced nothing yet");
        }
        else if (File.Exists(studyFile) && File.ReadAllText(studyFile) != settings)
        {
            throw new InvalidOperationException(
                $"{Folder} holds a study with different settings (study.json); choose another output folder."
            );
        }

        AtomicFile.WriteAllText(studyFile, settings);
        log ??= _ => { };
        using var model = LanguageModel.Load(device, config.Model);
        var tokenizer = LmTokenizer.Load(config.Model, model.Config);
        int context = Math.Min(config.Context, model.Config.ContextLength);
        var (evalContexts, _) = TokenCorpus.EvaluationContexts(
            config.EvalCorpus,
            tokenizer,
            model.Config.BosTokenId,
            config.EvalTokens,
            context,
            cancellationToken
        );
        var splice = new SpliceOptions { Batch = config.LmBatch };
        var results = new List<RunResult>();
        int total =
            config.Sites.Sum(site => config.ArmsAt(site).Sum(a => config.PointsOf(a).Count))
            + (config.ItoSite is null ? 0 : ItoSources().Count() * config.ItoL0.Count);
        int done = 0;
        void Step(string what)
        {
            log(what);
            progress?.Report(new StudyProgress(done, total, what));
        }

        foreach (var site in config.Sites)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var plan = ActivationPlan.Create(
                model,
                tokenizer,
                new ActivationRequest
                {
                    Site = site,
                    Corpus = config.TrainCorpus,
                    Tokens = config.TrainTokens,
                    ContextSize = context,
                    Batch = config.LmBatch,
                    AllowFewerTokens = true,
                },
                cancellationToken
            );
            var cacheDir = Path.Combine(Folder, "acts", site);
            Step($"{site}: activation cache ({plan.Rows} rows)");
            ActivationCacheBuilder.Build(
                plan,
                cacheDir,
                shardRows: 1 << 15,
                seed: config.Seed,
                cancellationToken: cancellationToken
            );
            using var cache = ActivationCache.Open(cacheDir);
            int dGated = config.Expansion * plan.Width;
            int dStandard = (int)Math.Round(dGated * config.BaselineWidthFactor);
            foreach (var arm in config.ArmsAt(site).OrderBy(a => a == StudyArms.RescaleShift ? 1 : 0))
            {
                int dSae = StudyArms.AtGatedWidth(arm) ? dGated : dStandard;
                foreach (var (l1, k) in config.PointsOf(arm))
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    var runDir = RunFolder(site, arm, l1, k);
                    var resultFile = Path.Combine(Folder, runDir, "result.json");
                    if (File.Exists(resultFile))
                    {
                        results.Add(
                            JsonSerializer.Deserialize<RunResult>(File.ReadAllText(resultFile), Json)!
                        );
                        done++;
                        resumed++;
                        continue;
                    }

                    Step(
                        $"{site}: {arm} {(k > 0 ? $"k={k}" : $"λ={l1.ToString(CultureInfo.InvariantCulture)}")} ({dSae} features)"
                    );
                    var watch = Stopwatch.StartNew();
                    Train(site, arm, l1, k, dSae, cache, Path.Combine(Folder, runDir), cancellationToken);
                    double trainSeconds = watch.Elapsed.TotalSeconds;
                    watch.Restart();
                    using var sae = SaeFiles.Load(device, Path.Combine(Folder, runDir));
                    var m = DownstreamEvaluator.Evaluate(
                        model,
                        site,
                        sae,
                        evalContexts,
                        context,
                        splice,
                        cancellationToken: cancellationToken
                    );
                    var result = new RunResult
                    {
                        Site = site,
                        Arm = arm,
                        L1 = l1,
                        K = k,
                        DSae = sae.DSae,
                        L0 = m.Reconstruction!.L0,
                        LossRecovered = m.CeLossScore,
                        KlScore = m.KlDivScore,
                        CeClean = m.CeLossWithoutSae,
                        CeWithSae = m.CeLossWithSae,
                        CeWithAblation = m.CeLossWithAblation,
                        Gamma = m.Reconstruction.RelativeReconstructionBias,
                        FracAlive = m.Reconstruction.FractionAlive,
                        ExplainedVariance = m.Reconstruction.ExplainedVariance,
                        TrainTokens = config.TrainTokens / config.BatchSize * config.BatchSize,
                        TrainSeconds = trainSeconds,
                        EvalSeconds = watch.Elapsed.TotalSeconds,
                        Folder = runDir,
                    };
                    AtomicFile.WriteAllText(resultFile, JsonSerializer.Serialize(result, Json));
                    log(
                        string.Create(
                            CultureInfo.InvariantCulture,
                            $"  L0 {result.L0:F1}, loss recovered {result.LossRecovered:P2}, γ {result.Gamma:F3}, alive {result.FracAlive:P0} ({trainSeconds:F0} s + {result.EvalSeconds:F0} s)"
                        )
                    );
                    results.Add(result);
                    done++;
                }
            }

            if (site == config.ItoSite)
            {
                foreach (var (arm, l1) in ItoSources())
                {
                    using var sae = SaeFiles.Load(device, Path.Combine(Folder, RunFolder(site, arm, l1)));
                    using var pursuit = new GradientPursuit(sae);
                    foreach (int k in config.ItoL0.Where(k => k <= sae.DSae))
                    {
                        cancellationToken.ThrowIfCancellationRequested();
                        var file = Path.Combine(Folder, "ito", site, $"{arm}-l1-{Name(l1)}", $"k-{k}.json");
                        if (File.Exists(file))
                        {
                            results.Add(JsonSerializer.Deserialize<RunResult>(File.ReadAllText(file), Json)!);
                            done++;
                            resumed++;
                            continue;
                        }

                        Step(
                            $"{site}: ITO with the {arm} λ={l1.ToString(CultureInfo.InvariantCulture)} decoder, k = {k}"
                        );
                        var watch = Stopwatch.StartNew();
                        double l0Sum = 0;
                        long rows = 0;
                        var m = DownstreamEvaluator.Evaluate(
                            model,
                            site,
                            (acts, keep) =>
                            {
                                // L0 over the replaced (non-special) positions, as for the encoders.
                                var xhat = pursuit.Reconstruct(acts, k);
                                for (int n = 0; n < keep.Length; n++)
                                {
                                    if (keep[n])
                                    {
                                        l0Sum += pursuit.LastRowL0[n];
                                        rows++;
                                    }
                                }

                                return xhat;
                            },
                            evalContexts,
                            context,
                            splice,
                            cancellationToken: cancellationToken
                        );
                        var result = new RunResult
                        {
                            Site = site,
                            Arm = "ito:" + arm,
                            L1 = l1,
                            DSae = sae.DSae,
                            ItoK = k,
                            L0 = l0Sum / rows,
                            LossRecovered = m.CeLossScore,
                            KlScore = m.KlDivScore,
                            CeClean = m.CeLossWithoutSae,
                            CeWithSae = m.CeLossWithSae,
                            CeWithAblation = m.CeLossWithAblation,
                            EvalSeconds = watch.Elapsed.TotalSeconds,
                            Folder = RunFolder(site, arm, l1),
                        };
                        Directory.CreateDirectory(Path.GetDirectoryName(file)!);
                        AtomicFile.WriteAllText(file, JsonSerializer.Serialize(result, Json));
                        log(
                            string.Create(
                                CultureInfo.InvariantCulture,
                                $"  L0 {result.L0:F1}, loss recovered {result.LossRecovered:P2} ({result.EvalSeconds:F0} s)"
                            )
                        );
                        results.Add(result);
                        done++;
                    }
                }
            }
        }

        progress?.Report(new StudyProgress(total, total, "report"));
        StudyReport.Write(
            Folder,
            config,
            results,
            device.ToString(),
            new StudyTiming(wall.Elapsed, resumed, total)
        );
        return results;
    }

    /// <summary>The (arm, λ) runs whose decoders ITO uses: gated and baseline at the configured λ indices
    /// (default: the middle one).</summary>
    private IEnumerable<(string Arm, double L1)> ItoSources()
    {
        foreach (var arm in new[] { StudyArms.Gated, StudyArms.Standard }.Where(config.Arms.Contains))
        {
            var lambdas = arm == StudyArms.Gated ? config.L1Gated : config.L1Standard;
            foreach (
                int i in (config.ItoRuns ?? [lambdas.Count / 2])
                    .Where(i => i >= 0 && i < lambdas.Count)
                    .Distinct()
            )
            {
                yield return (arm, lambdas[i]);
            }
        }
    }

    private static string Name(double l1) => l1.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>
    /// The study's adjustments to a family's default recipe: BatchTopK's and Matryoshka's
    /// dictionary_learning threshold estimator starts at step min(1000, steps/2 − 1) — its default 1000 when
    /// the run is long enough, else half-way (it updates at the 0-based steps after the start, as
    /// dictionary_learning does), so a short run still ends with an inference threshold — and
    /// jumprelu's θ₀ is the study's <see cref="StudyConfig.JumpReluThresholdInit"/> when set.
    /// </summary>
    private TrainerOptions FamilyOptions(TrainerOptions options, long steps)
    {
        var o = options;
        if (!o.Loss.Threshold.SaeLensStyle && o.Loss.Threshold.StartStep >= steps / 2)
        {
            o = o with
            {
                Loss = o.Loss with { Threshold = o.Loss.Threshold with { StartStep = steps / 2 - 1 } },
            };
        }

        if (config.JumpReluThresholdInit is { } theta)
        {
            o = o with { InitialThreshold = (float)theta };
        }

        return o;
    }

    /// <summary>runs/&lt;site&gt;/&lt;arm&gt;/ then <c>l1-λ</c>, <c>k-k</c> (TopK family) or
    /// <c>l0-coefficient-λ</c> (jumprelu).</summary>
    private static string RunFolder(string site, string arm, double l1, int k = 0) =>
        Path.Combine(
            "runs",
            site,
            arm,
            k > 0 ? $"k-{k}"
                : arm == StudyArms.JumpRelu ? $"l0-coefficient-{Name(l1)}"
                : $"l1-{Name(l1)}"
        );

    private void Train(
        string site,
        string arm,
        double l1,
        int k,
        int dSae,
        IActivationSource data,
        string runDir,
        CancellationToken cancellationToken
    )
    {
        long steps = config.TrainTokens / config.BatchSize;
        var recipe = StudyArms.IsFamily(arm) ? StudyArms.Recipe(arm, k, dSae) : StudyArms.Recipe(arm);
        var options = recipe.Apply(
            new TrainerOptions
            {
                Steps = steps,
                BatchSize = config.BatchSize,
                LearningRate = (float)config.LearningRate,
                LrWarmupSteps = config.LrWarmup,
                LrDecay = config.DecaySchedule,
                LrDecayStartFraction = config.LrDecayStart ?? 0.8,
                L1WarmupSteps = config.L1Warmup,
                NormalizeActivations = true,
                Seed = config.Seed,
                LogEvery = (int)Math.Max(1, steps / 20),
                CheckpointEvery = (int)Math.Max(1, steps / 4),
                ShuffleBufferRows = (int)Math.Min(1 << 16, data.Rows),
                Loss = new SaeLossOptions { L1Coefficient = (float)l1 },
            },
            data.Dim
        );
        if (StudyArms.IsFamily(arm))
        {
            options = FamilyOptions(options, steps);
        }

        var metadata = new Dictionary<string, object?>
        {
            ["model_name"] = Path.GetFileName(
                Path.TrimEndingDirectorySeparator(Path.GetFullPath(config.Model))
            ),
            ["hook_name"] = site,
            ["context_size"] = config.Context,
            ["prepend_bos"] = true,
            ["exclude_special_tokens"] = true,
            ["training"] = recipe.Provenance(options, new Dictionary<string, object?> { ["arm"] = arm }),
        };
        SparseAutoencoder sae;
        if (recipe.RescaleShift)
        {
            // The frozen baseline is saved with its normalisation folded in, so the wrapper trains on raw
            // activations.
            using var baseline = SaeFiles.Load(
                device,
                Path.Combine(Folder, RunFolder(site, StudyArms.Standard, l1))
            );
            sae = recipe.WrapBaseline(baseline, metadata);
        }
        else
        {
            sae = recipe.Create(device, data.Dim, dSae, options, metadata);
        }

        if (SaeTrainer.LatestCheckpoint(runDir) is null && Directory.Exists(runDir))
        {
            Directory.Delete(runDir, recursive: true); // interrupted before its first checkpoint: start over
        }

        using (sae)
        using (var trainer = new SaeTrainer(sae, data, options, runDir))
        {
            if (SaeTrainer.LatestCheckpoint(runDir) is { } checkpoint)
            {
                trainer.Resume(checkpoint);
            }

            trainer.Train(cancellationToken: cancellationToken);
        }
    }
}
