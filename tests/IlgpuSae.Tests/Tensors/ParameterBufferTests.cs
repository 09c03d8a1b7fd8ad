using FluentAssertions;
using IlgpuSae.Backends;
using IlgpuSae.Kernels;
using IlgpuSae.Tensors;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Verification;
using Xunit;

namespace IlgpuSae.Tests.Tensors;

/// <summary>Parameters, gradients and moments in one flat buffer with named views.</summary>
[Collection(DeviceCollection.Name)]
public sealed class ParameterBufferTests(DeviceFixture devices)
{
    private static ParameterLayout SaeLayout() =>
        new ParameterLayout().Add("W_enc", 7, 33).Add("b_enc", 1, 33).Add("W_dec", 33, 7).Add("b_dec", 1, 7);

    [Fact]
    public void Layout_packs_tensors_at_aligned_offsets_in_order()
    {
        var layout = SaeLayout();
        layout.Entries.Select(e => e.Name).Should().Equal("W_enc", "b_enc", "W_dec", "b_dec");
        layout.Entries.Should().OnlyContain(e => e.Offset % ParameterLayout.Alignment == 0);
        for (int i = 1; i < layout.Entries.Count; i++)
        {
            layout
                .Entries[i]
                .Offset.Should()
                .BeGreaterThanOrEqualTo(layout.Entries[i - 1].Offset + layout.Entries[i - 1].Length);
        }

        layout.Length.Should().BeGreaterThanOrEqualTo(layout.Entries[^1].Offset + layout.Entries[^1].Length);
        FluentActions
            .Invoking(() => layout.Add("W_enc", 1, 1))
            .Should()
            .Throw<ArgumentException>()
            .WithMessage("*already*");
        FluentActions
            .Invoking(() => layout["W_mag"])
            .Should()
            .Throw<KeyNotFoundException>()
            .WithMessage("*W_mag*W_enc, b_enc, W_dec, b_dec*");
    }

    [SkippableTheory]
    [MemberData(nameof(Targets.Data), MemberType = typeof(Targets))]
    public void Named_views_address_their_own_slice_of_each_section(Target target)
    {
        var device = devices.Get(target);
        var layout = SaeLayout();
        using var buffer = new ParameterBuffer(device, layout);
        buffer
            .Download(ParameterSection.Gradients)
            .Should()
            .OnlyContain(v => v == 0f, "a new buffer is zeroed");
        int stream = 0;
        foreach (var e in layout.Entries)
        {
            device.Ops.FillUniform(buffer[e.Name].Data, -1f, 1f, seed: 5, stream: (ulong)stream++);
            device.Ops.Fill(buffer.Gradient(e.Name).Data, e.Offset + 1f);
        }

        var values = buffer.Download(ParameterSection.Values);
        var grads = buffer.Download(ParameterSection.Gradients);
        stream = 0;
        foreach (var e in layout.Entries)
        {
            var expected = CpuReference.Uniform((int)e.Length, -1f, 1f, 5, (ulong)stream++);
            values.AsSpan((int)e.Offset, (int)e.Length).ToArray().Should().Equal(expected);
            grads
                .AsSpan((int)e.Offset, (int)e.Length)
                .ToArray()
                .Should()
                .OnlyContain(v => v == e.Offset + 1f);
        }

        buffer.ZeroGradients();
        buffer.Download(ParameterSection.Gradients).Should().OnlyContain(v => v == 0f);
        buffer
            .Download(ParameterSection.Values)
            .Should()
            .Equal(values, "zeroing gradients leaves the values alone");
        buffer.Gradients.Length.Should().Be(layout.Length);
        buffer.All.Length.Should().Be(4 * layout.Length);
    }

    [SkippableTheory]
    [MemberData(nameof(Targets.Data), MemberType = typeof(Targets))]
    public void One_Adam_launch_updates_the_whole_model(Target target)
    {
        var device = devices.Get(target);
        var layout = SaeLayout();
        using var buffer = new ParameterBuffer(device, layout);
        var random = new Random(17);
        var p = KernelChecks.RandomData(random, layout.Length);
        var g = KernelChecks.RandomData(random, layout.Length);
        buffer.Upload(p);
        buffer.Upload(g, ParameterSection.Gradients);
        var settings = new AdamSettings
        {
            LearningRate = 1e-2f,
            Beta1 = 0f,
            Beta2 = 0.999f,
        };
        device.Ops.AdamStep(
            buffer.Values,
            buffer.Gradients,
            buffer.FirstMoments,
            buffer.SecondMoments,
            settings,
            1
        );
        var (expected, _, _) = CpuReference.AdamStep(
            p,
            g,
            new float[p.Length],
            new float[p.Length],
            settings,
            1
        );
        var result = KernelChecks.Compare(
            "adam",
            "Adam",
            buffer.Download(),
            expected,
            TestTolerances.AdamOneStep
        );
        result.Failure.Should().BeNull();
    }
}
