using FluentAssertions;
using IlgpuSae.Sae;
using IlgpuSae.SaeBench;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Tests.Sae;
using IlgpuSae.Training;
using Xunit;

namespace IlgpuSae.Tests.SaeBench;

/// <summary>
/// <see cref="SaeBenchWeights"/> (device, blockwise Gram) against a double-precision reference of SAEBench's
/// <c>get_featurewise_weight_based_metrics</c> and <c>calculate_max_cosine_sim</c>, on every backend and
/// kernel shape, with block sizes that do and do not divide M, and with zero columns.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class SaeBenchWeightsTests(DeviceFixture devices)
{
    private const double Tol = 2e-5;

    public static TheoryData<Target, string, int> Cases()
    {
        var data = new TheoryData<Target, string, int>();
        foreach (var target in Targets.All())
        {
            foreach (
                var (arch, block) in new[] { ("standard", 0), ("gated", 4), ("topk", 1), ("standard", 37) }
            )
            {
                data.Add(target, arch, block);
            }
        }

        return data;
    }

    private static double[] Column(double[] wEnc, int d, int m, int i) =>
        [.. Enumerable.Range(0, d).Select(r => wEnc[r * m + i])];

    private static double[] Row(double[] wDec, int d, int i) => wDec.AsSpan(i * d, d).ToArray();

    private static double Norm(double[] v) => Math.Sqrt(v.Sum(x => x * x));

    private static double[] Unit(double[] v) => [.. v.Select(x => x / Math.Max(Norm(v), 1e-12))];

    private static double Dot(double[] a, double[] b) => a.Zip(b, (u, v) => u * v).Sum();

    private static double[] MaxCos(double[][] vectors) =>
        [
            .. vectors.Select(
                (v, i) =>
                    vectors.Select((w, j) => j == i ? double.NegativeInfinity : Dot(Unit(v), Unit(w))).Max()
            ),
        ];

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void Weight_metrics_match_a_double_precision_reference(Target target, string arch, int block)
    {
        var device = devices.Get(target);
        const int d = 9,
            m = 37;
        var config = SaeRecipe.Parse(arch, k: arch == "topk" ? 5 : 0).Config(d, m);
        var (p, _) = SaeTestData.Generate(config, 1, seed: 17);
        // Latent 3: a zero encoder column and decoder row; latent 5: the same direction as latent 6.
        for (int r = 0; r < d; r++)
        {
            p["W_enc"][r * m + 3] = 0;
            p["W_enc"][r * m + 5] = 2 * p["W_enc"][r * m + 6];
        }

        Array.Clear(p["W_dec"], 3 * d, d);
        using var sae = SparseAutoencoder.CreateEmpty(device, config);
        SaeTestData.Load(sae, p);
        var p32 = p.ToDictionary(kv => kv.Key, kv => kv.Value.Select(v => (double)(float)v).ToArray());

        var got = SaeBenchWeights.Compute(sae, block);

        var enc = Enumerable.Range(0, m).Select(i => Column(p32["W_enc"], d, m, i)).ToArray();
        var dec = Enumerable.Range(0, m).Select(i => Row(p32["W_dec"], d, i)).ToArray();
        var maxEnc = MaxCos(enc);
        var maxDec = MaxCos(dec);
        var bias = arch == "gated" ? p32["b_mag"] : p32["b_enc"];
        for (int i = 0; i < m; i++)
        {
            got.EncoderNorm[i].Should().BeApproximately(Norm(enc[i]), Tol, $"encoder_norm[{i}]");
            got.EncoderBias[i].Should().Be(bias[i], $"encoder_bias[{i}]");
            got.MaxEncoderCosineSim[i]
                .Should()
                .BeApproximately(maxEnc[i], Tol, $"max_encoder_cosine_sim[{i}]");
            got.MaxDecoderCosineSim[i]
                .Should()
                .BeApproximately(maxDec[i], Tol, $"max_decoder_cosine_sim[{i}]");
            if (i == 3)
            {
                double.IsNaN(got.EncoderDecoderCosineSim[i])
                    .Should()
                    .BeTrue("a zero column has no direction");
            }
            else
            {
                got.EncoderDecoderCosineSim[i]
                    .Should()
                    .BeApproximately(
                        Dot(Unit(enc[i]), Unit(dec[i])),
                        Tol,
                        $"encoder_decoder_cosine_sim[{i}]"
                    );
            }
        }

        got.MaxEncoderCosineSim[5].Should().BeApproximately(1, Tol, "latent 5's encoder is parallel to 6's");
        got.MaxEncoderCosineSim[3].Should().BeGreaterThanOrEqualTo(0, "a zero column has cosine 0 with all");
    }

    [SkippableFact]
    public void A_single_latent_has_no_other_to_compare_with()
    {
        var device = devices.Get(
            new Target(IlgpuSae.Backends.BackendKind.Cpu, IlgpuSae.Backends.KernelVariant.CpuShaped)
        );
        using var sae = SparseAutoencoder.Create(device, SaeRecipe.Parse("standard").Config(4, 1), seed: 3);
        var got = SaeBenchWeights.Compute(sae);
        got.MaxEncoderCosineSim.Should().Equal(double.NegativeInfinity);
        got.EncoderDecoderCosineSim[0].Should().BeApproximately(1, 1e-6, "W_enc = W_decᵀ at initialisation");
    }
}
