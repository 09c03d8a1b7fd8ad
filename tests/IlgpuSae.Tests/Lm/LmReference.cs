using IlgpuSae.Lm;

namespace IlgpuSae.Tests.Lm;

/// <summary>
/// A plain double-precision forward pass of <see cref="LanguageModel"/>'s architectures, written for clarity,
/// that the ILGPU kernels are checked against. Hooks see (and may replace) each site's activations
/// [B·T, width] as doubles.
/// </summary>
public static class LmReference
{
    /// <summary>Logits [B·T, V] of <paramref name="tokens"/> (<paramref name="batch"/> equal-length
    /// sequences).</summary>
    /// <param name="config">Model shape.</param>
    /// <param name="w">Weights.</param>
    /// <param name="tokens">Token ids, row-major [B, T].</param>
    /// <param name="batch">Number of sequences B.</param>
    /// <param name="hook">Called as (site name, activations); may modify the array in place.</param>
    public static double[] Forward(
        LmConfig config,
        LmWeights w,
        int[] tokens,
        int batch,
        Action<string, double[]>? hook = null
    )
    {
        int t = tokens.Length / batch,
            n = tokens.Length,
            d = config.DModel,
            m = config.DMlp,
            heads = config.Heads,
            dh = config.HeadDim;
        var x = new double[n * d];
        for (int r = 0; r < n; r++)
        {
            for (int j = 0; j < d; j++)
            {
                x[r * d + j] =
                    w.TokenEmbedding[tokens[r] * d + j]
                    + (w.PositionEmbedding is null ? 0 : w.PositionEmbedding[r % t * d + j]);
            }
        }

        void Site(string name, double[] value) => hook?.Invoke(name, value);
        for (int l = 0; l < config.Layers; l++)
        {
            var b = w.Blocks[l];
            Site($"blocks.{l}.hook_resid_pre", x);
            var a = LayerNorm(x, b.Ln1Weight, b.Ln1Bias, d, config.LayerNormEpsilon);
            var qkv = Linear(a, b.QkvWeight, b.QkvBias, n, d, 3 * d);
            if (config.RotaryDims > 0)
            {
                Rotary(qkv, config, t);
            }

            var z = new double[n * d];
            double scale = 1.0 / Math.Sqrt(dh);
            for (int s = 0; s < batch; s++)
            {
                for (int h = 0; h < heads; h++)
                {
                    for (int q = 0; q < t; q++)
                    {
                        var scores = new double[q + 1];
                        for (int k = 0; k <= q; k++)
                        {
                            double dot = 0;
                            for (int j = 0; j < dh; j++)
                            {
                                dot +=
                                    qkv[(s * t + q) * 3 * d + h * dh + j]
                                    * qkv[(s * t + k) * 3 * d + d + h * dh + j];
                            }

                            scores[k] = dot * scale;
                        }

                        double max = scores.Max();
                        double sum = scores.Sum(v => Math.Exp(v - max));
                        for (int j = 0; j < dh; j++)
                        {
                            double acc = 0;
                            for (int k = 0; k <= q; k++)
                            {
                                acc +=
                                    Math.Exp(scores[k] - max)
                                    / sum
                                    * qkv[(s * t + k) * 3 * d + 2 * d + h * dh + j];
                            }

                            z[(s * t + q) * d + h * dh + j] = acc;
                        }
                    }
                }
            }

            Site($"blocks.{l}.attn.hook_z", z);
            var attnOut = Linear(z, b.OutWeight, b.OutBias, n, d, d);
            Site($"blocks.{l}.hook_attn_out", attnOut);
            var mlpInput = x;
            if (!config.ParallelResidual)
            {
                x = Add(x, attnOut);
                Site($"blocks.{l}.hook_resid_mid", x);
                mlpInput = x;
            }

            var hidden = Linear(
                LayerNorm(mlpInput, b.Ln2Weight, b.Ln2Bias, d, config.LayerNormEpsilon),
                b.MlpInWeight,
                b.MlpInBias,
                n,
                d,
                m
            );
            for (int i = 0; i < hidden.Length; i++)
            {
                hidden[i] = Activation(hidden[i], config.Activation);
            }

            Site($"blocks.{l}.mlp.hook_post", hidden);
            var mlpOut = Linear(hidden, b.MlpOutWeight, b.MlpOutBias, n, m, d);
            Site($"blocks.{l}.hook_mlp_out", mlpOut);
            x = config.ParallelResidual ? Add(Add(x, attnOut), mlpOut) : Add(x, mlpOut);
            Site($"blocks.{l}.hook_resid_post", x);
        }

        var final = LayerNorm(x, w.FinalLnWeight, w.FinalLnBias, d, config.LayerNormEpsilon);
        int v = config.VocabSize;
        var logits = new double[n * v];
        for (int r = 0; r < n; r++)
        {
            for (int o = 0; o < v; o++)
            {
                double acc = 0;
                for (int j = 0; j < d; j++)
                {
                    acc += final[r * d + j] * w.Unembedding[o * d + j];
                }

                logits[r * v + o] = acc;
            }
        }

        return logits;
    }

    /// <summary>Mean next-token cross-entropy over the positions whose target is ≥ 0.</summary>
    public static double MeanCrossEntropy(double[] logits, int[] targets, int vocab)
    {
        double total = 0;
        int count = 0;
        for (int r = 0; r < targets.Length; r++)
        {
            if (targets[r] < 0)
            {
                continue;
            }

            double max = double.NegativeInfinity;
            for (int o = 0; o < vocab; o++)
            {
                max = Math.Max(max, logits[r * vocab + o]);
            }

            double sum = 0;
            for (int o = 0; o < vocab; o++)
            {
                sum += Math.Exp(logits[r * vocab + o] - max);
            }

            total += max + Math.Log(sum) - logits[r * vocab + targets[r]];
            count++;
        }

        return total / count;
    }

    /// <summary>The activation function in double precision (exact erf for
    /// <see cref="LmActivation.GeluErf"/>).</summary>
    public static double Activation(double x, LmActivation kind) =>
        kind switch
        {
            LmActivation.GeluTanh => 0.5
                * x
                * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x))),
            LmActivation.GeluErf => 0.5 * x * (1 + MathNet.Numerics.SpecialFunctions.Erf(x / Math.Sqrt(2))),
            _ => Math.Max(x, 0),
        };

    private static void Rotary(double[] qkv, LmConfig c, int t)
    {
        int d = c.DModel,
            dh = c.HeadDim,
            r = c.RotaryDims,
            half = r / 2,
            n = qkv.Length / (3 * d);
        for (int row = 0; row < n; row++)
        {
            int pos = row % t;
            for (int part = 0; part < 2; part++)
            {
                for (int h = 0; h < c.Heads; h++)
                {
                    int at = row * 3 * d + part * d + h * dh;
                    for (int i = 0; i < half; i++)
                    {
                        double theta = pos / Math.Pow(c.RotaryBase, 2.0 * i / r);
                        double a = qkv[at + i],
                            b = qkv[at + i + half];
                        qkv[at + i] = a * Math.Cos(theta) - b * Math.Sin(theta);
                        qkv[at + i + half] = b * Math.Cos(theta) + a * Math.Sin(theta);
                    }
                }
            }
        }
    }

    private static double[] LayerNorm(double[] x, float[] w, float[] b, int d, float eps)
    {
        var y = new double[x.Length];
        for (int r = 0; r < x.Length / d; r++)
        {
            double mean = 0,
                variance = 0;
            for (int j = 0; j < d; j++)
            {
                mean += x[r * d + j];
            }

            mean /= d;
            for (int j = 0; j < d; j++)
            {
                variance += (x[r * d + j] - mean) * (x[r * d + j] - mean);
            }

            double inv = 1 / Math.Sqrt(variance / d + eps);
            for (int j = 0; j < d; j++)
            {
                y[r * d + j] = (x[r * d + j] - mean) * inv * w[j] + b[j];
            }
        }

        return y;
    }

    private static double[] Linear(double[] x, float[] weight, float[] bias, int rows, int input, int output)
    {
        var y = new double[rows * output];
        for (int r = 0; r < rows; r++)
        {
            for (int o = 0; o < output; o++)
            {
                double acc = bias[o];
                for (int i = 0; i < input; i++)
                {
                    acc += x[r * input + i] * weight[i * output + o];
                }

                y[r * output + o] = acc;
            }
        }

        return y;
    }

    private static double[] Add(double[] a, double[] b) => [.. a.Select((v, i) => v + b[i])];
}
