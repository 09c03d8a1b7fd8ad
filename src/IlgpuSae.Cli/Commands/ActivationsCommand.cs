using System.CommandLine;
using System.Globalization;
using IlgpuSae.Backends;
using IlgpuSae.IO;
using IlgpuSae.Lm;

namespace IlgpuSae.Cli.Commands;

/// <summary><c>activations</c>: a shuffled, sharded activation cache of one hook site
/// (<see cref="ActivationCacheBuilder"/>).</summary>
internal static class ActivationsCommand
{
    public static Command Create()
    {
        var lm = new ModelOptions();
        lm.Model.Required = true;
        lm.Site.Required = true;
        lm.Corpus.Required = true;
        var tokens = new Option<long>("--tokens")
        {
            Description = "Activation rows to write (0 = the whole corpus).",
            Required = true,
        };
        var shardRows = new Option<int>("--shard-rows")
        {
            Description = "Rows per shard (the shuffle buffer holds two shards).",
            DefaultValueFactory = _ => 1 << 16,
        };
        var seed = new Option<ulong>("--seed")
        {
            Description = "Shuffle seed.",
            DefaultValueFactory = _ => 0UL,
        };
        var keepSpecial = new Option<bool>("--keep-special-tokens")
        {
            Description = "Keep rows at BOS/EOS/PAD positions (dropped by default).",
        };
        var output = new Option<string>("--out")
        {
            Description = "Cache folder (manifest.json + shards); re-running resumes an interrupted run.",
            Required = true,
        };
        var parallel = new Option<string?>("--parallel")
        {
            Description =
                "data: write the cache across the processes of an MPICH mpiexec launch, rank r running the model on batches r, r + N, … of the contexts (see README, 'Training on several devices and machines').",
        };
        parallel.AcceptOnlyFromAmong("data");
        var command = new Command(
            "activations",
            "Run a language model over a corpus and write a shuffled, sharded activation cache of one hook site."
        )
        {
            tokens,
            shardRows,
            seed,
            keepSpecial,
            output,
            parallel,
        };
        foreach (var o in lm.All)
        {
            command.Options.Add(o);
        }

        command.SetAction(
            (parse, cancel) =>
                Task.FromResult(
                    CommonOptions.Guard(() =>
                    {
                        var outDir = parse.GetValue(output)!;
                        using var launch = ParallelLaunch.Open(
                            parse.GetValue(parallel),
                            outDir,
                            "activations"
                        );
                        bool root = launch is null || launch.Group.Rank == 0;
                        bool created = root && !Directory.Exists(outDir);
                        try
                        {
                            return Run(
                                parse,
                                lm,
                                tokens,
                                shardRows,
                                seed,
                                keepSpecial,
                                outDir,
                                launch,
                                cancel
                            );
                        }
                        catch (Exception e) when (launch is not null && !launch.Started)
                        {
                            // Failed while setting up: the other ranks learn why in the start-up collective.
                            launch.Fail(e);
                            DeleteIfEmpty(outDir, created);
                            throw;
                        }
                        catch (Exception e)
                            when (launch is { Agreed: true } && e is not OperationCanceledException)
                        {
                            // Failed mid-build: every other rank would wait forever in its next collective.
                            launch.AbortAll(e);
                            throw;
                        }
                        catch when (created)
                        {
                            DeleteIfEmpty(outDir, created);
                            throw;
                        }
                    })
                )
        );
        return command;
    }

    /// <summary>
    /// Environment variable for tests: sleep this many milliseconds after every batch of contexts, so that a
    /// test can act on a build mid-way (kill a rank) without a long build.
    /// </summary>
    internal const string BatchDelayVariable = "ILGPUSAE_BATCH_DELAY_MS";

    private static readonly int BatchDelayMs = int.TryParse(
        Environment.GetEnvironmentVariable(BatchDelayVariable),
        NumberStyles.Integer,
        CultureInfo.InvariantCulture,
        out int ms
    )
        ? ms
        : 0;

    private static void Pace()
    {
        if (BatchDelayMs > 0)
        {
            Thread.Sleep(BatchDelayMs);
        }
    }

    /// <summary>Deletes <paramref name="outDir"/> if this run created it and nothing is in it.</summary>
    private static void DeleteIfEmpty(string outDir, bool created)
    {
        if (created && Directory.Exists(outDir) && !Directory.EnumerateFileSystemEntries(outDir).Any())
        {
            Directory.Delete(outDir);
        }
    }

    private static int Run(
        ParseResult parse,
        ModelOptions lm,
        Option<long> tokens,
        Option<int> shardRows,
        Option<ulong> seed,
        Option<bool> keepSpecial,
        string outDir,
        ParallelLaunch? launch,
        CancellationToken cancel
    )
    {
        OutputPaths.EnsureSeparate(
            "--out",
            outDir,
            ("--model", parse.GetValue(lm.Model)),
            ("--corpus", parse.GetValue(lm.Corpus))
        );
        // Parallel: rank 0 locks the folder for the ranks that write it together.
        using var folderLock =
            launch is null || launch.Group.Rank == 0 ? FolderLock.Acquire(outDir, "activations") : null;
        if (folderLock?.StaleNote is { } stale)
        {
            Console.Error.WriteLine($"note: {outDir}: {stale}.");
        }

        using var device = CommonOptions.OpenDevice(
            parse,
            defaultIndex: launch?.DefaultDevice(BackendKinds.Resolve(parse.GetValue(CommonOptions.Backend)))
        );
        var (model, tokenizer, site, corpus) = lm.Open(parse, device);
        using var _ = model;
        var plan = ActivationPlan.Create(
            model,
            tokenizer,
            new ActivationRequest
            {
                Site = site,
                Corpus = corpus,
                Tokens = parse.GetValue(tokens),
                ContextSize = parse.GetValue(lm.Context),
                Batch = parse.GetValue(lm.LmBatch),
                ExcludeSpecialTokens = !parse.GetValue(keepSpecial),
            },
            cancel
        );
        int rows = parse.GetValue(shardRows);
        ulong shuffleSeed = parse.GetValue(seed);
        if (launch is not null)
        {
            launch.Agree(
                ShardedActivationCacheBuilder.Check(plan, outDir, launch.Group.Size, rows, shuffleSeed),
                "every rank must run the same activations command"
            );
        }

        string split = launch is null
            ? ""
            : $", {launch.Group.Size} ranks (rank r runs batches r, r + {launch.Group.Size}, … of {plan.Request.Batch} contexts)";
        Console.WriteLine(
            string.Create(
                CultureInfo.InvariantCulture,
                $"{model.Name} ({model.Config.Architecture}, {model.Config.Layers} layers, d {model.Config.DModel}) on {device}: {plan.Rows} rows of {site} (d {plan.Width}) from {plan.Contexts} contexts of {plan.ContextSize} tokens ({tokenizer.Kind} tokenizer) → {outDir}{split}"
            )
        );
        var manifest = ConsoleProgress.Run(
            "activations",
            launch is null ? plan.Rows : ShardedActivationCacheBuilder.RowsOfRank(plan, 0, launch.Group.Size),
            report =>
            {
                var relay = new ConsoleProgress.Relay<ActivationProgress>(p =>
                {
                    report(p.Rows);
                    Pace();
                });
                return launch is null
                    ? ActivationCacheBuilder.Build(plan, outDir, rows, shuffleSeed, relay, cancel)
                    : ShardedActivationCacheBuilder.Build(
                        plan,
                        outDir,
                        launch.Group,
                        rows,
                        shuffleSeed,
                        relay,
                        cancel
                    );
            }
        );
        Console.WriteLine(
            $"Wrote {manifest.TotalRows} rows in {manifest.Shards.Count} shard(s) to {outDir}."
        );
        return 0;
    }
}
