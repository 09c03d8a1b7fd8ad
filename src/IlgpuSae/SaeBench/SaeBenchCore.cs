using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;
using IlgpuSae.IO;
using IlgpuSae.Sae;

namespace IlgpuSae.SaeBench;

/// <summary>The model-dependent core metrics (KL and cross-entropy with the SAE spliced in and with the
/// site zero-ablated), as SAEBench names them.</summary>
/// <param name="KlDivScore"><c>(KL_abl − KL_sae) / KL_abl</c>.</param>
/// <param name="KlDivWithAblation">Mean KL(clean ‖ zero-ablated) per counted position.</param>
/// <param name="KlDivWithSae">Mean KL(clean ‖ with the SAE) per counted position.</param>
/// <param name="CeLossScore"><c>(CE_abl − CE_sae) / (CE_abl − CE_clean)</c>.</param>
/// <param name="CeLossWithAblation">Mean cross-entropy with the site zero-ablated.</param>
/// <param name="CeLossWithSae">Mean cross-entropy with the SAE spliced in.</param>
/// <param name="CeLossWithoutSae">Mean cross-entropy of the clean model.</param>
public sealed record SaeBenchModelMetrics(
    double KlDivScore,
    double KlDivWithAblation,
    double KlDivWithSae,
    double CeLossScore,
    double CeLossWithAblation,
    double CeLossWithSae,
    double CeLossWithoutSae
);

/// <summary>The evaluation settings recorded in <c>eval_config</c> and <c>token_stats</c>.</summary>
public sealed record SaeBenchEvalSettings
{
    /// <summary><c>model_name</c>.</summary>
    public string ModelName { get; init; } = "";

    /// <summary><c>dataset</c>: the corpus or activation file evaluated.</summary>
    public string Dataset { get; init; } = "";

    /// <summary><c>context_size</c> (1 for activation rows without prompt structure).</summary>
    public int ContextSize { get; init; }

    /// <summary><c>batch_size_prompts</c>: prompts (or activation rows) per evaluation batch.</summary>
    public int BatchSizePrompts { get; init; }

    /// <summary>Evaluation batches; both <c>n_eval_reconstruction_batches</c> and
    /// <c>n_eval_sparsity_variance_batches</c>, since one pass computes every metric.</summary>
    public int Batches { get; init; }

    /// <summary>Positions evaluated before BOS/EOS/PAD are dropped (both <c>token_stats</c>
    /// fields).</summary>
    public long TotalTokens { get; init; }

    /// <summary><c>exclude_special_tokens_from_reconstruction</c>.</summary>
    public bool ExcludeSpecialTokensFromReconstruction { get; init; }
}

/// <summary>
/// Writes SAEBench's <c>core</c> evaluation result file (SAEBench 0.6.0, <c>evals/core/eval_output.py</c>):
/// every group and field of the schema, NaN (and ±∞, which JSON cannot hold) written as −1, per-latent values
/// rounded to 10 decimals. The file is produced by IlgpuSae, not by SAEBench; <c>sae_bench_commit_hash</c>
/// says so.
/// </summary>
public static class SaeBenchCore
{
    /// <summary>Decimals kept in the per-latent values (SAEBench's <c>DEFAULT_FLOAT_PRECISION</c>).</summary>
    public const int FeatureDecimals = 10;

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>
    /// What <c>sae_bench_commit_hash</c> holds: <c>ilgpusae-</c> and this library's informational version
    /// (<c>0.1.0+&lt;git commit it was built from&gt;</c>). The file was not produced by SAEBench.
    /// </summary>
    public static string Producer =>
        "ilgpusae-"
        + (
            typeof(SaeBenchCore)
                .Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()
                ?.InformationalVersion
            ?? typeof(SaeBenchCore).Assembly.GetName().Version?.ToString(3)
            ?? "unknown"
        );

    /// <summary>SAEBench's file name, <c>{release}_{saeId}_eval_results.json</c> with '/' replaced by
    /// '_'.</summary>
    /// <exception cref="ArgumentException">The release or id is empty, or the name would hold a character
    /// that file names cannot (a NUL, a backslash, a ':'), or is '.' or '..'.</exception>
    public static string FileName(string release, string saeId)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(release);
        ArgumentException.ThrowIfNullOrWhiteSpace(saeId);
        var name = $"{release}_{saeId}_eval_results.json".Replace('/', '_');
        if (name.IndexOfAny(['\0', '\\', ':']) >= 0 || name.Any(char.IsControl))
        {
            throw new ArgumentException(
                $"The SAEBench file name '{name}' holds a character file names cannot hold; choose another release or id."
            );
        }

        return name;
    }

    /// <summary>Builds the result object.</summary>
    /// <param name="config">The SAE's configuration (<c>sae_cfg_dict</c> is its <c>cfg.json</c>).</param>
    /// <param name="tokens">The token-level metrics.</param>
    /// <param name="weights">The weight-based metrics.</param>
    /// <param name="model">The KL and CE metrics; null when no model ran (their groups are then −1 and
    /// <c>compute_kl</c>/<c>compute_ce_loss</c> false).</param>
    /// <param name="settings">The evaluation settings.</param>
    /// <param name="release"><c>sae_lens_release_id</c>.</param>
    /// <param name="saeId"><c>sae_lens_id</c>.</param>
    /// <param name="notes">Free-text notes for <c>eval_result_unstructured</c>.</param>
    public static JsonObject Build(
        SaeConfig config,
        SaeBenchTokenMetrics tokens,
        SaeBenchWeightMetrics weights,
        SaeBenchModelMetrics? model,
        SaeBenchEvalSettings settings,
        string release,
        string saeId,
        IReadOnlyList<string>? notes = null
    )
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(settings);
        int m = config.DSae;
        if (
            tokens.FeatureDensity.Count != m
            || tokens.ConsistentActivationHeuristic.Count != m
            || weights.EncoderBias.Count != m
            || weights.EncoderNorm.Count != m
            || weights.EncoderDecoderCosineSim.Count != m
            || weights.MaxEncoderCosineSim.Count != m
            || weights.MaxDecoderCosineSim.Count != m
        )
        {
            throw new ArgumentException($"Every per-latent metric must have d_sae = {m} values.");
        }

        var nonFinite = new List<string>();
        JsonNode Num(string path, double v)
        {
            if (double.IsFinite(v))
            {
                return JsonValue.Create(v);
            }

            nonFinite.Add(path);
            return JsonValue.Create(-1.0);
        }

        JsonObject Group(string group, params (string Key, double Value)[] fields)
        {
            var o = new JsonObject();
            foreach (var (key, value) in fields)
            {
                o[key] = Num($"{group}.{key}", value);
            }

            return o;
        }

        var density = tokens.FeatureDensity;
        double total = density.Sum();
        double Frac(Func<double, bool> p) => density.Count(p) / (double)m;
        double Normalized(double over) => total > 0 ? density.Where(v => v > over).Sum() / total : 0;
        var metrics = new JsonObject
        {
            ["model_behavior_preservation"] = model is null
                ? Missing("kl_div_score", "kl_div_with_ablation", "kl_div_with_sae")
                : Group(
                    "model_behavior_preservation",
                    ("kl_div_score", model.KlDivScore),
                    ("kl_div_with_ablation", model.KlDivWithAblation),
                    ("kl_div_with_sae", model.KlDivWithSae)
                ),
            ["model_performance_preservation"] = model is null
                ? Missing("ce_loss_score", "ce_loss_with_ablation", "ce_loss_with_sae", "ce_loss_without_sae")
                : Group(
                    "model_performance_preservation",
                    ("ce_loss_score", model.CeLossScore),
                    ("ce_loss_with_ablation", model.CeLossWithAblation),
                    ("ce_loss_with_sae", model.CeLossWithSae),
                    ("ce_loss_without_sae", model.CeLossWithoutSae)
                ),
            ["reconstruction_quality"] = Group(
                "reconstruction_quality",
                ("explained_variance", tokens.ExplainedVariance),
                ("explained_variance_legacy", tokens.ExplainedVarianceLegacy),
                ("mse", tokens.Mse),
                ("cossim", tokens.CosSim)
            ),
            ["shrinkage"] = Group(
                "shrinkage",
                ("l2_norm_in", tokens.L2NormIn),
                ("l2_norm_out", tokens.L2NormOut),
                ("l2_ratio", tokens.L2Ratio),
                ("relative_reconstruction_bias", tokens.RelativeReconstructionBias)
            ),
            ["sparsity"] = Group("sparsity", ("l0", tokens.L0), ("l1", tokens.L1)),
            ["token_stats"] = new JsonObject
            {
                ["total_tokens_eval_reconstruction"] = settings.TotalTokens,
                ["total_tokens_eval_sparsity_variance"] = settings.TotalTokens,
            },
            ["misc_metrics"] = Group(
                "misc_metrics",
                ("freq_over_1_percent", Frac(v => v > 0.01)),
                ("freq_over_10_percent", Frac(v => v > 0.1)),
                ("normalized_freq_over_1_percent", Normalized(0.01)),
                ("normalized_freq_over_10_percent", Normalized(0.1)),
                ("average_max_encoder_cosine_sim", weights.MaxEncoderCosineSim.Average()),
                ("average_max_decoder_cosine_sim", weights.MaxDecoderCosineSim.Average()),
                ("frac_alive", Frac(v => v > 0))
            ),
        };

        var details = new JsonArray();
        var featureNonFinite = new Dictionary<string, int>(StringComparer.Ordinal);
        JsonNode Feature(string key, double v)
        {
            if (double.IsFinite(v))
            {
                return JsonValue.Create(Math.Round(v, FeatureDecimals));
            }

            featureNonFinite[key] = featureNonFinite.GetValueOrDefault(key) + 1;
            return JsonValue.Create(-1.0);
        }

        for (int i = 0; i < m; i++)
        {
            details.Add(
                new JsonObject
                {
                    ["index"] = i,
                    ["feature_density"] = Feature("feature_density", density[i]),
                    ["consistent_activation_heuristic"] = Feature(
                        "consistent_activation_heuristic",
                        tokens.ConsistentActivationHeuristic[i]
                    ),
                    ["encoder_bias"] = Feature("encoder_bias", weights.EncoderBias[i]),
                    ["encoder_norm"] = Feature("encoder_norm", weights.EncoderNorm[i]),
                    ["encoder_decoder_cosine_sim"] = Feature(
                        "encoder_decoder_cosine_sim",
                        weights.EncoderDecoderCosineSim[i]
                    ),
                    ["max_decoder_cosine_sim"] = Feature(
                        "max_decoder_cosine_sim",
                        weights.MaxDecoderCosineSim[i]
                    ),
                    ["max_encoder_cosine_sim"] = Feature(
                        "max_encoder_cosine_sim",
                        weights.MaxEncoderCosineSim[i]
                    ),
                }
            );
        }

        var unstructured = new JsonObject
        {
            ["producer"] =
                $"{Producer}: IlgpuSae's implementation of SAEBench 0.6.0's core evaluation; not produced by SAEBench.",
            ["explained_variance_bug_compatible"] = Num(
                "eval_result_unstructured.explained_variance_bug_compatible",
                tokens.ExplainedVarianceBugCompatible
            ),
            ["explained_variance_definitions"] = new JsonObject
            {
                ["explained_variance"] =
                    "1 - E[SSE] / sum_j (E[x_j^2] - E[x_j]^2), expectations over every counted token (the correct formula, decoderesearch/SAELens#659)",
                ["explained_variance_legacy"] =
                    "mean over tokens of 1 - SSE_t / sum_j (x_tj - mean_j of the token's batch)^2 (SAEBench's legacy per-token value, the one the SAEBench paper and Neuronpedia report)",
                ["explained_variance_bug_compatible"] =
                    "1 - mean_b E_b[SSE] / (mean_b E_b[|x|^2] - (mean_{b,j} E_b[x_j^2])^2): the buggy explained_variance of SAEBench 0.6.0 and SAELens 6.18, for comparison with numbers they published",
            },
            ["mse_definition"] =
                "mse = mean over tokens of SSE_t / (counted tokens in the token's batch), as SAEBench computes it (it depends on the batch size); mse_per_element = E[SSE] / d",
            ["mse_per_element"] = Num("eval_result_unstructured.mse_per_element", tokens.MsePerElement),
            ["tokens_counted"] = tokens.Tokens,
        };
        if (notes is { Count: > 0 })
        {
            unstructured["notes"] = new JsonArray([.. notes.Select(n => (JsonNode)JsonValue.Create(n))]);
        }

        var result = new JsonObject
        {
            ["eval_type_id"] = "core",
            ["eval_config"] = new JsonObject
            {
                ["model_name"] = settings.ModelName,
                ["llm_dtype"] = "float32",
                ["batch_size_prompts"] = settings.BatchSizePrompts,
                ["n_eval_reconstruction_batches"] = settings.Batches,
                ["n_eval_sparsity_variance_batches"] = settings.Batches,
                ["dataset"] = settings.Dataset,
                ["context_size"] = settings.ContextSize,
                ["compute_kl"] = model is not null,
                ["compute_ce_loss"] = model is not null,
                ["compute_l2_norms"] = true,
                ["compute_sparsity_metrics"] = true,
                ["compute_variance_metrics"] = true,
                ["compute_featurewise_density_statistics"] = true,
                ["compute_featurewise_weight_based_metrics"] = true,
                ["exclude_special_tokens_from_reconstruction"] =
                    settings.ExcludeSpecialTokensFromReconstruction,
                ["verbose"] = false,
            },
            ["eval_id"] = Guid.NewGuid().ToString("D"),
            ["datetime_epoch_millis"] = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(),
            ["eval_result_metrics"] = metrics,
            ["eval_result_details"] = details,
            ["sae_bench_commit_hash"] = Producer,
            ["sae_lens_id"] = saeId,
            ["sae_lens_release_id"] = release,
            ["sae_lens_version"] = null,
            ["sae_cfg_dict"] = SaeFiles.ConfigJson(config),
            ["eval_result_unstructured"] = unstructured,
        };
        if (model is null)
        {
            nonFinite.Insert(
                0,
                "model_behavior_preservation.* and model_performance_preservation.* (no model)"
            );
        }

        nonFinite.AddRange(
            featureNonFinite.Select(kv => $"eval_result_details.{kv.Key} ({kv.Value} latents)")
        );
        unstructured["written_as_minus_one"] = new JsonArray([
            .. nonFinite.Select(n => (JsonNode)JsonValue.Create(n)),
        ]);
        return result;
    }

    private static JsonObject Missing(params string[] keys)
    {
        var o = new JsonObject();
        foreach (var k in keys)
        {
            o[k] = -1.0;
        }

        return o;
    }

    /// <summary>
    /// Checks, before any work, that the result can be written to <paramref name="directory"/>: it is not an
    /// existing file, is not one of <paramref name="inputs"/> nor inside an input folder, and (unless
    /// <paramref name="overwrite"/>) holds no file named <paramref name="fileName"/>.
    /// </summary>
    /// <exception cref="ArgumentException">One of those holds.</exception>
    public static void CheckOutput(
        string directory,
        string fileName,
        bool overwrite,
        IEnumerable<string> inputs
    )
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        ArgumentException.ThrowIfNullOrWhiteSpace(fileName);
        ArgumentNullException.ThrowIfNull(inputs);
        var dir = Normalize(directory);
        if (File.Exists(dir))
        {
            throw new ArgumentException($"--saebench-json {directory} is a file; give a folder.");
        }

        foreach (var input in inputs.Where(i => !string.IsNullOrWhiteSpace(i)))
        {
            var full = Normalize(input);
            bool inside =
                dir == full || dir.StartsWith(full + Path.DirectorySeparatorChar, StringComparison.Ordinal);
            if (inside)
            {
                throw new ArgumentException(
                    $"--saebench-json {directory} is {(dir == full ? "" : "inside ")}the input {input}; write the results elsewhere."
                );
            }
        }

        var target = Path.Combine(dir, fileName);
        if (!overwrite && File.Exists(target))
        {
            throw new ArgumentException(
                $"{target} already exists; pass --saebench-overwrite to replace it, or choose another --saebench-json folder or --saebench-id."
            );
        }
    }

    /// <summary>
    /// Writes <paramref name="result"/> as <paramref name="directory"/>/<paramref name="fileName"/>
    /// atomically (through <see cref="AtomicFile"/>); without <paramref name="overwrite"/> an existing file
    /// is never replaced, even one created while the evaluation ran. Returns the path written.
    /// </summary>
    /// <exception cref="IOException">The file exists and <paramref name="overwrite"/> is false.</exception>
    public static string Write(string directory, string fileName, JsonObject result, bool overwrite)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        ArgumentException.ThrowIfNullOrWhiteSpace(fileName);
        ArgumentNullException.ThrowIfNull(result);
        var target = Path.Combine(Normalize(directory), fileName);
        var text = result.ToJsonString(Indented);
        if (overwrite)
        {
            AtomicFile.WriteAllText(target, text);
            return target;
        }

        // Atomic and no-clobber: the complete file under a temporary name, then a move that fails if the
        // target exists.
        var partial = $"{target}.partial-{Guid.NewGuid():N}";
        try
        {
            AtomicFile.WriteAllText(partial, text);
            File.Move(partial, target, overwrite: false);
        }
        catch (IOException e) when (File.Exists(target))
        {
            throw new IOException($"{target} already exists; pass --saebench-overwrite to replace it.", e);
        }
        finally
        {
            File.Delete(partial);
        }

        return target;
    }

    private static string Normalize(string path) => Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
}
