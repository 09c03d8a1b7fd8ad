using System.Text.Json.Nodes;
using FluentAssertions;
using IlgpuSae.Backends;
using IlgpuSae.Data;
using IlgpuSae.IO;
using IlgpuSae.Sae;
using IlgpuSae.Tensors;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Training;
using Xunit;

namespace IlgpuSae.Tests.Training;

/// <summary>The training loop: golden trajectory, exact resume, constraints, partial training, recovery of
/// known features.</summary>
[Collection(DeviceCollection.Name)]
public sealed class TrainerTests(DeviceFixture devices) : IDisposable
{
    private readonly TempFolder _temp = new("ilgpusae-train-");

    public void Dispose() => _temp.Dispose();

    private string P(string name) => _temp.Path(name);

    private IActivationSource Toy(int n = 8192, int d = 16, int features = 32, double l0 = 3, ulong seed = 7)
    {
        var data = SyntheticData.Generate(n, d, features, l0, seed);
        var path = P($"toy-{n}-{d}-{features}-{seed}.npy");
        if (!File.Exists(path))
        {
            Npy.WriteFloats(path, data.Rows, n, d);
        }

        return ActivationSources.Open(path);
    }

    private static TrainerOptions Small(long steps) =>
        new()
        {
            Steps = steps,
            BatchSize = 128,
            LearningRate = 3e-3f,
            LrWarmupSteps = 5,
            LogEvery = 1,
            Loss = new SaeLossOptions { L1Coefficient = 0.5f },
            ShuffleBufferRows = 2048,
            Seed = 3,
        };

    private static double[] Losses(string folder) =>
        File.ReadAllLines(Path.Combine(folder, SaeTrainer.MetricsFile))
            .Select(l => JsonNode.Parse(l)!["losses/overall_loss"]!.GetValue<double>())
            .ToArray();

    // Generated on the CPU accelerator (cpu-shaped kernels) at commit time; other backends and kernel
    // shapes sum in other orders, so they are held to 1e-3 relative instead of 1e-5.
    private static readonly double[] GoldenGated =
    [
        57.77259110659361,
        44.85511401331556,
        41.290512779052506,
        41.818881345418504,
        44.434708860072305,
        49.20341208997161,
        36.08840324093035,
        42.971217691287166,
        42.32596297601776,
        27.90614907348754,
    ];

    [SkippableTheory]
    [MemberData(nameof(Targets.Data), MemberType = typeof(Targets))]
    public void Ten_gated_steps_follow_the_golden_loss_trajectory(Target target)
    {
        Skip.If(
            target == new Target(BackendKind.Cpu, KernelVariant.GpuShaped),
            "GPU-shaped (barrier) kernels take minutes to train on ILGPU's CPU simulator; the kernel tests cover them there."
        );
        var device = devices.Get(target);
        using var data = Toy();
        using var sae = SparseAutoencoder.Create(
            device,
            new SaeConfig
            {
                Architecture = SaeArchitecture.Gated,
                DIn = 16,
                DSae = 48,
            },
            seed: 3
        );
        var folder = P($"golden-{target.Backend}-{target.Variant}");
        using var trainer = new SaeTrainer(sae, data, Small(10), folder);
        trainer.Train();
        var losses = Losses(folder);
        losses.Should().HaveCount(10);
        double rtol = target == new Target(BackendKind.Cpu, KernelVariant.CpuShaped) ? 1e-5 : 1e-3;
        for (int i = 0; i < 10; i++)
        {
            losses[i].Should().BeApproximately(GoldenGated[i], rtol * GoldenGated[i], $"step {i + 1}");
        }

        losses[^1].Should().BeLessThan(losses[0], "training reduces the loss");
    }

    [Fact]
    public void Stopping_and_resuming_from_a_checkpoint_gives_the_same_model_bit_for_bit()
    {
        var device = devices.Get(new Target(BackendKind.Cpu, KernelVariant.CpuShaped));
        var config = new SaeConfig
        {
            Architecture = SaeArchitecture.Gated,
            DIn = 16,
            DSae = 48,
        };
        var options = Small(24) with
        {
            ResampleEvery = 8,
            CheckpointEvery = 10,
            LogEvery = 4,
            L1WarmupSteps = 6,
        };
        using var data = Toy();
        using (var straight = SparseAutoencoder.Create(device, config, seed: 3))
        using (var trainer = new SaeTrainer(straight, data, options, P("straight")))
        {
            trainer.Train();
        }

        using (var first = SparseAutoencoder.Create(device, config, seed: 3))
        using (var trainer = new SaeTrainer(first, data, options with { Steps = 24 }, P("split")))
        {
            // Interrupt after the step-20 checkpoint by cancelling from the progress callback.
            using var cts = new CancellationTokenSource();
            var act = () =>
                trainer.Train(
                    new Stop(p =>
                    {
                        if (p.Step == 21)
                        {
                            cts.Cancel();
                        }
                    }),
                    cts.Token
                );
            act.Should().Throw<OperationCanceledException>();
        }

        SaeTrainer.LatestCheckpoint(P("split")).Should().EndWith("step-00000020");
        using (var resumed = SparseAutoencoder.Create(device, config, seed: 99))
        using (var trainer = new SaeTrainer(resumed, data, options, P("split")))
        {
            trainer.Resume(SaeTrainer.LatestCheckpoint(P("split"))!);
            trainer.Step.Should().Be(20);
            trainer.Train();
        }

        using var a = SaeFiles.Load(device, P("straight"));
        using var b = SaeFiles.Load(device, P("split"));
        b.Parameters.Download().Should().Equal(a.Parameters.Download());
        Losses(P("split"))
            .Should()
            .Equal(Losses(P("straight")), "the log is truncated to the checkpoint and continues identically");
    }

    private sealed class Stop(Action<TrainingProgress> action) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => action(value);
    }

    [Fact]
    public void The_paper_recipe_keeps_decoder_rows_at_unit_norm_and_rescale_shift_trains_only_r_mag_and_b_mag()
    {
        var device = devices.Get(new Target(BackendKind.Cpu, KernelVariant.CpuShaped));
        using var data = Toy();
        using var standard = SparseAutoencoder.Create(
            device,
            new SaeConfig
            {
                Architecture = SaeArchitecture.Standard,
                DIn = 16,
                DSae = 48,
            },
            seed: 5
        );
        using (var trainer = new SaeTrainer(standard, data, Small(15), null))
        {
            trainer.Train();
        }

        var wDec = SaeTestDataRows(standard, "W_dec", 48, 16);
        wDec.Should()
            .OnlyContain(
                norm => Math.Abs(norm - 1) < 1e-5,
                "the decoder constraint renormalises after each step"
            );

        using var wrapped = RescaleShift.Wrap(standard);
        var before = wrapped.Parameters.Download();
        var beforeFeatures = wrapped
            .ForwardHost(
                new float[16 * 4]
                    .Select((_, i) => (float)Math.Sin(i))
                    .ToArray(),
                4
            )
            .Features;
        var stdFeatures = standard
            .ForwardHost(
                new float[16 * 4]
                    .Select((_, i) => (float)Math.Sin(i))
                    .ToArray(),
                4
            )
            .Features;
        beforeFeatures.Should().Equal(stdFeatures, "r_mag = 0, b_mag = b_enc reproduce the baseline");
        using (
            var trainer = new SaeTrainer(
                wrapped,
                data,
                Small(10) with
                {
                    TrainableParameters = ["r_mag", "b_mag"],
                    ConstrainDecoderNorm = false,
                },
                null
            )
        )
        {
            trainer.Train();
        }

        var after = wrapped.Parameters.Download();
        foreach (var e in wrapped.Parameters.Layout.Entries)
        {
            var changed = Enumerable.Range((int)e.Offset, (int)e.Length).Any(i => before[i] != after[i]);
            changed.Should().Be(e.Name is "r_mag" or "b_mag", e.Name);
        }
    }

    private static double[] SaeTestDataRows(SparseAutoencoder sae, string name, int rows, int cols)
    {
        var e = sae.Parameters.Layout[name];
        var v = sae.Parameters.Download();
        return Enumerable
            .Range(0, rows)
            .Select(r =>
                Math.Sqrt(
                    Enumerable
                        .Range(0, cols)
                        .Sum(c => (double)v[e.Offset + r * cols + c] * v[e.Offset + r * cols + c])
                )
            )
            .ToArray();
    }

    [Fact]
    public void Both_SAEs_recover_known_features_and_gated_shrinks_less_at_matched_L0()
    {
        var device = devices.Get(new Target(BackendKind.Cpu, KernelVariant.CpuShaped));
        var truth = SyntheticData.Generate(16384, 16, 32, 3, seed: 7);
        Npy.WriteFloats(P("truth.npy"), truth.Rows, truth.N, truth.D);
        using var data = ActivationSources.Open(P("truth.npy"));
        (double Mmcs, SaeMetrics Metrics) Run(SaeArchitecture arch, float l1)
        {
            using var sae = SparseAutoencoder.Create(
                device,
                new SaeConfig
                {
                    Architecture = arch,
                    DIn = 16,
                    DSae = 32,
                },
                seed: 11
            );
            var options = Small(1500) with
            {
                BatchSize = 256,
                LrWarmupSteps = 50,
                LogEvery = 10000,
                ShuffleBufferRows = 4096,
                Loss = new SaeLossOptions { L1Coefficient = l1 },
            };
            using (var trainer = new SaeTrainer(sae, data, options, null))
            {
                trainer.Train();
            }

            var e = sae.Parameters.Layout["W_dec"];
            var w = sae.Parameters.Download().AsSpan((int)e.Offset, (int)e.Length).ToArray();
            double mmcs = 0;
            for (int f = 0; f < truth.Features; f++)
            {
                double best = 0;
                for (int i = 0; i < 32; i++)
                {
                    double dot = 0,
                        nn = 0;
                    for (int j = 0; j < 16; j++)
                    {
                        dot += truth.Directions[f * 16 + j] * (double)w[i * 16 + j];
                        nn += w[i * 16 + j] * (double)w[i * 16 + j];
                    }

                    best = Math.Max(best, dot / Math.Sqrt(nn));
                }

                mmcs += best / truth.Features;
            }

            return (mmcs, SaeEvaluator.Evaluate(sae, data, 1024, maxTokens: 8192));
        }

        // 32 true directions in 16 dimensions, 3 active per row; dictionaries of 32; λ = 3 (measured: L0 ≈ 3
        // for both).
        var standard = Run(SaeArchitecture.Standard, 3f);
        var gated = Run(SaeArchitecture.Gated, 3f);
        standard.Mmcs.Should().BeGreaterThanOrEqualTo(0.9);
        gated.Mmcs.Should().BeGreaterThanOrEqualTo(0.9);
        (gated.Metrics.L0 / standard.Metrics.L0)
            .Should()
            .BeInRange(0.67, 1.5, "the comparison is at (roughly) matched sparsity");
        Math.Abs(gated.Metrics.RelativeReconstructionBias - 1)
            .Should()
            .BeLessThan(
                Math.Abs(standard.Metrics.RelativeReconstructionBias - 1),
                $"gated γ {gated.Metrics.RelativeReconstructionBias:F3} vs baseline γ {standard.Metrics.RelativeReconstructionBias:F3}"
            );
        standard.Metrics.RelativeReconstructionBias.Should().BeLessThan(0.97, "an L1 baseline shrinks");
    }

    [Fact]
    public void Activation_normalisation_is_folded_into_the_saved_weights()
    {
        var device = devices.Get(new Target(BackendKind.Cpu, KernelVariant.CpuShaped));
        var truth = SyntheticData.Generate(4096, 16, 32, 3, seed: 5);
        var scaled = truth.Rows.Select(v => v * 40f).ToArray(); // activations far from unit scale
        Npy.WriteFloats(P("big.npy"), scaled, truth.N, truth.D);
        using var data = ActivationSources.Open(P("big.npy"));
        using var sae = SparseAutoencoder.Create(
            device,
            new SaeConfig
            {
                Architecture = SaeArchitecture.Gated,
                DIn = 16,
                DSae = 32,
            },
            seed: 2
        );
        using var trainer = new SaeTrainer(
            sae,
            data,
            Small(20) with
            {
                NormalizeActivations = true,
            },
            P("norm")
        );
        trainer.Train();
        trainer.NormalizationScale.Should().BeInRange(0.02f, 0.2f, "E‖x‖ ≈ 40·√3·1.7 is scaled to √16");

        // The saved SAE takes raw activations: its features equal the training SAE's on scaled inputs, and
        // its
        // reconstruction is the training reconstruction divided by the scale.
        using var saved = SaeFiles.Load(device, P("norm"));
        var x = scaled.AsSpan(0, 8 * 16).ToArray();
        var (fSaved, rSaved) = saved.ForwardHost(x, 8);
        var (fTrain, rTrain) = sae.ForwardHost(x.Select(v => v * trainer.NormalizationScale).ToArray(), 8);
        fSaved
            .Zip(fTrain)
            .Should()
            .OnlyContain(t => Math.Abs(t.First - t.Second) <= 1e-4 + 1e-4 * Math.Abs(t.Second));
        rSaved
            .Zip(rTrain)
            .Should()
            .OnlyContain(t =>
                Math.Abs(t.First - t.Second / trainer.NormalizationScale) <= 1e-3 + 1e-4 * Math.Abs(t.First)
            );
    }

    [Fact]
    public void Evaluator_metrics_follow_their_formulas()
    {
        var acc = new SaeEvaluator.Accumulator(2, 3);
        float[] x = [1, 0, 0, 2, 3, 4];
        float[] xhat = [0.5f, 0, 0, 1, 3, 4];
        float[] f = [1, 0, 0, 0, 2, 0, 0, 0, 0];
        acc.Add(x, f, xhat, 3);
        var m = acc.Result();
        m.L0.Should().BeApproximately(2 / 3.0, 1e-12);
        m.L1.Should().BeApproximately(1.0, 1e-12);
        m.Mse.Should().BeApproximately((0.25 + 1) / 6, 1e-12);
        // γ = E‖x̂‖² / E[x·x̂] = (0.25 + 1 + 25) / (0.5 + 2 + 25)
        m.RelativeReconstructionBias.Should().BeApproximately(26.25 / 27.5, 1e-12);
        m.FractionAlive.Should().BeApproximately(2 / 3.0, 1e-12);
        m.DeadFeatures.Should().Be(1);
        // batch mean (4/3, 2): total variance per row and residual per row
        double[] tv = [Sq(1 - 4 / 3.0) + 4, Sq(-4 / 3.0), Sq(3 - 4 / 3.0) + 4];
        double[] sq = [0.25, 1, 0];
        m.ExplainedVariance.Should().BeApproximately(1 - sq.Sum() / tv.Sum(), 1e-12);
        m.ExplainedVarianceLegacy.Should()
            .BeApproximately(Enumerable.Range(0, 3).Average(i => 1 - sq[i] / tv[i]), 1e-12);
    }

    private static double Sq(double v) => v * v;
}
