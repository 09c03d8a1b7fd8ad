using FluentAssertions;
using IlgpuSae.Sae;
using IlgpuSae.Tensors;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Tests.Kernels;
using Xunit;

namespace IlgpuSae.Tests.Sae;

/// <summary>
/// JumpReLU's sparse training path against its dense one on the same random data, for every training
/// option: the same gradients (to the summation order's round-off), the sparse step taken, and a support
/// wider than the active entries (the window below θ).
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class JumpReluSparsePathTests(DeviceFixture devices)
{
    private const int D = 24;
    private const int M = 96;
    private const int Batch = 64;

    private static readonly string[] CaseNames =
    [
        "jumprelu-step",
        "jumprelu-tanh",
        "jumprelu-step-preact-dead",
        "jumprelu-target-l0-f",
        "jumprelu-target-l0-pre",
        "jumprelu-step-ste",
        "jumprelu-step-ste-wide",
        "jumprelu-target-l0-pre-wide",
        "jumprelu-target-l0-f-norelu",
        "jumprelu-target-l0-pre-norelu",
    ];

    public static TheoryData<Target, string> Cases()
    {
        var data = new TheoryData<Target, string>();
        foreach (var t in Targets.All())
        {
            foreach (var name in CaseNames)
            {
                data.Add(t, name);
            }
        }

        return data;
    }

    /// <summary>
    /// Fresh random parameters: pre-activations of about unit spread, b_enc near −1.5 (a few per cent of the
    /// entries active), θ uniform in [0.02, 0.3] so that some thresholds are below ε/2.
    /// </summary>
    private static Dictionary<string, double[]> Parameters(SaeConfig config, Random random)
    {
        var p = new Dictionary<string, double[]>();
        foreach (var entry in SparseAutoencoder.LayoutFor(config).Entries)
        {
            double[] values = new double[entry.Length];
            for (long k = 0; k < entry.Length; k++)
            {
                values[k] = entry.Name switch
                {
                    "b_enc" => -1.5 + 0.4 * (random.NextDouble() - 0.5),
                    "threshold" => 0.02 + 0.28 * random.NextDouble(),
                    _ => (random.NextDouble() * 2 - 1) * (entry.Name.StartsWith('W') ? 0.6 : 0.3),
                };
            }

            p[entry.Name] = values;
        }

        return p;
    }

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void Sparse_and_dense_paths_give_the_same_gradients(Target target, string caseName)
    {
        var device = devices.Get(target);
        var c = FamilyGradientTests.Cases(D, M).Single(k => k.Name == caseName);
        var random = new Random(KernelReferenceTests.StableHash($"{target}|JumpReluSparsePath|{caseName}"));
        var p = Parameters(c.Config, random);
        if (caseName.EndsWith("-norelu", StringComparison.Ordinal))
        {
            // dictionary_learning's raw θ can go negative, where its training forward (no ReLU) differs.
            var theta = p["threshold"];
            for (int i = 0; i < theta.Length; i += 2)
            {
                theta[i] = -theta[i];
            }
        }

        var x = Enumerable.Range(0, Batch * D).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        using var sae = SparseAutoencoder.CreateEmpty(device, c.Config);
        sae.TrainingStep = 1;
        SaeTestData.Load(sae, p);
        using var counters = device.Allocate(1, M, "steps_since_fired");
        if (c.Dead is { } dead)
        {
            // SAELens's dead set (window 4): dead ⇔ steps since fired > 4.
            counters.CopyFrom([.. dead.DeadBefore.Select(b => b ? 5f : 0f)]);
            sae.AuxDeadFeatures = new DeadFeatureWindow(counters.Data, 4f, false);
        }

        using var tx = device.Upload(x, Batch, D, "x");
        float[] Gradients(TrainingPath path, double threshold = 1)
        {
            sae.Path = path;
            sae.SparseDensityThreshold = threshold;
            device.Ops.Fill(sae.Parameters.Gradients, float.NaN);
            sae.ComputeGradients(tx, c.Options);
            sae.LastStepWasSparse.Should().Be(path != TrainingPath.Dense, $"{caseName}, {path} path");
            return sae.Parameters.Download(ParameterSection.Gradients);
        }

        var dense = Gradients(TrainingPath.Dense);
        var sparse = Gradients(TrainingPath.Sparse);
        var auto = Gradients(TrainingPath.Auto);
        using var fired = device.Allocate(1, M, "fired");
        sae.CountFiring(fired.Data);
        double active = fired.ToArray().Sum(v => (double)v) / ((double)Batch * M);
        active.Should().BeInRange(0.005, 0.2, "a few per cent of the entries active");
        sae.LastDensity.Should()
            .BeGreaterThan(active, "the support holds the inactive entries in the window below θ too");

        foreach (var entry in sae.Parameters.Layout.Entries)
        {
            var d = dense.AsSpan((int)entry.Offset, (int)entry.Length).ToArray();
            var tolerance = TestTolerances.SparseVsDenseGradient(Math.Max(d.Max(Math.Abs), 1e-30));
            foreach (var (name, other) in new[] { ("sparse", sparse), ("auto", auto) })
            {
                var s = other.AsSpan((int)entry.Offset, (int)entry.Length).ToArray();
                for (int k = 0; k < d.Length; k++)
                {
                    tolerance
                        .Allows(s[k], d[k])
                        .Should()
                        .BeTrue(
                            $"∂L/∂{entry.Name}[{k}] of {caseName} on {target}: {name} {s[k]}, dense {d[k]}"
                        );
                }
            }
        }
    }
}
