using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using IlgpuSae.Data;
using IlgpuSae.IO;

namespace IlgpuSae.Lm;

/// <summary>Which activations to take from a model: site, corpus, context, how many.</summary>
public sealed record ActivationRequest
{
    /// <summary>The hook site, e.g. <c>blocks.0.mlp.hook_post</c>.</summary>
    public required string Site { get; init; }

    /// <summary>The corpus file (.txt or .txt.gz; documents separated by blank lines).</summary>
    public required string Corpus { get; init; }

    /// <summary>Activation rows (tokens) wanted; 0 = every token of the corpus.</summary>
    public long Tokens { get; init; }

    /// <summary>Context length L (BOS included); 0 = the model's context.</summary>
    public int ContextSize { get; init; }

    /// <summary>Contexts per forward pass.</summary>
    public int Batch { get; init; } = 16;

    /// <summary>Whether rows at special-token positions (BOS/EOS/PAD) are dropped (default, as SAELens
    /// does).</summary>
    public bool ExcludeSpecialTokens { get; init; } = true;

    /// <summary>Whether a corpus with fewer rows than <see cref="Tokens"/> is used whole instead of being an
    /// error.</summary>
    public bool AllowFewerTokens { get; init; }
}

/// <summary>
/// The activation rows a model produces at one site over a corpus, in corpus order: contexts are cut by
/// <see cref="TokenCorpus"/>, special-token positions dropped. Rows are addressed by index without being
/// computed: per-context row counts come from the tokens alone.
/// </summary>
public sealed class ActivationPlan
{
    private readonly long[] _starts;

    private ActivationPlan(
        LanguageModel model,
        ActivationRequest request,
        TokenCorpus corpus,
        int contextSize,
        int contexts,
        long[] starts,
        long rows
    )
    {
        Model = model;
        Request = request;
        Corpus = corpus;
        ContextSize = contextSize;
        Contexts = contexts;
        _starts = starts;
        Rows = rows;
        Width = model.Site(request.Site).Width;
    }

    /// <summary>The model.</summary>
    public LanguageModel Model { get; }

    /// <summary>The request.</summary>
    public ActivationRequest Request { get; }

    /// <summary>The tokenized corpus.</summary>
    public TokenCorpus Corpus { get; }

    /// <summary>Context length used.</summary>
    public int ContextSize { get; }

    /// <summary>Contexts the rows come from.</summary>
    public int Contexts { get; }

    /// <summary>Activation rows (≤ the rows of <see cref="Contexts"/> contexts when the last one is cut
    /// short).</summary>
    public long Rows { get; }

    /// <summary>Activation width at the site.</summary>
    public int Width { get; }

    /// <summary>Plans a request.</summary>
    /// <exception cref="ArgumentException">Bad site or context size, or the corpus is too small for the
    /// tokens asked for.</exception>
    public static ActivationPlan Create(
        LanguageModel model,
        LmTokenizer tokenizer,
        ActivationRequest request,
        CancellationToken cancellationToken = default
    )
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(request);
        model.Site(request.Site);
        int context = request.ContextSize == 0 ? model.Config.ContextLength : request.ContextSize;
        if (context < 2 || context > model.Config.ContextLength)
        {
            throw new ArgumentException(
                $"Context size {context} must be between 2 and the model's context of {model.Config.ContextLength}."
            );
        }

        if (request.Tokens < 0 || request.Batch <= 0)
        {
            throw new ArgumentException(
                $"Tokens must be ≥ 0 and batch positive (got {request.Tokens}, {request.Batch})."
            );
        }

        // Read a little more text than needed (special positions are dropped), or everything for Tokens = 0.
        long wanted =
            request.Tokens == 0 ? long.MaxValue : request.Tokens + request.Tokens / 4 + 4L * context;
        var corpus = TokenCorpus.Load(
            request.Corpus,
            tokenizer,
            model.Config.BosTokenId,
            wanted,
            cancellationToken
        );
        int available = corpus.ContextCount(context);
        var special = model.Config.SpecialTokens;
        var starts = new List<long> { 0 };
        long rows = 0;
        for (int c = 0; c < available && (request.Tokens == 0 || rows < request.Tokens); c++)
        {
            var tokens = corpus.Contexts(c, 1, context);
            rows += request.ExcludeSpecialTokens ? tokens.Count(t => !special.Contains(t)) : tokens.Length;
            starts.Add(rows);
        }

        if (rows == 0 || (request.Tokens > 0 && rows < request.Tokens && !request.AllowFewerTokens))
        {
            throw new ArgumentException(
                $"{request.Corpus} yields {rows} activation rows at context {context}, fewer than the {request.Tokens} asked for; ask for fewer tokens or use a larger corpus."
            );
        }

        long total = request.Tokens == 0 ? rows : Math.Min(rows, request.Tokens);
        return new ActivationPlan(model, request, corpus, context, starts.Count - 1, [.. starts], total);
    }

    /// <summary>First row of context <paramref name="c"/> (c = <see cref="Contexts"/> gives the
    /// end).</summary>
    public long ContextStart(int c) => Math.Min(_starts[c], Rows);

    /// <summary>The context holding row <paramref name="row"/>.</summary>
    public int ContextOf(long row)
    {
        int i = Array.BinarySearch(_starts, row);
        i = i >= 0 ? i : ~i - 1;
        while (i + 1 < _starts.Length && _starts[i + 1] <= row)
        {
            i++;
        }

        return i;
    }

    /// <summary>
    /// Runs the model on contexts [<paramref name="first"/>, <paramref name="first"/> +
    /// <paramref name="count"/>)
    /// and returns their kept rows [k, width] (cut at <see cref="Rows"/>).
    /// </summary>
    public float[] Compute(int first, int count)
    {
        var tokens = Corpus.Contexts(first, count, ContextSize);
        var acts = Model.Capture(tokens, count, Request.Site);
        long begin = ContextStart(first);
        long end = ContextStart(first + count);
        var result = new float[(end - begin) * Width];
        var special = Model.Config.SpecialTokens;
        long kept = 0;
        for (int n = 0; n < tokens.Length && begin + kept < end; n++)
        {
            if (Request.ExcludeSpecialTokens && special.Contains(tokens[n]))
            {
                continue;
            }

            Array.Copy(acts, (long)n * Width, result, kept * Width, Width);
            kept++;
        }

        return result;
    }

    /// <summary>What the rows are, for manifests.</summary>
    public Dictionary<string, object?> Describe() =>
        new()
        {
            ["model"] = Model.Name,
            ["architecture"] = Model.Config.Architecture.ToString(),
            ["hook_name"] = Request.Site,
            ["d_in"] = Width,
            ["context_size"] = ContextSize,
            ["prepend_bos"] = true,
            ["exclude_special_tokens"] = Request.ExcludeSpecialTokens,
            ["corpus"] = Path.GetFullPath(Request.Corpus),
            ["corpus_sha256"] = ActivationCache.Sha256Of(Request.Corpus),
            ["contexts"] = Contexts,
            ["tokens"] = Rows,
        };
}

/// <summary>
/// An <see cref="IActivationSource"/> that computes rows from the model on demand (no cache on disk): the
/// trainer's shuffling loader reads 1024-row blocks in random order, and each read runs the model on just
/// the contexts that hold those rows (the last two batches are kept).
/// </summary>
public sealed class StreamingModelActivations(ActivationPlan plan) : IActivationSource
{
    private readonly RecentChunks _chunks = new();

    /// <inheritdoc/>
    public int Dim => plan.Width;

    /// <inheritdoc/>
    public long Rows => plan.Rows;

    /// <inheritdoc/>
    public string Description => $"{plan.Model.Name}:{plan.Request.Site} on {plan.Request.Corpus} (streamed)";

    /// <summary>Contexts computed so far (for tests and progress).</summary>
    public long ContextsComputed { get; private set; }

    /// <inheritdoc/>
    public void ReadRows(long firstRow, Span<float> destination) =>
        _chunks.Read(this, firstRow, destination, Compute);

    /// <summary>The batch of contexts that holds <paramref name="row"/>: its first row and its
    /// rows.</summary>
    private (long Start, float[] Rows) Compute(long row)
    {
        int batch = plan.Request.Batch;
        int first = plan.ContextOf(row) / batch * batch;
        int count = Math.Min(batch, plan.Contexts - first);
        ContextsComputed += count;
        return (plan.ContextStart(first), plan.Compute(first, count));
    }

    /// <inheritdoc/>
    public void Dispose() { }
}

/// <summary>
/// The two most recent chunks (runs of whole contexts) of a stream that computes rows by contexts, and the
/// copy of a row range out of them: the trainer's loader reads 1024-row blocks, which mostly fall in the
/// chunk just computed or the one before.
/// </summary>
internal sealed class RecentChunks
{
    private (long Start, float[] Rows)? _last;
    private (long Start, float[] Rows)? _previous;

    /// <summary>Forgets both chunks.</summary>
    public void Clear()
    {
        _last = null;
        _previous = null;
    }

    /// <summary>Copies rows [firstRow, firstRow + destination rows) of <paramref name="source"/>,
    /// computing each missing chunk with <paramref name="compute"/> (the chunk that holds a given
    /// row).</summary>
    public void Read(
        IActivationSource source,
        long firstRow,
        Span<float> destination,
        Func<long, (long Start, float[] Rows)> compute
    )
    {
        int dim = source.Dim;
        long rows = destination.Length / dim;
        if (destination.Length % dim != 0 || firstRow < 0 || firstRow + rows > source.Rows)
        {
            throw new ArgumentOutOfRangeException(
                nameof(firstRow),
                $"Rows [{firstRow}, {firstRow + rows}) are outside {source.Description} ({source.Rows} rows)."
            );
        }

        long row = firstRow;
        int offset = 0;
        while (row < firstRow + rows)
        {
            var chunk = Find(row, dim) ?? Add(compute(row));
            long inChunk = row - chunk.Start;
            long take = Math.Min(firstRow + rows - row, chunk.Rows.Length / dim - inChunk);
            chunk.Rows.AsSpan((int)(inChunk * dim), (int)(take * dim)).CopyTo(destination[offset..]);
            offset += (int)(take * dim);
            row += take;
        }
    }

    private (long Start, float[] Rows)? Find(long row, int dim)
    {
        foreach (var c in new[] { _last, _previous })
        {
            if (c is { } hit && row >= hit.Start && row < hit.Start + hit.Rows.Length / dim)
            {
                return hit;
            }
        }

        return null;
    }

    private (long Start, float[] Rows) Add((long Start, float[] Rows) chunk)
    {
        _previous = _last;
        _last = chunk;
        return chunk;
    }
}

/// <summary>Progress of <see cref="ActivationCacheBuilder"/>.</summary>
/// <param name="Rows">Rows computed so far.</param>
/// <param name="Total">Rows wanted.</param>
public readonly record struct ActivationProgress(long Rows, long Total);

/// <summary>
/// Writes an activation cache (<see cref="ActivationCache"/> format) from a model: rows pass through a
/// shuffle buffer of two shards (when full it is shuffled and one shard is written), so the shards are
/// shuffled across contexts. After every shard, the unwritten half and a progress record are saved
/// atomically, so an interrupted run resumes where it stopped and produces the same cache.
/// </summary>
public static class ActivationCacheBuilder
{
    /// <summary>The state an interrupted build saved in <c>progress.json</c>.</summary>
    internal sealed record ProgressRecord(
        string? Fingerprint,
        int NextContext,
        long Produced,
        double SumNorm,
        double SumSqNorm,
        List<ActivationShard> Shards,
        string? Pending,
        string? SumNormExact = null,
        string? SumSqNormExact = null
    );

    /// <summary>Reads and checks the <c>progress.json</c> at <paramref name="progressPath"/> of the cache
    /// being built in <paramref name="folder"/>.</summary>
    /// <exception cref="InvalidDataException">The record is not valid JSON, lacks a field, or holds a field
    /// of the wrong type, a null shard entry or a negative counter.</exception>
    internal static ProgressRecord ReadProgress(string progressPath, string folder)
    {
        ProgressRecord record;
        try
        {
            var state = JsonNode.Parse(File.ReadAllText(progressPath))!;
            record = new ProgressRecord(
                state["fingerprint"]!.GetValue<string>(),
                state["next_context"]!.GetValue<int>(),
                state["produced"]!.GetValue<long>(),
                state["sum_norm"]!.GetValue<double>(),
                state["sum_sq_norm"]!.GetValue<double>(),
                JsonSerializer.Deserialize<List<ActivationShard>>(state["shards"]!.ToJsonString())!,
                state["pending"]?.GetValue<string>(),
                state["sum_norm_exact"]?.GetValue<string>(),
                state["sum_sq_norm_exact"]?.GetValue<string>()
            );
            // Parsed here so that a damaged exact sum is the same clear error.
            _ = record.SumNormExact is { } n ? ExactSum.Parse(n) : null;
            _ = record.SumSqNormExact is { } q ? ExactSum.Parse(q) : null;
        }
        catch (Exception e)
            when (e is JsonException or NullReferenceException or FormatException or InvalidOperationException
            )
        {
            // Written atomically, so a damaged record means the disk or a person changed it.
            throw new InvalidDataException(
                $"{progressPath} is damaged ({e.Message}); the interrupted run cannot resume. Delete {folder} and start again.",
                e
            );
        }

        if (
            record.Shards is null
            || record.Shards.Any(s => s?.File is null || s.Sha256 is null)
            || record.NextContext < 0
            || record.Produced < 0
        )
        {
            throw new InvalidDataException(
                $"{progressPath} is damaged (a shard entry or a counter is invalid); delete {folder} and start again."
            );
        }

        return record;
    }

    /// <summary>Builds (or resumes, or confirms a finished) cache in <paramref name="folder"/>.</summary>
    /// <exception cref="InvalidOperationException">The folder holds a cache or a partial run of a different
    /// request, or a partial run sharded across ranks.</exception>
    public static ActivationManifest Build(
        ActivationPlan plan,
        string folder,
        int shardRows = 1 << 16,
        ulong seed = 0,
        IProgress<ActivationProgress>? progress = null,
        CancellationToken cancellationToken = default
    )
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(shardRows);
        Directory.CreateDirectory(folder);
        var source = Source(plan, shardRows, seed);
        if (Finished(folder, source) is { } existing)
        {
            progress?.Report(new ActivationProgress(existing.TotalRows, existing.TotalRows));
            return existing;
        }

        if (BuildPart.ShardedProgressFiles(folder).FirstOrDefault() is { } sharded)
        {
            throw new InvalidOperationException(
                $"{folder} holds a partial activation cache written by several MPI ranks ({Path.GetFileName(sharded)}); resume it with the same mpiexec -n and --parallel data, or delete the folder."
            );
        }

        var part = BuildPart.Whole;
        var state = RunPart(plan, folder, part, source, shardRows, seed, progress, cancellationToken);
        var manifest = Manifest(
            plan.Width,
            source,
            state.Shards,
            state.SumNorm.ToDouble(),
            state.SumSqNorm.ToDouble(),
            null
        );
        AtomicFile.WriteAllText(
            Path.Combine(folder, "manifest.json"),
            JsonSerializer.Serialize(manifest, new JsonSerializerOptions { WriteIndented = true })
        );
        part.DeleteProgress(folder);
        return manifest;
    }

    /// <summary>What a cache of this request records in its manifest's <c>source</c> (and what a finished
    /// cache is compared against).</summary>
    internal static Dictionary<string, object?> Source(ActivationPlan plan, int shardRows, ulong seed)
    {
        var source = plan.Describe();
        source["shuffle_seed"] = seed;
        source["shard_rows"] = shardRows;
        return source;
    }

    /// <summary>The manifest of the finished cache in <paramref name="folder"/> (verified), or null when
    /// it holds none.</summary>
    /// <exception cref="InvalidOperationException">It holds a cache of a different request.</exception>
    internal static ActivationManifest? Finished(string folder, Dictionary<string, object?> source)
    {
        if (!File.Exists(Path.Combine(folder, "manifest.json")))
        {
            return null;
        }

        using var existing = ActivationCache.Open(folder);
        if (
            JsonSerializer.Serialize(
                existing.Manifest.Source.Where(kv => source.ContainsKey(kv.Key)).ToDictionary()
            )
            != JsonSerializer.Serialize(
                source.ToDictionary(kv => kv.Key, kv => JsonSerializer.SerializeToElement(kv.Value))
            )
        )
        {
            throw new InvalidOperationException(
                $"{folder} already holds an activation cache of a different request; choose another --out folder."
            );
        }

        return existing.Manifest;
    }

    /// <summary>The manifest of a cache of <paramref name="shards"/> with the normalisation statistics of
    /// Σ‖x‖ and Σ‖x‖² over its rows; <paramref name="ranks"/> is recorded for a sharded build.</summary>
    internal static ActivationManifest Manifest(
        int width,
        Dictionary<string, object?> request,
        List<ActivationShard> shards,
        double sumNorm,
        double sumSqNorm,
        int? ranks
    )
    {
        var source = new Dictionary<string, object?>(request);
        long total = shards.Sum(s => s.Rows);
        source["normalization"] = new Dictionary<string, double>
        {
            ["mean_norm"] = sumNorm / total,
            ["mean_squared_norm"] = sumSqNorm / total,
            ["norm_scaling_factor"] = Math.Sqrt(width) / (sumNorm / total),
        };
        if (ranks is { } n)
        {
            source["ranks"] = n;
        }

        source["created_by"] = "ilgpu-sae activations";
        source["created"] = DateTime.UtcNow.ToString("O", CultureInfo.InvariantCulture);
        return new ActivationManifest
        {
            DIn = width,
            TotalRows = total,
            Shards = shards,
            Source = source.ToDictionary(kv => kv.Key, kv => JsonSerializer.SerializeToElement(kv.Value)),
        };
    }

    /// <summary>What one builder process wrote: its shards and the exact sums of its rows' norms.</summary>
    internal sealed record PartResult(
        List<ActivationShard> Shards,
        long Rows,
        ExactSum SumNorm,
        ExactSum SumSqNorm
    );

    /// <summary>
    /// Writes the shards of <paramref name="part"/>'s contexts (resuming from its progress record): the
    /// contexts go through the model in batches of <see cref="ActivationRequest.Batch"/>, the part keeping
    /// the batches it owns, and its rows pass through the shuffle buffer. A sharded part ends with a
    /// progress record that lists every shard it wrote (nothing left pending).
    /// </summary>
    internal static PartResult RunPart(
        ActivationPlan plan,
        string folder,
        BuildPart part,
        Dictionary<string, object?> source,
        int shardRows,
        ulong seed,
        IProgress<ActivationProgress>? progress,
        CancellationToken cancellationToken
    )
    {
        string fingerprint = Fingerprint(source, part);
        int width = plan.Width;
        var shards = new List<ActivationShard>();
        var buffer = new List<float>(2 * shardRows * width);
        int nextContext = 0;
        long produced = 0;
        // Σ‖x‖ and Σ‖x‖², exact: the same bits whatever the order of the rows or their split over ranks.
        var stats = new[] { new ExactSum(), new ExactSum() };
        var progressPath = Path.Combine(folder, part.ProgressName);
        if (File.Exists(progressPath))
        {
            var saved = ReadProgress(progressPath, folder);
            if (saved.Fingerprint != fingerprint)
            {
                throw new InvalidOperationException(
                    $"{folder} holds a partial run of a different request ({part.ProgressName}); choose another --out folder or delete it."
                );
            }

            nextContext = saved.NextContext;
            produced = saved.Produced;
            stats[0] = saved.SumNormExact is { } n ? ExactSum.Parse(n) : ExactSum.Of(saved.SumNorm);
            stats[1] = saved.SumSqNormExact is { } q ? ExactSum.Parse(q) : ExactSum.Of(saved.SumSqNorm);
            shards = saved.Shards;
            foreach (var shard in shards)
            {
                var path = Path.Combine(folder, shard.File);
                if (!File.Exists(path) || ActivationCache.Sha256Of(path) != shard.Sha256)
                {
                    throw new InvalidDataException(
                        $"{folder}: shard {shard.File} is missing or changed since the interrupted run; delete the folder and start again."
                    );
                }
            }

            if (saved.Pending is { } pending)
            {
                using var stream = File.OpenRead(Path.Combine(folder, pending));
                buffer.AddRange(Npy.ReadFloats(stream, pending).Data);
            }
        }

        long total = part.RowsOf(plan);
        progress?.Report(new ActivationProgress(produced, total));
        int batch = plan.Request.Batch;
        while (nextContext < plan.Contexts)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int count = Math.Min(batch, plan.Contexts - nextContext);
            if (!part.Owns(nextContext / batch))
            {
                nextContext += count;
                continue;
            }

            var rows = plan.Compute(nextContext, count);
            nextContext += count;
            produced += rows.Length / width;
            for (int r = 0; r < rows.Length / width; r++)
            {
                double sq = 0;
                for (int j = 0; j < width; j++)
                {
                    sq += (double)rows[r * width + j] * rows[r * width + j];
                }

                stats[0].Add(Math.Sqrt(sq));
                stats[1].Add(sq);
            }

            buffer.AddRange(rows);
            if (buffer.Count >= 2 * shardRows * width)
            {
                var all = buffer.ToArray();
                Shuffle(all, width, part.ShuffleSeed(seed, shards.Count));
                var shard = all.AsSpan(0, shardRows * width).ToArray();
                shards.Add(WriteShard(folder, part.ShardName(shards.Count), shard, width));
                buffer.Clear();
                buffer.AddRange(all.AsSpan(shardRows * width).ToArray());
                SaveProgress(folder, part, fingerprint, nextContext, produced, stats, shards, buffer, width);
            }

            progress?.Report(new ActivationProgress(produced, total));
        }

        var rest = buffer.ToArray();
        if (rest.Length > 0)
        {
            Shuffle(rest, width, part.ShuffleSeed(seed, shards.Count));
            for (int at = 0; at < rest.Length; at += shardRows * width)
            {
                var piece = rest.AsSpan(at, Math.Min(shardRows * width, rest.Length - at)).ToArray();
                shards.Add(WriteShard(folder, part.ShardName(shards.Count), piece, width));
            }
        }

        if (part.Sharded)
        {
            // This rank is done: its record lists every shard, so a resumed job skips straight to the
            // manifest.
            SaveProgress(folder, part, fingerprint, nextContext, produced, stats, shards, [], width);
        }

        return new PartResult(shards, produced, stats[0], stats[1]);
    }

    /// <summary>What <paramref name="part"/>'s progress record must name for a build of
    /// <paramref name="source"/> to resume it.</summary>
    internal static string Fingerprint(Dictionary<string, object?> source, BuildPart part)
    {
        var fingerprintSource = new Dictionary<string, object?>(source);
        if (part.Sharded)
        {
            fingerprintSource["rank"] = part.Rank;
            fingerprintSource["ranks"] = part.Size;
        }

        return JsonSerializer.Serialize(fingerprintSource);
    }

    private static ActivationShard WriteShard(string folder, string name, float[] rows, int width)
    {
        var path = Path.Combine(folder, name);
        Npy.WriteFloats(path, rows, rows.Length / width, width);
        return new ActivationShard(name, rows.Length / width, ActivationCache.Sha256Of(path));
    }

    private static void SaveProgress(
        string folder,
        BuildPart part,
        string fingerprint,
        int nextContext,
        long produced,
        ExactSum[] stats,
        List<ActivationShard> shards,
        List<float> buffer,
        int width
    )
    {
        string? pending = buffer.Count == 0 ? null : part.PendingName(shards.Count);
        if (pending is not null)
        {
            Npy.WriteFloats(Path.Combine(folder, pending), [.. buffer], buffer.Count / width, width);
        }

        var state = new JsonObject
        {
            ["fingerprint"] = fingerprint,
            ["next_context"] = nextContext,
            ["produced"] = produced,
            ["sum_norm"] = stats[0].ToDouble(),
            ["sum_sq_norm"] = stats[1].ToDouble(),
            ["sum_norm_exact"] = stats[0].ToString(),
            ["sum_sq_norm_exact"] = stats[1].ToString(),
            ["shards"] = JsonNode.Parse(JsonSerializer.Serialize(shards)),
            ["pending"] = pending,
        };
        AtomicFile.WriteAllText(
            Path.Combine(folder, part.ProgressName),
            state.ToJsonString(new() { WriteIndented = true })
        );
        foreach (var old in part.PendingFiles(folder).Where(f => Path.GetFileName(f) != pending))
        {
            File.Delete(old);
        }
    }

    /// <summary>Fisher–Yates shuffle of the rows of a row-major [n, width] array.</summary>
    private static void Shuffle(float[] rows, int width, ulong seed)
    {
        var rng = new SplitMix64(seed);
        int n = rows.Length / width;
        var tmp = new float[width];
        for (int i = n - 1; i > 0; i--)
        {
            int j = rng.NextInt(i + 1);
            if (j == i)
            {
                continue;
            }

            rows.AsSpan(i * width, width).CopyTo(tmp);
            rows.AsSpan(j * width, width).CopyTo(rows.AsSpan(i * width, width));
            tmp.CopyTo(rows.AsSpan(j * width, width));
        }
    }
}
