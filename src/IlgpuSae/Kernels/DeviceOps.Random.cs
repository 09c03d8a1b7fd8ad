using System.Collections.Concurrent;
using ILGPU;
using ILGPU.Runtime;
using IlgpuSae.Backends;
using IlgpuSae.Tensors;

namespace IlgpuSae.Kernels;

public sealed partial class DeviceOps
{
    // ------------------------------------------------------------------ random init

    /// <summary>
    /// Fills <paramref name="y"/> from <paramref name="distribution"/> with Philox4x32-10 keyed by
    /// <paramref name="seed"/>; <paramref name="stream"/> selects an independent sequence (e.g. one per
    /// tensor).
    /// The same (seed, stream) gives the same values on every backend (uniform: bit-identical).
    /// </summary>
    public void FillRandom<TDist>(ArrayView<float> y, TDist distribution, ulong seed, ulong stream = 0)
        where TDist : struct, IRandomDistribution
    {
        RequireValid(y, nameof(y));
        var args = new RandomArgs
        {
            SeedLo = (uint)seed,
            SeedHi = (uint)(seed >> 32),
            StreamLo = (uint)stream,
            StreamHi = (uint)(stream >> 32),
            Length = ToIndex(y.Length),
        };
        var kernel = Kernel(
            "RandomFill",
            typeof(TDist),
            () =>
                Acc.LoadAutoGroupedKernel<Index1D, int, int, ArrayView<float>, RandomArgs, TDist>(
                    RandomKernels.RandomFillKernel<TDist>
                )
        );
        int blocks = Ceil(args.Length, 4);
        kernel(Stream, Items(blocks), blocks, Items(blocks), y, args, distribution);
    }

    /// <summary>Uniform values on [<paramref name="low"/>, <paramref name="high"/>).</summary>
    public void FillUniform(ArrayView<float> y, float low, float high, ulong seed, ulong stream = 0)
    {
        if (!(high > low) || float.IsInfinity(high - low))
        {
            throw new ArgumentException(
                $"FillUniform: need a finite interval with low < high, got [{low}, {high})."
            );
        }

        FillRandom(y, new UniformDistribution(low, high), seed, stream);
    }

    /// <summary>Normal values with the given mean and standard deviation.</summary>
    public void FillNormal(ArrayView<float> y, float mean, float std, ulong seed, ulong stream = 0)
    {
        if (!(std >= 0f) || float.IsInfinity(std) || !float.IsFinite(mean))
        {
            throw new ArgumentException(
                $"FillNormal: need a finite mean and std ≥ 0, got mean {mean}, std {std}."
            );
        }

        FillRandom(y, new NormalDistribution(mean, std), seed, stream);
    }
}
