using ILGPU;

namespace IlgpuSae.Kernels;

// The sparse training step (spec §3.3: dΠm and dΠg vanish wherever the gate is closed). After the dense
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

/// <summary>Compaction, gather-based decoding, active-only [Φ; Ψ] and scatter-free weight gradients.</summary>
internal static class SparseKernels
{
    /// <summary>Row b's active features (active[b, i] &gt; 0) in increasing order into rowIdx[b·M …], their number into rowCount[b].</summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void CompactRowsKernel(
        Index1D gridIndex, int count, int stride, ArrayView<float> active, ArrayView<int> rowIdx, ArrayView<int> rowCount, int m)
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

    /// <summary>Feature i's active rows (active[b, i] &gt; 0) in increasing order into colIdx[i·B …], their number into colCount[i].</summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void CompactColumnsKernel(
        Index1D gridIndex, int count, int stride, ArrayView<float> active, ArrayView<int> colIdx, ArrayView<int> colCount, int rows, int m)
    {
        for (int i = gridIndex; i < count; i += stride)
        {
            int n = 0;
            for (int b = 0; b < rows; b++)
            {
                if (active[b * m + i] > 0f)
                {
                    colIdx[i * rows + n] = b;
                    n++;
                }
            }

            colCount[i] = n;
        }
    }

    /// <summary>
    /// Gather-based decoder and residual, one work item per (b, j): <c>X̂[b,j] = b_dec[j] + Σ_{i active} F[b,i]·W_dec[i,j]</c>
    /// (and X̂a from A for gated), <c>Δ = scale·(X̂ − X)</c>. Writes the stacked X̂ and Δ like the dense path.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void SparseDecodeKernel(
        Index1D gridIndex, int count, int stride, ArrayView<float> fa, ArrayView<float> wDec, ArrayView<float> bDec,
        ArrayView<float> x, ArrayView<int> rowIdx, ArrayView<int> rowCount, ArrayView<float> xhat, ArrayView<float> delta, SparseArgs p)
    {
        for (int e = gridIndex; e < count; e += stride)
        {
            int b = e / p.D;
            int j = e - b * p.D;
            int n = rowCount[b];
            float xf = 0f, xa = 0f;
            for (int s = 0; s < n; s++)
            {
                int i = rowIdx[b * p.M + s];
                float w = wDec[i * p.D + j];
                xf += fa[b * p.M + i] * w;
                if (p.Gated != 0)
                {
                    xa += fa[(p.Rows + b) * p.M + i] * w;
                }
            }

            float xv = x[e];
            float h = xf + bDec[j];
            xhat[e] = h;
            delta[e] = p.Scale * (h - xv);
            if (p.Gated != 0)
            {
                float ha = xa + bDec[j];
                xhat[p.Rows * p.D + e] = ha;
                delta[p.Rows * p.D + e] = p.Scale * (ha - xv);
            }
        }
    }

    /// <summary>
    /// [Φ; Ψ] at active positions only, one work item per row: <c>Φ[b,i] = Δ[b]·W_dec[i]</c>, <c>Ψ[b,i] = Δa[b]·W_dec[i]</c>.
    /// The dense [Φ; Ψ] buffer must be zero elsewhere (its other entries are multiplied by a closed gate anyway).
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void SparsePhiPsiKernel(
        Index1D gridIndex, int count, int stride, ArrayView<float> delta, ArrayView<float> wDec, ArrayView<int> rowIdx,
        ArrayView<int> rowCount, ArrayView<float> phiPsi, SparseArgs p)
    {
        for (int b = gridIndex; b < count; b += stride)
        {
            int n = rowCount[b];
            for (int s = 0; s < n; s++)
            {
                int i = rowIdx[b * p.M + s];
                float phi = 0f, psi = 0f;
                for (int j = 0; j < p.D; j++)
                {
                    float w = wDec[i * p.D + j];
                    phi += delta[b * p.D + j] * w;
                    if (p.Gated != 0)
                    {
                        psi += delta[(p.Rows + b) * p.D + j] * w;
                    }
                }

                phiPsi[b * p.M + i] = phi;
                if (p.Gated != 0)
                {
                    phiPsi[(p.Rows + b) * p.M + i] = psi;
                }
            }
        }
    }

    /// <summary>
    /// Weight gradients over each feature's active rows, one work item per (i, j):
    /// <c>dW_enc[j,i] += Σ_b X̃[b,j]·dU[b,i]</c> (and dW_mag from dUm when untied),
    /// <c>dW_dec[i,j] += Σ_b F[b,i]·Δ[b,j]</c> (+ <c>A[b,i]·Δa[b,j]</c> when the aux decoder is not frozen).
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void SparseWeightGradKernel(
        Index1D gridIndex, int count, int stride, ArrayView<float> xc, ArrayView<float> du, ArrayView<float> dum,
        ArrayView<float> fa, ArrayView<float> delta, ArrayView<int> colIdx, ArrayView<int> colCount,
        ArrayView<float> gWEnc, ArrayView<float> gWMag, ArrayView<float> gWDec, SparseArgs p)
    {
        for (int e = gridIndex; e < count; e += stride)
        {
            int i = e / p.D;
            int j = e - i * p.D;
            int n = colCount[i];
            float enc = 0f, mag = 0f, dec = 0f;
            for (int s = 0; s < n; s++)
            {
                int b = colIdx[i * p.Rows + s];
                float xv = xc[b * p.D + j];
                enc += xv * du[b * p.M + i];
                if (p.Untied != 0)
                {
                    mag += xv * dum[b * p.M + i];
                }

                dec += fa[b * p.M + i] * delta[b * p.D + j];
                if (p.AuxIntoDecoder != 0)
                {
                    dec += fa[(p.Rows + b) * p.M + i] * delta[(p.Rows + b) * p.D + j];
                }
            }

            gWEnc[j * p.M + i] += enc;
            if (p.Untied != 0)
            {
                gWMag[j * p.M + i] += mag;
            }

            gWDec[e] += dec;
        }
    }
}
