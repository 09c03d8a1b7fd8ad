using IlgpuSae.Lm;
using IlgpuSae.Verification;

namespace IlgpuSae.Tests.Lm;

/// <summary>Small model shapes covering both families and their options, plus comparison helpers.</summary>
public static class LmTestData
{
    public static string Repo([System.Runtime.CompilerServices.CallerFilePath] string here = "") =>
        Path.GetFullPath(Path.Combine(Path.GetDirectoryName(here)!, "..", "..", ".."));

    public static string BundledModel => Path.Combine(Repo(), "data", "lm");

    public static string HeldOut => Path.Combine(Repo(), "data", "corpus", "heldout.txt.gz");

    public static IReadOnlyDictionary<string, LmConfig> Configs { get; } =
        new Dictionary<string, LmConfig>
        {
            ["gpt2"] = new()
            {
                Architecture = LmArchitecture.Gpt2,
                VocabSize = 97,
                ContextLength = 12,
                DModel = 32,
                Layers = 2,
                Heads = 4,
                DMlp = 48,
                Activation = LmActivation.GeluTanh,
                BosTokenId = 1,
                EosTokenId = 2,
            },
            ["neox-parallel-partial-rotary"] = new()
            {
                Architecture = LmArchitecture.GptNeoX,
                VocabSize = 101,
                ContextLength = 16,
                DModel = 32,
                Layers = 2,
                Heads = 2,
                DMlp = 40,
                Activation = LmActivation.GeluErf,
                TiedEmbeddings = false,
                ParallelResidual = true,
                RotaryFraction = 0.25,
                BosTokenId = 0,
            },
            ["neox-sequential-full-rotary"] = new()
            {
                Architecture = LmArchitecture.GptNeoX,
                VocabSize = 64,
                ContextLength = 16,
                DModel = 24,
                Layers = 1,
                Heads = 3,
                DMlp = 36,
                Activation = LmActivation.Relu,
                TiedEmbeddings = false,
                ParallelResidual = false,
                RotaryFraction = 1.0,
                RotaryBase = 500,
                BosTokenId = 0,
            },
        };

    public static int[] RandomTokens(LmConfig config, int batch, int seqLen, int seed)
    {
        var rng = new Random(seed);
        var tokens = new int[batch * seqLen];
        for (int i = 0; i < tokens.Length; i++)
        {
            tokens[i] = i % seqLen == 0 ? config.BosTokenId : rng.Next(config.VocabSize);
        }

        return tokens;
    }

    /// <summary>Largest |a − r| / (atol + rtol·|r|) and its index (≤ 1 passes).</summary>
    public static (double Ratio, int Index) WorstRatio(float[] actual, double[] reference, Tolerance tol)
    {
        if (actual.Length != reference.Length)
        {
            throw new ArgumentException(
                $"{actual.Length} values against {reference.Length} reference values."
            );
        }

        double worst = 0;
        int at = -1;
        for (int i = 0; i < actual.Length; i++)
        {
            if (!float.IsFinite(actual[i]))
            {
                return (double.PositiveInfinity, i);
            }

            double ratio =
                Math.Abs(actual[i] - reference[i]) / (tol.Atol + tol.Rtol * Math.Abs(reference[i]));
            if (ratio > worst)
            {
                worst = ratio;
                at = i;
            }
        }

        return (worst, at);
    }
}
