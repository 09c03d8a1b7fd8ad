namespace IlgpuSae.Sae;

/// <summary>The shape and inference semantics of an SAE (what <c>cfg.json</c> records).</summary>
public sealed record SaeConfig
{
    /// <summary>The architecture.</summary>
    public required SaeArchitecture Architecture { get; init; }

    /// <summary>Input width d.</summary>
    public required int DIn { get; init; }

    /// <summary>Dictionary size M.</summary>
    public required int DSae { get; init; }

    /// <summary>Whether <c>b_dec</c> is subtracted from the input before encoding (SAELens
    /// <c>apply_b_dec_to_input</c>).</summary>
    public bool ApplyBDecToInput { get; init; } = true;

    /// <summary>Gated only: whether <c>r_mag</c> rescales the magnitude path (false = the "no r_mag"
    /// ablation, <c>W_mag = W_gate</c>).</summary>
    public bool UseRMag { get; init; } = true;

    /// <summary>
    /// Gated only: independent magnitude weights <c>W_mag</c> (the "untied" ablation; not a SAELens
    /// architecture).
    /// An untied SAE has no <c>r_mag</c> (its own <c>W_mag</c> subsumes the rescaling).
    /// </summary>
    public bool Untied { get; init; }

    /// <summary>
    /// The TopK family: the features kept per row (TopK), or on average per row over the batch (BatchTopK,
    /// Matryoshka) — SAELens <c>cfg.json</c> key <c>k</c>; 0 for every other family.
    /// </summary>
    public int K { get; init; }

    /// <summary>
    /// Matryoshka only: the nested dictionary widths m_1 &lt; … &lt; m_G = d_sae (SAELens
    /// <c>matryoshka_widths</c>); null for every other family.
    /// </summary>
    public IReadOnlyList<int>? MatryoshkaWidths { get; init; }

    /// <summary>
    /// The TopK family only (SAELens <c>rescale_acts_by_decoder_norm</c>, its training default): the
    /// selection ranks <c>S = U ⊙ ‖W_dec[i]‖</c> instead of the pre-activations U, and the kept codes are
    /// <c>S ⊙ mask ⊘ ‖W_dec[i]‖</c>, so the reconstruction is <c>(U ⊙ mask)·W_dec + b_dec</c> and the decoder
    /// norms change only which latents are kept (their gradient through the codes cancels exactly).
    /// BatchTopK's threshold θ is measured on S. <see cref="SparseAutoencoder.WithDecoderNormsFolded"/> turns
    /// such an SAE into the equivalent one with unit-norm decoder rows and this flag off (what the inference
    /// files hold).
    /// </summary>
    public bool RescaleActsByDecoderNorm { get; init; }

    /// <summary>Free-form metadata written to <c>cfg.json</c> (hook name, model, dataset, training settings
    /// …).</summary>
    public IReadOnlyDictionary<string, object?> Metadata { get; init; } = new Dictionary<string, object?>();

    /// <summary>Whether the magnitude path is rescaled by <c>exp(r_mag)</c> (gated, tied, r_mag not
    /// ablated).</summary>
    public bool HasRMag => Architecture == SaeArchitecture.Gated && UseRMag && !Untied;

    /// <summary>Checks the configuration.</summary>
    /// <exception cref="ArgumentException">A dimension is not positive or an option does not
    /// apply.</exception>
    public void Validate()
    {
        if (DIn <= 0 || DSae <= 0)
        {
            throw new ArgumentException($"d_in and d_sae must be positive, got d_in={DIn}, d_sae={DSae}.");
        }

        if ((long)DIn * DSae > int.MaxValue)
        {
            throw new ArgumentException(
                $"d_in × d_sae = {(long)DIn * DSae} exceeds the 2^31 elements a weight matrix may hold."
            );
        }

        if (Architecture is null)
        {
            throw new ArgumentException("The architecture is not set.");
        }

        Architecture.Validate(this);
        if (RescaleActsByDecoderNorm && Architecture is not (TopKSae or BatchTopKSae))
        {
            throw new ArgumentException(
                $"rescale_acts_by_decoder_norm applies to the TopK family (topk, batchtopk, matryoshka) only, not to {Architecture.Name}."
            );
        }
    }
}
