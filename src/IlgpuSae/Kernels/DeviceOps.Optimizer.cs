using System.Collections.Concurrent;
using ILGPU;
using ILGPU.Runtime;
using IlgpuSae.Backends;
using IlgpuSae.Tensors;

namespace IlgpuSae.Kernels;

/// <summary>Settings of an Adam / AdamW step (PyTorch's defaults; the Gated SAE paper uses β1 = 0).</summary>
public sealed record AdamSettings
{
    /// <summary>Learning rate.</summary>
    public float LearningRate { get; init; } = 1e-3f;

    /// <summary>First-moment decay β1.</summary>
    public float Beta1 { get; init; } = 0.9f;

    /// <summary>Second-moment decay β2.</summary>
    public float Beta2 { get; init; } = 0.999f;

    /// <summary>ε added to √v̂.</summary>
    public float Epsilon { get; init; } = 1e-8f;

    /// <summary>Weight decay (0 disables it).</summary>
    public float WeightDecay { get; init; }

    /// <summary>Decoupled decay (AdamW, <c>p ← p − lr·wd·p</c>) when true; L2 decay added to the gradient
    /// (Adam) when false.</summary>
    public bool DecoupledWeightDecay { get; init; } = true;
}

public sealed partial class DeviceOps
{
    // ------------------------------------------------------------------ optimizer

    /// <summary>
    /// One Adam/AdamW step over flat views of equal length (usually <see cref="ParameterBuffer"/> sections).
    /// <paramref name="step"/> is the 1-based step number used for bias correction; gradients are multiplied
    /// by
    /// <paramref name="gradScale"/> first (gradient clipping).
    /// </summary>
    public void AdamStep(
        ArrayView<float> parameters,
        ArrayView<float> gradients,
        ArrayView<float> firstMoment,
        ArrayView<float> secondMoment,
        AdamSettings settings,
        long step,
        float gradScale = 1f
    )
    {
        ArgumentNullException.ThrowIfNull(settings);
        RequireValid(parameters, nameof(parameters));
        RequireValid(gradients, nameof(gradients));
        RequireValid(firstMoment, nameof(firstMoment));
        RequireValid(secondMoment, nameof(secondMoment));
        RequireSameLength(parameters, gradients, "AdamStep", nameof(parameters), nameof(gradients));
        RequireSameLength(parameters, firstMoment, "AdamStep", nameof(parameters), nameof(firstMoment));
        RequireSameLength(parameters, secondMoment, "AdamStep", nameof(parameters), nameof(secondMoment));
        if (step < 1)
        {
            throw new ArgumentOutOfRangeException(
                nameof(step),
                step,
                "AdamStep: the step number starts at 1."
            );
        }

        if (settings.Beta1 is < 0f or >= 1f || settings.Beta2 is < 0f or >= 1f || !(settings.Epsilon > 0f))
        {
            throw new ArgumentException(
                $"AdamStep: need 0 ≤ β1, β2 < 1 and ε > 0; got β1={settings.Beta1}, β2={settings.Beta2}, ε={settings.Epsilon}.",
                nameof(settings)
            );
        }

        var args = new AdamArgs
        {
            LearningRate = settings.LearningRate,
            Beta1 = settings.Beta1,
            Beta2 = settings.Beta2,
            Epsilon = settings.Epsilon,
            WeightDecay = settings.WeightDecay,
            BiasCorrection1 = (float)(1.0 - Math.Pow(settings.Beta1, step)),
            BiasCorrection2 = (float)(1.0 - Math.Pow(settings.Beta2, step)),
            GradScale = gradScale,
            Decoupled = settings.DecoupledWeightDecay ? 1 : 0,
        };
        var kernel = Kernel(
            "Adam",
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
                    AdamArgs
                >(AdamKernels.AdamKernel)
        );
        kernel(
            Stream,
            Items(ToIndex(parameters.Length)),
            ToIndex(parameters.Length),
            Items(ToIndex(parameters.Length)),
            parameters,
            gradients,
            firstMoment,
            secondMoment,
            args
        );
    }
}
