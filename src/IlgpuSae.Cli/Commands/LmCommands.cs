using System.CommandLine;
using System.Globalization;
using IlgpuSae.Backends;
using IlgpuSae.Lm;
using Spectre.Console;

namespace IlgpuSae.Cli.Commands;

/// <summary>Language-model options shared by <c>activations</c>, <c>eval</c> and <c>train</c>, and the <c>activations</c> command.</summary>
internal static class LmCommands
{
    public sealed class ModelOptions
    {
        public Option<string?> Model { get; } = new("--model") { Description = "Hugging Face model folder (config.json + *.safetensors + tokenizer), GPT-2 or GPT-NeoX/Pythia." };

        public Option<string?> Site { get; } = new("--site") { Description = "Hook site, e.g. blocks.0.mlp.hook_post, blocks.1.hook_resid_post, blocks.0.attn.hook_z." };

        public Option<string?> Corpus { get; } = new("--corpus") { Description = "Text corpus (.txt or .txt.gz, documents separated by blank lines)." };

        public Option<int> Context { get; } = new("--context") { Description = "Context length in tokens, BOS included (0 = the model's).", DefaultValueFactory = _ => 128 };

        public Option<int> LmBatch { get; } = new("--lm-batch") { Description = "Contexts per language-model forward pass.", DefaultValueFactory = _ => 16 };

        public IEnumerable<Option> All => [Model, Site, Corpus, Context, LmBatch];

        public bool Given(ParseResult parse) => parse.GetValue(Model) is not null;

        /// <summary>The model, its tokenizer and the site, with clear errors for what is missing.</summary>
        public (LanguageModel Model, LmTokenizer Tokenizer, string Site, string Corpus) Open(ParseResult parse, SaeDevice device)
        {
            var folder = parse.GetValue(Model) ?? throw new ArgumentException("--model is required.");
            var site = parse.GetValue(Site) ?? throw new ArgumentException("--site is required with --model.");
            var corpus = parse.GetValue(Corpus) ?? throw new ArgumentException("--corpus is required with --model.");
            var model = LanguageModel.Load(device, folder);
            try
            {
                model.Site(site);
                return (model, LmTokenizer.Load(folder, model.Config), site, corpus);
            }
            catch
            {
                model.Dispose();
                throw;
            }
        }
    }

    public static Command Activations()
    {
        var lm = new ModelOptions();
        lm.Model.Required = true;
        lm.Site.Required = true;
        lm.Corpus.Required = true;
        var tokens = new Option<long>("--tokens") { Description = "Activation rows to write (0 = the whole corpus).", Required = true };
        var shardRows = new Option<int>("--shard-rows") { Description = "Rows per shard (the shuffle buffer holds two shards).", DefaultValueFactory = _ => 1 << 16 };
        var seed = new Option<ulong>("--seed") { Description = "Shuffle seed.", DefaultValueFactory = _ => 0UL };
        var keepSpecial = new Option<bool>("--keep-special-tokens") { Description = "Keep rows at BOS/EOS/PAD positions (dropped by default)." };
        var output = new Option<string>("--out") { Description = "Cache folder (manifest.json + shards); re-running resumes an interrupted run.", Required = true };
        var command = new Command("activations", "Run a language model over a corpus and write a shuffled, sharded activation cache of one hook site.")
        {
            tokens, shardRows, seed, keepSpecial, output,
        };
        foreach (var o in lm.All)
        {
            command.Options.Add(o);
        }

        command.SetAction((parse, cancel) => Task.FromResult(CommonOptions.Guard(() =>
        {
            using var device = CommonOptions.OpenDevice(parse);
            var (model, tokenizer, site, corpus) = lm.Open(parse, device);
            using var _ = model;
            var plan = ActivationPlan.Create(model, tokenizer, new ActivationRequest
            {
                Site = site, Corpus = corpus, Tokens = parse.GetValue(tokens), ContextSize = parse.GetValue(lm.Context),
                Batch = parse.GetValue(lm.LmBatch), ExcludeSpecialTokens = !parse.GetValue(keepSpecial),
            }, cancel);
            var outDir = parse.GetValue(output)!;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{model.Name} ({model.Config.Architecture}, {model.Config.Layers} layers, d {model.Config.DModel}) on {device}: {plan.Rows} rows of {site} (d {plan.Width}) from {plan.Contexts} contexts of {plan.ContextSize} tokens ({tokenizer.Kind} tokenizer) → {outDir}"));
            var manifest = WithProgress("activations", plan.Rows, report => ActivationCacheBuilder.Build(
                plan, outDir, parse.GetValue(shardRows), parse.GetValue(seed), new ActionProgress<ActivationProgress>(p => report(p.Rows)), cancel));
            Console.WriteLine($"Wrote {manifest.TotalRows} rows in {manifest.Shards.Count} shard(s) to {outDir}.");
            return 0;
        })));
        return command;
    }

    /// <summary>Runs <paramref name="body"/> under a progress bar (or periodic lines when output is redirected).</summary>
    public static T WithProgress<T>(string label, long total, Func<Action<long>, T> body)
    {
        if (Console.IsOutputRedirected)
        {
            long lastPrinted = -1;
            var started = DateTime.UtcNow;
            return body(value =>
            {
                long bucket = total > 0 ? value * 10 / total : 0;
                if (bucket != lastPrinted)
                {
                    lastPrinted = bucket;
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"{label}: {value}/{total} ({100.0 * value / Math.Max(total, 1):F0}%, {(DateTime.UtcNow - started).TotalSeconds:F0} s)"));
                }
            });
        }

        T result = default!;
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask(label, maxValue: Math.Max(total, 1));
                result = body(value => task.Value = value);
            });
        return result;
    }

    /// <summary>Reports on the calling thread.</summary>
    public sealed class ActionProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
