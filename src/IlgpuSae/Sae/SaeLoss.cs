namespace IlgpuSae.Sae;

/// <summary>How the squared reconstruction error is normalised.</summary>
public enum ReconstructionScale
{
    /// <summary><c>Σ_j (x − x̂)_j²</c>, mean over the batch: dictionary_learning and SAELens
    /// (default).</summary>
    Sum,

    /// <summary><c>Σ_j (x − x̂)_j² / d</c>: the paper's own infrastructure (its λ values assume
    /// this).</summary>
    MeanOverDim,
}

/// <summary>The training objective's settings.</summary>
public sealed record SaeLossOptions
{
    /// <summary>Sparsity coefficient λ (may be warmed up by the trainer).</summary>
    public float L1Coefficient { get; init; }

    /// <summary>
    /// Weight each feature's sparsity penalty by its decoder row norm ‖W_dec[i]‖ (Anthropic April update,
    /// SAELens). The paper keeps decoder rows at unit norm instead, so weights are 1 (default: false).
    /// </summary>
    public bool DecoderNormWeightedL1 { get; init; }

    /// <summary>
    /// Gated only: stop gradients into W_dec and b_dec through the auxiliary reconstruction (the paper's
    /// <c>sg(W_dec)</c>, default true). False is SAELens's behaviour and the paper's first ablation.
    /// </summary>
    public bool FreezeAuxDecoder { get; init; } = true;

    /// <summary>Normalisation of the squared error.</summary>
    public ReconstructionScale Scale { get; init; } = ReconstructionScale.Sum;

    /// <summary>TopK family: the AuxK loss for dead latents (null = off).</summary>
    public AuxKOptions? AuxK { get; init; }

    /// <summary>BatchTopK and Matryoshka: how the inference threshold is estimated during training.</summary>
    public ThresholdEstimator Threshold { get; init; } = ThresholdEstimator.DictionaryLearning;

    /// <summary>JumpReLU training settings (bandwidth, parametrisation, straight-through option).</summary>
    public JumpReluTraining JumpRelu { get; init; } = new();

    /// <summary>
    /// Matryoshka: the weight of each level's reconstruction loss, one per width (the last is the full
    /// dictionary). Null = 1 each (SAELens's unweighted sum); dictionary_learning's mean of
    /// <c>w_g·L_g</c> with <c>w_g = 1/G</c> is <c>1/G²</c> each.
    /// </summary>
    public IReadOnlyList<float>? LevelWeights { get; init; }
}

/// <summary>Whose AuxK variant (Gao et al. 2024, App. A.2) to reproduce; they differ in the codes, the
/// bias and the normalisation.</summary>
public enum AuxKStyle
{
    /// <summary>
    /// dictionary_learning (default): codes ReLU(pre) of the top-k_aux dead latents, <c>ê = A·W_dec</c> (no
    /// b_dec), loss <c>α·(1/B)Σ‖ê − e‖² / ((1/B)Σ‖e − ē‖²)</c>, α = 1/32, dead after 10M tokens without
    /// being selected (counted with the current batch).
    /// </summary>
    DictionaryLearning,

    /// <summary>
    /// SAELens: raw pre-activations of the top-k_aux dead latents (no ReLU, may be negative),
    /// <c>ê = A·W_dec + b_dec</c>, loss <c>α·min(#dead/k_aux, 1)·(1/B)Σ‖ê − e‖²</c>, α = 1, dead after more
    /// than 1000 steps without a non-zero value (counted before the current batch). The b_dec in ê is the
    /// term EleutherAI/sparsify#132 calls double-counted; it is reproduced here on purpose.
    /// </summary>
    SaeLens,
}

/// <summary>The AuxK loss for dead latents.</summary>
public sealed record AuxKOptions
{
    /// <summary>The style (default dictionary_learning).</summary>
    public AuxKStyle Style { get; init; } = AuxKStyle.DictionaryLearning;

    /// <summary>Dead latents used per row, k_aux (both libraries: d_in/2, Gao et al. App. B.1).</summary>
    public required int KAux { get; init; }

    /// <summary>The coefficient α (dictionary_learning 1/32, SAELens 1).</summary>
    public float Coefficient { get; init; } = 1f / 32;
}

/// <summary>How BatchTopK's inference threshold θ is estimated from each batch's smallest positive
/// activation m.</summary>
public sealed record ThresholdEstimator
{
    /// <summary>dictionary_learning: EMA <c>θ ← β·θ + (1−β)·m</c>, β = 0.999, after step 1000, the first
    /// update sets θ = m (default).</summary>
    public static ThresholdEstimator DictionaryLearning { get; } = new();

    /// <summary>SAELens: <c>θ ← (1−η)·θ + η·m</c>, η = 0.01, from θ = 0 at step 1, skipping batches without
    /// positives.</summary>
    public static ThresholdEstimator SaeLens { get; } = new() { SaeLensStyle = true, Rate = 0.01f };

    /// <summary>SAELens's rule (true) or dictionary_learning's (false).</summary>
    public bool SaeLensStyle { get; init; }

    /// <summary>β (dictionary_learning) or η (SAELens).</summary>
    public float Rate { get; init; } = 0.999f;

    /// <summary>dictionary_learning: updates happen only at 0-based steps after this one (its
    /// <c>step &gt; threshold_start_step</c>; −1 = from the first step).</summary>
    public long StartStep { get; init; } = 1000;
}

/// <summary>JumpReLU's sparsity term.</summary>
public enum JumpReluSparsity
{
    /// <summary><c>(λ/B)·Σ_b Σ_i 1[z_bi &gt; θ_i]</c>, its θ gradient from the pseudo-derivative of the
    /// step.</summary>
    Step,

    /// <summary><c>(λ/B)·Σ_b Σ_i tanh(c·f_bi·‖W_dec[i]‖)</c>: smooth in f and in the decoder norms; reaches θ
    /// through the JumpReLU's pseudo-derivative.</summary>
    Tanh,

    /// <summary>
    /// dictionary_learning's <c>λ·(l0/T − 1)²</c>, <c>l0 = (1/B)·Σ_b Σ_i H(s_bi − θ_i)</c> (s = f or the
    /// pre-activation, <see cref="JumpReluTraining.StepInput"/>),
    /// T = <see cref="JumpReluTraining.TargetL0"/>: the batch's L0 couples every latent, and θ_i's gradient
    /// is <c>λ·(2/T)·(l0/T − 1)·(1/B)·Σ_b (−1/ε)·K((s_bi − θ_i)/ε)</c>.
    /// </summary>
    TargetL0,
}

/// <summary>What the L0 step <c>H(s − θ)</c> of JumpReLU's sparsity term is applied to.</summary>
public enum JumpReluStepInput
{
    /// <summary>The pre-activation z (the paper, SAELens; default): latents just below θ get a θ
    /// gradient.</summary>
    PreActivation,

    /// <summary>
    /// The features f = JumpReLU(z), as dictionary_learning does (<c>StepFunction.apply(f, θ, ε)</c>,
    /// saprmarks/dictionary_learning#55): the value is the same, but an inactive latent (f = 0) is in the
    /// kernel window only while θ &lt; ε/2, so the sparsity gradient comes from active latents with
    /// z ∈ (θ, θ + ε/2) only.
    /// </summary>
    Features,
}

/// <summary>JumpReLU training (Rajamanoharan et al. 2024; SAELens "step" or "tanh" sparsity).</summary>
public sealed record JumpReluTraining
{
    /// <summary>Bandwidth ε of the rectangle kernel of the pseudo-derivatives (SAELens 0.05).</summary>
    public float Bandwidth { get; init; } = 0.05f;

    /// <summary>Train <c>log θ</c> (SAELens, default) instead of θ itself (dictionary_learning; θ is then
    /// clamped to stay positive unless <see cref="ClampThreshold"/> is false).</summary>
    public bool LogThreshold { get; init; } = true;

    /// <summary>
    /// With a raw θ (<see cref="LogThreshold"/> false): clamp θ to at least
    /// <see cref="JumpReluSae.MinimumThreshold"/> after each step (default true). dictionary_learning's
    /// JumpReluTrainer does not clamp (trainers/jumprelu.py, <c>update</c>), so its mode turns it off.
    /// </summary>
    public bool ClampThreshold { get; init; } = true;

    /// <summary>
    /// The training forward's <c>f = ReLU(z)·1[z &gt; θ]</c> (true, default: SAELens) or <c>z·1[z &gt; θ]</c>
    /// (false: dictionary_learning's <c>JumpReLUFunction</c> in trainers/jumprelu.py, whose pre-activation
    /// has no ReLU). They differ only where θ &lt; 0, which an unclamped raw θ can reach; encoding outside
    /// training keeps the ReLU (dictionary_learning's <c>JumpReluAutoEncoder.encode</c> has it).
    /// </summary>
    public bool TrainingRelu { get; init; } = true;

    /// <summary>
    /// The sparsity term: <see cref="JumpReluSparsity.Step"/> (default, an L0 penalty) or
    /// <see cref="JumpReluSparsity.Tanh"/> (Anthropic's <c>λ·Σ_i tanh(c·f_i·‖W_dec[i]‖)</c>, SAELens
    /// <c>jumprelu_sparsity_loss_mode="tanh"</c>).
    /// </summary>
    public JumpReluSparsity Sparsity { get; init; } = JumpReluSparsity.Step;

    /// <summary>The tanh mode's scale c (SAELens <c>jumprelu_tanh_scale</c> = 4).</summary>
    public float TanhScale { get; init; } = 4f;

    /// <summary>The target T of <see cref="JumpReluSparsity.TargetL0"/> (dictionary_learning
    /// <c>target_l0</c> = 20).</summary>
    public float TargetL0 { get; init; } = 20f;

    /// <summary>What the L0 step sees: the pre-activation (default) or, as dictionary_learning does,
    /// f.</summary>
    public JumpReluStepInput StepInput { get; init; } = JumpReluStepInput.PreActivation;

    /// <summary>Also pass the pseudo-derivatives to the pre-activations (Anthropic, January 2025; newer
    /// SAELens <c>jumprelu_ste_to_input</c>). Off by default.</summary>
    public bool SteToInput { get; init; }

    /// <summary>
    /// The coefficient λ_P of Anthropic's pre-activation loss (SAELens <c>pre_act_loss_coefficient</c>; 0 =
    /// off, SAELens's default None): <c>(λ_P/B)·Σ_b Σ_i ReLU(θ_i − z_bi)·dead_i·‖W_dec[i]‖</c>, which pulls
    /// the pre-activations z of the latents in <see cref="PreActLatents"/> up towards their thresholds. Not
    /// warmed up (SAELens applies it as is).
    /// </summary>
    public float PreActCoefficient { get; init; }

    /// <summary>Which latents the pre-activation loss covers: <see cref="PreActLatents.Dead"/> (SAELens,
    /// default) or <see cref="PreActLatents.All"/> (Anthropic's recipe).</summary>
    public PreActLatents PreActLatents { get; init; } = PreActLatents.Dead;
}

/// <summary>The latents JumpReLU's pre-activation loss covers (dead_i in its formula).</summary>
public enum PreActLatents
{
    /// <summary>
    /// Only dead latents: more than the dead window (default 1000 steps) since they last had a non-zero
    /// activation, counted before the current batch — SAELens ("except we only calculate this for latents
    /// that are actually dead", SAELens 6.18 <c>JumpReLUTrainingSAE.calculate_pre_act_loss</c>). Default.
    /// </summary>
    Dead,

    /// <summary>Every latent (dead_i = 1): Anthropic's recipe (Transformer Circuits, January 2025
    /// update).</summary>
    All,
}

/// <summary>How a training step runs after the dense encoder product.</summary>
public enum TrainingPath
{
    /// <summary>Sparse when the fraction of active (row, feature) pairs is at most
    /// <see cref="SparseAutoencoder.SparseDensityThreshold"/>, else dense.</summary>
    Auto,

    /// <summary>Dense matrix products for the decoder, [Φ; Ψ] and the weight gradients.</summary>
    Dense,

    /// <summary>Index lists of the active features; decoder, [Φ; Ψ] and weight gradients cost
    /// O(B·L0·d).</summary>
    Sparse,
}

/// <summary>Loss terms of one batch (batch means).</summary>
/// <param name="Mse">Reconstruction term <c>c·Σ_j (x − x̂)²</c> averaged over the batch.</param>
/// <param name="Sparsity">Sparsity term <c>λ·Σ_i w_i·a_i</c> (a = ReLU(π_gate) for gated, f for
/// standard).</param>
/// <param name="Aux">Gated auxiliary reconstruction term (0 for standard).</param>
/// <param name="L0">Mean number of active features per row.</param>
public sealed record LossBreakdown(double Mse, double Sparsity, double Aux, double L0)
{
    /// <summary>The total loss.</summary>
    public double Total => Mse + Sparsity + Aux;
}
