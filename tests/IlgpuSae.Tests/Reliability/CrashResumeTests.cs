using System.Diagnostics;
using System.Text.Json.Nodes;
using FluentAssertions;
using IlgpuSae.IO;
using IlgpuSae.Tests.Infrastructure;
using Xunit;

namespace IlgpuSae.Tests.Reliability;

/// <summary>
/// kill -9 at a seeded random moment of a tiny training run (a child <c>ilgpu-sae</c> process), then
/// <c>train --resume</c>: the final weights are byte-identical to an uninterrupted run's and the metrics log
/// holds the same records once each, wherever the kill landed (before the folder exists, before the first
/// checkpoint, in the middle of a log append, between checkpoints). Likewise an <c>activations</c> run
/// killed after some shards re-runs to byte-identical shards. The stale lock the killed process leaves is
/// taken over.
/// </summary>
[Collection(EnvironmentCollection.Name)]
public sealed class CrashResumeTests : IDisposable
{
    private readonly TempFolder _temp = new("ilgpusae-crash-");

    public void Dispose() => _temp.Dispose();

    private string P(string name) => _temp.Path(name);

    private string[] TrainArgs(string output) =>
        [
            "--backend",
            "cpu",
            "train",
            "--arch",
            "gated",
            "--acts",
            P("toy.npy"),
            "--d-sae",
            "32",
            "--batch-size",
            "64",
            "--tokens",
            "6400",
            "--lr-warmup",
            "5",
            "--log-every",
            "5",
            "--checkpoint-every",
            "10",
            "--out",
            output,
        ];

    /// <summary>
    /// Starts the tool as a child process and kills it (SIGKILL) once it has printed
    /// <paramref name="stepLines"/> progress lines plus a seeded delay of up to 40 ms (0 lines: 300 ms
    /// after the start, while it loads). Returns whether it was killed before it ended.
    /// </summary>
    private static bool RunAndKill(string[] args, int stepLines, int seed)
    {
        int seen = 0;
        return RunAndKill(
            args,
            line =>
            {
                if (line.StartsWith("step ", StringComparison.Ordinal))
                {
                    seen++;
                }
            },
            () => seen >= stepLines,
            stepLines == 0 ? 300 : new Random(seed).Next(40)
        );
    }

    /// <summary>Starts the tool, waits until <paramref name="trigger"/> holds, waits
    /// <paramref name="delayMs"/> more and kills it; false when it ended first.</summary>
    private static bool RunAndKill(string[] args, Action<string> onLine, Func<bool> trigger, int delayMs)
    {
        var cli = Path.Combine(AppContext.BaseDirectory, "ilgpu-sae.dll");
        var info = new ProcessStartInfo("dotnet")
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        info.ArgumentList.Add(cli);
        foreach (var a in args)
        {
            info.ArgumentList.Add(a);
        }

        using var process = Process.Start(info)!;
        var gate = new object();
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is { } line)
            {
                lock (gate)
                {
                    onLine(line);
                }
            }
        };
        process.ErrorDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var watch = Stopwatch.StartNew();
        while (true)
        {
            lock (gate)
            {
                if (trigger())
                {
                    break;
                }
            }

            if (process.HasExited || watch.Elapsed > TimeSpan.FromMinutes(5))
            {
                process.WaitForExit();
                return false; // it ended first
            }

            Thread.Sleep(10);
        }

        Thread.Sleep(delayMs);
        if (process.HasExited)
        {
            return false;
        }

        process.Kill(entireProcessTree: true);
        process.WaitForExit();
        return true;
    }

    private static string[] Records(string log) =>
        [
            .. File.ReadAllLines(log)
                .Select(l =>
                {
                    var o = JsonNode.Parse(l)!.AsObject();
                    o.Remove("details/tokens_per_second");
                    return o.ToJsonString();
                }),
        ];

    [Theory]
    [InlineData(0, 1)] // while loading
    [InlineData(1, 2)] // step 5: before the first checkpoint
    [InlineData(5, 3)] // around the checkpoint at step 20-25
    [InlineData(14, 4)] // late: step 70
    public void A_run_killed_at_a_seeded_moment_resumes_to_the_identical_result(int stepLines, int seed)
    {
        CliRunner
            .Run(
                "synth",
                "--rows",
                "4096",
                "--d",
                "16",
                "--features",
                "32",
                "--l0",
                "3",
                "--out",
                P("toy.npy")
            )
            .Code.Should()
            .Be(0);
        var reference = CliRunner.Run(TrainArgs(P("ref")));
        reference.Code.Should().Be(0, reference.Err);

        bool killed = RunAndKill(TrainArgs(P("run")), stepLines, seed);
        killed.Should().BeTrue("the kill lands before the run ends");
        File.Exists(P("run/cfg.json")).Should().BeFalse();
        var resumed = CliRunner.Run([.. TrainArgs(P("run")), "--resume"]);
        resumed.Code.Should().Be(0, resumed.Err);
        File.ReadAllBytes(P("run/sae_weights.safetensors"))
            .Should()
            .Equal(
                File.ReadAllBytes(P("ref/sae_weights.safetensors")),
                $"killed after {stepLines} log lines"
            );
        Records(P("run/metrics.jsonl")).Should().Equal(Records(P("ref/metrics.jsonl")));
        File.Exists(P("run/" + FolderLock.FileName)).Should().BeFalse();
    }

    private string[] ActivationArgs(string output) =>
        [
            "--backend",
            "cpu",
            "activations",
            "--model",
            IlgpuSae.Tests.Lm.LmTestData.BundledModel,
            "--site",
            "blocks.0.hook_resid_post",
            "--corpus",
            IlgpuSae.Tests.Lm.LmTestData.HeldOut,
            "--tokens",
            "8192",
            "--context",
            "32",
            "--shard-rows",
            "512",
            "--out",
            output,
        ];

    [Theory]
    [InlineData(1, 5)]
    [InlineData(6, 6)]
    [InlineData(12, 7)]
    public void An_activation_cache_killed_after_some_shards_resumes_to_the_identical_cache(
        int shards,
        int seed
    )
    {
        var reference = CliRunner.Run(ActivationArgs(P("ref")));
        reference.Code.Should().Be(0, reference.Err);
        Directory.CreateDirectory(P("run"));
        bool killed = RunAndKill(
            ActivationArgs(P("run")),
            _ => { },
            () => Directory.GetFiles(P("run"), "shard-*.npy").Length >= shards,
            new Random(seed).Next(60)
        );
        killed.Should().BeTrue("the kill lands before the cache is complete");
        File.Exists(P("run/manifest.json")).Should().BeFalse();
        var resumed = CliRunner.Run(ActivationArgs(P("run")));
        resumed.Code.Should().Be(0, resumed.Err);
        static string[] Shards(string folder) =>
            [
                .. Directory
                    .GetFiles(folder, "shard-*.npy")
                    .Order(StringComparer.Ordinal)
                    .Select(BadInputs.Hash),
            ];
        Shards(P("run")).Should().Equal(Shards(P("ref")));
        Directory
            .GetFiles(P("run"))
            .Select(Path.GetFileName)
            .Should()
            .NotContain(n => n!.StartsWith("pending-"));
        File.Exists(P("run/progress.json")).Should().BeFalse();
        File.Exists(P("run/" + FolderLock.FileName)).Should().BeFalse();
    }
}
