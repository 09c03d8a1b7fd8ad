using IlgpuSae.Kernels;
using IlgpuSae.Tensors;

namespace IlgpuSae.Sae;

/// <summary>
/// Matryoshka BatchTopK (Bussmann et al. 2025, "Learning Multi-Level Features with Matryoshka Sparse
/// Autoencoders"): a BatchTopK SAE whose nested prefixes of widths m_1 &lt; … &lt; m_G = M
/// (<see cref="SaeConfig.MatryoshkaWidths"/>) must each reconstruct the input on their own. One global
/// BatchTopK mask is shared by every level (SAELens#571); level g's reconstruction is
/// <c>x̂_g = f[:, :m_g]·W_dec[:m_g] + b_dec</c> and the loss is <c>Σ_g w_g·(1/B)Σ_b‖x̂_g − x‖²</c> (weights
/// <see cref="SaeLossOptions.LevelWeights"/>, 1 each by default as in SAELens), plus AuxK on the full-width
/// residual. Gradient: feature i of level j receives the sum of the levels that contain it,
/// <c>∂L/∂f_i = Σ_{g: i &lt; m_g} (Δ_g·W_decᵀ)_i</c>. Inference and export as <see cref="BatchTopKSae"/>.
/// </summary>
public sealed class MatryoshkaSae : BatchTopKSae
{
    private MatryoshkaSae()
        : base("matryoshka_batchtopk") { }

    /// <summary>The registered instance.</summary>
    public static new MatryoshkaSae Instance { get; } = new();

    /// <inheritdoc/>
    public override void Validate(SaeConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        TopKFamily.ValidateK(config, Name);
        var widths = config.MatryoshkaWidths;
        if (widths is null || widths.Count == 0)
        {
            throw new ArgumentException(
                $"A {Name} SAE needs its nested widths (--matryoshka-widths a,b,…,{config.DSae}); none were given."
            );
        }

        for (int g = 0; g < widths.Count; g++)
        {
            if (widths[g] < 1 || (g > 0 && widths[g] <= widths[g - 1]))
            {
                throw new ArgumentException(
                    $"Matryoshka widths must be positive and strictly increasing, got {string.Join(",", widths)}."
                );
            }
        }

        if (widths[^1] != config.DSae)
        {
            throw new ArgumentException(
                $"Matryoshka widths must end at d_sae = {config.DSae} (the full dictionary), got {string.Join(",", widths)}."
            );
        }
    }

    /// <summary>The weight of each level (one per width; 1 each unless the loss options say
    /// otherwise).</summary>
    /// <exception cref="ArgumentException">The options give another number of weights, or a negative
    /// one.</exception>
    public static IReadOnlyList<float> LevelWeights(SaeConfig config, SaeLossOptions options)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(options);
        int levels = config.MatryoshkaWidths?.Count ?? 1;
        var weights = options.LevelWeights;
        if (weights is null)
        {
            return Enumerable.Repeat(1f, levels).ToArray();
        }

        if (weights.Count != levels || weights.Any(w => !(w >= 0) || !float.IsFinite(w)))
        {
            throw new ArgumentException(
                $"Matryoshka level weights must be {levels} finite non-negative numbers (one per width), got {string.Join(",", weights)}."
            );
        }

        return weights;
    }

    /// <inheritdoc/>
    public override float MainReconstructionWeight(SaeConfig config, SaeLossOptions options) =>
        LevelWeights(config, options)[^1];

    /// <inheritdoc/>
    public override void Backward(SparseAutoencoder sae, SaeWorkspace ws, float lambdaOverB, bool weightedL1)
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(ws);
        var ops = sae.Device.Ops;
        var config = sae.Config;
        var options = ws.Loss!;
        var widths = config.MatryoshkaWidths!;
        var weights = LevelWeights(config, options);
        int b = ws.Batch,
            d = sae.DIn,
            m = sae.DSae;
        float c = options.Scale == ReconstructionScale.Sum ? 1f : 1f / d;
        var x = ws.Input;
        var bDec = sae.Parameters[SparseAutoencoder.DecoderBiasTensor].Data;
        var gbDec = sae.Parameters.Gradient(SparseAutoencoder.DecoderBiasTensor).Data;
        var dF = ws.Scratch("matryoshka_dF", b, m);
        var losses = ws.Scratch("matryoshka_level_losses", widths.Count, b);
        ops.Copy(ws.Phi.Data, dF.Data);
        ops.Fill(losses.Data, 0f);
        for (int g = 0; g < widths.Count - 1; g++)
        {
            int width = widths[g];
            var prefix = ws.Scratch($"matryoshka_prefix_{g}", b, width);
            var xhat = ws.Scratch("matryoshka_xhat", b, d);
            var delta = ws.Scratch("matryoshka_delta", b, d);
            var phi = ws.Scratch($"matryoshka_phi_{g}", b, width);
            var decoder = sae.Decoder.SliceRows(0, width);
            ops.CopyPrefixColumns(ws.F.Data, prefix.Data, b, m, width);
            ops.MatMul(prefix, decoder, xhat, GemmLayout.NN);
            ops.Residual(xhat.Data, x.Data, bDec, delta.Data, d, b, c * 2f / b * weights[g]);
            ops.MatMul(delta, decoder, phi, GemmLayout.NT);
            ops.AddPrefixColumns(phi.Data, dF.Data, b, m, width);
            ops.MatMul(prefix, delta, sae.DecoderGradient.SliceRows(0, width), GemmLayout.TN, 1f, 1f);
            ops.ReduceColumns<Sum>(delta, gbDec, accumulate: true);
            ops.ReduceRows<SumOfSquares>(delta, losses.Data.SubView((long)g * b, b));
        }

        TopKFamily.Backward(sae, ws, dF, lambdaOverB, weightedL1);
        UpdateThreshold(sae, ws);
    }

    /// <inheritdoc/>
    public override double AuxiliaryLoss(SparseAutoencoder sae, SaeWorkspace ws)
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(ws);
        var options = ws.Loss!;
        var widths = sae.Config.MatryoshkaWidths!;
        var weights = LevelWeights(sae.Config, options);
        int b = ws.Batch;
        double c = options.Scale == ReconstructionScale.Sum ? 1 : 1.0 / sae.DIn;
        var sums = ws.Scratch("matryoshka_level_losses", widths.Count, b).ToArray();
        double total = 0;
        for (int g = 0; g < widths.Count - 1; g++)
        {
            if (weights[g] == 0)
            {
                continue;
            }

            // Σ Δ_g² = (2c·w_g/B)²·Σ‖x̂_g − x‖²  ⇒  the level's term w_g·c·Σ‖x̂_g − x‖²/B = Σ
            // Δ_g²·B/(4c·w_g).
            double level = 0;
            for (int r = 0; r < b; r++)
            {
                level += sums[g * b + r];
            }

            total += level * b / (4 * c * weights[g]);
        }

        return total + TopKFamily.AuxiliaryLoss(sae, ws);
    }
}
