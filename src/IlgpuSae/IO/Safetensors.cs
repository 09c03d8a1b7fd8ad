using System.IO.MemoryMappedFiles;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace IlgpuSae.IO;

/// <summary>Name, type, shape and byte range of one tensor in a safetensors file.</summary>
/// <param name="Name">Tensor name.</param>
/// <param name="DType">Element type.</param>
/// <param name="Shape">Dimensions (empty for a scalar).</param>
/// <param name="Begin">Start offset within the data section.</param>
/// <param name="End">End offset (exclusive) within the data section.</param>
public sealed record SafetensorsEntry(string Name, TensorDType DType, long[] Shape, long Begin, long End)
{
    /// <summary>Number of elements.</summary>
    /// <exception cref="InvalidDataException">The product of the dimensions overflows.</exception>
    public long Count => SizeMath.ElementCount(Shape, $"safetensors tensor '{Name}'");

    /// <summary>The shape as <c>[a, b]</c>.</summary>
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";
}

/// <summary>
/// Reads a <c>.safetensors</c> file (8-byte little-endian header length, JSON header, data) through a memory
/// map. The whole header is validated on open: JSON syntax, known dtypes, non-negative shapes, byte ranges
/// that match the shapes, lie inside the file and do not overlap. Any violation is an
/// <see cref="InvalidDataException"/> naming the file and the problem.
/// </summary>
public sealed class SafetensorsFile : IDisposable
{
    private const long MaxHeader = 100L * 1024 * 1024;
    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly long _dataStart;
    private readonly Dictionary<string, SafetensorsEntry> _entries;

    /// <summary>Opens and validates <paramref name="path"/>.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is truncated or its header is invalid.</exception>
    public SafetensorsFile(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        Path = path;
        var info = new FileInfo(path);
        if (!info.Exists)
        {
            throw new FileNotFoundException($"No safetensors file at {path}.", path);
        }

        long length = info.Length;
        if (length < 8)
        {
            throw Bad($"is {length} bytes long; a safetensors file starts with an 8-byte header length");
        }

        byte[] header;
        using (var stream = File.OpenRead(path))
        {
            Span<byte> lenBytes = stackalloc byte[8];
            stream.ReadExactly(lenBytes);
            long headerLength = BitConverter.ToInt64(lenBytes);
            if (headerLength <= 0 || headerLength > MaxHeader || headerLength > length - 8)
            {
                throw Bad(
                    $"declares a header of {headerLength} bytes but the file holds {length - 8} after the length field (truncated or not safetensors)"
                );
            }

            header = new byte[headerLength];
            stream.ReadExactly(header);
        }

        _dataStart = 8 + header.Length;
        long dataLength = length - _dataStart;
        (_entries, Metadata) = ParseHeader(header, dataLength);
        if (dataLength > 0)
        {
            _map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            _view = _map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
        }
    }

    /// <summary>The file path.</summary>
    public string Path { get; }

    /// <summary>The optional <c>__metadata__</c> string map.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>The tensors, by name.</summary>
    public IReadOnlyDictionary<string, SafetensorsEntry> Entries => _entries;

    /// <summary>Finds a tensor.</summary>
    /// <exception cref="KeyNotFoundException">No tensor has that name; the message lists the
    /// names.</exception>
    public SafetensorsEntry this[string name] =>
        _entries.TryGetValue(name, out var e)
            ? e
            : throw new KeyNotFoundException(
                $"{Path} has no tensor '{name}'. Tensors: {string.Join(", ", _entries.Keys.Order(StringComparer.Ordinal))}."
            );

    /// <summary>Reads a whole floating-point tensor as float32.</summary>
    public float[] ReadFloats(string name)
    {
        var e = this[name];
        var result = new float[SizeMath.ArrayLength(e.Count, $"{Path}: tensor '{name}'")];
        ReadFloats(e, 0, result);
        return result;
    }

    /// <summary>Reads <paramref name="destination"/>.Length elements starting at element
    /// <paramref name="start"/>.</summary>
    public unsafe void ReadFloats(SafetensorsEntry entry, long start, Span<float> destination)
    {
        ArgumentNullException.ThrowIfNull(entry);
        if (start < 0 || start + destination.Length > entry.Count)
        {
            throw new ArgumentOutOfRangeException(
                nameof(start),
                $"Elements [{start}, {start + destination.Length}) are outside {entry.Name}{entry.ShapeText}."
            );
        }

        if (destination.Length == 0)
        {
            return;
        }

        byte* basePtr = null;
        _view!.SafeMemoryMappedViewHandle.AcquirePointer(ref basePtr);
        try
        {
            long offset = _view.PointerOffset + _dataStart + entry.Begin + start * entry.DType.Size();
            var bytes = new ReadOnlySpan<byte>(
                basePtr + offset,
                checked(destination.Length * entry.DType.Size())
            );
            TensorDTypes.ToFloat32(bytes, entry.DType, destination);
        }
        finally
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
        }
    }

    /// <summary>Reads a whole integer tensor as int64.</summary>
    public unsafe long[] ReadInt64(string name)
    {
        var e = this[name];
        var result = new long[SizeMath.ArrayLength(e.Count, $"{Path}: tensor '{name}'")];
        if (result.Length == 0)
        {
            return result;
        }

        byte* basePtr = null;
        _view!.SafeMemoryMappedViewHandle.AcquirePointer(ref basePtr);
        try
        {
            var bytes = new ReadOnlySpan<byte>(
                basePtr + _view.PointerOffset + _dataStart + e.Begin,
                checked((int)(e.End - e.Begin))
            );
            for (int i = 0; i < result.Length; i++)
            {
                result[i] = e.DType switch
                {
                    TensorDType.I32 => BitConverter.ToInt32(bytes.Slice(i * 4, 4)),
                    TensorDType.I64 => BitConverter.ToInt64(bytes.Slice(i * 8, 8)),
                    _ => throw new InvalidDataException(
                        $"{Path}: tensor '{name}' is {e.DType}, not an integer tensor."
                    ),
                };
            }
        }
        finally
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
        }

        return result;
    }

    private (Dictionary<string, SafetensorsEntry>, IReadOnlyDictionary<string, string>) ParseHeader(
        byte[] header,
        long dataLength
    )
    {
        JsonObject root;
        try
        {
            root =
                JsonNode.Parse(Encoding.UTF8.GetString(header).TrimEnd(' ', '\0')) as JsonObject
                ?? throw Bad("has a header that is not a JSON object");
        }
        catch (JsonException e)
        {
            throw Bad($"has a header that is not valid JSON ({e.Message})");
        }

        var entries = new Dictionary<string, SafetensorsEntry>(StringComparer.Ordinal);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, node) in root)
        {
            if (name == "__metadata__")
            {
                if (node is not JsonObject meta)
                {
                    throw Bad("has a __metadata__ entry that is not an object");
                }

                foreach (var (k, v) in meta)
                {
                    metadata[k] =
                        v is JsonValue jv && jv.TryGetValue<string>(out var str)
                            ? str
                            : throw Bad($"has non-string metadata '{k}'");
                }

                continue;
            }

            if (node is not JsonObject t)
            {
                throw Bad($"describes tensor '{name}' with something other than an object");
            }

            var dtypeText =
                t["dtype"] is JsonValue dv && dv.TryGetValue<string>(out var dts)
                    ? dts
                    : throw Bad($"gives tensor '{name}' no dtype");
            if (!Enum.TryParse<TensorDType>(dtypeText, ignoreCase: false, out var dtype))
            {
                throw Bad(
                    $"gives tensor '{name}' the unsupported dtype '{dtypeText}' (supported: F32, F16, BF16, F64, I32, I64)"
                );
            }

            var shape = (t["shape"] as JsonArray ?? throw Bad($"gives tensor '{name}' no shape"))
                .Select(v =>
                    v is JsonValue sv && sv.TryGetValue<long>(out var dim) && dim >= 0
                        ? dim
                        : throw Bad($"gives tensor '{name}' an invalid dimension")
                )
                .ToArray();
            var offsets = t["data_offsets"] as JsonArray;
            if (offsets is null || offsets.Count != 2 || offsets.Any(o => o is not JsonValue))
            {
                throw Bad($"gives tensor '{name}' no valid data_offsets");
            }

            if (
                !((JsonValue)offsets[0]!).TryGetValue<long>(out var begin)
                || !((JsonValue)offsets[1]!).TryGetValue<long>(out var end)
            )
            {
                throw Bad($"gives tensor '{name}' data_offsets that are not 64-bit integers");
            }

            var entry = new SafetensorsEntry(name, dtype, shape, begin, end);
            long expected;
            try
            {
                expected = SizeMath.ByteCount(SizeMath.ElementCount(shape, name), dtype.Size(), name);
            }
            catch (InvalidDataException)
            {
                throw Bad($"gives tensor '{name}' a shape too large to address");
            }

            if (begin < 0 || end < begin || end - begin != expected)
            {
                throw Bad(
                    $"gives tensor '{name}' {dtype}{entry.ShapeText} the byte range [{begin}, {end}), but that shape needs {expected} bytes"
                );
            }

            if (end > dataLength)
            {
                throw Bad(
                    $"places tensor '{name}' at bytes [{begin}, {end}) but the data section has only {dataLength} bytes (truncated file?)"
                );
            }

            entries[name] = entry;
        }

        SafetensorsEntry? previous = null;
        foreach (var e in entries.Values.Where(e => e.End > e.Begin).OrderBy(e => e.Begin))
        {
            if (previous is not null && e.Begin < previous.End)
            {
                throw Bad(
                    $"has overlapping tensors '{previous.Name}' [{previous.Begin}, {previous.End}) and '{e.Name}' [{e.Begin}, {e.End})"
                );
            }

            previous = e;
        }

        return (entries, metadata);
    }

    private InvalidDataException Bad(string problem) => new($"{Path} {problem}.");

    /// <inheritdoc/>
    public void Dispose()
    {
        _view?.Dispose();
        _map?.Dispose();
    }
}

/// <summary>One tensor to write.</summary>
/// <param name="Name">Tensor name.</param>
/// <param name="Shape">Dimensions.</param>
/// <param name="Floats">float32 data (exactly one of the data arrays is set).</param>
/// <param name="Ints">int32 data.</param>
/// <param name="Longs">int64 data.</param>
public sealed record TensorToWrite(
    string Name,
    long[] Shape,
    float[]? Floats = null,
    int[]? Ints = null,
    long[]? Longs = null
)
{
    internal TensorDType DType =>
        Floats is not null ? TensorDType.F32
        : Ints is not null ? TensorDType.I32
        : TensorDType.I64;

    internal long Count => Floats?.LongLength ?? Ints?.LongLength ?? Longs!.LongLength;
}

/// <summary>Writes safetensors files atomically (a temporary file renamed into place).</summary>
public static class SafetensorsWriter
{
    /// <summary>Writes <paramref name="tensors"/> (in name order, as the Python library does) with optional
    /// metadata.</summary>
    /// <exception cref="ArgumentException">A tensor's data length does not match its shape, or names
    /// repeat.</exception>
    public static void Write(
        string path,
        IEnumerable<TensorToWrite> tensors,
        IReadOnlyDictionary<string, string>? metadata = null
    )
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(tensors);
        var list = tensors.OrderBy(t => t.Name, StringComparer.Ordinal).ToList();
        if (list.Select(t => t.Name).Distinct(StringComparer.Ordinal).Count() != list.Count)
        {
            throw new ArgumentException("Tensor names must be unique.", nameof(tensors));
        }

        var header = new JsonObject();
        if (metadata is { Count: > 0 })
        {
            var meta = new JsonObject();
            foreach (var (k, v) in metadata)
            {
                meta[k] = v;
            }

            header["__metadata__"] = meta;
        }

        long offset = 0;
        foreach (var t in list)
        {
            long count = t.Shape.Aggregate(1L, (a, b) => a * b);
            if (count != t.Count || (t.Floats is null && t.Ints is null && t.Longs is null))
            {
                throw new ArgumentException(
                    $"Tensor '{t.Name}' has shape [{string.Join(", ", t.Shape)}] ({count} values) but {t.Count} values were given."
                );
            }

            long bytes = count * t.DType.Size();
            header[t.Name] = new JsonObject
            {
                ["dtype"] = t.DType.ToString(),
                ["shape"] = new JsonArray(t.Shape.Select(d => (JsonNode)d).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + bytes),
            };
            offset += bytes;
        }

        var headerBytes = Encoding.UTF8.GetBytes(header.ToJsonString());
        int padded = (headerBytes.Length + 7) / 8 * 8;
        AtomicFile.Write(
            path,
            stream =>
            {
                stream.Write(BitConverter.GetBytes((long)padded));
                stream.Write(headerBytes);
                for (int i = headerBytes.Length; i < padded; i++)
                {
                    stream.WriteByte((byte)' ');
                }

                foreach (var t in list)
                {
                    if (t.Floats is not null)
                    {
                        stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(t.Floats.AsSpan()));
                    }
                    else if (t.Ints is not null)
                    {
                        stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(t.Ints.AsSpan()));
                    }
                    else
                    {
                        stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(t.Longs!.AsSpan()));
                    }
                }
            }
        );
    }
}
