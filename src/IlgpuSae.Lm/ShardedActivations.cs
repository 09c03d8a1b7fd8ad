using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using IlgpuSae.Data;
using IlgpuSae.IO;
using IlgpuSae.Training;

namespace IlgpuSae.Lm;

/// <summary>
/// The contexts one process of an activation-cache build owns, and the names of the files it writes. The
/// contexts go through the model in batches of <see cref="ActivationRequest.Batch"/> contexts (the same
/// batches a single process runs); batch b belongs to rank b mod <see cref="Size"/>. A whole build (one
/// process) writes <c>shard-NNNNN.npy</c>, <c>pending-NNNNN.npy</c> and <c>progress.json</c>; rank r of
/// a sharded build writes <c>shard-rRRR-NNNNN.npy</c>, <c>pending-rRRR-NNNNN.npy</c> and
/// <c>progress-rRRR-of-SSS.json</c>, so that ranks never write the same file.
/// </summary>
internal sealed record BuildPart(int Rank, int Size, bool Sharded)
{
    /// <summary>The single-process build.</summary>
    public static BuildPart Whole { get; } = new(0, 1, false);

    /// <summary>The progress record's name.</summary>
    public string ProgressName => Sharded ? $"progress-r{Rank:D3}-of-{Size:D3}.json" : "progress.json";

    /// <summary>Whether batch <paramref name="batch"/> is this part's.</summary>
    public bool Owns(int batch) => batch % Size == Rank;

    /// <summary>The name of this part's shard <paramref name="index"/>.</summary>
    public string ShardName(int index) =>
        Sharded ? $"shard-r{Rank:D3}-{index:D5}.npy" : $"shard-{index:D5}.npy";

    /// <summary>The name of the rows still pending when this part has written
    /// <paramref name="index"/> shards.</summary>
    public string PendingName(int index) =>
        Sharded ? $"pending-r{Rank:D3}-{index:D5}.npy" : $"pending-{index:D5}.npy";

    /// <summary>The seed of the shuffle that forms this part's shard <paramref name="index"/>.</summary>
    public ulong ShuffleSeed(ulong seed, int index) =>
        Sharded
            ? SplitMix64.Mix(seed, (ulong)index, (ulong)Rank, (ulong)Size)
            : SplitMix64.Mix(seed, (ulong)index);

    /// <summary>Rows of the contexts this part owns.</summary>
    public long RowsOf(ActivationPlan plan)
    {
        ArgumentNullException.ThrowIfNull(plan);
        int batch = plan.Request.Batch;
        long rows = 0;
        for (int first = Rank * batch; first < plan.Contexts; first += Size * batch)
        {
            rows += plan.ContextStart(Math.Min(first + batch, plan.Contexts)) - plan.ContextStart(first);
        }

        return rows;
    }

    /// <summary>This part's pending files in <paramref name="folder"/>.</summary>
    public IEnumerable<string> PendingFiles(string folder)
    {
        string prefix = Sharded ? $"pending-r{Rank:D3}-" : "pending-";
        return Directory
            .GetFiles(folder, prefix + "*.npy")
            .Where(f =>
                Path.GetFileNameWithoutExtension(f)[prefix.Length..] is { Length: 5 } digits
                && digits.All(char.IsAsciiDigit)
            );
    }

    /// <summary>Deletes this part's progress record and pending rows.</summary>
    public void DeleteProgress(string folder)
    {
        foreach (var f in PendingFiles(folder).Append(Path.Combine(folder, ProgressName)))
        {
            File.Delete(f);
        }
    }

    /// <summary>The progress records of sharded builds in <paramref name="folder"/>.</summary>
    public static IEnumerable<string> ShardedProgressFiles(string folder) =>
        Directory.Exists(folder) ? Directory.GetFiles(folder, "progress-r*-of-*.json").Order() : [];
}

/// <summary>
/// An activation cache written by the ranks of an MPI job (<c>activations --parallel data</c>, or
/// <c>train --model … --cache-activations … --parallel</c>): rank r runs the model over batches r, r + N,
/// r + 2N, … of the contexts (the batches a single process runs, N the number of ranks), shuffles its own
/// rows into its own shards, and rank 0 writes the one <c>manifest.json</c> listing every rank's shards
/// with their SHA-256 and the normalisation statistics of all the rows. The cache holds exactly the rows of
/// the single-process cache of the same request, as a multiset (the shuffle mixes rows within a rank's
/// shards, so row order differs). Every rank keeps its own progress record: an interrupted build resumes
/// with the same number of ranks (another number, or a single process, is refused).
/// </summary>
public static class ShardedActivationCacheBuilder
{
    /// <summary>
    /// Checks, before the ranks agree to start, that this rank can build or confirm the cache in
    /// <paramref name="folder"/>: it holds no cache of another request, no partial single-process run, no
    /// partial run over another number of ranks and no rank's partial run of another request. Writes
    /// nothing.
    /// </summary>
    /// <returns>The digest every rank must share (the request and the number of ranks).</returns>
    /// <exception cref="InvalidOperationException">The folder cannot hold this build.</exception>
    public static byte[] Check(
        ActivationPlan plan,
        string folder,
        int ranks,
        int shardRows = 1 << 16,
        ulong seed = 0
    )
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(shardRows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(ranks);
        var source = ActivationCacheBuilder.Source(plan, shardRows, seed);
        if (Directory.Exists(folder) && ActivationCacheBuilder.Finished(folder, source) is null)
        {
            if (File.Exists(Path.Combine(folder, BuildPart.Whole.ProgressName)))
            {
                throw new InvalidOperationException(
                    $"{folder} holds a partial activation cache of a single-process run (progress.json); resume it without mpiexec and --parallel, or delete the folder."
                );
            }

            string mine = $"-of-{ranks:D3}.json";
            if (
                BuildPart
                    .ShardedProgressFiles(folder)
                    .FirstOrDefault(f => !f.EndsWith(mine, StringComparison.Ordinal)) is
                { } other
            )
            {
                throw new InvalidOperationException(
                    $"{folder} holds a partial activation cache of a run over another number of ranks ({Path.GetFileName(other)}); resume it with that many ranks, or delete the folder."
                );
            }

            for (int r = 0; r < ranks; r++)
            {
                var part = new BuildPart(r, ranks, true);
                var path = Path.Combine(folder, part.ProgressName);
                if (
                    File.Exists(path)
                    && ActivationCacheBuilder.ReadProgress(path, folder).Fingerprint
                        != ActivationCacheBuilder.Fingerprint(source, part)
                )
                {
                    throw new InvalidOperationException(
                        $"{folder} holds a partial run of a different request ({part.ProgressName}); choose another --out folder or delete it."
                    );
                }
            }
        }

        return Digest(plan, source, ranks);
    }

    /// <summary>The digest of a request the ranks split by batches: what the rows are, the batch and the
    /// number of ranks.</summary>
    internal static byte[] Digest(ActivationPlan plan, Dictionary<string, object?> source, int ranks) =>
        System.Security.Cryptography.SHA256.HashData(
            System.Text.Encoding.UTF8.GetBytes(
                JsonSerializer.Serialize(source)
                    + string.Create(
                        CultureInfo.InvariantCulture,
                        $"\nbatch={plan.Request.Batch}\nranks={ranks}"
                    )
            )
        );

    /// <summary>Rows of the contexts rank <paramref name="rank"/> of <paramref name="ranks"/> runs the
    /// model on.</summary>
    public static long RowsOfRank(ActivationPlan plan, int rank, int ranks) =>
        new BuildPart(rank, ranks, true).RowsOf(plan);

    /// <summary>
    /// Builds (or resumes, or confirms a finished) sharded cache in <paramref name="folder"/>; every rank of
    /// <paramref name="group"/> calls it, after <see cref="Check"/> and the ranks' agreement. The folder
    /// must be one every rank sees (a shared file system when the ranks are on several machines).
    /// <paramref name="progress"/> counts this rank's rows against its share.
    /// </summary>
    /// <returns>The cache's manifest (on rank 0 the one written).</returns>
    /// <exception cref="InvalidOperationException">The ranks do not see the same folder, or it holds a
    /// cache or partial run of another request.</exception>
    public static ActivationManifest Build(
        ActivationPlan plan,
        string folder,
        ITrainingGroup group,
        int shardRows = 1 << 16,
        ulong seed = 0,
        IProgress<ActivationProgress>? progress = null,
        CancellationToken cancellationToken = default
    )
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(group);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(shardRows);
        var source = ActivationCacheBuilder.Source(plan, shardRows, seed);
        Directory.CreateDirectory(folder);
        var finished = ActivationCacheBuilder.Finished(folder, source);
        var seen = group.AllGather([finished is null ? (byte)0 : (byte)1]);
        if (seen.Any(s => s[0] != seen[0][0]))
        {
            throw new InvalidOperationException(
                $"the ranks see different contents in {folder} (some a finished cache, some not): the folder must be the same one for every rank (a shared file system)."
            );
        }

        if (finished is not null)
        {
            if (group.Rank == 0)
            {
                // Records left by a job stopped between writing the manifest and deleting them.
                DeleteProgress(folder, group.Size);
            }

            progress?.Report(new ActivationProgress(finished.TotalRows, finished.TotalRows));
            return finished;
        }

        var part = new BuildPart(group.Rank, group.Size, true);
        var mine = ActivationCacheBuilder.RunPart(
            plan,
            folder,
            part,
            source,
            shardRows,
            seed,
            progress,
            cancellationToken
        );
        var payload = new JsonObject
        {
            ["shards"] = JsonNode.Parse(JsonSerializer.Serialize(mine.Shards)),
            ["rows"] = mine.Rows,
            ["sum_norm_exact"] = mine.SumNorm.ToString(),
            ["sum_sq_norm_exact"] = mine.SumSqNorm.ToString(),
        };
        var parts = group.AllGather(System.Text.Encoding.UTF8.GetBytes(payload.ToJsonString()));
        var shards = new List<ActivationShard>();
        ExactSum sumNorm = new(),
            sumSqNorm = new();
        long rows = 0;
        foreach (var bytes in parts)
        {
            var node = JsonNode.Parse(bytes)!;
            shards.AddRange(
                JsonSerializer.Deserialize<List<ActivationShard>>(node["shards"]!.ToJsonString())!
            );
            rows += node["rows"]!.GetValue<long>();
            sumNorm.Add(ExactSum.Parse(node["sum_norm_exact"]!.GetValue<string>()));
            sumSqNorm.Add(ExactSum.Parse(node["sum_sq_norm_exact"]!.GetValue<string>()));
        }

        if (rows != plan.Rows || shards.Sum(s => s.Rows) != plan.Rows)
        {
            throw new InvalidOperationException(
                $"the ranks wrote {shards.Sum(s => s.Rows)} rows ({rows} computed), the request has {plan.Rows}: the ranks do not share one request."
            );
        }

        var manifest = ActivationCacheBuilder.Manifest(
            plan.Width,
            source,
            shards,
            sumNorm.ToDouble(),
            sumSqNorm.ToDouble(),
            group.Size
        );
        if (group.Rank == 0)
        {
            foreach (var shard in shards)
            {
                if (!File.Exists(Path.Combine(folder, shard.File)))
                {
                    throw new InvalidOperationException(
                        $"{folder}: shard {shard.File}, written by another rank, is not there for rank 0: the folder must be the same one for every rank (a shared file system)."
                    );
                }
            }

            AtomicFile.WriteAllText(
                Path.Combine(folder, "manifest.json"),
                JsonSerializer.Serialize(manifest, new JsonSerializerOptions { WriteIndented = true })
            );
            DeleteProgress(folder, group.Size);
        }

        // No rank returns before the manifest is on disk (train then opens the cache on every rank).
        group.AllGather([]);
        return manifest;
    }

    private static void DeleteProgress(string folder, int ranks)
    {
        for (int r = 0; r < ranks; r++)
        {
            new BuildPart(r, ranks, true).DeleteProgress(folder);
        }
    }
}

/// <summary>
/// Streamed activations shared by the ranks of a <c>train --model … --parallel</c> run: once the trainer
/// enters lockstep (<see cref="ICollectiveActivationSource"/>), a read that needs new rows runs the model
/// on one group of N × <see cref="ActivationRequest.Batch"/> contexts, rank r on the r-th batch of it (the
/// batches a single process runs), and the ranks all-gather the rows in context order; so each rank runs the
/// model over 1/N of the contexts and every rank reads the rows the single-process stream holds. Before
/// lockstep (set-up reads such as the normalisation estimate, which only rank 0 may make), every rank
/// computes the rows it reads itself.
/// </summary>
public sealed class ShardedStreamingActivations : ICollectiveActivationSource
{
    private readonly ActivationPlan _plan;
    private readonly ITrainingGroup _group;
    private readonly IDisposable? _owner;
    private readonly StreamingModelActivations _local;
    private readonly RecentChunks _chunks = new();
    private bool _lockstep;

    /// <summary>Streams <paramref name="plan"/> across <paramref name="group"/>; disposing it disposes
    /// <paramref name="owner"/> (the model).</summary>
    public ShardedStreamingActivations(ActivationPlan plan, ITrainingGroup group, IDisposable? owner = null)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(group);
        _plan = plan;
        _group = group;
        _owner = owner;
        _local = new StreamingModelActivations(plan);
        Digest = ShardedActivationCacheBuilder.Digest(plan, plan.Describe(), group.Size);
    }

    /// <summary>The digest every rank must share before reading in lockstep: what the rows are, the batch
    /// and the number of ranks (ranks that split other batches would gather the wrong rows).</summary>
    public byte[] Digest { get; }

    /// <inheritdoc/>
    public int Dim => _plan.Width;

    /// <inheritdoc/>
    public long Rows => _plan.Rows;

    /// <inheritdoc/>
    public string Description => _local.Description;

    /// <summary>Contexts this rank has run the model on in lockstep.</summary>
    public long ContextsComputed { get; private set; }

    /// <summary>Groups of contexts the ranks have computed together in lockstep (each rank running the
    /// model on its batch of each).</summary>
    public long GroupsComputed { get; private set; }

    /// <inheritdoc/>
    public void EnterLockstep()
    {
        _lockstep = true;
        _chunks.Clear();
    }

    /// <inheritdoc/>
    public void ReadRows(long firstRow, Span<float> destination)
    {
        if (!_lockstep)
        {
            _local.ReadRows(firstRow, destination);
            return;
        }

        _chunks.Read(this, firstRow, destination, ComputeGroup);
    }

    /// <summary>The group of N batches that holds <paramref name="row"/>, computed by the ranks together
    /// (rank r the r-th batch) and all-gathered in context order: its first row and its rows.</summary>
    private (long Start, float[] Rows) ComputeGroup(long row)
    {
        int batch = _plan.Request.Batch;
        int span = batch * _group.Size;
        int first = _plan.ContextOf(row) / span * span;
        int end = Math.Min(first + span, _plan.Contexts);
        int mine = first + _group.Rank * batch;
        int count = Math.Clamp(end - mine, 0, batch);
        var local = count > 0 ? _plan.Compute(mine, count) : [];
        ContextsComputed += count;
        GroupsComputed++;
        var parts = _group.AllGather(MemoryMarshal.AsBytes(local.AsSpan()).ToArray());
        long expected = (_plan.ContextStart(end) - _plan.ContextStart(first)) * Dim;
        var rows = new float[expected];
        int at = 0;
        foreach (var part in parts)
        {
            if (at + part.Length / sizeof(float) > expected)
            {
                throw new InvalidOperationException(
                    "The ranks computed more rows than the contexts hold: they do not share one model and corpus."
                );
            }

            MemoryMarshal.Cast<byte, float>(part).CopyTo(rows.AsSpan(at));
            at += part.Length / sizeof(float);
        }

        if (at != expected)
        {
            throw new InvalidOperationException(
                "The ranks computed fewer rows than the contexts hold: they do not share one model and corpus."
            );
        }

        return (_plan.ContextStart(first), rows);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _local.Dispose();
        _owner?.Dispose();
    }
}
