using IlgpuSae.Tensors;

namespace IlgpuSae.Sae;

/// <summary>
/// JumpReLU (Rajamanoharan et al. 2024b), inference only here: <c>f = z·1[z &gt; θ]</c> with
/// <c>z = ReLU(x̃·W_enc + b_enc)</c> (SAELens applies the ReLU before the threshold), θ = <c>threshold</c>.
/// Gemma Scope files and the exact export of a tied gated SAE (paper §3.1) load as this family.
/// </summary>
public sealed class JumpReluSae : SaeArchitecture
{
    private JumpReluSae()
        : base("jumprelu") { }

    /// <summary>The registered instance.</summary>
    public static JumpReluSae Instance { get; } = new();

    /// <inheritdoc/>
    public override bool CanTrain => false;

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
        sae.Device.Ops.JumpReluEncode(ws.U.Data, p["b_enc"].Data, p["threshold"].Data, ws.F.Data, sae.DSae);
    }

    /// <inheritdoc/>
    public override void Backward(
        SparseAutoencoder sae,
        SaeWorkspace ws,
        float lambdaOverB,
        bool weightedL1
    ) =>
        throw new NotSupportedException(
            "JumpReLU SAEs are inference-only here (load, encode, export); JumpReLU training arrives with its own issue."
        );

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
    ) => throw new NotSupportedException("JumpReLU has no training reference here.");
}
