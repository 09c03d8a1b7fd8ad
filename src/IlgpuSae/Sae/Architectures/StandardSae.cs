using IlgpuSae.Kernels;
using IlgpuSae.Tensors;

namespace IlgpuSae.Sae;

/// <summary>
/// The ReLU + L1 baseline (paper §2.1–2.2, Eqs. 2–4): <c>f = ReLU(x̃·W_enc + b_enc)</c>, penalty <c>λ·Σ_i
/// w_i·f_i</c>.
/// Backward: <c>dU = 1[f &gt; 0]·(Φ + λ/B·w)</c>, <c>∂L/∂b_enc = Σ_b dU</c>.
/// </summary>
public sealed class StandardSae : SaeArchitecture
{
    private StandardSae()
        : base("standard") { }

    /// <summary>The registered instance.</summary>
    public static StandardSae Instance { get; } = new();

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
        sae.Device.Ops.ReluEncode(ws.U.Data, sae.Parameters["b_enc"].Data, ws.F.Data, sae.DSae);
    }

    /// <inheritdoc/>
    public override void Backward(
        SparseAutoencoder sae,
        SaeWorkspace ws,
        float lambdaOverB,
        bool weightedL1
    ) => BackwardThroughActive(sae, ws, lambdaOverB, weightedL1);

    /// <summary>
    /// The element-wise backward of every family whose features are <c>ReLU(U + b_enc)</c> masked by a
    /// selection
    /// that passes no gradient (the standard SAE: no mask; TopK: the top-k mask): <c>dU = 1[f &gt; 0]·(Φ +
    /// λ/B·w)</c>,
    /// <c>∂L/∂b_enc = Σ_b dU</c>, plus the column sums.
    /// </summary>
    internal static void BackwardThroughActive(
        SparseAutoencoder sae,
        SaeWorkspace ws,
        float lambdaOverB,
        bool weightedL1
    )
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(ws);
        if (sae.LastStepWasSparse)
        {
            // The sparse path compacted the columns of f > 0: walk those entries only (O(B·L0)); the sparse
            // weight gradients read dU nowhere else.
            sae.Device.Ops.TopKFamilySparseBackward(
                ws.F.Data,
                ws.PhiPsi.Data,
                ws.F.Data,
                ws.F.Data,
                ws.DecoderNorms.Data,
                ws.DU.Data,
                sae.Parameters.Gradient("b_enc").Data,
                ws.ColumnSums.Data,
                ws.ColIdx,
                ws.ColCount,
                new FamilyBackwardArgs
                {
                    Rows = ws.Batch,
                    M = sae.DSae,
                    LambdaOverB = lambdaOverB,
                    WeightedL1 = weightedL1 ? 1 : 0,
                }
            );
            return;
        }

        sae.Device.Ops.StandardBackward(
            ws.F.Data,
            ws.PhiPsi.Data,
            ws.DecoderNorms.Data,
            ws.DU.Data,
            sae.Parameters.Gradient("b_enc").Data,
            ws.ColumnSums.Data,
            new StandardArgs
            {
                Rows = ws.Batch,
                M = sae.DSae,
                LambdaOverB = lambdaOverB,
                WeightedL1 = weightedL1 ? 1 : 0,
            }
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
        ArgumentNullException.ThrowIfNull(p);
        ArgumentNullException.ThrowIfNull(u);
        var bEnc = p["b_enc"];
        var f = new double[u.Length];
        for (int i = 0; i < u.Length; i++)
        {
            f[i] = Math.Max(u[i] + bEnc[i], 0);
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
        ReferenceBackwardThroughActive(
            ReferenceActivate(config, p, u, um).F,
            phi,
            penalty,
            du,
            dum,
            grads["b_enc"]
        );
    }

    /// <summary>Double precision: <see cref="BackwardThroughActive"/> for one row with features
    /// <paramref name="f"/>.</summary>
    internal static void ReferenceBackwardThroughActive(
        double[] f,
        double[] phi,
        double[] penalty,
        double[] du,
        double[] dum,
        double[] gBEnc
    )
    {
        for (int i = 0; i < f.Length; i++)
        {
            du[i] = f[i] > 0 ? phi[i] + penalty[i] : 0;
            dum[i] = 0;
            gBEnc[i] += du[i];
        }
    }
}
