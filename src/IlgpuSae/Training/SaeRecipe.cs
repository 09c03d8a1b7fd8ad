using IlgpuSae.Backends;
using IlgpuSae.Sae;

namespace IlgpuSae.Training;

/// <summary>The gated ablations of the paper (§5.1), plus none.</summary>
public enum GatedAblation
{
    /// <summary>The full gated SAE.</summary>
    None,

    /// <summary>Gradients flow into the decoder through the auxiliary reconstruction (no
    /// stop-gradient).</summary>
    UnfrozenAux,

    /// <summary>No <c>r_mag</c>: the magnitude path uses the gate's weights unscaled.</summary>
    NoRMag,

    /// <summary>Independent magnitude weights <c>W_mag</c>.</summary>
    Untied,
}

/// <summary>
/// What to train, in the words users pick it by — an architecture, a mode (the paper's recipe, SAELens's
/// gated
/// one, or Anthropic's April-2024 update), a gated ablation, or the paper's "baseline + rescale &amp; shift"
/// — turned
/// into the <see cref="SaeConfig"/> and <see cref="TrainerOptions"/> that implement it, with the provenance
/// metadata written into <c>cfg.json</c>. The command line, the study and the tests all build runs through
/// it.
/// </summary>
public sealed record SaeRecipe
{
    /// <summary>The family.</summary>
    public required SaeArchitecture Architecture { get; init; }

    /// <summary>The mode (default: the paper's).</summary>
    public TrainingRecipe Mode { get; init; } = TrainingRecipe.Paper;

    /// <summary>A gated ablation (default none).</summary>
    public GatedAblation Ablation { get; init; } = GatedAblation.None;

    /// <summary>
    /// "Baseline + learned rescale &amp; shift" (paper §5.2): a gated wrapper around a frozen standard SAE of
    /// which only
    /// <c>r_mag</c> and <c>b_mag</c> train, without sparsity penalty, on raw (unnormalised) activations.
    /// </summary>
    public bool RescaleShift { get; init; }

    /// <summary>The TopK family: features kept per row, or on average per row (BatchTopK, Matryoshka); 0 for
    /// the other families.</summary>
    public int K { get; init; }

    /// <summary>Matryoshka only: the nested widths, ending at d_sae.</summary>
    public IReadOnlyList<int>? MatryoshkaWidths { get; init; }

    /// <summary>
    /// The TopK family's SAELens <c>rescale_acts_by_decoder_norm</c>
    /// (<see cref="SaeConfig.RescaleActsByDecoderNorm"/>): null = off (the default; true reproduces SAELens's
    /// training default and applies to <c>--mode saelens</c> only, as the other modes keep the decoder rows
    /// unit-norm). Off by default because on the superposition toy the rescaled SAELens recipe recovered the
    /// true directions less well (mean max cosine 0.83–0.86 against ≥ 0.9 unrescaled, measured 2026-12-03).
    /// </summary>
    public bool? RescaleActsByDecoderNorm { get; init; }

    /// <summary>Whether the SAE of this recipe ranks its selection by <c>U ⊙ ‖W_dec[i]‖</c>.</summary>
    public bool RescalesActs => RescaleActsByDecoderNorm ?? false;

    /// <summary>Mode names as the command line spells them.</summary>
    public static IReadOnlyList<string> ModeNames { get; } =
    ["paper", "saelens", "april-update", "dictionary-learning"];

    /// <summary>Whether the family is TopK, BatchTopK or Matryoshka.</summary>
    public bool IsTopKFamily => Architecture is TopKSae or BatchTopKSae;

    /// <summary>
    /// The mode a family trains in when none is named: the paper's for standard and gated SAEs,
    /// dictionary_learning's for the TopK family, SAELens's for JumpReLU.
    /// </summary>
    public static TrainingRecipe DefaultMode(SaeArchitecture architecture)
    {
        ArgumentNullException.ThrowIfNull(architecture);
        return architecture is TopKSae or BatchTopKSae ? TrainingRecipe.DictionaryLearning
            : architecture == SaeArchitecture.JumpRelu ? TrainingRecipe.SaeLens
            : TrainingRecipe.Paper;
    }

    /// <summary>Ablation names as the command line spells them.</summary>
    public static IReadOnlyList<string> AblationNames { get; } =
    ["none", "unfrozen-aux", "no-rmag", "untied"];

    /// <summary>The mode's command-line name.</summary>
    public string ModeName =>
        Mode switch
        {
            TrainingRecipe.Paper => "paper",
            TrainingRecipe.SaeLens => "saelens",
            TrainingRecipe.AprilUpdate => "april-update",
            TrainingRecipe.DictionaryLearning => "dictionary-learning",
            _ => throw new ArgumentOutOfRangeException(nameof(Mode), Mode, "Unknown mode."),
        };

    /// <summary>The ablation's command-line name.</summary>
    public string AblationName =>
        Ablation switch
        {
            GatedAblation.None => "none",
            GatedAblation.UnfrozenAux => "unfrozen-aux",
            GatedAblation.NoRMag => "no-rmag",
            GatedAblation.Untied => "untied",
            _ => throw new ArgumentOutOfRangeException(nameof(Ablation), Ablation, "Unknown ablation."),
        };

    /// <summary>A short name, e.g. <c>gated-paper</c>, <c>gated-paper-untied</c>,
    /// <c>standard-april-update</c>.</summary>
    public string Name =>
        $"{Architecture.Name}-{ModeName}"
        + (Ablation == GatedAblation.None ? "" : "-" + AblationName)
        + (RescaleShift ? "-rescale-shift" : "")
        + (K > 0 ? $"-k{K}" : "");

    /// <summary>Parses the command line's words.</summary>
    /// <exception cref="ArgumentException">A word is unknown or the combination does not apply.</exception>
    public static SaeRecipe Parse(
        string architecture,
        string? mode = null,
        string ablation = "none",
        bool rescaleShift = false,
        int k = 0,
        IReadOnlyList<int>? matryoshkaWidths = null,
        bool? rescaleActsByDecoderNorm = null
    )
    {
        ArgumentNullException.ThrowIfNull(ablation);
        var family = SaeArchitectures.Get(architecture);
        var recipe = new SaeRecipe
        {
            Architecture = family,
            Mode = mode switch
            {
                null => DefaultMode(family),
                "paper" => TrainingRecipe.Paper,
                "saelens" => TrainingRecipe.SaeLens,
                "april-update" => TrainingRecipe.AprilUpdate,
                "dictionary-learning" => TrainingRecipe.DictionaryLearning,
                _ => throw new ArgumentException(
                    $"Unknown mode '{mode}' (modes: {string.Join(", ", ModeNames)})."
                ),
            },
            Ablation = ablation switch
            {
                "none" => GatedAblation.None,
                "unfrozen-aux" => GatedAblation.UnfrozenAux,
                "no-rmag" => GatedAblation.NoRMag,
                "untied" => GatedAblation.Untied,
                _ => throw new ArgumentException(
                    $"Unknown ablation '{ablation}' (ablations: {string.Join(", ", AblationNames)})."
                ),
            },
            RescaleShift = rescaleShift,
            K = k,
            MatryoshkaWidths = matryoshkaWidths,
            RescaleActsByDecoderNorm = rescaleActsByDecoderNorm,
        };
        recipe.Validate();
        return recipe;
    }

    /// <summary>Checks that the mode, ablation and rescale &amp; shift apply to the architecture.</summary>
    /// <exception cref="ArgumentException">They do not.</exception>
    public void Validate()
    {
        if (!Architecture.CanTrain)
        {
            throw new ArgumentException($"{Architecture.Name} SAEs cannot be trained here.");
        }

        bool gated = Architecture == SaeArchitecture.Gated;
        bool topK = IsTopKFamily;
        bool jumpRelu = Architecture == SaeArchitecture.JumpRelu;
        if (topK != (K > 0))
        {
            throw new ArgumentException(
                topK
                    ? $"A {Architecture.Name} SAE needs --k (features kept per row, ≥ 1)."
                    : "--k applies to the TopK family (topk, batchtopk, matryoshka) only."
            );
        }

        if ((Architecture == SaeArchitecture.Matryoshka) != (MatryoshkaWidths is not null))
        {
            throw new ArgumentException(
                MatryoshkaWidths is null
                    ? "A matryoshka SAE needs --matryoshka-widths a,b,…,d_sae (strictly increasing, ending at --d-sae)."
                    : "--matryoshka-widths applies to matryoshka SAEs only."
            );
        }

        bool allowed = Mode switch
        {
            TrainingRecipe.Paper => !jumpRelu && (Architecture == SaeArchitecture.TopK || !topK),
            TrainingRecipe.SaeLens => gated || topK || jumpRelu,
            TrainingRecipe.AprilUpdate => Architecture == SaeArchitecture.Standard,
            TrainingRecipe.DictionaryLearning => topK || jumpRelu,
            _ => false,
        };
        if (!allowed)
        {
            string modes =
                gated ? "paper, saelens"
                : Architecture == SaeArchitecture.Standard ? "paper, april-update"
                : Architecture == SaeArchitecture.TopK ? "dictionary-learning (default), saelens, paper"
                : topK ? "dictionary-learning (default), saelens"
                : "saelens (default), dictionary-learning";
            throw new ArgumentException(
                $"--mode {ModeName} does not apply to {Architecture.Name} SAEs (modes: {modes})."
            );
        }

        if (RescaleActsByDecoderNorm == true && !(topK && Mode == TrainingRecipe.SaeLens))
        {
            throw new ArgumentException(
                topK
                    ? $"--rescale-acts-by-decoder-norm applies to --mode saelens; --mode {ModeName} keeps the decoder rows unit-norm, so there is nothing to rescale."
                    : "--rescale-acts-by-decoder-norm applies to the TopK family (topk, batchtopk, matryoshka) only."
            );
        }

        if (Ablation != GatedAblation.None && !gated)
        {
            throw new ArgumentException("--ablation applies to gated SAEs only.");
        }

        if (RescaleShift && !gated)
        {
            throw new ArgumentException("--rescale-shift-of builds a gated wrapper; use --arch gated.");
        }

        if (RescaleShift && Ablation != GatedAblation.None)
        {
            throw new ArgumentException(
                "Rescale & shift trains r_mag and b_mag of a tied wrapper; it takes no ablation."
            );
        }
    }

    /// <summary>The configuration of a new SAE of this recipe.</summary>
    public SaeConfig Config(int dIn, int dSae, IReadOnlyDictionary<string, object?>? metadata = null)
    {
        Validate();
        return new SaeConfig
        {
            Architecture = Architecture,
            DIn = dIn,
            DSae = dSae,
            // dictionary_learning's JumpReLU encodes x itself, as the paper's Eq. 8 (no b_dec subtraction).
            ApplyBDecToInput =
                Mode != TrainingRecipe.AprilUpdate
                && !(Architecture == SaeArchitecture.JumpRelu && Mode == TrainingRecipe.DictionaryLearning),
            UseRMag = Ablation != GatedAblation.NoRMag,
            Untied = Ablation == GatedAblation.Untied,
            K = K,
            MatryoshkaWidths = MatryoshkaWidths,
            RescaleActsByDecoderNorm = RescalesActs,
            Metadata = metadata ?? new Dictionary<string, object?>(),
        };
    }

    /// <summary>
    /// <paramref name="options"/> with the recipe's settings applied: the mode's
    /// (<see cref="TrainerOptions.WithRecipe"/>), the family's (the TopK family's AuxK with k_aux = d_in/2,
    /// threshold estimator, b_dec initialisation and Matryoshka level weights; JumpReLU's SAELens defaults),
    /// the unfrozen auxiliary decoder, and for rescale &amp; shift the trainable tensors, λ = 0 and no norm
    /// constraint, λ warm-up or activation normalisation (the frozen baseline has its normalisation folded
    /// in). The AuxK default needs <paramref name="dIn"/>; with 0 it is left as <paramref name="options"/>
    /// have it.
    /// </summary>
    public TrainerOptions Apply(TrainerOptions options, int dIn = 0)
    {
        ArgumentNullException.ThrowIfNull(options);
        Validate();
        var o = options.WithRecipe(Mode);
        if (K > 0)
        {
            // The TopK family's sparsity is k itself: no penalty (Gao et al. 2024, §2.3).
            o = o with
            {
                Loss = o.Loss with { L1Coefficient = 0f, DecoderNormWeightedL1 = false },
                L1WarmupSteps = 0,
            };
        }

        if (IsTopKFamily && Mode != TrainingRecipe.Paper)
        {
            bool saeLens = Mode == TrainingRecipe.SaeLens;
            var aux =
                o.Loss.AuxK
                ?? (
                    dIn > 0
                        ? new AuxKOptions
                        {
                            KAux = Math.Max(1, dIn / 2),
                            Style = saeLens ? AuxKStyle.SaeLens : AuxKStyle.DictionaryLearning,
                            Coefficient = saeLens ? 1f : 1f / 32,
                        }
                        : null
                );
            o = o with
            {
                LrWarmupSteps = saeLens ? 0 : o.LrWarmupSteps,
                DecoderBiasInit = saeLens ? DecoderBiasInit.Keep : DecoderBiasInit.GeometricMedian,
                Loss = o.Loss with
                {
                    AuxK = aux,
                    Threshold = saeLens ? ThresholdEstimator.SaeLens : ThresholdEstimator.DictionaryLearning,
                    LevelWeights =
                        saeLens || MatryoshkaWidths is null
                            ? null
                            : Enumerable
                                .Repeat(
                                    1f / (MatryoshkaWidths.Count * MatryoshkaWidths.Count),
                                    MatryoshkaWidths.Count
                                )
                                .ToArray(),
                },
            };
        }

        if (Architecture == SaeArchitecture.JumpRelu && Mode == TrainingRecipe.DictionaryLearning)
        {
            // dictionary_learning's JumpReluTrainer (trainers/jumprelu.py): λ·(l0/T − 1)² with T = 20 and
            // sparsity_penalty λ = 1 warmed up as step/2000, Step on f, raw θ₀ = 0.001 ("Appendix I"),
            // ε = 0.001, Adam (0, 0.999), lr warm-up 1000, unit-norm decoder, clip 1 (from WithRecipe).
            o = o with
            {
                Beta1 = 0f,
                LrWarmupSteps = 1000,
                L1WarmupSteps = 2000,
                L1WarmupFromZero = true,
                InitialThreshold = 0.001f,
                Loss = o.Loss with
                {
                    L1Coefficient = 1f,
                    DecoderNormWeightedL1 = false,
                    JumpRelu = new JumpReluTraining
                    {
                        Bandwidth = 0.001f,
                        LogThreshold = false,
                        Sparsity = JumpReluSparsity.TargetL0,
                        TargetL0 = 20f,
                        StepInput = JumpReluStepInput.Features,
                        ClampThreshold = false,
                        TrainingRelu = false,
                    },
                },
            };
        }
        else if (Architecture == SaeArchitecture.JumpRelu)
        {
            // SAELens's JumpReLU defaults (step sparsity): θ₀ = 0.01, ε = 0.05, log θ, no norm weighting.
            o = o with
            {
                Beta1 = 0.9f,
                LrWarmupSteps = 0,
                InitialThreshold = 0.01f,
                Loss = o.Loss with { DecoderNormWeightedL1 = false, JumpRelu = new JumpReluTraining() },
            };
        }

        if (Ablation == GatedAblation.UnfrozenAux)
        {
            o = o with { Loss = o.Loss with { FreezeAuxDecoder = false } };
        }

        if (RescaleShift)
        {
            o = o with
            {
                TrainableParameters = ["r_mag", "b_mag"],
                Loss = o.Loss with { L1Coefficient = 0f },
                ConstrainDecoderNorm = false,
                NormalizeActivations = false,
                L1WarmupSteps = 0,
            };
        }

        return o;
    }

    /// <summary>A new SAE of this recipe, initialised as <paramref name="options"/> say (decoder init norm,
    /// seed).</summary>
    public SparseAutoencoder Create(
        SaeDevice device,
        int dIn,
        int dSae,
        TrainerOptions options,
        IReadOnlyDictionary<string, object?>? metadata = null
    )
    {
        ArgumentNullException.ThrowIfNull(options);
        if (RescaleShift)
        {
            throw new InvalidOperationException(
                "A rescale & shift run wraps a trained baseline: use WrapBaseline."
            );
        }

        return SparseAutoencoder.Create(
            device,
            Config(dIn, dSae, metadata),
            options.Seed,
            options.DecoderInitNorm,
            options.InitialThreshold
        );
    }

    /// <summary>
    /// Loads an SAE to continue training from (<c>--init</c>), checking that it is of this recipe's
    /// architecture
    /// and of width <paramref name="dIn"/> (and <paramref name="dSae"/> when given).
    /// </summary>
    /// <exception cref="ArgumentException">The SAE does not match.</exception>
    public SparseAutoencoder LoadInitial(SaeDevice device, string path, int dIn, int? dSae)
    {
        var loaded = SaeFiles.Load(device, path);
        if (loaded.Architecture != Architecture || (dSae is int m && m != loaded.DSae) || loaded.DIn != dIn)
        {
            var message =
                $"--init {path} holds a {loaded.Architecture} SAE {loaded.DIn}×{loaded.DSae}; this run needs {Architecture} {dIn}×{dSae ?? loaded.DSae}.";
            loaded.Dispose();
            throw new ArgumentException(message);
        }

        if (loaded.Config.RescaleActsByDecoderNorm == RescalesActs)
        {
            return loaded;
        }

        // The run's rescale setting: a rescaled training form is folded first, so it encodes as it did; an
        // unrescaled SAE (SAELens saves TopK folded, with unit-norm rows) starts ranking U ⊙ ‖W_dec[i]‖.
        using (loaded)
        {
            if (!RescalesActs)
            {
                return loaded.WithDecoderNormsFolded();
            }

            var rescaled = SparseAutoencoder.CreateEmpty(
                device,
                loaded.Config with
                {
                    RescaleActsByDecoderNorm = true,
                }
            );
            rescaled.CopyParametersFrom(loaded);
            return rescaled;
        }
    }

    /// <summary>The rescale &amp; shift wrapper of a trained standard SAE.</summary>
    public SparseAutoencoder WrapBaseline(
        SparseAutoencoder baseline,
        IReadOnlyDictionary<string, object?>? metadata = null
    )
    {
        if (!RescaleShift)
        {
            throw new InvalidOperationException("This recipe is not rescale & shift.");
        }

        return Sae.RescaleShift.Wrap(baseline, metadata);
    }

    /// <summary>
    /// The <c>training</c> provenance entry of <c>cfg.json</c>'s metadata: recipe, λ, learning rate, batch
    /// size,
    /// steps, seed, plus <paramref name="extra"/> (activations, backend, study arm …).
    /// </summary>
    public Dictionary<string, object?> Provenance(
        TrainerOptions options,
        IReadOnlyDictionary<string, object?>? extra = null
    )
    {
        ArgumentNullException.ThrowIfNull(options);
        var training = new Dictionary<string, object?>
        {
            ["recipe"] = Name,
            ["mode"] = ModeName,
            ["ablation"] = AblationName,
            ["rescale_shift"] = RescaleShift,
            ["l1_coefficient"] = options.Loss.L1Coefficient,
            ["lr"] = options.LearningRate,
            ["batch_size"] = options.BatchSize,
            ["steps"] = options.Steps,
            ["seed"] = options.Seed,
        };
        if (K > 0)
        {
            training["k"] = K;
        }

        if (MatryoshkaWidths is not null)
        {
            training["matryoshka_widths"] = MatryoshkaWidths.ToArray();
        }

        if (options.Loss.AuxK is { } aux)
        {
            training["aux_k"] = aux.KAux;
            training["aux_coefficient"] = aux.Coefficient;
            training["aux_style"] = aux.Style == AuxKStyle.SaeLens ? "saelens" : "dictionary-learning";
        }

        if (options.Loss.JumpRelu.Sparsity == JumpReluSparsity.TargetL0)
        {
            training["target_l0"] = options.Loss.JumpRelu.TargetL0;
            training["l0_step_on"] =
                options.Loss.JumpRelu.StepInput == JumpReluStepInput.Features ? "f" : "pre";
        }

        if (Architecture == SaeArchitecture.JumpRelu && options.Loss.JumpRelu.PreActCoefficient > 0)
        {
            // SAELens's name; SAELens restricts the loss to dead latents, Anthropic's recipe does not.
            training["pre_act_loss_coefficient"] = options.Loss.JumpRelu.PreActCoefficient;
            training["pre_act_loss_latents"] =
                options.Loss.JumpRelu.PreActLatents == PreActLatents.All ? "all" : "dead";
        }

        foreach (var (k, v) in extra ?? new Dictionary<string, object?>())
        {
            training[k] = v;
        }

        return training;
    }
}
