using ILGPU;

namespace IlgpuSae.Tensors;

/// <summary>A row-major float32 matrix on a device: a view of <see cref="Rows"/>×<see cref="Cols"/>
/// values.</summary>
/// <remarks>A vector is a 1×n matrix. A default instance is a null view; operations reject it.</remarks>
public readonly struct MatrixView
{
    /// <summary>Wraps <paramref name="data"/> as a <paramref name="rows"/>×<paramref name="cols"/>
    /// matrix.</summary>
    /// <exception cref="ArgumentException">The view's length is not rows×cols, or a dimension is not
    /// positive.</exception>
    public MatrixView(ArrayView<float> data, int rows, int cols, string? name = null)
    {
        if (rows <= 0 || cols <= 0)
        {
            throw new ArgumentException(
                $"Matrix {name ?? "view"} must have positive dimensions, got [{rows}, {cols}]."
            );
        }

        if (data.IsValid && data.Length != (long)rows * cols)
        {
            throw new ArgumentException(
                $"Matrix {name ?? "view"} of shape [{rows}, {cols}] needs {(long)rows * cols} values, the view has {data.Length}."
            );
        }

        Data = data;
        Rows = rows;
        Cols = cols;
        Name = name;
    }

    /// <summary>The underlying values, row-major.</summary>
    public ArrayView<float> Data { get; }

    /// <summary>Number of rows.</summary>
    public int Rows { get; }

    /// <summary>Number of columns.</summary>
    public int Cols { get; }

    /// <summary>A name used in error messages, if any.</summary>
    public string? Name { get; }

    /// <summary>Rows × Cols.</summary>
    public long Length => (long)Rows * Cols;

    /// <summary>Whether the view points at device memory (a default instance does not).</summary>
    public bool IsValid => Data.IsValid && Data.Length == Length && Length > 0;

    /// <summary>The shape as <c>name[rows, cols]</c>, for messages.</summary>
    public string Describe() => $"{Name ?? "matrix"}[{Rows}, {Cols}]";

    /// <summary>Views the given range of rows.</summary>
    public MatrixView SliceRows(int start, int count)
    {
        if (start < 0 || count <= 0 || start + count > Rows)
        {
            throw new ArgumentOutOfRangeException(
                nameof(start),
                $"Rows [{start}, {start + count}) are outside {Describe()}."
            );
        }

        return new MatrixView(Data.SubView((long)start * Cols, (long)count * Cols), count, Cols, Name);
    }

    /// <inheritdoc/>
    public override string ToString() => Describe();
}
