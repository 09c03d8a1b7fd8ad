using ILGPU;
using ILGPU.Runtime;
using IlgpuSae.Backends;

namespace IlgpuSae.Tensors;

/// <summary>A float32 matrix that owns its device memory. Dispose it to free the memory.</summary>
public sealed class DeviceTensor : IDisposable
{
    private readonly MemoryBuffer1D<float, Stride1D.Dense> _buffer;

    internal DeviceTensor(SaeDevice device, int rows, int cols, string? name)
    {
        if (rows <= 0 || cols <= 0)
        {
            throw new ArgumentException(
                $"Tensor {name ?? ""} must have positive dimensions, got [{rows}, {cols}]."
            );
        }

        Device = device;
        _buffer = device.Accelerator.Allocate1D<float>((long)rows * cols);
        View = new MatrixView(_buffer.View, rows, cols, name);
    }

    /// <summary>The device that holds the memory.</summary>
    public SaeDevice Device { get; }

    /// <summary>The tensor as a matrix view.</summary>
    public MatrixView View { get; }

    /// <summary>The raw values as a 1-D view.</summary>
    public ArrayView<float> Data => View.Data;

    /// <summary>Number of rows.</summary>
    public int Rows => View.Rows;

    /// <summary>Number of columns.</summary>
    public int Cols => View.Cols;

    /// <summary>Views the given range of rows.</summary>
    public MatrixView SliceRows(int start, int count) => View.SliceRows(start, count);

    /// <summary>Copies row-major host values into the tensor.</summary>
    /// <exception cref="ArgumentException">The array length is not Rows × Cols.</exception>
    public void CopyFrom(float[] values)
    {
        ArgumentNullException.ThrowIfNull(values);
        if (values.Length != View.Length)
        {
            throw new ArgumentException(
                $"{View.Describe()} needs {View.Length} values, got {values.Length}.",
                nameof(values)
            );
        }

        _buffer.View.CopyFromCPU(Device.Stream, values);
        Device.Synchronize();
    }

    /// <summary>Copies the tensor to a new host array (row-major); waits for queued work first.</summary>
    public float[] ToArray()
    {
        Device.Synchronize();
        var result = new float[View.Length];
        _buffer.View.CopyToCPU(Device.Stream, result);
        Device.Synchronize();
        return result;
    }

    /// <summary>Implicit conversion to the tensor's view.</summary>
    public static implicit operator MatrixView(DeviceTensor tensor) => tensor?.View ?? default;

    /// <summary>The tensor's view (named alternative to the implicit conversion).</summary>
    public MatrixView ToMatrixView() => View;

    /// <inheritdoc/>
    public void Dispose() => _buffer.Dispose();
}
