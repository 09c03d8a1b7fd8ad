using IlgpuSae.Sae;

namespace IlgpuSae.Training;

/// <summary>Learning-rate decay after warm-up.</summary>
public enum LrDecay
{
    /// <summary>Constant learning rate.</summary>
    None,

    /// <summary>Linear decay to 0 from <see cref="TrainerOptions.LrDecayStartFraction"/> of training
    /// (dictionary_learning).</summary>
    Linear,

    /// <summary>Cosine decay to 0 from <see cref="TrainerOptions.LrDecayStartFraction"/> of
    /// training.</summary>
    Cosine,
}

/// <summary>How <c>b_dec</c> starts.</summary>
public enum DecoderBiasInit
{
    /// <summary>As the SAE has it (0 for a new SAE: SAELens).</summary>
    Keep,

    /// <summary>The mean of the first training batch.</summary>
    Mean,

    /// <summary>
    /// The geometric median of the first training batch (Weiszfeld's iteration from the mean, at most 100
    /// steps, stop when it moves less than 1e-5: dictionary_learning and OpenAI), with a guard for rows that
    /// coincide with the estimate.
    /// </summary>
    GeometricMedian,
}

/// <summary>Named training recipes (the paper's App. D; SAELens; Anthropic's April 2024 update).</summary>
public enum TrainingRecipe
{
    /// <summary>
    /// The paper: unit-norm decoder rows (gradient projection + renormalisation), plain L1, frozen decoder in
    /// the gated auxiliary loss, Adam β1 = 0, β2 = 0.999, b_dec subtracted from the input.
    /// </summary>
    Paper,

    /// <summary>SAELens gated: decoder-norm-weighted L1, unfrozen auxiliary decoder, no norm constraint,
    /// grad-norm clip 1, decoder init norm 0.1.</summary>
    SaeLens,

    /// <summary>Anthropic April-2024 standard SAE: decoder-norm-weighted L1, no norm constraint, no b_dec
    /// subtraction, grad-norm clip 1, init norm 0.1.</summary>
    AprilUpdate,

    /// <summary>
    /// dictionary_learning's TopK, BatchTopK and Matryoshka trainers: unit-norm decoder rows (projected
    /// gradient, renormalised after the step), Adam (0.9, 0.999), clip 1, b_dec at the geometric median of
    /// the first batch, its AuxK (<see cref="AuxKStyle.DictionaryLearning"/>) and threshold estimator.
    /// </summary>
    DictionaryLearning,
}

/// <summary>Everything a training run needs besides the data and the SAE.</summary>
public sealed record TrainerOptions
{
    /// <summary>Optimisation steps.</summary>
    public required long Steps { get; init; }

    /// <summary>Rows (tokens) per batch (paper: 4096).</summary>
    public int BatchSize { get; init; } = 4096;

    /// <summary>Peak learning rate (paper, gated: 3e-4).</summary>
    public float LearningRate { get; init; } = 3e-4f;

    /// <summary>Adam β1 (paper: 0).</summary>
    public float Beta1 { get; init; }

    /// <summary>Adam β2 (paper: 0.999).</summary>
    public float Beta2 { get; init; } = 0.999f;

    /// <summary>Adam ε.</summary>
    public float Epsilon { get; init; } = 1e-8f;

    /// <summary>Linear learning-rate warm-up steps.</summary>
    public int LrWarmupSteps { get; init; } = 1000;

    /// <summary>
    /// The learning-rate warm-up factor at 0-based step s is <c>s/W</c> (dictionary_learning's
    /// <c>get_lr_schedule</c>: the first step runs at learning rate 0, Adam's moments still update) instead
    /// of <c>(s + 1)/W</c> (default false; the dictionary-learning mode sets it).
    /// </summary>
    public bool LrWarmupFromZero { get; init; }

    /// <summary>Decay schedule after warm-up.</summary>
    public LrDecay LrDecay { get; init; } = LrDecay.None;

    /// <summary>Fraction of training after which the decay starts.</summary>
    public double LrDecayStartFraction { get; init; } = 0.8;

    /// <summary>The objective (λ is the final, post-warm-up coefficient).</summary>
    public SaeLossOptions Loss { get; init; } = new();

    /// <summary>Linear λ warm-up steps from 0.</summary>
    public int L1WarmupSteps { get; init; }

    /// <summary>
    /// The λ warm-up factor at 0-based step s is <c>s/W</c> (dictionary_learning's
    /// <c>get_sparsity_warmup_fn</c>: the first step has no sparsity term) instead of <c>(s + 1)/W</c>
    /// (default false).
    /// </summary>
    public bool L1WarmupFromZero { get; init; }

    /// <summary>Keep decoder rows at unit norm (project gradients, renormalise after each step).</summary>
    public bool ConstrainDecoderNorm { get; init; } = true;

    /// <summary>Clip the global gradient norm to this value (0 = off).</summary>
    public float GradClipNorm { get; init; }

    /// <summary>Resample dead features every this many steps (0 = never).</summary>
    public int ResampleEvery { get; init; }

    /// <summary>A feature is dead when it has not fired for this many steps (default: half the resampling
    /// period).</summary>
    public int? ResampleDeadWindow { get; init; }

    /// <summary>Steps over which the learning rate recovers from 0.1× after a resampling event
    /// (cosine).</summary>
    public int ResampleLrRecoverySteps { get; init; } = 1000;

    /// <summary>
    /// Scale activations by a fixed factor so that E‖x‖ = √d (SAELens <c>expected_average_only_in</c>),
    /// estimated
    /// from the data before training and folded into the weights when saving. Off by default, as in the
    /// paper.
    /// </summary>
    public bool NormalizeActivations { get; init; }

    /// <summary>Decoder row norm at initialisation (1 for the paper's constraint; 0.1 for
    /// SAELens/April).</summary>
    public float DecoderInitNorm { get; init; } = 1f;

    /// <summary>Seed of initialisation, data order and resampling.</summary>
    public ulong Seed { get; init; } = 42;

    /// <summary>Rows in the shuffle buffer.</summary>
    public int ShuffleBufferRows { get; init; } = 1 << 16;

    /// <summary>Log metrics every this many steps.</summary>
    public int LogEvery { get; init; } = 100;

    /// <summary>Write a checkpoint every this many steps (0 = only at the end).</summary>
    public int CheckpointEvery { get; init; }

    /// <summary>
    /// The AuxK dead window in tokens: a feature is dead for the AuxK loss after this many tokens without
    /// firing (dictionary_learning: 10M tokens; SAELens: 1000 steps, i.e. 1000·batch tokens). Null = the
    /// style's default. Counted in whole steps: <c>⌈tokens / batch⌉</c>. JumpReLU's pre-activation loss on
    /// dead latents uses the same window, with SAELens's default (1000 steps) and its count (more than the
    /// window, before the batch).
    /// </summary>
    public long? AuxDeadWindowTokens { get; init; }

    /// <summary>How b_dec starts (default: as the new SAE has it, 0).</summary>
    public DecoderBiasInit DecoderBiasInit { get; init; } = DecoderBiasInit.Keep;

    /// <summary>JumpReLU: the initial threshold θ₀ of every feature (SAELens 0.01; the paper 0.001 for inputs
    /// normalised to E‖x‖² = 1).</summary>
    public float InitialThreshold { get; init; } = 0.001f;

    /// <summary>Parameters to train (null = all); e.g. <c>r_mag</c>, <c>b_mag</c> for "baseline + rescale
    /// &amp; shift".</summary>
    public IReadOnlyList<string>? TrainableParameters { get; init; }

    /// <summary>Applies a recipe's settings on top of these options.</summary>
    public TrainerOptions WithRecipe(TrainingRecipe recipe) =>
        recipe switch
        {
            TrainingRecipe.Paper => this with
            {
                ConstrainDecoderNorm = true,
                Loss = Loss with { DecoderNormWeightedL1 = false, FreezeAuxDecoder = true },
            },
            TrainingRecipe.SaeLens or TrainingRecipe.AprilUpdate => this with
            {
                ConstrainDecoderNorm = false,
                GradClipNorm = GradClipNorm > 0 ? GradClipNorm : 1f,
                DecoderInitNorm = 0.1f,
                Loss = Loss with { DecoderNormWeightedL1 = true, FreezeAuxDecoder = false },
            },
            TrainingRecipe.DictionaryLearning => this with
            {
                ConstrainDecoderNorm = true,
                GradClipNorm = GradClipNorm > 0 ? GradClipNorm : 1f,
                LrWarmupFromZero = true,
                Beta1 = 0.9f,
                DecoderInitNorm = 1f,
                Loss = Loss with { DecoderNormWeightedL1 = false },
            },
            _ => throw new ArgumentOutOfRangeException(nameof(recipe), recipe, "Unknown training recipe."),
        };

    /// <summary>Checks the options.</summary>
    /// <exception cref="ArgumentException">A value is out of range.</exception>
    public void Validate()
    {
        static void Require(bool ok, string message)
        {
            if (!ok)
            {
                throw new ArgumentException(message);
            }
        }

        Require(Steps > 0, $"Steps must be positive, got {Steps}.");
        Require(BatchSize > 0, $"The batch size must be positive, got {BatchSize}.");
        Require(
            LearningRate > 0 && float.IsFinite(LearningRate),
            $"The learning rate must be positive, got {LearningRate}."
        );
        Require(
            Beta1 is >= 0 and < 1 && Beta2 is >= 0 and < 1,
            $"Adam betas must be in [0, 1), got {Beta1}, {Beta2}."
        );
        Require(Epsilon > 0, "Adam ε must be positive.");
        Require(LrWarmupSteps >= 0 && L1WarmupSteps >= 0, "Warm-up lengths cannot be negative.");
        Require(LrDecayStartFraction is >= 0 and <= 1, "LrDecayStartFraction must be in [0, 1].");
        Require(
            Loss.L1Coefficient >= 0 && float.IsFinite(Loss.L1Coefficient),
            $"λ must be ≥ 0, got {Loss.L1Coefficient}."
        );
        Require(GradClipNorm >= 0, "The gradient clip norm cannot be negative.");
        Require(ResampleEvery >= 0 && (ResampleDeadWindow ?? 1) > 0, "Resampling periods must be positive.");
        Require(LogEvery > 0 && CheckpointEvery >= 0, "LogEvery must be positive and CheckpointEvery ≥ 0.");
        Require(DecoderInitNorm > 0, "The decoder init norm must be positive.");
        Require(
            InitialThreshold > 0 && float.IsFinite(InitialThreshold),
            $"The initial JumpReLU threshold must be positive, got {InitialThreshold}."
        );
        Require(
            Loss.JumpRelu.Bandwidth > 0 && float.IsFinite(Loss.JumpRelu.Bandwidth),
            $"The JumpReLU bandwidth ε must be positive, got {Loss.JumpRelu.Bandwidth}."
        );
        Require(
            Loss.JumpRelu.TanhScale > 0 && float.IsFinite(Loss.JumpRelu.TanhScale),
            $"The JumpReLU tanh scale must be positive, got {Loss.JumpRelu.TanhScale}."
        );
        Require(
            Loss.JumpRelu.TargetL0 > 0 && float.IsFinite(Loss.JumpRelu.TargetL0),
            $"The JumpReLU target L0 must be positive, got {Loss.JumpRelu.TargetL0}."
        );
        Require(
            Loss.JumpRelu.StepInput == JumpReluStepInput.PreActivation
                || (Loss.JumpRelu.Sparsity != JumpReluSparsity.Tanh && !Loss.JumpRelu.SteToInput),
            "The L0 step on f (dictionary_learning) applies to the step and target-L0 sparsity, without the straight-through option."
        );
        Require(
            Loss.JumpRelu.PreActCoefficient >= 0 && float.IsFinite(Loss.JumpRelu.PreActCoefficient),
            $"The JumpReLU pre-activation loss coefficient must be ≥ 0, got {Loss.JumpRelu.PreActCoefficient}."
        );
        Require(
            (AuxDeadWindowTokens ?? 1) > 0,
            $"The AuxK dead window must be a positive number of tokens, got {AuxDeadWindowTokens}."
        );
        if (Loss.AuxK is { } aux)
        {
            Require(aux.KAux > 0, $"k_aux must be at least 1, got {aux.KAux}.");
            Require(
                aux.Coefficient >= 0 && float.IsFinite(aux.Coefficient),
                $"The AuxK coefficient must be ≥ 0, got {aux.Coefficient}."
            );
        }

        Require(
            Loss.Threshold.Rate is > 0 and < 1 && Loss.Threshold.StartStep >= -1,
            $"The threshold estimator's rate must be in (0, 1) and its start step ≥ −1, got {Loss.Threshold.Rate}, {Loss.Threshold.StartStep}."
        );
    }
}
