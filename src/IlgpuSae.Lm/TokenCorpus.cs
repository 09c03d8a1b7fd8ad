using System.Text;

namespace IlgpuSae.Lm;

/// <summary>
/// Turns a text corpus into fixed-length model contexts. The corpus is UTF-8 text (<c>.txt</c>, or
/// gzip-compressed <c>.gz</c>) whose documents are separated by blank lines. Each document is tokenized
/// and preceded by BOS, the documents are concatenated into one stream, and the stream is cut into
/// windows of <c>L − 1</c> tokens, each of which gets BOS prepended: every context starts with BOS
/// (SAELens' <c>prepend_bos=True</c>) and BOS also marks document starts inside a context.
/// </summary>
public sealed class TokenCorpus
{
    private TokenCorpus(string path, int[] stream, int bos)
    {
        Path = path;
        Stream = stream;
        Bos = bos;
    }

    /// <summary>The corpus file.</summary>
    public string Path { get; }

    /// <summary>The token stream (BOS before each document).</summary>
    public int[] Stream { get; }

    /// <summary>The BOS id.</summary>
    public int Bos { get; }

    /// <summary>
    /// Reads and tokenizes documents from <paramref name="path"/> until the stream has at least
    /// <paramref name="minTokens"/> tokens (or the corpus ends).
    /// </summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The corpus has no text.</exception>
    public static TokenCorpus Load(
        string path,
        LmTokenizer tokenizer,
        int bos,
        long minTokens = long.MaxValue,
        CancellationToken cancellationToken = default
    )
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"Corpus {path} does not exist.", path);
        }

        var tokens = new List<int>();
        foreach (var doc in Documents(path))
        {
            cancellationToken.ThrowIfCancellationRequested();
            var ids = tokenizer.Encode(doc);
            if (ids.Length == 0)
            {
                continue;
            }

            tokens.Add(bos);
            tokens.AddRange(ids);
            if (tokens.Count >= minTokens)
            {
                break;
            }
        }

        if (tokens.Count < 2)
        {
            throw new InvalidDataException($"Corpus {path} is empty: it has no text to tokenize.");
        }

        return new TokenCorpus(path, [.. tokens], bos);
    }

    /// <summary>
    /// The held-out evaluation contexts every evaluation uses (the <c>eval</c> command, the study): enough
    /// text for
    /// <paramref name="tokens"/> predicted tokens in contexts of <paramref name="contextLength"/> (a margin
    /// of four
    /// contexts covers documents cut at the end), as row-major [count, L] token ids and their count.
    /// </summary>
    /// <exception cref="ArgumentException">The token budget is not positive or the corpus holds less than one
    /// context.</exception>
    public static (int[] Contexts, int Count) EvaluationContexts(
        string path,
        LmTokenizer tokenizer,
        int bos,
        long tokens,
        int contextLength,
        CancellationToken cancellationToken = default
    )
    {
        if (tokens <= 0)
        {
            throw new ArgumentException($"--tokens must be positive (got {tokens}).");
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(contextLength, 2);
        var text = Load(path, tokenizer, bos, tokens + 4L * contextLength, cancellationToken);
        int count = (int)
            Math.Min(text.ContextCount(contextLength), Math.Max(1, tokens / (contextLength - 1)));
        if (count == 0)
        {
            throw new ArgumentException($"{path} holds fewer than {contextLength} tokens: not one context.");
        }

        return (text.Contexts(0, count, contextLength), count);
    }

    /// <summary>Number of whole contexts of length <paramref name="contextLength"/> the stream
    /// holds.</summary>
    public int ContextCount(int contextLength)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(contextLength, 2);
        return Stream.Length / (contextLength - 1);
    }

    /// <summary>Contexts <paramref name="first"/> … <paramref name="first"/> + <paramref name="count"/> − 1,
    /// row-major [count, L].</summary>
    public int[] Contexts(int first, int count, int contextLength)
    {
        int available = ContextCount(contextLength);
        if (first < 0 || count < 0 || first + count > available)
        {
            throw new ArgumentOutOfRangeException(
                nameof(count),
                $"Contexts [{first}, {first + count}) requested; {Path} holds {available} of length {contextLength}."
            );
        }

        var result = new int[count * contextLength];
        for (int c = 0; c < count; c++)
        {
            result[c * contextLength] = Bos;
            Array.Copy(
                Stream,
                (long)(first + c) * (contextLength - 1),
                result,
                c * contextLength + 1,
                contextLength - 1
            );
        }

        return result;
    }

    /// <summary>The documents of a corpus file, split at blank lines, without surrounding
    /// whitespace.</summary>
    public static IEnumerable<string> Documents(string path)
    {
        using Stream input = path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase)
            ? new IlgpuSae.IO.CheckedGzipStream(path)
            : File.OpenRead(path);
        using var reader = new StreamReader(input, Encoding.UTF8);
        var doc = new StringBuilder();
        string? line;
        while ((line = reader.ReadLine()) is not null)
        {
            if (line.Trim().Length == 0)
            {
                if (doc.Length > 0)
                {
                    yield return doc.ToString();
                    doc.Clear();
                }

                continue;
            }

            if (doc.Length > 0)
            {
                doc.Append('\n');
            }

            doc.Append(line);
        }

        if (doc.Length > 0)
        {
            yield return doc.ToString();
        }
    }
}
