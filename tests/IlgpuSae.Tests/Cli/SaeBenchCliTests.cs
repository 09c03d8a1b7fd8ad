using System.Text.Json.Nodes;
using FluentAssertions;
using IlgpuSae.Backends;
using IlgpuSae.IO;
using IlgpuSae.Sae;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Tests.Lm;
using IlgpuSae.Tests.SaeBench;
using IlgpuSae.Training;
using Xunit;

namespace IlgpuSae.Tests.Cli;

/// <summary><c>eval --saebench-json</c> end to end: with the bundled model every field is computed; with
/// activations only the model groups are −1 with a warning; existing files and outputs inside inputs are
/// refused before any work.</summary>
[Collection(EnvironmentCollection.Name)]
public sealed class SaeBenchCliTests : IDisposable
{
    private readonly TempFolder _temp = new("ilgpusae-saebench-cli-");

    public void Dispose() => _temp.Dispose();

    private string P(string name) => _temp.Path(name);

    /// <summary>A random SAE for <c>blocks.0.hook_mlp_out</c> of the bundled model (d = 128).</summary>
    private string RandomSae(string name, string arch, int dIn, int dSae)
    {
        using var device = SaeDevice.Create(BackendKind.Cpu);
        var config = SaeRecipe
            .Parse(arch, k: arch == "topk" ? 8 : 0)
            .Config(
                dIn,
                dSae,
                new Dictionary<string, object?>
                {
                    ["hook_name"] = "blocks.0.hook_mlp_out",
                    ["model_name"] = "bundled",
                }
            );
        using var sae = SparseAutoencoder.Create(device, config, seed: 7);
        SaeFiles.Save(sae, P(name));
        return P(name);
    }

    [Fact]
    public void With_the_bundled_model_every_field_is_computed_and_an_existing_file_is_kept()
    {
        var sae = RandomSae("sae", "topk", 128, 96);
        string[] args =
        [
            "--backend",
            "cpu",
            "eval",
            "--sae",
            sae,
            "--model",
            LmTestData.BundledModel,
            "--corpus",
            LmTestData.HeldOut,
            "--context",
            "32",
            "--tokens",
            "300",
            "--lm-batch",
            "4",
            "--saebench-json",
            P("bench"),
            "--saebench-release",
            "tiny",
            "--saebench-id",
            "blocks.0/topk",
            "--json",
        ];
        var run = CliRunner.Run(args);
        run.Code.Should().Be(0, run.Err);
        var file = P("bench/tiny_blocks.0_topk_eval_results.json");
        File.Exists(file).Should().BeTrue(run.Err);
        run.Err.Should().Contain("Wrote SAEBench core results");
        var json = JsonNode.Parse(File.ReadAllText(file))!.AsObject();
        SaeBenchCoreTests.CheckSchema(json, 96);

        var config = json["eval_config"]!;
        config["compute_kl"]!.GetValue<bool>().Should().BeTrue();
        config["compute_ce_loss"]!.GetValue<bool>().Should().BeTrue();
        config["context_size"]!.GetValue<int>().Should().Be(32);
        config["batch_size_prompts"]!.GetValue<int>().Should().Be(4);
        config["exclude_special_tokens_from_reconstruction"]!.GetValue<bool>().Should().BeTrue();
        var printed = JsonNode.Parse(run.Out[run.Out.IndexOf('{', StringComparison.Ordinal)..])!;
        int contexts = printed["contexts"]!.GetValue<int>();
        contexts.Should().BeGreaterThan(4, "more than one batch of 4 contexts");
        config["n_eval_reconstruction_batches"]!.GetValue<int>().Should().Be((contexts + 3) / 4);
        var m = json["eval_result_metrics"]!;
        m["token_stats"]!["total_tokens_eval_reconstruction"]!.GetValue<long>().Should().Be(contexts * 32);

        // The file's model metrics are the evaluator's (printed with --json), with SAEBench's counting.
        var ce = m["model_performance_preservation"]!;
        ce["ce_loss_with_sae"]!
            .GetValue<double>()
            .Should()
            .Be(printed["ce_loss_with_sae"]!.GetValue<double>());
        printed["tokens_counted"]!.GetValue<string>().Should().Contain("non-special positions");
        double clean = ce["ce_loss_without_sae"]!.GetValue<double>(),
            withSae = ce["ce_loss_with_sae"]!.GetValue<double>(),
            zero = ce["ce_loss_with_ablation"]!.GetValue<double>();
        ce["ce_loss_score"]!
            .GetValue<double>()
            .Should()
            .BeApproximately((zero - withSae) / (zero - clean), 1e-9);
        var kl = m["model_behavior_preservation"]!;
        kl["kl_div_with_ablation"]!.GetValue<double>().Should().BeGreaterThan(0);

        m["sparsity"]!["l0"]!.GetValue<double>().Should().BeLessThanOrEqualTo(8, "TopK with k = 8");
        var rq = m["reconstruction_quality"]!;
        rq["explained_variance"]!.GetValue<double>().Should().BeLessThanOrEqualTo(1);
        var details = json["eval_result_details"]!.AsArray();
        foreach (var d in details)
        {
            double density = d!["feature_density"]!.GetValue<double>();
            double cah = d["consistent_activation_heuristic"]!.GetValue<double>();
            density.Should().BeInRange(0, 1);
            if (density > 0)
            {
                cah.Should()
                    .BeGreaterThanOrEqualTo(1, "an active latent fires at least once per prompt it is in");
                cah.Should().BeLessThanOrEqualTo(31, "at most the 31 non-BOS positions of a context");
            }
            else
            {
                cah.Should().Be(-1, "0/0 is NaN, written as −1");
            }

            d["encoder_decoder_cosine_sim"]!
                .GetValue<double>()
                .Should()
                .BeApproximately(1, 1e-6, "W_enc = W_decᵀ");
        }

        // An existing file is refused before any work and left as it was; --saebench-overwrite replaces it.
        var before = File.ReadAllText(file);
        var again = CliRunner.Run(args);
        again.Code.Should().Be(2);
        again.Err.Should().Contain("already exists").And.Contain("--saebench-overwrite");
        File.ReadAllText(file).Should().Be(before);
        var replaced = CliRunner.Run([.. args, "--saebench-overwrite"]);
        replaced.Code.Should().Be(0, replaced.Err);
        File.ReadAllText(file).Should().NotBe(before, "a new eval_id and timestamp");
        Directory.GetFiles(P("bench")).Should().ContainSingle();
    }

    [Fact]
    public void With_activations_only_the_model_groups_are_minus_one_and_outputs_inside_inputs_are_refused()
    {
        var sae = RandomSae("run/gated-a", "gated", 16, 24);
        var rng = new Random(5);
        var acts = P("acts.npy");
        Npy.WriteFloats(
            acts,
            [.. Enumerable.Range(0, 300 * 16).Select(_ => (float)rng.NextDouble())],
            300,
            16
        );
        string[] Args(string dir) =>
            [
                "--backend",
                "cpu",
                "eval",
                "--sae",
                sae,
                "--acts",
                acts,
                "--batch-size",
                "128",
                "--saebench-json",
                dir,
            ];

        var inside = CliRunner.Run(Args(Path.Combine(sae, "bench")));
        inside.Code.Should().Be(2);
        inside.Err.Should().Contain("inside the input");
        Directory.Exists(Path.Combine(sae, "bench")).Should().BeFalse();
        var onInput = CliRunner.Run(Args(acts));
        onInput.Code.Should().Be(2);
        var orphan = CliRunner.Run([
            "--backend",
            "cpu",
            "eval",
            "--sae",
            sae,
            "--acts",
            acts,
            "--saebench-id",
            "x",
        ]);
        orphan.Code.Should().Be(2);
        orphan.Err.Should().Contain("need --saebench-json");

        var run = CliRunner.Run(Args(P("bench")));
        run.Code.Should().Be(0, run.Err);
        run.Err.Should().Contain("warning: no --model");
        var json = JsonNode.Parse(File.ReadAllText(P("bench/run_gated-a_eval_results.json")))!.AsObject();
        SaeBenchCoreTests.CheckSchema(json, 24);
        json["sae_lens_release_id"]!.GetValue<string>().Should().Be("run", "the folder holding the SAE");
        json["sae_lens_id"]!.GetValue<string>().Should().Be("gated-a", "the SAE folder's name");
        var m = json["eval_result_metrics"]!;
        m["model_performance_preservation"]!["ce_loss_score"]!.GetValue<double>().Should().Be(-1);
        m["model_behavior_preservation"]!["kl_div_score"]!.GetValue<double>().Should().Be(-1);
        m["token_stats"]!["total_tokens_eval_sparsity_variance"]!.GetValue<long>().Should().Be(300);
        json["eval_config"]!["compute_kl"]!.GetValue<bool>().Should().BeFalse();
        json["eval_config"]!["n_eval_sparsity_variance_batches"]!.GetValue<int>().Should().Be(3);
        json["eval_result_details"]![0]!["consistent_activation_heuristic"]!
            .GetValue<double>()
            .Should()
            .Be(-1);
        json["sae_cfg_dict"]!["metadata"]!["hook_name"]!
            .GetValue<string>()
            .Should()
            .Be("blocks.0.hook_mlp_out");
    }
}
