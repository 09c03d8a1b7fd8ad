using FluentAssertions;
using IlgpuSae.Backends;
using IlgpuSae.Sae;
using IlgpuSae.Tensors;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Verification;
using MathNet.Numerics.Differentiation;
using Xunit;

namespace IlgpuSae.Tests.Sae;

/// <summary>
/// Every backward pass is checked twice: the double-precision reference against central finite differences,
/// then the device kernels against the reference, on every backend and kernel shape.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class SaeGradientTests(DeviceFixture devices)
{
    public static TheoryData<string> VariantNames()
    {
        var data = new TheoryData<string>();
        foreach (var v in SaeTestData.Variants(3, 5))
        {
            data.Add(v.Name);
        }

        return data;
    }

    public static TheoryData<Target, string, TrainingPath> DeviceCases()
    {
        var data = new TheoryData<Target, string, TrainingPath>();
        foreach (var t in Targets.All())
        {
            foreach (var v in SaeTestData.Variants(3, 5))
            {
                data.Add(t, v.Name, TrainingPath.Dense);
                data.Add(t, v.Name, TrainingPath.Sparse);
            }
        }

        return data;
    }

    private static Variant Find(string name, int d, int m) =>
        SaeTestData.Variants(d, m).Single(v => v.Name == name);

    [Theory]
    [MemberData(nameof(VariantNames))]
    public void Reference_gradients_match_central_finite_differences(string variantName)
    {
        var v = Find(variantName, d: 3, m: 5);
        const int batch = 4;
        var (p, x) = SaeTestData.Generate(v.Config, batch, seed: 11);
        var frozenDec = (double[])p["W_dec"].Clone();
        var frozenBias = (double[])p["b_dec"].Clone();
        var analytic = SaeReference.Gradients(v.Config, p, x, batch, v.Options);
        var fd = new NumericalDerivative(3, 1) { StepType = StepType.Absolute, Epsilon = 1e-6 };
        double worst = 0;
        foreach (var (name, values) in p)
        {
            for (int k = 0; k < values.Length; k++)
            {
                double Loss(double[] theta)
                {
                    var q = p.ToDictionary(kv => kv.Key, kv => kv.Key == name ? theta : kv.Value);
                    return SaeReference.Loss(v.Config, q, x, batch, v.Options, frozenDec, frozenBias);
                }

                double numeric = fd.EvaluatePartialDerivative(Loss, (double[])values.Clone(), k, 1);
                double error = Math.Abs(numeric - analytic[name][k]);
                worst = Math.Max(worst, error);
                error
                    .Should()
                    .BeLessThan(
                        TestTolerances.FiniteDifferences.Bound(numeric),
                        $"∂L/∂{name}[{k}] in {variantName}: FD {numeric}, analytic {analytic[name][k]}"
                    );
            }
        }

        worst.Should().BeLessThan(TestTolerances.FiniteDifferences.Atol);
    }

    [SkippableTheory]
    [MemberData(nameof(DeviceCases))]
    public void Device_gradients_and_loss_match_the_reference(
        Target target,
        string variantName,
        TrainingPath path
    )
    {
        var device = devices.Get(target);
        var v = Find(variantName, d: 20, m: 70);
        const int batch = 33;
        var (p, x) = SaeTestData.Generate(v.Config, batch, seed: 5, margin: 1e-4);
        using var sae = SparseAutoencoder.CreateEmpty(device, v.Config);
        sae.Path = path;
        SaeTestData.Load(sae, p);
        using var tx = device.Upload(x.Select(e => (float)e).ToArray(), batch, v.Config.DIn, "x");
        device.Ops.Fill(sae.Parameters.Gradients, float.NaN); // must be zeroed and fully rewritten
        var loss = sae.ComputeGradients(tx, v.Options, computeLoss: true)!;
        sae.LastStepWasSparse.Should().Be(path == TrainingPath.Sparse);

        var expectedLoss = SaeReference.Loss(v.Config, p, x, batch, v.Options);
        loss.Total.Should().BeApproximately(expectedLoss, TestTolerances.SaeLoss.Bound(expectedLoss), "loss");
        var expected = SaeReference.Gradients(v.Config, p, x, batch, v.Options);
        foreach (var (name, reference) in expected)
        {
            var actual = SaeTestData.Read(sae, name, ParameterSection.Gradients);
            double scale = reference.Max(Math.Abs);
            var tol = TestTolerances.SaeGradient(name, scale);
            var result = KernelChecks.Compare(
                $"{variantName} d{name}",
                "SaeBackward",
                actual.Select(e => (float)e).ToArray(),
                reference,
                tol
            );
            result.Failure.Should().BeNull($"∂L/∂{name} of {variantName} on {target}, {path} path");
        }
    }

    [Fact]
    public void Auto_path_takes_the_sparse_step_only_when_few_features_are_active_and_both_agree()
    {
        var device = devices.Get(new Target(BackendKind.Cpu, KernelVariant.CpuShaped));
        var config = new SaeConfig
        {
            Architecture = SaeArchitecture.Gated,
            DIn = 16,
            DSae = 64,
        };
        const int batch = 40;
        var (p, x) = SaeTestData.Generate(config, batch, seed: 21, margin: 1e-4);
        using var sae = SparseAutoencoder.CreateEmpty(device, config);
        SaeTestData.Load(sae, p);
        using var tx = device.Upload(x.Select(e => (float)e).ToArray(), batch, 16);
        var options = new SaeLossOptions { L1Coefficient = 0.2f };
        sae.Path = TrainingPath.Auto;
        sae.SparseDensityThreshold = 0;
        sae.ComputeGradients(tx, options);
        sae.LastStepWasSparse.Should().BeFalse();
        sae.LastDensity.Should().BeInRange(0.05, 0.95);
        var dense = sae.Parameters.Download(ParameterSection.Gradients);
        sae.SparseDensityThreshold = 1;
        sae.ComputeGradients(tx, options);
        sae.LastStepWasSparse.Should().BeTrue();
        var sparse = sae.Parameters.Download(ParameterSection.Gradients);
        var tolerance = TestTolerances.SparseVsDenseGradient(dense.Max(Math.Abs));
        dense.Zip(sparse).Should().OnlyContain(t => tolerance.Allows(t.Second, t.First));
    }

    [SkippableTheory]
    [MemberData(nameof(Targets.Data), MemberType = typeof(Targets))]
    public void Sparsity_and_aux_send_no_gradient_to_r_mag_and_b_mag_and_frozen_aux_none_to_the_decoder(
        Target target
    )
    {
        var device = devices.Get(target);
        var config = new SaeConfig
        {
            Architecture = SaeArchitecture.Gated,
            DIn = 12,
            DSae = 30,
        };
        const int batch = 16;
        var (p, x) = SaeTestData.Generate(config, batch, seed: 3, margin: 1e-4);
        using var sae = SparseAutoencoder.CreateEmpty(device, config);
        SaeTestData.Load(sae, p);
        using var tx = device.Upload(x.Select(e => (float)e).ToArray(), batch, 12);

        Dictionary<string, double[]> Grads(SaeLossOptions o)
        {
            sae.ComputeGradients(tx, o);
            return SparseAutoencoder
                .TensorNames(config)
                .ToDictionary(n => n, n => SaeTestData.Read(sae, n, ParameterSection.Gradients));
        }

        var low = Grads(new SaeLossOptions { L1Coefficient = 0.01f });
        var high = Grads(new SaeLossOptions { L1Coefficient = 5f });
        var unfrozen = Grads(new SaeLossOptions { L1Coefficient = 0.01f, FreezeAuxDecoder = false });
        high["r_mag"].Should().Equal(low["r_mag"], "λ does not reach r_mag");
        high["b_mag"].Should().Equal(low["b_mag"], "λ does not reach b_mag");
        unfrozen["r_mag"].Should().Equal(low["r_mag"], "the aux term does not reach r_mag");
        high["b_gate"].Should().NotEqual(low["b_gate"], "λ does reach the gate");

        // Frozen aux: the device's dW_dec is the reference's frozen-aux gradient (reconstruction only), which
        // differs from the unfrozen one by Aᵀ·Δa — so the aux term demonstrably sends nothing into W_dec.
        var reference = SaeReference.Gradients(
            config,
            p,
            x,
            batch,
            new SaeLossOptions { L1Coefficient = 0.01f }
        );
        var referenceUnfrozen = SaeReference.Gradients(
            config,
            p,
            x,
            batch,
            new SaeLossOptions { L1Coefficient = 0.01f, FreezeAuxDecoder = false }
        );
        reference["W_dec"]
            .Zip(referenceUnfrozen["W_dec"])
            .Should()
            .Contain(
                t => Math.Abs(t.First - t.Second) > 1e-3,
                "unfreezing the aux decoder adds Aᵀ·Δa to dW_dec"
            );
        low["W_dec"]
            .Zip(reference["W_dec"])
            .Should()
            .OnlyContain(t => TestTolerances.FrozenAuxDecoderGradient.Allows(t.First, t.Second));
    }
}
