using ILGPU;
using IlgpuSae.Kernels;
using IlgpuSae.Tensors;

namespace IlgpuSae.Sae;

/// <summary>
/// The Gated SAE (Rajamanoharan et al. 2024, §3.2, Eqs. 6–7): <c>π_gate = x̃·W_gate + b_gate</c>,
/// <c>π_mag = e^{r_mag} ⊙ (x̃·W_gate) + b_mag</c> (weight sharing, Eq. 7), <c>f = 1[π_gate &gt; 0] ⊙
/// ReLU(π_mag)</c>.
/// The loss adds the auxiliary reconstruction of <c>a = ReLU(π_gate)</c> through the (by default frozen)
/// decoder,
/// and the L1 penalty applies to a only (§3.2.2). Options: <see cref="SaeConfig.UseRMag"/> (the "no r_mag"
/// ablation) and <see cref="SaeConfig.Untied"/> (independent <c>W_mag</c>, paper §5.1).
/// </summary>
public sealed class GatedSae : SaeArchitecture
{
    private GatedSae()
        : base("gated") { }

    /// <summary>The registered instance.</summary>
    public static GatedSae Instance { get; } = new();

    /// <inheritdoc/>
    public override int ReconstructionRows => 2;

    /// <inheritdoc/>
    public override void Validate(SaeConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (config.K != 0)
        {
            throw new ArgumentException("k applies to topk SAEs only, not to gated.");
        }
    }

    /// <inheritdoc/>
    public override void AddTensors(ParameterLayout layout, SaeConfig config)
    {
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentNullException.ThrowIfNull(config);
        if (config.Untied)
        {
            layout.Add("W_mag", config.DIn, config.DSae);
        }

        layout.Add("b_gate", 1, config.DSae).Add("b_mag", 1, config.DSae);
        if (!config.Untied)
        {
            layout.Add("r_mag", 1, config.DSae);
        }
    }

    /// <inheritdoc/>
    public override IReadOnlyList<string> EncoderMatrices(SaeConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return config.Untied ? ["W_enc", "W_mag"] : ["W_enc"];
    }

    /// <inheritdoc/>
    public override IReadOnlyList<string> FeatureBiases(SaeConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return config.Untied ? ["b_gate", "b_mag"] : ["b_gate", "b_mag", "r_mag"];
    }

    /// <inheritdoc/>
    public override string ActivationBias(SaeConfig config) => "b_gate";

    /// <inheritdoc/>
    public override void Initialize(SparseAutoencoder sae, SaeInitOptions options)
    {
        ArgumentNullException.ThrowIfNull(sae);
        if (sae.Config.Untied)
        {
            sae.Device.Ops.Copy(sae.Parameters["W_enc"].Data, sae.Parameters["W_mag"].Data);
        }
    }

    /// <inheritdoc/>
    public override MatrixView SupportRows(SparseAutoencoder sae, SaeWorkspace ws)
    {
        ArgumentNullException.ThrowIfNull(ws);
        return ws.A;
    }

    /// <inheritdoc/>
    public override MatrixView PenalisedRows(SaeWorkspace ws)
    {
        ArgumentNullException.ThrowIfNull(ws);
        return ws.A;
    }

    /// <inheritdoc/>
    public override void Activate(SparseAutoencoder sae, SaeWorkspace ws)
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(ws);
        var p = sae.Parameters;
        sae.Device.Ops.GatedEncode(
            ws.U.Data,
            ws.Um.Data,
            p["b_gate"].Data,
            p["b_mag"].Data,
            RMagOrDummy(sae, ParameterSection.Values),
            ws.FA.Data,
            Args(sae, ws.Batch, 0f, false)
        );
    }

    /// <inheritdoc/>
    public override void Backward(SparseAutoencoder sae, SaeWorkspace ws, float lambdaOverB, bool weightedL1)
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(ws);
        var p = sae.Parameters;
        bool sparse = sae.LastStepWasSparse;
        var lists = ws.ColumnLists(sparse);
        var args = Args(sae, ws.Batch, lambdaOverB, weightedL1);
        args.Sparse = sparse ? 1 : 0;
        sae.Device.Ops.GatedBackward(
            ws.U.Data,
            ws.Um.Data,
            ws.PhiPsi.Data,
            p["b_gate"].Data,
            p["b_mag"].Data,
            RMagOrDummy(sae, ParameterSection.Values),
            ws.DecoderNorms.Data,
            ws.DU.Data,
            ws.DUm.Data,
            p.Gradient("b_gate").Data,
            p.Gradient("b_mag").Data,
            RMagOrDummy(sae, ParameterSection.Gradients),
            ws.ColumnSums.Data,
            lists,
            args
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
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(p);
        ArgumentNullException.ThrowIfNull(u);
        ArgumentNullException.ThrowIfNull(um);
        var f = new double[u.Length];
        var a = new double[u.Length];
        for (int i = 0; i < u.Length; i++)
        {
            var (pg, pm, _) = Pre(config, p, u, um, i);
            f[i] = pg > 0 ? Math.Max(pm, 0) : 0;
            a[i] = Math.Max(pg, 0);
        }

        return (f, a);
    }

    /// <summary>
    /// Backward of the loss of §3.2.2: <c>∂π_mag = 1[π_gate &gt; 0]·1[π_mag &gt; 0]·Φ</c>, <c>∂π_gate =
    /// 1[π_gate &gt; 0]·(Ψ + λ/B·w)</c>
    /// (the Heaviside gate passes no gradient), <c>dU = ∂π_gate + e^{r_mag}·∂π_mag</c> when tied,
    /// <c>∂r_mag = e^{r_mag}·∂π_mag·Um</c>.
    /// </summary>
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
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(grads);
        ArgumentNullException.ThrowIfNull(u);
        for (int i = 0; i < u.Length; i++)
        {
            var (pg, pm, s) = Pre(config, p, u, um, i);
            double dpm = pg > 0 && pm > 0 ? phi[i] : 0;
            double dpg = pg > 0 ? psi[i] + penalty[i] : 0;
            grads["b_gate"][i] += dpg;
            grads["b_mag"][i] += dpm;
            if (config.HasRMag)
            {
                grads["r_mag"][i] += s * dpm * um[i];
            }

            du[i] = config.Untied ? dpg : dpg + s * dpm;
            dum[i] = config.Untied ? dpm : 0;
        }
    }

    private static (double Gate, double Mag, double Scale) Pre(
        SaeConfig config,
        IReadOnlyDictionary<string, double[]> p,
        double[] u,
        double[] um,
        int i
    )
    {
        double pg = u[i] + p["b_gate"][i];
        double s = config.HasRMag ? Math.Exp(p["r_mag"][i]) : 1;
        return (pg, s * um[i] + p["b_mag"][i], s);
    }

    /// <summary>r_mag's view, or (untied SAEs have none) b_mag's as a placeholder the kernels never
    /// touch.</summary>
    private static ArrayView<float> RMagOrDummy(SparseAutoencoder sae, ParameterSection section) =>
        sae.Parameters.Get(sae.Config.Untied ? "b_mag" : "r_mag", section).Data;

    private static GatedArgs Args(SparseAutoencoder sae, int batch, float lambdaOverB, bool weighted) =>
        new()
        {
            Rows = batch,
            M = sae.DSae,
            LambdaOverB = lambdaOverB,
            UseRMag = sae.Config.HasRMag ? 1 : 0,
            Untied = sae.Config.Untied ? 1 : 0,
            WeightedL1 = weighted ? 1 : 0,
        };
}
