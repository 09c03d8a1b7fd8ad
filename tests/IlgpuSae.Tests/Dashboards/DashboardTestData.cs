using IlgpuSae.Backends;
using IlgpuSae.Sae;

namespace IlgpuSae.Tests.Dashboards;

/// <summary>Small random SAEs on the bundled model's <c>blocks.0.hook_mlp_out</c> (d = 128), saved to a
/// folder, for dashboard and study tests.</summary>
public static class DashboardTestData
{
    public const string Site = "blocks.0.hook_mlp_out";

    /// <summary>Saves a random SAE of <paramref name="architecture"/> with <paramref name="dSae"/> features
    /// (k = 8 for the TopK family) and the site as its hook_name.</summary>
    public static string SaveRandomSae(
        SaeDevice device,
        string folder,
        SaeArchitecture architecture,
        int dSae,
        ulong seed
    )
    {
        var config = new SaeConfig
        {
            Architecture = architecture,
            DIn = 128,
            DSae = dSae,
            K = architecture == SaeArchitecture.TopK ? 8 : 0,
            Metadata = new Dictionary<string, object?> { ["hook_name"] = Site, ["model_name"] = "lm" },
        };
        using var sae = SparseAutoencoder.Create(device, config, seed);
        SaeFiles.Save(sae, folder);
        return folder;
    }
}
