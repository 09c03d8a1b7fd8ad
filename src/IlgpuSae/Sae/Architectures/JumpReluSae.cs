using IlgpuSae.Kernels;
using IlgpuSae.Tensors;

namespace IlgpuSae.Sae;

/// <summary>
/// JumpReLU (Rajamanoharan et al. 2024, "Jumping Ahead: Improving Reconstruction Fidelity with JumpReLU
/// Sparse Autoencoders"): <c>f = z·1[z &gt; θ]</c> with <c>z = ReLU(x̃·W_enc + b_enc)</c> (SAELens applies
/// the ReLU before the threshold), θ = <c>threshold</c>. Gemma Scope files and the exact export of a tied
/// gated SAE (paper §3.1) load as this family. Training (SAELens "step" sparsity): loss
/// <c>(1/B)Σ‖x̂ − x‖² + (λ/B)·Σ_b Σ_i 1[z_bi &gt; θ_i]</c>, the step's gradient with respect to θ given by
/// the kernel-density pseudo-derivatives of bandwidth ε (Eqs. 11-12): <c>∂f/∂θ := −(θ/ε)·K((z−θ)/ε)</c>,
/// <c>∂H/∂θ := −(1/ε)·K((z−θ)/ε)</c>, K the rectangle <c>1[|u| &lt; ½]</c>; <c>∂f/∂z = H</c>, no gradient
/// into z through the step (unless <see cref="JumpReluTraining.SteToInput"/>). θ is trained as
/// <c>log θ</c> (SAELens) or as θ clamped positive (dictionary_learning), in float32 either way. Options:
/// the tanh sparsity and Anthropic's pre-activation loss <c>(λ_P/B)·Σ_b Σ_i ReLU(θ_i − z_bi)·dead_i·n_i</c>
/// (Transformer Circuits, January 2025; SAELens <c>pre_act_loss_coefficient</c>), on SAELens's dead latents
/// (the trainer's counters in <see cref="SparseAutoencoder.AuxDeadFeatures"/>) or on all of them; and
/// dictionary_learning's target-L0 loss <c>λ·(l0/T − 1)²</c> (<see cref="JumpReluSparsity.TargetL0"/>), whose
/// batch L0 is reduced before any latent's θ gradient, with the step on f as dictionary_learning applies it
/// or on the pre-activation.
/// </summary>
public sealed class JumpReluSae : SaeArchitecture
{
    private JumpReluSae()
        : base("jumprelu") { }

    /// <summary>The registered instance.</summary>
    public static JumpReluSae Instance { get; } = new();

    /// <summary>Scratch [2M + 1]: the pre-activation loss's dead mask, then its per-feature
    /// <c>dead_i·Σ_b ReLU(θ_i − z_bi)</c>, then the batch's L0 count of the target-L0 loss.</summary>
    private const string ExtraName = "jumprelu_extra";

    /// <summary>Scratch [B]: the target-L0 loss's step count per row.</summary>
    private const string StepCountName = "jumprelu_step_count";

    private static DeviceTensor Extra(SaeWorkspace ws, int m) => ws.Scratch(ExtraName, 1, 2 * m + 1);

    /// <summary>The smallest θ a raw-parametrised threshold is clamped to after each step (unless
    /// <see cref="JumpReluTraining.ClampThreshold"/> is off, as in dictionary_learning's mode).</summary>
    public const float MinimumThreshold = 1e-6f;

    /// <inheritdoc/>
    public override bool PenaltyCountsActive => true;

    /// <summary>
    /// True, with the support of <see cref="SupportRows"/>: besides the active entries it holds the inactive
    /// ones within ε/2 below θ, where the θ pseudo-derivative (and the straight-through option) reads Φ, and,
    /// with the pre-activation loss, every entry below θ of a dead latent, whose dU that loss writes. Those
    /// dead latents' columns are so taken in whole (every entry is below θ or in the window above θ − ε/2):
    /// simpler than a dense fallback for the step, exact, and still sparse while few latents are dead; with
    /// <see cref="PreActLatents.All"/> the support is dense and <see cref="TrainingPath.Auto"/> takes the
    /// dense path. The element-wise backward itself stays one dense pass over [B, M], correct with Φ zero
    /// outside the support because it reads Φ only inside it.
    /// </summary>
    public override bool SupportsSparsePath => true;

    /// <summary>
    /// Writes JumpReLU's support into <see cref="SaeWorkspace.DU"/> and returns it: 1 where
    /// <c>(z − θ)/ε &gt; −½</c> (z = U + b_enc, the pre-activation the backward's window sees, for every
    /// sparsity: the step, tanh, target-L0 with the step on f or on z; the step on f reads no Φ), and, with
    /// the pre-activation loss, where <c>z &lt; θ</c> for a dead latent (its dead mask is computed here, and
    /// again, identically, by <see cref="Backward"/>). A feature with θ &lt; ε/2 has its window reach below
    /// z = 0, so its support may be dense; the density test of <see cref="TrainingPath.Auto"/> sees that.
    /// dU is free here: nothing reads it before <see cref="Backward"/>, whose kernel writes every element of
    /// it, on the sparse path and on the dense one that <see cref="TrainingPath.Auto"/> may still choose
    /// after the compaction.
    /// </summary>
    public override MatrixView SupportRows(SparseAutoencoder sae, SaeWorkspace ws)
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(ws);
        var jump = ws.Loss?.JumpRelu ?? new JumpReluTraining();
        var p = sae.Parameters;
        int m = sae.DSae;
        bool preAct = jump.PreActCoefficient > 0;
        var dead = Extra(ws, m).Data.SubView(0, m);
        if (preAct)
        {
            DeadMask(sae, jump, dead);
        }

        sae.Device.Ops.JumpReluSupport(
            ws.U.Data,
            p["b_enc"].Data,
            p["threshold"].Data,
            dead,
            ws.DU.Data,
            m,
            1f / jump.Bandwidth,
            preAct
        );
        return ws.DU;
    }

    /// <inheritdoc/>
    public override void AddTensors(ParameterLayout layout, SaeConfig config)
    {
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentNullException.ThrowIfNull(config);
        layout.Add("b_enc", 1, config.DSae).Add("threshold", 1, config.DSae);
    }

    /// <inheritdoc/>
    public override IReadOnlyList<string> FeatureBiases(SaeConfig config) => ["b_enc"];

    /// <inheritdoc/>
    public override void Initialize(SparseAutoencoder sae, SaeInitOptions options)
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(options);
        sae.Device.Ops.Fill(sae.Parameters["threshold"].Data, options.InitialThreshold);
    }

    /// <inheritdoc/>
    public override void Activate(SparseAutoencoder sae, SaeWorkspace ws)
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(ws);
        var p = sae.Parameters;
        // Training in dictionary_learning's mode: its JumpReLUFunction has no ReLU (differs where θ < 0).
        bool relu = ws.Loss?.JumpRelu.TrainingRelu ?? true;
        sae.Device.Ops.JumpReluEncode(
            ws.U.Data,
            p["b_enc"].Data,
            p["threshold"].Data,
            ws.F.Data,
            sae.DSae,
            relu
        );
    }

    /// <inheritdoc/>
    public override void Backward(SparseAutoencoder sae, SaeWorkspace ws, float lambdaOverB, bool weightedL1)
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(ws);
        if (weightedL1)
        {
            throw new NotSupportedException(
                "JumpReLU's step (L0) penalty is not decoder-norm weighted (SAELens step mode)."
            );
        }

        var jump = ws.Loss?.JumpRelu ?? new JumpReluTraining();
        var p = sae.Parameters;
        var ops = sae.Device.Ops;
        bool tanh = jump.Sparsity == JumpReluSparsity.Tanh;
        bool preAct = jump.PreActCoefficient > 0;
        if (tanh || preAct)
        {
            ops.RowL2Norms(sae.Decoder, ws.DecoderNorms.Data);
        }

        int m = sae.DSae;
        var extra = Extra(ws, m);
        if (preAct)
        {
            DeadMask(sae, jump, extra.Data.SubView(0, m));
        }

        bool targetL0 = jump.Sparsity == JumpReluSparsity.TargetL0;
        bool onFeatures = jump.StepInput == JumpReluStepInput.Features;
        if (targetL0)
        {
            // The batch's L0, Σ_b Σ_i H(s_bi − θ_i), before any latent's gradient: it couples them all.
            var rows = ws.Scratch(StepCountName, 1, ws.Batch);
            ops.JumpReluStepCount(
                ws.U.Data,
                p["b_enc"].Data,
                p["threshold"].Data,
                rows.Data,
                m,
                onFeatures,
                jump.TrainingRelu
            );
            ops.ReduceRows<Sum>(rows.View, extra.Data.SubView(2L * m, 1));
            if (sae.Collectives is { } ranks)
            {
                // Across processes the count is the sum of the ranks' (their rows, or their features);
                // data-parallel, each rank's gradient is its B/N rows' mean, so the count is kept per B/N
                // rows: l0 = count/b is then the global batch's.
                var count = extra.Data.SubView(2L * m, 1);
                ranks.Sum(sae.Device, count);
                if (ranks.RowsSplit)
                {
                    ops.Map(count, count, new Scale(1f / ranks.Size));
                }
            }
        }

        ops.JumpReluBackward(
            ws.U.Data,
            p["b_enc"].Data,
            p["threshold"].Data,
            ws.Phi.Data,
            ws.DecoderNorms.Data,
            ws.DU.Data,
            p.Gradient("b_enc").Data,
            p.Gradient("threshold").Data,
            ws.ColumnSums.Data,
            extra.Data,
            new FamilyBackwardArgs
            {
                Rows = ws.Batch,
                M = sae.DSae,
                LambdaOverB = lambdaOverB,
                InvBandwidth = 1f / jump.Bandwidth,
                SteToInput = jump.SteToInput ? 1 : 0,
                Tanh = tanh ? 1 : 0,
                TanhScale = jump.TanhScale,
                PreAct = preAct ? 1 : 0,
                PreActOverB = jump.PreActCoefficient / ws.Batch,
                TargetL0 = targetL0 ? 1 : 0,
                InvTargetL0 = 1f / jump.TargetL0,
                StepOnFeatures = onFeatures ? 1 : 0,
                NoRelu = jump.TrainingRelu ? 0 : 1,
            }
        );
        if (preAct)
        {
            // ∂/∂W_dec[i] of (λ_P/B)·Σ_b ReLU(θ_i − z_bi)·dead_i·n_i
            //   = (λ_P/B)·Σ_b ReLU(θ_i − z_bi)·dead_i·Ŵ_dec[i].
            ops.DecoderNormPenaltyGrad(
                sae.Decoder,
                extra.Data.SubView(m, m),
                ws.DecoderNorms.Data,
                sae.DecoderGradient,
                jump.PreActCoefficient / ws.Batch
            );
        }

        if (tanh)
        {
            // ∂/∂W_dec[i] of (λ/B)·Σ_b tanh(c·f·n_i) = (λ/B)·Σ_b c·f·sech²(c·f·n_i)·W_dec[i]/n_i.
            ops.DecoderNormPenaltyGrad(
                sae.Decoder,
                ws.ColumnSums.Data.SubView(2L * sae.DSae, sae.DSae),
                ws.DecoderNorms.Data,
                sae.DecoderGradient,
                lambdaOverB
            );
        }
    }

    /// <summary>
    /// dead_i of the pre-activation loss into <paramref name="dead"/> [M]: 1 for every latent
    /// (<see cref="PreActLatents.All"/>), else from the trainer's counters as SAELens counts them (more than
    /// the window since the latent last fired, before this batch); 0 everywhere when the trainer gave no
    /// counters (no latent can be dead yet).
    /// </summary>
    private static void DeadMask(SparseAutoencoder sae, JumpReluTraining jump, ILGPU.ArrayView<float> dead)
    {
        var ops = sae.Device.Ops;
        if (jump.PreActLatents == PreActLatents.All)
        {
            ops.Fill(dead, 1f);
        }
        else if (sae.AuxDeadFeatures is { } window)
        {
            // SAELens: n_forward_passes_since_fired > dead_feature_window, the counters before this batch
            // (IncludeCurrentBatch false: the fired counts are not read).
            ops.DeadMask(window.StepsSinceFired, window.StepsSinceFired, dead, window.WindowSteps, false);
        }
        else
        {
            ops.Fill(dead, 0f);
        }
    }

    /// <summary>
    /// The pre-activation loss of the latest training pass,
    /// <c>(λ_P/B)·Σ_i n_i·dead_i·Σ_b ReLU(θ_i − z_bi)</c> (0 without it); called after the device has
    /// synchronised, on logging steps.
    /// </summary>
    public override double AuxiliaryLoss(SparseAutoencoder sae, SaeWorkspace ws)
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(ws);
        var jump = ws.Loss?.JumpRelu;
        if (jump is null || jump.PreActCoefficient <= 0)
        {
            return 0;
        }

        int m = sae.DSae;
        var below = Extra(ws, m).ToArray();
        var norms = ws.DecoderNorms.ToArray();
        double sum = 0;
        for (int i = 0; i < m; i++)
        {
            sum += (double)norms[i] * below[m + i];
        }

        return (double)jump.PreActCoefficient * sum / ws.Batch;
    }

    /// <inheritdoc/>
    public override bool SparsityPerRow(SparseAutoencoder sae, SaeWorkspace ws, ILGPU.ArrayView<float> perRow)
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(ws);
        var jump = ws.Loss?.JumpRelu;
        var ops = sae.Device.Ops;
        if (jump?.Sparsity == JumpReluSparsity.TargetL0)
        {
            // (l0/T − 1)² for the batch, written into every row so that the shared loss's mean over the
            // rows, times λ, is the term (a logging step: one synchronisation).
            double l0 = Extra(ws, sae.DSae).ToArray()[2 * sae.DSae] / (double)ws.Batch;
            double excess = l0 / jump.TargetL0 - 1;
            ops.Fill(perRow, (float)(excess * excess));
            return true;
        }

        if (jump is null || jump.Sparsity != JumpReluSparsity.Tanh)
        {
            return false;
        }

        var scaled = ws.Scratch("jumprelu_tanh", ws.Batch, sae.DSae);
        ops.MapBroadcastRows<Multiply>(ws.F, ws.DecoderNorms.Data, scaled);
        ops.Map(scaled.Data, scaled.Data, new ScaledTanh(jump.TanhScale));
        ops.ReduceRows<Sum>(scaled, perRow);
        return true;
    }

    /// <inheritdoc/>
    public override void BeforeOptimizerStep(SparseAutoencoder sae, SaeLossOptions options)
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(options);
        if (options.JumpRelu.LogThreshold)
        {
            // Adam sees t = log θ and ∂L/∂t = θ·∂L/∂θ.
            var ops = sae.Device.Ops;
            var theta = sae.Parameters["threshold"].Data;
            var grad = sae.Parameters.Gradient("threshold").Data;
            ops.Map(grad, theta, grad, default(Multiply));
            ops.Map(theta, theta, default(Log));
        }
    }

    /// <inheritdoc/>
    public override void AfterOptimizerStep(SparseAutoencoder sae, SaeLossOptions options)
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(options);
        var ops = sae.Device.Ops;
        var theta = sae.Parameters["threshold"].Data;
        if (options.JumpRelu.LogThreshold)
        {
            ops.Map(theta, theta, default(Exp));
        }
        else if (options.JumpRelu.ClampThreshold)
        {
            ops.Map(theta, theta, new ClampMin(MinimumThreshold));
        }
    }

    /// <inheritdoc/>
    public override (double[] F, double[] A) ReferenceActivate(
        SaeConfig config,
        IReadOnlyDictionary<string, double[]> p,
        double[] u,
        double[] um
    )
    {
        ArgumentNullException.ThrowIfNull(p);
        ArgumentNullException.ThrowIfNull(u);
        var bEnc = p["b_enc"];
        var threshold = p["threshold"];
        var f = new double[u.Length];
        for (int i = 0; i < u.Length; i++)
        {
            double z = u[i] + bEnc[i];
            f[i] = z > 0 && z > threshold[i] ? z : 0;
        }

        return (f, f);
    }

    /// <inheritdoc/>
    public override void ReferenceBackward(
        SaeConfig config,
        IReadOnlyDictionary<string, double[]> p,
        double[] u,
        double[] um,
        double[] phi,
        double[] psi,
        double[] penalty,
        double[] du,
        double[] dum,
        IDictionary<string, double[]> grads
    ) =>
        throw new NotSupportedException(
            "JumpReLU's training reference needs the bandwidth and options: see Verification.FamilyReference."
        );
}
