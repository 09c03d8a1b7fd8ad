using System.CommandLine;
using System.Diagnostics;
using IlgpuSae.Backends;
using IlgpuSae.Verification;
using Spectre.Console;

namespace IlgpuSae.Cli.Commands;

/// <summary>
/// <c>ilgpu-sae selfcheck</c>: runs every kernel against its double-precision reference on the chosen
/// backend and prints a table; exits 1 when any check fails.
/// </summary>
internal static class SelfCheckCommand
{
    public static Command Create()
    {
        var variant = new Option<string>("--variant")
        {
            Description = "Kernel shapes to check: auto (the device's own), cpu, gpu, or all.",
            DefaultValueFactory = _ => "auto",
        };
        variant.AcceptOnlyFromAmong("auto", "cpu", "gpu", "all");
        var seed = new Option<int>("--seed")
        {
            Description = "Seed of the random test data.",
            DefaultValueFactory = _ => 1234,
        };
        var filter = new Option<string?>("--filter")
        {
            Description = "Only checks whose name contains this text.",
        };
        var verbose = new Option<bool>("--verbose")
        {
            Description = "One row per check instead of one per kernel family.",
        };
        var command = new Command(
            "selfcheck",
            "Check every kernel against its double-precision reference on the chosen backend."
        )
        {
            variant,
            seed,
            filter,
            verbose,
        };
        command.SetAction(parse =>
            CommonOptions.Guard(() =>
            {
                var variants = parse.GetValue(variant) switch
                {
                    "cpu" => new[] { KernelVariant.CpuShaped },
                    "gpu" => [KernelVariant.GpuShaped],
                    "all" => [KernelVariant.CpuShaped, KernelVariant.GpuShaped],
                    _ => [KernelVariant.Auto],
                };
                var text = parse.GetValue(filter);
                var checks = KernelChecks
                    .All.Where(c => text is null || c.Name.Contains(text, StringComparison.OrdinalIgnoreCase))
                    .ToArray();
                var console = CommonOptions.CreateConsole();
                int failures = 0;
                foreach (var v in variants)
                {
                    using var device = CommonOptions.OpenDevice(parse, new SaeDeviceOptions { Variant = v });
                    console.MarkupLine(
                        $"[bold]Self-check on {Markup.Escape(device.ToString())}[/]: {checks.Length} checks, seed {parse.GetValue(seed)}"
                    );
                    var results = new List<(CheckResult Result, double Ms)>();
                    foreach (var check in checks)
                    {
                        var watch = Stopwatch.StartNew();
                        var result = check.Run(device, parse.GetValue(seed));
                        results.Add((result, watch.Elapsed.TotalMilliseconds));
                    }

                    failures += results.Count(r => !r.Result.Passed);
                    console.Write(BuildTable(results, parse.GetValue(verbose)));
                    foreach (var (r, _) in results.Where(r => !r.Result.Passed))
                    {
                        console.MarkupLine(
                            $"[red]FAIL[/] {Markup.Escape(r.Check)}: {Markup.Escape(r.Failure!)}"
                        );
                    }
                }

                console.MarkupLine(
                    failures == 0
                        ? "[green]All kernels match their references.[/]"
                        : $"[red]{failures} check(s) failed.[/]"
                );
                return failures == 0 ? 0 : 1;
            })
        );
        return command;
    }

    private static Table BuildTable(List<(CheckResult Result, double Ms)> results, bool verbose)
    {
        var table = new Table().AddColumns(
            "kernel",
            "checks",
            "elements",
            "max |err|",
            "worst err/tol",
            "tolerance (worst check)",
            "ms",
            "result"
        );
        var groups = verbose ? results.GroupBy(r => r.Result.Check) : results.GroupBy(r => r.Result.Family);
        foreach (var g in groups)
        {
            bool ok = g.All(r => r.Result.Passed);
            table.AddRow(
                Markup.Escape(g.Key),
                g.Count().ToString(),
                g.Sum(r => r.Result.Elements).ToString(),
                g.Max(r => r.Result.MaxAbsError).ToString("0.0e+0"),
                g.Max(r => r.Result.WorstRatio).ToString("0.000"),
                Markup.Escape(g.MaxBy(r => r.Result.WorstRatio).Result.Tolerance),
                g.Sum(r => r.Ms).ToString("0"),
                ok ? "[green]ok[/]" : "[red]FAIL[/]"
            );
        }

        return table;
    }
}
