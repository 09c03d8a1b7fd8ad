using System.Text.RegularExpressions;

namespace IlgpuSae.Lm;

/// <summary>What a hook site holds.</summary>
public enum HookKind
{
    /// <summary><c>blocks.L.hook_resid_pre</c>: the residual stream entering block L.</summary>
    ResidPre,

    /// <summary><c>blocks.L.attn.hook_z</c>: attention output before W_O, heads concatenated.</summary>
    AttnZ,

    /// <summary><c>blocks.L.hook_attn_out</c>: attention output after W_O and its bias.</summary>
    AttnOut,

    /// <summary><c>blocks.L.hook_resid_mid</c>: residual after attention (sequential-residual models
    /// only).</summary>
    ResidMid,

    /// <summary><c>blocks.L.mlp.hook_post</c>: MLP neurons after the non-linearity.</summary>
    MlpPost,

    /// <summary><c>blocks.L.hook_mlp_out</c>: MLP output after its projection and bias.</summary>
    MlpOut,

    /// <summary><c>blocks.L.hook_resid_post</c>: the residual stream leaving block L.</summary>
    ResidPost,
}

/// <summary>A hook site of a model, named as TransformerLens/SAELens name it.</summary>
/// <param name="Name">The full name, e.g. <c>blocks.0.mlp.hook_post</c>.</param>
/// <param name="Layer">Block index.</param>
/// <param name="Kind">What the site holds.</param>
/// <param name="Width">Activation width at the site (d_model, or the MLP width for
/// <c>mlp.hook_post</c>).</param>
public sealed record HookSite(string Name, int Layer, HookKind Kind, int Width);

/// <summary>Parses and lists hook sites.</summary>
public static partial class HookSites
{
    private static readonly (string Suffix, HookKind Kind)[] Suffixes =
    [
        ("hook_resid_pre", HookKind.ResidPre),
        ("attn.hook_z", HookKind.AttnZ),
        ("hook_attn_out", HookKind.AttnOut),
        ("hook_resid_mid", HookKind.ResidMid),
        ("mlp.hook_post", HookKind.MlpPost),
        ("hook_mlp_out", HookKind.MlpOut),
        ("hook_resid_post", HookKind.ResidPost),
    ];

    /// <summary>Every site of a model with <paramref name="config"/>, in forward order.</summary>
    public static IReadOnlyList<HookSite> All(LmConfig config)
    {
        var sites = new List<HookSite>();
        for (int l = 0; l < config.Layers; l++)
        {
            foreach (var (suffix, kind) in Suffixes)
            {
                if (kind == HookKind.ResidMid && config.ParallelResidual)
                {
                    continue;
                }

                sites.Add(
                    new HookSite(
                        $"blocks.{l}.{suffix}",
                        l,
                        kind,
                        kind == HookKind.MlpPost ? config.DMlp : config.DModel
                    )
                );
            }
        }

        return sites;
    }

    /// <summary>Resolves <paramref name="name"/> against a model.</summary>
    /// <exception cref="ArgumentException">The name is malformed or the model has no such site; the message
    /// lists the valid ones.</exception>
    public static HookSite Parse(string name, LmConfig config)
    {
        ArgumentNullException.ThrowIfNull(name);
        var all = All(config);
        var hit = all.FirstOrDefault(s => s.Name == name);
        if (hit is not null)
        {
            return hit;
        }

        var m = SiteName().Match(name);
        string why =
            m.Success
            && int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)
                >= config.Layers
                ? $"the model has {config.Layers} blocks (0–{config.Layers - 1})"
                : "it is not a hook site of this model";
        throw new ArgumentException(
            $"Site '{name}' does not exist: {why}. Sites per block: {string.Join(", ", all.Where(s => s.Layer == 0).Select(s => s.Name["blocks.0.".Length..]))} "
                + $"(as blocks.L.<site>, L in 0–{config.Layers - 1}).",
            nameof(name)
        );
    }

    [GeneratedRegex(@"^blocks\.(\d+)\.")]
    private static partial Regex SiteName();
}
