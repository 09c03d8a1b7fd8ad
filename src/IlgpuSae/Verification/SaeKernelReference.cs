namespace IlgpuSae.Verification;

/// <summary>
/// Reference values of one kernel output and, per value, the sum of the magnitudes of the terms the float32
/// kernel
/// adds up to form it (Σ|term|, as <see cref="CpuReference.MatMul"/> returns): that sum bounds the rounding
/// error.
/// </summary>
/// <param name="Values">The exact (double-precision) values, row-major like the kernel's output.</param>
/// <param name="Magnitudes">Σ|term| per value.</param>
public sealed record ReferenceOutput(double[] Values, double[] Magnitudes);

/// <summary>Reference outputs of the gated element-wise backward kernel.</summary>
/// <param name="DU">dU [B, M] (overwritten).</param>
/// <param name="DUm">dUm [B, M] (overwritten) when untied; <see langword="null"/> when tied (the kernel
/// leaves it untouched).</param>
/// <param name="GradBGate">b_gate's gradient after the kernel's accumulation (+=) [M].</param>
/// <param name="GradBMag">b_mag's gradient after accumulation [M].</param>
/// <param name="GradRMag">r_mag's gradient after accumulation [M]; <see langword="null"/> without r_mag
/// (untouched).</param>
/// <param name="ColSumDU">colsum(dU) [M] (the b_dec input-centring term).</param>
/// <param name="ColSumDUm">colsum(dUm) [M] (zero when tied).</param>
/// <param name="ColSumA">colsum(A) [M] with A = ReLU(π_gate) (the decoder-norm penalty term).</param>
public sealed record GatedBackwardReference(
    ReferenceOutput DU,
    ReferenceOutput? DUm,
    ReferenceOutput GradBGate,
    ReferenceOutput GradBMag,
    ReferenceOutput? GradRMag,
    ReferenceOutput ColSumDU,
    ReferenceOutput ColSumDUm,
    ReferenceOutput ColSumA
);

/// <summary>Reference outputs of the standard (ReLU) element-wise backward kernel.</summary>
/// <param name="DU">dU [B, M] (overwritten).</param>
/// <param name="GradBEnc">b_enc's gradient after the kernel's accumulation (+=) [M].</param>
/// <param name="ColSumDU">colsum(dU) [M].</param>
/// <param name="ColSumF">colsum(F) [M].</param>
public sealed record StandardBackwardReference(
    ReferenceOutput DU,
    ReferenceOutput GradBEnc,
    ReferenceOutput ColSumDU,
    ReferenceOutput ColSumF
);

/// <summary>Reference outputs of the sparse weight-gradient kernel (all after accumulation, +=).</summary>
/// <param name="GradWEnc">dW_enc [d, M].</param>
/// <param name="GradWMag">dW_mag [d, M] when untied; <see langword="null"/> when tied (the kernel leaves it
/// untouched).</param>
/// <param name="GradWDec">dW_dec [M, d].</param>
public sealed record WeightGradientReference(
    ReferenceOutput GradWEnc,
    ReferenceOutput? GradWMag,
    ReferenceOutput GradWDec
);

/// <summary>
/// Double-precision references of the SAE kernels one by one (<c>SaeKernels</c>, <c>SparseKernels</c>),
/// written as
/// plain loops over the kernels' own inputs and layouts, so that a failing test names the kernel rather than
/// the
/// whole training step (<see cref="SaeReference"/> covers the step end to end). B = batch rows, M =
/// dictionary size,
/// d = input width; matrices are row-major. The sparse kernels are specified by their dense definitions: a
/// sparse
/// kernel must give the dense result wherever its index lists say a feature is active.
/// </summary>
/// <remarks>
/// Equations: standard SAE, Rajamanoharan et al. 2024 ("Improving Dictionary Learning with Gated Sparse
/// Autoencoders", arXiv 2404.16014) §2.1–2.2, Eqs. 2–4; gated SAE, same paper §3.2.1 Eqs. 6–7 (encoder,
/// weight
/// sharing W_mag = W_gate·diag(e^{r_mag})) and §3.2.2 Eq. 9 (L_gated = L_reconstruct + L_sparsity + L_aux),
/// whose
/// gradients follow from the loss of §3.2.2 by the chain rule (GatedSae.ReferenceBackward lists them);
/// JumpReLU, Rajamanoharan et al. 2024b (arXiv 2407.14435) §2.
/// </remarks>
public static class SaeKernelReference
{
    // ------------------------------------------------------------------ encoders

    /// <summary>Standard encoder, Eq. 2: <c>F = ReLU(U + b_enc)</c> for U [B, M].</summary>
    public static double[] ReluEncode(float[] u, float[] bEnc, int rows, int m)
    {
        ArgumentNullException.ThrowIfNull(u);
        ArgumentNullException.ThrowIfNull(bEnc);
        var f = new double[rows * m];
        for (int b = 0; b < rows; b++)
        {
            for (int i = 0; i < m; i++)
            {
                double z = (double)u[b * m + i] + bEnc[i];
                f[b * m + i] = Math.Max(z, 0);
            }
        }

        return f;
    }

    /// <summary>
    /// JumpReLU encoder: <c>z = U + b_enc</c>, <c>F = ReLU(z)·H(z − θ)</c> with the strict step H(0) = 0
    /// (SAELens'
    /// inference form: ReLU before the threshold, so a negative θ acts as a plain ReLU).
    /// </summary>
    public static double[] JumpReluEncode(float[] u, float[] bEnc, float[] threshold, int rows, int m)
    {
        ArgumentNullException.ThrowIfNull(u);
        ArgumentNullException.ThrowIfNull(bEnc);
        ArgumentNullException.ThrowIfNull(threshold);
        var f = new double[rows * m];
        for (int b = 0; b < rows; b++)
        {
            for (int i = 0; i < m; i++)
            {
                double z = (double)u[b * m + i] + bEnc[i];
                f[b * m + i] = z > 0 && z > threshold[i] ? z : 0;
            }
        }

        return f;
    }

    /// <summary>
    /// JumpReLU's sparse-path support: 1 where <c>(z − θ)/ε &gt; −½</c> with <c>z = U + b_enc</c> (the
    /// active entries and the pseudo-derivative's window below θ) or, when <paramref name="preAct"/>, where
    /// <c>z &lt; θ</c> for a latent with <c>dead[i] &gt; 0</c>; else 0.
    /// </summary>
    public static double[] JumpReluSupport(
        float[] u,
        float[] bEnc,
        float[] threshold,
        float[] dead,
        int rows,
        int m,
        double bandwidth,
        bool preAct
    )
    {
        ArgumentNullException.ThrowIfNull(u);
        ArgumentNullException.ThrowIfNull(bEnc);
        ArgumentNullException.ThrowIfNull(threshold);
        ArgumentNullException.ThrowIfNull(dead);
        var support = new double[rows * m];
        for (int b = 0; b < rows; b++)
        {
            for (int i = 0; i < m; i++)
            {
                double z = (double)u[b * m + i] + bEnc[i];
                bool window = (z - threshold[i]) / bandwidth > -0.5;
                bool below = preAct && dead[i] > 0 && z < threshold[i];
                support[b * m + i] = window || below ? 1 : 0;
            }
        }

        return support;
    }

    /// <summary>
    /// Gated encoder, Eqs. 6–7, on the shared projection U = X̃·W_enc [B, M]: <c>π_gate = U + b_gate</c>,
    /// <c>π_mag = e^{r_mag}·Um + b_mag</c>, <c>F = H(π_gate)·ReLU(π_mag)</c> and <c>A = ReLU(π_gate)</c> (the
    /// input of
    /// L_sparsity and L_aux in Eq. 9). Returned stacked as the kernel writes it: F in rows [0, B), A in rows
    /// [B, 2B).
    /// </summary>
    /// <param name="u">U [B, M].</param>
    /// <param name="um">Um = X̃·W_mag [B, M] for an untied SAE; <see langword="null"/> when tied (Um =
    /// U).</param>
    /// <param name="bGate">b_gate [M].</param>
    /// <param name="bMag">b_mag [M].</param>
    /// <param name="rMag">r_mag [M]; <see langword="null"/> without r_mag (scale 1).</param>
    /// <param name="rows">B.</param>
    /// <param name="m">M.</param>
    public static ReferenceOutput GatedEncode(
        float[] u,
        float[]? um,
        float[] bGate,
        float[] bMag,
        float[]? rMag,
        int rows,
        int m
    )
    {
        ArgumentNullException.ThrowIfNull(u);
        ArgumentNullException.ThrowIfNull(bGate);
        ArgumentNullException.ThrowIfNull(bMag);
        var magU = um ?? u;
        var fa = new double[2 * rows * m];
        var mag = new double[2 * rows * m];
        for (int b = 0; b < rows; b++)
        {
            for (int i = 0; i < m; i++)
            {
                int e = b * m + i;
                double s = rMag is null ? 1 : Math.Exp(rMag[i]);
                double piGate = (double)u[e] + bGate[i];
                double piMag = s * magU[e] + bMag[i];
                bool open = piGate > 0;
                fa[e] = open ? Math.Max(piMag, 0) : 0;
                fa[rows * m + e] = Math.Max(piGate, 0);
                mag[e] = open && piMag > 0 ? Math.Abs(s * magU[e]) + Math.Abs(bMag[i]) : 0;
                mag[rows * m + e] = open ? Math.Abs(u[e]) + Math.Abs(bGate[i]) : 0;
            }
        }

        return new ReferenceOutput(fa, mag);
    }

    // ------------------------------------------------------------------ decoder residual

    /// <summary>
    /// Decoder bias and scaled residual on stacked reconstructions [R, d] (R = B, or 2B for gated: X̂ then
    /// X̂a):
    /// <c>X̂ ← X̂ + b_dec</c> and <c>Δ = scale·(X̂ − X[row mod B])</c> (scale = 2/B for Eq. 4/9's batch mean,
    /// times
    /// 1/d under the paper's /d convention).
    /// </summary>
    /// <returns>The updated X̂ and Δ, both [R, d].</returns>
    public static (ReferenceOutput Xhat, ReferenceOutput Delta) Residual(
        float[] xhat,
        float[] x,
        float[] bDec,
        int stackedRows,
        int d,
        int batch,
        double scale
    )
    {
        ArgumentNullException.ThrowIfNull(xhat);
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(bDec);
        int n = stackedRows * d;
        var (h, hMag, delta, deltaMag) = (new double[n], new double[n], new double[n], new double[n]);
        for (int r = 0; r < stackedRows; r++)
        {
            for (int j = 0; j < d; j++)
            {
                int e = r * d + j;
                double target = x[r % batch * d + j];
                h[e] = (double)xhat[e] + bDec[j];
                hMag[e] = Math.Abs(xhat[e]) + Math.Abs(bDec[j]);
                delta[e] = scale * (h[e] - target);
                deltaMag[e] = Math.Abs(scale) * (hMag[e] + Math.Abs(target));
            }
        }

        return (new ReferenceOutput(h, hMag), new ReferenceOutput(delta, deltaMag));
    }

    // ------------------------------------------------------------------ element-wise backward

    /// <summary>
    /// Standard SAE element-wise backward (gradient of Eq. 4 through F = ReLU(Û)):
    /// <c>dU = (Φ + (λ/B)·w_i)·1[F &gt; 0]</c> with Φ = Δ·W_decᵀ and w_i = ‖W_dec[i]‖ (decoder-norm-weighted
    /// L1) or 1;
    /// <c>db_enc += colsum(dU)</c>; also colsum(dU) and colsum(F).
    /// </summary>
    /// <param name="f">F [B, M].</param>
    /// <param name="phi">Φ [B, M].</param>
    /// <param name="norms">‖W_dec[i]‖ [M] for the weighted penalty; <see langword="null"/> for w_i =
    /// 1.</param>
    /// <param name="gBEnc">b_enc's gradient before the kernel [M].</param>
    /// <param name="rows">B.</param>
    /// <param name="m">M.</param>
    /// <param name="lambdaOverB">λ/B.</param>
    public static StandardBackwardReference StandardBackward(
        float[] f,
        float[] phi,
        float[]? norms,
        float[] gBEnc,
        int rows,
        int m,
        double lambdaOverB
    )
    {
        ArgumentNullException.ThrowIfNull(f);
        ArgumentNullException.ThrowIfNull(phi);
        ArgumentNullException.ThrowIfNull(gBEnc);
        var du = new ReferenceOutput(new double[rows * m], new double[rows * m]);
        var gb = new ReferenceOutput(new double[m], new double[m]);
        var sumDu = new ReferenceOutput(new double[m], new double[m]);
        var sumF = new ReferenceOutput(new double[m], new double[m]);
        for (int i = 0; i < m; i++)
        {
            double sparsity = lambdaOverB * (norms is null ? 1 : norms[i]);
            for (int b = 0; b < rows; b++)
            {
                int e = b * m + i;
                bool active = f[e] > 0;
                du.Values[e] = active ? phi[e] + sparsity : 0;
                du.Magnitudes[e] = active ? Math.Abs(phi[e]) + Math.Abs(sparsity) : 0;
                sumDu.Values[i] += du.Values[e];
                sumDu.Magnitudes[i] += du.Magnitudes[e];
                sumF.Values[i] += f[e];
                sumF.Magnitudes[i] += Math.Abs(f[e]);
            }

            gb.Values[i] = gBEnc[i] + sumDu.Values[i];
            gb.Magnitudes[i] = Math.Abs(gBEnc[i]) + sumDu.Magnitudes[i];
        }

        return new StandardBackwardReference(du, gb, sumDu, sumF);
    }

    /// <summary>
    /// Gated element-wise backward (gradient of Eq. 9): with s = e^{r_mag} (or 1), π_gate = U + b_gate,
    /// π_mag = s·Um + b_mag, Φ = Δ·W_decᵀ and Ψ = Δa·W_decᵀ:
    /// <c>dΠm = Φ·1[π_gate &gt; 0]·1[π_mag &gt; 0]</c> (L_reconstruct reaches the magnitude path only),
    /// <c>dΠg = (Ψ + (λ/B)·w_i)·1[π_gate &gt; 0]</c> (L_sparsity and L_aux reach the gate path only),
    /// <c>dU = dΠg + s·dΠm</c> when tied (Eq. 7's weight sharing), or <c>dU = dΠg</c>, <c>dUm = dΠm</c> when
    /// untied;
    /// <c>db_gate += colsum(dΠg)</c>, <c>db_mag += colsum(dΠm)</c>, <c>dr_mag += s·colsum(dΠm·Um)</c>.
    /// </summary>
    /// <param name="u">U [B, M].</param>
    /// <param name="um">Um [B, M] when untied; <see langword="null"/> when tied (Um = U).</param>
    /// <param name="phiPsi">[Φ; Ψ] stacked [2B, M].</param>
    /// <param name="bGate">b_gate [M].</param>
    /// <param name="bMag">b_mag [M].</param>
    /// <param name="rMag">r_mag [M]; <see langword="null"/> without r_mag.</param>
    /// <param name="norms">‖W_dec[i]‖ [M] for the decoder-norm-weighted L1; <see langword="null"/> for w_i =
    /// 1.</param>
    /// <param name="gBGate">b_gate's gradient before the kernel [M].</param>
    /// <param name="gBMag">b_mag's gradient before the kernel [M].</param>
    /// <param name="gRMag">r_mag's gradient before the kernel [M] (required with
    /// <paramref name="rMag"/>).</param>
    /// <param name="rows">B.</param>
    /// <param name="m">M.</param>
    /// <param name="lambdaOverB">λ/B.</param>
    public static GatedBackwardReference GatedBackward(
        float[] u,
        float[]? um,
        float[] phiPsi,
        float[] bGate,
        float[] bMag,
        float[]? rMag,
        float[]? norms,
        float[] gBGate,
        float[] gBMag,
        float[]? gRMag,
        int rows,
        int m,
        double lambdaOverB
    )
    {
        ArgumentNullException.ThrowIfNull(u);
        ArgumentNullException.ThrowIfNull(phiPsi);
        ArgumentNullException.ThrowIfNull(bGate);
        ArgumentNullException.ThrowIfNull(bMag);
        ArgumentNullException.ThrowIfNull(gBGate);
        ArgumentNullException.ThrowIfNull(gBMag);
        if (rMag is not null)
        {
            ArgumentNullException.ThrowIfNull(gRMag);
        }

        bool untied = um is not null;
        var magU = um ?? u;
        ReferenceOutput New(int n) => new(new double[n], new double[n]);
        var (du, dum) = (New(rows * m), untied ? New(rows * m) : null);
        var (gGate, gMag, gR) = (New(m), New(m), rMag is null ? null : New(m));
        var (sumDu, sumDum, sumA) = (New(m), New(m), New(m));
        for (int i = 0; i < m; i++)
        {
            double s = rMag is null ? 1 : Math.Exp(rMag[i]);
            double sparsity = lambdaOverB * (norms is null ? 1 : norms[i]);
            double sumR = 0,
                sumRMag = 0;
            for (int b = 0; b < rows; b++)
            {
                int e = b * m + i;
                double phi = phiPsi[e],
                    psi = phiPsi[rows * m + e];
                double piGate = (double)u[e] + bGate[i];
                double piMag = s * magU[e] + bMag[i];
                bool open = piGate > 0;
                double dPiMag = open && piMag > 0 ? phi : 0;
                double dPiMagAbs = Math.Abs(dPiMag);
                double dPiGate = open ? psi + sparsity : 0;
                double dPiGateAbs = open ? Math.Abs(psi) + Math.Abs(sparsity) : 0;
                if (untied)
                {
                    du.Values[e] = dPiGate;
                    du.Magnitudes[e] = dPiGateAbs;
                    dum!.Values[e] = dPiMag;
                    dum.Magnitudes[e] = dPiMagAbs;
                    sumDum.Values[i] += dPiMag;
                    sumDum.Magnitudes[i] += dPiMagAbs;
                }
                else
                {
                    du.Values[e] = dPiGate + s * dPiMag;
                    du.Magnitudes[e] = dPiGateAbs + s * dPiMagAbs;
                }

                sumDu.Values[i] += du.Values[e];
                sumDu.Magnitudes[i] += du.Magnitudes[e];
                gGate.Values[i] += dPiGate;
                gGate.Magnitudes[i] += dPiGateAbs;
                gMag.Values[i] += dPiMag;
                gMag.Magnitudes[i] += dPiMagAbs;
                sumR += dPiMag * magU[e];
                sumRMag += dPiMagAbs * Math.Abs(magU[e]);
                sumA.Values[i] += Math.Max(piGate, 0);
                sumA.Magnitudes[i] += open ? Math.Abs(u[e]) + Math.Abs(bGate[i]) : 0;
            }

            gGate.Values[i] += gBGate[i];
            gGate.Magnitudes[i] += Math.Abs(gBGate[i]);
            gMag.Values[i] += gBMag[i];
            gMag.Magnitudes[i] += Math.Abs(gBMag[i]);
            if (gR is not null)
            {
                gR.Values[i] = gRMag![i] + s * sumR;
                gR.Magnitudes[i] = Math.Abs(gRMag[i]) + s * sumRMag;
            }
        }

        return new GatedBackwardReference(du, dum, gGate, gMag, gR, sumDu, sumDum, sumA);
    }

    /// <summary>
    /// Gradient of the decoder-norm-weighted sparsity penalty <c>(λ/B)·Σ_b Σ_i a_bi·‖W_dec[i]‖</c>
    /// (Anthropic's
    /// April 2024 update, as SAELens trains it) with respect to W_dec:
    /// <c>dW_dec[i,:] += (λ/B)·colsum(a)_i·W_dec[i,:]/‖W_dec[i]‖</c>, rows with a zero norm left unchanged.
    /// </summary>
    /// <param name="wDec">W_dec [M, d].</param>
    /// <param name="colA">colsum(a) [M] (A for gated, F for standard).</param>
    /// <param name="norms">‖W_dec[i]‖ [M] as the kernel receives them.</param>
    /// <param name="gWDec">W_dec's gradient before the kernel [M, d].</param>
    /// <param name="m">M.</param>
    /// <param name="d">d.</param>
    /// <param name="lambdaOverB">λ/B.</param>
    public static ReferenceOutput DecoderNormPenaltyGrad(
        float[] wDec,
        float[] colA,
        float[] norms,
        float[] gWDec,
        int m,
        int d,
        double lambdaOverB
    )
    {
        ArgumentNullException.ThrowIfNull(wDec);
        ArgumentNullException.ThrowIfNull(colA);
        ArgumentNullException.ThrowIfNull(norms);
        ArgumentNullException.ThrowIfNull(gWDec);
        var g = new ReferenceOutput(new double[m * d], new double[m * d]);
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < d; j++)
            {
                int e = i * d + j;
                double term = norms[i] > 0 ? lambdaOverB * colA[i] * wDec[e] / norms[i] : 0;
                g.Values[e] = gWDec[e] + term;
                g.Magnitudes[e] = Math.Abs(gWDec[e]) + Math.Abs(term);
            }
        }

        return g;
    }

    /// <summary>
    /// Dead-feature bookkeeping (the <c>StepsSinceFired</c> operator): a feature that fired in this batch
    /// (<c>count &gt; 0</c>) restarts at 0, any other counts one more step: <c>y = count &gt; 0 ? 0 : steps +
    /// 1</c>.
    /// </summary>
    public static double[] StepsSinceFired(float[] steps, float[] counts)
    {
        ArgumentNullException.ThrowIfNull(steps);
        ArgumentNullException.ThrowIfNull(counts);
        var y = new double[steps.Length];
        for (int i = 0; i < steps.Length; i++)
        {
            y[i] = counts[i] > 0 ? 0 : steps[i] + 1.0;
        }

        return y;
    }

    // ------------------------------------------------------------------ top-k selection

    /// <summary>
    /// TopK activation per row (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"):
    /// <c>f = TopK(ReLU(pre))</c> for pre [rows, m]. Defined by sorting: in each row, order the columns by
    /// (value descending, column ascending) and keep the first <paramref name="k"/> whose value is positive;
    /// every other element is 0 (ties at the k-th value go to the lowest column, NaN is not positive).
    /// </summary>
    public static double[] TopKRows(float[] pre, int rows, int m, int k)
    {
        ArgumentNullException.ThrowIfNull(pre);
        var f = new double[rows * m];
        for (int b = 0; b < rows; b++)
        {
            KeepLargest(pre, f, b * m, m, k);
        }

        return f;
    }

    /// <summary>
    /// BatchTopK activation (Bussmann et al. 2024, "BatchTopK Sparse Autoencoders"): the
    /// <paramref name="kTotal"/> largest positive values of the whole batch pre [rows, m], flattened
    /// row-major, ordered by (value descending, flat index ascending); every other element is 0.
    /// </summary>
    public static double[] TopKBatch(float[] pre, int rows, int m, int kTotal)
    {
        ArgumentNullException.ThrowIfNull(pre);
        var f = new double[rows * m];
        KeepLargest(pre, f, 0, rows * m, kTotal);
        return f;
    }

    private static void KeepLargest(float[] pre, double[] f, int start, int length, int k)
    {
        var order = Enumerable
            .Range(start, length)
            .Where(i => pre[i] > 0)
            .OrderByDescending(i => (double)pre[i])
            .ThenBy(i => i)
            .Take(k);
        foreach (int i in order)
        {
            f[i] = pre[i];
        }
    }

    // ------------------------------------------------------------------ sparse kernels (dense definitions)

    /// <summary>
    /// The support of each row: for row b, the features i with <c>active[b, i] &gt; 0</c> in increasing order
    /// (what
    /// CompactRows lists in rowIdx[b·M …] and counts in rowCount[b]).
    /// </summary>
    public static int[][] CompactRows(float[] active, int rows, int m)
    {
        ArgumentNullException.ThrowIfNull(active);
        var lists = new int[rows][];
        for (int b = 0; b < rows; b++)
        {
            var list = new List<int>();
            for (int i = 0; i < m; i++)
            {
                if (active[b * m + i] > 0)
                {
                    list.Add(i);
                }
            }

            lists[b] = [.. list];
        }

        return lists;
    }

    /// <summary>
    /// The support of each feature: for feature i, the rows b with <c>active[b, i] &gt; 0</c> in increasing
    /// order
    /// (what CompactColumns lists in colIdx[i·B …] and counts in colCount[i]).
    /// </summary>
    public static int[][] CompactColumns(float[] active, int rows, int m)
    {
        ArgumentNullException.ThrowIfNull(active);
        var lists = new int[m][];
        for (int i = 0; i < m; i++)
        {
            var list = new List<int>();
            for (int b = 0; b < rows; b++)
            {
                if (active[b * m + i] > 0)
                {
                    list.Add(b);
                }
            }

            lists[i] = [.. list];
        }

        return lists;
    }

    /// <summary>
    /// Dense definition of the sparse decoder (Eq. 3 / Eq. 9's two reconstructions) and residual:
    /// <c>X̂ = F·W_dec + b_dec</c> over every feature (and <c>X̂a = A·W_dec + b_dec</c> when gated),
    /// <c>Δ = scale·(X̂ − X)</c>. Stacked like the kernel's output: [B, d], or [2B, d] with X̂a/Δa in rows
    /// [B, 2B).
    /// </summary>
    /// <param name="fa">F [B, M], or [F; A] [2B, M] when gated.</param>
    /// <param name="wDec">W_dec [M, d].</param>
    /// <param name="bDec">b_dec [d].</param>
    /// <param name="x">X [B, d].</param>
    /// <param name="batch">B.</param>
    /// <param name="m">M.</param>
    /// <param name="d">d.</param>
    /// <param name="gated">Whether to decode A as well.</param>
    /// <param name="scale">The residual scale.</param>
    public static (ReferenceOutput Xhat, ReferenceOutput Delta) SparseDecode(
        float[] fa,
        float[] wDec,
        float[] bDec,
        float[] x,
        int batch,
        int m,
        int d,
        bool gated,
        double scale
    )
    {
        ArgumentNullException.ThrowIfNull(fa);
        ArgumentNullException.ThrowIfNull(wDec);
        ArgumentNullException.ThrowIfNull(bDec);
        ArgumentNullException.ThrowIfNull(x);
        int stacked = gated ? 2 * batch : batch;
        var h = new ReferenceOutput(new double[stacked * d], new double[stacked * d]);
        var delta = new ReferenceOutput(new double[stacked * d], new double[stacked * d]);
        for (int r = 0; r < stacked; r++)
        {
            for (int j = 0; j < d; j++)
            {
                double sum = bDec[j],
                    mag = Math.Abs(bDec[j]);
                for (int i = 0; i < m; i++)
                {
                    double term = (double)fa[r * m + i] * wDec[i * d + j];
                    sum += term;
                    mag += Math.Abs(term);
                }

                int e = r * d + j;
                double target = x[r % batch * d + j];
                h.Values[e] = sum;
                h.Magnitudes[e] = mag;
                delta.Values[e] = scale * (sum - target);
                delta.Magnitudes[e] = Math.Abs(scale) * (mag + Math.Abs(target));
            }
        }

        return (h, delta);
    }

    /// <summary>
    /// Dense definition of the sparse [Φ; Ψ] kernel: <c>[Φ; Ψ] = [Δ; Δa]·W_decᵀ</c>, i.e.
    /// <c>Φ[b,i] = Δ[b]·W_dec[i]</c> (and <c>Ψ[b,i] = Δa[b]·W_dec[i]</c> when gated). The sparse kernel
    /// computes these
    /// at the active (b, i) only and leaves the other entries as they were.
    /// </summary>
    /// <param name="delta">Δ [B, d], or [Δ; Δa] [2B, d] when gated.</param>
    /// <param name="wDec">W_dec [M, d].</param>
    /// <param name="stackedRows">B, or 2B when gated.</param>
    /// <param name="m">M.</param>
    /// <param name="d">d.</param>
    /// <returns>[Φ] or [Φ; Ψ], [stackedRows, M].</returns>
    public static ReferenceOutput SparsePhiPsi(float[] delta, float[] wDec, int stackedRows, int m, int d)
    {
        ArgumentNullException.ThrowIfNull(delta);
        ArgumentNullException.ThrowIfNull(wDec);
        var y = new ReferenceOutput(new double[stackedRows * m], new double[stackedRows * m]);
        for (int r = 0; r < stackedRows; r++)
        {
            for (int i = 0; i < m; i++)
            {
                double sum = 0,
                    mag = 0;
                for (int j = 0; j < d; j++)
                {
                    double term = (double)delta[r * d + j] * wDec[i * d + j];
                    sum += term;
                    mag += Math.Abs(term);
                }

                y.Values[r * m + i] = sum;
                y.Magnitudes[r * m + i] = mag;
            }
        }

        return y;
    }

    /// <summary>
    /// Dense definition of the sparse weight-gradient kernel (the GEMMs of the dense path):
    /// <c>dW_enc += X̃ᵀ·dU</c>, <c>dW_mag += X̃ᵀ·dUm</c> (untied), <c>dW_dec += Fᵀ·Δ</c>, plus <c>Aᵀ·Δa</c>
    /// when the
    /// auxiliary reconstruction's decoder is not frozen (SAELens' variant of Eq. 9).
    /// </summary>
    /// <param name="xc">X̃ [B, d].</param>
    /// <param name="du">dU [B, M].</param>
    /// <param name="dum">dUm [B, M] when untied; <see langword="null"/> when tied.</param>
    /// <param name="fa">F [B, M], or [F; A] [2B, M] when <paramref name="auxIntoDecoder"/>.</param>
    /// <param name="delta">Δ [B, d], or [Δ; Δa] [2B, d] when <paramref name="auxIntoDecoder"/>.</param>
    /// <param name="gWEnc">dW_enc before the kernel [d, M].</param>
    /// <param name="gWMag">dW_mag before the kernel [d, M] (required with <paramref name="dum"/>).</param>
    /// <param name="gWDec">dW_dec before the kernel [M, d].</param>
    /// <param name="batch">B.</param>
    /// <param name="m">M.</param>
    /// <param name="d">d.</param>
    /// <param name="auxIntoDecoder">Whether Aᵀ·Δa reaches W_dec.</param>
    public static WeightGradientReference SparseWeightGrad(
        float[] xc,
        float[] du,
        float[]? dum,
        float[] fa,
        float[] delta,
        float[] gWEnc,
        float[]? gWMag,
        float[] gWDec,
        int batch,
        int m,
        int d,
        bool auxIntoDecoder
    )
    {
        ArgumentNullException.ThrowIfNull(xc);
        ArgumentNullException.ThrowIfNull(du);
        ArgumentNullException.ThrowIfNull(fa);
        ArgumentNullException.ThrowIfNull(delta);
        ArgumentNullException.ThrowIfNull(gWEnc);
        ArgumentNullException.ThrowIfNull(gWDec);
        if (dum is not null)
        {
            ArgumentNullException.ThrowIfNull(gWMag);
        }

        var enc = new ReferenceOutput(new double[d * m], new double[d * m]);
        var mag = dum is null ? null : new ReferenceOutput(new double[d * m], new double[d * m]);
        var dec = new ReferenceOutput(new double[m * d], new double[m * d]);
        for (int j = 0; j < d; j++)
        {
            for (int i = 0; i < m; i++)
            {
                int e = j * m + i;
                enc.Values[e] = gWEnc[e];
                enc.Magnitudes[e] = Math.Abs(gWEnc[e]);
                for (int b = 0; b < batch; b++)
                {
                    double term = (double)xc[b * d + j] * du[b * m + i];
                    enc.Values[e] += term;
                    enc.Magnitudes[e] += Math.Abs(term);
                }

                if (mag is not null)
                {
                    mag.Values[e] = gWMag![e];
                    mag.Magnitudes[e] = Math.Abs(gWMag[e]);
                    for (int b = 0; b < batch; b++)
                    {
                        double term = (double)xc[b * d + j] * dum![b * m + i];
                        mag.Values[e] += term;
                        mag.Magnitudes[e] += Math.Abs(term);
                    }
                }
            }
        }

        int decoderRows = auxIntoDecoder ? 2 * batch : batch;
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < d; j++)
            {
                int e = i * d + j;
                dec.Values[e] = gWDec[e];
                dec.Magnitudes[e] = Math.Abs(gWDec[e]);
                for (int r = 0; r < decoderRows; r++)
                {
                    double term = (double)fa[r * m + i] * delta[r * d + j];
                    dec.Values[e] += term;
                    dec.Magnitudes[e] += Math.Abs(term);
                }
            }
        }

        return new WeightGradientReference(enc, mag, dec);
    }
}
