using System.Text.Json.Nodes;
using FluentAssertions;
using IlgpuSae.Backends;
using IlgpuSae.Data;
using IlgpuSae.IO;
using IlgpuSae.Kernels;
using IlgpuSae.Sae;
using IlgpuSae.Tensors;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Training;
using IlgpuSae.Verification;
using Xunit;

namespace IlgpuSae.Tests.Sae;

/// <summary>∂L/∂U of a bias-free ReLU, <c>1[f &gt; 0]·(Φ + λ/B)</c>, as a public binary operator.</summary>
public readonly struct ReluGradPlus(float penalty) : IBinaryOp
{
    public float Penalty { get; } = penalty;

    public float Apply(float f, float phi) => f > 0f ? phi + Penalty : 0f;
}

/// <summary>
/// A throwaway family that exists only in this test assembly: <c>f = ReLU(x̃·W_enc)</c>, no tensors of its
/// own.
/// It is written against the public interface alone (public device operators, the public workspace), which is
/// what shows that a new family needs no edits anywhere else.
/// </summary>
public sealed class IdentityReluSae : SaeArchitecture
{
    private IdentityReluSae()
        : base("test-identity-relu") { }

    public static IdentityReluSae Instance { get; } = new();

    public override void AddTensors(ParameterLayout layout, SaeConfig config) { }

    public override IReadOnlyList<string> FeatureBiases(SaeConfig config) => [];

    public override void Activate(SparseAutoencoder sae, SaeWorkspace ws) =>
        sae.Device.Ops.Map(ws.U.Data, ws.F.Data, default(Relu));

    public override void Backward(SparseAutoencoder sae, SaeWorkspace ws, float lambdaOverB, bool weightedL1)
    {
        if (weightedL1)
        {
            throw new NotSupportedException("The test family takes plain L1 only.");
        }

        var ops = sae.Device.Ops;
        int m = sae.DSae;
        ops.Map(ws.F.Data, ws.Phi.Data, ws.DU.Data, new ReluGradPlus(lambdaOverB));
        ops.ReduceColumns<Sum>(ws.DU, ws.ColumnSums.Data.SubView(0, m));
        ops.ReduceColumns<Sum>(ws.F, ws.ColumnSums.Data.SubView(2L * m, m));
    }

    public override (double[] F, double[] A) ReferenceActivate(
        SaeConfig config,
        IReadOnlyDictionary<string, double[]> p,
        double[] u,
        double[] um
    )
    {
        var f = u.Select(v => Math.Max(v, 0)).ToArray();
        return (f, f);
    }

    public override void ReferenceBackward(
        SaeConfig config,
        IReadOnlyDictionary<string, double[]> p,
        double[] u,
        double[] um,
        double[] phi,
        double[] psi,
        double[] penalty,
        double[] du,
        double[] dum,
        IDictionary<string, double[]> grads
    )
    {
        for (int i = 0; i < u.Length; i++)
        {
            du[i] = u[i] > 0 ? phi[i] + penalty[i] : 0;
        }
    }
}

/// <summary>Registering a family through the public path is all it takes to train, save and load
/// it.</summary>
[Collection(DeviceCollection.Name)]
public sealed class ArchitectureRegistrationTests(DeviceFixture devices) : IDisposable
{
    private readonly TempFolder _dir = new("arch");

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData(TrainingPath.Dense)]
    [InlineData(TrainingPath.Sparse)]
    public void A_family_registered_in_one_line_trains_saves_and_loads_with_no_edits_elsewhere(
        TrainingPath path
    )
    {
        SaeArchitectures.Register(IdentityReluSae.Instance);
        SaeArchitectures.Get("test-identity-relu").Should().BeSameAs(IdentityReluSae.Instance);
        var device = devices.Get(new Target(BackendKind.Cpu, KernelVariant.CpuShaped));
        var config = new SaeConfig
        {
            Architecture = IdentityReluSae.Instance,
            DIn = 7,
            DSae = 19,
        };
        SparseAutoencoder.TensorNames(config).Should().Equal("W_enc", "W_dec", "b_dec");

        // The generic reference, driven by the family's own reference parts, agrees with the device step.
        const int batch = 9;
        var (p, x) = SaeTestData.Generate(config, batch, seed: 4, margin: 1e-4);
        var options = new SaeLossOptions { L1Coefficient = 0.2f };
        using (var sae = SparseAutoencoder.CreateEmpty(device, config))
        {
            sae.Path = path;
            SaeTestData.Load(sae, p);
            using var tx = device.Upload(x.Select(e => (float)e).ToArray(), batch, config.DIn, "x");
            var loss = sae.ComputeGradients(tx, options, computeLoss: true)!;
            sae.LastStepWasSparse.Should().Be(path == TrainingPath.Sparse);
            double expectedLoss = SaeReference.Loss(config, p, x, batch, options);
            loss.Total.Should().BeApproximately(expectedLoss, TestTolerances.SaeLoss.Bound(expectedLoss));
            foreach (var (name, reference) in SaeReference.Gradients(config, p, x, batch, options))
            {
                var actual = SaeTestData.Read(sae, name, ParameterSection.Gradients);
                var result = KernelChecks.Compare(
                    $"test family d{name}",
                    "SaeBackward",
                    actual.Select(e => (float)e).ToArray(),
                    reference,
                    TestTolerances.SaeGradient(name, reference.Max(Math.Abs))
                );
                result.Failure.Should().BeNull($"∂L/∂{name} on the {path} path");
            }
        }

        // One trainer step end to end, then the folder loads back as the same family.
        var data = SyntheticData.Generate(512, config.DIn, 24, 3, seed: 5);
        var acts = _dir.Path($"toy-{path}.npy");
        Npy.WriteFloats(acts, data.Rows, data.N, data.D);
        using var source = ActivationSources.Open(acts);
        var folder = _dir.Path($"run-{path}");
        using (var sae = SparseAutoencoder.Create(device, config, seed: 2))
        using (
            var trainer = new SaeTrainer(
                sae,
                source,
                new TrainerOptions
                {
                    Steps = 1,
                    BatchSize = 64,
                    LrWarmupSteps = 0,
                    Loss = options,
                },
                folder
            )
        )
        {
            trainer.Train().Should().NotBeNull();
        }

        JsonNode.Parse(File.ReadAllText(Path.Combine(folder, SaeFiles.ConfigFile)))!["architecture"]!
            .GetValue<string>()
            .Should()
            .Be("test-identity-relu");
        using var loaded = SaeFiles.Load(device, folder);
        loaded.Architecture.Should().BeSameAs(IdentityReluSae.Instance);
    }

    [Fact]
    public void An_unknown_architecture_is_an_error_naming_the_registered_ones()
    {
        var act = () => SaeArchitectures.Get("topk-not-yet");
        act.Should().Throw<ArgumentException>().WithMessage("*topk-not-yet*standard*");
        var cfg = _dir.Path("cfg.json");
        File.WriteAllText(cfg, """{"architecture": "topk-not-yet", "d_in": 4, "d_sae": 8}""");
        var read = () => SaeFiles.ReadConfig(cfg);
        read.Should().Throw<InvalidDataException>().WithMessage("*topk-not-yet*not supported*gated*");
    }

    [Fact]
    public void A_second_family_under_a_taken_name_is_refused()
    {
        var act = () => SaeArchitectures.Register(new Impostor());
        act.Should().Throw<ArgumentException>().WithMessage("*gated*registered already*");
    }

    private sealed class Impostor : SaeArchitecture
    {
        public Impostor()
            : base("gated") { }

        public override void AddTensors(ParameterLayout layout, SaeConfig config) { }

        public override IReadOnlyList<string> FeatureBiases(SaeConfig config) => [];

        public override void Activate(SparseAutoencoder sae, SaeWorkspace ws) =>
            throw new NotSupportedException();

        public override void Backward(
            SparseAutoencoder sae,
            SaeWorkspace ws,
            float lambdaOverB,
            bool weightedL1
        ) => throw new NotSupportedException();

        public override (double[] F, double[] A) ReferenceActivate(
            SaeConfig config,
            IReadOnlyDictionary<string, double[]> p,
            double[] u,
            double[] um
        ) => throw new NotSupportedException();

        public override void ReferenceBackward(
            SaeConfig config,
            IReadOnlyDictionary<string, double[]> p,
            double[] u,
            double[] um,
            double[] phi,
            double[] psi,
            double[] penalty,
            double[] du,
            double[] dum,
            IDictionary<string, double[]> grads
        ) => throw new NotSupportedException();
    }
}
