using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using IlgpuSae.IO;
using IlgpuSae.Lm;

namespace IlgpuSae.Study.Dashboards;

/// <summary>
/// The static dashboard site: <c>index.html</c> (features sortable by density and max activation, a search
/// box) and <c>feature.html?id=ID</c>, which renders <c>features/ID.json</c>. Each record is also written as
/// <c>features/ID.js</c> (the same JSON wrapped in a call), and the index as <c>index-data.js</c>, because a
/// page opened from <c>file://</c> may load scripts but not fetch JSON: the site reads offline with no
/// server. Every file is written atomically.
/// </summary>
public static class DashboardSite
{
    /// <summary>Page assets every site gets.</summary>
    public static readonly string[] Assets = ["index.html", "feature.html", "dashboard.js", "dashboard.css"];

    /// <summary>Assets of the rating page (study sites only).</summary>
    public static readonly string[] RatingAssets = ["rate.html", "rate.js"];

    /// <summary>Writes the site for <paramref name="records"/> into <paramref name="folder"/>.</summary>
    public static void Write(
        string folder,
        IReadOnlyList<FeatureRecord> records,
        JsonObject meta,
        bool rating = false
    )
    {
        ArgumentNullException.ThrowIfNull(records);
        ArgumentNullException.ThrowIfNull(meta);
        var features = Path.Combine(folder, "features");
        Directory.CreateDirectory(features);
        foreach (var name in rating ? Assets.Concat(RatingAssets) : Assets)
        {
            AtomicFile.WriteAllText(Path.Combine(folder, name), Asset(name));
        }

        foreach (var r in records)
        {
            var json = JsonSerializer.Serialize(r, DashboardJson.Options);
            AtomicFile.WriteAllText(Path.Combine(features, r.Id + ".json"), json);
            AtomicFile.WriteAllText(
                Path.Combine(features, r.Id + ".js"),
                "window.dashboardFeatureLoaded(" + json + ");\n"
            );
        }

        var index = records.Select(r => new IndexEntry
        {
            Id = r.Id,
            Index = r.Index,
            Density = r.Density,
            MaxAct = r.MaxAct,
            TopTokens = string.Concat(r.Top.Take(5).Select(e => e.Tokens[e.MaxIndex] + " | "))
                .TrimEnd(' ', '|'),
            TopLogits = r.Logits is null ? "" : string.Join(" | ", r.Logits.PosStr.Take(5)),
        });
        var description = meta["description"]?.GetValue<string>() ?? "";
        var metaJs = new JsonObject { ["description"] = description, ["blinded"] = rating }.ToJsonString();
        AtomicFile.WriteAllText(
            Path.Combine(folder, "index-data.js"),
            "window.DASHBOARD_META = "
                + metaJs
                + ";\nwindow.DASHBOARD_INDEX = "
                + JsonSerializer.Serialize(index, DashboardJson.Options)
                + ";\n"
        );
    }

    /// <summary>The text of an embedded page asset.</summary>
    public static string Asset(string name)
    {
        using var stream =
            typeof(DashboardSite).Assembly.GetManifestResourceStream($"IlgpuSae.Study.Dashboards.Web.{name}")
            ?? throw new InvalidOperationException(
                $"The dashboard asset {name} is missing from the assembly."
            );
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    /// <summary>Reads back the feature records of a finished site, in feature order.</summary>
    public static IReadOnlyList<FeatureRecord> ReadRecords(string folder) =>
        [
            .. Directory
                .GetFiles(Path.Combine(folder, "features"), "*.json")
                .Select(p =>
                    JsonSerializer.Deserialize<FeatureRecord>(File.ReadAllText(p), DashboardJson.Options)
                    ?? throw new InvalidDataException($"{p} holds no feature record.")
                )
                .OrderBy(r => r.Index ?? int.MaxValue)
                .ThenBy(r => r.Id, StringComparer.Ordinal),
        ];

    /// <summary>A one-line description for page headers.</summary>
    public static string Describe(JsonObject summary) =>
        string.Create(
            CultureInfo.InvariantCulture,
            $"{summary["architecture"]} SAE {summary["d_in"]}×{summary["d_sae"]} at {summary["hook_name"]} of {summary["model"]}; {summary["tokens"]} tokens"
        );
}

/// <summary>
/// Neuronpedia's upload layout (SAEDashboard's <c>neuronpedia_runner</c>): <c>batch-N.json</c> files of 128
/// features each, <c>skipped_indexes.json</c> (features with log10 density below −6, as its default
/// <c>sparsity_threshold</c>) and <c>run_settings.json</c>. Floats are rounded to 5 decimals; an example's
/// tokens are its window (the HTML default), not the whole prompt.
/// </summary>
public static class NeuronpediaExport
{
    private const int PerBatch = 128;

    /// <summary>Writes the layout into <paramref name="folder"/>.</summary>
    public static void Write(
        string folder,
        IReadOnlyList<FeatureRecord> records,
        string modelId,
        HookSite hook,
        DashboardRequest request,
        int dSae
    )
    {
        ArgumentNullException.ThrowIfNull(records);
        ArgumentNullException.ThrowIfNull(hook);
        ArgumentNullException.ThrowIfNull(request);
        Directory.CreateDirectory(folder);
        var layer = hook.Layer.ToString(CultureInfo.InvariantCulture);
        var saeSet = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(request.Sae)));
        var skipped = records.Where(r => r.Density <= 1e-6).Select(r => r.Index ?? -1).ToArray();
        var kept = records.Where(r => r.Density > 1e-6).ToArray();
        for (int b = 0; b * PerBatch < kept.Length; b++)
        {
            var features = new JsonArray();
            foreach (var r in kept.Skip(b * PerBatch).Take(PerBatch))
            {
                features.Add(Feature(r, request));
            }

            var batch = new JsonObject
            {
                ["model_id"] = modelId,
                ["layer"] = layer,
                ["sae_set"] = saeSet,
                ["sae_id_suffix"] = hook.Name,
                ["features"] = features,
            };
            AtomicFile.WriteAllText(Path.Combine(folder, $"batch-{b}.json"), batch.ToJsonString());
        }

        AtomicFile.WriteAllText(
            Path.Combine(folder, "skipped_indexes.json"),
            new JsonObject
            {
                ["model_id"] = modelId,
                ["layer"] = layer,
                ["sae_set"] = saeSet,
                ["log_sparsity"] = -6,
                ["skipped_indexes"] = new JsonArray([.. skipped.Select(i => (JsonNode)i)]),
            }.ToJsonString()
        );
        AtomicFile.WriteAllText(
            Path.Combine(folder, "run_settings.json"),
            new JsonObject
            {
                ["sae_path"] = Path.GetFullPath(request.Sae),
                ["model_id"] = modelId,
                ["layer"] = hook.Layer,
                ["hook_name"] = hook.Name,
                ["d_sae"] = dSae,
                ["n_tokens_total"] = records.Count > 0 ? records[0].Tokens : 0,
                ["n_tokens_in_prompt"] = request.Context,
                ["n_quantiles"] = request.Shape.Intervals,
                ["top_acts_group_size"] = request.Shape.TopK,
                ["quantile_group_size"] = request.Shape.PerInterval,
                ["n_features_at_a_time"] = PerBatch,
                ["sparsity_threshold"] = -6,
                ["dataset"] = Path.GetFileName(request.Corpus),
                ["created_by"] = "ilgpu-sae dashboard --neuronpedia",
            }.ToJsonString(new() { WriteIndented = true })
        );
    }

    private static double R(double v) => double.IsFinite(v) ? Math.Round(v, 5) : 0;

    private static JsonArray Numbers(IEnumerable<double> values) =>
        new([.. values.Select(v => (JsonNode)R(v))]);

    private static JsonArray Strings(IEnumerable<string> values) => new([.. values.Select(v => (JsonNode)v)]);

    private static JsonObject Feature(FeatureRecord r, DashboardRequest request)
    {
        var activations = new JsonArray();
        foreach (var e in r.Top)
        {
            activations.Add(Activation(e, -1, r.MaxAct, -1));
        }

        foreach (var g in r.Intervals)
        {
            foreach (var e in g.Examples)
            {
                activations.Add(Activation(e, g.BinMin, g.BinMax, g.BinContains));
            }
        }

        var o = new JsonObject
        {
            ["feature_index"] = r.Index,
            ["neuron_alignment_indices"] = new JsonArray([
                .. r.NeuronAlignment.Indices.Select(i => (JsonNode)i),
            ]),
            ["neuron_alignment_values"] = Numbers(r.NeuronAlignment.Values.Select(v => (double)v)),
            ["neuron_alignment_l1"] = Numbers(r.NeuronAlignment.Second.Select(v => (double)v)),
            ["correlated_neurons_indices"] = new JsonArray([
                .. r.CorrelatedNeurons.Indices.Select(i => (JsonNode)i),
            ]),
            ["correlated_neurons_pearson"] = Numbers(r.CorrelatedNeurons.Values.Select(v => (double)v)),
            ["correlated_neurons_l1"] = Numbers(r.CorrelatedNeurons.Second.Select(v => (double)v)),
            ["correlated_features_indices"] = new JsonArray([
                .. (r.CorrelatedFeatures?.Indices ?? []).Select(i => (JsonNode)i),
            ]),
            ["correlated_features_pearson"] = Numbers(
                (r.CorrelatedFeatures?.Values ?? []).Select(v => (double)v)
            ),
            ["correlated_features_l1"] = Numbers((r.CorrelatedFeatures?.Second ?? []).Select(v => (double)v)),
            ["neg_str"] = Strings(r.Logits?.NegStr ?? []),
            ["neg_values"] = Numbers((r.Logits?.NegValues ?? []).Select(v => (double)v)),
            ["pos_str"] = Strings(r.Logits?.PosStr ?? []),
            ["pos_values"] = Numbers((r.Logits?.PosValues ?? []).Select(v => (double)v)),
            ["frac_nonzero"] = R(r.Density),
            ["freq_hist_data_bar_values"] = Numbers(r.ActivationHistogram.BarValues.Select(v => (double)v)),
            ["freq_hist_data_bar_heights"] = Numbers(r.ActivationHistogram.BarHeights.Select(v => (double)v)),
            ["logits_hist_data_bar_values"] = Numbers(
                (r.Logits?.Histogram.BarValues ?? []).Select(v => (double)v)
            ),
            ["logits_hist_data_bar_heights"] = Numbers(
                (r.Logits?.Histogram.BarHeights ?? []).Select(v => (double)v)
            ),
            ["n_prompts_total"] = r.Tokens / Math.Max(1, request.Context - 1),
            ["n_tokens_in_prompt"] = request.Context,
            ["dataset"] = Path.GetFileName(request.Corpus),
            ["activations"] = activations,
        };
        return o;
    }

    private static JsonObject Activation(ExampleRecord e, double binMin, double binMax, double contains) =>
        new()
        {
            ["bin_min"] = R(binMin),
            ["bin_max"] = R(binMax),
            ["bin_contains"] = R(contains),
            ["tokens"] = Strings(e.Tokens),
            ["values"] = Numbers(e.Values.Select(v => (double)v)),
            ["qualifying_token_index"] = e.MaxIndex,
        };
}
