using IlgpuSae.Sae;
using IlgpuSae.Tensors;

namespace IlgpuSae.Tests.Sae;

/// <summary>A named training objective variant.</summary>
public sealed record Variant(string Name, SaeConfig Config, SaeLossOptions Options)
{
    public override string ToString() => Name;
}

/// <summary>Random SAE parameters and inputs kept away from the gate/ReLU boundaries.</summary>
public static class SaeTestData
{
    public static IEnumerable<Variant> Variants(int d, int m)
    {
        SaeConfig Std(bool apply = true) => new() { Architecture = SaeArchitecture.Standard, DIn = d, DSae = m, ApplyBDecToInput = apply };
        SaeConfig Gated(bool useR = true, bool untied = false) => new() { Architecture = SaeArchitecture.Gated, DIn = d, DSae = m, UseRMag = useR, Untied = untied };
        yield return new("standard-paper", Std(), new SaeLossOptions { L1Coefficient = 0.3f });
        yield return new("standard-april-update", Std(apply: false), new SaeLossOptions { L1Coefficient = 0.3f, DecoderNormWeightedL1 = true });
        yield return new("standard-mean-over-d", Std(), new SaeLossOptions { L1Coefficient = 0.05f, Scale = ReconstructionScale.MeanOverDim });
        yield return new("gated-paper", Gated(), new SaeLossOptions { L1Coefficient = 0.3f });
        yield return new("gated-saelens", Gated(), new SaeLossOptions { L1Coefficient = 0.3f, DecoderNormWeightedL1 = true, FreezeAuxDecoder = false });
        yield return new("gated-unfrozen-aux", Gated(), new SaeLossOptions { L1Coefficient = 0.3f, FreezeAuxDecoder = false });
        yield return new("gated-no-rmag", Gated(useR: false), new SaeLossOptions { L1Coefficient = 0.3f });
        yield return new("gated-untied", Gated(untied: true), new SaeLossOptions { L1Coefficient = 0.3f });
        yield return new("gated-mean-over-d", Gated(), new SaeLossOptions { L1Coefficient = 0.05f, Scale = ReconstructionScale.MeanOverDim });
    }

    /// <summary>
    /// Parameters (float32-representable doubles) and inputs whose pre-activations all stay at least
    /// <paramref name="margin"/> from the kinks at 0 (and from JumpReLU thresholds), so that finite differences
    /// and float32/double comparisons see the same branches.
    /// </summary>
    public static (Dictionary<string, double[]> P, double[] X) Generate(SaeConfig config, int batch, int seed, double margin = 0.02)
    {
        for (int attempt = 0; attempt < 1000; attempt++)
        {
            var random = new Random(seed + attempt * 7919);
            var p = new Dictionary<string, double[]>();
            foreach (var name in SparseAutoencoder.TensorNames(config))
            {
                long length = name switch
                {
                    "W_enc" or "W_mag" => (long)config.DIn * config.DSae,
                    "W_dec" => (long)config.DSae * config.DIn,
                    "b_dec" => config.DIn,
                    _ => config.DSae,
                };
                double scale = name.StartsWith('W') ? 0.6 : 0.3;
                p[name] = Enumerable.Range(0, (int)length).Select(_ => (double)(float)((random.NextDouble() * 2 - 1) * scale)).ToArray();
            }

            if (p.TryGetValue("threshold", out var t))
            {
                for (int i = 0; i < t.Length; i++)
                {
                    t[i] = Math.Abs(t[i]);
                }
            }

            var x = Enumerable.Range(0, batch * config.DIn).Select(_ => (double)(float)(random.NextDouble() * 2 - 1)).ToArray();
            if (MinMargin(config, p, x, batch) >= margin)
            {
                return (p, x);
            }
        }

        throw new InvalidOperationException("Could not draw data away from the kinks; use a smaller problem.");
    }

    private static double MinMargin(SaeConfig config, Dictionary<string, double[]> p, double[] x, int batch)
    {
        double min = double.MaxValue;
        for (int b = 0; b < batch; b++)
        {
            var (_, _, u, um) = IlgpuSae.Verification.SaeReference.EncodeRow(config, p, x, b);
            for (int i = 0; i < config.DSae; i++)
            {
                if (config.Architecture == SaeArchitecture.Gated)
                {
                    double pg = u[i] + p["b_gate"][i];
                    double pm = (config.HasRMag ? Math.Exp(p["r_mag"][i]) : 1) * um[i] + p["b_mag"][i];
                    min = Math.Min(min, Math.Min(Math.Abs(pg), Math.Abs(pm)));
                }
                else
                {
                    double z = u[i] + p["b_enc"][i];
                    min = Math.Min(min, Math.Abs(z));
                    if (p.TryGetValue("threshold", out var th))
                    {
                        min = Math.Min(min, Math.Abs(z - th[i]));
                    }
                }
            }
        }

        return min;
    }

    /// <summary>Uploads reference parameters into <paramref name="sae"/>.</summary>
    public static void Load(SparseAutoencoder sae, IReadOnlyDictionary<string, double[]> p)
    {
        var flat = new float[sae.Parameters.Layout.Length];
        foreach (var e in sae.Parameters.Layout.Entries)
        {
            var values = p[e.Name];
            for (long i = 0; i < e.Length; i++)
            {
                flat[e.Offset + i] = (float)values[i];
            }
        }

        sae.Parameters.Upload(flat);
    }

    /// <summary>Reads one tensor of a section as doubles.</summary>
    public static double[] Read(SparseAutoencoder sae, string name, ParameterSection section = ParameterSection.Values)
    {
        var e = sae.Parameters.Layout[name];
        return sae.Parameters.Download(section).AsSpan((int)e.Offset, (int)e.Length).ToArray().Select(v => (double)v).ToArray();
    }
}
