using System.Text.Json.Nodes;
using FluentAssertions;
using IlgpuSae.Backends;
using IlgpuSae.Data;
using IlgpuSae.IO;
using IlgpuSae.Lm;
using IlgpuSae.Sae;
using IlgpuSae.Study.Dashboards;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Tests.Lm;
using Xunit;

namespace IlgpuSae.Tests.Dashboards;

/// <summary>Dashboards on the bundled model, checked against an independent full <c>encode</c> of the same
/// tokens.</summary>
public sealed class DashboardTests(DeviceFixture devices) : IClassFixture<DeviceFixture>, IDisposable
{
    private readonly TempFolder _temp = new("ilgpusae-dashboard-");

    public void Dispose() => _temp.Dispose();

    public static TheoryData<Target> CpuShapedTargets() =>
        [
            new Target(BackendKind.Cpu, KernelVariant.CpuShaped),
            new Target(BackendKind.OpenCL, KernelVariant.CpuShaped),
        ];

    [SkippableTheory]
    [MemberData(nameof(CpuShapedTargets))]
    public void Top_examples_and_histograms_equal_those_of_a_full_encode_of_the_same_tokens(Target target)
    {
        var device = devices.Get(target);
        foreach (
            var (arch, name) in new[] { (SaeArchitecture.TopK, "topk"), (SaeArchitecture.Gated, "gated") }
        )
        {
            var saeDir = DashboardTestData.SaveRandomSae(device, _temp.Path($"sae-{name}"), arch, 192, 7);
            int[] features = [0, 5, 17, 100, 191];
            var request = new DashboardRequest
            {
                Sae = saeDir,
                Model = LmTestData.BundledModel,
                Corpus = LmTestData.HeldOut,
                Tokens = 1200,
                Context = 64,
                LmBatch = 8,
                Features = features,
            };
            var result = DashboardBuilder.Build(device, request, _temp.Path($"dash-{name}"));
            result.Records.Should().HaveCount(features.Length);

            // Independent: the activation rows of the same tokens (ActivationPlan, special tokens dropped as
            // the activations command does), written to .npy and encoded whole by SparseEncoder.
            using var model = LanguageModel.Load(device, LmTestData.BundledModel);
            var plan = ActivationPlan.Create(
                model,
                LmTokenizer.Load(LmTestData.BundledModel, model.Config),
                new ActivationRequest
                {
                    Site = DashboardTestData.Site,
                    Corpus = LmTestData.HeldOut,
                    Tokens = 1200,
                    ContextSize = 64,
                    Batch = 8,
                }
            );
            var rows = new List<float>();
            for (int c = 0; c < plan.Contexts; c += 8)
            {
                rows.AddRange(plan.Compute(c, Math.Min(8, plan.Contexts - c)));
            }

            var npy = _temp.Path($"acts-{name}.npy");
            Npy.WriteFloats(npy, [.. rows], rows.Count / 128, 128);
            using var sae = SaeFiles.Load(device, saeDir);
            using var source = ActivationSources.Open(npy);
            var (indptr, indices, values) = SparseEncoder.Encode(sae, source, 256, 1200);
            indptr.Length.Should().Be(1201);
            if (arch == SaeArchitecture.TopK)
            {
                (indptr[^1] / 1200.0).Should().BeLessThanOrEqualTo(8, "TopK keeps at most k per token");
            }

            foreach (var record in result.Records)
            {
                int i = record.Index!.Value;
                var acts = new List<(float Value, long Row)>();
                for (int r = 0; r < 1200; r++)
                {
                    for (long p = indptr[r]; p < indptr[r + 1]; p++)
                    {
                        if (indices[p] == i)
                        {
                            acts.Add((values[p], r));
                        }
                    }
                }

                record.Tokens.Should().Be(1200);
                record.Density.Should().BeApproximately(acts.Count / 1200.0, 1e-12, $"{name} feature {i}");
                record
                    .ActivationHistogram.BarHeights.Sum()
                    .Should()
                    .Be(acts.Count, "the histogram counts every non-zero");
                record.Intervals.Sum(g => g.BinContains).Should().BeApproximately(acts.Count / 1200.0, 1e-9);
                var expected = acts.OrderByDescending(a => a.Value).ThenBy(a => a.Row).Take(20).ToArray();
                record
                    .Top.Select(e => e.Row)
                    .Should()
                    .Equal(expected.Select(e => e.Row), $"{name} feature {i}");
                for (int t = 0; t < expected.Length; t++)
                {
                    record.Top[t].Value.Should().BeApproximately(expected[t].Value, 1e-4f);
                    record.Top[t].Values[record.Top[t].MaxIndex].Should().Be(record.Top[t].Value);
                    record.Top[t].Tokens[record.Top[t].MaxIndex].Should().NotBe("<bos>");
                }

                if (acts.Count > 0)
                {
                    record.MaxAct.Should().BeApproximately(acts.Max(a => a.Value), 1e-4f);
                    foreach (var g in record.Intervals)
                    {
                        g.Examples.All(e => e.Value > g.BinMin && e.Value <= g.BinMax * (1 + 1e-6))
                            .Should()
                            .BeTrue("an interval's examples lie in it");
                        g.Examples.Length.Should().Be((int)Math.Min(5, Math.Round(g.BinContains * 1200)));
                    }
                }

                record.Logits!.PosValues.Should().BeInDescendingOrder();
                record.Logits.Histogram.BarHeights.Sum().Should().Be(model.Config.VocabSize);
            }
        }
    }

    [Fact]
    public void Logit_effect_is_the_decoder_row_times_the_unembedding_through_W_out_at_mlp_post()
    {
        var device = devices.Get(new Target(BackendKind.Cpu, KernelVariant.CpuShaped));
        using var model = LanguageModel.Load(device, LmTestData.BundledModel);
        var weights = LmWeights.Load(LmTestData.BundledModel, model.Config);
        int d = model.Config.DModel,
            m = model.Config.DMlp,
            vocab = model.Config.VocabSize;
        var rng = new SplitMix64(3);
        var decoder = Enumerable.Range(0, 4 * m).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        var effects = DashboardBuilder.LogitEffects(
            device,
            model,
            LmTestData.BundledModel,
            model.Site("blocks.1.mlp.hook_post"),
            decoder,
            m,
            [1, 3]
        );
        foreach (var (slot, feature) in new[] { (0, 1), (1, 3) })
        {
            var resid = new double[d];
            for (int k = 0; k < m; k++)
            {
                for (int j = 0; j < d; j++)
                {
                    resid[j] += decoder[feature * m + k] * (double)weights.Blocks[1].MlpOutWeight[k * d + j];
                }
            }

            foreach (int v in new[] { 0, 17, vocab - 1 })
            {
                double expected = 0;
                for (int j = 0; j < d; j++)
                {
                    expected += resid[j] * weights.Unembedding[v * d + j];
                }

                effects[slot]![v].Should().BeApproximately((float)expected, 1e-3f);
            }
        }
    }
}
