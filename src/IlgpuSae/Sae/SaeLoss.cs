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
