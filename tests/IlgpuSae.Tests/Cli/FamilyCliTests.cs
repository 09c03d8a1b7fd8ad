using System.Text.Json;
using System.Text.Json.Nodes;
using FluentAssertions;
using IlgpuSae.IO;
using IlgpuSae.Tests.Infrastructure;
using Xunit;

namespace IlgpuSae.Tests.Cli;

/// <summary>
/// Every SAE family through the command line: train, evaluate, save and load, export, encode and resume,
/// and the bad settings each family refuses without writing anything.
/// </summary>
[Collection(EnvironmentCollection.Name)]
public sealed class FamilyCliTests : IDisposable
{
    private readonly TempFolder _temp = new("ilgpusae-family-cli-");

    public FamilyCliTests()
    {
        Run("synth", "--rows", "4096", "--d", "8", "--features", "16", "--l0", "2", "--out", P("toy.npy"))
            .Code.Should()
            .Be(0);
    }

    public void Dispose() => _temp.Dispose();

    private string P(string name) => _temp.Path(name);

    private static (int Code, string Out, string Err) Run(params string[] args) => CliRunner.Run(args);

    private string[] Train(string arch, string output, params string[] extra) =>
        [
            "--backend",
            "cpu",
            "train",
            "--arch",
            arch,
            "--acts",
            P("toy.npy"),
            "--d-sae",
            "24",
            "--lr",
            "3e-3",
            "--batch-size",
            "128",
            "--tokens",
            "6400",
            "--lr-warmup",
            "5",
            "--log-every",
            "10",
            "--out",
            P(output),
            .. extra,
        ];

    private static string Architecture(string folder) =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "cfg.json")))![
            "architecture"
        ]!.GetValue<string>();

    private double L0(string sae)
    {
        var eval = Run("--backend", "cpu", "eval", "--sae", sae, "--acts", P("toy.npy"), "--json");
        eval.Code.Should().Be(0, eval.Err);
        using var doc = JsonDocument.Parse(eval.Out);
        return doc.RootElement.GetProperty("l0").GetDouble();
    }

    [Theory]
    [InlineData("batchtopk")]
    [InlineData("matryoshka")]
    public void A_BatchTopK_family_SAE_trains_saves_as_JumpReLU_keeps_its_training_form_and_exports(
        string arch
    )
    {
        string[] extra = arch == "matryoshka" ? ["--matryoshka-widths", "6,12,24"] : [];
        var run = Run(
            Train(arch, arch, ["--k", "3", "--threshold-start", "10", "--dead-window", "1280", .. extra])
        );
        run.Code.Should().Be(0, run.Err);
        Architecture(P(arch)).Should().Be("jumprelu", "SAELens saves BatchTopK for inference as JumpReLU");
        string trained = arch == "matryoshka" ? "matryoshka_batchtopk" : "batchtopk";
        Architecture(P($"{arch}/training_form")).Should().Be(trained);
        var cfg = JsonNode.Parse(File.ReadAllText(P($"{arch}/cfg.json")))!;
        cfg["metadata"]!["trained_as"]!.GetValue<string>().Should().Be(trained);

        // Inference L0 through the threshold, the same from the training form and from its JumpReLU export.
        double l0 = L0(P(arch));
        l0.Should().BeInRange(1.0, 6.0);
        L0(P($"{arch}/training_form")).Should().BeApproximately(l0, 1e-9);
        var export = Run(
            "--backend",
            "cpu",
            "export",
            "--sae",
            P($"{arch}/training_form"),
            "--to",
            "jumprelu",
            "--out",
            P($"{arch}-exported")
        );
        export.Code.Should().Be(0, export.Err);
        L0(P($"{arch}-exported")).Should().BeApproximately(l0, 1e-9);
        File.ReadAllBytes(P($"{arch}-exported/sae_weights.safetensors"))
            .Should()
            .Equal(File.ReadAllBytes(P($"{arch}/sae_weights.safetensors")));

        var encode = Run(
            "--backend",
            "cpu",
            "encode",
            "--sae",
            P(arch),
            "--acts",
            P("toy.npy"),
            "--out",
            P($"{arch}-codes")
        );
        encode.Code.Should().Be(0, encode.Err);
    }

    [Theory]
    [InlineData("topk", "dictionary-learning")]
    [InlineData("topk", "saelens")]
    [InlineData("batchtopk", "saelens")]
    [InlineData("jumprelu", "saelens")]
    public void Each_family_and_mode_trains_round_trips_and_resumes_exactly(string arch, string mode)
    {
        string[] family =
            arch == "jumprelu"
                ? ["--l0-coefficient", "0.05", "--threshold-init", "0.05", "--bandwidth", "0.1"]
                : ["--k", "3"];
        string[] args =
        [
            .. family,
            "--mode",
            mode,
            .. (arch == "jumprelu" ? Array.Empty<string>() : ["--dead-window", "1280"]),
        ];
        var whole = Run(Train(arch, "whole", args));
        whole.Code.Should().Be(0, whole.Err);
        Architecture(P("whole")).Should().Be(arch == "batchtopk" ? "jumprelu" : arch);
        L0(P("whole")).Should().BeGreaterThan(0.5);

        // The same run, as if the process died after its step-20 checkpoint, then resumed: the same bytes.
        var parts = Run(Train(arch, "parts", [.. args, "--checkpoint-every", "20"]));
        parts.Code.Should().Be(0, parts.Err);
        File.Delete(P("parts/cfg.json"));
        File.Delete(P("parts/sae_weights.safetensors"));
        if (Directory.Exists(P("parts/training_form")))
        {
            Directory.Delete(P("parts/training_form"), recursive: true);
        }

        var resumed = Run(Train(arch, "parts", [.. args, "--checkpoint-every", "20", "--resume"]));
        resumed.Code.Should().Be(0, resumed.Err);
        resumed.Out.Should().Contain("Resumed from");
        File.ReadAllBytes(P("parts/sae_weights.safetensors"))
            .Should()
            .Equal(File.ReadAllBytes(P("whole/sae_weights.safetensors")), "a resumed run continues exactly");
    }

    private JsonNode Json(string path) => JsonNode.Parse(File.ReadAllText(P(path)))!;

    private double[] Metric(string folder, string name) =>
        [
            .. File.ReadLines(P($"{folder}/metrics.jsonl"))
                .Where(l => l.Length > 0)
                .Select(l => JsonNode.Parse(l)![name]!.GetValue<double>()),
        ];

    /// <summary>Trains <paramref name="args"/> whole, then as a run killed after its step-20 checkpoint and
    /// resumed, and checks that both give the same bytes.</summary>
    private void TrainsAndResumesExactly(string arch, string[] args)
    {
        var whole = Run(Train(arch, "whole", args));
        whole.Code.Should().Be(0, whole.Err);
        var parts = Run(Train(arch, "parts", [.. args, "--checkpoint-every", "20"]));
        parts.Code.Should().Be(0, parts.Err);
        File.Delete(P("parts/cfg.json"));
        File.Delete(P("parts/sae_weights.safetensors"));
        var resumed = Run(Train(arch, "parts", [.. args, "--checkpoint-every", "20", "--resume"]));
        resumed.Code.Should().Be(0, resumed.Err);
        resumed.Out.Should().Contain("Resumed from");
        File.ReadAllBytes(P("parts/sae_weights.safetensors"))
            .Should()
            .Equal(File.ReadAllBytes(P("whole/sae_weights.safetensors")), "a resumed run continues exactly");
    }

    [Theory]
    [InlineData("dead")]
    [InlineData("all")]
    public void A_JumpRelu_run_with_the_pre_act_loss_records_SAELens_names_round_trips_and_resumes_exactly(
        string latents
    )
    {
        string[] jump = ["--l0-coefficient", "0.05", "--threshold-init", "0.05", "--bandwidth", "0.1"];
        string[] args =
        [
            .. jump,
            "--pre-act-coefficient",
            "0.01",
            "--pre-act-latents",
            latents,
            .. (latents == "dead" ? ["--dead-window", "1280"] : Array.Empty<string>()),
        ];
        TrainsAndResumesExactly("jumprelu", args);

        var cfg = Json("whole/cfg.json");
        cfg["pre_act_loss_coefficient"]!.GetValue<double>().Should().BeApproximately(0.01, 1e-9);
        cfg["metadata"]!["training"]!["pre_act_loss_latents"]!.GetValue<string>().Should().Be(latents);
        var settings = Json("whole/trainer_config.json");
        settings["pre_act_loss_coefficient"]!.GetValue<double>().Should().BeApproximately(0.01, 1e-9);
        settings["pre_act_loss_latents"]!.GetValue<string>().Should().Be(latents);
        if (latents == "dead")
        {
            settings["dead_window_tokens"]!.GetValue<long>().Should().Be(1280);
        }
        else
        {
            settings.AsObject().ContainsKey("dead_window_tokens").Should().BeFalse();
            // Every latent is penalised from the first step: the term is in every logged loss.
            Metric("whole", "losses/auxiliary_reconstruction_loss")
                .Should()
                .AllSatisfy(v => v.Should().BePositive());
        }

        // The folder loads back (the SAELens key is a known one) and encodes.
        L0(P("whole")).Should().BeGreaterThan(0.5);
    }

    [Theory]
    [InlineData("f")]
    [InlineData("pre")]
    public void A_dictionary_learning_JumpRelu_run_trains_round_trips_and_resumes_exactly(string stepOn)
    {
        string[] args =
        [
            "--mode",
            "dictionary-learning",
            "--target-l0",
            "3",
            "--threshold-init",
            "0.05",
            "--bandwidth",
            "0.1",
            "--l1-warmup",
            "20",
            "--l0-step-on",
            stepOn,
        ];
        TrainsAndResumesExactly("jumprelu", args);

        var cfg = Json("whole/cfg.json");
        cfg["architecture"]!.GetValue<string>().Should().Be("jumprelu");
        cfg["apply_b_dec_to_input"]!
            .GetValue<bool>()
            .Should()
            .BeFalse("dictionary_learning encodes x itself");
        cfg["metadata"]!["training"]!["target_l0"]!.GetValue<double>().Should().Be(3);
        cfg["metadata"]!["training"]!["l0_step_on"]!.GetValue<string>().Should().Be(stepOn);
        var settings = Json("whole/trainer_config.json");
        settings["jumprelu_sparsity_loss_mode"]!.GetValue<string>().Should().Be("target_l0");
        settings["target_l0"]!.GetValue<double>().Should().Be(3);
        settings["jumprelu_l0_step_on"]!.GetValue<string>().Should().Be(stepOn);
        settings["jumprelu_log_threshold"]!.GetValue<bool>().Should().BeFalse();
        settings["l1_warmup_from_zero"]!.GetValue<bool>().Should().BeTrue();
        settings["adam_beta1"]!.GetValue<double>().Should().Be(0);
        settings["constrain_decoder_norm"]!.GetValue<bool>().Should().BeTrue();
        settings["grad_clip_norm"]!.GetValue<double>().Should().Be(1);

        // dictionary_learning's warm-up s = step/W from step 0: the first logged step (10) used 9/20.
        Metric("whole", "details/current_l1_coefficient")[0].Should().BeApproximately(9.0 / 20, 1e-9);
        // The folder loads back and evaluates.
        L0(P("whole")).Should().BeGreaterThan(0);
    }

    [Fact]
    public void A_dictionary_learning_TopK_run_from_init_sets_b_dec_to_the_geometric_median_as_its_step_0()
    {
        // dictionary_learning's TopK trainers overwrite b_dec with the first batch's geometric median in
        // update(step 0) whatever the weights; --b-dec-init keep keeps the --init SAE's b_dec.
        string[] Args(string output, string lr, params string[] extra) =>
            [
                "--backend",
                "cpu",
                "train",
                "--arch",
                "topk",
                "--k",
                "3",
                "--acts",
                P("toy.npy"),
                "--d-sae",
                "24",
                "--lr",
                lr,
                "--batch-size",
                "128",
                "--tokens",
                "128",
                "--out",
                P(output),
                .. extra,
            ];
        var first = Run(Args("init", "3e-3", "--b-dec-init", "zero"));
        first.Code.Should().Be(0, first.Err);
        float[] BDec(string folder)
        {
            using var weights = new SafetensorsFile(Path.Combine(P(folder), "sae_weights.safetensors"));
            return weights.ReadFloats("b_dec");
        }

        var init = BDec("init");
        string[] OneStep(string output, params string[] extra) =>
            Args(output, "1e-7", ["--lr-warmup", "0", "--init", P("init"), .. extra]);
        var median = Run(OneStep("median"));
        median.Code.Should().Be(0, median.Err);
        var kept = Run(OneStep("kept", "--b-dec-init", "keep"));
        kept.Code.Should().Be(0, kept.Err);
        Run(OneStep("zero", "--b-dec-init", "zero"))
            .Err.Should()
            .Contain("--b-dec-init zero applies to new SAEs");
        BDec("kept").Zip(init, (a, b) => Math.Abs(a - b)).Max().Should().BeLessThan(1e-5f);
        BDec("median").Zip(init, (a, b) => Math.Abs(a - b)).Max().Should().BeGreaterThan(1e-3f);
    }

    [Fact]
    public void A_dictionary_learning_JumpReLU_run_from_init_does_not_subtract_b_dec()
    {
        // jumprelu.py's loss encodes x @ W_enc + b_enc: an --init SAE saved with apply_b_dec_to_input (the
        // saelens mode's) trains without it, with a warning, and is saved so.
        var first = Run(Train("jumprelu", "jr-init", ["--mode", "saelens"]));
        first.Code.Should().Be(0, first.Err);
        ApplyBDec("jr-init").Should().BeTrue();
        var next = Run(Train("jumprelu", "jr-dl", ["--mode", "dictionary-learning", "--init", P("jr-init")]));
        next.Code.Should().Be(0, next.Err);
        next.Err.Should().Contain("apply_b_dec_to_input false");
        ApplyBDec("jr-dl").Should().BeFalse();
    }

    private bool ApplyBDec(string folder) =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(P(folder), "cfg.json")))![
            "apply_b_dec_to_input"
        ]!.GetValue<bool>();

    [Fact]
    public void Bad_family_settings_are_clear_errors_and_write_nothing()
    {
        var cases = new (string Arch, string[] Extra, string Message)[]
        {
            ("topk", ["--k", "0"], "k"),
            ("topk", ["--k", "25"], "k ≤ d_sae"),
            ("batchtopk", ["--k", "3", "--aux-k", "30"], "k_aux = 30 exceeds d_sae"),
            ("matryoshka", ["--k", "3"], "--matryoshka-widths"),
            ("matryoshka", ["--k", "3", "--matryoshka-widths", "12,6,24"], "strictly increasing"),
            ("matryoshka", ["--k", "3", "--matryoshka-widths", "6,12"], "must end at d_sae"),
            ("matryoshka", ["--k", "3", "--matryoshka-widths", "6,x"], "comma-separated"),
            (
                "matryoshka",
                [
                    "--k",
                    "3",
                    "--matryoshka-widths",
                    "6,24",
                    "--threshold-start",
                    "10",
                    "--level-weights",
                    "1",
                ],
                "level weights"
            ),
            ("jumprelu", ["--bandwidth", "0"], "bandwidth"),
            ("jumprelu", ["--bandwidth", "-1"], "bandwidth"),
            ("jumprelu", ["--mode", "april-update"], "does not apply to jumprelu"),
            ("jumprelu", ["--jumprelu-sparsity", "tanh", "--tanh-scale", "0"], "tanh scale"),
            ("topk", ["--k", "3", "--jumprelu-sparsity", "tanh"], "--jumprelu-sparsity applies to jumprelu"),
            ("jumprelu", ["--l1", "1"], "--l0-coefficient"),
            ("jumprelu", ["--k", "3"], "--k applies"),
            ("topk", ["--k", "3", "--mode", "april-update"], "does not apply to topk"),
            ("topk", ["--k", "3", "--bandwidth", "0.1"], "--bandwidth applies to jumprelu"),
            ("standard", ["--aux-k", "3"], "--aux-k applies to the TopK family"),
            (
                "batchtopk",
                ["--k", "3", "--mode", "saelens", "--threshold-start", "5"],
                "--threshold-start applies"
            ),
        };
        foreach (var (arch, extra, message) in cases)
        {
            ExpectRefused(arch, extra, message, oneErrorLine: false);
        }
    }

    /// <summary>The JumpReLU options the command checks itself (after parsing): one <c>error:</c> line each,
    /// exit code non-zero, nothing written.</summary>
    [Fact]
    public void Bad_JumpRelu_loss_settings_are_one_error_line_and_write_nothing()
    {
        var cases = new (string Arch, string[] Extra, string Message)[]
        {
            ("jumprelu", ["--pre-act-coefficient", "-1"], "pre-activation loss coefficient must be ≥ 0"),
            ("jumprelu", ["--pre-act-coefficient", "NaN"], "pre-activation loss coefficient must be ≥ 0"),
            ("jumprelu", ["--pre-act-latents", "all"], "give --pre-act-coefficient"),
            (
                "jumprelu",
                ["--pre-act-coefficient", "1", "--pre-act-latents", "all", "--dead-window", "1280"],
                "--dead-window does not apply"
            ),
            ("jumprelu", ["--dead-window", "1280"], "--dead-window applies to"),
            (
                "topk",
                ["--k", "3", "--pre-act-coefficient", "0.1"],
                "--pre-act-coefficient applies to jumprelu"
            ),
            ("standard", ["--pre-act-coefficient", "0.1"], "--pre-act-coefficient applies to jumprelu"),
            ("gated", ["--pre-act-latents", "dead"], "--pre-act-latents applies to jumprelu"),
            ("jumprelu", ["--mode", "dictionary-learning", "--target-l0", "0"], "target L0 must be positive"),
            (
                "jumprelu",
                ["--mode", "dictionary-learning", "--target-l0", "-3"],
                "target L0 must be positive"
            ),
            ("jumprelu", ["--target-l0", "5"], "--target-l0 applies to --mode dictionary-learning"),
            ("jumprelu", ["--l0-step-on", "pre"], "--l0-step-on applies to --mode dictionary-learning"),
            (
                "jumprelu",
                ["--mode", "dictionary-learning", "--jumprelu-sparsity", "tanh"],
                "--jumprelu-sparsity applies to --mode saelens"
            ),
            (
                "jumprelu",
                ["--mode", "dictionary-learning", "--pre-act-coefficient", "1"],
                "--pre-act-coefficient applies to --mode saelens"
            ),
            (
                "jumprelu",
                ["--mode", "dictionary-learning", "--ste-to-input"],
                "--ste-to-input applies to --mode saelens"
            ),
            ("topk", ["--k", "3", "--target-l0", "5"], "--target-l0 applies to jumprelu"),
        };
        foreach (var (arch, extra, message) in cases)
        {
            ExpectRefused(arch, extra, message, oneErrorLine: true);
        }
    }

    private void ExpectRefused(string arch, string[] extra, string message, bool oneErrorLine)
    {
        var bad = Run(Train(arch, "bad", extra));
        bad.Code.Should().NotBe(0, $"{arch} {string.Join(' ', extra)}");
        bad.Err.Should().Contain(message, $"{arch} {string.Join(' ', extra)}");
        bad.Err.Should().NotContain("   at ", "no stack trace");
        Directory
            .Exists(P("bad"))
            .Should()
            .BeFalse($"a refused run writes nothing ({arch} {string.Join(' ', extra)})");
        if (oneErrorLine)
        {
            bad.Err.Split('\n')
                .Count(l => l.StartsWith("error:", StringComparison.Ordinal))
                .Should()
                .Be(1, $"one error line ({arch} {string.Join(' ', extra)})");
        }
    }
}
