using FluentAssertions;
using ILGPU;
using ILGPU.Runtime;
using IlgpuSae.Backends;
using IlgpuSae.Tensors;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Verification;
using Xunit;

namespace IlgpuSae.Tests.Kernels;

/// <summary>Data, buffers, tolerances and assertions shared by the per-kernel reference tests.</summary>
internal static class KernelTestSupport
{
    /// <summary>Every target crossed with every shape (two sizes).</summary>
    public static TheoryData<Target, int, int> Cases(params (int A, int B)[] shapes)
    {
        var data = new TheoryData<Target, int, int>();
        foreach (var target in Targets.All())
        {
            foreach (var (a, b) in shapes)
            {
                data.Add(target, a, b);
            }
        }

        return data;
    }

    /// <summary>Every target crossed with every variant and shape (two sizes).</summary>
    public static TheoryData<Target, string, int, int> Cases(
        IEnumerable<string> variants,
        params (int A, int B)[] shapes
    )
    {
        var data = new TheoryData<Target, string, int, int>();
        foreach (var target in Targets.All())
        {
            foreach (var variant in variants)
            {
                foreach (var (a, b) in shapes)
                {
                    data.Add(target, variant, a, b);
                }
            }
        }

        return data;
    }

    /// <summary>Every target crossed with every variant and shape (three sizes).</summary>
    public static TheoryData<Target, string, int, int, int> Cases(
        IEnumerable<string> variants,
        params (int A, int B, int C)[] shapes
    )
    {
        var data = new TheoryData<Target, string, int, int, int>();
        foreach (var target in Targets.All())
        {
            foreach (var variant in variants)
            {
                foreach (var (a, b, c) in shapes)
                {
                    data.Add(target, variant, a, b, c);
                }
            }
        }

        return data;
    }

    /// <summary>A fresh seed per test, target and case: different data everywhere, reproducible from the
    /// test's name.</summary>
    public static int Seed(Target target, string test, params object[] parts) =>
        KernelReferenceTests.StableHash($"{target}|{test}|{string.Join("|", parts)}");

    /// <summary>A tensor filled with NaN, so that an element the kernel never writes fails the
    /// comparison.</summary>
    public static DeviceTensor Poisoned(SaeDevice device, int rows, int cols)
    {
        var t = device.Allocate(rows, cols);
        device.Ops.Fill(t.Data, float.NaN);
        return t;
    }

    /// <summary><paramref name="length"/> NaNs: the expected content of an output the kernel must leave
    /// untouched.</summary>
    public static double[] Untouched(int length) => Enumerable.Repeat(double.NaN, length).ToArray();

    /// <summary>An int buffer holding <paramref name="values"/>.</summary>
    public static MemoryBuffer1D<int, Stride1D.Dense> UploadInts(SaeDevice device, int[] values)
    {
        var buffer = device.Accelerator.Allocate1D<int>(values.Length);
        buffer.View.CopyFromCPU(device.Stream, values);
        device.Synchronize();
        return buffer;
    }

    /// <summary>An int buffer's content, after the queued work.</summary>
    public static int[] Download(SaeDevice device, MemoryBuffer1D<int, Stride1D.Dense> buffer)
    {
        device.Synchronize();
        var values = buffer.GetAsArray1D(device.Stream);
        device.Synchronize();
        return values;
    }

    /// <summary>
    /// <see cref="KernelChecks.RandomData"/> rounded to multiples of 2⁻¹⁰: sums of two such values are exact
    /// in float32,
    /// so comparisons against a threshold (gate, ReLU, JumpReLU) decide the same way on the device and in
    /// double, and
    /// ties such as π_gate = 0 can be placed exactly.
    /// </summary>
    public static float[] Quantized(Random random, int length, bool positive = false) =>
        [.. KernelChecks.RandomData(random, length, positive).Select(v => MathF.Round(v * 1024f) / 1024f)];

    /// <summary>
    /// A float32 sum of <paramref name="terms"/> terms of which some pass through exp, sqrt, log (e^{r_mag},
    /// 1/√var,
    /// log Σ…): <see cref="Tolerance.Accumulation"/> for the sum plus <see cref="Tolerance.Transcendental"/>
    /// applied to the
    /// whole magnitude, since a relative error of the transcendental factor scales its term. Named separately
    /// because
    /// neither existing tolerance alone covers a transcendental factor inside a sum whose result may cancel.
    /// </summary>
    public static Tolerance SumThroughTranscendental(int terms, double magnitude) =>
        new(
            $"sum of {terms} terms through a transcendental",
            Tolerance.Accumulation(terms, magnitude).Atol
                + Tolerance.Transcendental.Atol
                + Tolerance.Transcendental.Rtol * magnitude,
            Tolerance.Transcendental.Rtol
        );

    /// <summary>Elements [start, start + length) of <paramref name="values"/>.</summary>
    public static T[] Slice<T>(T[] values, int start, int length) => values.AsSpan(start, length).ToArray();

    /// <summary>Asserts that every compared element matched.</summary>
    public static void ShouldPass(this CheckResult result, Target target, int seed)
    {
        result
            .Failure.Should()
            .BeNull($"{result.Check} on {target} (seed {seed}) must match its double-precision reference");
        result.Elements.Should().BeGreaterThan(0);
    }
}
