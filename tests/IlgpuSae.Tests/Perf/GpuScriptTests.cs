using System.Diagnostics;
using FluentAssertions;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Tests.Lm;
using Xunit;

namespace IlgpuSae.Tests.Perf;

/// <summary>
/// perf/run-gpu.sh, the script a lent GPU machine runs: its dry run skips cleanly where there is no GPU,
/// and its summary reads each step's log right — a failed step or a disagreement with a reference makes it
/// exit 1 and shows in the table.
/// </summary>
public sealed class GpuScriptTests
{
    private static readonly string Script = Path.Combine(LmTestData.Repo(), "perf", "run-gpu.sh");

    private static (int Code, string Out) Bash(params string[] args)
    {
        var start = new ProcessStartInfo("bash")
        {
            WorkingDirectory = LmTestData.Repo(),
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        start.ArgumentList.Add(Script);
        foreach (var a in args)
        {
            start.ArgumentList.Add(a);
        }

        using var temp = new TempFolder();
        start.Environment["ILGPUSAE_GPU_LOGS"] = Path.Combine(temp.FullName, "logs");
        start.Environment["ILGPUSAE_RESULTS"] = Path.Combine(temp.FullName, "results");
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        process.WaitForExit(60_000).Should().BeTrue("the script's summary and dry run take seconds");
        return (process.ExitCode, stdout.Result + stderr.Result);
    }

    private static string Log(string dir, string step, int rc, string text)
    {
        File.WriteAllText(Path.Combine(dir, step + ".log"), text);
        File.WriteAllText(
            Path.Combine(dir, step + ".rc"),
            rc.ToString(System.Globalization.CultureInfo.InvariantCulture)
        );
        File.WriteAllText(Path.Combine(dir, step + ".seconds"), "12");
        return dir;
    }

    private static void PassingLogs(string dir)
    {
        Log(dir, "devices", 0, "| cuda:0 | NVIDIA H200 | 139 GiB | sm_90 |\n");
        Log(
            dir,
            "selfcheck",
            0,
            "Self-check on cuda:0 NVIDIA H200 (CpuShaped kernels): 106 checks, seed 1\n"
                + "Self-check on cuda:0 NVIDIA H200 (GpuShaped kernels): 106 checks, seed 1\n"
                + "All kernels match their references.\n"
        );
        Log(dir, "tests", 0, "Passed!  - Failed:     0, Passed:   412, Skipped:     2, Total:   414\n");
        Log(
            dir,
            "gemm",
            0,
            "| cuda | gpu-shaped | NN | 1024x1024x1024 | 0.20 | 10000.00 | nan | - | ok (1.0e-7) |\n"
                + "| cuda | cuBLAS sgemm | NN | 1024x1024x1024 | 0.10 | 20000.00 | | | ok vs ILGPU (1.0e-7) |\n"
        );
        Log(
            dir,
            "sae-steps",
            0,
            "| gated | 512 | 4096 | 4096 | dense |\n| gated | 512 | 4096 | 4096 | sparse |\n"
        );
        Log(dir, "lm", 0, "gpt2-small 12×768: 250000 tokens/s\n");
    }

    [Fact]
    public void Its_summary_of_passing_logs_lists_every_step_with_its_figure_and_exits_0()
    {
        using var temp = new TempFolder();
        PassingLogs(temp.FullName);
        var (code, output) = Bash("--summarize", temp.FullName, Path.Combine(temp.FullName, "summary.md"));
        code.Should().Be(0, output);
        output.Should().Contain("| devices | passed | 12 | 1 CUDA device line(s) |");
        output.Should().Contain("all kernels match their references (2 kernel shapes)");
        output.Should().Contain("Failed: 0, Passed: 412, Skipped: 2");
        output.Should().Contain("| gemm | passed | 12 | 2 rows, 0 mismatch(es) |");
        output.Should().Contain("2 step rows").And.Contain("250000 tokens/s");
        File.ReadAllText(Path.Combine(temp.FullName, "summary.md")).Should().Contain("| lm | passed |");
    }

    [Fact]
    public void A_kernel_that_disagrees_with_its_reference_fails_the_run_and_is_named()
    {
        using var temp = new TempFolder();
        PassingLogs(temp.FullName);
        Log(
            temp.FullName,
            "selfcheck",
            1,
            "Self-check on cuda:0: 106 checks\nFAIL gemm NN 64x64x64: max error 3e-2 at (3, 4)\n[red]1 check(s) failed.[/]\n"
        );
        Log(
            temp.FullName,
            "gemm",
            1,
            "| cuda | tf32-mma | NN | 1024x1024x1024 | 0.1 | 9.0 | 1.0 | 1 % | MISMATCH 4.0e-2 |\n"
        );
        var (code, output) = Bash("--summarize", temp.FullName, Path.Combine(temp.FullName, "summary.md"));
        code.Should().Be(1, output);
        output.Should().Contain("| selfcheck | **FAILED (exit 1)** |").And.Contain("FAIL gemm NN 64x64x64");
        output.Should().Contain("| gemm | **FAILED (exit 1)** | 12 | 1 rows, 1 mismatch(es) |");
    }

    [Fact]
    public void A_step_that_did_not_run_is_reported_as_skipped_with_its_reason()
    {
        using var temp = new TempFolder();
        PassingLogs(temp.FullName);
        File.Delete(Path.Combine(temp.FullName, "lm.rc"));
        File.WriteAllText(
            Path.Combine(temp.FullName, "lm.skip"),
            "60 s limit; no NVIDIA GPU on this machine"
        );
        var (code, output) = Bash("--summarize", temp.FullName, Path.Combine(temp.FullName, "summary.md"));
        code.Should().Be(0, output);
        output.Should().Contain("| lm | skipped | | 60 s limit; no NVIDIA GPU on this machine |");
    }

    [SkippableFact]
    public void Its_dry_run_without_a_GPU_skips_every_step_and_exits_0()
    {
        Skip.If(
            File.Exists("/usr/bin/nvidia-smi") || File.Exists("/usr/local/nvidia/bin/nvidia-smi"),
            "this machine has an NVIDIA driver: the script would run for real"
        );
        var (code, output) = Bash("--dry-run");
        code.Should().Be(0, output);
        output.Should().Contain("no NVIDIA GPU here").And.Contain("dry run, nothing measured");
        foreach (var step in new[] { "devices", "selfcheck", "tests", "gemm", "sae-steps", "lm" })
        {
            output.Should().Contain($"  {step} (≤ ");
        }
    }
}
