using FluentAssertions;
using IlgpuSae.Sae;
using IlgpuSae.Training;
using Xunit;

namespace IlgpuSae.Tests.Training;

/// <summary>The device-memory plan printed before training and enforced against the device.</summary>
public sealed class MemoryPlanTests
{
    private static readonly SaeConfig Gated = new()
    {
        Architecture = SaeArchitecture.Gated,
        DIn = 512,
        DSae = 4096,
    };

    [Fact]
    public void The_plan_counts_parameters_grads_moments_and_the_batch_workspace()
    {
        var plan = MemoryPlan.For(Gated, 4096);
        // 4 copies (values, grads, two moments), each tensor padded to 64 floats.
        long paramsFloats = 2L * 512 * 4096 + 3 * 4096 + 512; // W_enc, W_dec, b_gate/b_mag/r_mag, b_dec
        plan.ParameterBytes.Should().BeInRange(4 * paramsFloats * 4, 4 * (paramsFloats + 6 * 64) * 4);
        // The largest per-batch terms: U, [F; A], [Φ; Ψ], dU = 6·B·M floats; X̃, X̂/Δ stacks = 5·B·d.
        plan.ActivationBytes.Should().BeGreaterThanOrEqualTo(4L * (6L * 4096 * 4096 + 5L * 4096 * 512));
        // The matrix-product scratch (W_dec transposed, M·d floats, for δ·W_decᵀ on CPU-shaped kernels) does
        // not
        // shrink with the batch: at B = 1 it dominates the workspace.
        MemoryPlan.For(Gated, 1).ActivationBytes.Should().BeGreaterThanOrEqualTo(4L * 4096 * 512);
        MemoryPlan.For(Gated, 2048).ActivationBytes.Should().BeLessThan(plan.ActivationBytes);
        plan.ToString().Should().Contain("MiB").And.Contain("batch 4096");
    }

    [Fact]
    public void A_run_that_does_not_fit_is_refused_with_a_batch_size_that_does()
    {
        long device = 1L << 30;
        int fits = MemoryPlan.LargestBatchFitting(Gated, device);
        fits.Should().BeGreaterThan(0);
        fits.Should().Be(fits / 256 * 256);
        MemoryPlan.For(Gated, fits).TotalBytes.Should().BeLessThanOrEqualTo(device);
        MemoryPlan.For(Gated, fits + 256).TotalBytes.Should().BeGreaterThan(device);
        FluentActions
            .Invoking(() => MemoryPlan.EnsureFits(Gated, 65536, device, "gpu:0"))
            .Should()
            .Throw<ArgumentException>()
            .WithMessage($"*gpu:0 has 1.00 GiB*--batch-size {fits}*");
        FluentActions
            .Invoking(() => MemoryPlan.EnsureFits(Gated with { DSae = 1 << 20 }, 1, 1L << 20, "tiny"))
            .Should()
            .Throw<ArgumentException>()
            .WithMessage("*Even a batch of 1 does not fit*");
    }
}
