using System.IO.Compression;
using System.IO.MemoryMappedFiles;
using System.Text;
using System.Text.RegularExpressions;

namespace IlgpuSae.IO;

/// <summary>The header of a NumPy <c>.npy</c> array.</summary>
/// <param name="DType">Element type (little-endian).</param>
/// <param name="Shape">Dimensions.</param>
/// <param name="DataOffset">Byte offset of the data.</param>
public sealed record NpyHeader(TensorDType DType, long[] Shape, long DataOffset)
{
    /// <summary>Number of elements.</summary>
    /// <exception cref="InvalidDataException">The product of the dimensions overflows.</exception>
    public long Count => SizeMath.ElementCount(Shape, "npy header");
}

/// <summary>
/// Reads and writes NumPy <c>.npy</c> files (format versions 1–3, C order, little-endian
/// <c>f2</c>/<c>f4</c>/<c>f8</c>/<c>i4</c>/<c>i8</c>) and reads <c>.npz</c> archives of them (e.g. Gemma
/// Scope
/// <c>params.npz</c>). Headers are validated; a bad file gives an <see cref="InvalidDataException"/>.
/// </summary>
public static partial class Npy
{
    private static readonly byte[] Magic = [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    [GeneratedRegex(@"'descr'\s*:\s*'(?<d>[^']+)'")]
    private static partial Regex DescrRegex();

    [GeneratedRegex(@"'fortran_order'\s*:\s*(?<f>True|False)")]
    private static partial Regex FortranRegex();

    [GeneratedRegex(@"'shape'\s*:\s*\((?<s>[^)]*)\)")]
    private static partial Regex ShapeRegex();

    /// <summary>Parses the header at the start of <paramref name="stream"/>; <paramref name="name"/> is used
    /// in errors.</summary>
    public static NpyHeader ReadHeader(Stream stream, string name, long? totalLength = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        try
        {
            return ReadHeaderCore(stream, name, totalLength);
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException($"{name}: truncated .npy header.", e);
        }
    }

    private static NpyHeader ReadHeaderCore(Stream stream, string name, long? totalLength)
    {
        var prefix = new byte[8];
        if (
            stream.ReadAtLeast(prefix, 8, throwOnEndOfStream: false) < 8
            || !prefix.AsSpan(0, 6).SequenceEqual(Magic)
        )
        {
            throw new InvalidDataException($"{name} is not a .npy file (bad magic).");
        }

        int major = prefix[6];
        int headerLength;
        long offset;
        if (major == 1)
        {
            var len = new byte[2];
            stream.ReadExactly(len);
            headerLength = BitConverter.ToUInt16(len);
            offset = 10;
        }
        else if (major is 2 or 3)
        {
            var len = new byte[4];
            stream.ReadExactly(len);
            uint declared = BitConverter.ToUInt32(len);
            headerLength = declared > 1 << 20 ? -1 : (int)declared; // refused below
            offset = 12;
        }
        else
        {
            throw new InvalidDataException($"{name}: unsupported .npy format version {major}.");
        }

        if (headerLength <= 0 || headerLength > 1 << 20)
        {
            throw new InvalidDataException($"{name}: invalid .npy header length (more than 1 MiB, or zero).");
        }

        var headerBytes = new byte[headerLength];
        try
        {
            stream.ReadExactly(headerBytes);
        }
        catch (EndOfStreamException)
        {
            throw new InvalidDataException($"{name}: truncated .npy header.");
        }

        var header = Encoding.Latin1.GetString(headerBytes);
        var descr = DescrRegex().Match(header);
        var fortran = FortranRegex().Match(header);
        var shapeMatch = ShapeRegex().Match(header);
        if (!descr.Success || !fortran.Success || !shapeMatch.Success)
        {
            throw new InvalidDataException(
                $"{name}: the .npy header lacks descr, fortran_order or shape: {header.Trim()}"
            );
        }

        if (fortran.Groups["f"].Value == "True")
        {
            throw new InvalidDataException(
                $"{name}: Fortran-ordered arrays are not supported; save with C order (np.ascontiguousarray)."
            );
        }

        var dtype = descr.Groups["d"].Value switch
        {
            "<f4" => TensorDType.F32,
            "<f2" => TensorDType.F16,
            "<f8" => TensorDType.F64,
            "<i4" => TensorDType.I32,
            "<i8" => TensorDType.I64,
            var d => throw new InvalidDataException(
                $"{name}: unsupported .npy dtype '{d}' (supported: <f4, <f2, <f8, <i4, <i8)."
            ),
        };
        var shape = shapeMatch
            .Groups["s"]
            .Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(s =>
                long.TryParse(s.TrimEnd('L'), out var v) && v >= 0
                    ? v
                    : throw new InvalidDataException($"{name}: invalid shape in .npy header: {header.Trim()}")
            )
            .ToArray();
        var result = new NpyHeader(dtype, shape, offset + headerLength);
        long needed = SizeMath.ByteCount(SizeMath.ElementCount(shape, name), dtype.Size(), name);
        if (totalLength is long total && total - result.DataOffset < needed)
        {
            throw new InvalidDataException(
                $"{name}: shape [{string.Join(", ", shape)}] of {dtype} needs {needed} bytes of data, the file has {total - result.DataOffset} (truncated?)."
            );
        }

        return result;
    }

    /// <summary>Reads a whole floating-point array as float32, with its shape.</summary>
    public static (float[] Data, long[] Shape) ReadFloats(
        Stream stream,
        string name,
        long? totalLength = null
    )
    {
        var header = ReadHeader(stream, name, totalLength);
        if (!header.DType.IsFloat())
        {
            throw new InvalidDataException($"{name}: expected a floating-point array, got {header.DType}.");
        }

        var bytes = new byte[
            SizeMath.ArrayLength(SizeMath.ByteCount(header.Count, header.DType.Size(), name), name)
        ];
        try
        {
            stream.ReadExactly(bytes);
        }
        catch (EndOfStreamException)
        {
            throw new InvalidDataException($"{name}: truncated .npy data.");
        }

        var data = new float[header.Count];
        TensorDTypes.ToFloat32(bytes, header.DType, data);
        return (data, header.Shape);
    }

    /// <summary>Reads every array of an <c>.npz</c> archive as float32.</summary>
    public static Dictionary<string, (float[] Data, long[] Shape)> ReadNpz(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        var result = new Dictionary<string, (float[], long[])>(StringComparer.Ordinal);
        try
        {
            using var zip = ZipFile.OpenRead(path);
            foreach (
                var entry in zip.Entries.Where(e => e.FullName.EndsWith(".npy", StringComparison.Ordinal))
            )
            {
                using var s = entry.Open();
                result[entry.FullName[..^4]] = ReadFloats(s, $"{path}:{entry.FullName}", entry.Length);
            }
        }
        catch (InvalidDataException e) when (!e.Message.Contains(path, StringComparison.Ordinal))
        {
            throw new InvalidDataException($"{path} is not a valid .npz archive: {e.Message}", e);
        }

        return result;
    }

    /// <summary>Writes a float32 array as <c>.npy</c> (version 1, C order), atomically.</summary>
    public static void WriteFloats(string path, float[] data, params long[] shape)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(shape);
        if (shape.Aggregate(1L, (a, b) => a * b) != data.LongLength)
        {
            throw new ArgumentException(
                $"Shape [{string.Join(", ", shape)}] does not hold {data.Length} values.",
                nameof(shape)
            );
        }

        var shapeText = shape.Length == 1 ? $"({shape[0]},)" : "(" + string.Join(", ", shape) + ")";
        var dict = $"{{'descr': '<f4', 'fortran_order': False, 'shape': {shapeText}, }}";
        int total = 10 + dict.Length + 1;
        int padded = (total + 63) / 64 * 64;
        var header = dict + new string(' ', padded - total) + "\n";
        AtomicFile.Write(
            path,
            stream =>
            {
                stream.Write(Magic);
                stream.WriteByte(1);
                stream.WriteByte(0);
                stream.Write(BitConverter.GetBytes((ushort)header.Length));
                stream.Write(Encoding.Latin1.GetBytes(header));
                stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan()));
            }
        );
    }
}

/// <summary>A memory-mapped 2-D <c>.npy</c> array of activations [N, d].</summary>
internal sealed unsafe class MappedNpy : IDisposable
{
    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;

    public MappedNpy(string path)
    {
        long length = new FileInfo(path).Length;
        using (var stream = File.OpenRead(path))
        {
            Header = Npy.ReadHeader(stream, path, length);
        }

        if (!Header.DType.IsFloat() || Header.Shape.Length != 2)
        {
            throw new InvalidDataException(
                $"{path}: activations must be a 2-D float array [N, d], got {Header.DType} [{string.Join(", ", Header.Shape)}]."
            );
        }

        _map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        _view = _map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
    }

    public NpyHeader Header { get; }

    public void Read(long firstElement, Span<float> destination)
    {
        byte* basePtr = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref basePtr);
        try
        {
            int size = Header.DType.Size();
            var bytes = new ReadOnlySpan<byte>(
                basePtr + _view.PointerOffset + Header.DataOffset + firstElement * size,
                checked(destination.Length * size)
            );
            TensorDTypes.ToFloat32(bytes, Header.DType, destination);
        }
        finally
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
        }
    }

    public void Dispose()
    {
        _view.Dispose();
        _map.Dispose();
    }
}
