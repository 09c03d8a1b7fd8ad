using ILGPU.Runtime;
using IlgpuSae.Kernels;
using IlgpuSae.Tensors;

namespace IlgpuSae.Sae;

/// <summary>
/// BatchTopK (Bussmann et al. 2024, "BatchTopK Sparse Autoencoders"): during training the k·B largest
/// positive pre-activations of the whole batch are kept, <c>f = BatchTopK_{k·B}(ReLU(x̃·W_enc + b_enc))</c>
/// (ties to the lowest flat index), so rows share a budget of k per row on average; the gradient flows
/// through the kept entries, plus the optional AuxK loss (<see cref="SaeLossOptions.AuxK"/>). Inference
/// cannot use the batch, so a global threshold θ (<c>topk_threshold</c>) is estimated during training from
/// each batch's smallest kept activation (<see cref="ThresholdEstimator"/>), and inference is the JumpReLU
/// <c>f = z·1[z &gt; θ]</c>. θ starts unset (−1): encoding with it is an error, never a silent ReLU. Saved
/// for inference as a SAELens <c>jumprelu</c> SAE with θ in every feature (<see cref="InferenceForm"/>).
/// </summary>
public class BatchTopKSae : SaeArchitecture
{
    /// <summary>Name of the threshold tensor [1] (SAELens's buffer <c>topk_threshold</c>).</summary>
    public const string ThresholdTensor = "topk_threshold";

    private protected BatchTopKSae(string name)
        : base(name) { }

    private BatchTopKSae()
        : base("batchtopk") { }

    /// <summary>The registered instance.</summary>
    public static BatchTopKSae Instance { get; } = new();

    /// <inheritdoc/>
    public override void Validate(SaeConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        TopKFamily.ValidateK(config, Name);
        if (config.MatryoshkaWidths is not null)
        {
            throw new ArgumentException(
                "Matryoshka widths apply to matryoshka_batchtopk SAEs only, not to batchtopk."
            );
        }
    }

    /// <inheritdoc/>
    public override void AddTensors(ParameterLayout layout, SaeConfig config)
    {
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentNullException.ThrowIfNull(config);
        layout.Add("b_enc", 1, config.DSae).Add(ThresholdTensor, 1, 1);
    }

    /// <inheritdoc/>
    public override IReadOnlyList<string> FeatureBiases(SaeConfig config) => ["b_enc"];

    /// <inheritdoc/>
    public override void Initialize(SparseAutoencoder sae, SaeInitOptions options)
    {
        ArgumentNullException.ThrowIfNull(sae);
        sae.Device.Ops.Fill(sae.Parameters[ThresholdTensor].Data, -1f);
    }

    /// <summary>The estimated threshold θ (negative while unset). One device read.</summary>
    public static float Threshold(SparseAutoencoder sae)
    {
        ArgumentNullException.ThrowIfNull(sae);
        var values = new float[1];
        sae.Device.Synchronize();
        sae.Parameters[ThresholdTensor].Data.CopyToCPU(sae.Device.Stream, values);
        sae.Device.Synchronize();
        return values[0];
    }

    /// <inheritdoc/>
    /// <exception cref="InvalidOperationException">Inference with the threshold still unset.</exception>
    public override void Activate(SparseAutoencoder sae, SaeWorkspace ws)
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(ws);
        var ops = sae.Device.Ops;
        var bEnc = sae.Parameters["b_enc"].Data;
        if (ws.Training)
        {
            // U + b_enc in place (the AuxK loss reads the raw pre-activations); the batch selection keeps the
            // k·B largest positive values.
            ops.MapBroadcastRows<Add>(ws.U, bEnc, ws.U);
            bool rescaled = TopKFamily.RescaleForSelection(sae, ws);
            // Across processes the selection is over every rank's values: data-parallel, the ranks' rows
            // share one budget of k·B over the global batch; feature-sharded, the blocks share the batch's.
            var ranks = sae.Collectives;
            ops.TopKBatch(
                ws.U.Data,
                ws.F.Data,
                ws.Batch,
                sae.DSae,
                sae.Config.K * ws.Batch * (ranks is { RowsSplit: true } ? ranks.Size : 1),
                ranks?.Exchange
            );
            // The threshold estimator's per-row minima of the kept values, in the space the selection
            // ranked (θ lives there: SAELens measures it on U ⊙ n with the rescale); the update is in
            // Backward.
            ops.ReduceRows<MinPositive>(ws.F, ws.Scratch(RowMinName, 1, ws.Batch).Data);
            if (rescaled)
            {
                TopKFamily.UnscaleCodes(sae, ws, ws.F);
            }

            return;
        }

        float theta = Threshold(sae);
        if (!(theta >= 0f))
        {
            throw new InvalidOperationException(
                $"This {Name} SAE's inference threshold is unset (θ = {theta}): it was not trained past the estimator's start step. Encoding would be a plain ReLU; train longer (or lower the estimator's start step) first."
            );
        }

        if (sae.Config.RescaleActsByDecoderNorm)
        {
            // θ compares with (U + b_enc) ⊙ n; the codes are decoded as F ⊘ n.
            ops.MapBroadcastRows<Add>(ws.U, bEnc, ws.U);
            TopKFamily.RescaleForSelection(sae, ws);
            var zero = ws.Scratch("threshold_zero_bias", 1, sae.DSae);
            ops.Fill(zero.Data, 0f);
            ops.GlobalThresholdEncode(
                ws.U.Data,
                zero.Data,
                sae.Parameters[ThresholdTensor].Data,
                ws.F.Data,
                sae.DSae
            );
            TopKFamily.UnscaleCodes(sae, ws, ws.F);
            return;
        }

        ops.GlobalThresholdEncode(ws.U.Data, bEnc, sae.Parameters[ThresholdTensor].Data, ws.F.Data, sae.DSae);
    }

    private const string RowMinName = "threshold_row_min";

    /// <inheritdoc/>
    public override void Backward(SparseAutoencoder sae, SaeWorkspace ws, float lambdaOverB, bool weightedL1)
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(ws);
        TopKFamily.Backward(sae, ws, ws.Phi, lambdaOverB, weightedL1);
        UpdateThreshold(sae, ws);
    }

    /// <summary>One step of the threshold estimator from this batch's smallest positive activation.</summary>
    private protected static void UpdateThreshold(SparseAutoencoder sae, SaeWorkspace ws)
    {
        var ops = sae.Device.Ops;
        var estimator = ws.Loss?.Threshold ?? ThresholdEstimator.DictionaryLearning;
        // The row minima from Activate (contiguous reads), then the minimum over rows.
        var rows = ws.Scratch(RowMinName, 1, ws.Batch);
        var min = ws.Scratch("threshold_min", 1, 1);
        ops.ReduceRows<MinPositive>(rows.View, min.Data);
        // Across processes: the smallest kept value over every rank's rows or features.
        sae.Collectives?.Min(sae.Device, min.Data);

        ops.ThresholdUpdate(
            sae.Parameters[ThresholdTensor].Data,
            min.Data,
            new ThresholdArgs
            {
                SaeLens = estimator.SaeLensStyle ? 1 : 0,
                Rate = estimator.Rate,
                Step = sae.TrainingStep,
                StartStep = estimator.StartStep,
            }
        );
    }

    /// <inheritdoc/>
    public override double AuxiliaryLoss(SparseAutoencoder sae, SaeWorkspace ws) =>
        TopKFamily.AuxiliaryLoss(sae, ws);

    /// <inheritdoc/>
    public override SparseAutoencoder? InferenceForm(SparseAutoencoder sae) => ToJumpRelu(sae);

    /// <summary>
    /// The JumpReLU SAE that encodes as this one does at inference: the same weights, every feature's
    /// threshold θ (SAELens saves BatchTopK this way). The metadata records the family and k.
    /// </summary>
    /// <exception cref="InvalidOperationException">θ is unset.</exception>
    public static SparseAutoencoder ToJumpRelu(SparseAutoencoder sae)
    {
        ArgumentNullException.ThrowIfNull(sae);
        if (sae.Architecture is not BatchTopKSae family)
        {
            throw new ArgumentException(
                $"{sae.Architecture.Name} is not a BatchTopK-family SAE.",
                nameof(sae)
            );
        }

        float theta = Threshold(sae);
        if (!(theta >= 0f))
        {
            throw new InvalidOperationException(
                $"The {family.Name} SAE's inference threshold is unset (θ = {theta}); it cannot be exported as a JumpReLU SAE (that would be a plain ReLU)."
            );
        }

        if (sae.Config.RescaleActsByDecoderNorm)
        {
            // θ was measured on U ⊙ ‖W_dec[i]‖: fold the norms first (SAELens: fold, then threshold).
            using var folded = sae.WithDecoderNormsFolded();
            return ToJumpRelu(folded);
        }

        var p = sae.Parameters;
        var values = p.Download();
        float[] Get(string n) => values.AsSpan((int)p.Layout[n].Offset, (int)p.Layout[n].Length).ToArray();
        var metadata = new Dictionary<string, object?>(sae.Config.Metadata)
        {
            ["trained_as"] = family.Name,
            ["k"] = sae.Config.K,
        };
        if (sae.Config.MatryoshkaWidths is { } widths)
        {
            metadata["matryoshka_widths"] = widths.ToArray();
        }

        var config = sae.Config with
        {
            Architecture = SaeArchitecture.JumpRelu,
            K = 0,
            MatryoshkaWidths = null,
            Metadata = metadata,
        };
        return SaeFiles.FromTensors(
            sae.Device,
            config,
            new Dictionary<string, float[]>
            {
                ["W_enc"] = Get("W_enc"),
                ["b_enc"] = Get("b_enc"),
                ["threshold"] = Enumerable.Repeat(theta, sae.DSae).ToArray(),
                ["W_dec"] = Get("W_dec"),
                ["b_dec"] = Get("b_dec"),
            },
            $"{family.Name} export"
        );
    }

    /// <inheritdoc/>
    public override (double[] F, double[] A) ReferenceActivate(
        SaeConfig config,
        IReadOnlyDictionary<string, double[]> p,
        double[] u,
        double[] um
    )
    {
        // Inference: a JumpReLU with the global threshold (the training selection is batch-level; see
        // Verification.FamilyReference).
        ArgumentNullException.ThrowIfNull(p);
        ArgumentNullException.ThrowIfNull(u);
        var bEnc = p["b_enc"];
        double theta = p[ThresholdTensor][0];
        var f = new double[u.Length];
        for (int i = 0; i < u.Length; i++)
        {
            double z = u[i] + bEnc[i];
            f[i] = z > 0 && z > theta ? z : 0;
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
            $"{Name} selects over the whole batch; its training reference is Verification.FamilyReference, not a per-row one."
        );
}
