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
        var pass = FamilyGradientTests.CheckDeviceGradients(
            device,
            target,
            c,
            p,
            x,
            batch,
            TrainingPath.Sparse,
            "AuxKSparse"
        );
        pass.Aux.Count(v => v != 0).Should().BeGreaterThan(4, "the case must exercise AuxK");
        pass.Aux.Select((v, t) => v != 0 && pass.F[t] == 0)
            .Should()
            .Contain(true, "some aux entries lie outside the selection");
    }
}
