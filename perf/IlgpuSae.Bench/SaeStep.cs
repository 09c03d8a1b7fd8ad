using System.Diagnostics;
using System.Globalization;
using System.Text;
using IlgpuSae.Backends;
using IlgpuSae.Kernels;
using IlgpuSae.Sae;
using IlgpuSae.Tensors;
using IlgpuSae.Training;

namespace IlgpuSae.Bench;

/// <summary>
/// Training-step benchmark against the OpenBLAS roofline: for each (d, M, B) and architecture, the step's
/// tokens/s and effective GFLOP/s, and the tokens/s that the same dense FLOPs would give at the
/// <c>cblas_sgemm</c> rate measured in the same run (B×M×d, the encoder product).
/// </summary>
internal static class SaeStep
{
    public static int Run(string[] args)
    {
        var options = Program.ParseOptions(args.Skip(1).ToArray());
        var backend = BackendKinds.Resolve(options.GetValueOrDefault("backend"));
        var sizes = options
            .GetValueOrDefault("sizes", "256x2048x1024,512x4096x4096,768x16384x4096")
            .Split(',');
        int steps = int.Parse(options.GetValueOrDefault("steps", "3"), CultureInfo.InvariantCulture);
        string? outPath = options.GetValueOrDefault("out");
        // --aux-dead f: the TopK family with AuxK on, a fraction f of the latents dead.
        double auxDead = double.Parse(
            options.GetValueOrDefault("aux-dead", "0"),
            CultureInfo.InvariantCulture
        );
        var blas = OpenBlas.TryDescribe();
        using var device = SaeDevice.Create(backend);
        var rows = new List<string>();
        var profiles = new List<string>();
        foreach (var shape in sizes)
        {
            var p = shape.Split('x').Select(v => int.Parse(v, CultureInfo.InvariantCulture)).ToArray();
            var (d, m, b) = (p[0], p[1], p[2]);
            double blasGflops = blas is null ? double.NaN : BlasRate(b, m, d);
            var fractions = options
                .GetValueOrDefault("active", "0.02")
                .Split(',')
                .Select(f => double.Parse(f, CultureInfo.InvariantCulture))
                .ToArray();
            var archs = options
                .GetValueOrDefault("arch", "standard,gated")
                .Split(',')
                .Select(SaeArchitectures.Get)
                .ToArray();
            int k = int.Parse(options.GetValueOrDefault("k", "32"), CultureInfo.InvariantCulture);
            foreach (var arch in archs)
            {
                bool topK = arch is TopKSae or BatchTopKSae;
                var config = new SaeConfig
                {
                    Architecture = arch,
                    DIn = d,
                    DSae = m,
                    K = topK ? k : 0,
                    MatryoshkaWidths = arch == SaeArchitecture.Matryoshka ? [m / 8, m / 4, m / 2, m] : null,
                };
                double denseSeconds = double.NaN;
                var runs = new List<(TrainingPath, double?)> { (TrainingPath.Dense, null) };
                if (topK)
                {
                    // k per row is the trained L0 from the first step: dense and sparse at that state.
                    runs.Add((TrainingPath.Sparse, null));
                }
                else
                {
                    runs.AddRange(
                        fractions.SelectMany(f =>
                            arch.SupportsSparsePath
                                ? new (TrainingPath, double?)[]
                                {
                                    (TrainingPath.Dense, f),
                                    (TrainingPath.Sparse, f),
                                }
                                : [(TrainingPath.Dense, f)]
                        )
                    );
                }
                foreach (var (path, active) in runs)
                {
                    var t = StepBenchmark.Measure(
                        device,
                        config,
                        b,
                        steps,
                        path: path,
                        activeFraction: active,
                        auxDeadFraction: topK ? auxDead : 0
                    );
                    if ((active is not null || topK) && path == TrainingPath.Dense)
                    {
                        denseSeconds = t.SecondsPerStep;
                    }

                    double rooflineTokens = b / (t.FlopsPerStep / (blasGflops * 1e9));
                    var row = string.Create(
                        CultureInfo.InvariantCulture,
                        $"| {SaeFiles.ArchitectureName(arch)} | {d} | {m} | {b} | {(t.Sparse ? "sparse" : "dense")} | "
                            + $"{(topK ? $"k = {k} ({k * 100.0 / m:0.0#} %){(auxDead > 0 ? $", AuxK, {auxDead * 100:0.#} % dead" : "")}" : double.IsNaN(t.Density) ? (active is null ? "init (~50 %)" : $"{active * 100:0.#} %") : $"{t.Density * 100:0.0} %")} | "
                            + $"{t.SecondsPerStep * 1e3:0.0} | {t.TokensPerSecond:0} | {t.Gflops:0.00} | {blasGflops:0.0} | {rooflineTokens:0} | "
                            + $"{t.TokensPerSecond / rooflineTokens * 100:0.00} % | "
                            + $"{(path == TrainingPath.Sparse ? (denseSeconds / t.SecondsPerStep).ToString("0.00", CultureInfo.InvariantCulture) + "×" : "")} | {t.Plan.ToString().Split(" = ")[0]} |"
                    );
                    Console.WriteLine(row);
                    rows.Add(row);
                    string what = string.Create(
                        CultureInfo.InvariantCulture,
                        $"{SaeFiles.ArchitectureName(arch)} {d}×{m}×{b}, {(t.Sparse ? "sparse" : "dense")}, {(active is null ? "init" : $"{active * 100:0.#} % active")}"
                    );
                    profiles.Add($"| {what} | {t.Profile} |");
                    Console.WriteLine($"  {what}: {t.Profile}");
                }
            }
        }

        var sb = new StringBuilder();
        sb.AppendLine(
            CultureInfo.InvariantCulture,
            $"# SAE training-step benchmark, {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC"
        );
        sb.AppendLine();
        Program.AppendProvenance(sb, args);

        sb.AppendLine(CultureInfo.InvariantCulture, $"- device: {device}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"- OpenBLAS (same run): {blas ?? "not available"}");
        sb.AppendLine(
            "- step: forward + backward (dense path) + decoder projection + Adam + renormalisation, median of the timed steps after one warm-up"
        );
        sb.AppendLine(
            auxDead > 0
                ? string.Create(
                    CultureInfo.InvariantCulture,
                    $"- AuxK (--aux-dead {auxDead}): every {Math.Max(1, (int)Math.Round(1 / auxDead))}-th latent dead (SAELens counting: dead whether or not it fires in the batch), k_aux = d/2, α = 1/32; the sparse rows run the aux decode, Ψa and the aux weight gradients over the aux codes' index lists"
                )
                : "- AuxK: off (no latent is dead yet; --aux-dead f marks a fraction f dead)"
        );
        sb.AppendLine(
            "- families: TopK/BatchTopK/Matryoshka run at k per row (their L0 from the first step), dense and sparse; JumpReLU dense and sparse at the placed active fraction (b_enc placed so that that fraction of rows clears θ = 0.001; its sparse support adds the kernel window (θ − ε/2, θ] with ε = 0.05, the rows just below that quantile); Matryoshka widths M/8, M/4, M/2, M"
        );
        sb.AppendLine(
            "- dense FLOPs per step: standard 10·B·d·M, gated 14·B·d·M (GFLOP/s of the sparse rows count those dense-equivalent FLOPs); roofline = those FLOPs at the measured cblas_sgemm rate (B×M×d)"
        );
        sb.AppendLine(
            "- active: fraction of (row, feature) pairs with an open gate (f > 0 for standard, f > 0 above θ for JumpReLU); \"init\" is random initialisation, the others place each feature's bias at the quantile that leaves that fraction active; speed-up = dense step time / sparse step time at the same state"
        );
        sb.AppendLine();
        sb.AppendLine(
            "| arch | d | M | B | path | active | ms/step | tokens/s | GFLOP/s | OpenBLAS GFLOP/s | roofline tokens/s | ratio | sparse speed-up | memory |"
        );
        sb.AppendLine("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        rows.ForEach(r => sb.AppendLine(r));
        sb.AppendLine();
        sb.AppendLine("## Where the time goes");
        sb.AppendLine();
        sb.AppendLine(
            "Share of one extra step per phase, the device synchronised after each (`SparseAutoencoder.Profile`)."
        );
        sb.AppendLine();
        sb.AppendLine("| step | phases |");
        sb.AppendLine("|---|---|");
        profiles.ForEach(r => sb.AppendLine(r));
        if (outPath is not null)
        {
            File.WriteAllText(outPath + ".tmp", sb.ToString());
            File.Move(outPath + ".tmp", outPath, overwrite: true);
            Console.WriteLine($"Wrote {outPath}");
        }

        return 0;
    }

    internal static double BlasRate(int m, int n, int k)
    {
        var random = new Random(1);
        var a = Enumerable.Range(0, m * k).Select(_ => (float)random.NextDouble()).ToArray();
        var b = Enumerable.Range(0, k * n).Select(_ => (float)random.NextDouble()).ToArray();
        var c = new float[(long)m * n];
        OpenBlas.MatMul(a, b, c, GemmLayout.NN, m, n, k);
        var times = new List<double>();
        for (int r = 0; r < 5; r++)
        {
            var w = Stopwatch.StartNew();
            OpenBlas.MatMul(a, b, c, GemmLayout.NN, m, n, k);
            times.Add(w.Elapsed.TotalSeconds);
        }

        times.Sort();
        return 2.0 * m * n * k / times[2] / 1e9;
    }
}
