using ILGPU;
using ILGPU.Runtime;
using IlgpuSae.Backends;
using IlgpuSae.Tensors;

namespace IlgpuSae.Kernels;

/// <summary>Launchers of the fused SAE kernels (internal: the public surface is <see cref="Sae.SparseAutoencoder"/>).</summary>
public sealed partial class DeviceOps
{
    internal void GatedEncode(ArrayView<float> u, ArrayView<float> um, ArrayView<float> bGate, ArrayView<float> bMag,
        ArrayView<float> rMag, ArrayView<float> fa, GatedArgs p)
    {
        var k = Kernel("GatedEncode", null, () => Acc.LoadAutoGroupedKernel<Index1D, int, int, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GatedArgs>(SaeKernels.GatedEncodeKernel));
        k(Stream, Items(p.Rows * p.M), p.Rows * p.M, Items(p.Rows * p.M), u, um, bGate, bMag, rMag, fa, p);
    }

    internal void ReluEncode(ArrayView<float> u, ArrayView<float> bEnc, ArrayView<float> f, int m)
    {
        var k = Kernel("ReluEncode", null, () => Acc.LoadAutoGroupedKernel<Index1D, int, int, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, int>(SaeKernels.ReluEncodeKernel));
        k(Stream, Items((int)u.Length), (int)u.Length, Items((int)u.Length), u, bEnc, f, m);
    }

    internal void JumpReluEncode(ArrayView<float> u, ArrayView<float> bEnc, ArrayView<float> threshold, ArrayView<float> f, int m)
    {
        var k = Kernel("JumpReluEncode", null, () => Acc.LoadAutoGroupedKernel<Index1D, int, int, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, ArrayView<float>, int>(SaeKernels.JumpReluEncodeKernel));
        k(Stream, Items((int)u.Length), (int)u.Length, Items((int)u.Length), u, bEnc, threshold, f, m);
    }

    internal void Residual(ArrayView<float> xhat, ArrayView<float> x, ArrayView<float> bDec, ArrayView<float> delta, int d, int batch, float scale)
    {
        var k = Kernel("Residual", null, () => Acc.LoadAutoGroupedKernel<Index1D, int, int, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, ArrayView<float>, int, int, float>(SaeKernels.ResidualKernel));
        k(Stream, Items((int)xhat.Length), (int)xhat.Length, Items((int)xhat.Length), xhat, x, bDec, delta, d, batch, scale);
    }

    internal void GatedBackward(ArrayView<float> u, ArrayView<float> um, ArrayView<float> phiPsi, ArrayView<float> bGate,
        ArrayView<float> bMag, ArrayView<float> rMag, ArrayView<float> norms, ArrayView<float> du, ArrayView<float> dum,
        ArrayView<float> gBGate, ArrayView<float> gBMag, ArrayView<float> gRMag, ArrayView<float> sums, GatedArgs p)
    {
        var k = Kernel("GatedBackward", null, () => Acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GatedArgs>(SaeKernels.GatedBackwardKernel));
        p.Stride = Items(p.M);
        k(Stream, p.Stride, u, um, phiPsi, bGate, bMag, rMag, norms, du, dum, gBGate, gBMag, gRMag, sums, p);
    }

    internal void StandardBackward(ArrayView<float> f, ArrayView<float> phi, ArrayView<float> norms, ArrayView<float> du,
        ArrayView<float> gBEnc, ArrayView<float> sums, StandardArgs p)
    {
        var k = Kernel("StandardBackward", null, () => Acc.LoadAutoGroupedKernel<Index1D, int, int, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, StandardArgs>(SaeKernels.StandardBackwardKernel));
        k(Stream, Items(p.M), p.M, Items(p.M), f, phi, norms, du, gBEnc, sums, p);
    }

    internal void DecoderNormPenaltyGrad(MatrixView wDec, ArrayView<float> colA, ArrayView<float> norms, MatrixView gWDec, float lambdaOverB)
    {
        var k = Kernel("DecoderNormPenaltyGrad", null, () => Acc.LoadAutoGroupedKernel<Index1D, int, int, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, ArrayView<float>, int, float>(SaeKernels.DecoderNormPenaltyGradKernel));
        k(Stream, Items((int)wDec.Length), (int)wDec.Length, Items((int)wDec.Length), wDec.Data, colA, norms, gWDec.Data, wDec.Cols, lambdaOverB);
    }

    /// <summary>
    /// Projects each row of <paramref name="gradient"/> onto the tangent space of the matching row of
    /// <paramref name="weights"/>: <c>g_i ← g_i − (g_i·w_i/‖w_i‖²)·w_i</c> (unit-norm decoder constraint).
    /// </summary>
    public void ProjectRows(MatrixView gradient, MatrixView weights)
    {
        string Shapes() => $"ProjectRows: gradient{Dims(gradient)} weights{Dims(weights)}";
        RequireValid(gradient, "gradient", Shapes);
        RequireValid(weights, "weights", Shapes);
        if (gradient.Rows != weights.Rows || gradient.Cols != weights.Cols)
        {
            throw new ArgumentException($"{Shapes()}: shapes differ.");
        }

        if (Gpu)
        {
            var k = Kernel("ProjectRowsTiled", null, () => Acc.LoadKernel<ArrayView<float>, ArrayView<float>, int>(SaeKernels.ProjectRowsTiledKernel));
            k(Stream, new KernelConfig(gradient.Rows, TiledKernels.GroupSize), gradient.Data, weights.Data, gradient.Cols);
        }
        else
        {
            var k = Kernel("ProjectRows", null, () => Acc.LoadAutoGroupedKernel<Index1D, int, int, ArrayView<float>, ArrayView<float>, int>(SaeKernels.ProjectRowsKernel));
            k(Stream, Items(gradient.Rows), gradient.Rows, Items(gradient.Rows), gradient.Data, weights.Data, gradient.Cols);
        }
    }
}
