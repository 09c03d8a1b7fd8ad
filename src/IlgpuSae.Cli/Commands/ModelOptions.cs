using System.CommandLine;
using IlgpuSae.Backends;
using IlgpuSae.Lm;

namespace IlgpuSae.Cli.Commands;

/// <summary>Language-model options shared by <c>activations</c>, <c>eval</c> and <c>train</c>.</summary>
internal sealed class ModelOptions
{
    public Option<string?> Model { get; } =
        new("--model")
        {
            Description =
                "Hugging Face model folder (config.json + *.safetensors + tokenizer), GPT-2 or GPT-NeoX/Pythia.",
        };

    public Option<string?> Site { get; } =
        new("--site")
        {
            Description =
                "Hook site, e.g. blocks.0.mlp.hook_post, blocks.1.hook_resid_post, blocks.0.attn.hook_z.",
        };

    public Option<string?> Corpus { get; } =
        new("--corpus")
        {
            Description = "Text corpus (.txt or .txt.gz, documents separated by blank lines).",
        };

    public Option<int> Context { get; } =
        new("--context")
        {
            Description = "Context length in tokens, BOS included (0 = the model's).",
            DefaultValueFactory = _ => 128,
        };

    public Option<int> LmBatch { get; } =
        new("--lm-batch")
        {
            Description = "Contexts per language-model forward pass.",
            DefaultValueFactory = _ => 16,
        };

    public IEnumerable<Option> All => [Model, Site, Corpus, Context, LmBatch];

    public bool Given(ParseResult parse) => parse.GetValue(Model) is not null;

    /// <summary>The model, its tokenizer and the site, with clear errors for what is missing.</summary>
    public (LanguageModel Model, LmTokenizer Tokenizer, string Site, string Corpus) Open(
        ParseResult parse,
        SaeDevice device,
        string? defaultSite = null
    )
    {
        var folder = parse.GetValue(Model) ?? throw new ArgumentException("--model is required.");
        var site =
            parse.GetValue(Site)
            ?? defaultSite
            ?? throw new ArgumentException("--site is required with --model.");
        var corpus =
            parse.GetValue(Corpus) ?? throw new ArgumentException("--corpus is required with --model.");
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
