using System.CommandLine;
using System.Globalization;
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
                        OutputPaths.EnsureSeparate(
                            "--out",
                            outDir,
                            ("--model", parse.GetValue(lm.Model)),
                            ("--corpus", parse.GetValue(lm.Corpus))
                        );
                        using var folderLock = FolderLock.Acquire(outDir, "activations");
                        if (folderLock.StaleNote is { } stale)
                        {
                            Console.Error.WriteLine($"note: {outDir}: {stale}.");
                        }

                        using var device = CommonOptions.OpenDevice(parse);
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
                        Console.WriteLine(
                            string.Create(
                                CultureInfo.InvariantCulture,
                                $"{model.Name} ({model.Config.Architecture}, {model.Config.Layers} layers, d {model.Config.DModel}) on {device}: {plan.Rows} rows of {site} (d {plan.Width}) from {plan.Contexts} contexts of {plan.ContextSize} tokens ({tokenizer.Kind} tokenizer) → {outDir}"
                            )
                        );
                        var manifest = ConsoleProgress.Run(
                            "activations",
                            plan.Rows,
                            report =>
                                ActivationCacheBuilder.Build(
                                    plan,
                                    outDir,
                                    parse.GetValue(shardRows),
                                    parse.GetValue(seed),
                                    new ConsoleProgress.Relay<ActivationProgress>(p => report(p.Rows)),
                                    cancel
                                )
                        );
                        Console.WriteLine(
                            $"Wrote {manifest.TotalRows} rows in {manifest.Shards.Count} shard(s) to {outDir}."
                        );
                        return 0;
                    })
                )
        );
        return command;
    }
}
