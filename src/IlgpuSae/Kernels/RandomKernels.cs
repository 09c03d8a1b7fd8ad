using ILGPU;
using ILGPU.Algorithms;

namespace IlgpuSae.Kernels;

/// <summary>Four floats produced from one Philox block.</summary>
internal struct Float4
{
    public float X;
    public float Y;
    public float Z;
    public float W;
}

/// <summary>Turns four uniformly random 32-bit words into four floats of some distribution.</summary>
public interface IRandomDistribution
{
    /// <summary>Transforms one Philox output block.</summary>
    internal Float4 Transform(uint r0, uint r1, uint r2, uint r3);
}

/// <summary>Uniform on [Low, High): <c>Low + (High − Low)·u</c>, with <c>u = (r ≫ 8)·2⁻²⁴</c>.</summary>
/// <param name="low">Inclusive lower bound.</param>
/// <param name="high">Exclusive upper bound.</param>
public readonly struct UniformDistribution(float low, float high) : IRandomDistribution
{
    /// <summary>Inclusive lower bound.</summary>
    public float Low { get; } = low;

    /// <summary>Exclusive upper bound.</summary>
    public float High { get; } = high;

    Float4 IRandomDistribution.Transform(uint r0, uint r1, uint r2, uint r3)
    {
        float w = High - Low;
        return new Float4
        {
            X = Low + w * Philox.ToUnit(r0),
            Y = Low + w * Philox.ToUnit(r1),
            Z = Low + w * Philox.ToUnit(r2),
            W = Low + w * Philox.ToUnit(r3),
        };
    }
}

/// <summary>Normal with the given mean and standard deviation, by the Box–Muller transform on word
/// pairs.</summary>
/// <param name="mean">The mean.</param>
/// <param name="std">The standard deviation.</param>
public readonly struct NormalDistribution(float mean, float std) : IRandomDistribution
{
    /// <summary>The mean.</summary>
    public float Mean { get; } = mean;

    /// <summary>The standard deviation.</summary>
    public float Std { get; } = std;

    Float4 IRandomDistribution.Transform(uint r0, uint r1, uint r2, uint r3)
    {
        // u1 in (0, 1] so that log(u1) is finite; u2 in [0, 1).
        float rad0 = XMath.Sqrt(-2f * XMath.Log(Philox.ToUnitOpenBelow(r0)));
        float rad1 = XMath.Sqrt(-2f * XMath.Log(Philox.ToUnitOpenBelow(r2)));
        float t0 = 2f * XMath.PI * Philox.ToUnit(r1);
        float t1 = 2f * XMath.PI * Philox.ToUnit(r3);
        return new Float4
        {
            X = Mean + Std * rad0 * XMath.Cos(t0),
            Y = Mean + Std * rad0 * XMath.Sin(t0),
            Z = Mean + Std * rad1 * XMath.Cos(t1),
            W = Mean + Std * rad1 * XMath.Sin(t1),
        };
    }
}

/// <summary>Scalar arguments of a random fill.</summary>
internal struct RandomArgs
{
    public uint SeedLo;
    public uint SeedHi;
    public uint StreamLo;
    public uint StreamHi;
    public int Length;
}

/// <summary>
/// Philox4x32-10 (Salmon et al., SC 2011), a counter-based generator: element <c>e</c> of a fill takes word
/// <c>e mod 4</c> of block <c>(counter = [e / 4, 0, streamLo, streamHi], key = [seedLo, seedHi])</c>.
/// Results depend only on (seed, stream, index), never on the device or launch shape; integer outputs
/// are bit-identical on every backend.
/// </summary>
public static class Philox
{
    private const uint M0 = 0xD2511F53;
    private const uint M1 = 0xCD9E8D57;
    private const uint W0 = 0x9E3779B9;
    private const uint W1 = 0xBB67AE85;

    /// <summary>Runs the ten Philox rounds on counter (c0..c3) with key (k0, k1).</summary>
    public static (uint, uint, uint, uint) Block(uint c0, uint c1, uint c2, uint c3, uint k0, uint k1)
    {
        for (int round = 0; round < 10; round++)
        {
            if (round > 0)
            {
                k0 += W0;
                k1 += W1;
            }

            ulong p0 = (ulong)M0 * c0;
            ulong p1 = (ulong)M1 * c2;
            uint hi0 = (uint)(p0 >> 32),
                lo0 = (uint)p0;
            uint hi1 = (uint)(p1 >> 32),
                lo1 = (uint)p1;
            c0 = hi1 ^ c1 ^ k0;
            c1 = lo1;
            c2 = hi0 ^ c3 ^ k1;
            c3 = lo0;
        }

        return (c0, c1, c2, c3);
    }

    /// <summary>Maps a word to [0, 1) with 24 random bits.</summary>
    public static float ToUnit(uint r) => (r >> 8) * (1f / 16777216f);

    /// <summary>Maps a word to (0, 1] with 24 random bits.</summary>
    public static float ToUnitOpenBelow(uint r) => ((r >> 8) + 1u) * (1f / 16777216f);
}

/// <summary>Seeded random fills.</summary>
internal static class RandomKernels
{
    /// <summary>Work item <c>b</c> writes elements 4b … 4b+3 (those below the length).</summary>
    [Kernel(KernelGrouping.Implicit)]
    public static void RandomFillKernel<TDist>(
        Index1D gridIndex,
        int count,
        int stride,
        ArrayView<float> y,
        RandomArgs a,
        TDist dist
    )
        where TDist : struct, IRandomDistribution
    {
        for (int block = gridIndex; block < count; block += stride)
        {
            var (r0, r1, r2, r3) = Philox.Block((uint)block, 0u, a.StreamLo, a.StreamHi, a.SeedLo, a.SeedHi);
            var f = dist.Transform(r0, r1, r2, r3);
            int e = block * 4;
            y[e] = f.X;
            if (e + 1 < a.Length)
            {
                y[e + 1] = f.Y;
            }

            if (e + 2 < a.Length)
            {
                y[e + 2] = f.Z;
            }

            if (e + 3 < a.Length)
            {
                y[e + 3] = f.W;
            }
        }
    }
}
