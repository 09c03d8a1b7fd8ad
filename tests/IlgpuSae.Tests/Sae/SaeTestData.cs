using IlgpuSae.Sae;
using IlgpuSae.Tensors;
using IlgpuSae.Training;

namespace IlgpuSae.Tests.Sae;

/// <summary>A named training objective variant.</summary>
public sealed record Variant(string Name, SaeConfig Config, SaeLossOptions Options)
{
    public override string ToString() => Name;
}

/// <summary>Random SAE parameters and inputs kept away from the gate/ReLU boundaries.</summary>
public static class SaeTestData
{
    /// <summary>The variants under test, built through <see cref="SaeRecipe"/> as the CLI and the study build
    /// them.</summary>
    public static IEnumerable<Variant> Variants(int d, int m)
    {
        Variant From(
            string name,
            SaeRecipe recipe,
            float l1,
            ReconstructionScale scale = ReconstructionScale.Sum
        )
        {
            var options = recipe.Apply(
                new TrainerOptions
                {
                    Steps = 1,
                    Loss = new SaeLossOptions { L1Coefficient = l1, Scale = scale },
                }
            );
            return new(name, recipe.Config(d, m), options.Loss);
        }

        yield return From("standard-paper", SaeRecipe.Parse("standard"), 0.3f);
        yield return From("standard-april-update", SaeRecipe.Parse("standard", "april-update"), 0.3f);
        yield return From(
            "standard-mean-over-d",
            SaeRecipe.Parse("standard"),
            0.05f,
            ReconstructionScale.MeanOverDim
        );
        yield return From("topk-paper", SaeRecipe.Parse("topk", "paper", k: Math.Max(1, m / 3)), 0f);
        yield return From("gated-paper", SaeRecipe.Parse("gated"), 0.3f);
        yield return From("gated-saelens", SaeRecipe.Parse("gated", "saelens"), 0.3f);
        yield return From("gated-unfrozen-aux", SaeRecipe.Parse("gated", ablation: "unfrozen-aux"), 0.3f);
        yield return From("gated-no-rmag", SaeRecipe.Parse("gated", ablation: "no-rmag"), 0.3f);
        yield return From("gated-untied", SaeRecipe.Parse("gated", ablation: "untied"), 0.3f);
        yield return From(
            "gated-mean-over-d",
            SaeRecipe.Parse("gated"),
            0.05f,
            ReconstructionScale.MeanOverDim
        );
    }

    /// <summary>
    /// Parameters (float32-representable doubles) and inputs whose pre-activations all stay at least
    /// <paramref name="margin"/> from the kinks at 0 (and from JumpReLU thresholds), so that finite
    /// differences
    /// and float32/double comparisons see the same branches.
    /// </summary>
    public static (Dictionary<string, double[]> P, double[] X) Generate(
        SaeConfig config,
        int batch,
        int seed,
        double margin = 0.02
    )
    {
        for (int attempt = 0; attempt < 1000; attempt++)
        {
            var random = new Random(seed + attempt * 7919);
            var p = new Dictionary<string, double[]>();
            foreach (var entry in SparseAutoencoder.LayoutFor(config).Entries)
            {
                var (name, length) = (entry.Name, entry.Length);
                double scale = name.StartsWith('W') ? 0.6 : 0.3;
                p[name] = Enumerable
                    .Range(0, (int)length)
                    .Select(_ => (double)(float)((random.NextDouble() * 2 - 1) * scale))
                    .ToArray();
            }

            if (p.TryGetValue("threshold", out var t))
            {
                for (int i = 0; i < t.Length; i++)
                {
                    t[i] = Math.Abs(t[i]);
                }
            }

            var x = Enumerable
                .Range(0, batch * config.DIn)
                .Select(_ => (double)(float)(random.NextDouble() * 2 - 1))
                .ToArray();
            if (MinMargin(config, p, x, batch) >= margin)
            {
                return (p, x);
            }
        }

        throw new InvalidOperationException(
            "Could not draw data away from the kinks; use a smaller problem."
        );
    }

    private static double MinMargin(SaeConfig config, Dictionary<string, double[]> p, double[] x, int batch)
    {
        double min = double.MaxValue;
        for (int b = 0; b < batch; b++)
        {
            var (_, _, u, um) = IlgpuSae.Verification.SaeReference.EncodeRow(config, p, x, b);
            if (config.K > 0)
            {
                // TopK: the k-th and (k+1)-th largest pre-activations must be apart too, or a small step
                // changes which features are kept.
                var z = u.Select((v, i) => Math.Max(v + p["b_enc"][i], 0)).OrderDescending().ToArray();
                if (config.K < z.Length && z[config.K - 1] > 0)
                {
                    min = Math.Min(min, z[config.K - 1] - z[config.K]);
                }
            }

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
                    double z = u[i] + (p.TryGetValue("b_enc", out var bEnc) ? bEnc[i] : 0);
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
    public static double[] Read(
        SparseAutoencoder sae,
        string name,
        ParameterSection section = ParameterSection.Values
    )
    {
        var e = sae.Parameters.Layout[name];
        return sae
            .Parameters.Download(section)
            .AsSpan((int)e.Offset, (int)e.Length)
            .ToArray()
            .Select(v => (double)v)
            .ToArray();
    }
}
