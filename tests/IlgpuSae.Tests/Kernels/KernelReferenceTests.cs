using FluentAssertions;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Verification;
using Xunit;

namespace IlgpuSae.Tests.Kernels;

/// <summary>
/// Every kernel check (<see cref="KernelChecks.All"/>: every kernel family, odd sizes, outputs poisoned
/// with NaN) against its double-precision reference, on every backend and kernel shape.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class KernelReferenceTests(DeviceFixture devices)
{
    public static TheoryData<Target, string> Cases()
    {
        var data = new TheoryData<Target, string>();
        foreach (var target in Targets.All())
        {
            foreach (var check in KernelChecks.All)
            {
                data.Add(target, check.Name);
            }
        }

        return data;
    }

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void Kernel_matches_its_double_precision_reference(Target target, string check)
    {
        var device = devices.Get(target);
        var kernelCheck = KernelChecks.All.Single(c => c.Name == check);
        // A fresh seed per check and target: different data everywhere, reproducible from the test name.
        int seed = StableHash($"{target}|{check}");
        var result = kernelCheck.Run(device, seed);
        result.Failure.Should().BeNull($"{check} on {target} (seed {seed}) must match the reference");
        result.Elements.Should().BeGreaterThan(0);
    }

    internal static int StableHash(string text)
    {
        unchecked
        {
            int h = (int)2166136261;
            foreach (char c in text)
            {
                h = (h ^ c) * 16777619;
            }

            return h & 0x7fffffff;
        }
    }
}
