using System.Text.Json.Nodes;
using FluentAssertions;
using IlgpuSae.SaeBench;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Training;
using Xunit;

namespace IlgpuSae.Tests.SaeBench;

/// <summary>
/// The SAEBench core result file: a schema check written from the listing in the spec (§8, SAEBench 0.6.0's
/// <c>eval_output_schema_core.json</c>), NaN and ±∞ as −1, rounding, the misc metrics, the file name, and
/// the refusals (an existing file, an output inside or equal to an input).
/// </summary>
public sealed class SaeBenchCoreTests : IDisposable
{
    private readonly TempFolder _temp = new("ilgpusae-saebench-");

    public void Dispose() => _temp.Dispose();

    /// <summary>Every metric group and its fields (all required; groups are flat).</summary>
    public static readonly IReadOnlyDictionary<string, string[]> Groups = new Dictionary<string, string[]>
    {
        ["model_behavior_preservation"] = ["kl_div_score", "kl_div_with_ablation", "kl_div_with_sae"],
        ["model_performance_preservation"] =
        [
            "ce_loss_score",
            "ce_loss_with_ablation",
            "ce_loss_with_sae",
            "ce_loss_without_sae",
        ],
        ["reconstruction_quality"] = ["explained_variance", "explained_variance_legacy", "mse", "cossim"],
        ["shrinkage"] = ["l2_norm_in", "l2_norm_out", "l2_ratio", "relative_reconstruction_bias"],
        ["sparsity"] = ["l0", "l1"],
        ["token_stats"] = ["total_tokens_eval_reconstruction", "total_tokens_eval_sparsity_variance"],
        ["misc_metrics"] =
        [
            "freq_over_1_percent",
            "freq_over_10_percent",
            "normalized_freq_over_1_percent",
            "normalized_freq_over_10_percent",
            "average_max_encoder_cosine_sim",
            "average_max_decoder_cosine_sim",
            "frac_alive",
        ],
    };

    public static readonly string[] RequiredTopLevel =
    [
        "eval_config",
        "eval_id",
        "datetime_epoch_millis",
        "eval_result_metrics",
        "sae_bench_commit_hash",
        "sae_lens_id",
        "sae_lens_release_id",
        "sae_lens_version",
        "sae_cfg_dict",
    ];

    public static readonly string[] EvalConfigKeys =
    [
        "model_name",
        "llm_dtype",
        "batch_size_prompts",
        "n_eval_reconstruction_batches",
        "n_eval_sparsity_variance_batches",
        "dataset",
        "context_size",
        "compute_kl",
        "compute_ce_loss",
        "compute_l2_norms",
        "compute_sparsity_metrics",
        "compute_variance_metrics",
        "compute_featurewise_density_statistics",
        "compute_featurewise_weight_based_metrics",
        "exclude_special_tokens_from_reconstruction",
        "verbose",
    ];

    public static readonly string[] DetailKeys =
    [
        "index",
        "feature_density",
        "consistent_activation_heuristic",
        "encoder_bias",
        "encoder_norm",
        "encoder_decoder_cosine_sim",
        "max_decoder_cosine_sim",
        "max_encoder_cosine_sim",
    ];

    /// <summary>Checks <paramref name="json"/> against the core schema; used by the CLI tests too.</summary>
    internal static void CheckSchema(JsonObject json, int dSae)
    {
        foreach (var key in RequiredTopLevel)
        {
            json.ContainsKey(key).Should().BeTrue($"'{key}' is required");
        }

        json["eval_type_id"]!.GetValue<string>().Should().Be("core");
        Guid.TryParse(json["eval_id"]!.GetValue<string>(), out _).Should().BeTrue("eval_id is a uuid");
        long millis = json["datetime_epoch_millis"]!.GetValue<long>();
        millis.Should().BeInRange(1, 9_999_999_999_999);
        json["datetime_epoch_millis"]!.ToJsonString().Should().MatchRegex("^[0-9]+$", "an integer");
        json["sae_bench_commit_hash"]!.GetValue<string>().Should().StartWith("ilgpusae-");
        json["sae_lens_version"].Should().BeNull("SAELens did not run");
        json["sae_cfg_dict"]!["d_sae"]!.GetValue<int>().Should().Be(dSae);

        var config = json["eval_config"]!.AsObject();
        config.Select(kv => kv.Key).Should().BeEquivalentTo(EvalConfigKeys);
        foreach (var key in EvalConfigKeys.Where(k => k.StartsWith("compute_", StringComparison.Ordinal)))
        {
            config[key]!
                .GetValueKind()
                .Should()
                .BeOneOf(System.Text.Json.JsonValueKind.True, System.Text.Json.JsonValueKind.False);
        }

        var metrics = json["eval_result_metrics"]!.AsObject();
        metrics.Select(kv => kv.Key).Should().BeEquivalentTo(Groups.Keys);
        foreach (var (group, fields) in Groups)
        {
            var g = metrics[group]!.AsObject();
            g.Select(kv => kv.Key).Should().BeEquivalentTo(fields, $"group {group}");
            foreach (var (key, value) in g)
            {
                value!
                    .GetValueKind()
                    .Should()
                    .Be(System.Text.Json.JsonValueKind.Number, $"{group}.{key} is flat");
            }
        }

        foreach (var key in Groups["token_stats"])
        {
            metrics["token_stats"]![key]!
                .ToJsonString()
                .Should()
                .MatchRegex("^[0-9]+$", $"{key} is an integer");
        }

        var details = json["eval_result_details"]!.AsArray();
        details.Should().HaveCount(dSae);
        for (int i = 0; i < dSae; i++)
        {
            var item = details[i]!.AsObject();
            item.Select(kv => kv.Key).Should().BeEquivalentTo(DetailKeys);
            item["index"]!.GetValue<int>().Should().Be(i);
            foreach (var key in DetailKeys)
            {
                item[key]!.GetValueKind().Should().Be(System.Text.Json.JsonValueKind.Number);
            }
        }

        json["eval_result_unstructured"]!["explained_variance_bug_compatible"]!
            .GetValueKind()
            .Should()
            .Be(System.Text.Json.JsonValueKind.Number);
    }

    private static SaeBenchTokenMetrics Tokens(double[] density) =>
        new()
        {
            Tokens = 100,
            Batches = 2,
            L0 = 3,
            L1 = 4.5,
            Mse = 0.01,
            MsePerElement = 0.2,
            ExplainedVariance = 0.75,
            ExplainedVarianceLegacy = 0.7,
            ExplainedVarianceBugCompatible = 1.098,
            CosSim = double.NaN,
            L2NormIn = 2,
            L2NormOut = 1.9,
            L2Ratio = 0.95,
            RelativeReconstructionBias = double.PositiveInfinity,
            FeatureDensity = density,
            ConsistentActivationHeuristic = [.. density.Select(v => v > 0 ? 1.123456789012345 : double.NaN)],
        };

    private static SaeBenchWeightMetrics Weights(int m) =>
        new()
        {
            EncoderBias = [.. Enumerable.Range(0, m).Select(i => 0.1 * i)],
            EncoderNorm = [.. Enumerable.Repeat(1.0, m)],
            EncoderDecoderCosineSim = [.. Enumerable.Range(0, m).Select(i => i == 0 ? double.NaN : 0.5)],
            MaxEncoderCosineSim = [.. Enumerable.Range(0, m).Select(i => 0.1 * i)],
            MaxDecoderCosineSim = [.. Enumerable.Range(0, m).Select(i => 0.2)],
        };

    private static readonly SaeBenchEvalSettings Settings = new()
    {
        ModelName = "tiny",
        Dataset = "heldout.txt.gz",
        ContextSize = 64,
        BatchSizePrompts = 4,
        Batches = 3,
        TotalTokens = 768,
        ExcludeSpecialTokensFromReconstruction = true,
    };

    private static readonly SaeBenchModelMetrics Model = new(0.9, 2.0, 0.2, 0.8, 6.0, 3.0, 2.5);

    [Fact]
    public void The_result_has_every_required_key_flat_groups_and_minus_one_for_NaN()
    {
        double[] density = [0, 0.005, 0.02, 0.5];
        var config = SaeRecipe.Parse("standard").Config(3, density.Length);
        var json = SaeBenchCore.Build(config, Tokens(density), Weights(4), Model, Settings, "rel/a", "id");
        CheckSchema(json, 4);

        var m = json["eval_result_metrics"]!;
        m["reconstruction_quality"]!["explained_variance"]!.GetValue<double>().Should().Be(0.75);
        m["reconstruction_quality"]!["cossim"]!.GetValue<double>().Should().Be(-1, "NaN → −1");
        m["shrinkage"]!["relative_reconstruction_bias"]!.GetValue<double>().Should().Be(-1, "∞ → −1");
        m["model_performance_preservation"]!["ce_loss_score"]!.GetValue<double>().Should().Be(0.8);
        m["token_stats"]!["total_tokens_eval_reconstruction"]!.GetValue<long>().Should().Be(768);
        var misc = m["misc_metrics"]!;
        misc["frac_alive"]!.GetValue<double>().Should().Be(0.75);
        misc["freq_over_1_percent"]!.GetValue<double>().Should().Be(0.5);
        misc["freq_over_10_percent"]!.GetValue<double>().Should().Be(0.25);
        misc["normalized_freq_over_1_percent"]!
            .GetValue<double>()
            .Should()
            .BeApproximately(0.52 / 0.525, 1e-12);
        misc["normalized_freq_over_10_percent"]!
            .GetValue<double>()
            .Should()
            .BeApproximately(0.5 / 0.525, 1e-12);
        misc["average_max_encoder_cosine_sim"]!.GetValue<double>().Should().BeApproximately(0.15, 1e-12);
        misc["average_max_decoder_cosine_sim"]!.GetValue<double>().Should().BeApproximately(0.2, 1e-12);

        var details = json["eval_result_details"]!.AsArray();
        details[0]!["consistent_activation_heuristic"]!.GetValue<double>().Should().Be(-1, "dead: 0/0");
        details[0]!["encoder_decoder_cosine_sim"]!.GetValue<double>().Should().Be(-1);
        details[1]!["consistent_activation_heuristic"]!
            .GetValue<double>()
            .Should()
            .Be(1.123456789, "10 decimals");
        details[3]!["encoder_bias"]!.GetValue<double>().Should().BeApproximately(0.3, 1e-15);

        var config2 = json["eval_config"]!;
        config2["compute_kl"]!.GetValue<bool>().Should().BeTrue();
        config2["context_size"]!.GetValue<int>().Should().Be(64);
        config2["n_eval_sparsity_variance_batches"]!.GetValue<int>().Should().Be(3);
        json["sae_lens_release_id"]!.GetValue<string>().Should().Be("rel/a");
        var unstructured = json["eval_result_unstructured"]!;
        unstructured["explained_variance_bug_compatible"]!.GetValue<double>().Should().Be(1.098);
        unstructured["explained_variance_definitions"]!.AsObject().Should().HaveCount(3);
        unstructured["written_as_minus_one"]!
            .AsArray()
            .Select(n => n!.GetValue<string>())
            .Should()
            .Contain(["reconstruction_quality.cossim", "shrinkage.relative_reconstruction_bias"]);
    }

    [Fact]
    public void Without_a_model_the_model_groups_are_minus_one_and_not_marked_computed()
    {
        double[] density = [0.1, 0.2];
        var config = SaeRecipe.Parse("gated").Config(3, 2);
        var json = SaeBenchCore.Build(config, Tokens(density), Weights(2), null, Settings, "r", "i");
        CheckSchema(json, 2);
        var m = json["eval_result_metrics"]!;
        foreach (var group in new[] { "model_behavior_preservation", "model_performance_preservation" })
        {
            m[group]!
                .AsObject()
                .Select(kv => kv.Value!.GetValue<double>())
                .Should()
                .OnlyContain(v => v == -1);
        }

        json["eval_config"]!["compute_kl"]!.GetValue<bool>().Should().BeFalse();
        json["eval_config"]!["compute_ce_loss"]!.GetValue<bool>().Should().BeFalse();
        json["sae_cfg_dict"]!["architecture"]!.GetValue<string>().Should().Be("gated");
    }

    [Fact]
    public void The_file_name_is_SAEBench_s_with_slashes_replaced()
    {
        SaeBenchCore
            .FileName("gemma-scope-2b-pt-res", "layer_0/width_16k/average_l0_105")
            .Should()
            .Be("gemma-scope-2b-pt-res_layer_0_width_16k_average_l0_105_eval_results.json");
        var bad = () => SaeBenchCore.FileName("a", "b:c");
        bad.Should().Throw<ArgumentException>();
    }

    [Fact]
    public void An_existing_file_is_never_replaced_without_overwrite()
    {
        var dir = _temp.Path("out");
        var json = new JsonObject { ["eval_type_id"] = "core" };
        var path = SaeBenchCore.Write(dir, "r_i_eval_results.json", json, overwrite: false);
        File.Exists(path).Should().BeTrue();
        var check = () => SaeBenchCore.CheckOutput(dir, "r_i_eval_results.json", false, []);
        check.Should().Throw<ArgumentException>().WithMessage("*already exists*--saebench-overwrite*");
        var again = () =>
            SaeBenchCore.Write(dir, "r_i_eval_results.json", new JsonObject(), overwrite: false);
        again.Should().Throw<IOException>().WithMessage("*already exists*");
        File.ReadAllText(path).Should().Contain("core", "the first file is intact");
        Directory.GetFiles(dir).Should().ContainSingle("no temporary file is left behind");

        SaeBenchCore.CheckOutput(dir, "r_i_eval_results.json", true, []);
        SaeBenchCore.Write(dir, "r_i_eval_results.json", new JsonObject { ["x"] = 1 }, overwrite: true);
        File.ReadAllText(path).Should().Contain("\"x\"");
        Directory.GetFiles(dir).Should().ContainSingle();
    }

    [Fact]
    public void An_output_inside_or_equal_to_an_input_is_refused()
    {
        var sae = _temp.Path("sae");
        Directory.CreateDirectory(sae);
        var acts = _temp.Path("acts.npy");
        File.WriteAllText(acts, "");
        var inside = () => SaeBenchCore.CheckOutput(Path.Combine(sae, "bench"), "f.json", false, [sae]);
        inside.Should().Throw<ArgumentException>().WithMessage("*inside the input*");
        var equal = () => SaeBenchCore.CheckOutput(sae + "/", "f.json", false, [sae]);
        equal.Should().Throw<ArgumentException>().WithMessage("*is the input*");
        var file = () => SaeBenchCore.CheckOutput(acts, "f.json", false, [sae, acts]);
        file.Should().Throw<ArgumentException>();
        var sibling = _temp.Path("sae-bench");
        SaeBenchCore.CheckOutput(sibling, "f.json", false, [sae, acts]);
        Directory.Exists(sibling).Should().BeFalse("checking writes nothing");
    }
}
