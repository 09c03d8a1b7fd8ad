using FluentAssertions;
using IlgpuSae.Backends;
using IlgpuSae.Data;
using IlgpuSae.IO;
using IlgpuSae.Sae;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Training;
using Xunit;

namespace IlgpuSae.Tests.Training;

/// <summary>Every checkpoint carries the run's full settings; a resume with other settings is refused, naming
/// them.</summary>
[Collection(DeviceCollection.Name)]
public sealed class ResumeSettingsTests(DeviceFixture devices) : IDisposable
{
    private readonly TempFolder _dir = new("ilgpusae-resume-");

    public void Dispose() => _dir.Dispose();

    private SaeDevice Cpu => devices.Get(new Target(BackendKind.Cpu, KernelVariant.CpuShaped));

    private static readonly SaeConfig Gated = new()
    {
        Architecture = SaeArchitecture.Gated,
        DIn = 8,
        DSae = 16,
    };

    private static TrainerOptions Options =>
        new()
        {
            Steps = 6,
            BatchSize = 64,
            LearningRate = 1e-3f,
            LrWarmupSteps = 2,
            CheckpointEvery = 3,
            LogEvery = 1,
            Loss = new SaeLossOptions { L1Coefficient = 0.1f },
            ShuffleBufferRows = 512,
            Seed = 5,
        };

    /// <summary>Trains the first 3 steps into a run folder and returns its checkpoint.</summary>
    private (string Folder, string Checkpoint, IActivationSource Data) Interrupted(string name)
    {
        var data = SyntheticData.Generate(1024, 8, 20, 3, seed: 1);
        var path = _dir.Path($"{name}.npy");
        Npy.WriteFloats(path, data.Rows, data.N, data.D);
        var source = ActivationSources.Open(path);
        var folder = _dir.Path(name);
        using var sae = SparseAutoencoder.Create(Cpu, Gated, seed: 1);
        using var trainer = new SaeTrainer(sae, source, Options, folder);
        using var cts = new CancellationTokenSource();
        var act = () =>
            trainer.Train(
                new Relay(p =>
                {
                    if (p.Step == 4)
                    {
                        cts.Cancel();
                    }
                }),
                cts.Token
            );
        act.Should().Throw<OperationCanceledException>();
        var checkpoint = SaeTrainer.LatestCheckpoint(folder)!;
        File.Exists(Path.Combine(checkpoint, TrainerConfig.FileName))
            .Should()
            .BeTrue("every checkpoint saves the full trainer configuration");
        return (folder, checkpoint, source);
    }

    public static TheoryData<string, string> ChangedSettings() =>
        new()
        {
            { "learning_rate", "lr" },
            { "l1_coefficient", "l1" },
            { "architecture", "arch" },
            { "untied", "untied" },
            { "lr_decay", "decay" },
        };

    [Theory]
    [MemberData(nameof(ChangedSettings))]
    public void Resuming_with_a_changed_setting_is_refused_with_its_name(string setting, string change)
    {
        var (folder, checkpoint, data) = Interrupted("run-" + change);
        using var _ = data;
        var config = change switch
        {
            "arch" => Gated with { Architecture = SaeArchitecture.Standard },
            "untied" => Gated with { Untied = true },
            _ => Gated,
        };
        var options = change switch
        {
            "lr" => Options with { LearningRate = 3e-3f },
            "l1" => Options with { Loss = Options.Loss with { L1Coefficient = 0.5f } },
            "decay" => Options with { LrDecay = LrDecay.Cosine },
            _ => Options,
        };
        using var sae = SparseAutoencoder.Create(Cpu, config, seed: 1);
        using var trainer = new SaeTrainer(sae, data, options, folder);
        var act = () => trainer.Resume(checkpoint);
        act.Should()
            .Throw<InvalidOperationException>()
            .WithMessage($"*{setting}*")
            .Which.Message.Should()
            .Contain("checkpoint");
        trainer.Step.Should().Be(0, "nothing was restored");
    }

    [Fact]
    public void A_changed_learning_rate_is_accepted_behind_an_explicit_override_but_a_fixed_setting_never()
    {
        var (folder, checkpoint, data) = Interrupted("override");
        using var _ = data;
        using var sae = SparseAutoencoder.Create(Cpu, Gated, seed: 1);
        var options = Options with { LearningRate = 3e-3f, Seed = Options.Seed };
        using (var trainer = new SaeTrainer(sae, data, options, folder))
        {
            trainer.Resume(checkpoint, ["learning_rate"]);
            trainer.Step.Should().Be(3);
            trainer.Train();
        }

        var saved = TrainerConfig.Read(Path.Combine(folder, TrainerConfig.FileName));
        saved
            .Values["learning_rate"]
            .Should()
            .Be("0.003", "the final SAE records the settings it finished with");

        using var other = SparseAutoencoder.Create(Cpu, Gated, seed: 1);
        using var again = new SaeTrainer(other, data, Options with { BatchSize = 32 }, folder);
        var act = () => again.Resume(checkpoint, ["batch_size"]);
        act.Should().Throw<ArgumentException>().WithMessage("*batch_size*cannot change*");
        var act2 = () => again.Resume(checkpoint);
        act2.Should().Throw<InvalidOperationException>().WithMessage("*batch_size*never change*");
        var act3 = () => again.Resume(checkpoint, ["no_such_setting"]);
        act3.Should().Throw<ArgumentException>().WithMessage("*no_such_setting*no such setting*");
    }

    [Fact]
    public void Logging_and_checkpoint_periods_may_differ_on_resume_and_training_continues_exactly()
    {
        var (folder, checkpoint, data) = Interrupted("free");
        using var _ = data;
        using var sae = SparseAutoencoder.Create(Cpu, Gated, seed: 1);
        using var trainer = new SaeTrainer(
            sae,
            data,
            Options with
            {
                LogEvery = 2,
                CheckpointEvery = 0,
            },
            folder
        );
        trainer.Resume(checkpoint);
        trainer.Step.Should().Be(3);
    }

    [Fact]
    public void A_corrupt_checkpoint_or_metrics_log_is_a_clear_error_and_changes_nothing()
    {
        var (folder, checkpoint, data) = Interrupted("corrupt");
        using var _ = data;
        using var sae = SparseAutoencoder.Create(Cpu, Gated, seed: 9);
        var before = sae.Parameters.Download();
        using var trainer = new SaeTrainer(sae, data, Options, folder);
        var state = Path.Combine(checkpoint, "trainer_state.json");
        var good = File.ReadAllText(state);
        File.WriteAllText(state, good[..(good.Length / 2)]);
        var act = () => trainer.Resume(checkpoint);
        act.Should().Throw<InvalidDataException>().WithMessage("*trainer_state.json*");
        File.WriteAllText(state, good.Replace("\"data_cursor\"", "\"cursor\"", StringComparison.Ordinal));
        act.Should().Throw<InvalidDataException>().WithMessage("*data_cursor*");
        sae.Parameters.Download().Should().Equal(before, "a refused checkpoint loads nothing");
        trainer.Step.Should().Be(0);

        File.WriteAllText(state, good);
        File.AppendAllText(Path.Combine(folder, SaeTrainer.MetricsFile), "{not json\n");
        act.Should().Throw<InvalidDataException>().WithMessage("*metrics.jsonl*line*");
    }

    private sealed class Relay(Action<TrainingProgress> report) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => report(value);
    }
}
