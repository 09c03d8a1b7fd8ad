using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using IlgpuSae.IO;

namespace IlgpuSae.Data;

/// <summary>
/// A read-only table of activations [Rows, Dim] that can be larger than RAM: rows are read on demand
/// (memory-mapped files). Implementations: <c>.npy</c>, a tensor of a <c>.safetensors</c> file, and a
/// sharded cache folder (<see cref="ActivationCache"/>).
/// </summary>
public interface IActivationSource : IDisposable
{
    /// <summary>Activation width d.</summary>
    int Dim { get; }

    /// <summary>Number of rows N.</summary>
    long Rows { get; }

    /// <summary>A description for messages (path and tensor).</summary>
    string Description { get; }

    /// <summary>Reads <c>destination.Length / Dim</c> consecutive rows starting at
    /// <paramref name="firstRow"/>.</summary>
    void ReadRows(long firstRow, Span<float> destination);
}

/// <summary>
/// An <see cref="IActivationSource"/> shared by the ranks of a parallel training run whose reads may become
/// collective (streamed activations whose model work is split across the ranks). Until
/// <see cref="EnterLockstep"/> every read is local, so a rank may read alone (rank 0's set-up reads); from
/// then on every rank must read the same rows in the same order.
/// </summary>
public interface ICollectiveActivationSource : IActivationSource
{
    /// <summary>Called by every rank at the same point (the trainer, when training starts): from here on
    /// reads are collective.</summary>
    void EnterLockstep();
}

/// <summary>Opens activation files by kind.</summary>
public static class ActivationSources
{
    /// <summary>
    /// Opens <paramref name="path"/>: a folder with <c>manifest.json</c> (cache), a <c>.npy</c> file, or a
    /// <c>.safetensors</c> file (tensor <paramref name="tensor"/>, or its only tensor).
    /// </summary>
    /// <exception cref="FileNotFoundException">Nothing is at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file is not a valid activation table.</exception>
    /// <param name="path">The file or cache folder.</param>
    /// <param name="tensor">The tensor of a <c>.safetensors</c> file.</param>
    /// <param name="verifyChecksums">For a cache folder: check each shard's SHA-256 against the manifest
    /// when the shard is first read (one extra sequential read of it); false skips the check for huge
    /// caches.</param>
    public static IActivationSource Open(string path, string? tensor = null, bool verifyChecksums = true)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (tensor is not null && !path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
        {
            throw new ArgumentException(
                $"A tensor name ('{tensor}') applies to .safetensors activations only; {path} is not one."
            );
        }

        if (Directory.Exists(path))
        {
            return ActivationCache.Open(path, verifyChecksums);
        }

        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"No activation file or cache folder at {path}.", path);
        }

        return Path.GetExtension(path).ToLowerInvariant() switch
        {
            ".npy" => new NpyActivations(path),
            ".safetensors" => new SafetensorsActivations(path, tensor),
            var ext => throw new InvalidDataException(
                $"{path}: unknown activation format '{ext}'. Use .npy, .safetensors or a cache folder with manifest.json."
            ),
        };
    }
}

/// <summary>Activations in a 2-D float <c>.npy</c> file (float32, float16 or float64),
/// memory-mapped.</summary>
internal sealed class NpyActivations : IActivationSource
{
    private readonly MappedNpy _file;

    public NpyActivations(string path)
    {
        _file = new MappedNpy(path);
        Description = path;
        if (_file.Header.Shape[1] is <= 0 or > int.MaxValue)
        {
            _file.Dispose();
            throw new InvalidDataException(
                $"{path}: activation width {_file.Header.Shape[1]} is not usable."
            );
        }
    }

    public int Dim => (int)_file.Header.Shape[1];

    public long Rows => _file.Header.Shape[0];

    public string Description { get; }

    public void ReadRows(long firstRow, Span<float> destination)
    {
        Ranges.Check(this, firstRow, destination.Length);
        _file.Read(firstRow * Dim, destination);
    }

    public void Dispose() => _file.Dispose();
}

/// <summary>One 2-D float tensor of a safetensors file, memory-mapped.</summary>
internal sealed class SafetensorsActivations : IActivationSource
{
    private readonly SafetensorsFile _file;
    private readonly SafetensorsEntry _entry;

    public SafetensorsActivations(string path, string? tensor)
    {
        _file = new SafetensorsFile(path);
        try
        {
            if (tensor is null)
            {
                if (_file.Entries.Count != 1)
                {
                    throw new ArgumentException(
                        $"{path} holds {_file.Entries.Count} tensors; choose one by name ({string.Join(", ", _file.Entries.Keys)})."
                    );
                }

                tensor = _file.Entries.Keys.Single();
            }

            _entry = _file[tensor];
            if (
                _entry.Shape.Length != 2
                || !_entry.DType.IsFloat()
                || _entry.Shape[1] is <= 0 or > int.MaxValue
            )
            {
                throw new InvalidDataException(
                    $"{path}: tensor '{tensor}' must be a 2-D float array [N, d], got {_entry.DType}{_entry.ShapeText}."
                );
            }
        }
        catch
        {
            _file.Dispose();
            throw;
        }

        Description = $"{path}:{tensor}";
    }

    public int Dim => (int)_entry.Shape[1];

    public long Rows => _entry.Shape[0];

    public string Description { get; }

    public void ReadRows(long firstRow, Span<float> destination)
    {
        Ranges.Check(this, firstRow, destination.Length);
        _file.ReadFloats(_entry, firstRow * Dim, destination);
    }

    public void Dispose() => _file.Dispose();
}

internal static class Ranges
{
    public static void Check(IActivationSource source, long firstRow, int length)
    {
        if (length % source.Dim != 0)
        {
            throw new ArgumentException(
                $"Destination length {length} is not a multiple of d = {source.Dim}."
            );
        }

        long rows = length / source.Dim;
        if (firstRow < 0 || firstRow + rows > source.Rows)
        {
            throw new ArgumentOutOfRangeException(
                nameof(firstRow),
                $"Rows [{firstRow}, {firstRow + rows}) are outside {source.Description} ({source.Rows} rows)."
            );
        }
    }
}

/// <summary>One shard of an activation cache.</summary>
/// <param name="File">File name within the cache folder (a 2-D <c>.npy</c>).</param>
/// <param name="Rows">Number of rows.</param>
/// <param name="Sha256">Lower-case hex SHA-256 of the file.</param>
public sealed record ActivationShard(
    [property: JsonPropertyName("file")] string File,
    [property: JsonPropertyName("rows")] long Rows,
    [property: JsonPropertyName("sha256")] string Sha256
);

/// <summary>The <c>manifest.json</c> of an activation cache folder.</summary>
public sealed record ActivationManifest
{
    /// <summary>The format tag, <c>ilgpusae-activation-cache</c>.</summary>
    [JsonPropertyName("format")]
    public string Format { get; init; } = ActivationCache.FormatName;

    /// <summary>The format version (1).</summary>
    [JsonPropertyName("version")]
    public int Version { get; init; } = 1;

    /// <summary>Activation width.</summary>
    [JsonPropertyName("d_in")]
    public int DIn { get; init; }

    /// <summary>Element type of the shards (<c>float32</c> or <c>float16</c>).</summary>
    [JsonPropertyName("dtype")]
    public string DType { get; init; } = "float32";

    /// <summary>Total rows (tokens) over all shards.</summary>
    [JsonPropertyName("total_rows")]
    public long TotalRows { get; init; }

    /// <summary>Where the activations came from (model, hook, corpus, context size, …); free-form.</summary>
    [JsonPropertyName("source")]
    public Dictionary<string, JsonElement> Source { get; init; } = [];

    /// <summary>The shards in order.</summary>
    [JsonPropertyName("shards")]
    public List<ActivationShard> Shards { get; init; } = [];
}

/// <summary>
/// A sharded activation cache: a folder with <c>manifest.json</c> and 2-D <c>.npy</c> shards. Opening checks
/// the manifest against every shard's header (width, rows, dtype); <see cref="Verify"/> also checks the
/// SHA-256 checksums.
/// </summary>
public sealed class ActivationCache : IActivationSource
{
    /// <summary>The manifest's format tag.</summary>
    public const string FormatName = "ilgpusae-activation-cache";

    private readonly string _folder;
    private readonly NpyActivations[] _shards;
    private readonly long[] _starts;
    private readonly bool[] _verified;

    private ActivationCache(
        string folder,
        ActivationManifest manifest,
        NpyActivations[] shards,
        bool verifyChecksums
    )
    {
        _folder = folder;
        _verified = new bool[shards.Length];
        Array.Fill(_verified, !verifyChecksums);
        Manifest = manifest;
        _shards = shards;
        _starts = new long[shards.Length + 1];
        for (int i = 0; i < shards.Length; i++)
        {
            _starts[i + 1] = _starts[i] + shards[i].Rows;
        }
    }

    /// <summary>The manifest.</summary>
    public ActivationManifest Manifest { get; }

    /// <inheritdoc/>
    public int Dim => Manifest.DIn;

    /// <inheritdoc/>
    public long Rows => Manifest.TotalRows;

    /// <inheritdoc/>
    public string Description => _folder;

    /// <summary>
    /// Opens a cache folder. With <paramref name="verifyChecksums"/> (the default) each shard's SHA-256 is
    /// checked against the manifest the first time a row of it is read (so a run pays one extra sequential
    /// read per shard it uses, spread over the run); a mismatch is an <see cref="InvalidDataException"/>.
    /// </summary>
    /// <exception cref="InvalidDataException">The manifest is missing, malformed or disagrees with a
    /// shard.</exception>
    public static ActivationCache Open(string folder, bool verifyChecksums = true)
    {
        var manifestPath = Path.Combine(folder, "manifest.json");
        if (!File.Exists(manifestPath))
        {
            throw new InvalidDataException($"{folder} is not an activation cache: manifest.json is missing.");
        }

        ActivationManifest manifest;
        try
        {
            manifest =
                JsonSerializer.Deserialize<ActivationManifest>(
                    File.ReadAllText(manifestPath),
                    new JsonSerializerOptions { UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow }
                ) ?? throw new InvalidDataException($"{manifestPath} is empty.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{manifestPath} is not a valid manifest: {e.Message}", e);
        }

        if (manifest.Format != FormatName || manifest.Version != 1)
        {
            throw new InvalidDataException(
                $"{manifestPath}: expected format '{FormatName}' version 1, got '{manifest.Format}' version {manifest.Version}."
            );
        }

        if (
            manifest.Shards is null
            || manifest.Shards.Any(s => s is null || s.File is null || s.Sha256 is null)
        )
        {
            throw new InvalidDataException(
                $"{manifestPath}: every shard needs a file, rows and sha256 (null or missing entries)."
            );
        }

        if (manifest.DIn <= 0 || manifest.Shards.Count == 0)
        {
            throw new InvalidDataException(
                $"{manifestPath}: d_in must be positive and at least one shard must be listed."
            );
        }

        long listed = SizeMath.Sum(manifest.Shards.Select(s => s.Rows), manifestPath);
        if (listed != manifest.TotalRows)
        {
            throw new InvalidDataException(
                $"{manifestPath}: total_rows {manifest.TotalRows} differs from the shards' {listed}."
            );
        }

        var shards = new List<NpyActivations>();
        try
        {
            foreach (var shard in manifest.Shards)
            {
                if (
                    shard.File.Contains('/', StringComparison.Ordinal)
                    || shard.File.Contains('\\', StringComparison.Ordinal)
                    || shard.File.StartsWith('.')
                )
                {
                    throw new InvalidDataException(
                        $"{manifestPath}: shard name '{shard.File}' must be a plain file name."
                    );
                }

                var path = Path.Combine(folder, shard.File);
                if (!File.Exists(path))
                {
                    throw new InvalidDataException($"{manifestPath}: shard {shard.File} is missing.");
                }

                var npy = new NpyActivations(path);
                shards.Add(npy);
                if (npy.Dim != manifest.DIn || npy.Rows != shard.Rows)
                {
                    throw new InvalidDataException(
                        $"{path}: holds [{npy.Rows}, {npy.Dim}] but the manifest says [{shard.Rows}, {manifest.DIn}]."
                    );
                }
            }
        }
        catch
        {
            shards.ForEach(s => s.Dispose());
            throw;
        }

        return new ActivationCache(folder, manifest, [.. shards], verifyChecksums);
    }

    /// <summary>Checks every shard's SHA-256 against the manifest now.</summary>
    /// <exception cref="InvalidDataException">A checksum differs.</exception>
    public void Verify()
    {
        for (int s = 0; s < _shards.Length; s++)
        {
            VerifyShard(s);
        }
    }

    private void EnsureVerified(int s)
    {
        lock (_verified)
        {
            if (!_verified[s])
            {
                VerifyShard(s);
            }
        }
    }

    private void VerifyShard(int s)
    {
        var shard = Manifest.Shards[s];
        var actual = Sha256Of(Path.Combine(_folder, shard.File));
        if (!string.Equals(actual, shard.Sha256, StringComparison.OrdinalIgnoreCase))
        {
            throw new InvalidDataException(
                $"{_folder}: shard {shard.File} has SHA-256 {actual}, the manifest says {shard.Sha256} (corrupt or modified; --skip-checksums reads it anyway)."
            );
        }

        _verified[s] = true;
    }

    /// <inheritdoc/>
    public void ReadRows(long firstRow, Span<float> destination)
    {
        Ranges.Check(this, firstRow, destination.Length);
        long row = firstRow;
        int offset = 0;
        while (offset < destination.Length)
        {
            int s = Array.BinarySearch(_starts, row);
            s = s >= 0 ? s : ~s - 1;
            while (_starts[s + 1] <= row)
            {
                s++;
            }

            long inShard = row - _starts[s];
            int take = (int)Math.Min((destination.Length - offset) / Dim, _shards[s].Rows - inShard);
            EnsureVerified(s);
            _shards[s].ReadRows(inShard, destination.Slice(offset, take * Dim));
            offset += take * Dim;
            row += take;
        }
    }

    /// <summary>Lower-case hex SHA-256 of a file.</summary>
    public static string Sha256Of(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var s in _shards)
        {
            s.Dispose();
        }
    }
}

/// <summary>
/// Writes an activation cache: rows are appended, shards of at most <c>shardRows</c> rows are written as
/// they fill, and <c>manifest.json</c> is written atomically by <see cref="Complete"/>.
/// </summary>
public sealed class ActivationCacheWriter
{
    private readonly string _folder;
    private readonly int _dim;
    private readonly int _shardRows;
    private readonly List<float> _pending = [];
    private readonly List<ActivationShard> _shards = [];
    private readonly Dictionary<string, JsonElement> _source;

    /// <summary>Starts a cache in <paramref name="folder"/> (created if needed).</summary>
    public ActivationCacheWriter(
        string folder,
        int dim,
        int shardRows = 1 << 16,
        IReadOnlyDictionary<string, object?>? source = null
    )
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(dim);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(shardRows);
        _folder = folder;
        _dim = dim;
        _shardRows = shardRows;
        _source = (source ?? new Dictionary<string, object?>()).ToDictionary(
            kv => kv.Key,
            kv => JsonSerializer.SerializeToElement(kv.Value)
        );
        Directory.CreateDirectory(folder);
    }

    /// <summary>Rows written so far (including pending ones).</summary>
    public long Rows => _shards.Sum(s => s.Rows) + _pending.Count / _dim;

    /// <summary>Appends rows (length a multiple of d); rejects NaN/Inf.</summary>
    public void Append(ReadOnlySpan<float> rows)
    {
        if (rows.Length % _dim != 0)
        {
            throw new ArgumentException(
                $"Appended length {rows.Length} is not a multiple of d = {_dim}.",
                nameof(rows)
            );
        }

        for (int i = 0; i < rows.Length; i++)
        {
            if (!float.IsFinite(rows[i]))
            {
                throw new ArgumentException(
                    $"Row {Rows + i / _dim} has a non-finite value ({rows[i]}) at column {i % _dim}.",
                    nameof(rows)
                );
            }
        }

        foreach (var v in rows)
        {
            _pending.Add(v);
            if (_pending.Count == _shardRows * _dim)
            {
                Flush();
            }
        }
    }

    private void Flush()
    {
        if (_pending.Count == 0)
        {
            return;
        }

        var name = $"shard-{_shards.Count:D5}.npy";
        var path = Path.Combine(_folder, name);
        Npy.WriteFloats(path, [.. _pending], _pending.Count / _dim, _dim);
        _shards.Add(new ActivationShard(name, _pending.Count / _dim, ActivationCache.Sha256Of(path)));
        _pending.Clear();
    }

    /// <summary>Writes the last shard and the manifest; returns the manifest.</summary>
    public ActivationManifest Complete()
    {
        Flush();
        var manifest = new ActivationManifest
        {
            DIn = _dim,
            TotalRows = _shards.Sum(s => s.Rows),
            Source = _source,
            Shards = [.. _shards],
        };
        AtomicFile.WriteAllText(
            Path.Combine(_folder, "manifest.json"),
            JsonSerializer.Serialize(manifest, new JsonSerializerOptions { WriteIndented = true })
        );
        return manifest;
    }
}
