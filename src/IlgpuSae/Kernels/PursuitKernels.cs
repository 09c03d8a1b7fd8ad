using ILGPU;

namespace IlgpuSae.Kernels;

/// <summary>
/// Non-negative gradient pursuit (Blumensath &amp; Davies 2008; the Gated SAE paper's inference-time
/// optimisation, paper App. A) with the support kept as a per-row list: row b has <c>count[b]</c> selected
/// atoms <c>idx[b, t]</c> with coefficients <c>coef[b, t]</c> (t &lt; k). Atoms are the rows of a dictionary
/// D [M, d] with unit norm. Per iteration: residual (sparse decode), inner products c = r·Dᵀ (a GEMM),
/// <see cref="PursuitSelectKernel"/> (argmax → support, gradient on the support),
/// <see cref="PursuitStepKernel"/>
/// (exact line search and clipping at zero).
/// </summary>
internal static class PursuitKernels
{
    /// <summary>
    /// <c>out[b, j] = sign·Σ_t coef[b, t]·D[idx[b, t], j] + base[b, j]</c>: with sign −1 and base = x the
    /// residual,
    /// with sign +1 and base = b_dec broadcast (baseStride 0) the reconstruction. One element per work item.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void PursuitDecodeKernel(
        Index1D gridIndex,
        int total,
        int stride,
        ArrayView<float> baseValues,
        ArrayView<int> idx,
        ArrayView<float> coef,
        ArrayView<int> count,
        ArrayView<float> dictionary,
        ArrayView<float> output,
        int d,
        int k,
        int baseRowStride,
        float sign
    )
    {
        for (int e = gridIndex; e < total; e += stride)
        {
            int b = e / d;
            int j = e - b * d;
            float acc = 0f;
            int n = count[b];
            for (int t = 0; t < n; t++)
            {
                acc += coef[b * k + t] * dictionary[idx[b * k + t] * d + j];
            }

            output[e] = baseValues[b * baseRowStride + j] + sign * acc;
        }
    }

    /// <summary>
    /// Per row: adds <c>argmax_i c[b, i]</c> (the largest inner product, not its absolute value; lowest index
    /// on
    /// ties) to the support unless it is already there or the support is full, then writes the gradient on
    /// the
    /// support, <c>g[b, t] = c[b, idx[b, t]]</c>. One row per work item.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void PursuitSelectKernel(
        Index1D gridIndex,
        int rows,
        int stride,
        ArrayView<float> c,
        ArrayView<int> idx,
        ArrayView<float> coef,
        ArrayView<int> count,
        ArrayView<float> g,
        int m,
        int k
    )
    {
        for (int b = gridIndex; b < rows; b += stride)
        {
            int best = 0;
            float bestValue = c[b * m];
            for (int i = 1; i < m; i++)
            {
                float v = c[b * m + i];
                if (v > bestValue)
                {
                    bestValue = v;
                    best = i;
                }
            }

            int n = count[b];
            bool present = false;
            for (int t = 0; t < n; t++)
            {
                present |= idx[b * k + t] == best;
            }

            if (!present && n < k)
            {
                idx[b * k + n] = best;
                coef[b * k + n] = 0f;
                n++;
                count[b] = n;
            }

            for (int t = 0; t < n; t++)
            {
                g[b * k + t] = c[b * m + idx[b * k + t]];
            }
        }
    }

    /// <summary>
    /// Per row: <c>v = Σ_t g_t·D[idx_t]</c>, <c>η = ⟨v, r⟩ / ⟨v, v⟩</c> (0 when v = 0), <c>coef_t ←
    /// max(coef_t + η·g_t, 0)</c>.
    /// One row per work item.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void PursuitStepKernel(
        Index1D gridIndex,
        int rows,
        int stride,
        ArrayView<float> r,
        ArrayView<int> idx,
        ArrayView<float> coef,
        ArrayView<int> count,
        ArrayView<float> g,
        ArrayView<float> dictionary,
        int d,
        int k
    )
    {
        for (int b = gridIndex; b < rows; b += stride)
        {
            int n = count[b];
            float vr = 0f;
            float vv = 0f;
            for (int j = 0; j < d; j++)
            {
                float v = 0f;
                for (int t = 0; t < n; t++)
                {
                    v += g[b * k + t] * dictionary[idx[b * k + t] * d + j];
                }

                vr += v * r[b * d + j];
                vv += v * v;
            }

            float eta = vv > 0f ? vr / vv : 0f;
            for (int t = 0; t < n; t++)
            {
                float a = coef[b * k + t] + eta * g[b * k + t];
                coef[b * k + t] = a > 0f ? a : 0f;
            }
        }
    }
}
