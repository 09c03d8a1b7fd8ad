using System.Diagnostics;
using System.Globalization;
using System.Text;
using IlgpuSae.Backends;
using IlgpuSae.Kernels;

namespace IlgpuSae.Bench;

/// <summary>
/// GEMM benchmark: every backend and kernel shape, the three SAE layouts, several sizes, each validated
/// against OpenBLAS and then timed next to OpenBLAS in the same run. Prints and writes a Markdown table.
/// <code>
/// dotnet run --project perf/IlgpuSae.Bench -c Release -- gemm [--backend cpu|opencl|cuda|all]
///     [--sizes 256,512,1024x4096x512] [--variants cpu,gpu,tf32] [--reps 5] [--out perf/results/FILE.md]
/// </code>
/// A size is N (square) or MxNxK.
/// </summary>
public static class Program
{
    /// <summary>Runs the benchmark named by the first argument.</summary>
    public static int Main(string[] args)
    {
        if (args.Length > 0 && args[0] == "sae")
        {
            return SaeStep.Run(args);
        }

        if (args.Length > 0 && args[0] == "lm")
        {
            return LmBench.Run(args);
        }

        if (args.Length > 0 && args[0] == "torch-case")
        {
            return TorchCase.Run(args);
        }

        if (args.Length == 0 || args[0] != "gemm")
        {
            Console.Error.WriteLine(
                "usage: IlgpuSae.Bench gemm [--backend cpu|opencl|cuda|all] [--sizes 256,512,MxNxK] "
                    + "[--variants cpu,gpu,tf32] [--reps N] [--out FILE.md]\n"
                    + "       IlgpuSae.Bench sae [--backend auto|cpu|opencl|cuda] [--sizes dxMxB,...] [--arch standard,gated,topk,...] [--k 32] [--active 0.01,0.02,...] [--steps N] [--out FILE.md]\n"
                    + "       IlgpuSae.Bench torch-case [--backend B] [--sizes dxMxB,...] [--arch standard,gated,topk] [--active 0.02] [--k 32] [--steps N] --out DIR\n"
                    + "       IlgpuSae.Bench lm [--backend B] [--models bundled,gpt2-small] [--batch 8] [--context 128] [--reps 3] [--cases DIR] [--out FILE.md]"
            );
            return 2;
        }

        var options = ParseOptions(args.Skip(1).ToArray());
        string backendArg = options.GetValueOrDefault("backend", "all");
        var sizes = options
            .GetValueOrDefault("sizes", "256,512,1024,1024x4096x512")
            .Split(',')
            .Select(ParseSize)
            .ToArray();
        // cpu, gpu: the two kernel shapes; tf32: GPU-shaped with TF32 tensor cores (CUDA only).
        var variants = options.GetValueOrDefault("variants", "cpu,gpu,tf32").Split(',').Distinct().ToArray();
        int reps = int.Parse(options.GetValueOrDefault("reps", "5"), CultureInfo.InvariantCulture);
        string? outPath = options.GetValueOrDefault("out");

        var blas = OpenBlas.TryDescribe();
        Console.WriteLine($"OpenBLAS: {blas ?? "not found (install libopenblas0); ratios will be missing"}");
        var devices = DeviceCatalog.ListDevices().Where(d => d.IsSupported).ToArray();
        var backends =
            backendArg == "all"
                ? devices.Select(d => d.Backend).Distinct().ToArray()
                : [BackendKinds.Parse(backendArg)];

        var rows = new List<string>();
        var deviceNames = new List<string>();
        foreach (var backend in backends)
        {
            foreach (var name in variants)
            {
                bool tf32 = name == "tf32";
                if (tf32 && backend != BackendKind.Cuda)
                {
                    // Tensor cores exist on CUDA only (the CPU accelerator emulates them for tests only).
                    continue;
                }

                var variant = name == "cpu" ? KernelVariant.CpuShaped : KernelVariant.GpuShaped;
                using var device = SaeDevice.Create(
                    backend,
                    null,
                    new SaeDeviceOptions { Variant = variant, TensorCores = tf32 }
                );
                deviceNames.Add(device.ToString());
                foreach (var (m, n, k) in sizes)
                {
                    if (
                        backend == BackendKind.Cpu
                        && variant == KernelVariant.GpuShaped
                        && (long)m * n * k > 256L * 256 * 256
                    )
                    {
                        // Each group barrier costs milliseconds on the CPU simulator; larger sizes take
                        // minutes.
                        rows.Add(
                            $"| cpu | gpu-shaped | all | {m}x{n}x{k} | skipped: barrier kernels on ILGPU's CPU simulator | | | | |"
                        );
                        continue;
                    }

                    foreach (var layout in Enum.GetValues<GemmLayout>())
                    {
                        var row = Measure(device, layout, m, n, k, reps, blas is not null);
                        Console.WriteLine(row);
                        rows.Add(row);
                    }
                }

                if (backend == BackendKind.Cuda && name == "gpu")
                {
                    AddCuBlasRows(device, sizes, reps, rows);
                }
            }
        }

        var report = Report(args, blas, deviceNames.Distinct().ToArray(), rows);
        int mismatches = rows.Count(r => r.Contains("MISMATCH", StringComparison.Ordinal));
        if (outPath is not null)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(outPath))!);
            File.WriteAllText(outPath + ".tmp", report);
            File.Move(outPath + ".tmp", outPath, overwrite: true);
            Console.WriteLine($"Wrote {outPath}");
        }

        if (mismatches > 0)
        {
            Console.Error.WriteLine(
                $"gemm: {mismatches} product(s) disagree with the reference (MISMATCH rows)"
            );
            return 1;
        }

        return 0;
    }

    /// <summary>cuBLAS rows for a CUDA device (same sizes and layouts), or the specification roofline when
    /// cuBLAS cannot be loaded.</summary>
    private static void AddCuBlasRows(
        SaeDevice device,
        (int M, int N, int K)[] sizes,
        int reps,
        List<string> rows
    )
    {
        string? missing = CuBlasGemm.Unavailable(device);
        if (missing is not null)
        {
            var peak = CuBlasGemm.SpecPeak(device);
            rows.Add(
                $"| cuda | cuBLAS | all | all | {missing}; FP32 roofline from the specifications: {peak?.Formula ?? "unknown"} | | | | |"
            );
            return;
        }

        foreach (var (m, n, k) in sizes)
        {
            var random = new Random(1);
            var a = Enumerable.Range(0, m * k).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
            var b = Enumerable.Range(0, k * n).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
            foreach (var layout in Enum.GetValues<GemmLayout>())
            {
                var row = CuBlasGemm.Row(device, layout, m, n, k, reps, a, b);
                Console.WriteLine(row);
                rows.Add(row);
            }
        }
    }

    private static string Measure(
        SaeDevice device,
        GemmLayout layout,
        int m,
        int n,
        int k,
        int reps,
        bool haveBlas
    )
    {
        var random = new Random(1);
        var a = Enumerable.Range(0, m * k).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        var b = Enumerable.Range(0, k * n).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        var (ar, ac) = layout == GemmLayout.TN ? (k, m) : (m, k);
        var (br, bc) = layout == GemmLayout.NT ? (n, k) : (k, n);
        using var ta = device.Upload(a, ar, ac);
        using var tb = device.Upload(b, br, bc);
        using var tc = device.Allocate(m, n);
        double flops = 2.0 * m * n * k;

        // Validate first (against OpenBLAS when present), then time.
        device.Ops.MatMul(ta, tb, tc, layout);
        var got = tc.ToArray();
        string check = "-";
        double blasGflops = double.NaN;
        if (haveBlas)
        {
            var expected = new float[m * n];
            OpenBlas.MatMul(a, b, expected, layout, m, n, k);
            // Largest error relative to the largest result: float32 sums of K terms in any order stay far
            // below 1e-5.
            double maxErr = 0,
                maxRef = 0;
            for (int i = 0; i < got.Length; i++)
            {
                maxErr = Math.Max(maxErr, Math.Abs(got[i] - expected[i]));
                maxRef = Math.Max(maxRef, Math.Abs(expected[i]));
            }

            double worst = maxErr / Math.Max(maxRef, 1e-30);
            double limit = device.TensorCores ? 2e-3 : 1e-5; // TF32 inputs carry 10 mantissa bits
            check = worst < limit ? $"ok ({worst:0.0e0})" : $"MISMATCH {worst:0.0e0}";
            blasGflops = flops / Median(reps, () => OpenBlas.MatMul(a, b, expected, layout, m, n, k)) / 1e9;
        }

        double seconds = Median(
            reps,
            () =>
            {
                device.Ops.MatMul(ta, tb, tc, layout);
                device.Synchronize();
            }
        );
        double gflops = flops / seconds / 1e9;
        string variant =
            device.TensorCores ? "tf32-mma"
            : device.Variant == KernelVariant.GpuShaped ? "gpu-shaped"
            : "cpu-shaped";
        return string.Create(
            CultureInfo.InvariantCulture,
            $"| {device.Backend.ToName()} | {variant} | {layout} | {m}x{n}x{k} | {seconds * 1e3:0.00} | {gflops:0.00} | "
                + $"{blasGflops:0.0} | {(haveBlas ? (gflops / blasGflops * 100).ToString("0.00", CultureInfo.InvariantCulture) + " %" : "-")} | {check} |"
        );
    }

    /// <summary>Median wall time of <paramref name="reps"/> runs after one warm-up run.</summary>
    private static double Median(int reps, Action run)
    {
        run();
        var times = new double[Math.Max(1, reps)];
        for (int i = 0; i < times.Length; i++)
        {
            var watch = Stopwatch.StartNew();
            run();
            times[i] = watch.Elapsed.TotalSeconds;
        }

        Array.Sort(times);
        return times[times.Length / 2];
    }

    private static string Report(string[] args, string? blas, string[] devices, List<string> rows)
    {
        var sb = new StringBuilder();
        sb.AppendLine(
            CultureInfo.InvariantCulture,
            $"# GEMM benchmark, {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC"
        );
        sb.AppendLine();
        AppendProvenance(sb, args);

        sb.AppendLine(
            CultureInfo.InvariantCulture,
            $"- machine: {Environment.ProcessorCount} logical cores, {Environment.OSVersion}, .NET {Environment.Version}"
        );
        foreach (var d in devices)
        {
            sb.AppendLine(CultureInfo.InvariantCulture, $"- device: {d}");
        }

        sb.AppendLine(
            CultureInfo.InvariantCulture,
            $"- OpenBLAS (same run, same data): {blas ?? "not available"}"
        );
        sb.AppendLine(
            "- time: median of the timed repetitions after one warm-up; GFLOP/s = 2·M·N·K / time; ratio = ours / OpenBLAS"
        );
        sb.AppendLine();
        sb.AppendLine(
            "| backend | kernels | layout | MxNxK | ms | GFLOP/s | OpenBLAS GFLOP/s | ratio | check |"
        );
        sb.AppendLine("|---|---|---|---|---:|---:|---:|---:|---|");
        rows.ForEach(r => sb.AppendLine(r));
        return sb.ToString();
    }

    /// <summary>Writes the command, commit and note lines every results file starts with.</summary>
    internal static void AppendProvenance(StringBuilder sb, string[] args)
    {
        sb.AppendLine(
            CultureInfo.InvariantCulture,
            $"- command: `dotnet run --project perf/IlgpuSae.Bench -c Release -- {string.Join(' ', args)}`"
        );
        sb.AppendLine(
            CultureInfo.InvariantCulture,
            $"- commit: {Environment.GetEnvironmentVariable("ILGPUSAE_COMMIT") ?? Git("rev-parse --short HEAD")}"
        );
        if (Environment.GetEnvironmentVariable("ILGPUSAE_BENCH_NOTE") is { Length: > 0 } note)
        {
            sb.AppendLine(CultureInfo.InvariantCulture, $"- note: {note}");
        }
    }

    internal static string Git(string arguments)
    {
        try
        {
            using var p = Process.Start(
                new ProcessStartInfo("git", arguments)
                {
                    RedirectStandardOutput = true,
                    RedirectStandardError = true,
                }
            )!;
            var text = p.StandardOutput.ReadToEnd().Trim();
            p.WaitForExit();
            return p.ExitCode == 0 ? text : "?";
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return "?";
        }
    }

    private static (int M, int N, int K) ParseSize(string text)
    {
        var parts = text.Trim().Split('x').Select(p => int.Parse(p, CultureInfo.InvariantCulture)).ToArray();
        return parts.Length switch
        {
            1 => (parts[0], parts[0], parts[0]),
            3 => (parts[0], parts[1], parts[2]),
            _ => throw new ArgumentException($"Size '{text}' must be N or MxNxK."),
        };
    }

    internal static Dictionary<string, string> ParseOptions(string[] args)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < args.Length; i++)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal) || i + 1 >= args.Length)
            {
                throw new ArgumentException($"Expected '--name value', got '{args[i]}'.");
            }

            result[args[i][2..]] = args[++i];
        }

        return result;
    }
}
