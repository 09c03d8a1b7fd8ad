using System.Globalization;
using System.Text.Json;
using IlgpuSae.Backends;
using IlgpuSae.IO;
using IlgpuSae.Sae;
using IlgpuSae.Tensors;
using IlgpuSae.Training;

namespace IlgpuSae.Bench;

/// <summary>
/// The ILGPU half of the same-run comparison with PyTorch (perf/run-vs-torch.sh): for each architecture,
/// shape and active fraction, writes the benchmark's starting state (every parameter and the batch, as
/// .npy), the loss of the first step and of the second (after one optimizer update) as ILGPU computes them,
/// and the median dense and sparse step times; perf/torch/sae_step.py then starts from the same tensors,
/// checks that it computes the same two losses, and times its own step.
/// <code>
/// IlgpuSae.Bench torch-case --backend opencl --sizes 512x4096x4096 --arch standard,gated,topk
///     --active 0.02 --k 32 --steps 3 --out DIR
/// </code>
/// </summary>
internal static class TorchCase
{
    public static int Run(string[] args)
    {
        var options = Program.ParseOptions(args.Skip(1).ToArray());
        var backend = BackendKinds.Resolve(options.GetValueOrDefault("backend"));
        var sizes = options.GetValueOrDefault("sizes", "512x4096x4096,768x16384x4096").Split(',');
        var archs = options.GetValueOrDefault("arch", "standard,gated,topk").Split(',');
        double active = double.Parse(
            options.GetValueOrDefault("active", "0.02"),
            CultureInfo.InvariantCulture
        );
        int k = int.Parse(options.GetValueOrDefault("k", "32"), CultureInfo.InvariantCulture);
        int steps = int.Parse(options.GetValueOrDefault("steps", "3"), CultureInfo.InvariantCulture);
        string outDir =
            options.GetValueOrDefault("out") ?? throw new ArgumentException("torch-case needs --out DIR");
        Directory.CreateDirectory(outDir);
        using var device = SaeDevice.Create(backend);
        Console.WriteLine($"device: {device}");
        string? blas = OpenBlas.TryDescribe();
        int index = 0;
        foreach (var shape in sizes)
        {
            var p = shape.Split('x').Select(v => int.Parse(v, CultureInfo.InvariantCulture)).ToArray();
            var (d, m, b) = (p[0], p[1], p[2]);
            foreach (var name in archs)
            {
                var arch = SaeArchitectures.Get(name);
                bool topK = arch is TopKSae or BatchTopKSae;
                var config = new SaeConfig
                {
                    Architecture = arch,
                    DIn = d,
                    DSae = m,
                    K = topK ? k : 0,
                };
                double? fraction = topK ? null : active;
                string dir = Path.Combine(
                    outDir,
                    string.Create(CultureInfo.InvariantCulture, $"{index++:00}-{name}-{d}x{m}x{b}")
                );
                Directory.CreateDirectory(dir);
                var (loss1, loss2, l0) = Dump(device, config, b, fraction, dir);
                var dense = StepBenchmark.Measure(
                    device,
                    config,
                    b,
                    steps,
                    path: TrainingPath.Dense,
                    activeFraction: fraction
                );
                StepTiming? sparse = arch.SupportsSparsePath
                    ? StepBenchmark.Measure(
                        device,
                        config,
                        b,
                        steps,
                        path: TrainingPath.Sparse,
                        activeFraction: fraction
                    )
                    : null;
                var meta = new Dictionary<string, object?>
                {
                    ["arch"] = SaeFiles.ArchitectureName(arch),
                    ["d"] = d,
                    ["m"] = m,
                    ["b"] = b,
                    ["k"] = config.K,
                    ["active_fraction"] = fraction,
                    ["l1_coefficient"] = StepBenchmark.LossFor(config).L1Coefficient,
                    ["lr"] = StepBenchmark.LearningRate,
                    ["beta1"] = 0.0,
                    ["beta2"] = 0.999,
                    ["eps"] = 1e-8,
                    ["tensors"] = SparseAutoencoder.TensorNames(config),
                    ["loss_step1"] = Terms(loss1),
                    ["loss_step2"] = Terms(loss2),
                    ["l0_step1"] = l0,
                    ["ilgpu_device"] = device.ToString(),
                    ["openblas"] = blas,
                    ["openblas_gflops"] = blas is null ? null : Finite(SaeStep.BlasRate(b, m, d)),
                    ["dense_flops"] = StepBenchmark.DenseStepFlops(config, b),
                    ["ilgpu_dense_seconds"] = dense.SecondsPerStep,
                    ["ilgpu_sparse_seconds"] = sparse?.SecondsPerStep,
                    ["ilgpu_sparse_density"] = Finite(sparse?.Density),
                    ["steps"] = steps,
                };
                AtomicFile.WriteAllText(
                    Path.Combine(dir, "case.json"),
                    JsonSerializer.Serialize(meta, new JsonSerializerOptions { WriteIndented = true })
                );
                Console.WriteLine(
                    string.Create(
                        CultureInfo.InvariantCulture,
                        $"{dir}: loss {loss1.Total:G9} → {loss2.Total:G9}, dense {dense.SecondsPerStep * 1e3:0.0} ms, sparse {(sparse is null ? "-" : (sparse.SecondsPerStep * 1e3).ToString("0.0", CultureInfo.InvariantCulture))} ms"
                    )
                );
            }
        }

        return 0;
    }

    private static double? Finite(double? v) => v is double x && double.IsFinite(x) ? x : null;

    private static Dictionary<string, double> Terms(LossBreakdown loss) =>
        new()
        {
            ["mse"] = loss.Mse,
            ["sparsity"] = loss.Sparsity,
            ["aux"] = loss.Aux,
            ["total"] = loss.Total,
        };

    /// <summary>Writes the starting tensors and returns the losses of steps 1 and 2 (the dense path, which
    /// computes the same objective as the sparse one).</summary>
    private static (LossBreakdown Step1, LossBreakdown Step2, double L0) Dump(
        SaeDevice device,
        SaeConfig config,
        int batch,
        double? fraction,
        string dir
    )
    {
        var (sae, x) = StepBenchmark.Prepare(device, config, batch, fraction);
        using var saeScope = sae;
        using var xScope = x;
        foreach (var entry in sae.Parameters.Layout.Entries)
        {
            var values = Host(device, sae.Parameters[entry.Name]);
            Npy.WriteFloats(Path.Combine(dir, entry.Name + ".npy"), values, entry.Rows, entry.Cols);
        }

        Npy.WriteFloats(Path.Combine(dir, "x.npy"), x.ToArray(), x.Rows, x.Cols);
        sae.Path = TrainingPath.Dense;
        var loss = StepBenchmark.LossFor(config);
        using var optimizer = StepBenchmark.CreateOptimizer(sae);
        var step1 =
            sae.ComputeGradients(x, loss, computeLoss: true)
            ?? throw new InvalidOperationException("no loss computed");
        optimizer.Step(1, StepBenchmark.LearningRate);
        var step2 =
            sae.ComputeGradients(x, loss, computeLoss: true)
            ?? throw new InvalidOperationException("no loss computed");
        return (step1, step2, step1.L0);
    }

    private static float[] Host(SaeDevice device, MatrixView view)
    {
        using var copy = device.Allocate(view.Rows, view.Cols, view.Name ?? "copy");
        device.Ops.Copy(view.Data, copy.Data);
        return copy.ToArray();
    }
}
