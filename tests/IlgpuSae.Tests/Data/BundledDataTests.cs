using System.IO.Compression;
using System.Text.Json.Nodes;
using FluentAssertions;
using IlgpuSae.IO;
using Xunit;

namespace IlgpuSae.Tests.Data;

/// <summary>The bundled corpus and test language model are present, intact and in the documented
/// layout.</summary>
public sealed class BundledDataTests
{
    private static string Repo([System.Runtime.CompilerServices.CallerFilePath] string here = "") =>
        Path.GetFullPath(Path.Combine(Path.GetDirectoryName(here)!, "..", "..", ".."));

    private static string DataPath(params string[] parts) => Path.Combine([Repo(), "data", .. parts]);

    [Fact]
    public void The_corpus_matches_its_recorded_checksums()
    {
        var stats = JsonNode.Parse(File.ReadAllText(DataPath("corpus", "stats.json")))!;
        foreach (var part in new[] { "train", "heldout" })
        {
            using var gz = new GZipStream(
                File.OpenRead(DataPath("corpus", part + ".txt.gz")),
                CompressionMode.Decompress
            );
            using var memory = new MemoryStream();
            gz.CopyTo(memory);
            var bytes = memory.ToArray();
            bytes.LongLength.Should().Be(stats[part]!["bytes"]!.GetValue<long>());
            Convert
                .ToHexStringLower(System.Security.Cryptography.SHA256.HashData(bytes))
                .Should()
                .Be(stats[part]!["sha256"]!.GetValue<string>());
        }

        File.ReadAllText(DataPath("LICENSES.md"))
            .Should()
            .Contain("Brown Corpus")
            .And.Contain("Regents of the University of California");
    }

    [Fact]
    public void The_test_language_model_is_a_GPT2_in_the_Hugging_Face_layout()
    {
        var config = JsonNode.Parse(File.ReadAllText(DataPath("lm", "config.json")))!;
        config["model_type"]!.GetValue<string>().Should().Be("gpt2");
        int layers = config["n_layer"]!.GetValue<int>(),
            d = config["n_embd"]!.GetValue<int>(),
            vocab = config["vocab_size"]!.GetValue<int>();
        layers.Should().BeGreaterThanOrEqualTo(2);
        (4 * d).Should().BeGreaterThanOrEqualTo(256, "the MLP has a few hundred neurons or more");
        using var model = new SafetensorsFile(DataPath("lm", "model.safetensors"));
        model["wte.weight"].Shape.Should().Equal(vocab, d);
        model["h.0.attn.c_attn.weight"].Shape.Should().Equal(d, 3 * d);
        model[$"h.{layers - 1}.mlp.c_fc.weight"].Shape.Should().Equal(d, 4 * d);
        new FileInfo(DataPath("lm", "model.safetensors")).Length.Should().BeLessThanOrEqualTo(10L << 20);
        using var golden = new SafetensorsFile(DataPath("lm", "golden.safetensors"));
        golden
            .Entries.Keys.Should()
            .Contain([
                "input_ids",
                "logits",
                "blocks.0.hook_resid_pre",
                "blocks.1.attn.hook_z",
                "blocks.1.mlp.hook_post",
            ]);
        var losses = JsonNode.Parse(golden.Metadata["losses"])!;
        double clean = losses["clean"]!.GetValue<double>();
        losses["zero:blocks.0.hook_resid_post"]!
            .GetValue<double>()
            .Should()
            .BeGreaterThan(clean + 1, "zero-ablating the residual stream clearly hurts");
        losses["zero:blocks.0.hook_mlp_out"]!
            .GetValue<double>()
            .Should()
            .BeGreaterThan(clean, "zero-ablating an MLP hurts");
        File.Exists(DataPath("lm", "tokenizer.model")).Should().BeTrue();
    }
}
