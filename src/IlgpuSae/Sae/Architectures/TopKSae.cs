using IlgpuSae.Kernels;
using IlgpuSae.Tensors;

namespace IlgpuSae.Sae;

/// <summary>
/// The TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders", §2.3):
/// <c>f = TopK_k(ReLU(x̃·W_enc + b_enc))</c> — in each row the k largest positive pre-activations are kept
/// and
/// every other feature is zero, ties broken by the lowest feature index (fewer than k only where fewer are
/// positive). Sparsity comes from k, not from a penalty, so λ is 0. The gradient flows through the kept
/// entries only: <c>dU = 1[f &gt; 0]·Φ</c>, <c>∂L/∂b_enc = Σ_b dU</c>. With
/// <see cref="SaeLossOptions.AuxK"/> the AuxK loss for dead latents adds its terms (<see cref="AuxKStyle"/>).
/// </summary>
public sealed class TopKSae : SaeArchitecture
{
    private TopKSae()
        : base("topk") { }

    /// <summary>The registered instance.</summary>
    public static TopKSae Instance { get; } = new();

    /// <inheritdoc/>
    public override void Validate(SaeConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        TopKFamily.ValidateK(config, Name);
        if (config.MatryoshkaWidths is not null)
        {
            throw new ArgumentException(
                "Matryoshka widths apply to matryoshka_batchtopk SAEs only, not to topk."
            );
        }
    }

    /// <inheritdoc/>
    public override void AddTensors(ParameterLayout layout, SaeConfig config)
    {
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentNullException.ThrowIfNull(config);
        layout.Add("b_enc", 1, config.DSae);
    }

    /// <inheritdoc/>
    public override IReadOnlyList<string> FeatureBiases(SaeConfig config) => ["b_enc"];

    /// <inheritdoc/>
    public override void Activate(SparseAutoencoder sae, SaeWorkspace ws)
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(ws);
        // U becomes the raw pre-activation U + b_enc in place (the AuxK loss reads it); the selection keeps
        // each row's k largest positive values, so F = TopK(ReLU(U + b_enc)).
        var ops = sae.Device.Ops;
        ops.MapBroadcastRows<Add>(ws.U, sae.Parameters["b_enc"].Data, ws.U);
        bool rescaled = TopKFamily.RescaleForSelection(sae, ws);
        ops.TopKRows(ws.U.Data, ws.F.Data, ws.Batch, sae.DSae, sae.Config.K);
        TopKFamily.MergeAcrossShards(sae, ws, ws.F, sae.Config.K, "topk");
        if (rescaled)
        {
            TopKFamily.UnscaleCodes(sae, ws, ws.F);
        }
    }

    /// <inheritdoc/>
    public override void Backward(SparseAutoencoder sae, SaeWorkspace ws, float lambdaOverB, bool weightedL1)
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(ws);
        TopKFamily.Backward(sae, ws, ws.Phi, lambdaOverB, weightedL1);
    }

    /// <summary>With <see cref="SaeConfig.RescaleActsByDecoderNorm"/>: the folded SAE (SAELens saves TopK
    /// for inference folded); otherwise none (the SAE is its own inference form).</summary>
    public override SparseAutoencoder? InferenceForm(SparseAutoencoder sae)
    {
        ArgumentNullException.ThrowIfNull(sae);
        return sae.Config.RescaleActsByDecoderNorm ? sae.WithDecoderNormsFolded() : null;
    }

    /// <inheritdoc/>
    public override double AuxiliaryLoss(SparseAutoencoder sae, SaeWorkspace ws) =>
        TopKFamily.AuxiliaryLoss(sae, ws);

    /// <inheritdoc/>
    public override (double[] F, double[] A) ReferenceActivate(
        SaeConfig config,
        IReadOnlyDictionary<string, double[]> p,
        double[] u,
        double[] um
    )
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(p);
        ArgumentNullException.ThrowIfNull(u);
        var bEnc = p["b_enc"];
        var z = new double[u.Length];
        for (int i = 0; i < u.Length; i++)
        {
            z[i] = Math.Max(u[i] + bEnc[i], 0);
        }

        // The k largest positive values, ties to the lowest index: order by (value descending, index
        // ascending).
        var keep = Enumerable
            .Range(0, z.Length)
            .Where(i => z[i] > 0)
            .OrderByDescending(i => z[i])
            .ThenBy(i => i)
            .Take(config.K)
            .ToHashSet();
        var f = new double[z.Length];
        foreach (int i in keep)
        {
            f[i] = z[i];
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
    )
    {
        ArgumentNullException.ThrowIfNull(grads);
        StandardSae.ReferenceBackwardThroughActive(
            ReferenceActivate(config, p, u, um).F,
            phi,
            penalty,
            du,
            dum,
            grads["b_enc"]
        );
    }
}
