using FluentAssertions;
using IlgpuSae.Sae;
using IlgpuSae.Tensors;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Verification;
using Xunit;

namespace IlgpuSae.Tests.Sae;

/// <summary>
/// The AuxK loss on the sparse path — the aux codes compacted into row and column lists, ê gathered, Ψa
/// computed at the aux entries only, and the aux shares of dW_enc and dW_dec summed over the aux column lists
/// — against the double-precision reference at widths with full 16-lane strips and a tail (d = 40), on every
/// backend. (<see cref="FamilyGradientTests"/> covers d = 12, the scalar tail only.)
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class AuxKSparseTests(DeviceFixture devices)
{
    public static TheoryData<Target, string> Cases()
    {
        var data = new TheoryData<Target, string>();
        foreach (var t in Targets.All())
        {
            foreach (
                var name in new[]
                {
                    "topk-aux-dl",
                    "topk-aux-saelens",
                    "topk-aux-saelens-rescaled",
                    "batchtopk-aux-dl",
                    "matryoshka-saelens",
                }
            )
            {
                data.Add(t, name);
            }
        }

        return data;
    }

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void Sparse_AuxK_gradients_match_the_reference_at_full_strip_widths(Target target, string caseName)
    {
        var device = devices.Get(target);
        const int d = 40,
            m = 96,
            batch = 23;
        var c = FamilyGradientTests.Cases(d, m).Single(x => x.Name == caseName);
        var (p, x) = FamilyGradientTests.Generate(c, batch, seed: 7, margin: 2e-4);
        using var sae = SparseAutoencoder.CreateEmpty(device, c.Config);
        sae.Path = TrainingPath.Sparse;
        sae.TrainingStep = 1;
        SaeTestData.Load(sae, p);
        using var counters = device.Allocate(1, m, "steps_since_fired");
        var dead = c.Dead!;
        bool dl = dead.ExcludeFiredInBatch;
        counters.CopyFrom([.. dead.DeadBefore.Select(b => b ? (dl ? 3f : 5f) : 0f)]);
        sae.AuxDeadFeatures = new DeadFeatureWindow(counters.Data, 4f, dl);
        using var tx = device.Upload(x.Select(e => (float)e).ToArray(), batch, d, "x");
        device.Ops.Fill(sae.Parameters.Gradients, float.NaN); // must be zeroed and fully rewritten
        var loss = sae.ComputeGradients(tx, c.Options, computeLoss: true)!;
        sae.LastStepWasSparse.Should().BeTrue();

        var pass = FamilyReference.Forward(c.Config, p, x, batch, c.Options, c.Dead);
        pass.Aux.Count(v => v != 0).Should().BeGreaterThan(4, "the case must exercise AuxK");
        pass.Aux.Select((v, t) => v != 0 && pass.F[t] == 0)
            .Should()
            .Contain(true, "some aux entries lie outside the selection");
        loss.Total.Should().BeApproximately(pass.Loss, TestTolerances.SaeLoss.Bound(pass.Loss), "loss");
        var expected = FamilyReference.Gradients(c.Config, p, x, batch, c.Options, c.Dead);
        foreach (var (name, reference) in expected)
        {
            var actual = SaeTestData.Read(sae, name, ParameterSection.Gradients);
            double scale = Math.Max(reference.Max(Math.Abs), 1e-30);
            var result = KernelChecks.Compare(
                $"{caseName} d{name}",
                "AuxKSparse",
                actual.Select(e => (float)e).ToArray(),
                reference,
                TestTolerances.SaeGradient(name, scale)
            );
            result.Failure.Should().BeNull($"∂L/∂{name} of {caseName} on {target}, sparse path");
        }
    }
}
