using FluentAssertions;
using IlgpuSae.Tests.Infrastructure;
using Xunit;

namespace IlgpuSae.Tests.Kernels;

/// <summary>The counter-based random fills: the same (seed, stream) gives the same values, another stream
/// others.</summary>
[Collection(DeviceCollection.Name)]
public sealed class RandomFillTests(DeviceFixture devices)
{
    [SkippableTheory]
    [MemberData(nameof(Targets.Data), MemberType = typeof(Targets))]
    public void Same_seed_same_values_and_different_streams_differ(Target target)
    {
        var device = devices.Get(target);
        using var a = device.Allocate(1, 1000);
        using var b = device.Allocate(1, 1000);
        device.Ops.FillNormal(a.Data, 0f, 1f, seed: 99, stream: 4);
        device.Ops.FillNormal(b.Data, 0f, 1f, seed: 99, stream: 4);
        a.ToArray().Should().Equal(b.ToArray());
        device.Ops.FillNormal(b.Data, 0f, 1f, seed: 99, stream: 5);
        a.ToArray().Zip(b.ToArray()).Count(t => t.First == t.Second).Should().BeLessThan(5);
    }
}
