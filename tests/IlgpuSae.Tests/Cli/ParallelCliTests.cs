using System.Diagnostics;
using System.Text.Json.Nodes;
using FluentAssertions;
using IlgpuSae.Backends;
using IlgpuSae.IO;
using IlgpuSae.Tests.Infrastructure;
using Xunit;

namespace IlgpuSae.Tests.Cli;

/// <summary>
/// <c>train --parallel data</c> under <c>mpiexec -n 2</c> (MPICH; see <see cref="Mpi"/>): the 2-rank run
/// equals the single-process run step for step, its ranks hold bit-identical weights after every step
/// (<c>--parallel-check</c>), a killed rank stops the job with its last checkpoint intact and
/// <c>--resume</c> reaches the uninterrupted result, and bad launches are refused before anything is
/// written.
/// </summary>
[Collection(EnvironmentCollection.Name)]
public sealed class ParallelCliTests : IDisposable
{
    /// <summary>
    /// Relative tolerance between the 2-rank and the single-process run: the float32 gradient of the batch
    /// is summed in another order (two half-batch means, then their mean), which moves each weight by a
    /// few ulps per step; observed differences are about 1e-8 relative after 20 steps.
    /// </summary>
    private const double Tolerance = 1e-4;

    private readonly TempFolder _temp = new("ilgpusae-mpi-");

    public ParallelCliTests()
    {
        CliRunner
            .Run(
                "synth",
                "--rows",
                "2048",
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
    }

    public void Dispose() => _temp.Dispose();

    private string P(string name) => _temp.Path(name);

    private string[] TrainArgs(
        string arch,
        string backend,
        string output,
        int steps = 20,
        int batch = 64,
        bool resample = true,
        int dSae = 32
    ) =>
        [
            "--backend",
            backend,
            "train",
            "--arch",
            arch,
            "--acts",
            P("toy.npy"),
            "--d-sae",
            dSae.ToString(),
            "--batch-size",
            batch.ToString(),
            "--tokens",
            (steps * batch).ToString(),
            "--lr-warmup",
            "5",
            "--log-every",
            "1",
            .. (resample ? new[] { "--resample-every", "10" } : []),
            "--out",
            output,
        ];

    private static void RequireBackend(string backend)
    {
        if (backend == "cpu")
        {
            return;
        }

        try
        {
            using var device = IlgpuSae.Backends.SaeDevice.Create(BackendKinds.Resolve(backend));
        }
        catch (BackendUnavailableException e)
        {
            if (Environment.GetEnvironmentVariable("ILGPUSAE_EXPECT_OPENCL") == "1")
            {
                throw new InvalidOperationException($"{backend} is required here but missing: {e.Message}");
            }

            Skip.If(true, $"{backend} backend not available");
        }
    }

    private static JsonObject[] Metrics(string folder) =>
        [
            .. File.ReadAllLines(Path.Combine(folder, "metrics.jsonl"))
                .Select(l => JsonNode.Parse(l)!.AsObject()),
        ];

    /// <summary>
    /// 2 ranks against one process, every step: the losses, L0 and dead-feature counts of each step's
    /// record and the final weights agree within <see cref="Tolerance"/>; with <c>--parallel-check</c> the
    /// run would have stopped had any rank's replicated weights differed from rank 0's by one bit.
    /// Both modes resample every 10 steps: data-parallel, rank 0 decides and broadcasts; feature-sharded,
    /// rank 0 resamples the gathered whole SAE and scatters it. Feature-sharded runs also clip the gradient
    /// norm (the blocks' squared norms summed, b_dec's once) at a norm small enough to act at every step.
    /// </summary>
    [SkippableTheory]
    [InlineData("standard", "cpu", "data")]
    [InlineData("gated", "opencl", "data")]
    [InlineData("gated", "cpu", "features")]
    [InlineData("standard", "opencl", "features")]
    public void Two_ranks_train_like_one_process_step_for_step_with_identical_weights_on_every_rank(
        string arch,
        string backend,
        string mode
    )
    {
        Mpi.Exec();
        RequireBackend(backend);
        string[] clip = mode == "features" ? ["--grad-clip", "0.01"] : [];
        string[] init = ["--init", InitWithDeadFeatures(arch)];
        var single = CliRunner.Run([.. TrainArgs(arch, backend, P("single")), .. clip, .. init]);
        single.Code.Should().Be(0, single.Err);
        var lr = Metrics(P("single"))
            .Select(m => m["details/current_learning_rate"]!.GetValue<double>())
            .ToArray();
        Enumerable
            .Range(1, lr.Length - 1)
            .Should()
            .Contain(
                i => lr[i] < 0.5 * lr[i - 1],
                "a resampling drops the learning rate: the run must resample"
            );
        var parallel = Mpi.Run(
            2,
            [
                .. TrainArgs(arch, backend, P("parallel")),
                .. clip,
                .. init,
                "--parallel",
                mode,
                "--parallel-check",
            ]
        );
        parallel.Code.Should().Be(0, parallel.Out + parallel.Err);
        parallel.Out.Should().Contain(mode == "data" ? "2 ranks × 32 rows" : "2 ranks × 16 features");
        AssertClose(P("single"), P("parallel"), 20);
    }

    /// <summary>
    /// A starting SAE (from a 2-step run) whose first 8 features never fire (their gate or encoder bias is
    /// −100), so that a run from it resamples them once its dead window has passed.
    /// </summary>
    private string InitWithDeadFeatures(string arch)
    {
        var raw = CliRunner.Run(TrainArgs(arch, "cpu", P("init-raw"), steps: 2, resample: false));
        raw.Code.Should().Be(0, raw.Err);
        using var device = SaeDevice.Create(BackendKind.Cpu);
        using var sae = IlgpuSae.Sae.SaeFiles.Load(device, P("init-raw"));
        var values = sae.Parameters.Download();
        var bias = sae.Parameters.Layout[sae.Architecture.FeatureBiases(sae.Config)[0]];
        for (int i = 0; i < 8; i++)
        {
            values[bias.Offset + i] = -100f;
        }

        sae.Parameters.Upload(values);
        IlgpuSae.Sae.SaeFiles.Save(sae, P("init"));
        return P("init");
    }

    /// <summary>
    /// The other families across 2 ranks against one process, every step, as above. Data-parallel, the
    /// statistics that couple a batch's rows are formed over both ranks: BatchTopK's k·B selection (its
    /// radix histograms summed, the ties of rank 0 first) and its threshold's batch minimum, the AuxK loss's
    /// "fired in this batch" counts and residual variance (dictionary_learning's normalisation), JumpReLU's
    /// batch L0 (the target-L0 loss). Feature-sharded, TopK merges every block's per-row candidates (its
    /// AuxK selection too, whose reconstruction is summed over the blocks), BatchTopK sums the radix
    /// histograms of its blocks, and JumpReLU sums the batch L0 and the pre-activation
    /// loss over the feature blocks. A dead window of 5 steps among 256 features makes the AuxK loss act;
    /// the pre-activation loss penalises every latent.
    /// </summary>
    [SkippableTheory]
    [InlineData("topk", "cpu", "data", "dictionary-learning")]
    [InlineData("topk", "opencl", "data", "saelens")]
    [InlineData("batchtopk", "cpu", "data", "dictionary-learning")]
    [InlineData("batchtopk", "opencl", "data", "saelens")]
    [InlineData("matryoshka", "cpu", "data", "dictionary-learning")]
    [InlineData("jumprelu", "cpu", "data", "dictionary-learning")]
    [InlineData("jumprelu", "opencl", "data", "saelens")]
    [InlineData("topk", "cpu", "features", "dictionary-learning")]
    [InlineData("topk", "opencl", "features", "saelens-rescaled")]
    [InlineData("batchtopk", "cpu", "features", "dictionary-learning")]
    [InlineData("batchtopk", "opencl", "features", "saelens")]
    [InlineData("jumprelu", "cpu", "features", "dictionary-learning")]
    [InlineData("jumprelu", "opencl", "features", "saelens")]
    public void Every_family_trains_on_two_ranks_like_one_process(
        string arch,
        string backend,
        string mode,
        string recipe
    )
    {
        Mpi.Exec();
        RequireBackend(backend);
        string[] family = arch switch
        {
            "jumprelu" when recipe.StartsWith("saelens", StringComparison.Ordinal) =>
            [
                "--l0-coefficient",
                "0.05",
                "--threshold-init",
                "0.05",
                "--pre-act-coefficient",
                "0.5",
                "--pre-act-latents",
                "all",
            ],
            "jumprelu" => ["--target-l0", "4", "--l0-coefficient", "1"],
            "matryoshka" =>
            [
                "--k",
                "3",
                "--matryoshka-widths",
                "64,128,256",
                "--threshold-start",
                "10",
                "--dead-window",
                "320",
            ],
            "batchtopk" when recipe.StartsWith("saelens", StringComparison.Ordinal) =>
            [
                "--k",
                "3",
                "--dead-window",
                "320",
            ],
            "batchtopk" => ["--k", "3", "--threshold-start", "10", "--dead-window", "320"],
            _ => ["--k", "3", "--dead-window", "320"],
        };
        string[] args = recipe.EndsWith("-rescaled", StringComparison.Ordinal)
            ? [.. family, "--mode", "saelens", "--rescale-acts-by-decoder-norm", "true"]
            : [.. family, "--mode", recipe];
        var single = CliRunner.Run([
            .. TrainArgs(arch, backend, P("single"), resample: false, dSae: 256),
            .. args,
        ]);
        single.Code.Should().Be(0, single.Err);
        var parallel = Mpi.Run(
            2,
            [
                .. TrainArgs(arch, backend, P("parallel"), resample: false, dSae: 256),
                .. args,
                "--parallel",
                mode,
                "--parallel-check",
            ]
        );
        parallel.Code.Should().Be(0, parallel.Out + parallel.Err);
        AssertClose(P("single"), P("parallel"), 20);
        if (arch != "jumprelu" || recipe.StartsWith("saelens", StringComparison.Ordinal))
        {
            Metrics(P("single"))
                .Max(m => Math.Abs(m["losses/auxiliary_reconstruction_loss"]!.GetValue<double>()))
                .Should()
                .BeGreaterThan(0, "the AuxK (pre-activation) term must act for the test to cover it");
        }
    }

    /// <summary>The metrics of every step and the final weights of two runs agree within
    /// <see cref="Tolerance"/>.</summary>
    private static void AssertClose(string expected, string actual, int steps)
    {
        var a = Metrics(expected);
        var b = Metrics(actual);
        b.Length.Should().Be(a.Length).And.Be(steps, "one record per step");
        for (int i = 0; i < a.Length; i++)
        {
            b[i]["step"]!.GetValue<long>().Should().Be(a[i]["step"]!.GetValue<long>());
            foreach (
                var key in new[]
                {
                    "losses/overall_loss",
                    "losses/mse_loss",
                    "losses/l1_loss",
                    "losses/auxiliary_reconstruction_loss",
                    "metrics/l0",
                    "details/current_learning_rate",
                    "details/topk_threshold",
                }.Where(k => a[i].ContainsKey(k))
            )
            {
                double x = a[i][key]!.GetValue<double>(),
                    y = b[i][key]!.GetValue<double>();
                Math.Abs(x - y)
                    .Should()
                    .BeLessThanOrEqualTo(Tolerance * Math.Max(1, Math.Abs(x)), $"{key} at step {i + 1}");
            }

            b[i]["sparsity/dead_features"]!
                .GetValue<int>()
                .Should()
                .Be(a[i]["sparsity/dead_features"]!.GetValue<int>(), $"dead features at step {i + 1}");
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
    /// A feature-sharded checkpoint holds the whole SAE (gathered by rank 0): resumed feature-sharded on 2
    /// ranks (scattered again) it reaches the uninterrupted run's bytes; resumed in one process it reaches
    /// the same result within <see cref="Tolerance"/> (the data cursor and every setting are global, so
    /// another rank count continues the same run).
    /// </summary>
    [SkippableFact]
    public void Feature_sharded_checkpoints_hold_the_whole_SAE_and_resume_on_any_rank_count()
    {
        Mpi.Exec();
        string[] Args(string output) =>
            [.. TrainArgs("gated", "cpu", P(output), resample: false), "--checkpoint-every", "10"];
        var full = Mpi.Run(2, [.. Args("full"), "--parallel", "features"]);
        full.Code.Should().Be(0, full.Out + full.Err);
        foreach (var copy in new[] { "two", "one" })
        {
            Directory.CreateDirectory(P(copy));
            File.Copy(P("full/metrics.jsonl"), P($"{copy}/metrics.jsonl"));
            var checkpoint = P($"{copy}/checkpoints/step-00000010");
            Directory.CreateDirectory(checkpoint);
            foreach (var file in Directory.GetFiles(P("full/checkpoints/step-00000010")))
            {
                File.Copy(file, Path.Combine(checkpoint, Path.GetFileName(file)));
            }
        }

        using (var saved = new SafetensorsFile(P("full/checkpoints/step-00000010/sae_weights.safetensors")))
        {
            saved["W_dec"].Shape.Should().Equal([32L, 16L], "the checkpoint holds every feature");
        }

        var two = Mpi.Run(2, [.. Args("two"), "--parallel", "features", "--resume"]);
        two.Code.Should().Be(0, two.Out + two.Err);
        File.ReadAllBytes(P("two/sae_weights.safetensors"))
            .Should()
            .Equal(File.ReadAllBytes(P("full/sae_weights.safetensors")));
        var one = CliRunner.Run([.. Args("one"), "--resume"]);
        one.Code.Should().Be(0, one.Err);
        AssertClose(P("full"), P("one"), 20);
    }

    [SkippableFact]
    public void A_killed_rank_stops_the_job_and_resume_reaches_the_uninterrupted_result()
    {
        Mpi.Exec();
        string[] Args(string output) =>
            [
                .. TrainArgs("gated", "cpu", P(output), steps: 60),
                "--checkpoint-every",
                "10",
                "--parallel",
                "data",
            ];
        var reference = Mpi.Run(2, Args("ref"));
        reference.Code.Should().Be(0, reference.Out + reference.Err);

        // 40 ms per step so that the kill lands mid-run, after the checkpoint at step 20.
        using var job = Mpi.Start(
            Mpi.Exec(),
            ["-n", "2", "dotnet", Mpi.Cli, .. Args("run")],
            new Dictionary<string, string> { ["ILGPUSAE_STEP_DELAY_MS"] = "40" }
        );
        int? rank1 = null;
        var gate = new object();
        var output = new System.Text.StringBuilder();
        job.OutputDataReceived += (_, e) =>
        {
            lock (gate)
            {
                output.AppendLine(e.Data);
            }

            if (
                e.Data is { } line
                && line.StartsWith("parallel data: rank 1 of 2, pid ", StringComparison.Ordinal)
            )
            {
                lock (gate)
                {
                    rank1 = int.Parse(line["parallel data: rank 1 of 2, pid ".Length..].Split(',')[0]);
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
        var wait = Stopwatch.StartNew();
        while (!Directory.Exists(P("run/checkpoints/step-00000020")) && !job.HasExited)
        {
            wait.Elapsed.Should()
                .BeLessThan(TimeSpan.FromMinutes(3), "the run reaches its second checkpoint");
            Thread.Sleep(10);
        }

        job.HasExited.Should().BeFalse("the kill lands before the run ends");
        int pid;
        lock (gate)
        {
            pid = rank1 ?? throw new InvalidOperationException("rank 1 never printed its pid");
        }

        using (var victim = Process.GetProcessById(pid))
        {
            victim.Kill();
        }

        // The other rank is stopped by the launcher; 30 s is a generous bound (it takes well under 1 s).
        job.WaitForExit(30_000).Should().BeTrue("mpiexec stops the remaining rank when one dies");
        job.WaitForExit();
        job.ExitCode.Should().NotBe(0, $"rank 1 (pid {pid}) was killed; the job printed: {output}");
        File.Exists(P("run/cfg.json")).Should().BeFalse("the killed run never finished");
        var latest = IlgpuSae.Training.SaeTrainer.LatestCheckpoint(P("run"));
        latest.Should().NotBeNull();
        File.Exists(Path.Combine(latest!, "sae_weights.safetensors")).Should().BeTrue();

        var resumed = Mpi.Run(2, [.. Args("run"), "--resume"]);
        resumed.Code.Should().Be(0, resumed.Out + resumed.Err);
        resumed.Out.Should().Contain("Resumed from");
        File.ReadAllBytes(P("run/sae_weights.safetensors"))
            .Should()
            .Equal(File.ReadAllBytes(P("ref/sae_weights.safetensors")), "same ranks, same steps, same bits");
        static string[] Records(string folder) =>
            [
                .. Metrics(folder)
                    .Select(o =>
                    {
                        o.Remove("details/tokens_per_second");
                        return o.ToJsonString();
                    }),
            ];
        Records(P("run")).Should().Equal(Records(P("ref")));
    }

    [SkippableFact]
    public void Bad_parallel_launches_are_refused_with_one_error_and_nothing_written()
    {
        var plain = CliRunner.Run([.. TrainArgs("standard", "cpu", P("no-launch")), "--parallel", "data"]);
        plain.Code.Should().Be(2);
        plain.Err.Should().StartWith("error: --parallel data needs an MPI launch");
        Directory.Exists(P("no-launch")).Should().BeFalse();

        using (new EnvironmentScope("OMPI_COMM_WORLD_SIZE", "2"))
        {
            var openMpi = CliRunner.Run([.. TrainArgs("standard", "cpu", P("ompi")), "--parallel", "data"]);
            openMpi.Code.Should().Be(2);
            openMpi.Err.Should().Contain("Open MPI").And.Contain("mpich libmpich-dev");
        }

        using (new EnvironmentScope("PMI_SIZE", "1"))
        using (new EnvironmentScope("ILGPUSAE_MPI_LIBRARY", "libmpich-absent.so.99"))
        {
            var noLibrary = CliRunner.Run([
                .. TrainArgs("standard", "cpu", P("nolib")),
                "--parallel",
                "data",
            ]);
            noLibrary.Code.Should().Be(2);
            noLibrary.Err.Should().Contain("libmpich-absent.so.99").And.Contain("mpich libmpich-dev");
        }

        Mpi.Exec();
        var unflagged = Mpi.Run(2, TrainArgs("standard", "cpu", P("unflagged")));
        unflagged.Code.Should().NotBe(0);
        unflagged.Err.Should().Contain("without --parallel");

        var uneven = Mpi.Run(
            2,
            [.. TrainArgs("standard", "cpu", P("uneven"), batch: 63), "--parallel", "data"]
        );
        uneven.Code.Should().NotBe(0);
        uneven.Err.Should().Contain("the batch size 63 does not divide among 2 ranks");
        Directory.Exists(P("uneven")).Should().BeFalse();

        string[] odd = [.. TrainArgs("standard", "cpu", P("odd"), resample: false), "--parallel", "features"];
        odd[Array.IndexOf(odd, "--d-sae") + 1] = "33";
        var oddFeatures = Mpi.Run(2, odd);
        oddFeatures.Code.Should().NotBe(0);
        oddFeatures.Err.Should().Contain("d_sae = 33 does not divide among 2 ranks");
        Directory.Exists(P("odd")).Should().BeFalse();

        string[] matryoshka =
        [
            .. TrainArgs("matryoshka", "cpu", P("nested"), resample: false),
            "--k",
            "3",
            "--matryoshka-widths",
            "16,32",
            "--parallel",
            "features",
        ];
        var nested = Mpi.Run(2, matryoshka);
        nested.Code.Should().NotBe(0);
        nested.Err.Should().Contain("does not split Matryoshka SAEs").And.Contain("--parallel data");
        Directory.Exists(P("nested")).Should().BeFalse();

        // MPMD: the two ranks run different commands (another seed on rank 1).
        var differing = Mpi.Launch(
            Mpi.Exec(),
            [
                "-n",
                "1",
                "dotnet",
                Mpi.Cli,
                .. TrainArgs("standard", "cpu", P("differ")),
                "--parallel",
                "data",
                ":",
                "-n",
                "1",
                "dotnet",
                Mpi.Cli,
                .. TrainArgs("standard", "cpu", P("differ")),
                "--parallel",
                "data",
                "--seed",
                "7",
            ],
            null,
            TimeSpan.FromMinutes(5)
        );
        differing.Code.Should().NotBe(0);
        differing.Err.Should().Contain("rank(s) 1 were started with other options or other data than rank 0");
        Directory.Exists(P("differ")).Should().BeFalse();
    }
}
