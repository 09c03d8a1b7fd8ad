using System.Text.Json.Nodes;
using FluentAssertions;
using IlgpuSae.Backends;
using IlgpuSae.Sae;
using IlgpuSae.Tensors;
using IlgpuSae.Tests.Cli;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Training;
using IlgpuSae.Verification;
using Xunit;

namespace IlgpuSae.Tests.Sae;

/// <summary>
/// SAELens's <c>rescale_acts_by_decoder_norm</c> for the TopK family: the selection ranks
/// <c>U ⊙ ‖W_dec[i]‖</c>, the codes are <c>U</c> on the kept entries, BatchTopK's θ is measured in the
/// rescaled space, and saving folds the norms into the weights. The gradients are checked against the
/// reference on every backend in <see cref="FamilyGradientTests"/> (the "-rescaled" cases).
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class RescaleActsTests(DeviceFixture devices)
{
    private const int D = 6,
        M = 24,
        Rows = 10;

    private SaeDevice Cpu => devices.Get(new Target(BackendKind.Cpu, KernelVariant.CpuShaped));

    private static SaeConfig Config(SaeArchitecture a, bool rescale) =>
        new()
        {
            Architecture = a,
            DIn = D,
            DSae = M,
            K = 3,
            MatryoshkaWidths = a == SaeArchitecture.Matryoshka ? [6, 12, 24] : null,
            RescaleActsByDecoderNorm = rescale,
        };

    /// <summary>An SAE whose decoder rows have norms spread over [0.2, 3] (so ranking by U ⊙ n differs from
    /// ranking by U), a non-zero b_dec and b_enc, and for BatchTopK a set threshold.</summary>
    private SparseAutoencoder Spread(SaeDevice device, SaeArchitecture a, bool rescale, float theta = 0.05f)
    {
        var sae = SparseAutoencoder.Create(device, Config(a, rescale), seed: 11);
        var p = SparseAutoencoder.TensorNames(sae.Config).ToDictionary(n => n, n => SaeTestData.Read(sae, n));
        var random = new Random(5);
        var wDec = p["W_dec"];
        for (int i = 0; i < M; i++)
        {
            double target = 0.2 + 2.8 * random.NextDouble();
            double norm = Math.Sqrt(Enumerable.Range(0, D).Sum(j => wDec[i * D + j] * wDec[i * D + j]));
            for (int j = 0; j < D; j++)
            {
                wDec[i * D + j] *= target / norm;
            }
        }

        p["b_dec"] = [.. Enumerable.Range(0, D).Select(j => 0.1 * (j - 2))];
        p["b_enc"] = [.. Enumerable.Range(0, M).Select(_ => 0.2 * (random.NextDouble() - 0.5))];
        if (p.ContainsKey(BatchTopKSae.ThresholdTensor))
        {
            p[BatchTopKSae.ThresholdTensor] = [theta];
        }

        SaeTestData.Load(sae, p);
        return sae;
    }

    private static float[] RandomRows(int rows, int seed)
    {
        var random = new Random(seed);
        return [.. Enumerable.Range(0, rows * D).Select(_ => (float)(random.NextDouble() * 2 - 1))];
    }

    private static Dictionary<string, double[]> Values(SparseAutoencoder sae) =>
        SparseAutoencoder.TensorNames(sae.Config).ToDictionary(n => n, n => SaeTestData.Read(sae, n));

    public static TheoryData<string> Families() => ["topk", "batchtopk", "matryoshka_batchtopk"];

    [Fact]
    public void The_TopK_selection_ranks_U_times_the_decoder_norms_and_keeps_U()
    {
        // TopK encodes as it trains (no batch budget), so the device's inference pass shows its selection.
        using var sae = Spread(Cpu, SaeArchitecture.TopK, rescale: true);
        var x = RandomRows(Rows, seed: 3);
        var p = Values(sae);
        var pre = FamilyReference.PreActivations(sae.Config, p, [.. x.Select(v => (double)v)], Rows);
        var expected = FamilyReference.Select(sae.Config, p, pre, Rows);
        var plain = FamilyReference.Select(Config(SaeArchitecture.TopK, rescale: false), p, pre, Rows);
        plain
            .Select(v => v != 0)
            .Should()
            .NotEqual(expected.Select(v => v != 0), "the data must make the rescale change the selection");

        var (features, _) = sae.ForwardHost(x, Rows);
        features.Select(v => v != 0).Should().Equal(expected.Select(v => v != 0), "the kept entries");
        for (int t = 0; t < features.Length; t++)
        {
            // S ⊘ n = U (within rounding), not S.
            features[t]
                .Should()
                .BeApproximately((float)expected[t], 1e-5f + 1e-5f * (float)Math.Abs(expected[t]));
        }
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Folding_the_decoder_norms_keeps_encode_and_decode_and_leaves_unit_norm_rows(string family)
    {
        var arch = SaeArchitectures.Get(family);
        using var sae = Spread(Cpu, arch, rescale: true, theta: 0.1f);
        var x = RandomRows(Rows, seed: 4);
        var (f1, r1) = sae.ForwardHost(x, Rows);
        f1.Count(v => v != 0).Should().BePositive();
        using var folded = sae.WithDecoderNormsFolded();
        folded.Config.RescaleActsByDecoderNorm.Should().BeFalse();
        var norms = SaeReference.RowNorms(SaeTestData.Read(folded, "W_dec"), M, D);
        norms.Should().AllSatisfy(n => n.Should().BeApproximately(1, 1e-6));
        var (f2, r2) = folded.ForwardHost(x, Rows);
        f2.Select(v => v != 0).Should().Equal(f1.Select(v => v != 0), "the same latents fire");
        for (int t = 0; t < r1.Length; t++)
        {
            r2[t].Should().BeApproximately(r1[t], 1e-5f + 1e-5f * Math.Abs(r1[t]));
        }

        // The fold is needed: the same weights with the flag simply dropped encode differently.
        using var dropped = SparseAutoencoder.CreateEmpty(
            Cpu,
            sae.Config with
            {
                RescaleActsByDecoderNorm = false,
            }
        );
        dropped.CopyParametersFrom(sae);
        var (f3, _) = dropped.ForwardHost(x, Rows);
        f3.Select(v => v != 0).Should().NotEqual(f1.Select(v => v != 0));

        if (arch is BatchTopKSae)
        {
            // The JumpReLU export folds first: it encodes as the rescaled training form.
            using var jump = BatchTopKSae.ToJumpRelu(sae);
            var (f4, r4) = jump.ForwardHost(x, Rows);
            f4.Select(v => v != 0).Should().Equal(f1.Select(v => v != 0));
            for (int t = 0; t < r1.Length; t++)
            {
                r4[t].Should().BeApproximately(r1[t], 1e-5f + 1e-5f * Math.Abs(r1[t]));
            }
        }
    }

    [Fact]
    public void The_BatchTopK_threshold_is_measured_on_the_rescaled_activations()
    {
        using var sae = Spread(Cpu, SaeArchitecture.BatchTopK, rescale: true, theta: 0f);
        var x = RandomRows(Rows, seed: 6);
        sae.TrainingStep = 1;
        using var tx = Cpu.Upload(x, Rows, D, "x");
        var p = Values(sae);
        sae.ComputeGradients(tx, new SaeLossOptions { Threshold = ThresholdEstimator.SaeLens });
        var pre = FamilyReference.PreActivations(sae.Config, p, [.. x.Select(v => (double)v)], Rows);
        var f = FamilyReference.Select(sae.Config, p, pre, Rows);
        var score = FamilyReference.SelectionScores(sae.Config, p, pre);
        double inS = Enumerable.Range(0, f.Length).Where(t => f[t] > 0).Min(t => score[t]);
        double inU = f.Where(v => v > 0).Min();
        Math.Abs(inS - inU).Should().BeGreaterThan(1e-3, "the two spaces must differ on this data");
        // SAELens: θ ← 0.99·0 + 0.01·min(S of the kept entries).
        BatchTopKSae.Threshold(sae).Should().BeApproximately((float)(0.01 * inS), 1e-7f);
    }

    [Fact]
    public void Folding_an_input_scale_keeps_a_rescaled_BatchTopK_encode()
    {
        const float s = 2.5f;
        using var sae = Spread(Cpu, SaeArchitecture.BatchTopK, rescale: true, theta: 0.1f);
        var x = RandomRows(Rows, seed: 9);
        var (f1, r1) = sae.ForwardHost([.. x.Select(v => v * s)], Rows);
        using var folded = sae.WithInputScaleFolded(s, new Dictionary<string, object?>());
        var (f2, r2) = folded.ForwardHost(x, Rows);
        f2.Select(v => v != 0).Should().Equal(f1.Select(v => v != 0), "θ scales with the decoder norms");
        for (int t = 0; t < r1.Length; t++)
        {
            (r2[t] * s).Should().BeApproximately(r1[t], 1e-4f + 1e-5f * Math.Abs(r1[t]));
        }
    }

    [Fact]
    public void The_flag_round_trips_through_the_files_and_other_families_refuse_it()
    {
        using var temp = new TempFolder("ilgpusae-rescale-");
        using var sae = Spread(Cpu, SaeArchitecture.TopK, rescale: true);
        SaeFiles.Save(sae, temp.Path("topk"));
        var cfg = JsonNode.Parse(File.ReadAllText(temp.Path("topk/cfg.json")))!;
        cfg["rescale_acts_by_decoder_norm"]!.GetValue<bool>().Should().BeTrue();
        using (var loaded = SaeFiles.Load(Cpu, temp.Path("topk")))
        {
            loaded.Config.RescaleActsByDecoderNorm.Should().BeTrue();
        }

        using var standard = SparseAutoencoder.Create(
            Cpu,
            new SaeConfig
            {
                Architecture = SaeArchitecture.Standard,
                DIn = D,
                DSae = M,
            },
            seed: 1
        );
        SaeFiles.Save(standard, temp.Path("standard"));
        var path = temp.Path("standard/cfg.json");
        var node = JsonNode.Parse(File.ReadAllText(path))!;
        node["rescale_acts_by_decoder_norm"] = true;
        File.WriteAllText(path, node.ToJsonString());
        var load = () => SaeFiles.Load(Cpu, temp.Path("standard"));
        load.Should().Throw<InvalidDataException>().WithMessage("*TopK family only*");
        var config = () =>
            new SaeConfig
            {
                Architecture = SaeArchitecture.Gated,
                DIn = D,
                DSae = M,
                RescaleActsByDecoderNorm = true,
            }.Validate();
        config.Should().Throw<ArgumentException>().WithMessage("*TopK family*");
    }
}

/// <summary>The command line's <c>--rescale-acts-by-decoder-norm</c>: its default per mode, the folded
/// inference files with the training form beside them, and the settings it refuses.</summary>
[Collection(EnvironmentCollection.Name)]
public sealed class RescaleActsCliTests : IDisposable
{
    private readonly TempFolder _temp = new("ilgpusae-rescale-cli-");

    public RescaleActsCliTests()
    {
        Run("synth", "--rows", "2048", "--d", "8", "--features", "16", "--l0", "2", "--out", P("toy.npy"))
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
            "--k",
            "3",
            "--lr",
            "3e-3",
            "--batch-size",
            "128",
            "--tokens",
            "2560",
            "--log-every",
            "10",
            "--out",
            P(output),
            .. extra,
        ];

    private JsonNode Cfg(string folder) => JsonNode.Parse(File.ReadAllText(P($"{folder}/cfg.json")))!;

    [Fact]
    public void A_SAELens_TopK_run_saves_the_folded_SAE_and_its_rescaled_training_form()
    {
        var run = Run(Train("topk", "sl", "--mode", "saelens", "--rescale-acts-by-decoder-norm", "true"));
        run.Code.Should().Be(0, run.Err);
        Cfg("sl")["rescale_acts_by_decoder_norm"]!.GetValue<bool>().Should().BeFalse("inference files fold");
        Cfg("sl/training_form")["rescale_acts_by_decoder_norm"]!.GetValue<bool>().Should().BeTrue();
        JsonNode.Parse(File.ReadAllText(P("sl/trainer_config.json")))!["rescale_acts_by_decoder_norm"]!
            .GetValue<bool>()
            .Should()
            .BeTrue();

        // The folded SAE and its training form evaluate alike.
        string Eval(string folder)
        {
            var eval = Run("--backend", "cpu", "eval", "--sae", P(folder), "--acts", P("toy.npy"), "--json");
            eval.Code.Should().Be(0, eval.Err);
            return eval.Out;
        }

        double Metric(string json, string name) => JsonNode.Parse(json)![name]!.GetValue<double>();
        string folded = Eval("sl"),
            training = Eval("sl/training_form");
        Metric(folded, "l0").Should().BeApproximately(Metric(training, "l0"), 1e-9);
        Metric(folded, "mse")
            .Should()
            .BeApproximately(Metric(training, "mse"), 1e-5 * Metric(training, "mse"));

        // Off (the default): one SAE folder, no training form, and a different trajectory.
        var off = Run(Train("topk", "off", "--mode", "saelens"));
        off.Code.Should().Be(0, off.Err);
        Directory.Exists(P("off/training_form")).Should().BeFalse();
        File.ReadAllBytes(P("off/sae_weights.safetensors"))
            .Should()
            .NotEqual(File.ReadAllBytes(P("sl/sae_weights.safetensors")));

        // dictionary_learning mode does not rescale: no training form either.
        var dl = Run(Train("topk", "dl"));
        dl.Code.Should().Be(0, dl.Err);
        Directory.Exists(P("dl/training_form")).Should().BeFalse();
    }

    [Theory]
    [InlineData("topk", "dictionary-learning", "applies to --mode saelens")]
    [InlineData("batchtopk", "dictionary-learning", "applies to --mode saelens")]
    [InlineData("gated", "saelens", "TopK family")]
    public void The_option_is_refused_where_it_does_not_apply_and_nothing_is_written(
        string arch,
        string mode,
        string message
    )
    {
        string[] args = Train(arch, "bad", "--mode", mode, "--rescale-acts-by-decoder-norm", "true");
        if (arch == "gated")
        {
            args = [.. args.Where((a, i) => a != "--k" && (i == 0 || args[i - 1] != "--k"))];
        }

        var bad = Run(args);
        bad.Code.Should().NotBe(0);
        bad.Err.Should().Contain(message);
        bad.Err.Should().NotContain("   at ", "no stack trace");
        Directory.Exists(P("bad")).Should().BeFalse("a refused run writes nothing");
    }
}
