using ILGPU;
using ILGPU.Algorithms;

namespace IlgpuSae.Kernels;

// Fused SAE kernels. B = batch rows, d = input width, M = dictionary size. Matrices are row-major:
// U, F, A, Φ, Ψ, dU are [B, M]; X, X̂, Δ are [B, d]. Parameter gradients accumulate (+=); activation
// gradients overwrite (=). The math: Sae/Architectures/*.cs (paper §2–§3).

/// <summary>Scalar arguments of the gated kernels.</summary>
internal struct GatedArgs
{
    public int Rows;
    public int M;
    public float LambdaOverB;
    public int UseRMag;
    public int Untied;
    public int WeightedL1;
    public int Stride;

    /// <summary>1: walk only each feature's open-gate rows (the column lists of the sparse path).</summary>
    public int Sparse;
}

/// <summary>Scalar arguments of the standard (ReLU) backward kernel.</summary>
internal struct StandardArgs
{
    public int Rows;
    public int M;
    public float LambdaOverB;
    public int WeightedL1;
}

/// <summary>Forward and backward kernels of the standard, gated and JumpReLU SAEs.</summary>
internal static class SaeKernels
{
    /// <summary>
    /// Gated encoder, one work item per element of U: <c>π_gate = U + b_gate</c>,
    /// <c>π_mag = s·Um + b_mag</c> with <c>s = exp(r_mag)</c> (or 1 without r_mag), <c>F = 1[π_gate &gt;
    /// 0]·ReLU(π_mag)</c>,
    /// <c>A = ReLU(π_gate)</c>. Um is U for tied weights. F goes to rows [0, B) of FA, A to rows [B, 2B).
    /// <paramref name="magScale"/> holds s itself (the launcher takes exp(r_mag) once per feature).
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void GatedEncodeKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> u,
        ArrayView<float> um,
        ArrayView<float> bGate,
        ArrayView<float> bMag,
        ArrayView<float> magScale,
        ArrayView<float> fa,
        GatedArgs p
    )
    {
        for (int e = gridIndex; e < count; e += stride)
        {
            int i = e % p.M;
            float pg = u[e] + bGate[i];
            float scale = p.UseRMag != 0 ? magScale[i] : 1f;
            float pm = scale * um[e] + bMag[i];
            fa[e] = pg > 0f && pm > 0f ? pm : 0f;
            fa[p.Rows * p.M + e] = pg > 0f ? pg : 0f;
        }
    }

    /// <summary>Standard encoder: <c>F = ReLU(U + b_enc)</c>.</summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void ReluEncodeKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> u,
        ArrayView<float> bEnc,
        ArrayView<float> f,
        int m
    )
    {
        for (int e = gridIndex; e < count; e += stride)
        {
            float z = u[e] + bEnc[e % m];
            f[e] = z > 0f ? z : 0f;
        }
    }

    /// <summary>JumpReLU encoder: <c>z = U + b_enc</c>, <c>F = ReLU(z)·1[z &gt; θ]</c> (SAELens
    /// semantics), or with <paramref name="relu"/> = 0 <c>F = z·1[z &gt; θ]</c> (dictionary_learning's
    /// training forward, <c>JumpReLUFunction</c>: they differ only where θ &lt; 0).</summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void JumpReluEncodeKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> u,
        ArrayView<float> bEnc,
        ArrayView<float> threshold,
        ArrayView<float> f,
        int m,
        int relu
    )
    {
        for (int e = gridIndex; e < count; e += stride)
        {
            int i = e % m;
            float z = u[e] + bEnc[i];
            f[e] = (relu == 0 || z > 0f) && z > threshold[i] ? z : 0f;
        }
    }

    /// <summary>
    /// Adds the decoder bias and forms the scaled residual, one work item per element of the stacked
    /// reconstructions [R, d] (R = B or 2B): <c>X̂ += b_dec</c>; <c>Δ = scale·(X̂ − X[row mod B])</c>.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void ResidualKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> xhat,
        ArrayView<float> x,
        ArrayView<float> bDec,
        ArrayView<float> delta,
        int d,
        int batch,
        float scale
    )
    {
        for (int e = gridIndex; e < count; e += stride)
        {
            int row = e / d;
            int j = e - row * d;
            float v = xhat[e] + bDec[j];
            xhat[e] = v;
            delta[e] = scale * (v - x[(row % batch) * d + j]);
        }
    }

    /// <summary>
    /// Gated backward, one work item per feature i walking the batch (adjacent items read adjacent columns):
    /// <c>dΠm = Φ·1[π_gate &gt; 0]·1[π_mag &gt; 0]</c>, <c>dΠg = (Ψ + (λ/B)·w_i)·1[π_gate &gt; 0]</c>,
    /// <c>dU = dΠg + s·dΠm</c> (tied) or <c>dU = dΠg</c>, <c>dUm = dΠm</c> (untied). Accumulates
    /// <c>db_gate += Σ dΠg</c>, <c>db_mag += Σ dΠm</c>, <c>dr_mag += s·Σ dΠm·Um</c>, and writes the column
    /// sums of dU, dUm and A (for the b_dec and decoder-norm terms). With <c>p.Sparse</c> set, feature i
    /// walks only its open-gate rows <c>colIdx[i·B …]</c> (<c>colCount[i]</c> of them, from the sparse path's
    /// column compaction of A, counts first in <c>lists</c>: <c>[colCount (M) | colIdx (M·B)]</c>): every
    /// term above vanishes where the gate is closed, so the sums are the
    /// same, the work is O(B·L0) instead of O(B·M), and dU, dUm are written at those entries only (the
    /// sparse weight gradients read nothing else).
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void GatedBackwardKernel(
        Index1D gridIndex,
        ArrayView<float> u,
        ArrayView<float> um,
        ArrayView<float> phiPsi,
        ArrayView<float> bGate,
        ArrayView<float> bMag,
        ArrayView<float> rMag,
        ArrayView<float> norms,
        ArrayView<float> du,
        ArrayView<float> dum,
        ArrayView<float> gBGate,
        ArrayView<float> gBMag,
        ArrayView<float> gRMag,
        ArrayView<float> sums,
        ArrayView<int> lists,
        GatedArgs p
    )
    {
        for (int i = gridIndex; i < p.M; i += p.Stride)
        {
            int n = p.Sparse != 0 ? lists[i] : p.Rows;
            int list = p.M + i * p.Rows;
            float bg = bGate[i];
            float bm = bMag[i];
            float s = p.UseRMag != 0 ? XMath.Exp(rMag[i]) : 1f;
            float w = p.WeightedL1 != 0 ? norms[i] : 1f;
            float sparsity = p.LambdaOverB * w;
            float sumG = 0f,
                sumM = 0f,
                sumR = 0f,
                sumDu = 0f,
                sumDum = 0f,
                sumA = 0f;
            int psiOffset = p.Rows * p.M;
            for (int t = 0; t < n; t++)
            {
                int b = p.Sparse != 0 ? lists[list + t] : t;
                int e = b * p.M + i;
                float ue = u[e];
                float ume = um[e];
                float pg = ue + bg;
                float pm = s * ume + bm;
                float dpm = pg > 0f && pm > 0f ? phiPsi[e] : 0f;
                float dpg = pg > 0f ? phiPsi[psiOffset + e] + sparsity : 0f;
                if (p.Untied != 0)
                {
                    du[e] = dpg;
                    dum[e] = dpm;
                    sumDu += dpg;
                    sumDum += dpm;
                }
                else
                {
                    float g = dpg + s * dpm;
                    du[e] = g;
                    sumDu += g;
                }

                sumG += dpg;
                sumM += dpm;
                sumR += dpm * ume;
                sumA += pg > 0f ? pg : 0f;
            }

            gBGate[i] += sumG;
            gBMag[i] += sumM;
            if (p.UseRMag != 0)
            {
                gRMag[i] += s * sumR;
            }

            sums[i] = sumDu;
            sums[p.M + i] = sumDum;
            sums[2 * p.M + i] = sumA;
        }
    }

    /// <summary>
    /// Standard (ReLU) backward, one work item per feature: <c>dU = (Φ + (λ/B)·w_i)·1[F &gt; 0]</c>;
    /// accumulates <c>db_enc += Σ dU</c>; writes the column sums of dU and F.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void StandardBackwardKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> f,
        ArrayView<float> phi,
        ArrayView<float> norms,
        ArrayView<float> du,
        ArrayView<float> gBEnc,
        ArrayView<float> sums,
        StandardArgs p
    )
    {
        for (int i = gridIndex; i < count; i += stride)
        {
            float sparsity = p.LambdaOverB * (p.WeightedL1 != 0 ? norms[i] : 1f);
            float sumDu = 0f,
                sumF = 0f;
            for (int b = 0; b < p.Rows; b++)
            {
                int e = b * p.M + i;
                float fe = f[e];
                float g = fe > 0f ? phi[e] + sparsity : 0f;
                du[e] = g;
                sumDu += g;
                sumF += fe;
            }

            gBEnc[i] += sumDu;
            sums[i] = sumDu;
            sums[2 * p.M + i] = sumF;
        }
    }

    /// <summary>
    /// Gradient of the decoder-norm-weighted sparsity penalty <c>(λ/B)·Σ_b Σ_i a_bi·‖W_dec[i]‖</c> with
    /// respect to
    /// W_dec: <c>dW_dec[i,:] += (λ/B)·colsum(a)_i·W_dec[i,:]/‖W_dec[i]‖</c>.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void DecoderNormPenaltyGradKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> wDec,
        ArrayView<float> colA,
        ArrayView<float> norms,
        ArrayView<float> gWDec,
        int d,
        float lambdaOverB
    )
    {
        for (int e = gridIndex; e < count; e += stride)
        {
            int row = e / d;
            float n = norms[row];
            if (n > 0f)
            {
                gWDec[e] += lambdaOverB * colA[row] * wDec[e] / n;
            }
        }
    }

    /// <summary>
    /// Removes from each gradient row its component along the matching weight row (tangent projection for
    /// unit-norm decoder rows): <c>g_i ← g_i − (g_i·w_i / ‖w_i‖²)·w_i</c>. One work item per row.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void ProjectRowsKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> g,
        ArrayView<float> w,
        int d
    )
    {
        for (int row = gridIndex; row < count; row += stride)
        {
            int start = row * d;
            float dot = 0f,
                nn = 0f;
            for (int j = 0; j < d; j++)
            {
                float wj = w[start + j];
                dot += g[start + j] * wj;
                nn += wj * wj;
            }

            if (nn > 0f)
            {
                float c = dot / nn;
                for (int j = 0; j < d; j++)
                {
                    g[start + j] -= c * w[start + j];
                }
            }
        }
    }

    /// <summary>GPU-shaped <see cref="ProjectRowsKernel"/>: one 256-thread group per row.</summary>
    [Kernel(KernelGrouping.Explicit)]
    public static void ProjectRowsTiledKernel(ArrayView<float> g, ArrayView<float> w, int d)
    {
        int start = Grid.IdxX * d;
        float dot = 0f,
            nn = 0f;
        for (int j = Group.IdxX; j < d; j += TiledKernels.GroupSize)
        {
            float wj = w[start + j];
            dot += g[start + j] * wj;
            nn += wj * wj;
        }

        dot = TiledKernels.GroupReduce<Sum>(dot);
        nn = TiledKernels.GroupReduce<Sum>(nn);
        if (nn > 0f)
        {
            float c = dot / nn;
            for (int j = Group.IdxX; j < d; j += TiledKernels.GroupSize)
            {
                g[start + j] -= c * w[start + j];
            }
        }
    }
}

/// <summary>
/// Dead-feature bookkeeping: <c>y = count &gt; 0 ? 0 : steps + 1</c> (a = steps since the feature last fired,
/// b = how often it fired in this batch).
/// </summary>
public readonly struct StepsSinceFired : IBinaryOp
{
    /// <inheritdoc/>
    public float Apply(float a, float b) => b > 0f ? 0f : a + 1f;
}
