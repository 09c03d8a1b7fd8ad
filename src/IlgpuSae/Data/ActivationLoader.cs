namespace IlgpuSae.Data;

/// <summary>SplitMix64: a tiny, fully specified generator for host-side shuffles (same sequence
/// everywhere).</summary>
public struct SplitMix64
{
    private ulong _state;

    /// <summary>Seeds the generator.</summary>
    public SplitMix64(ulong seed) => _state = seed;

    /// <summary>Mixes several values into one seed.</summary>
    public static ulong Mix(params ulong[] values)
    {
        ArgumentNullException.ThrowIfNull(values);
        var g = new SplitMix64(0x243F6A8885A308D3UL);
        ulong h = 0;
        foreach (var v in values)
        {
            g._state ^= v;
            h ^= g.Next();
        }

        return h;
    }

    /// <summary>The next 64 random bits.</summary>
    public ulong Next()
    {
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>A uniform integer in [0, n).</summary>
    public int NextInt(int n) => (int)(Next() % (ulong)n);

    /// <summary>A uniform double in [0, 1).</summary>
    public double NextDouble() => (Next() >> 11) * (1.0 / (1UL << 53));
}

/// <summary>
/// Deterministic, resumable batches from an <see cref="IActivationSource"/> larger than RAM.
/// Rows are grouped into blocks of <see cref="BlockRows"/>; each epoch visits the blocks in a seeded random
/// order, <c>ceil(bufferRows / BlockRows)</c> blocks at a time are loaded into a shuffle buffer whose rows
/// are
/// permuted, and batches are consecutive rows of that stream. The stream depends only on (seed, source,
/// range, rank, world size), so a run resumes exactly from <see cref="Cursor"/> (rows consumed), and data can
/// be sharded across processes by block (rank, world size).
/// </summary>
public sealed class ActivationLoader
{
    /// <summary>Rows per block.</summary>
    public const int BlockRows = 1024;

    private readonly IActivationSource _source;
    private readonly long _start;
    private readonly long _count;
    private readonly ulong _seed;
    private readonly bool _shuffle;
    private readonly int _blocksPerFill;
    private readonly int _rank;
    private readonly int _worldSize;
    private float[] _buffer = [];
    private int[] _order = [];
    private int _bufferRows;
    private int _position;
    private long _epoch;
    private int _fill;
    private int[] _myBlocks = [];

    /// <summary>Creates a loader over rows [<paramref name="start"/>, <paramref name="start"/> +
    /// <paramref name="count"/>).</summary>
    public ActivationLoader(
        IActivationSource source,
        int batchSize,
        ulong seed,
        bool shuffle = true,
        int shuffleBufferRows = 1 << 16,
        long start = 0,
        long count = -1,
        int rank = 0,
        int worldSize = 1
    )
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(worldSize);
        if (rank < 0 || rank >= worldSize)
        {
            throw new ArgumentOutOfRangeException(
                nameof(rank),
                $"Rank {rank} is outside world size {worldSize}."
            );
        }

        count = count < 0 ? source.Rows - start : count;
        if (start < 0 || count <= 0 || start + count > source.Rows)
        {
            throw new ArgumentException(
                $"Rows [{start}, {start + count}) are not inside {source.Description} ({source.Rows} rows)."
            );
        }

        _source = source;
        BatchSize = batchSize;
        _start = start;
        _count = count;
        _seed = seed;
        _shuffle = shuffle;
        _blocksPerFill = Math.Max(1, (Math.Max(shuffleBufferRows, batchSize) + BlockRows - 1) / BlockRows);
        _rank = rank;
        _worldSize = worldSize;
        if (BlockCount < worldSize)
        {
            throw new ArgumentException(
                $"{count} rows make {BlockCount} blocks of {BlockRows}, fewer than the {worldSize} processes."
            );
        }

        Seek(0);
    }

    /// <summary>Rows per batch.</summary>
    public int BatchSize { get; }

    /// <summary>Activation width.</summary>
    public int Dim => _source.Dim;

    /// <summary>Rows consumed so far (the resumable position).</summary>
    public long Cursor { get; private set; }

    /// <summary>Completed passes over this process's share of the data.</summary>
    public long Epoch => _epoch;

    private int BlockCount => (int)((_count + BlockRows - 1) / BlockRows);

    /// <summary>Repositions the stream to <paramref name="cursor"/> rows consumed.</summary>
    public void Seek(long cursor)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(cursor);
        _epoch = 0;
        long remaining = cursor;
        while (true)
        {
            StartEpoch();
            long epochRows = _myBlocks.Sum(b => (long)BlockLength(b));
            if (remaining < epochRows)
            {
                break;
            }

            remaining -= epochRows;
            _epoch++;
        }

        _fill = 0;
        while (true)
        {
            long fillRows = FillBlocks(_fill).Sum(b => (long)BlockLength(b));
            if (remaining < fillRows)
            {
                break;
            }

            remaining -= fillRows;
            _fill++;
        }

        LoadFill();
        _position = (int)remaining;
        Cursor = cursor;
    }

    /// <summary>Fills <paramref name="destination"/> (BatchSize × Dim) with the next batch.</summary>
    /// <exception cref="InvalidDataException">A row holds NaN or ±Inf; the message names the source
    /// row.</exception>
    public void NextBatch(Span<float> destination)
    {
        int d = Dim;
        if (destination.Length != BatchSize * d)
        {
            throw new ArgumentException(
                $"The batch needs {BatchSize * d} floats, got {destination.Length}.",
                nameof(destination)
            );
        }

        for (int r = 0; r < BatchSize; r++)
        {
            if (_position == _bufferRows)
            {
                _fill++;
                if (_fill * _blocksPerFill >= _myBlocks.Length)
                {
                    _epoch++;
                    StartEpoch();
                    _fill = 0;
                }

                LoadFill();
            }

            int row = _order[_position++];
            var src = _buffer.AsSpan(row * d, d);
            for (int j = 0; j < d; j++)
            {
                if (!float.IsFinite(src[j]))
                {
                    throw new InvalidDataException(
                        $"{_source.Description}: row {SourceRow(row)} has a non-finite value ({src[j]}) at column {j}."
                    );
                }
            }

            src.CopyTo(destination.Slice(r * d, d));
            Cursor++;
        }
    }

    private long SourceRow(int bufferRow)
    {
        // Map a buffer row back to its source row for error messages.
        long before = 0;
        foreach (var b in FillBlocks(_fill))
        {
            int len = BlockLength(b);
            if (bufferRow < before + len)
            {
                return _start + (long)b * BlockRows + (bufferRow - before);
            }

            before += len;
        }

        return -1;
    }

    private int BlockLength(int block) => (int)Math.Min(BlockRows, _count - (long)block * BlockRows);

    private void StartEpoch()
    {
        var blocks = Enumerable.Range(0, BlockCount).ToArray();
        if (_shuffle)
        {
            var rng = new SplitMix64(SplitMix64.Mix(_seed, 0xB10C, (ulong)_epoch));
            for (int i = blocks.Length - 1; i > 0; i--)
            {
                int j = rng.NextInt(i + 1);
                (blocks[i], blocks[j]) = (blocks[j], blocks[i]);
            }
        }

        _myBlocks = blocks.Where((_, i) => i % _worldSize == _rank).ToArray();
    }

    private IEnumerable<int> FillBlocks(int fill) =>
        _myBlocks.Skip(fill * _blocksPerFill).Take(_blocksPerFill);

    private void LoadFill()
    {
        int d = Dim;
        var blocks = FillBlocks(_fill).ToArray();
        _bufferRows = blocks.Sum(BlockLength);
        if (_buffer.Length < _bufferRows * d)
        {
            _buffer = new float[_bufferRows * d];
        }

        int offset = 0;
        foreach (var b in blocks)
        {
            int len = BlockLength(b);
            _source.ReadRows(_start + (long)b * BlockRows, _buffer.AsSpan(offset * d, len * d));
            offset += len;
        }

        _order = Enumerable.Range(0, _bufferRows).ToArray();
        if (_shuffle)
        {
            var rng = new SplitMix64(SplitMix64.Mix(_seed, 0x5EED, (ulong)_epoch, (ulong)_fill));
            for (int i = _order.Length - 1; i > 0; i--)
            {
                int j = rng.NextInt(i + 1);
                (_order[i], _order[j]) = (_order[j], _order[i]);
            }
        }

        _position = 0;
    }
}
