using FluentAssertions;
using IlgpuSae.Backends;
using IlgpuSae.Kernels;
using IlgpuSae.Verification;
using Xunit;

namespace IlgpuSae.Tests.Kernels;

/// <summary>
/// The opt-in TF32 tensor-core matrix product. On CUDA (sm_80+) it runs the real <c>mma.sync</c>; on ILGPU's
/// CPU
/// accelerator the same kernel runs with the instruction emulated by warp shuffles, which tests the tiling,
/// the PTX
/// fragment layout, TF32 rounding and edges against the double-precision reference without a GPU.
/// </summary>
public sealed class TensorCoreTests
{
    public static TheoryData<BackendKind> Backends() => [BackendKind.Cpu, BackendKind.Cuda];

    private static SaeDevice Open(BackendKind backend)
    {
        try
        {
            return SaeDevice.Create(
                backend,
                null,
                new SaeDeviceOptions { TensorCores = true, Variant = KernelVariant.GpuShaped }
            );
        }
        catch (BackendUnavailableException e)
        {
            Skip.If(
                backend != BackendKind.Cpu,
                $"{backend.ToName()} backend not available: {e.Message.Split('\n')[0]}"
            );
            throw;
        }
    }

    [SkippableTheory]
    [MemberData(nameof(Backends))]
    public void Tf32_products_match_the_reference_in_every_layout_and_at_ragged_edges(BackendKind backend)
    {
        using var device = Open(backend);
        device.TensorCores.Should().BeTrue();
        device.ToString().Should().Contain("TF32 tensor cores");
        int seed = 7;
        foreach (var layout in Enum.GetValues<GemmLayout>())
        {
            foreach (
                var (m, n, k, alpha, beta) in new[]
                {
                    (33, 47, 29, 1f, 0f),
                    (70, 130, 40, -0.5f, 0.75f),
                    (1, 9, 3, 1f, 0f),
                }
            )
            {
                var random = new Random(seed++);
                var (ar, ac) = layout == GemmLayout.TN ? (k, m) : (m, k);
                var (br, bc) = layout == GemmLayout.NT ? (n, k) : (k, n);
                var a = KernelChecks.RandomData(random, (long)ar * ac);
                var b = KernelChecks.RandomData(random, (long)br * bc);
                var c0 = KernelChecks.RandomData(random, (long)m * n);
                using var ta = device.Upload(a, ar, ac);
                using var tb = device.Upload(b, br, bc);
                using var tc = device.Upload(
                    beta == 0f ? Enumerable.Repeat(float.NaN, m * n).ToArray() : c0,
                    m,
                    n
                );
                device.Ops.MatMul(ta, tb, tc, layout, alpha, beta);
                var (values, magnitudes) = CpuReference.MatMul(a, b, c0, layout, m, n, k, alpha, beta);
                var result = KernelChecks.Compare(
                    $"MatMul TF32 {layout} {m}x{n}x{k}",
                    "MatMul",
                    tc.ToArray(),
                    values,
                    i => Tolerance.Tf32Accumulation(k + 1, magnitudes[i])
                );
                result.Failure.Should().BeNull();
            }
        }
    }

    [SkippableTheory]
    [MemberData(nameof(Backends))]
    public void Inputs_really_are_rounded_to_tf32(BackendKind backend)
    {
        // 1 + 2⁻¹² is a float32 but not a TF32 value: it rounds to 1, so the product is exactly 1 (float32
        // would give 1.000244).
        using var device = Open(backend);
        float x = 1f + MathF.Pow(2, -12);
        using var a = device.Upload([x, 3f], 1, 2);
        using var b = device.Upload([1f, 0f], 2, 1);
        using var c = device.Allocate(1, 1);
        device.Ops.MatMul(a, b, c, GemmLayout.NN);
        c.ToArray()[0].Should().Be(1f);
    }

    [Fact]
    public void Tf32_rounding_is_round_to_nearest_ties_away_from_zero()
    {
        var random = new Random(3);
        var values = new List<float>
        {
            0f,
            -0f,
            1f,
            1f + MathF.Pow(2, -11),
            -(1f + MathF.Pow(2, -11)),
            1f + 3 * MathF.Pow(2, -12),
            float.Epsilon,
            -1.5e-40f,
            float.MaxValue / 4,
            float.PositiveInfinity,
            float.NegativeInfinity,
        };
        for (int i = 0; i < 10_000; i++)
        {
            values.Add((float)((random.NextDouble() * 2 - 1) * Math.Pow(2, random.Next(-140, 120))));
        }

        foreach (var v in values)
        {
            float got = BitConverter.UInt32BitsToSingle(TensorCoreKernels.ToTf32(v));
            got.Should().Be(ReferenceTf32(v), $"TF32 of {v:R}");
        }

        float.IsNaN(BitConverter.UInt32BitsToSingle(TensorCoreKernels.ToTf32(float.NaN))).Should().BeTrue();
    }

    [SkippableFact]
    public void OpenCL_refuses_tensor_cores()
    {
        SaeDevice? device = null;
        try
        {
            device = SaeDevice.Create(BackendKind.OpenCL);
        }
        catch (BackendUnavailableException e)
        {
            Skip.If(true, $"opencl backend not available: {e.Message.Split('\n')[0]}");
        }

        device!.Dispose();
        FluentActions
            .Invoking(() =>
                SaeDevice.Create(BackendKind.OpenCL, null, new SaeDeviceOptions { TensorCores = true })
            )
            .Should()
            .Throw<ArgumentException>()
            .WithMessage("*Tensor cores are not available*OpenCL*");
    }

    /// <summary>The nearest value with 10 explicit mantissa bits, ties away from zero, computed in
    /// double.</summary>
    private static float ReferenceTf32(float v)
    {
        if (!float.IsFinite(v) || v == 0)
        {
            return v;
        }

        int exponent = Math.Max(Math.ILogB(v), -126);
        double ulp = Math.ScaleB(1.0, exponent - 10);
        return (float)(Math.Round(v / ulp, MidpointRounding.AwayFromZero) * ulp);
    }
}
