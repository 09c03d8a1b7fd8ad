using System.CommandLine;
using System.Globalization;
using IlgpuSae.Cli.Serve;
using IlgpuSae.IO;
using IlgpuSae.Study.Dashboards;

namespace IlgpuSae.Cli.Commands;

/// <summary><c>rating-study create|analyze</c> and <c>serve</c>: the paper's blinded interpretability study
/// (§4.3).</summary>
internal static class RatingStudyCommand
{
    public static Command Create()
    {
        var command = new Command(
            "rating-study",
            "The paper's blinded interpretability study: create a study from several SAEs, then unblind and analyze the ratings."
        );
        command.Subcommands.Add(CreateCommand());
        command.Subcommands.Add(AnalyzeCommand());
        return command;
    }

    private static Command CreateCommand()
    {
        var saes = new Option<string[]>("--sae")
        {
            Description = "An SAE folder to sample features from (give two or more).",
            Required = true,
            AllowMultipleArgumentsPerToken = false,
        };
        var perSae = new Option<int>("--per-sae")
        {
            Description = "Alive features sampled from each SAE.",
            DefaultValueFactory = _ => 20,
        };
        var seed = new Option<ulong>("--seed")
        {
            Description = "Seed of the sample, the opaque ids and the order.",
            DefaultValueFactory = _ => 0UL,
        };
        var minDensity = new Option<double>("--min-density")
        {
            Description = "A feature is alive when its density is above this.",
            DefaultValueFactory = _ => 1e-4,
        };
        var output = new Option<string>("--out")
        {
            Description = "Study folder (public/ for the server, study.json, key.json).",
            Required = true,
        };
        var collect = new DashboardCommand.CollectOptions();
        collect.Lm.Model.Required = true;
        collect.Lm.Corpus.Required = true;
        collect.Lm.Site.Description += " Default: each SAE's metadata hook_name.";
        var command = new Command(
            "create",
            "Sample alive features from each SAE, build their dashboards, and hide which SAE each came from behind opaque ids in a random order (the key goes to key.json)."
        )
        {
            saes,
            perSae,
            seed,
            minDensity,
            output,
        };
        foreach (var o in collect.All)
        {
            command.Options.Add(o);
        }

        command.SetAction(
            (parse, cancel) =>
                Task.FromResult(
                    CommonOptions.Guard(() =>
                    {
                        var outDir = parse.GetValue(output)!;
                        var list = parse.GetValue(saes)!;
                        OutputPaths.EnsureSeparate(
                            "--out",
                            outDir,
                            [
                                .. list.Select(s => ("--sae", (string?)s)),
                                ("--model", parse.GetValue(collect.Lm.Model)),
                            ]
                        );
                        if (!(parse.GetValue(minDensity) >= 0))
                        {
                            throw new ArgumentException("--min-density must be 0 or more.");
                        }

                        var request = new RatingStudyRequest
                        {
                            Saes = list,
                            PerSae = parse.GetValue(perSae),
                            Seed = parse.GetValue(seed),
                            MinDensity = parse.GetValue(minDensity),
                            Dashboards = collect.Request(parse, list[0], null, false),
                        };
                        using var folderLock = FolderLock.Acquire(outDir, "rating-study create");
                        using var device = CommonOptions.OpenDevice(parse);
                        Console.WriteLine(
                            $"Rating study of {list.Length} SAEs ({request.PerSae} features each) on {device} → {outDir}"
                        );
                        var ids = Run(device, request, outDir, cancel);
                        Console.WriteLine(
                            $"Created a blinded study of {ids.Count} features in {outDir} (key: {Path.Combine(outDir, RatingStudy.KeyFile)}; move it away for a double-blind run)."
                        );
                        Console.WriteLine($"Serve it with: ilgpu-sae serve --dir {outDir}");
                        return 0;
                    })
                )
        );
        return command;
    }

    /// <summary>Creates a study with a progress bar per SAE.</summary>
    internal static IReadOnlyList<string> Run(
        Backends.SaeDevice device,
        RatingStudyRequest request,
        string outDir,
        CancellationToken cancel
    ) =>
        ConsoleProgress.Run(
            "rating-study",
            2 * request.Dashboards.Tokens * request.Saes.Count,
            report =>
                RatingStudy.Create(
                    device,
                    request,
                    outDir,
                    k => new ConsoleProgress.Relay<DashboardProgress>(p =>
                        report((2L * k + p.Pass - 1) * p.Total + p.Tokens)
                    ),
                    message => Console.Error.WriteLine(message),
                    cancel
                ),
            unit: "tokens"
        );

    private static Command AnalyzeCommand()
    {
        var dir = new Option<string>("--dir") { Description = "Study folder.", Required = true };
        var key = new Option<string?>("--key")
        {
            Description = "The study's key file (default: DIR/key.json).",
        };
        var seed = new Option<ulong>("--seed")
        {
            Description = "Seed of the bootstrap and the permutations.",
            DefaultValueFactory = _ => 0UL,
        };
        var command = new Command(
            "analyze",
            "Unblind the ratings: label distribution per SAE, mean label difference per pair with a 90% bootstrap CI and a permutation-test p-value (Yes = 1, Maybe = 0.5, No = 0), as analysis.md, analysis.json and labels.png."
        )
        {
            dir,
            key,
            seed,
        };
        command.SetAction(parse =>
            CommonOptions.Guard(() =>
            {
                var (_, _, md) = RatingAnalysis.Analyze(
                    parse.GetValue(dir)!,
                    parse.GetValue(key),
                    parse.GetValue(seed)
                );
                Console.WriteLine(md);
                Console.WriteLine(
                    $"Wrote analysis.md, analysis.json and labels.png to {parse.GetValue(dir)}."
                );
                return 0;
            })
        );
        return command;
    }

    /// <summary><c>serve --dir DIR [--port P]</c>.</summary>
    public static Command Serve()
    {
        var dir = new Option<string>("--dir") { Description = "Study folder.", Required = true };
        var port = new Option<int>("--port")
        {
            Description = "Port on 127.0.0.1 (0 = any free port).",
            DefaultValueFactory = _ => 5180,
        };
        var command = new Command(
            "serve",
            "Serve a rating study's dashboards and its rating page on 127.0.0.1 (loopback only) until Ctrl-C."
        )
        {
            dir,
            port,
        };
        command.SetAction(
            (parse, cancel) =>
                Task.FromResult(
                    CommonOptions.Guard(() =>
                    {
                        int p = parse.GetValue(port);
                        if (p < 0 || p > 65535)
                        {
                            throw new ArgumentException($"--port must be between 0 and 65535, got {p}.");
                        }

                        var folder = parse.GetValue(dir)!;
                        var server = RatingServer.StartAsync(folder, p, cancel).GetAwaiter().GetResult();
                        try
                        {
                            if (server.StaleLockNote is { } stale)
                            {
                                Console.Error.WriteLine($"note: {folder}: {stale}.");
                            }

                            var counts = server.Log.All.Count;
                            Console.WriteLine(
                                string.Create(
                                    CultureInfo.InvariantCulture,
                                    $"Serving the rating study {folder} at {server.Address}rate.html (listening on 127.0.0.1 only: other machines cannot connect). {counts} rating(s) so far in {Path.Combine(folder, RatingStudy.RatingsFile)}. Ctrl-C stops."
                                )
                            );
                            if (server.Log.Skipped > 0)
                            {
                                Console.Error.WriteLine(
                                    $"warning: {server.Log.Skipped} unreadable line(s) in {RatingStudy.RatingsFile} are ignored (a torn last write?)."
                                );
                            }

                            server.WaitAsync(cancel).GetAwaiter().GetResult();
                        }
                        catch (OperationCanceledException) { }
                        finally
                        {
                            server.DisposeAsync().AsTask().GetAwaiter().GetResult();
                        }

                        Console.WriteLine("Stopped.");
                        return 0;
                    })
                )
        );
        return command;
    }
}
