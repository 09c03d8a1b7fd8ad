using System.Diagnostics;
using FluentAssertions;
using IlgpuSae.Backends;
using IlgpuSae.IO;
using IlgpuSae.Tests.Infrastructure;
using Xunit;

namespace IlgpuSae.Tests.Reliability;

/// <summary>
/// The command line under careless or unlucky use (issue 16): every failure is one <c>error:</c> line and a
/// non-zero exit, never a stack trace; inputs and finished runs are never overwritten; one run per folder;
/// leftovers of an interrupted run never block the next; suspicious settings are said out loud.
/// </summary>
[Collection(EnvironmentCollection.Name)]
public sealed class ReliabilityCliTests : IDisposable
{
    private readonly TempFolder _temp = new("ilgpusae-rel-");

    public ReliabilityCliTests()
    {
        Run("synth", "--rows", "2048", "--d", "8", "--features", "16", "--l0", "2", "--out", P("toy.npy"))
            .Code.Should()
            .Be(0);
    }

    public void Dispose() => _temp.Dispose();

    private string P(string name) => _temp.Path(name);

    private static (int Code, string Out, string Err) Run(params string[] args) => CliRunner.Run(args);

    private (int Code, string Out, string Err) Train(string output, params string[] extra) =>
        Run([
            "--backend",
            "cpu",
            "train",
            "--arch",
            "standard",
            "--acts",
            P("toy.npy"),
            "--d-sae",
            "16",
            "--batch-size",
            "256",
            "--tokens",
            "2048",
            "--lr-warmup",
            "2",
            "--log-every",
            "2",
            "--out",
            output,
            .. extra,
        ]);

    private static void ShouldFailCleanly((int Code, string Out, string Err) result, string expected)
    {
        result.Code.Should().NotBe(0);
        (result.Out + result.Err).Should().Contain(expected);
        (result.Out + result.Err).Should().NotContain("   at ", "no stack trace").And.NotContain("Unhandled");
    }

    [Theory]
    [InlineData("train", "0")]
    [InlineData("train", "-3")]
    [InlineData("eval", "0")]
    [InlineData("eval", "-1")]
    [InlineData("encode", "0")]
    public void A_zero_or_negative_batch_size_is_a_clear_error_in_every_command(string command, string value)
    {
        Train(P("sae")).Code.Should().Be(0);
        string[] args = command switch
        {
            "train" => new[] { "train", "--arch", "standard", "--acts", P("toy.npy"), "--d-sae", "16" }
                .Concat(["--tokens", "1000", "--out", P("other")])
                .ToArray(),
            "eval" => ["eval", "--sae", P("sae"), "--acts", P("toy.npy")],
            _ => ["encode", "--sae", P("sae"), "--acts", P("toy.npy"), "--out", P("f.safetensors")],
        };
        ShouldFailCleanly(
            Run(["--backend", "cpu", .. args, "--batch-size", value]),
            "--batch-size must be at least 1"
        );
        Directory.Exists(P("other")).Should().BeFalse();
    }

    [Fact]
    public void An_unwritable_output_folder_is_one_error_line()
    {
        var train = Train("/proc/ilgpusae-no-such-dir/run");
        ShouldFailCleanly(train, "error:");
        train.Err.Trim().Split('\n').Should().ContainSingle();
        Train(P("sae")).Code.Should().Be(0);
        var encode = Run(
            "--backend",
            "cpu",
            "encode",
            "--sae",
            P("sae"),
            "--acts",
            P("toy.npy"),
            "--out",
            "/proc/ilgpusae-features.safetensors"
        );
        ShouldFailCleanly(encode, "error:");
    }

    [Fact]
    public void An_output_equal_to_or_inside_an_input_is_refused_and_the_input_is_unchanged()
    {
        Train(P("sae")).Code.Should().Be(0);
        var acts = BadInputs.Hash(P("toy.npy"));
        var sae = BadInputs.Hash(P("sae"));
        var encode = Run(
            "--backend",
            "cpu",
            "encode",
            "--sae",
            P("sae"),
            "--acts",
            P("toy.npy"),
            "--out",
            P("toy.npy")
        );
        ShouldFailCleanly(encode, "is the same path as the input --acts");
        var export = Run(
            "--backend",
            "cpu",
            "export",
            "--sae",
            P("sae"),
            "--to",
            "jumprelu",
            "--out",
            P("sae")
        );
        ShouldFailCleanly(export, "is the same path as the input --sae");
        var inside = Run(
            "--backend",
            "cpu",
            "export",
            "--sae",
            P("sae"),
            "--to",
            "jumprelu",
            "--out",
            P("sae/sub")
        );
        ShouldFailCleanly(inside, "lies inside the input --sae");
        var holding = Train(_temp.FullName);
        ShouldFailCleanly(holding, "contains the input --acts");
        var cacheIsOut = Run(
            new[] { "--backend", "cpu", "train", "--arch", "standard", "--model", P("m"), "--site", "s" }
                .Concat(["--corpus", P("c.txt"), "--d-sae", "16", "--tokens", "2048"])
                .Concat(["--cache-activations", P("run"), "--out", P("run")])
                .ToArray()
        );
        ShouldFailCleanly(cacheIsOut, "--cache-activations must be another folder than --out");
        BadInputs.Hash(P("toy.npy")).Should().Be(acts);
        BadInputs.Hash(P("sae")).Should().Be(sae);
    }

    [Fact]
    public void A_folder_locked_by_a_live_run_is_refused_and_a_stale_lock_is_taken_over()
    {
        using (FolderLock.Acquire(P("run"), "test"))
        {
            ShouldFailCleanly(Train(P("run")), $"is in use by 'test' (process {Environment.ProcessId}");
        }

        File.Exists(P("run/" + FolderLock.FileName)).Should().BeFalse("the lock is removed on release");

        using var gone = Process.Start(new ProcessStartInfo("true") { UseShellExecute = false })!;
        gone.WaitForExit();
        File.WriteAllText(
            P("run/" + FolderLock.FileName),
            $"{{\"pid\":{gone.Id},\"host\":\"{Environment.MachineName}\",\"command\":\"train\"}}"
        );
        var train = Train(P("run"));
        train.Code.Should().Be(0, train.Err);
        train.Err.Should().Contain($"took over the stale lock of 'train' (process {gone.Id}");
        File.Exists(P("run/" + FolderLock.FileName)).Should().BeFalse();
    }

    [Fact]
    public void A_log_left_by_a_run_killed_before_its_first_checkpoint_blocks_nothing_and_is_not_duplicated()
    {
        Directory.CreateDirectory(P("run"));
        File.WriteAllText(P("run/metrics.jsonl"), "{\"step\":2}\n{\"step\":4}\n{\"step\":6,\"losses/ov");
        var plain = Train(P("run"));
        plain.Code.Should().Be(0, plain.Err);
        plain.Err.Should().Contain("interrupted before its first checkpoint");
        File.ReadAllLines(P("run/metrics.jsonl"))
            .Should()
            .HaveCount(4, "8 steps logged every 2, no old lines");

        Directory.CreateDirectory(P("again"));
        File.WriteAllText(P("again/metrics.jsonl"), "{\"step\":2}\n");
        var resume = Train(P("again"), "--resume");
        resume.Code.Should().Be(0, resume.Err);
        File.ReadAllLines(P("again/metrics.jsonl")).Should().HaveCount(4);
    }

    [Fact]
    public void A_finished_run_without_checkpoints_is_never_resumed_into()
    {
        Train(P("run")).Code.Should().Be(0);
        var before = BadInputs.Hash(P("run"));
        ShouldFailCleanly(Train(P("run"), "--resume"), "finished run");
        ShouldFailCleanly(Train(P("run")), "already holds a training run");
        BadInputs.Hash(P("run")).Should().Be(before);
    }

    [Fact]
    public void A_warm_up_longer_than_the_run_and_a_batch_larger_than_the_data_are_warned_with_the_numbers()
    {
        var run = Run(
            "--backend",
            "cpu",
            "train",
            "--arch",
            "standard",
            "--acts",
            P("toy.npy"),
            "--d-sae",
            "16",
            "--batch-size",
            "4096",
            "--tokens",
            "8192",
            "--out",
            P("run")
        );
        run.Code.Should().Be(0, run.Err);
        run.Err.Should()
            .Contain("warning: the learning-rate warm-up (1000 steps) is longer than the run (2 steps)")
            .And.Contain("never reaches 0.0003")
            .And.Contain("warning: the batch size (4096 rows) is larger than the data (2048 rows)");

        var eval = Run(
            "--backend",
            "cpu",
            "eval",
            "--sae",
            P("run"),
            "--acts",
            P("toy.npy"),
            "--batch-size",
            "4096"
        );
        eval.Code.Should().Be(0, eval.Err);
        eval.Err.Should().Contain("warning: --batch-size 4096 exceeds the 2048 rows evaluated");
    }

    [Fact]
    public void A_tensor_name_for_a_file_without_tensors_is_an_error_not_ignored()
    {
        ShouldFailCleanly(Train(P("run"), "--tensor", "x"), "applies to .safetensors activations only");
    }

    [Fact]
    public void Evaluating_on_activations_of_another_hook_than_the_sae_s_is_warned()
    {
        var data = IlgpuSae.Data.SyntheticData.Generate(2048, 8, 16, 2, seed: 3).Rows;
        foreach (
            var (folder, hook) in new[] { ("a", "blocks.0.hook_mlp_out"), ("b", "blocks.1.hook_resid_post") }
        )
        {
            var writer = new IlgpuSae.Data.ActivationCacheWriter(
                P(folder),
                8,
                1024,
                new Dictionary<string, object?> { ["hook_name"] = hook, ["model"] = "m" }
            );
            writer.Append(data);
            writer.Complete();
        }

        var train = Run(
            new[] { "--backend", "cpu", "train", "--arch", "standard", "--acts", P("a"), "--d-sae", "16" }
                .Concat(["--batch-size", "256", "--tokens", "2048", "--lr-warmup", "2", "--out", P("sae")])
                .ToArray()
        );
        train.Code.Should().Be(0, train.Err);
        var same = Run("--backend", "cpu", "eval", "--sae", P("sae"), "--acts", P("a"));
        same.Code.Should().Be(0, same.Err);
        same.Err.Should().NotContain("warning");
        var other = Run("--backend", "cpu", "eval", "--sae", P("sae"), "--acts", P("b"));
        other.Code.Should().Be(0, other.Err);
        other.Err.Should().Contain("warning: the SAE was trained on hook_name 'blocks.0.hook_mlp_out'");
    }

    private void HookCaches()
    {
        var data = IlgpuSae.Data.SyntheticData.Generate(2048, 8, 16, 2, seed: 3).Rows;
        foreach (
            var (folder, hook) in new[] { ("a", "blocks.0.hook_mlp_out"), ("b", "blocks.1.hook_resid_post") }
        )
        {
            var writer = new IlgpuSae.Data.ActivationCacheWriter(
                P(folder),
                8,
                1024,
                new Dictionary<string, object?> { ["hook_name"] = hook, ["model"] = "m" }
            );
            writer.Append(data);
            writer.Complete();
        }
    }

    private (int Code, string Out, string Err) TrainOn(string acts, string output, params string[] extra) =>
        Run(
            new[] { "--backend", "cpu", "train", "--arch", "standard", "--acts", acts, "--d-sae", "16" }
                .Concat(["--batch-size", "256", "--tokens", "2048", "--lr-warmup", "2", "--out", output])
                .Concat(extra)
                .ToArray()
        );

    [Fact]
    public void An_init_run_records_its_own_data_s_hook_not_the_old_sae_s()
    {
        HookCaches();
        TrainOn(P("a"), P("first")).Code.Should().Be(0);
        var second = TrainOn(P("b"), P("second"), "--init", P("first"));
        second.Code.Should().Be(0, second.Err);
        var meta = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(P("second/cfg.json")))![
            "metadata"
        ]!;
        meta["hook_name"]!.GetValue<string>().Should().Be("blocks.1.hook_resid_post");
        meta["initialized_from"]!.GetValue<string>().Should().Be(P("first"));
    }

    [Fact]
    public void Resuming_onto_activations_of_another_hook_is_refused()
    {
        HookCaches();
        TrainOn(P("a"), P("run"), "--checkpoint-every", "4").Code.Should().Be(0);
        foreach (var f in new[] { "cfg.json", "sae_weights.safetensors", "trainer_config.json" })
        {
            File.Delete(P("run/" + f)); // as if killed after the checkpoint at step 4
        }

        ShouldFailCleanly(
            TrainOn(P("b"), P("run"), "--checkpoint-every", "4", "--resume"),
            "hook_name: checkpoint blocks.0.hook_mlp_out, this run blocks.1.hook_resid_post"
        );
        var resumed = TrainOn(P("a"), P("run"), "--checkpoint-every", "4", "--resume");
        resumed.Code.Should().Be(0, resumed.Err);
        resumed.Out.Should().Contain("Resumed from");
    }

    [Fact]
    public void Devices_with_a_backend_that_is_absent_says_so_and_fails()
    {
        if (DeviceCatalog.ListDevices().Any(d => d.Backend == BackendKind.Cuda && d.IsSupported))
        {
            return; // this machine has CUDA
        }

        ShouldFailCleanly(Run("--backend", "cuda", "devices"), "Backend 'cuda' is not available");
        var cpu = Run("--backend", "cpu", "devices");
        cpu.Code.Should().Be(0);
        cpu.Out.Should().Contain("cpu:0");
    }

    [Fact]
    public void A_sweep_that_failed_before_computing_anything_does_not_block_its_corrected_retry()
    {
        string[] Sweep(string model) =>
            new[] { "sweep", "--model", model, "--corpus", P("toy.npy"), "--eval-corpus", P("toy.npy") }
                .Concat(["--sites", "blocks.0.hook_mlp_out", "--l1-gated", "1", "--l1-standard", "1"])
                .Concat(["--out", P("study")])
                .ToArray();
        ShouldFailCleanly(Run(["--backend", "cpu", .. Sweep(P("no-model-1"))]), "error:");
        File.Exists(P("study/study.json")).Should().BeTrue();
        var retry = Run(["--backend", "cpu", .. Sweep(P("no-model-2"))]);
        ShouldFailCleanly(retry, "no-model-2");
        retry.Err.Should().NotContain("different settings");
    }
}
