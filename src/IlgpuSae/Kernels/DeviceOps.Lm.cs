using ILGPU;
using ILGPU.Runtime;

namespace IlgpuSae.Kernels;

/// <summary>Launchers of the language-model kernels (internal: the public surface is
/// <c>IlgpuSae.Lm.LanguageModel</c> in the IlgpuSae.Lm assembly).</summary>
public sealed partial class DeviceOps
{
    internal void Embed(
        ArrayView<int> ids,
        ArrayView<float> wte,
        ArrayView<float> wpe,
        ArrayView<float> x,
        int d,
        int seqLen,
        bool usePositions
    )
    {
        int count = ToIndex(x.Length);
        var k = Kernel(
            "Embed",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    int,
                    int,
                    ArrayView<int>,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    int,
                    int,
                    int
                >(TransformerKernels.EmbedKernel)
        );
        k(Stream, Items(count), count, Items(count), ids, wte, wpe, x, d, seqLen, usePositions ? 1 : 0);
    }

    internal void LayerNorm(
        ArrayView<float> x,
        ArrayView<float> w,
        ArrayView<float> b,
        ArrayView<float> y,
        int d,
        float eps
    )
    {
        int rows = ToIndex(x.Length / d);
        var k = Kernel(
            "LayerNorm",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    int,
                    int,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    int,
                    float
                >(TransformerKernels.LayerNormKernel)
        );
        k(Stream, Items(rows), rows, Items(rows), x, w, b, y, d, eps);
    }

    internal void Rotary(
        ArrayView<float> qkv,
        ArrayView<float> invFreq,
        int rows,
        int seqLen,
        int heads,
        int headDim,
        int rotaryDims
    )
    {
        int count = rows * 2 * heads * (rotaryDims / 2);
        if (count == 0)
        {
            return;
        }

        var k = Kernel(
            "Rotary",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    int,
                    int,
                    ArrayView<float>,
                    ArrayView<float>,
                    int,
                    int,
                    int,
                    int
                >(TransformerKernels.RotaryKernel)
        );
        k(Stream, Items(count), count, Items(count), qkv, invFreq, seqLen, heads, headDim, rotaryDims);
    }

    internal void Attention(
        ArrayView<float> qkv,
        ArrayView<float> scratch,
        ArrayView<float> z,
        int batch,
        int seqLen,
        int heads,
        int headDim,
        float scale
    )
    {
        int count = batch * heads * seqLen;
        var k = Kernel(
            "Attention",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    int,
                    int,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    int,
                    int,
                    int,
                    float
                >(TransformerKernels.AttentionKernel)
        );
        k(Stream, Items(count), count, Items(count), qkv, scratch, z, seqLen, heads, headDim, scale);
    }

    internal void CrossEntropy(
        ArrayView<float> logits,
        ArrayView<int> targets,
        ArrayView<float> loss,
        int vocab
    )
    {
        int rows = ToIndex(loss.Length);
        var k = Kernel(
            "CrossEntropy",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    int,
                    int,
                    ArrayView<float>,
                    ArrayView<int>,
                    ArrayView<float>,
                    int
                >(TransformerKernels.CrossEntropyKernel)
        );
        k(Stream, Items(rows), rows, Items(rows), logits, targets, loss, vocab);
    }

    internal void KlDivergence(
        ArrayView<float> clean,
        ArrayView<float> patched,
        ArrayView<float> kl,
        int vocab
    )
    {
        int rows = ToIndex(kl.Length);
        var k = Kernel(
            "KlDivergence",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    int,
                    int,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    int
                >(TransformerKernels.KlDivergenceKernel)
        );
        k(Stream, Items(rows), rows, Items(rows), clean, patched, kl, vocab);
    }
}
