using ILGPU;
using ILGPU.Algorithms;

namespace IlgpuSae.Kernels;

// Kernels of the TopK-family extras and of JumpReLU training: the AuxK loss for dead latents (Gao et al.
// 2024, "Scaling and evaluating sparse autoencoders", App. A.2), the BatchTopK inference threshold
// (Bussmann et al. 2024), the nested prefixes of Matryoshka SAEs (Bussmann et al. 2025) and the JumpReLU
// straight-through estimator with kernel-density pseudo-derivatives (Rajamanoharan et al. 2024, Eqs. 11-12).

/// <summary>Arguments of <see cref="VariantKernels.AuxResidualKernel"/>.</summary>
internal struct AuxResidualArgs
{
    public int Rows;
    public int StatRows; // rows the variance in stats[0] was summed over (Rows; the global batch when split)
    public int D;
    public float MainScale; // Δ = MainScale·(x̂ − x) for the main reconstruction
    public float Alpha;
    public float K0; // k_aux of the scale min(#dead / k_aux, 1) (SAELens)
    public int SaeLens; // 1: SAELens (ê + b_dec, scale min(#D/k_aux, 1)); 0: dictionary_learning (÷ variance)
}

/// <summary>Arguments of the TopK-family and JumpReLU backward kernels.</summary>
internal struct FamilyBackwardArgs
{
    public int Rows;
    public int M;
    public float LambdaOverB;
    public int WeightedL1;
    public int HasAux;
    public float InvBandwidth;
    public int SteToInput;
    public int Tanh; // JumpReLU: 1 = tanh sparsity with scale TanhScale, 0 = step (L0)
    public float TanhScale;
    public int PreAct; // JumpReLU: 1 = add the pre-activation loss with coefficient PreActOverB·B
    public float PreActOverB;
    public int TargetL0; // JumpReLU: 1 = dictionary_learning's λ·(l0/T − 1)², T = 1/InvTargetL0
    public float InvTargetL0;
    public int StepOnFeatures; // JumpReLU: 1 = the L0 step sees f (dictionary_learning), 0 = z
    public int NoRelu; // JumpReLU: 1 = f = z·1[z > θ] without ReLU (dictionary_learning's training forward)
}

/// <summary>Arguments of <see cref="VariantKernels.ThresholdUpdateKernel"/>.</summary>
internal struct ThresholdArgs
{
    public int SaeLens; // 1: θ ← (1−η)θ + η·m every step from θ₀ = 0; 0: EMA β after a start step
    public float Rate; // η (SAELens) or β (dictionary_learning)
    public long Step; // 1-based (SparseAutoencoder.TrainingStep)
    public long StartStep; // dictionary_learning: update when its 0-based step, Step − 1, exceeds this
}

/// <summary>AuxK, BatchTopK-threshold, Matryoshka-prefix and JumpReLU-training kernels.</summary>
internal static class VariantKernels
{
    /// <summary>
    /// The order key of a value: its bit pattern for positive floats (<paramref name="raw"/> = 0), or for any
    /// float the bit pattern mapped so that unsigned order is float order (negative: all bits flipped;
    /// non-negative: sign bit set).
    /// </summary>
    private static uint Key(float v, int raw)
    {
        uint bits = Interop.FloatAsInt(v);
        if (raw == 0)
        {
            return bits;
        }

        return (bits & 0x80000000u) != 0 ? ~bits : bits | 0x80000000u;
    }

    /// <summary>Whether feature j of a row competes for an aux slot: dead, and positive (ReLU codes) or
    /// merely not NaN (raw codes).</summary>
    private static bool AuxCandidate(float v, float dead, int raw)
    {
        if (!(dead > 0f))
        {
            return false;
        }

        uint bits = Interop.FloatAsInt(v);
        return raw == 0 ? bits - 1u < 0x7F800000u : (bits & 0x7FFFFFFFu) <= 0x7F800000u;
    }

    /// <summary>
    /// AuxK selection per row: <paramref name="a"/> keeps, among the dead features (<c>dead[j] &gt; 0</c>),
    /// the <paramref name="k"/> largest pre-activations (every candidate when there are fewer) and is zero
    /// elsewhere; ties go to the lowest index. With <paramref name="raw"/> = 0 only positive values compete
    /// (dictionary_learning's ReLU codes), with 1 every dead value does and keeps its sign (SAELens's raw
    /// codes). A radix select on the order keys, as <see cref="TopKKernels.TopKRowsKernel"/>.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void AuxKSelectKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> pre,
        ArrayView<float> dead,
        ArrayView<float> a,
        int m,
        int k,
        int raw
    )
    {
        var hist = LocalMemory.Allocate<int>(TopKKernels.Bins);
        for (int row = gridIndex; row < count; row += stride)
        {
            int start = row * m;
            uint prefix = 0;
            int remaining = k;
            for (int shift = 24; shift >= 0; shift -= 8)
            {
                uint high = TopKKernels.HighMask(shift);
                for (int b = 0; b < TopKKernels.Bins; b++)
                {
                    hist[b] = 0;
                }

                int total = 0;
                for (int j = 0; j < m; j++)
                {
                    float v = pre[start + j];
                    uint key = Key(v, raw);
                    if (AuxCandidate(v, dead[j], raw) && (key & high) == prefix)
                    {
                        hist[(int)((key >> shift) & 0xFF)]++;
                        total++;
                    }
                }

                if (shift == 24 && total <= k)
                {
                    remaining = -1; // every candidate is kept
                    break;
                }

                int above = 0;
                for (int b = TopKKernels.Bins - 1; b >= 0; b--)
                {
                    int h = hist[b];
                    if (above + h >= remaining)
                    {
                        prefix |= (uint)b << shift;
                        remaining -= above;
                        break;
                    }

                    above += h;
                }
            }

            int rank = 0;
            for (int j = 0; j < m; j++)
            {
                float v = pre[start + j];
                bool candidate = AuxCandidate(v, dead[j], raw);
                uint key = Key(v, raw);
                bool keep =
                    candidate && (remaining < 0 || key > prefix || (key == prefix && rank < remaining));
                if (candidate && key == prefix)
                {
                    rank++;
                }

                a[start + j] = keep ? v : 0f;
            }
        }
    }

    /// <summary>
    /// The dead set of the AuxK loss, one item per feature. With <paramref name="includeCurrent"/> = 1
    /// (dictionary_learning: the counters are advanced with this batch first) a feature is dead when it did
    /// not fire in this batch and <c>steps + 1 ≥ window</c>; with 0 (SAELens: the counters before this
    /// batch) when <c>steps &gt; window</c>.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void DeadMaskKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> steps,
        ArrayView<float> fired,
        ArrayView<float> dead,
        float window,
        int includeCurrent
    )
    {
        for (int i = gridIndex; i < count; i += stride)
        {
            bool isDead = includeCurrent != 0 ? fired[i] == 0f && steps[i] + 1f >= window : steps[i] > window;
            dead[i] = isDead ? 1f : 0f;
        }
    }

    /// <summary>Per column j of <paramref name="x"/> [rows, d]: <c>Σ_b (x_bj − mean_j)²</c> (two passes, one
    /// item per column).</summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void ColumnSquaredDeviationKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> x,
        ArrayView<float> y,
        int rows
    )
    {
        for (int j = gridIndex; j < count; j += stride)
        {
            float mean = 0f;
            for (int b = 0; b < rows; b++)
            {
                mean += x[b * count + j];
            }

            mean /= rows;
            float s = 0f;
            for (int b = 0; b < rows; b++)
            {
                float v = x[b * count + j] - mean;
                s += v * v;
            }

            y[j] = s;
        }
    }

    /// <summary>
    /// The AuxK residual, one item per element of [B, d]. With the main residual <c>e = x − x̂ = −Δ/s</c>
    /// (stop-gradient) and the aux reconstruction <c>ê = A·W_dec</c> in <paramref name="xa"/>:
    /// dictionary_learning <c>Δa = (2α/(B·den))·(ê − e)</c>, <c>den = (1/B)Σ_b‖e_b − ē‖²</c> (0 when no
    /// feature is dead or den ≤ 0); SAELens <c>Δa = (2α·min(#D/k_aux, 1)/B)·(ê + b_dec − e)</c>.
    /// <paramref name="stats"/> holds [Σ_j Σ_b (Δ_bj − mean_j)², #dead] on entry; item 0 writes the factor
    /// <c>2α·g/B</c> into <c>stats[2]</c> and g (1/den or the SAELens scale) into <c>stats[3]</c>.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void AuxResidualKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> xa,
        ArrayView<float> delta,
        ArrayView<float> bDec,
        ArrayView<float> da,
        ArrayView<float> stats,
        AuxResidualArgs p
    )
    {
        float nDead = stats[1];
        float g;
        if (p.SaeLens != 0)
        {
            g = XMath.Min(nDead / p.K0, 1f);
        }
        else
        {
            float den = stats[0] / (p.MainScale * p.MainScale * p.StatRows);
            g = nDead > 0f && den > 0f ? 1f / den : 0f;
        }

        float coef = 2f * p.Alpha * g / p.Rows;
        for (int e = gridIndex; e < count; e += stride)
        {
            int j = e % p.D;
            float residual = -delta[e] / p.MainScale;
            float aux = xa[e] + (p.SaeLens != 0 ? bDec[j] : 0f);
            da[e] = coef * (aux - residual);
            if (e == 0)
            {
                stats[2] = coef;
                stats[3] = g;
            }
        }
    }

    /// <summary>
    /// Backward of the TopK family (TopK, BatchTopK, Matryoshka), one item per feature walking the batch:
    /// <c>dU = 1[f &gt; 0]·(Φ + (λ/B)·w) + 1[a ≠ 0]·Ψa</c> (the second term only with AuxK codes
    /// <paramref name="a"/> and their <c>Ψa = Δa·W_decᵀ</c>). Accumulates <c>db_enc += Σ_b dU</c> and writes
    /// the column sums of dU and f.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void TopKFamilyBackwardKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> f,
        ArrayView<float> phi,
        ArrayView<float> a,
        ArrayView<float> psi,
        ArrayView<float> norms,
        ArrayView<float> du,
        ArrayView<float> gBEnc,
        ArrayView<float> sums,
        FamilyBackwardArgs p
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
                if (p.HasAux != 0 && a[e] != 0f)
                {
                    g += psi[e];
                }

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
    /// <see cref="TopKFamilyBackwardKernel"/> on the sparse path: one item per feature walking only its
    /// active rows (<paramref name="colIdx"/>[i·B …], <paramref name="colCount"/>[i], from the column
    /// compaction of f), so dU is written at the selected entries only (the sparse weight gradients read
    /// nothing else) and the work is O(B·k) instead of O(B·M).
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void TopKFamilySparseBackwardKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> f,
        ArrayView<float> phi,
        ArrayView<float> a,
        ArrayView<float> psi,
        ArrayView<float> norms,
        ArrayView<float> du,
        ArrayView<float> gBEnc,
        ArrayView<float> sums,
        ArrayView<int> colIdx,
        ArrayView<int> colCount,
        FamilyBackwardArgs p
    )
    {
        for (int i = gridIndex; i < count; i += stride)
        {
            float sparsity = p.LambdaOverB * (p.WeightedL1 != 0 ? norms[i] : 1f);
            float sumDu = 0f,
                sumF = 0f;
            int n = colCount[i];
            for (int t = 0; t < n; t++)
            {
                int e = colIdx[i * p.Rows + t] * p.M + i;
                float g = phi[e] + sparsity;
                if (p.HasAux != 0 && a[e] != 0f)
                {
                    g += psi[e];
                }

                du[e] = g;
                sumDu += g;
                sumF += f[e];
            }

            gBEnc[i] += sumDu;
            sums[i] = sumDu;
            sums[2 * p.M + i] = sumF;
        }
    }

    /// <summary>
    /// BatchTopK / Matryoshka inference: a JumpReLU with one threshold θ = <c>theta[0]</c> shared by every
    /// feature, <c>z = U + b_enc</c>, <c>f = z·1[z &gt; 0]·1[z &gt; θ]</c>.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void GlobalThresholdEncodeKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> u,
        ArrayView<float> bEnc,
        ArrayView<float> theta,
        ArrayView<float> f,
        int m
    )
    {
        float t = theta[0];
        for (int e = gridIndex; e < count; e += stride)
        {
            float z = u[e] + bEnc[e % m];
            f[e] = z > 0f && z > t ? z : 0f;
        }
    }

    /// <summary>
    /// One update of the BatchTopK inference threshold from the batch's smallest positive activation
    /// <c>m = minPositive[0]</c> (+∞ when none). SAELens: skip without positives, else
    /// <c>θ ← (1−η)·θ + η·m</c> starting from θ = 0. dictionary_learning: only once the 0-based step
    /// exceeds the start step (<c>step &gt; threshold_start_step</c>, trainers/batch_top_k.py),
    /// <c>m := 0</c> without positives, the first update sets θ = m (θ &lt; 0 marks "unset"), later
    /// <c>θ ← β·θ + (1−β)·m</c>. A single work item.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void ThresholdUpdateKernel(
        Index1D gridIndex,
        ArrayView<float> theta,
        ArrayView<float> minPositive,
        ThresholdArgs p
    )
    {
        if (gridIndex != 0)
        {
            return;
        }

        float m = minPositive[0];
        bool any = m < float.PositiveInfinity;
        float t = theta[0];
        if (p.SaeLens != 0)
        {
            if (any)
            {
                float current = t < 0f ? 0f : t;
                theta[0] = (1f - p.Rate) * current + p.Rate * m;
            }
        }
        else if (p.Step - 1 > p.StartStep)
        {
            float v = any ? m : 0f;
            theta[0] = t < 0f ? v : p.Rate * t + (1f - p.Rate) * v;
        }
    }

    /// <summary>
    /// Feature-sharded top-k, before the merge: per row of <paramref name="f"/> [rows, m] (a block's
    /// selection, at most k non-zero values per row), its non-zero values in column order into
    /// <paramref name="values"/> [rows, k], NaN after the last. One item per row.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void RowNonZerosKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> f,
        ArrayView<float> values,
        int m,
        int k
    )
    {
        for (int row = gridIndex; row < count; row += stride)
        {
            int n = 0;
            for (int i = 0; i < m && n < k; i++)
            {
                float v = f[row * m + i];
                if (v != 0f)
                {
                    values[row * k + n] = v;
                    n++;
                }
            }

            for (; n < k; n++)
            {
                values[row * k + n] = float.NaN;
            }
        }
    }

    /// <summary>
    /// Feature-sharded top-k, after the merge: keeps in row b of <paramref name="f"/> [rows, m] the non-zero
    /// values above <paramref name="threshold"/>[b] and the first <paramref name="ties"/>[b] (in column
    /// order) equal to it; zeroes the rest. One item per row.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void KeepAboveRowThresholdKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> f,
        ArrayView<float> threshold,
        ArrayView<float> ties,
        int m
    )
    {
        for (int row = gridIndex; row < count; row += stride)
        {
            float t = threshold[row];
            int left = (int)ties[row];
            for (int i = 0; i < m; i++)
            {
                float v = f[row * m + i];
                bool keep = v != 0f && v > t;
                if (v != 0f && v == t && left > 0)
                {
                    keep = true;
                    left--;
                }

                f[row * m + i] = keep ? v : 0f;
            }
        }
    }

    /// <summary>Copies the first <paramref name="width"/> columns of <paramref name="src"/> [rows, m] into
    /// <paramref name="dst"/> [rows, width], one item per output element.</summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void CopyPrefixColumnsKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> src,
        ArrayView<float> dst,
        int m,
        int width
    )
    {
        for (int e = gridIndex; e < count; e += stride)
        {
            int row = e / width;
            dst[e] = src[row * m + (e - row * width)];
        }
    }

    /// <summary>Adds <paramref name="src"/> [rows, width] into the first <paramref name="width"/> columns of
    /// <paramref name="dst"/> [rows, m], one item per element of src.</summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void AddPrefixColumnsKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> src,
        ArrayView<float> dst,
        int m,
        int width
    )
    {
        for (int e = gridIndex; e < count; e += stride)
        {
            int row = e / width;
            dst[row * m + (e - row * width)] += src[e];
        }
    }

    /// <summary>
    /// The L0 count of dictionary_learning's target-L0 loss per row, one item per row:
    /// <c>rows[b] = Σ_i 1[s_bi &gt; θ_i]</c> with <c>s = f = z·1[z &gt; θ]·1[z &gt; 0]</c> (without the
    /// last factor when <paramref name="relu"/> = 0, dictionary_learning's training forward)
    /// (<paramref name="onFeatures"/> = 1: dictionary_learning's <c>StepFunction.apply(f, θ, ε)</c>) or
    /// <c>s = z</c> (0: the step on the pre-activation), <c>z = U + b_enc</c>.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void JumpReluStepCountKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> u,
        ArrayView<float> bEnc,
        ArrayView<float> theta,
        ArrayView<float> rows,
        int m,
        int onFeatures,
        int relu
    )
    {
        for (int b = gridIndex; b < count; b += stride)
        {
            float n = 0f;
            for (int i = 0; i < m; i++)
            {
                float z = u[b * m + i] + bEnc[i];
                float t = theta[i];
                float s = onFeatures != 0 ? (z > t && (relu == 0 || z > 0f) ? z : 0f) : z;
                n += s > t ? 1f : 0f;
            }

            rows[b] = n;
        }
    }

    /// <summary>
    /// JumpReLU's sparse-path support, one item per element of [B, M]: <c>support[b, i] = 1</c> where
    /// <see cref="JumpReluBackwardKernel"/> reads Φ or writes a non-zero dU, else 0. With
    /// <c>z = U + b_enc</c> (float32, as the backward forms it) those are the entries whose scaled distance
    /// <c>(z − θ)/ε</c> exceeds −½ — the active ones (<c>z &gt; θ</c>) and the kernel window below θ, in
    /// which the θ pseudo-derivative (and the straight-through option) reads Φ; with θ &lt; ε/2 the window
    /// takes in pre-activations at or below 0 as well — and, when <paramref name="preAct"/> is set, every
    /// entry <c>z &lt; θ</c> of a latent with <c>dead[i] &gt; 0</c> (the pre-activation loss's dU). The step
    /// on f reads neither Φ nor writes dU, so it adds nothing.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void JumpReluSupportKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> u,
        ArrayView<float> bEnc,
        ArrayView<float> theta,
        ArrayView<float> dead,
        ArrayView<float> support,
        int m,
        float invBandwidth,
        int preAct
    )
    {
        for (int e = gridIndex; e < count; e += stride)
        {
            int i = e % m;
            float z = u[e] + bEnc[i];
            float t = theta[i];
            // The same float32 expression as the backward's window test, so that the two agree bit for bit.
            float scaled = (z - t) * invBandwidth;
            bool reads = scaled > -0.5f || z > t;
            bool preActWrites = preAct != 0 && dead[i] > 0f && t > z;
            support[e] = reads || preActWrites ? 1f : 0f;
        }
    }

    /// <summary>
    /// JumpReLU backward (Rajamanoharan et al. 2024, Eqs. 11-12; SAELens "step" sparsity), one item per
    /// feature walking the batch. With <c>z = U + b_enc</c>, <c>H = 1[z &gt; θ]</c> and the rectangle kernel
    /// <c>K = 1[|z − θ|/ε &lt; ½]</c>: <c>dU = H·Φ</c> (plus, with the straight-through option,
    /// <c>K·(θ·Φ + λ/B)/ε</c>); <c>dθ = Σ_b K·(−θ·Φ − λ/B)/ε</c>; <c>db_enc += Σ_b dU</c>. Writes the column
    /// sums of dU and of H (the L0 penalty counts active features). With the tanh sparsity, Φ gains
    /// <c>(λ/B)·c·n_i·sech²(c·f·n_i)</c> (n_i = ‖W_dec[i]‖, <paramref name="norms"/>) before the step's
    /// gradient and the pseudo-derivative, no step term, and the second column sum is
    /// <c>Σ_b c·f·sech²(c·f·n_i)</c> for the decoder-norm gradient. With the pre-activation loss
    /// (Anthropic, January 2025; SAELens <c>pre_act_loss_coefficient</c>)
    /// <c>(λ_P/B)·Σ_b Σ_i ReLU(θ_i − z_bi)·dead_i·n_i</c>, dead_i = <c>extra[i]</c> (0 or 1):
    /// <c>dU −= (λ_P/B)·dead_i·n_i·1[θ_i &gt; z]</c>, <c>dθ_i += (λ_P/B)·Σ_b dead_i·n_i·1[θ_i &gt; z]</c>,
    /// and <c>extra[M + i] = dead_i·Σ_b ReLU(θ_i − z_bi)</c> (its decoder-norm gradient and its value).
    /// With dictionary_learning's target-L0 sparsity <c>λ·(l0/T − 1)²</c>, <c>l0 = extra[2M]/B</c> (from
    /// <see cref="JumpReluStepCountKernel"/>), the step's gradient per entry is
    /// <c>(λ/B)·(2/T)·(l0/T − 1)</c> instead of λ/B; with <c>StepOnFeatures</c> the step's kernel window is
    /// on <c>f − θ</c> (dictionary_learning's <c>StepFunction.apply(f, θ, ε)</c>) instead of <c>z − θ</c>.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void JumpReluBackwardKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> u,
        ArrayView<float> bEnc,
        ArrayView<float> theta,
        ArrayView<float> phi,
        ArrayView<float> norms,
        ArrayView<float> du,
        ArrayView<float> gBEnc,
        ArrayView<float> gTheta,
        ArrayView<float> sums,
        ArrayView<float> extra,
        FamilyBackwardArgs p
    )
    {
        for (int i = gridIndex; i < count; i += stride)
        {
            float t = theta[i];
            float bias = bEnc[i];
            float n = norms[i];
            bool preAct = p.PreAct != 0 && extra[i] > 0f;
            float preActGrad = preAct ? p.PreActOverB * n : 0f;
            // ∂L/∂H_bi of the sparsity term: λ/B (step), 0 (tanh), or dictionary_learning's target-L0
            // (λ/B)·(2/T)·(l0/T − 1) with l0 = extra[2M]/B.
            float step =
                p.TargetL0 != 0
                    ? p.LambdaOverB * 2f * p.InvTargetL0 * (extra[2 * p.M] * p.InvTargetL0 / p.Rows - 1f)
                : p.Tanh != 0 ? 0f
                : p.LambdaOverB;
            float sumDu = 0f,
                sumDt = 0f,
                active = 0f,
                below = 0f;
            for (int b = 0; b < p.Rows; b++)
            {
                int e = b * p.M + i;
                float z = u[e] + bias;
                float ph = phi[e];
                float f = z > t && (p.NoRelu != 0 || z > 0f) ? z : 0f;
                if (p.Tanh != 0)
                {
                    // ∂/∂f of (λ/B)·tanh(c·f·n): (λ/B)·c·n·sech²(c·f·n); the decoder-norm part goes to sums.
                    float th = XMath.Tanh(p.TanhScale * f * n);
                    float sech2 = 1f - th * th;
                    ph += p.LambdaOverB * p.TanhScale * n * sech2;
                    active += p.TanhScale * f * sech2;
                }
                else if (z > t)
                {
                    active += 1f;
                }

                float scaled = (z - t) * p.InvBandwidth;
                bool window = scaled > -0.5f && scaled < 0.5f;
                float g = z > t ? ph : 0f;
                if (window)
                {
                    // The step's pseudo-derivative joins the JumpReLU's when both see the pre-activation.
                    float pseudo = (t * ph + (p.StepOnFeatures != 0 ? 0f : step)) * p.InvBandwidth;
                    sumDt -= pseudo;
                    if (p.SteToInput != 0)
                    {
                        g += pseudo;
                    }
                }

                // dictionary_learning's Step(f, θ): its window is on f − θ, so an inactive latent (f = 0)
                // is in it only while θ < ε/2 (saprmarks/dictionary_learning#55).
                float stepScaled = (f - t) * p.InvBandwidth;
                if (p.StepOnFeatures != 0 && stepScaled > -0.5f && stepScaled < 0.5f)
                {
                    sumDt -= step * p.InvBandwidth;
                }

                if (preAct && t > z)
                {
                    // ∂/∂z and ∂/∂θ of (λ_P/B)·(θ − z)·n for a dead latent below its threshold.
                    g -= preActGrad;
                    sumDt += preActGrad;
                    below += t - z;
                }

                du[e] = g;
                sumDu += g;
            }

            gBEnc[i] += sumDu;
            gTheta[i] += sumDt;
            sums[i] = sumDu;
            sums[2 * p.M + i] = active;
            if (p.PreAct != 0)
            {
                extra[p.M + i] = below;
            }
        }
    }
}
