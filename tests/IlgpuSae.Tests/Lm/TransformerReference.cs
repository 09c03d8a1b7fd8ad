using IlgpuSae.Verification;

namespace IlgpuSae.Tests.Lm;

/// <summary>Reference output of the attention kernel with the quantities that bound its float32
/// error.</summary>
/// <param name="Z">z [N, H·dh], heads concatenated.</param>
/// <param name="Magnitudes">Per element, Σ_s w_s·|v_s| + |z| (w = the softmax weights of its query
/// row).</param>
/// <param name="ScoreMagnitudes">
/// Per element, the largest scale·Σ_j |q_j·k_j| plus the largest |score| of its query row: the float32 error
/// of every
/// score, and of the score differences the softmax exponentiates, is proportional to it.
/// </param>
/// <param name="Keys">Per element, how many keys its query attends to (t + 1).</param>
public sealed record AttentionReference(
    double[] Z,
    double[] Magnitudes,
    double[] ScoreMagnitudes,
    int[] Keys
);

/// <summary>Reference output of a log-sum-exp kernel (cross-entropy, KL divergence) with what bounds its
/// float32 error.</summary>
/// <param name="Values">The exact values, one per row.</param>
/// <param name="LogSums">Per row, the log Σ_v exp(logit_v − max) terms the value contains (their sum for
/// two).</param>
/// <param name="Magnitudes">Per row, the magnitudes that single float32 roundings act on.</param>
/// <param name="WeightedSums">Per row, Σ|term| of a float32 sum over the vocabulary inside the value (0 if
/// none).</param>
public sealed record LogSumExpReference(
    double[] Values,
    double[] LogSums,
    double[] Magnitudes,
    double[] WeightedSums
);

/// <summary>
/// Double-precision references of the language-model kernels (<c>TransformerKernels</c> and the GELU
/// operators) one by
/// one, written as plain loops over the kernels' own inputs and layouts, so that a failing test names the
/// kernel
/// rather than the whole forward pass (<see cref="LmReference"/> covers the model end to end).
/// </summary>
public static class TransformerReference
{
    /// <summary>Token plus (GPT-2) learned position embedding: <c>x[n, j] = wte[ids[n], j] + wpe[n mod T,
    /// j]</c>.</summary>
    public static double[] Embed(int[] ids, float[] wte, float[]? wpe, int d, int seqLen)
    {
        var x = new double[ids.Length * d];
        for (int n = 0; n < ids.Length; n++)
        {
            for (int j = 0; j < d; j++)
            {
                x[n * d + j] = (double)wte[ids[n] * d + j] + (wpe is null ? 0 : wpe[n % seqLen * d + j]);
            }
        }

        return x;
    }

    /// <summary>
    /// Layer normalisation of each row (Ba, Kiros &amp; Hinton 2016, arXiv 1607.06450, §3): mean and
    /// <em>biased</em>
    /// variance over the row's d values, <c>y = (x − μ)/√(σ² + eps)·w + b</c>. Magnitudes: per element
    /// |x − μ|·|w|/√(σ² + eps) + mean(|x|)·|w|/√(σ² + eps) + |b| (the centred value, the mean it subtracts,
    /// the bias).
    /// </summary>
    public static ReferenceOutput LayerNorm(float[] x, float[] w, float[] b, int rows, int d, double eps)
    {
        var y = new ReferenceOutput(new double[rows * d], new double[rows * d]);
        for (int r = 0; r < rows; r++)
        {
            double mean = 0,
                meanAbs = 0;
            for (int j = 0; j < d; j++)
            {
                mean += x[r * d + j];
                meanAbs += Math.Abs(x[r * d + j]);
            }

            mean /= d;
            meanAbs /= d;
            double variance = 0;
            for (int j = 0; j < d; j++)
            {
                variance += (x[r * d + j] - mean) * (x[r * d + j] - mean);
            }

            variance /= d;
            double inv = 1 / Math.Sqrt(variance + eps);
            for (int j = 0; j < d; j++)
            {
                double centred = x[r * d + j] - mean;
                y.Values[r * d + j] = centred * inv * w[j] + b[j];
                y.Magnitudes[r * d + j] =
                    (Math.Abs(centred) + meanAbs) * inv * Math.Abs(w[j]) + Math.Abs(b[j]);
            }
        }

        return y;
    }

    /// <summary>
    /// GELU's tanh approximation (Hendrycks &amp; Gimpel 2016, arXiv 1606.08415, §2; Hugging Face's
    /// <c>gelu_new</c>):
    /// <c>0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))</c>.
    /// </summary>
    public static double GeluTanh(double x) =>
        0.5 * x * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));

    /// <summary>Exact GELU (same paper, §2): <c>x·Φ(x) = 0.5·x·(1 + erf(x/√2))</c>, with erf to double
    /// precision.</summary>
    public static double GeluErf(double x) =>
        0.5 * x * (1 + MathNet.Numerics.SpecialFunctions.Erf(x / Math.Sqrt(2)));

    /// <summary>
    /// Rotary position embedding (Su et al. 2021, RoFormer, arXiv 2104.09864, §3.2 and §3.4.2) as GPT-NeoX
    /// arranges it,
    /// on the q and k parts of <c>qkv</c> [N, 3·H·dh]: in every head the first r dims are rotated in pairs
    /// (i, i + r/2) — <c>rotate_half</c>, not the paper's adjacent pairs (2i, 2i + 1) — by θ = (n mod
    /// T)·invFreq[i]:
    /// <c>(a, b) ← (a·cos θ − b·sin θ, b·cos θ + a·sin θ)</c>. v and the dims past r are unchanged.
    /// Magnitudes: |a| + |b|
    /// for the rotated values, 0 for the unchanged ones.
    /// </summary>
    public static ReferenceOutput Rotary(
        float[] qkv,
        float[] invFreq,
        int rows,
        int seqLen,
        int heads,
        int headDim,
        int rotaryDims
    )
    {
        int width = heads * headDim,
            half = rotaryDims / 2;
        var y = new ReferenceOutput([.. qkv.Select(v => (double)v)], new double[qkv.Length]);
        for (int n = 0; n < rows; n++)
        {
            for (int part = 0; part < 2; part++)
            {
                for (int h = 0; h < heads; h++)
                {
                    int at = n * 3 * width + part * width + h * headDim;
                    for (int i = 0; i < half; i++)
                    {
                        double theta = n % seqLen * (double)invFreq[i];
                        double a = qkv[at + i],
                            b = qkv[at + i + half];
                        y.Values[at + i] = a * Math.Cos(theta) - b * Math.Sin(theta);
                        y.Values[at + i + half] = b * Math.Cos(theta) + a * Math.Sin(theta);
                        y.Magnitudes[at + i] = y.Magnitudes[at + i + half] = Math.Abs(a) + Math.Abs(b);
                    }
                }
            }
        }

        return y;
    }

    /// <summary>
    /// Causal scaled dot-product attention (Vaswani et al. 2017, arXiv 1706.03762, §3.2.1 Eq. 1, with the
    /// decoder's
    /// mask of §3.2.3) per sequence, head and query position t: <c>z_t = Σ_{s≤t}
    /// softmax_s(scale·q_t·k_s)·v_s</c>, q, k, v
    /// read from <c>qkv</c> [N, 3·H·dh] (q at columns [0, H·dh), k at [H·dh, 2·H·dh), v after) for N = B·T
    /// rows.
    /// </summary>
    public static AttentionReference Attention(
        float[] qkv,
        int batch,
        int seqLen,
        int heads,
        int headDim,
        double scale
    )
    {
        int width = heads * headDim,
            n = batch * seqLen;
        var z = new double[n * width];
        var magnitudes = new double[n * width];
        var scoreMagnitudes = new double[n * width];
        var keys = new int[n * width];
        double Q(int row, int h, int j) => qkv[row * 3 * width + h * headDim + j];
        double K(int row, int h, int j) => qkv[row * 3 * width + width + h * headDim + j];
        double V(int row, int h, int j) => qkv[row * 3 * width + 2 * width + h * headDim + j];
        for (int b = 0; b < batch; b++)
        {
            for (int h = 0; h < heads; h++)
            {
                for (int t = 0; t < seqLen; t++)
                {
                    int rowQ = b * seqLen + t;
                    var scores = new double[t + 1];
                    double scoreMagnitude = 0,
                        largest = 0;
                    for (int s = 0; s <= t; s++)
                    {
                        double dot = 0,
                            dotMagnitude = 0;
                        for (int j = 0; j < headDim; j++)
                        {
                            dot += Q(rowQ, h, j) * K(b * seqLen + s, h, j);
                            dotMagnitude += Math.Abs(Q(rowQ, h, j) * K(b * seqLen + s, h, j));
                        }

                        scores[s] = scale * dot;
                        scoreMagnitude = Math.Max(scoreMagnitude, scale * dotMagnitude);
                        largest = Math.Max(largest, Math.Abs(scores[s]));
                    }

                    double max = scores.Max(),
                        sum = 0;
                    var weights = new double[t + 1];
                    for (int s = 0; s <= t; s++)
                    {
                        weights[s] = Math.Exp(scores[s] - max);
                        sum += weights[s];
                    }

                    for (int j = 0; j < headDim; j++)
                    {
                        double acc = 0,
                            accMagnitude = 0;
                        for (int s = 0; s <= t; s++)
                        {
                            acc += weights[s] / sum * V(b * seqLen + s, h, j);
                            accMagnitude += weights[s] / sum * Math.Abs(V(b * seqLen + s, h, j));
                        }

                        int e = rowQ * width + h * headDim + j;
                        z[e] = acc;
                        magnitudes[e] = accMagnitude + Math.Abs(acc);
                        scoreMagnitudes[e] = scoreMagnitude + largest;
                        keys[e] = t + 1;
                    }
                }
            }
        }

        return new AttentionReference(z, magnitudes, scoreMagnitudes, keys);
    }

    /// <summary>
    /// Next-token cross-entropy per row of logits [N, V]: <c>logsumexp(logits[n]) − logits[n, target]</c>, 0
    /// where the
    /// target is negative (not counted). Magnitudes: |max| + log Σ exp(logit − max) + |logits[n, target]|
    /// (the terms of
    /// the final additions; 0 where not counted); no weighted sums.
    /// </summary>
    public static LogSumExpReference CrossEntropy(float[] logits, int[] targets, int vocab)
    {
        int rows = targets.Length;
        var loss = new LogSumExpReference(
            new double[rows],
            new double[rows],
            new double[rows],
            new double[rows]
        );
        for (int n = 0; n < rows; n++)
        {
            if (targets[n] < 0)
            {
                continue;
            }

            var (max, logSum) = LogSumExpParts(logits, n, vocab);
            double target = logits[n * vocab + targets[n]];
            loss.Values[n] = max + logSum - target;
            loss.LogSums[n] = logSum;
            loss.Magnitudes[n] = Math.Abs(max) + logSum + Math.Abs(target);
        }

        return loss;
    }

    /// <summary>
    /// <c>KL(softmax(clean[n]) ‖ softmax(patched[n])) = Σ_v p_v·(log p_v − log q_v)</c> per row of two logit
    /// matrices
    /// [N, V], clamped at 0 as the kernel does. LogSums: log Σ exp(clean − max) + log Σ exp(patched − max).
    /// Magnitudes: |max_p| + |max_q| + both log sums + Σ_v p_v·(|log p_v| + |log q_v| + |log p_v − log
    /// q_v|·(1 + |log p_v|))
    /// (what single roundings act on). WeightedSums: Σ_v p_v·|log p_v − log q_v| (the sum the kernel
    /// accumulates).
    /// </summary>
    public static LogSumExpReference KlDivergence(float[] clean, float[] patched, int vocab)
    {
        int rows = clean.Length / vocab;
        var kl = new LogSumExpReference(
            new double[rows],
            new double[rows],
            new double[rows],
            new double[rows]
        );
        for (int n = 0; n < rows; n++)
        {
            var (maxP, logSumP) = LogSumExpParts(clean, n, vocab);
            var (maxQ, logSumQ) = LogSumExpParts(patched, n, vocab);
            double acc = 0,
                magnitude = Math.Abs(maxP) + logSumP + Math.Abs(maxQ) + logSumQ,
                weighted = 0;
            for (int v = 0; v < vocab; v++)
            {
                double logP = clean[n * vocab + v] - maxP - logSumP;
                double logQ = patched[n * vocab + v] - maxQ - logSumQ;
                double p = Math.Exp(logP);
                acc += p * (logP - logQ);
                magnitude +=
                    p * (Math.Abs(logP) + Math.Abs(logQ) + Math.Abs(logP - logQ) * (1 + Math.Abs(logP)));
                weighted += p * Math.Abs(logP - logQ);
            }

            kl.Values[n] = Math.Max(acc, 0);
            kl.LogSums[n] = logSumP + logSumQ;
            kl.Magnitudes[n] = magnitude;
            kl.WeightedSums[n] = weighted;
        }

        return kl;
    }

    /// <summary>The row's max and log Σ_v exp(logit_v − max): logsumexp = max + the second.</summary>
    private static (double Max, double LogSum) LogSumExpParts(float[] logits, int row, int vocab)
    {
        double max = double.NegativeInfinity;
        for (int v = 0; v < vocab; v++)
        {
            max = Math.Max(max, logits[row * vocab + v]);
        }

        double sum = 0;
        for (int v = 0; v < vocab; v++)
        {
            sum += Math.Exp(logits[row * vocab + v] - max);
        }

        return (max, Math.Log(sum));
    }
}
