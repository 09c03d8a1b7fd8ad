namespace IlgpuSae.Sae;

/// <summary>
/// "Baseline + learned rescale &amp; shift" (paper §5.2, Fig. 9): a gated SAE whose gate is a frozen baseline
/// encoder, <c>f = H(x̃·W_enc + b_enc) ⊙ ReLU(e^{r_mag} ⊙ (x̃·W_enc) + b_mag)</c>; only <c>r_mag</c> and
/// <c>b_mag</c>
/// are trained. Initialised with <c>r_mag = 0</c>, <c>b_mag = b_enc</c>, so it starts identical to the
/// baseline.
/// </summary>
public static class RescaleShift
{
    /// <summary>Builds the gated wrapper of a standard SAE on the same device.</summary>
    public static SparseAutoencoder Wrap(
        SparseAutoencoder baseline,
        IReadOnlyDictionary<string, object?>? metadata = null
    )
    {
        ArgumentNullException.ThrowIfNull(baseline);
        if (baseline.Config.Architecture != SaeArchitecture.Standard)
        {
            throw new ArgumentException(
                $"Rescale & shift wraps a standard SAE, got {baseline.Config.Architecture}.",
                nameof(baseline)
            );
        }

        var config = baseline.Config with
        {
            Architecture = SaeArchitecture.Gated,
            UseRMag = true,
            Untied = false,
            Metadata = new Dictionary<string, object?>(metadata ?? baseline.Config.Metadata)
            {
                ["rescale_shift_of"] = "standard",
            },
        };
        var gated = SparseAutoencoder.CreateEmpty(baseline.Device, config);
        try
        {
            var ops = baseline.Device.Ops;
            var from = baseline.Parameters;
            var to = gated.Parameters;
            foreach (var name in new[] { "W_enc", "W_dec", "b_dec" })
            {
                ops.Copy(from[name].Data, to[name].Data);
            }

            ops.Copy(from["b_enc"].Data, to["b_gate"].Data);
            ops.Copy(from["b_enc"].Data, to["b_mag"].Data);
            ops.Fill(to["r_mag"].Data, 0f);
            baseline.Device.Synchronize();
            return gated;
        }
        catch
        {
            gated.Dispose();
            throw;
        }
    }
}
