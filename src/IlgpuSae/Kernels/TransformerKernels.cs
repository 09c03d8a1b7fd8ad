using ILGPU;
using ILGPU.Algorithms;

namespace IlgpuSae.Kernels;

/// <summary>
/// Kernels of the language-model forward pass (GPT-2 and GPT-NeoX): embeddings, layer norm, rotary
/// position embedding, causal attention, and the per-position cross-entropy and KL divergence used for
/// loss recovered. All are implicitly grouped with a grid-stride loop over independent rows or elements,
/// so they run on every accelerator; the matrix products around them are <see cref="GemmKernels"/>.
/// </summary>
internal static class TransformerKernels
{
    /// <summary>
    /// <c>x[n, j] = wte[ids[n], j] + wpe[n mod T, j]</c> (the position term only when
    /// <paramref name="usePositions"/> ≠ 0).
    /// One element per work item. Token ids are validated on the host.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void EmbedKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<int> ids,
        ArrayView<float> wte,
        ArrayView<float> wpe,
        ArrayView<float> x,
        int d,
        int seqLen,
        int usePositions
    )
    {
        for (int e = gridIndex; e < count; e += stride)
        {
            int n = e / d;
            int j = e - n * d;
            float v = wte[ids[n] * d + j];
            if (usePositions != 0)
            {
                v += wpe[(n % seqLen) * d + j];
            }

            x[e] = v;
        }
    }

    /// <summary>
    /// Layer norm of each row: <c>y = (x − mean) / sqrt(var + eps) · w + b</c> with the biased variance
    /// (two passes over the row). One row per work item; <paramref name="y"/> may be <paramref name="x"/>.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void LayerNormKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> x,
        ArrayView<float> w,
        ArrayView<float> b,
        ArrayView<float> y,
        int d,
        float eps
    )
    {
        for (int row = gridIndex; row < count; row += stride)
        {
            int start = row * d;
            float sum = 0f;
            for (int j = 0; j < d; j++)
            {
                sum += x[start + j];
            }

            float mean = sum / d;
            float sq = 0f;
            for (int j = 0; j < d; j++)
            {
                float c = x[start + j] - mean;
                sq += c * c;
            }

            float inv = 1f / XMath.Sqrt(sq / d + eps);
            for (int j = 0; j < d; j++)
            {
                y[start + j] = (x[start + j] - mean) * inv * w[j] + b[j];
            }
        }
    }

    /// <summary>
    /// GPT-NeoX rotary embedding, in place on the query and key parts of <c>qkv</c> [N, 3·H·dh] (q at
    /// columns [0, H·dh), k at [H·dh, 2·H·dh)). The first <paramref name="rotaryDims"/> dims of every head
    /// are rotated in halves (<c>rotate_half</c>, not interleaved): for i &lt; r/2, with
    /// θ = pos · base^(−2i/r), <c>(a, b) ← (a cos θ − b sin θ, b cos θ + a sin θ)</c> where a = dim i and
    /// b = dim i + r/2. One (row, q-or-k, head, i) per work item.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void RotaryKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> qkv,
        ArrayView<float> invFreq,
        int seqLen,
        int heads,
        int headDim,
        int rotaryDims
    )
    {
        int half = rotaryDims / 2;
        int width = heads * headDim;
        for (int e = gridIndex; e < count; e += stride)
        {
            int i = e % half;
            int rest = e / half;
            int h = rest % heads;
            rest /= heads;
            int part = rest % 2;
            int n = rest / 2;
            float angle = (n % seqLen) * invFreq[i];
            float c = XMath.Cos(angle);
            float s = XMath.Sin(angle);
            int at = n * 3 * width + part * width + h * headDim + i;
            float a = qkv[at];
            float bb = qkv[at + half];
            qkv[at] = a * c - bb * s;
            qkv[at + half] = bb * c + a * s;
        }
    }

    /// <summary>
    /// Causal self-attention for one (sequence, head, query position) per work item:
    /// <c>z[t] = Σ_{s≤t} softmax_s(q_t·k_s · scale) v_s</c>, reading q, k and v from <c>qkv</c> [N, 3·H·dh]
    /// and
    /// writing the head's slice of <c>z</c> [N, H·dh] (heads concatenated, TransformerLens' <c>hook_z</c>
    /// flattened). The probabilities of a query row are kept in <paramref name="scratch"/> [B·H·T·T].
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void AttentionKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> qkv,
        ArrayView<float> scratch,
        ArrayView<float> z,
        int seqLen,
        int heads,
        int headDim,
        float scale
    )
    {
        int width = heads * headDim;
        for (int e = gridIndex; e < count; e += stride)
        {
            int t = e % seqLen;
            int bh = e / seqLen;
            int h = bh % heads;
            int b = bh / heads;
            int rowQ = b * seqLen + t;
            int q0 = rowQ * 3 * width + h * headDim;
            int p0 = e * seqLen;
            float max = float.NegativeInfinity;
            for (int s = 0; s <= t; s++)
            {
                int k0 = (b * seqLen + s) * 3 * width + width + h * headDim;
                float dot = 0f;
                for (int j = 0; j < headDim; j++)
                {
                    dot += qkv[q0 + j] * qkv[k0 + j];
                }

                dot *= scale;
                scratch[p0 + s] = dot;
                max = XMath.Max(max, dot);
            }

            float sum = 0f;
            for (int s = 0; s <= t; s++)
            {
                float p = XMath.Exp(scratch[p0 + s] - max);
                scratch[p0 + s] = p;
                sum += p;
            }

            float inv = 1f / sum;
            int z0 = rowQ * width + h * headDim;
            for (int j = 0; j < headDim; j++)
            {
                float acc = 0f;
                for (int s = 0; s <= t; s++)
                {
                    acc += scratch[p0 + s] * qkv[(b * seqLen + s) * 3 * width + 2 * width + h * headDim + j];
                }

                z[z0 + j] = acc * inv;
            }
        }
    }

    /// <summary>
    /// Next-token cross-entropy of each row of <c>logits</c> [N, V]: <c>loss[n] = logsumexp(logits[n]) −
    /// logits[n, targets[n]]</c>, or 0 where <c>targets[n] &lt; 0</c> (not counted). One row per work item.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void CrossEntropyKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> logits,
        ArrayView<int> targets,
        ArrayView<float> loss,
        int vocab
    )
    {
        for (int row = gridIndex; row < count; row += stride)
        {
            int target = targets[row];
            if (target < 0)
            {
                loss[row] = 0f;
                continue;
            }

            int start = row * vocab;
            float max = float.NegativeInfinity;
            for (int v = 0; v < vocab; v++)
            {
                max = XMath.Max(max, logits[start + v]);
            }

            float sum = 0f;
            for (int v = 0; v < vocab; v++)
            {
                sum += XMath.Exp(logits[start + v] - max);
            }

            loss[row] = max + XMath.Log(sum) - logits[start + target];
        }
    }

    /// <summary>
    /// <c>kl[n] = KL(softmax(clean[n]) ‖ softmax(patched[n])) = Σ_v p_v (log p_v − log q_v)</c> for each row
    /// of two
    /// logit matrices [N, V]. One row per work item.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void KlDivergenceKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> clean,
        ArrayView<float> patched,
        ArrayView<float> kl,
        int vocab
    )
    {
        for (int row = gridIndex; row < count; row += stride)
        {
            int start = row * vocab;
            float maxP = float.NegativeInfinity;
            float maxQ = float.NegativeInfinity;
            for (int v = 0; v < vocab; v++)
            {
                maxP = XMath.Max(maxP, clean[start + v]);
                maxQ = XMath.Max(maxQ, patched[start + v]);
            }

            float sumP = 0f;
            float sumQ = 0f;
            for (int v = 0; v < vocab; v++)
            {
                sumP += XMath.Exp(clean[start + v] - maxP);
                sumQ += XMath.Exp(patched[start + v] - maxQ);
            }

            float lseP = maxP + XMath.Log(sumP);
            float lseQ = maxQ + XMath.Log(sumQ);
            float acc = 0f;
            for (int v = 0; v < vocab; v++)
            {
                float logP = clean[start + v] - lseP;
                acc += XMath.Exp(logP) * (logP - (patched[start + v] - lseQ));
            }

            kl[row] = XMath.Max(acc, 0f);
        }
    }
}
