using System.CommandLine;
using System.Globalization;
using IlgpuSae.Sae;
using IlgpuSae.Training;
using Spectre.Console;

namespace IlgpuSae.Cli.Commands;

/// <summary><c>ilgpu-sae bench</c>: tokens/s and GFLOP/s of full training steps on the chosen
/// backend.</summary>
internal static class BenchCommand
{
    public static Command Create()
    {
        var arch = new Option<string>("--arch")
        {
            Description = "standard, gated or both.",
            DefaultValueFactory = _ => "both",
        };
        arch.AcceptOnlyFromAmong("standard", "gated", "both");
        var sizes = new Option<string>("--sizes")
        {
            Description = "Comma-separated dxMxB shapes (input width × dictionary size × batch).",
            DefaultValueFactory = _ => "256x2048x1024,512x4096x4096,768x16384x4096",
        };
        var steps = new Option<int>("--steps")
        {
            Description = "Timed steps per shape (median reported).",
            DefaultValueFactory = _ => 3,
        };
        var path = new Option<string>("--path")
        {
            Description = "dense, sparse or both.",
            DefaultValueFactory = _ => "both",
        };
        path.AcceptOnlyFromAmong("dense", "sparse", "both");
        var active = new Option<double>("--active-fraction")
        {
            Description =
                "Fraction of features active per row (a trained SAE's L0 / M), set through the biases.",
            DefaultValueFactory = _ => 0.02,
        };
        var command = new Command(
            "bench",
            "Time full SAE training steps on the chosen backend: tokens/s, GFLOP/s, memory, dense vs sparse."
        )
        {
            arch,
            sizes,
            steps,
            path,
            active,
        };
        command.SetAction(
            (parse, cancel) =>
                Task.FromResult(
                    CommonOptions.Guard(() =>
                    {
                        using var device = CommonOptions.OpenDevice(parse);
                        var console = CommonOptions.CreateConsole();
                        console.MarkupLine(
                            $"[bold]Training-step benchmark on {Markup.Escape(device.ToString())}[/]"
                        );
                        var table = new Table().AddColumns(
                            "arch",
                            "d",
                            "M",
                            "B",
                            "path",
                            "active",
                            "ms/step",
                            "tokens/s",
                            "GFLOP/s (dense-equivalent)",
                            "memory"
                        );
                        var paths = parse.GetValue(path) switch
                        {
                            "dense" => new[] { TrainingPath.Dense },
                            "sparse" => [TrainingPath.Sparse],
                            _ => [TrainingPath.Dense, TrainingPath.Sparse],
                        };
                        var archs = parse.GetValue(arch) switch
                        {
                            "standard" => new[] { SaeArchitecture.Standard },
                            "gated" => [SaeArchitecture.Gated],
                            _ => [SaeArchitecture.Standard, SaeArchitecture.Gated],
                        };
                        foreach (
                            var shape in parse
                                .GetValue(sizes)!
                                .Split(',', StringSplitOptions.RemoveEmptyEntries)
                        )
                        {
                            var parts = shape.Trim().Split('x');
                            if (parts.Length != 3 || !parts.All(p => int.TryParse(p, out var v) && v > 0))
                            {
                                throw new ArgumentException($"--sizes: '{shape}' is not dxMxB.");
                            }

                            var (d, m, b) = (
                                int.Parse(parts[0], CultureInfo.InvariantCulture),
                                int.Parse(parts[1], CultureInfo.InvariantCulture),
                                int.Parse(parts[2], CultureInfo.InvariantCulture)
                            );
                            foreach (var a in archs)
                            {
                                var config = new SaeConfig
                                {
                                    Architecture = a,
                                    DIn = d,
                                    DSae = m,
                                };
                                foreach (var pathKind in paths)
                                {
                                    var t = StepBenchmark.Measure(
                                        device,
                                        config,
                                        b,
                                        parse.GetValue(steps),
                                        path: pathKind,
                                        activeFraction: parse.GetValue(active),
                                        cancellationToken: cancel
                                    );
                                    table.AddRow(
                                        SaeFiles.ArchitectureName(a),
                                        d.ToString(CultureInfo.InvariantCulture),
                                        m.ToString(CultureInfo.InvariantCulture),
                                        b.ToString(CultureInfo.InvariantCulture),
                                        t.Sparse ? "sparse" : "dense",
                                        (parse.GetValue(active) * 100).ToString(
                                            "0.#",
                                            CultureInfo.InvariantCulture
                                        ) + " %",
                                        (t.SecondsPerStep * 1e3).ToString(
                                            "0.0",
                                            CultureInfo.InvariantCulture
                                        ),
                                        t.TokensPerSecond.ToString("0", CultureInfo.InvariantCulture),
                                        t.Gflops.ToString("0.00", CultureInfo.InvariantCulture),
                                        Markup.Escape(t.Plan.ToString().Split(" = ")[0])
                                    );
                                }
                            }
                        }

                        console.Write(table);
                        console.MarkupLine(
                            "FLOPs count the dense step's matrix products (standard 10·B·d·M, gated 14·B·d·M)."
                        );
                        return 0;
                    })
                )
        );
        return command;
    }
}
