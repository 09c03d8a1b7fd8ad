using System.IO.Compression;

namespace IlgpuSae.IO;

/// <summary>
/// Opens a <c>.gz</c> file for reading and checks its end: .NET's <see cref="GZipStream"/> returns the data
/// up to a break without a word when the file is truncated, so this stream computes the CRC-32 and length
/// of what it decompressed and, at the end, compares them with the gzip trailer (the last 8 bytes). A
/// mismatch is an <see cref="InvalidDataException"/>. Files of several concatenated gzip members are not
/// supported (the trailer describes the last member only); recompress them as one.
/// </summary>
public sealed class CheckedGzipStream : Stream
{
    private static readonly uint[] Table = BuildTable();
    private readonly string _path;
    private readonly FileStream _file;
    private readonly GZipStream _gzip;
    private uint _crc = 0xFFFFFFFFu;
    private long _length;
    private bool _checked;

    /// <summary>Opens <paramref name="path"/>.</summary>
    public CheckedGzipStream(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        _path = path;
        _file = File.OpenRead(path);
        _gzip = new GZipStream(_file, CompressionMode.Decompress);
    }

    /// <inheritdoc/>
    public override bool CanRead => true;

    /// <inheritdoc/>
    public override bool CanSeek => false;

    /// <inheritdoc/>
    public override bool CanWrite => false;

    /// <inheritdoc/>
    public override long Length => throw new NotSupportedException();

    /// <inheritdoc/>
    public override long Position
    {
        get => _length;
        set => throw new NotSupportedException();
    }

    /// <inheritdoc/>
    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    /// <inheritdoc/>
    public override int Read(Span<byte> buffer)
    {
        int n;
        try
        {
            n = _gzip.Read(buffer);
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"{_path} is not a valid gzip file: {e.Message}", e);
        }

        if (n == 0 && buffer.Length > 0)
        {
            CheckTrailer();
            return 0;
        }

        uint crc = _crc;
        foreach (var b in buffer[..n])
        {
            crc = Table[(crc ^ b) & 0xFF] ^ (crc >> 8);
        }

        _crc = crc;
        _length += n;
        return n;
    }

    private void CheckTrailer()
    {
        if (_checked)
        {
            return;
        }

        _checked = true;
        using var tail = File.OpenRead(_path);
        if (tail.Length < 18)
        {
            throw new InvalidDataException($"{_path} is truncated: {tail.Length} bytes is not a gzip file.");
        }

        Span<byte> trailer = stackalloc byte[8];
        tail.Seek(-8, SeekOrigin.End);
        tail.ReadExactly(trailer);
        uint crc = BitConverter.ToUInt32(trailer[..4]);
        uint size = BitConverter.ToUInt32(trailer[4..]);
        uint actualCrc = ~_crc;
        if (crc != actualCrc || size != (uint)_length)
        {
            throw new InvalidDataException(
                $"{_path} is truncated or corrupt: {_length} bytes decompressed (CRC-32 {actualCrc:x8}) but the gzip trailer says {size} bytes mod 2^32 (CRC-32 {crc:x8}). Concatenated gzip members are not supported; recompress as one."
            );
        }
    }

    private static uint[] BuildTable()
    {
        var table = new uint[256];
        for (uint i = 0; i < 256; i++)
        {
            uint c = i;
            for (int k = 0; k < 8; k++)
            {
                c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            }

            table[i] = c;
        }

        return table;
    }

    /// <inheritdoc/>
    public override void Flush() { }

    /// <inheritdoc/>
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    /// <inheritdoc/>
    public override void SetLength(long value) => throw new NotSupportedException();

    /// <inheritdoc/>
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _gzip.Dispose();
            _file.Dispose();
        }

        base.Dispose(disposing);
    }
}
