using ILGPU;
using ILGPU.Algorithms;

namespace IlgpuSae.Kernels;

/// <summary>Scalar arguments of one Adam step (bias corrections computed on the host in double
/// precision).</summary>
internal struct AdamArgs
{
    public float LearningRate;
    public float Beta1;
    public float Beta2;
    public float Epsilon;
    public float WeightDecay;
    public float BiasCorrection1;
    public float BiasCorrection2;
    public float GradScale;
    public int Decoupled;
}

/// <summary>
/// Adam and AdamW over a flat parameter buffer (llm.c's <c>gpt2_update</c>; PyTorch's <c>torch.optim.Adam</c>
/// and <c>AdamW</c> are the reference): one work item per parameter.
/// </summary>
internal static class AdamKernels
{
    /// <summary>
    /// <c>g ← s·g (+ wd·p for coupled decay); m ← β1m + (1−β1)g; v ← β2v + (1−β2)g²;
    /// p ← p − lr·wd·p (decoupled only); p ← p − lr·(m/bc1)/(√(v/bc2) + ε)</c>.
    /// </summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void AdamKernel(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> param,
        ArrayView<float> grad,
        ArrayView<float> m,
        ArrayView<float> v,
        AdamArgs a
    )
    {
        for (int i = gridIndex; i < count; i += stride)
        {
            float p = param[i];
            float g = grad[i] * a.GradScale;
            if (a.Decoupled == 0)
            {
                g += a.WeightDecay * p;
            }

            float mi = a.Beta1 * m[i] + (1f - a.Beta1) * g;
            float vi = a.Beta2 * v[i] + (1f - a.Beta2) * g * g;
            m[i] = mi;
            v[i] = vi;
            if (a.Decoupled != 0)
            {
                p -= a.LearningRate * a.WeightDecay * p;
            }

            float mHat = mi / a.BiasCorrection1;
            float vHat = vi / a.BiasCorrection2;
            param[i] = p - a.LearningRate * mHat / (XMath.Sqrt(vHat) + a.Epsilon);
        }
    }
}
