using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using FluentAssertions;
using IlgpuSae.Data;
using IlgpuSae.IO;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Tests.Lm;
using Xunit;

namespace IlgpuSae.Tests.Cli;

/// <summary>
/// <c>activations --parallel data</c> and <c>train --model … --parallel</c> under <c>mpiexec -n 2</c>
/// (MPICH; see <see cref="Mpi"/>), on the bundled model: the sharded cache holds the single-process
/// cache's rows (as a multiset, bit for bit) under one manifest, streamed training across ranks equals the
/// single-process run step for step, and bad launches are refused with one error and nothing written.
/// </summary>
[Collection(EnvironmentCollection.Name)]
public sealed class ShardedActivationsCliTests : IDisposable
{
    /// <summary>As in <see cref="ParallelCliTests"/>: the rows are the same bits, and the 2-rank run sums
    /// each batch's gradient in another order, a few ulps per step.</summary>
    private const double Tolerance = 1e-4;

    private readonly TempFolder _temp = new("ilgpusae-mpi-acts-");

    public void Dispose() => _temp.Dispose();

    private string P(string name) => _temp.Path(name);

    /// <summary>3000 rows of contexts of 64 tokens, 8 contexts a batch: 6 batches, 3 on each of 2
    /// ranks.</summary>
    private string[] ActivationsArgs(string output) =>
        [
            "--backend",
            "cpu",
            "activations",
            "--model",
            LmTestData.BundledModel,
            "--site",
            "blocks.0.hook_mlp_out",
            "--corpus",
            LmTestData.HeldOut,
            "--tokens",
            "3000",
            "--context",
            "64",
            "--lm-batch",
            "8",
            "--shard-rows",
            "512",
            "--out",
            output,
        ];

    private static string[] TrainArgs(string output, bool resample = true) =>
        [
            "--backend",
            "cpu",
            "train",
            "--arch",
            "standard",
            "--model",
            LmTestData.BundledModel,
            "--site",
            "blocks.0.hook_mlp_out",
            "--corpus",
            LmTestData.HeldOut,
            "--context",
            "64",
            "--lm-batch",
            "8",
            "--tokens",
            "1280",
            "--batch-size",
            "64",
            "--d-sae",
            "64",
            "--lr-warmup",
            "5",
            "--log-every",
            "1",
            .. (resample ? new[] { "--resample-every", "10" } : []),
            "--out",
            output,
        ];

    private static string[] SortedRows(string folder)
    {
        using var cache = ActivationCache.Open(folder);
        cache.Verify();
        var rows = new float[cache.Rows * cache.Dim];
        cache.ReadRows(0, rows);
        int d = cache.Dim;
        return
        [
            .. Enumerable
                .Range(0, (int)cache.Rows)
                .Select(r => Convert.ToBase64String(MemoryMarshal.AsBytes(rows.AsSpan(r * d, d))))
                .Order(StringComparer.Ordinal),
        ];
    }

    /// <summary>
    /// The 2-rank cache against the single-process one: the same rows bit for bit as a multiset (each
    /// batch of contexts goes through the model exactly as in the single process, so batching cannot change
    /// their rounding; only the order differs, the shuffle mixing rows within a rank's shards), one
    /// manifest listing both ranks' shards whose SHA-256s verify, nothing else left in the folder; and the
    /// cache trains.
    /// </summary>
    [SkippableFact]
    public void A_two_rank_activations_cache_holds_the_single_process_rows_under_one_manifest_and_trains()
    {
        Mpi.Exec();
        var single = CliRunner.Run(ActivationsArgs(P("single")));
        single.Code.Should().Be(0, single.Err);
        var parallel = Mpi.Run(2, [.. ActivationsArgs(P("sharded")), "--parallel", "data"]);
        parallel.Code.Should().Be(0, parallel.Out + parallel.Err);
        parallel.Out.Should().Contain("2 ranks (rank r runs batches r, r + 2, … of 8 contexts)");
        parallel.Out.Should().Contain("Wrote 3000 rows in");

        var manifest = JsonNode.Parse(File.ReadAllText(P("sharded/manifest.json")))!;
        var shards = manifest["shards"]!.AsArray().Select(s => s!["file"]!.GetValue<string>()).ToArray();
        shards
            .Should()
            .Contain(f => f.StartsWith("shard-r000-"))
            .And.Contain(f => f.StartsWith("shard-r001-"));
        Directory
            .GetFiles(P("sharded"))
            .Select(Path.GetFileName)
            .Should()
            .BeEquivalentTo(shards.Append("manifest.json"), "one manifest, no progress or pending files");
        manifest["source"]!["ranks"]!.GetValue<int>().Should().Be(2);
        SortedRows(P("sharded")).Should().Equal(SortedRows(P("single")));
        var singleNorms = JsonNode.Parse(File.ReadAllText(P("single/manifest.json")))!["source"]![
            "normalization"
        ]!;
        manifest["source"]!["normalization"]!
            .ToJsonString()
            .Should()
            .Be(singleNorms.ToJsonString(), "exact sums: the same statistics bit for bit");

        var train = CliRunner.Run(
            "--backend",
            "cpu",
            "train",
            "--arch",
            "standard",
            "--acts",
            P("sharded"),
            "--d-sae",
            "64",
            "--batch-size",
            "64",
            "--tokens",
            "640",
            "--out",
            P("sae")
        );
        train.Code.Should().Be(0, train.Err);
        File.Exists(P("sae/sae_weights.safetensors")).Should().BeTrue();

        // Run again, the finished cache is confirmed, not rebuilt.
        var again = Mpi.Run(2, [.. ActivationsArgs(P("sharded")), "--parallel", "data"]);
        again.Code.Should().Be(0, again.Out + again.Err);
        SortedRows(P("sharded")).Should().Equal(SortedRows(P("single")));
    }

    /// <summary>
    /// Streamed training across 2 ranks (each running the model on half of every group of batches, the
    /// rows all-gathered in context order) against one process streaming alone: every step's losses and
    /// the final weights within <see cref="Tolerance"/>, the ranks' weights bit-identical after every step
    /// (<c>--parallel-check</c>).
    /// </summary>
    [SkippableTheory]
    [InlineData("data")]
    [InlineData("features")]
    public void Two_ranks_streaming_from_a_model_train_like_one_process_step_for_step(string mode)
    {
        Mpi.Exec();
        bool resample = mode == "data";
        var single = CliRunner.Run(TrainArgs(P("single"), resample));
        single.Code.Should().Be(0, single.Err);
        var parallel = Mpi.Run(
            2,
            [.. TrainArgs(P("parallel"), resample), "--parallel", mode, "--parallel-check"]
        );
        parallel.Code.Should().Be(0, parallel.Out + parallel.Err);
        parallel
            .Out.Should()
            .Contain("(streamed)")
            .And.Contain("Streamed across 2 ranks: rank 0 ran the model on");
        AssertClose(P("single"), P("parallel"), 20);
    }

    /// <summary><c>train --model … --cache-activations … --parallel data</c> builds the cache sharded (the
    /// rows of the single-process cache as a multiset, under one manifest) and trains from it.</summary>
    [SkippableFact]
    public void Train_with_a_cache_across_ranks_builds_it_sharded_and_trains_from_it()
    {
        Mpi.Exec();
        var single = CliRunner.Run([.. TrainArgs(P("single")), "--cache-activations", P("cache-single")]);
        single.Code.Should().Be(0, single.Err);
        var parallel = Mpi.Run(
            2,
            [.. TrainArgs(P("parallel")), "--cache-activations", P("cache-sharded"), "--parallel", "data"]
        );
        parallel.Code.Should().Be(0, parallel.Out + parallel.Err);
        var manifest = JsonNode.Parse(File.ReadAllText(P("cache-sharded/manifest.json")))!;
        manifest["source"]!["ranks"]!.GetValue<int>().Should().Be(2);
        SortedRows(P("cache-sharded")).Should().Equal(SortedRows(P("cache-single")));
        Metrics(P("parallel")).Should().HaveCount(20);
        File.Exists(P("parallel/sae_weights.safetensors")).Should().BeTrue();
    }

    private static JsonObject[] Metrics(string folder) =>
        [
            .. File.ReadAllLines(Path.Combine(folder, "metrics.jsonl"))
                .Select(l => JsonNode.Parse(l)!.AsObject()),
        ];

    private static void AssertClose(string expected, string actual, int steps)
    {
        var a = Metrics(expected);
        var b = Metrics(actual);
        b.Length.Should().Be(a.Length).And.Be(steps, "one record per step");
        for (int i = 0; i < a.Length; i++)
        {
            foreach (
                var key in new[] { "losses/overall_loss", "losses/mse_loss", "losses/l1_loss", "metrics/l0" }
            )
            {
                double x = a[i][key]!.GetValue<double>(),
                    y = b[i][key]!.GetValue<double>();
                Math.Abs(x - y)
                    .Should()
                    .BeLessThanOrEqualTo(Tolerance * Math.Max(1, Math.Abs(x)), $"{key} at step {i + 1}");
            }
        }

        using var ws = new SafetensorsFile(Path.Combine(expected, "sae_weights.safetensors"));
        using var wp = new SafetensorsFile(Path.Combine(actual, "sae_weights.safetensors"));
        wp.Entries.Keys.Should().BeEquivalentTo(ws.Entries.Keys);
        foreach (var name in ws.Entries.Keys)
        {
            var x = ws.ReadFloats(name);
            var y = wp.ReadFloats(name);
            double scale = Math.Max(1, x.Max(v => Math.Abs(v)));
            x.Zip(y, (u, v) => Math.Abs((double)u - v))
                .Max()
                .Should()
                .BeLessThanOrEqualTo(Tolerance * scale, name);
        }
    }

    /// <summary>
    /// A rank killed mid-build stops the job with no manifest written; the same command on the same number
    /// of ranks resumes every rank from its own progress record to the uninterrupted cache, shard for shard.
    /// </summary>
    [SkippableFact]
    public void A_killed_rank_stops_the_build_and_the_same_launch_resumes_to_the_uninterrupted_cache()
    {
        Mpi.Exec();
        // 24 batches of 2 contexts (12 per rank), shards of 256 rows: several shards per rank.
        string[] Args(string output)
        {
            string[] args = [.. ActivationsArgs(output), "--parallel", "data"];
            args[Array.IndexOf(args, "--lm-batch") + 1] = "2";
            args[Array.IndexOf(args, "--shard-rows") + 1] = "256";
            return args;
        }

        var reference = Mpi.Run(2, Args(P("ref")));
        reference.Code.Should().Be(0, reference.Out + reference.Err);

        using var job = Mpi.Start(
            Mpi.Exec(),
            ["-n", "2", "dotnet", Mpi.Cli, .. Args(P("run"))],
            new Dictionary<string, string> { ["ILGPUSAE_BATCH_DELAY_MS"] = "300" }
        );
        const string Banner = "parallel data: rank 1 of 2, pid ";
        int? rank1 = null;
        var gate = new object();
        var output = new System.Text.StringBuilder();
        job.OutputDataReceived += (_, e) =>
        {
            lock (gate)
            {
                output.AppendLine(e.Data);
                if (e.Data is { } line && line.StartsWith(Banner, StringComparison.Ordinal))
                {
                    rank1 = int.Parse(line[Banner.Length..].Split(',')[0]);
                }
            }
        };
        job.ErrorDataReceived += (_, e) =>
        {
            lock (gate)
            {
                output.AppendLine(e.Data);
            }
        };
        job.BeginOutputReadLine();
        job.BeginErrorReadLine();
        var wait = System.Diagnostics.Stopwatch.StartNew();
        while (!File.Exists(P("run/progress-r001-of-002.json")) && !job.HasExited)
        {
            wait.Elapsed.Should().BeLessThan(TimeSpan.FromMinutes(3), "rank 1 writes its first shard");
            Thread.Sleep(10);
        }

        job.HasExited.Should().BeFalse("the kill lands before the build ends");
        int pid;
        lock (gate)
        {
            pid = rank1 ?? throw new InvalidOperationException($"rank 1 never printed its pid: {output}");
        }

        using (var victim = System.Diagnostics.Process.GetProcessById(pid))
        {
            victim.Kill();
        }

        job.WaitForExit(30_000).Should().BeTrue("mpiexec stops the remaining rank when one dies");
        job.WaitForExit();
        job.ExitCode.Should().NotBe(0, $"rank 1 (pid {pid}) was killed; the job printed: {output}");
        File.Exists(P("run/manifest.json")).Should().BeFalse("no cache exists until every rank is done");

        var resumed = Mpi.Run(2, Args(P("run")));
        resumed.Code.Should().Be(0, resumed.Out + resumed.Err);
        static string[] Shards(string folder) =>
            [
                .. JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "manifest.json")))!["shards"]!
                    .AsArray()
                    .Select(s => s!.ToJsonString()),
            ];
        Shards(P("run")).Should().Equal(Shards(P("ref")), "the same shards, names, rows and SHA-256");
        Directory.GetFiles(P("run"), "progress*").Should().BeEmpty();
        Directory.GetFiles(P("run"), "pending*").Should().BeEmpty();
        SortedRows(P("run")).Should().Equal(SortedRows(P("ref")));
    }

    [SkippableFact]
    public void Bad_sharded_launches_are_refused_with_one_error_and_nothing_written()
    {
        var plain = CliRunner.Run([.. ActivationsArgs(P("no-launch")), "--parallel", "data"]);
        plain.Code.Should().Be(2);
        plain.Err.Should().StartWith("error: --parallel data needs an MPI launch: start activations under");
        plain.Err.Should().NotContain("   at ");
        Directory.Exists(P("no-launch")).Should().BeFalse();

        var plainTrain = CliRunner.Run([.. TrainArgs(P("no-launch-train")), "--parallel", "data"]);
        plainTrain.Code.Should().Be(2);
        plainTrain.Err.Should().StartWith("error: --parallel data needs an MPI launch: start train under");
        Directory.Exists(P("no-launch-train")).Should().BeFalse();

        Mpi.Exec();
        var unflagged = Mpi.Run(2, ActivationsArgs(P("unflagged")));
        unflagged.Code.Should().NotBe(0);
        unflagged
            .Err.Should()
            .Contain("activations was started by mpiexec as one of 2 processes but without --parallel");
        unflagged.Err.Should().NotContain("   at ");
        Directory.Exists(P("unflagged")).Should().BeFalse();

        // MPMD: rank 1 runs the model on other batches (--lm-batch 4): refused before anything is written.
        foreach (var (command, folder) in new[] { ("activations", "differ"), ("train", "differ-train") })
        {
            string[] args =
                command == "train"
                    ? [.. TrainArgs(P(folder)), "--parallel", "data"]
                    : [.. ActivationsArgs(P(folder)), "--parallel", "data"];
            string[] other = [.. args];
            other[Array.IndexOf(other, "--lm-batch") + 1] = "4";
            var differing = Mpi.Launch(
                Mpi.Exec(),
                ["-n", "1", "dotnet", Mpi.Cli, .. args, ":", "-n", "1", "dotnet", Mpi.Cli, .. other],
                null,
                TimeSpan.FromMinutes(5)
            );
            differing.Code.Should().NotBe(0, command);
            differing
                .Err.Should()
                .Contain("rank(s) 1 were started with other options or other data than rank 0")
                .And.Contain(
                    command == "train"
                        ? "every rank must run the same train command on the same activations"
                        : "every rank must run the same activations command"
                )
                .And.NotContain("   at ");
            Directory.Exists(P(folder)).Should().BeFalse(command);
        }
    }
}
