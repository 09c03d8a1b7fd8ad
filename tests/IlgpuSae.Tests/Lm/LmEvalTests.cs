using System.Text.Json.Nodes;
using FluentAssertions;
using IlgpuSae.Backends;
using IlgpuSae.IO;
using IlgpuSae.Lm;
using IlgpuSae.Sae;
using IlgpuSae.Tests.Infrastructure;
using Xunit;

namespace IlgpuSae.Tests.Lm;

/// <summary>Tokenizers, loss recovered (identity, zero-ablation, a known-error SAE), file round trips and bad
/// input.</summary>
[Collection(DeviceCollection.Name)]
public sealed class LmEvalTests(DeviceFixture devices)
{
    private static readonly Target Cpu = new(BackendKind.Cpu, KernelVariant.CpuShaped);

    private static (int[] Ids, int Batch, int Length, JsonNode Losses) Golden()
    {
        using var golden = new SafetensorsFile(Path.Combine(LmTestData.BundledModel, "golden.safetensors"));
        var shape = golden["input_ids"].Shape;
        return (
            golden.ReadInt64("input_ids").Select(v => (int)v).ToArray(),
            (int)shape[0],
            (int)shape[1],
            JsonNode.Parse(golden.Metadata["losses"])!
        );
    }

    [Fact]
    public void SentencePiece_tokenizer_matches_the_reference_library_on_every_golden_case()
    {
        var config = LmConfig.Load(Path.Combine(LmTestData.BundledModel, "config.json"));
        var tokenizer = LmTokenizer.Load(LmTestData.BundledModel, config);
        tokenizer.Kind.Should().Be("sentencepiece");
        var golden = JsonNode.Parse(
            File.ReadAllText(Path.Combine(LmTestData.BundledModel, "tokenizer-golden.json"))
        )!;
        var cases = golden["cases"]!.AsArray();
        cases.Count.Should().BeGreaterThan(10);
        var mismatches = new List<string>();
        foreach (var c in cases)
        {
            var text = c!["text"]!.GetValue<string>();
            var expected = c["ids"]!.AsArray().Select(v => v!.GetValue<int>()).ToArray();
            var actual = tokenizer.Encode(text);
            if (!actual.SequenceEqual(expected))
            {
                mismatches.Add(
                    $"'{text[..Math.Min(40, text.Length)].ReplaceLineEndings("\\n")}': expected [{string.Join(", ", expected)}], got [{string.Join(", ", actual)}]"
                );
            }
        }

        mismatches
            .Should()
            .BeEmpty(
                "Microsoft.ML.Tokenizers, with its one-character workaround, must agree with SentencePiece"
            );
    }

    [Fact]
    public void GPT2_sized_models_without_tokenizer_files_use_the_packaged_GPT2_encoding()
    {
        var config = new LmConfig
        {
            Architecture = LmArchitecture.Gpt2,
            VocabSize = 50257,
            ContextLength = 1024,
            DModel = 768,
            Layers = 12,
            Heads = 12,
            DMlp = 3072,
            BosTokenId = 50256,
        };
        using var dir = new TempFolder("ilgpusae-tok-");
        var tokenizer = LmTokenizer.Load(dir.FullName, config);
        tokenizer.Encode("Hello world").Should().Equal(15496, 995);
        tokenizer.Decode([15496, 995]).Should().Be("Hello world");
    }

    [SkippableTheory]
    [MemberData(nameof(Targets.Data), MemberType = typeof(Targets))]
    public void Identity_splice_gives_exactly_the_clean_loss_and_zero_ablation_matches_the_golden_losses(
        Target target
    )
    {
        var device = devices.Get(target);
        using var model = LanguageModel.Load(device, LmTestData.BundledModel);
        var (ids, batch, length, losses) = Golden();
        var goldenOptions = new SpliceOptions
        {
            SpliceSpecialTokens = true,
            CountSpecialPositions = true,
            Batch = batch,
        };
        // ILGPU's CPU accelerator simulates GPU-shaped (tiled, barrier) kernels thread by thread, ~40×
        // slower: two sites there.
        bool slow = target is { Backend: BackendKind.Cpu, Variant: KernelVariant.GpuShaped };
        var sites = model.Sites.Where(s => losses["zero:" + s.Name] is not null).ToList();
        sites.Should().HaveCount(10);
        foreach (
            var site in slow
                ? sites.Where(s => s.Name is "blocks.0.hook_mlp_out" or "blocks.1.attn.hook_z")
                : sites
        )
        {
            var same = DownstreamEvaluator.Evaluate(
                model,
                site.Name,
                (acts, _) => acts,
                ids,
                length,
                goldenOptions
            );
            same.CeLossWithSae.Should()
                .Be(same.CeLossWithoutSae, $"identity at {site.Name} is the clean model");
            same.KlDivWithSae.Should().Be(0);
            same.CeLossScore.Should().Be(1);
            same.CountedTokens.Should().Be(batch * (length - 1));
            same.CeLossWithoutSae.Should()
                .BeApproximately(
                    losses["clean"]!.GetValue<double>(),
                    TestTolerances.CleanLossVsPyTorch,
                    "clean loss against PyTorch"
                );
            same.CeLossWithAblation.Should()
                .BeApproximately(
                    losses["zero:" + site.Name]!.GetValue<double>(),
                    TestTolerances.AblatedLossVsPyTorch,
                    $"zero-ablated {site.Name} against PyTorch"
                );
        }

        // A copy in another buffer (what an SAE returns) splices to the same numbers.
        using var copy = device.Allocate(batch * length, model.Config.DModel);
        var viaCopy = DownstreamEvaluator.Evaluate(
            model,
            "blocks.0.hook_resid_post",
            (acts, _) =>
            {
                device.Ops.Copy(acts.Data, copy.Data);
                return copy;
            },
            ids,
            length,
            new SpliceOptions { Batch = batch }
        );
        viaCopy.CeLossWithSae.Should().Be(viaCopy.CeLossWithoutSae);
    }

    [SkippableTheory]
    [MemberData(nameof(Targets.Data), MemberType = typeof(Targets))]
    public void A_hand_made_SAE_with_a_known_error_gives_the_expected_loss_recovered(Target target)
    {
        var device = devices.Get(target);
        using var model = LanguageModel.Load(device, LmTestData.BundledModel);
        var (ids, batch, length, _) = Golden();
        const string site = "blocks.0.hook_mlp_out";
        int d = model.Config.DModel;

        // Standard SAE with W_enc = I, b = 0, W_dec = ½·I: x̂ = ½·relu(x) exactly.
        var config = new SaeConfig
        {
            Architecture = SaeArchitecture.Standard,
            DIn = d,
            DSae = d,
        };
        using var sae = SparseAutoencoder.CreateEmpty(device, config);
        var flat = new float[sae.Parameters.Layout.Length];
        var enc = sae.Parameters.Layout["W_enc"];
        var dec = sae.Parameters.Layout["W_dec"];
        for (int i = 0; i < d; i++)
        {
            flat[enc.Offset + i * d + i] = 1f;
            flat[dec.Offset + i * d + i] = 0.5f;
        }

        sae.Parameters.Upload(flat);
        var metrics = DownstreamEvaluator.Evaluate(
            model,
            site,
            sae,
            ids,
            length,
            new SpliceOptions { Batch = batch }
        );

        var expected = KnownErrorReference(ids, batch, length, site);
        metrics
            .CeLossWithoutSae.Should()
            .BeApproximately(expected.Clean, TestTolerances.LossVsDoubleReference);
        metrics.CeLossWithSae.Should().BeApproximately(expected.Sae, TestTolerances.LossVsDoubleReference);
        metrics
            .CeLossWithAblation.Should()
            .BeApproximately(expected.Zero, TestTolerances.LossVsDoubleReference);
        metrics
            .CeLossScore.Should()
            .BeApproximately(
                (expected.Zero - expected.Sae) / (expected.Zero - expected.Clean),
                TestTolerances.LossRecoveredScore
            );
        metrics
            .CeLossScore.Should()
            .BeInRange(0.05, 0.98, "a half-scale reconstruction recovers part of the loss");
        metrics.KlDivWithSae.Should().BeGreaterThan(0).And.BeLessThan(metrics.KlDivWithAblation);
        metrics.Reconstruction.Should().NotBeNull();
        metrics
            .Reconstruction!.Tokens.Should()
            .Be(batch * (length - 1), "BOS positions are not replaced and not measured");
        metrics.Reconstruction.L0.Should().BeGreaterThan(0);
    }

    private static readonly Dictionary<string, (double Clean, double Sae, double Zero)> KnownErrorCache = [];

    /// <summary>The same three losses from the double-precision reference (computed once).</summary>
    private static (double Clean, double Sae, double Zero) KnownErrorReference(
        int[] ids,
        int batch,
        int length,
        string site
    )
    {
        lock (KnownErrorCache)
        {
            if (KnownErrorCache.TryGetValue(site, out var hit))
            {
                return hit;
            }

            var config = LmConfig.Load(Path.Combine(LmTestData.BundledModel, "config.json"));
            var weights = LmWeights.Load(LmTestData.BundledModel, config);
            var targets = ids.Select((t, n) => n % length == length - 1 ? -1 : ids[n + 1]).ToArray();
            double Loss(Func<double, double>? f) =>
                LmReference.MeanCrossEntropy(
                    LmReference.Forward(
                        config,
                        weights,
                        ids,
                        batch,
                        (name, v) =>
                        {
                            if (name != site || f is null)
                            {
                                return;
                            }

                            int d = v.Length / ids.Length;
                            for (int n = 0; n < ids.Length; n++)
                            {
                                if (ids[n] == config.BosTokenId)
                                {
                                    // special positions keep their clean activations (default SpliceOptions)
                                    continue;
                                }

                                for (int j = 0; j < d; j++)
                                {
                                    v[n * d + j] = f(v[n * d + j]);
                                }
                            }
                        }
                    ),
                    targets,
                    config.VocabSize
                );
            var result = (Loss(null), Loss(x => 0.5 * Math.Max(x, 0)), Loss(_ => 0));
            KnownErrorCache[site] = result;
            return result;
        }
    }

    [SkippableFact]
    public void NeoX_checkpoints_round_trip_through_the_Hugging_Face_layout()
    {
        var device = devices.Get(Cpu);
        var config = LmTestData.Configs["neox-parallel-partial-rotary"];
        var weights = LmWeights.Random(config, seed: 4);
        using var temp = new TempFolder("ilgpusae-neox-");
        var dir = temp.FullName;
        LmFiles.SaveNeoX(dir, config, weights);
        using var loaded = LanguageModel.Load(device, dir);
        using var direct = LanguageModel.FromWeights(device, config, weights);
        loaded.Config.Should().BeEquivalentTo(config);
        var tokens = LmTestData.RandomTokens(config, 2, 10, seed: 1);
        loaded.Logits(tokens, 2).Should().Equal(direct.Logits(tokens, 2));
    }

    [SkippableFact]
    public void Bad_models_and_inputs_are_rejected_with_clear_errors()
    {
        var device = devices.Get(Cpu);
        var config = LmTestData.Configs["gpt2"];
        using (var temp = new TempFolder("ilgpusae-bad-lm-"))
        {
            var dir = temp.FullName;
            LmFiles.SaveGpt2(dir, config, LmWeights.Random(config, seed: 2));
            var configPath = Path.Combine(dir, "config.json");
            var original = File.ReadAllText(configPath);

            File.WriteAllText(
                configPath,
                original.Replace("\"gpt2\"", "\"llama\"", StringComparison.Ordinal)
            );
            FluentActions
                .Invoking(() => LanguageModel.Load(device, dir))
                .Should()
                .Throw<InvalidDataException>()
                .WithMessage("*unknown architecture*llama*");

            File.WriteAllText(
                configPath,
                original.Replace("\"n_layer\": 2", "\"n_layer\": 3", StringComparison.Ordinal)
            );
            FluentActions
                .Invoking(() => LanguageModel.Load(device, dir))
                .Should()
                .Throw<InvalidDataException>()
                .WithMessage("*missing tensor 'h.2.ln_1.weight'*");

            File.WriteAllText(
                configPath,
                original.Replace("\"n_inner\": 48", "\"n_inner\": 50", StringComparison.Ordinal)
            );
            FluentActions
                .Invoking(() => LanguageModel.Load(device, dir))
                .Should()
                .Throw<InvalidDataException>()
                .WithMessage("*'h.0.mlp.c_fc.weight' is [32, 48], expected [32, 50]*");

            File.WriteAllText(configPath, original);
            File.Delete(Path.Combine(dir, "model.safetensors"));
            FluentActions
                .Invoking(() => LanguageModel.Load(device, dir))
                .Should()
                .Throw<InvalidDataException>()
                .WithMessage("*no *.safetensors*");
            FluentActions
                .Invoking(() => LanguageModel.Load(device, Path.Combine(dir, "nowhere")))
                .Should()
                .Throw<DirectoryNotFoundException>();
        }

        using var model = LanguageModel.FromWeights(device, config, LmWeights.Random(config, 1));
        FluentActions
            .Invoking(() => model.Site("blocks.2.hook_resid_post"))
            .Should()
            .Throw<ArgumentException>()
            .WithMessage("*has 2 blocks*");
        FluentActions
            .Invoking(() => model.Site("blocks.0.hook_nonsense"))
            .Should()
            .Throw<ArgumentException>()
            .WithMessage("*not a hook site*mlp.hook_post*");
        FluentActions
            .Invoking(() => model.Logits(new int[2 * 13], 2))
            .Should()
            .Throw<ArgumentException>()
            .WithMessage("*longer than the model's context of 12*");
        FluentActions
            .Invoking(() => model.Logits([1, 2, 97], 1))
            .Should()
            .Throw<ArgumentException>()
            .WithMessage("*Token 97*outside the vocabulary*");
        FluentActions
            .Invoking(() => model.Logits([1, 2, 3], 2))
            .Should()
            .Throw<ArgumentException>()
            .WithMessage("*equal*length*");

        using (var temp = new TempFolder("ilgpusae-empty-corpus-"))
        {
            var empty = temp.Path("empty.txt");
            File.WriteAllText(empty, "\n\n  \n");
            var bundled = LmConfig.Load(Path.Combine(LmTestData.BundledModel, "config.json"));
            var tokenizer = LmTokenizer.Load(LmTestData.BundledModel, bundled);
            FluentActions
                .Invoking(() => TokenCorpus.Load(empty, tokenizer, 1))
                .Should()
                .Throw<InvalidDataException>()
                .WithMessage("*is empty*");
            FluentActions
                .Invoking(() => TokenCorpus.Load(empty + ".missing", tokenizer, 1))
                .Should()
                .Throw<FileNotFoundException>();
        }
    }
}
