using FluentAssertions;
using IlgpuSae.Lm;
using IlgpuSae.Tests.Infrastructure;
using Xunit;

namespace IlgpuSae.Tests.Reliability;

/// <summary>A malformed tokenizer file of a model folder (the corpus's <c>tokenizer/</c>) is one clear
/// <see cref="InvalidDataException"/> naming the folder, when the tokenizer is loaded or first
/// used.</summary>
public sealed class TokenizerFileTests : IDisposable
{
    private readonly TempFolder _temp = new("ilgpusae-tok-");

    public void Dispose() => _temp.Dispose();

    private static readonly LmConfig Config = new()
    {
        Architecture = LmArchitecture.Gpt2,
        VocabSize = 4096,
        ContextLength = 128,
        DModel = 128,
        Layers = 2,
        Heads = 4,
        DMlp = 512,
    };

    [Theory]
    [InlineData("tokenizer/wordpiece.json", "tokenizer.json")]
    [InlineData("tokenizer/merges-not-strings.json", "tokenizer.json")]
    [InlineData("tokenizer/string-ids.json", "tokenizer.json")]
    [InlineData("tokenizer/truncated.model", "tokenizer.model")]
    [InlineData("tokenizer/missing-bytes.json", "tokenizer.json")]
    public void A_malformed_tokenizer_file_is_one_clear_error(string corpusFile, string fileName)
    {
        var folder = _temp.Path("model");
        Directory.CreateDirectory(folder);
        File.Copy(BadInputs.Path(corpusFile), Path.Combine(folder, fileName));
        var before = BadInputs.Hash(folder);
        var load = () => LmTokenizer.Load(folder, Config).Encode("Hello world, the quick brown fox. 3.14");
        load.Should().Throw<InvalidDataException>().Which.Message.Should().Contain(folder);
        BadInputs.Hash(folder).Should().Be(before, "a reader never changes its input");
    }
}
