using FluentAssertions;
using ILGPU;
using ILGPU.Runtime;
using IlgpuSae.Backends;
using IlgpuSae.IO;
using IlgpuSae.Lm;
using IlgpuSae.Tests.Infrastructure;
using Xunit;

namespace IlgpuSae.Tests.Lm;

/// <summary>
/// The ILGPU transformer against the double-precision reference (random weights, both families and
/// their options) and against the golden outputs PyTorch wrote for the bundled model, on every backend.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class LmForwardTests(DeviceFixture devices)
{
    public static TheoryData<Target, string> Cases()
    {
        var data = new TheoryData<Target, string>();
        foreach (var t in Targets.All())
        {
            foreach (var name in LmTestData.Configs.Keys)
            {
                data.Add(t, name);
            }
        }

        return data;
    }

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void Device_forward_matches_the_double_reference_at_every_site_and_the_logits(
        Target target,
        string configName
    )
    {
        var device = devices.Get(target);
        var config = LmTestData.Configs[configName];
        var weights = LmWeights.Random(config, seed: 11);
        using var model = LanguageModel.FromWeights(device, config, weights);
        const int batch = 3;
        int seqLen = config.ContextLength - 3;
        var tokens = LmTestData.RandomTokens(config, batch, seqLen, seed: 5);

        var reference = new Dictionary<string, double[]>();
        var refLogits = LmReference.Forward(
            config,
            weights,
            tokens,
            batch,
            (name, v) => reference[name] = (double[])v.Clone()
        );
        var captured = new Dictionary<string, float[]>();
        var hooks = model.Sites.ToDictionary(
            s => s.Name,
            s =>
                (SiteHook)(
                    v =>
                    {
                        var host = new float[v.Length];
                        v.Data.CopyToCPU(device.Stream, host);
                        device.Synchronize();
                        captured[s.Name] = host;
                    }
                )
        );
        var logits = model.Logits(tokens, batch, hooks);

        captured
            .Keys.Should()
            .BeEquivalentTo(reference.Keys, "the device and the reference expose the same sites");
        foreach (var site in model.Sites)
        {
            var (ratio, at) = LmTestData.WorstRatio(
                captured[site.Name],
                reference[site.Name],
                TestTolerances.LmForward
            );
            ratio
                .Should()
                .BeLessThanOrEqualTo(1, $"{site.Name} on {target} ({configName}) at flat index {at}");
            captured[site.Name].Length.Should().Be(batch * seqLen * site.Width);
        }

        var (logitRatio, logitAt) = LmTestData.WorstRatio(logits, refLogits, TestTolerances.LmForward);
        logitRatio
            .Should()
            .BeLessThanOrEqualTo(1, $"logits on {target} ({configName}) at flat index {logitAt}");
    }

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void Replacing_a_site_changes_everything_downstream_exactly_as_in_the_reference(
        Target target,
        string configName
    )
    {
        var device = devices.Get(target);
        var config = LmTestData.Configs[configName];
        var weights = LmWeights.Random(config, seed: 3);
        using var model = LanguageModel.FromWeights(device, config, weights);
        var tokens = LmTestData.RandomTokens(config, 2, config.ContextLength, seed: 8);
        string site = $"blocks.0.{(configName == "gpt2" ? "mlp.hook_post" : "attn.hook_z")}";

        // Replace with a scaled copy: x ← 0.5·x + 0.1.
        var refLogits = LmReference.Forward(
            config,
            weights,
            tokens,
            2,
            (name, v) =>
            {
                if (name == site)
                {
                    for (int i = 0; i < v.Length; i++)
                    {
                        v[i] = 0.5 * v[i] + 0.1;
                    }
                }
            }
        );
        var logits = model.Logits(
            tokens,
            2,
            new Dictionary<string, SiteHook>
            {
                [site] = v =>
                {
                    device.Ops.Map(v.Data, v.Data, new IlgpuSae.Kernels.Scale(0.5f));
                    using var tenth = device.Upload(Enumerable.Repeat(0.1f, v.Cols).ToArray(), 1, v.Cols);
                    device.Ops.MapBroadcastRows<IlgpuSae.Kernels.Add>(v, tenth.Data, v);
                    device.Synchronize();
                },
            }
        );
        var (ratio, at) = LmTestData.WorstRatio(logits, refLogits, TestTolerances.LmForward);
        ratio.Should().BeLessThanOrEqualTo(1, $"patched logits at {at}");
        var clean = model.Logits(tokens, 2);
        clean.Should().NotEqual(logits, "the replacement must reach the logits");
    }

    [SkippableTheory]
    [MemberData(nameof(Targets.Data), MemberType = typeof(Targets))]
    public void Bundled_model_reproduces_the_PyTorch_golden_logits_and_sites(Target target)
    {
        var device = devices.Get(target);
        using var model = LanguageModel.Load(device, LmTestData.BundledModel);
        using var golden = new SafetensorsFile(Path.Combine(LmTestData.BundledModel, "golden.safetensors"));
        var ids = golden.ReadInt64("input_ids").Select(v => (int)v).ToArray();
        int batch = (int)golden["input_ids"].Shape[0];
        var captured = new Dictionary<string, float[]>();
        var hooks = model
            .Sites.Where(s => golden.Entries.ContainsKey(s.Name))
            .ToDictionary(
                s => s.Name,
                s =>
                    (SiteHook)(
                        v =>
                        {
                            var host = new float[v.Length];
                            v.Data.CopyToCPU(device.Stream, host);
                            device.Synchronize();
                            captured[s.Name] = host;
                        }
                    )
            );
        hooks.Should().HaveCount(10, "golden holds five sites in each of two blocks");
        var logits = model.Logits(ids, batch, hooks);

        foreach (var (name, values) in captured)
        {
            var expected = golden.ReadFloats(name).Select(v => (double)v).ToArray();
            var (ratio, at) = LmTestData.WorstRatio(values, expected, TestTolerances.LmGolden);
            ratio.Should().BeLessThanOrEqualTo(1, $"{name} on {target} at {at}");
        }

        var (logitRatio, logitAt) = LmTestData.WorstRatio(
            logits,
            golden.ReadFloats("logits").Select(v => (double)v).ToArray(),
            TestTolerances.LmGolden
        );
        logitRatio.Should().BeLessThanOrEqualTo(1, $"logits on {target} at {logitAt}");
    }

    [SkippableFact]
    public void A_GPT2_small_shaped_model_with_random_weights_loads_and_runs()
    {
        var device = devices.Get(new Target(BackendKind.Cpu, KernelVariant.CpuShaped));
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
            EosTokenId = 50256,
        };
        using var temp = new TempFolder("ilgpusae-gpt2-small-");
        var dir = temp.FullName;
        // Write it as a Hugging Face folder so the loader's name mapping and shape checks run on the real
        // layout.
        LmFiles.SaveGpt2(dir, config, LmWeights.Random(config, seed: 1));
        using var model = LanguageModel.Load(device, dir);
        model.Sites.Should().HaveCount(12 * 7);
        var tokens = new[] { 50256, 464, 2068, 7586, 21831, 18045, 625, 262 };
        var logits = model.Logits(tokens, 1);
        logits.Should().HaveCount(8 * 50257).And.OnlyContain(v => float.IsFinite(v));
        var z = model.Capture(tokens, 1, "blocks.11.attn.hook_z");
        z.Should().HaveCount(8 * 768).And.OnlyContain(v => float.IsFinite(v));
    }
}
