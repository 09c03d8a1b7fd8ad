using IlgpuSae.Verification;

namespace IlgpuSae.Tests.Infrastructure;

/// <summary>
/// The numeric tolerances the tests compare with, one name per comparison, next to the library's own
/// (<see cref="Tolerance.Exact"/>, <see cref="Tolerance.Elementwise"/>,
/// <see cref="Tolerance.Transcendental"/>,
/// <see cref="Tolerance.Accumulation"/>, <see cref="Tolerance.Tf32Accumulation"/>, used by the kernel
/// checks).
/// A <see cref="Tolerance"/> bounds <c>|actual − reference|</c> by <c>Atol + Rtol·|reference|</c>; a
/// <see langword="double"/> constant is an absolute bound.
/// </summary>
public static class TestTolerances
{
    // ---- Double-precision references --------------------------------------------------------------

    /// <summary>
    /// Double-precision references against MathNet and closed forms: sums of at most ~20 products of values
    /// of
    /// order 1 carry ~1e-15 of round-off, and 1e-12 is still far below any float32 error (~1e-7), so a
    /// reference
    /// that slipped into float32 would fail. <see cref="Tolerance.Atol"/> alone bounds double closed forms of
    /// order 1 (Adam's first step, frontier interpolation).
    /// </summary>
    public static Tolerance DoubleRoundOff { get; } = new("double round-off", 1e-12, 1e-12);

    /// <summary>
    /// Adam's second moment after one step, (1 − β2)·g², checked absolutely: it is ≤ 0.016 in that test and
    /// 1e-9 for the smallest gradient, so the bound must sit well below 1e-9 (1e-12 would accept v = 0
    /// there);
    /// double round-off is ~1e-18.
    /// </summary>
    public const double AdamSecondMoment = 1e-15;

    /// <summary>
    /// AdamW at zero gradient against 2·(1 − lr·wd): the test computes the expected value in float32
    /// (1.89999998), the reference in double (1.8999999985), so they differ by ~2e-8.
    /// </summary>
    public const double AdamWDecay = 1e-7;

    /// <summary>
    /// Adam + L2 at zero gradient against 2 − lr: the expected value is float32 (~2e-8 off) and the step
    /// lr·g/(|g| + ε) with g = wd·p = 1 differs from lr by ~1e-9 (ε = 1e-8); 1e-6 is the bound the test was
    /// written with.
    /// </summary>
    public const double AdamL2Step = 1e-6;

    /// <summary>
    /// Mean and standard deviation of 200 000 reference random samples (normal σ = 2, uniform on [−1, 3)):
    /// their standard errors are at most 2/√200 000 ≈ 0.0045, so 0.02 is more than four standard errors.
    /// </summary>
    public const double SampleMoments = 0.02;

    /// <summary>
    /// The reference gradients against MathNet's central finite differences (3 points, absolute step 1e-6) in
    /// double: truncation error ~h² and round-off ~ε·|L|/h ≈ 1e-10·|L| both stay well below 1e-6.
    /// </summary>
    public static Tolerance FiniteDifferences { get; } =
        new("reference gradient vs central differences", 1e-6, 1e-6);

    /// <summary>
    /// The study frontier's inverse, L0 for a score (exp of a log-L0 interpolation), at L0 = √200 ≈ 14:
    /// double
    /// round-off is ~1e-14; 1e-9 is the bound the test was written with.
    /// </summary>
    public const double FrontierInverse = 1e-9;

    // ---- Float32 device results against double references -----------------------------------------

    /// <summary>
    /// One float32 Adam step over a whole parameter buffer (step ≤ lr = 1e-2, parameters of order 1): a few
    /// roundings in m, v, √v̂ and the division, i.e. some ulps of the parameter. Compare the library's
    /// three-step Adam check (2e-6, 2e-6).
    /// </summary>
    public static Tolerance AdamOneStep { get; } = new("Adam (1 step)", 1e-6, 1e-6);

    /// <summary>
    /// The SAE loss, float32 on the device against the double reference: sums over a batch of 33 rows of
    /// d = 20 squared errors and m = 70 sparsity terms, so a relative bound of 1e-4 (plus 1e-6 for losses
    /// near 0).
    /// </summary>
    public static Tolerance SaeLoss { get; } = new("SAE loss (float32 vs double)", 1e-6, 1e-4);

    /// <summary>
    /// One SAE parameter gradient, float32 on the device against the double reference: float32 sums over the
    /// batch of products of d- and m-length terms. Small entries come from cancellation, so the absolute part
    /// scales with the tensor's largest |gradient| <paramref name="scale"/> (floored at 1e-3): 2e-5 of it,
    /// plus
    /// 1e-4 relative.
    /// </summary>
    /// <param name="name">The parameter (shown in the comparison report).</param>
    /// <param name="scale">The largest |reference gradient| of that parameter.</param>
    public static Tolerance SaeGradient(string name, double scale) =>
        new($"gradient {name}", 2e-5 * Math.Max(scale, 1e-3), 1e-4);

    /// <summary>
    /// The sparse and the dense training step's gradients against each other: the same products summed in
    /// different orders, so 1e-5 of the largest |gradient| <paramref name="scale"/> plus 1e-5 relative.
    /// </summary>
    /// <param name="scale">The largest |dense gradient|.</param>
    public static Tolerance SparseVsDenseGradient(double scale) =>
        new("sparse vs dense gradients", 1e-5 * scale, 1e-5);

    /// <summary>
    /// The gated SAE's dW_dec on the device (batch 16, d = 12, m = 30, every backend) against the double
    /// frozen-aux reference; it must stay below the &gt; 1e-3 difference that unfreezing the aux decoder
    /// makes,
    /// which the same test requires.
    /// </summary>
    public static Tolerance FrozenAuxDecoderGradient { get; } =
        new("dW_dec vs frozen-aux reference", 1e-4, 1e-3);

    /// <summary>
    /// Gradient pursuit (ITO) coefficients, float32 on the device against the dense double algorithm: up to
    /// k = 6 iterations of d = 12 dot products and a step ⟨v, r⟩/⟨v, v⟩ each, whose errors carry over from
    /// one
    /// iteration to the next; hence 2e-4 absolute plus 1e-3 relative.
    /// </summary>
    public static Tolerance PursuitCoefficients { get; } =
        new("gradient pursuit coefficients (float32 vs double)", 2e-4, 1e-3);

    /// <summary>
    /// Slack in "more pursuit atoms never reconstruct worse": the squared reconstruction error over 24×12
    /// float32
    /// values, when a larger k reconstructs (almost) equally well, may rise by round-off.
    /// </summary>
    public const double PursuitErrorSlack = 1e-6;

    /// <summary>
    /// A Gemma Scope JumpReLU (d = 5, m = 7, values below 0.5) in float32 against the double reference
    /// encoder:
    /// a few roundings of 5-term dot products (~1e-7); 1e-5 leaves a wide margin.
    /// </summary>
    public const double GemmaScopeFeatures = 1e-5;

    /// <summary>
    /// A gated SAE against its exported JumpReLU form (features and reconstructions): the export is exact in
    /// real arithmetic, and only the float32 folding of exp(r_mag) into W_enc and of b_mag −
    /// exp(r_mag)·b_gate
    /// into the threshold rounds, a few ulps over d = 12 terms.
    /// </summary>
    public static Tolerance GatedToJumpReluExport { get; } = new("gated vs exported JumpReLU", 1e-5, 1e-5);

    /// <summary>
    /// <c>eval</c>'s L0 of the gated SAE and of its exported JumpReLU on the same 4096 rows: one feature that
    /// flips at
    /// its threshold by the export's float32 round-off moves L0 by 1/4096 ≈ 2.4e-4, so 1e-3 allows about
    /// four.
    /// </summary>
    public const double ExportedL0 = 1e-3;

    /// <summary>
    /// <c>eval</c>'s MSE of the gated SAE and of its exported JumpReLU on the same rows: the export's float32
    /// round-off and the few features that flip (see <see cref="ExportedL0"/>).
    /// </summary>
    public const double ExportedMse = 1e-5;

    // ---- The language model -----------------------------------------------------------------------

    /// <summary>
    /// Float32 forward against double: errors come from float sums of d-length dot products through a few
    /// layer norms, exp and (CUDA/OpenCL) approximate transcendental functions.
    /// </summary>
    public static Tolerance LmForward { get; } = new("lm forward (float32 vs double)", 2e-4, 2e-3);

    /// <summary>
    /// Against PyTorch's float32 golden outputs of the bundled 2-layer model: both sides are float32 with
    /// different summation orders and the bundled model's logits reach |10|, so the absolute part is larger.
    /// </summary>
    public static Tolerance LmGolden { get; } = new("lm forward vs PyTorch float32 golden", 1e-3, 1e-3);

    /// <summary>
    /// The bundled model's clean next-token loss (4.90 nats) against PyTorch's golden value: a mean of
    /// log-softmaxes of logits within <see cref="LmGolden"/>, whose errors partly average out.
    /// </summary>
    public const double CleanLossVsPyTorch = 2e-4;

    /// <summary>
    /// Losses with one site zero-ablated against PyTorch's golden values: they reach 14.03 nats (against 4.90
    /// clean), with larger logits, so the same float32 differences are larger in absolute terms than for
    /// <see cref="CleanLossVsPyTorch"/>.
    /// </summary>
    public const double AblatedLossVsPyTorch = 5e-4;

    /// <summary>
    /// The clean, SAE-spliced and zero-ablated losses (a few nats) of the device forward against the double
    /// reference forward of the bundled model.
    /// </summary>
    public const double LossVsDoubleReference = 2e-4;

    /// <summary>
    /// Loss recovered, (zero − sae)/(zero − clean), against the double reference: three losses each within
    /// <see cref="LossVsDoubleReference"/> over zero − clean ≈ 3.7 nats at blocks.0.hook_mlp_out give at most
    /// ~2e-4; 1e-3 leaves a margin.
    /// </summary>
    public const double LossRecoveredScore = 1e-3;

    /// <summary>
    /// The ce_loss_score <c>eval --json</c> prints against the same formula recomputed from the three losses
    /// it
    /// prints (written in round-trip precision): only double round-off, so 1e-9 catches any other formula.
    /// </summary>
    public const double ReportedScoreRecomputed = 1e-9;

    // ---- Helpers ----------------------------------------------------------------------------------

    /// <summary>The absolute error <paramref name="tolerance"/> allows at <paramref name="reference"/>: Atol
    /// + Rtol·|reference|.</summary>
    public static double Bound(this Tolerance tolerance, double reference)
    {
        ArgumentNullException.ThrowIfNull(tolerance);
        return tolerance.Atol + tolerance.Rtol * Math.Abs(reference);
    }

    /// <summary>
    /// Whether |actual − reference| ≤ <see cref="Bound"/>, exactly as the plain comparison reads: unlike
    /// <see cref="Tolerance.Accepts"/>, which matches NaN to NaN and an infinity to itself, a NaN never
    /// passes.
    /// </summary>
    public static bool Allows(this Tolerance tolerance, double actual, double reference) =>
        Math.Abs(actual - reference) <= tolerance.Bound(reference);

    /// <summary>As <see cref="Allows(Tolerance, double, double)"/>, with the difference taken in
    /// float32.</summary>
    public static bool Allows(this Tolerance tolerance, float actual, float reference) =>
        Math.Abs(actual - reference) <= tolerance.Bound(reference);
}
