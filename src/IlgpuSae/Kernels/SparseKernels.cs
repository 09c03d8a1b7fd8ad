using ILGPU;

namespace IlgpuSae.Kernels;

// The sparse training step (the gated loss's gradients, paper §3.2.2, through π_mag and π_gate vanish
// wherever the gate is closed). After the dense
// encoder, each row's active features (gate open for gated, f > 0 for standard) are compacted into index
// lists, per row and per feature; the decoder, [Φ; Ψ] and the weight gradients then cost O(B·L0·d)
// instead of O(B·M·d). Everything is gather-based and deterministic: each output element is summed by one
// work item in a fixed order, so no atomics are needed.

/// <summary>Scalar arguments of the sparse kernels.</summary>
internal struct SparseArgs
{
    public int Rows;
    public int M;
    public int D;
    public float Scale;
    public int Gated;
    public int Untied;
    public int AuxIntoDecoder;
}

/// <summary>Compaction, gather-based decoding, active-only [Φ; Ψ] and scatter-free weight
/// gradients.</summary>
internal static class SparseKernels
{
    /// <summary>Row b's active features (active[b, i] &gt; 0) in increasing order into rowIdx[b·M …], their
    /// number into rowCount[b].</summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void CompactRowsKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> active,
        ArrayView<int> rowIdx,
        ArrayView<int> rowCount,
        int m
    )
    {
        for (int b = gridIndex; b < count; b += stride)
        {
            int n = 0;
            int start = b * m;
            for (int i = 0; i < m; i++)
            {
                if (active[start + i] > 0f)
                {
                    rowIdx[start + n] = i;
                    n++;
                }
            }

            rowCount[b] = n;
        }
    }

    /// <summary>Features per work item of <see cref="CompactColumnsKernel"/> and columns per work item of the
    /// strip kernels.</summary>
    public const int Strip = Row16.Width;

    /// <summary>
    /// Feature i's active rows (active[b, i] &gt; 0) in increasing order into colIdx[i·B …], their number
    /// into colCount[i].
    /// One work item per block of 16 adjacent features, walking the rows: each row's 16 flags share a cache
    /// line.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void CompactColumnsKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> active,
        ArrayView<int> colIdx,
        ArrayView<int> colCount,
        int rows,
        int m
    )
    {
        for (int block = gridIndex; block < count; block += stride)
        {
            int i0 = block * Strip;
            int i1 = Math.Min(i0 + Strip, m);
            for (int i = i0; i < i1; i++)
            {
                colCount[i] = 0;
            }

            for (int b = 0; b < rows; b++)
            {
                for (int i = i0; i < i1; i++)
                {
                    if (active[b * m + i] > 0f)
                    {
                        int n = colCount[i];
                        colIdx[i * rows + n] = b;
                        colCount[i] = n + 1;
                    }
                }
            }
        }
    }

    /// <summary>
    /// Gather-based decoder and residual, one work item per (b, 16 adjacent j): <c>X̂[b,j] = b_dec[j] + Σ_{i
    /// active} F[b,i]·W_dec[i,j]</c>
    /// (and X̂a from A for gated), <c>Δ = scale·(X̂ − X)</c>, accumulated as <see cref="Row16"/> so that CPU
    /// compilers
    /// vectorise over j. Writes the stacked X̂ and Δ like the dense path; a last strip narrower than 16 runs
    /// scalar.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void SparseDecodeKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> fa,
        ArrayView<float> wDec,
        ArrayView<float> bDec,
        ArrayView<float> x,
        ArrayView<int> rowIdx,
        ArrayView<int> rowCount,
        ArrayView<float> xhat,
        ArrayView<float> delta,
        SparseArgs p
    )
    {
        int strips = (p.D + Strip - 1) / Strip;
        for (int e = gridIndex; e < count; e += stride)
        {
            int b = e / strips;
            int j0 = (e - b * strips) * Strip;
            int n = rowCount[b];
            int fRow = b * p.M;
            int aRow = (p.Rows + b) * p.M;
            int o = b * p.D + j0;
            int oa = p.Rows * p.D + o;
            if (j0 + Strip <= p.D)
            {
                Row16 xf = default,
                    xa = default;
                for (int s = 0; s < n; s++)
                {
                    int i = rowIdx[fRow + s];
                    var w = Row16.Load(wDec, i * p.D + j0);
                    Row16.MultiplyAdd(ref xf, fa[fRow + i], w);
                    if (p.Gated != 0)
                    {
                        Row16.MultiplyAdd(ref xa, fa[aRow + i], w);
                    }
                }

                var bias = Row16.Load(bDec, j0);
                var xv = Row16.Load(x, o);
                var h = Row16.Combine(xf, 1f, bias, 1f);
                Row16.Store(xhat, o, h);
                Row16.Store(delta, o, Row16.Combine(h, p.Scale, xv, -p.Scale));
                if (p.Gated != 0)
                {
                    var ha = Row16.Combine(xa, 1f, bias, 1f);
                    Row16.Store(xhat, oa, ha);
                    Row16.Store(delta, oa, Row16.Combine(ha, p.Scale, xv, -p.Scale));
                }
            }
            else
            {
                for (int j = j0; j < p.D; j++)
                {
                    float xf = 0f,
                        xa = 0f;
                    for (int s = 0; s < n; s++)
                    {
                        int i = rowIdx[fRow + s];
                        float w = wDec[i * p.D + j];
                        xf += fa[fRow + i] * w;
                        if (p.Gated != 0)
                        {
                            xa += fa[aRow + i] * w;
                        }
                    }

                    int q = b * p.D + j;
                    float xv = x[q];
                    float h = xf + bDec[j];
                    xhat[q] = h;
                    delta[q] = p.Scale * h - p.Scale * xv;
                    if (p.Gated != 0)
                    {
                        float ha = xa + bDec[j];
                        xhat[p.Rows * p.D + q] = ha;
                        delta[p.Rows * p.D + q] = p.Scale * ha - p.Scale * xv;
                    }
                }
            }
        }
    }

    /// <summary>
    /// [Φ; Ψ] at active positions only, one work item per row: <c>Φ[b,i] = Δ[b]·W_dec[i]</c>, <c>Ψ[b,i] =
    /// Δa[b]·W_dec[i]</c>,
    /// each dot product accumulated in 16 lanes (<see cref="Row16"/>) and summed at the end. The dense [Φ; Ψ]
    /// buffer
    /// must be zero elsewhere (its other entries are multiplied by a closed gate anyway).
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void SparsePhiPsiKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> delta,
        ArrayView<float> wDec,
        ArrayView<int> rowIdx,
        ArrayView<int> rowCount,
        ArrayView<float> phiPsi,
        SparseArgs p
    )
    {
        int body = p.D / Strip * Strip;
        for (int b = gridIndex; b < count; b += stride)
        {
            int n = rowCount[b];
            int dRow = b * p.D;
            int daRow = (p.Rows + b) * p.D;
            for (int s = 0; s < n; s++)
            {
                int i = rowIdx[b * p.M + s];
                int wRow = i * p.D;
                Row16 phi = default,
                    psi = default;
                for (int j = 0; j < body; j += Strip)
                {
                    var w = Row16.Load(wDec, wRow + j);
                    Row16.MultiplyAdd(ref phi, Row16.Load(delta, dRow + j), w);
                    if (p.Gated != 0)
                    {
                        Row16.MultiplyAdd(ref psi, Row16.Load(delta, daRow + j), w);
                    }
                }

                float phiSum = Row16.Sum(phi),
                    psiSum = Row16.Sum(psi);
                for (int j = body; j < p.D; j++)
                {
                    float w = wDec[wRow + j];
                    phiSum += delta[dRow + j] * w;
                    if (p.Gated != 0)
                    {
                        psiSum += delta[daRow + j] * w;
                    }
                }

                phiPsi[b * p.M + i] = phiSum;
                if (p.Gated != 0)
                {
                    phiPsi[(p.Rows + b) * p.M + i] = psiSum;
                }
            }
        }
    }

    /// <summary>
    /// Weight gradients over each feature's active rows, one work item per (i, 16 adjacent j), accumulated as
    /// <see cref="Row16"/>: <c>dW_enc[j,i] += Σ_b X̃[b,j]·dU[b,i]</c> (and dW_mag from dUm when untied),
    /// <c>dW_dec[i,j] += Σ_b F[b,i]·Δ[b,j]</c> (+ <c>A[b,i]·Δa[b,j]</c> when the aux decoder is not frozen).
    /// A last strip narrower than 16 runs scalar. (Measured on PoCL: wider blocks of 64 columns per work item
    /// were
    /// slower; the kernel is bound by gathering the active rows of X̃ and Δ.)
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void SparseWeightGradKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> xc,
        ArrayView<float> du,
        ArrayView<float> dum,
        ArrayView<float> fa,
        ArrayView<float> delta,
        ArrayView<int> colIdx,
        ArrayView<int> colCount,
        ArrayView<float> gWEnc,
        ArrayView<float> gWMag,
        ArrayView<float> gWDec,
        SparseArgs p
    )
    {
        int strips = (p.D + Strip - 1) / Strip;
        for (int e = gridIndex; e < count; e += stride)
        {
            int i = e / strips;
            int j0 = (e - i * strips) * Strip;
            int n = colCount[i];
            if (j0 + Strip <= p.D)
            {
                Row16 enc = default,
                    mag = default,
                    dec = default;
                for (int s = 0; s < n; s++)
                {
                    int b = colIdx[i * p.Rows + s];
                    var xv = Row16.Load(xc, b * p.D + j0);
                    Row16.MultiplyAdd(ref enc, du[b * p.M + i], xv);
                    if (p.Untied != 0)
                    {
                        Row16.MultiplyAdd(ref mag, dum[b * p.M + i], xv);
                    }

                    Row16.MultiplyAdd(ref dec, fa[b * p.M + i], Row16.Load(delta, b * p.D + j0));
                    if (p.AuxIntoDecoder != 0)
                    {
                        Row16.MultiplyAdd(
                            ref dec,
                            fa[(p.Rows + b) * p.M + i],
                            Row16.Load(delta, (p.Rows + b) * p.D + j0)
                        );
                    }
                }

                Row16.AddStrided(gWEnc, j0 * p.M + i, p.M, enc);
                if (p.Untied != 0)
                {
                    Row16.AddStrided(gWMag, j0 * p.M + i, p.M, mag);
                }

                int o = i * p.D + j0;
                Row16.Store(gWDec, o, Row16.Combine(Row16.Load(gWDec, o), 1f, dec, 1f));
            }
            else
            {
                for (int j = j0; j < p.D; j++)
                {
                    float encSum = 0f,
                        magSum = 0f,
                        decSum = 0f;
                    for (int s = 0; s < n; s++)
                    {
                        int b = colIdx[i * p.Rows + s];
                        float xv = xc[b * p.D + j];
                        encSum += xv * du[b * p.M + i];
                        if (p.Untied != 0)
                        {
                            magSum += xv * dum[b * p.M + i];
                        }

                        decSum += fa[b * p.M + i] * delta[b * p.D + j];
                        if (p.AuxIntoDecoder != 0)
                        {
                            decSum += fa[(p.Rows + b) * p.M + i] * delta[(p.Rows + b) * p.D + j];
                        }
                    }

                    gWEnc[j * p.M + i] += encSum;
                    if (p.Untied != 0)
                    {
                        gWMag[j * p.M + i] += magSum;
                    }

                    gWDec[i * p.D + j] += decSum;
                }
            }
        }
    }
}
