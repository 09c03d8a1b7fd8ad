using System.CommandLine;
using System.Globalization;
using IlgpuSae.IO;
using IlgpuSae.Study.Dashboards;

namespace IlgpuSae.Cli.Commands;

/// <summary><c>dashboard</c>: static feature dashboards of an SAE on a model's activations
/// (<see cref="DashboardBuilder"/>).</summary>
internal static class DashboardCommand
{
    /// <summary>The options dashboards and rating studies share.</summary>
    internal sealed class CollectOptions
    {
        public ModelOptions Lm { get; } = new();

        public Option<long> Tokens { get; } =
            new("--tokens")
            {
                Description =
                    "Tokens to stream through the model and the SAE (special tokens are not counted).",
                DefaultValueFactory = _ => 16384,
            };

        public Option<int> TopK { get; } =
            new("--top-examples")
            {
                Description = "Top activating examples per feature.",
                DefaultValueFactory = _ => 20,
            };

        public Option<int> Intervals { get; } =
            new("--intervals")
            {
                Description = "Equal-width activation intervals of (0, max] with random examples.",
                DefaultValueFactory = _ => 5,
            };

        public Option<int> PerInterval { get; } =
            new("--per-interval")
            {
                Description = "Random examples per interval.",
                DefaultValueFactory = _ => 5,
            };

        public Option<int> Window { get; } =
            new("--window")
            {
                Description = "Tokens shown on each side of an example's token.",
                DefaultValueFactory = _ => 5,
            };

        public Option<ulong> SampleSeed { get; } =
            new("--sample-seed")
            {
                Description = "Seed of the interval samples.",
                DefaultValueFactory = _ => 0UL,
            };

        public IEnumerable<Option> All =>
            [.. Lm.All, Tokens, TopK, Intervals, PerInterval, Window, SampleSeed];

        public DashboardRequest Request(ParseResult parse, string sae, int[]? features, bool neuronpedia)
        {
            foreach (
                var (name, v) in new[]
                {
                    ("--top-examples", parse.GetValue(TopK)),
                    ("--intervals", parse.GetValue(Intervals)),
                    ("--per-interval", parse.GetValue(PerInterval)),
                }
            )
            {
                if (v < 1 || v > 1000)
                {
                    throw new ArgumentException($"{name} must be between 1 and 1000, got {v}.");
                }
            }

            int window = parse.GetValue(Window);
            if (window < 0 || window > 512)
            {
                throw new ArgumentException($"--window must be between 0 and 512, got {window}.");
            }

            long tokens = parse.GetValue(Tokens);
            if (tokens < 1)
            {
                throw new ArgumentException($"--tokens must be at least 1, got {tokens}.");
            }

            return new DashboardRequest
            {
                Sae = sae,
                Model = parse.GetValue(Lm.Model) ?? throw new ArgumentException("--model is required."),
                Corpus = parse.GetValue(Lm.Corpus) ?? throw new ArgumentException("--corpus is required."),
                Site = parse.GetValue(Lm.Site),
                Tokens = tokens,
                Context = parse.GetValue(Lm.Context),
                LmBatch = parse.GetValue(Lm.LmBatch),
                Features = features,
                Neuronpedia = neuronpedia,
                Shape = new CollectorShape
                {
                    TopK = parse.GetValue(TopK),
                    Intervals = parse.GetValue(Intervals),
                    PerInterval = parse.GetValue(PerInterval),
                    Window = window,
                    Seed = parse.GetValue(SampleSeed),
                },
            };
        }
    }

    public static Command Create()
    {
        var sae = new Option<string>("--sae")
        {
            Description = "SAE folder (cfg.json + sae_weights.safetensors) or Gemma Scope params.npz.",
            Required = true,
        };
        var collect = new CollectOptions();
        collect.Lm.Model.Required = true;
        collect.Lm.Corpus.Required = true;
        collect.Lm.Site.Description += " Default: the SAE's metadata hook_name.";
        var features = new Option<string>("--features")
        {
            Description =
                "Features to show: all, or a comma-separated list of indices (activations always use the whole SAE).",
            DefaultValueFactory = _ => "all",
        };
        var neuronpedia = new Option<bool>("--neuronpedia")
        {
            Description = "Also write Neuronpedia's batch-*.json layout into OUT/neuronpedia/.",
        };
        var output = new Option<string>("--out")
        {
            Description = "Output folder (index.html, feature.html, features/*.json); re-running resumes.",
            Required = true,
        };
        var command = new Command(
            "dashboard",
            "Feature dashboards of an SAE: density, activation histogram, top and interval examples, direct logit effect, neuron alignment and correlated features, as static pages that open offline."
        )
        {
            sae,
            features,
            neuronpedia,
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
                        OutputPaths.EnsureSeparate(
                            "--out",
                            outDir,
                            ("--sae", parse.GetValue(sae)),
                            ("--model", parse.GetValue(collect.Lm.Model)),
                            ("--corpus", parse.GetValue(collect.Lm.Corpus))
                        );
                        var request = collect.Request(
                            parse,
                            parse.GetValue(sae)!,
                            ParseFeatures(parse.GetValue(features)!),
                            parse.GetValue(neuronpedia)
                        );
                        using var folderLock = FolderLock.Acquire(outDir, "dashboard");
                        if (folderLock.StaleNote is { } stale)
                        {
                            Console.Error.WriteLine($"note: {outDir}: {stale}.");
                        }

                        using var device = CommonOptions.OpenDevice(parse);
                        Console.WriteLine(
                            $"Dashboards of {request.Sae} on {device}: {request.Tokens} tokens of {request.Corpus}, two passes (the second needs the first's max) → {outDir}"
                        );
                        var result = Run(device, request, outDir, cancel);
                        Console.WriteLine(
                            string.Create(
                                CultureInfo.InvariantCulture,
                                $"Wrote {result.Records.Count} feature dashboards ({result.Records.Count(r => r.Density > 0)} alive over {result.Tokens} tokens) to {outDir}; open {Path.Combine(outDir, "index.html")}."
                            )
                        );
                        return 0;
                    })
                )
        );
        return command;
    }

    /// <summary>Runs a dashboard build under a progress bar in tokens per second.</summary>
    internal static DashboardResult Run(
        Backends.SaeDevice device,
        DashboardRequest request,
        string outDir,
        CancellationToken cancel
    ) =>
        ConsoleProgress.Run(
            "dashboard",
            2 * request.Tokens,
            report =>
                DashboardBuilder.Build(
                    device,
                    request,
                    outDir,
                    new ConsoleProgress.Relay<DashboardProgress>(p =>
                        report((p.Pass - 1) * p.Total + p.Tokens)
                    ),
                    message => Console.Error.WriteLine(message),
                    cancel
                ),
            unit: "tokens"
        );

    /// <summary>Parses <c>all</c> or <c>i,j,…</c>.</summary>
    internal static int[]? ParseFeatures(string text)
    {
        if (text.Trim().Equals("all", StringComparison.OrdinalIgnoreCase))
        {
            return null;
        }

        var list = new List<int>();
        foreach (
            var part in text.Split(
                ',',
                StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries
            )
        )
        {
            if (!int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out var i))
            {
                throw new ArgumentException(
                    $"--features: '{part}' is not a feature index (give all or i,j,…)."
                );
            }

            list.Add(i);
        }

        return list.Count == 0
            ? throw new ArgumentException("--features: no feature given (give all or i,j,…).")
            : [.. list];
    }
}
