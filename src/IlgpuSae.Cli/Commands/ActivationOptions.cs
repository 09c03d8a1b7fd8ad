using System.CommandLine;

namespace IlgpuSae.Cli.Commands;

/// <summary>The <c>--acts</c> and <c>--tensor</c> options of the commands that read activation
/// files.</summary>
internal sealed class ActivationOptions
{
    public Option<string?> Acts { get; } =
        new("--acts")
        {
            Description =
                "Activations: a .npy [N, d] file, a .safetensors file (see --tensor) or a cache folder with manifest.json.",
        };

    public Option<string?> Tensor { get; } =
        new("--tensor") { Description = "Tensor name inside a .safetensors activation file." };

    public Option<bool> SkipChecksums { get; } =
        new("--skip-checksums")
        {
            Description =
                "Cache folders: do not check each shard's SHA-256 against manifest.json (checked by default when a shard is first read).",
        };

    public IEnumerable<Option> All => [Acts, Tensor, SkipChecksums];

    /// <summary>Whether to verify cache shards (<c>--skip-checksums</c> not given).</summary>
    public bool Verify(ParseResult parse) => !parse.GetValue(SkipChecksums);

    public string Require(ParseResult parse) =>
        parse.GetValue(Acts)
        ?? throw new ArgumentException(
            "Give the activations: --acts FILE|FOLDER, or --model DIR --site NAME --corpus FILE."
        );
}
