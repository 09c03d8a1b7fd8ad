using ILGPU;
using ILGPU.Runtime;
using IlgpuSae.Backends;

namespace IlgpuSae.Tensors;

/// <summary>The name, shape and place of one tensor in a <see cref="ParameterLayout"/>.</summary>
/// <param name="Name">The tensor's name (SAELens names, e.g. <c>W_enc</c>).</param>
/// <param name="Rows">Rows.</param>
/// <param name="Cols">Columns (1×n for vectors).</param>
/// <param name="Offset">Offset of the first value within each section of the flat buffer.</param>
public sealed record ParameterEntry(string Name, int Rows, int Cols, long Offset)
{
    /// <summary>Number of values.</summary>
    public long Length => (long)Rows * Cols;
}

/// <summary>
/// Names and shapes of a model's parameters, packed into one flat range. Each tensor starts at a
/// multiple of <see cref="Alignment"/> floats (256 bytes) so that views stay aligned for coalesced access.
/// </summary>
public sealed class ParameterLayout
{
    /// <summary>Alignment of every tensor, in floats.</summary>
    public const int Alignment = 64;

    private readonly List<ParameterEntry> _entries = [];
    private readonly Dictionary<string, ParameterEntry> _byName = new(StringComparer.Ordinal);

    /// <summary>The tensors in the order they were added.</summary>
    public IReadOnlyList<ParameterEntry> Entries => _entries;

    /// <summary>Length of one section (parameters, gradients, each moment) including alignment
    /// padding.</summary>
    public long Length { get; private set; }

    /// <summary>Adds a tensor; returns this layout for chaining.</summary>
    /// <exception cref="ArgumentException">The name is taken or a dimension is not positive.</exception>
    public ParameterLayout Add(string name, int rows, int cols)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        if (rows <= 0 || cols <= 0)
        {
            throw new ArgumentException(
                $"Parameter '{name}' must have positive dimensions, got [{rows}, {cols}].",
                nameof(rows)
            );
        }

        if (_byName.ContainsKey(name))
        {
            throw new ArgumentException($"Parameter '{name}' is already in the layout.", nameof(name));
        }

        var entry = new ParameterEntry(name, rows, cols, Length);
        _entries.Add(entry);
        _byName[name] = entry;
        Length += ((long)rows * cols + Alignment - 1) / Alignment * Alignment;
        return this;
    }

    /// <summary>Finds a tensor by name.</summary>
    /// <exception cref="KeyNotFoundException">No tensor has that name; the message lists the
    /// names.</exception>
    public ParameterEntry this[string name] =>
        _byName.TryGetValue(name, out var e)
            ? e
            : throw new KeyNotFoundException(
                $"No parameter named '{name}'. Parameters: {string.Join(", ", _entries.Select(x => x.Name))}."
            );
}

/// <summary>Which copy of the parameters a view refers to.</summary>
public enum ParameterSection
{
    /// <summary>The parameter values.</summary>
    Values = 0,

    /// <summary>The gradients (one flat range, ready to be all-reduced across processes).</summary>
    Gradients = 1,

    /// <summary>Adam's first moment.</summary>
    FirstMoment = 2,

    /// <summary>Adam's second moment.</summary>
    SecondMoment = 3,
}

/// <summary>
/// Parameters, gradients and Adam moments of a model in one flat device allocation (llm.c style): four
/// sections of <see cref="ParameterLayout.Length"/> floats, each tensor a named view into each section.
/// One optimizer launch, one gradient all-reduce and one checkpoint write cover the whole model.
/// </summary>
public sealed class ParameterBuffer : IDisposable
{
    private readonly MemoryBuffer1D<float, Stride1D.Dense> _buffer;

    /// <summary>Allocates the buffer on <paramref name="device"/> and zeroes it.</summary>
    public ParameterBuffer(SaeDevice device, ParameterLayout layout)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(layout);
        if (layout.Length == 0)
        {
            throw new ArgumentException("The parameter layout is empty.", nameof(layout));
        }

        Device = device;
        Layout = layout;
        _buffer = device.Accelerator.Allocate1D<float>(4 * layout.Length);
        device.Ops.Fill(_buffer.View, 0f);
        device.Synchronize();
    }

    /// <summary>The device holding the buffer.</summary>
    public SaeDevice Device { get; }

    /// <summary>The names and shapes.</summary>
    public ParameterLayout Layout { get; }

    /// <summary>The whole allocation: values, gradients, first and second moments, one after the
    /// other.</summary>
    public ArrayView<float> All => _buffer.View;

    /// <summary>All parameter values as one flat view.</summary>
    public ArrayView<float> Values => Section(ParameterSection.Values);

    /// <summary>All gradients as one flat view.</summary>
    public ArrayView<float> Gradients => Section(ParameterSection.Gradients);

    /// <summary>All first moments as one flat view.</summary>
    public ArrayView<float> FirstMoments => Section(ParameterSection.FirstMoment);

    /// <summary>All second moments as one flat view.</summary>
    public ArrayView<float> SecondMoments => Section(ParameterSection.SecondMoment);

    /// <summary>One section as a flat view.</summary>
    public ArrayView<float> Section(ParameterSection section) =>
        _buffer.View.SubView((int)section * Layout.Length, Layout.Length);

    /// <summary>The named tensor in the given section.</summary>
    public MatrixView Get(string name, ParameterSection section = ParameterSection.Values)
    {
        var e = Layout[name];
        return new MatrixView(
            Section(section).SubView(e.Offset, e.Length),
            e.Rows,
            e.Cols,
            $"{name}.{section}"
        );
    }

    /// <summary>The named parameter's values.</summary>
    public MatrixView this[string name] => Get(name);

    /// <summary>The named parameter's gradient.</summary>
    public MatrixView Gradient(string name) => Get(name, ParameterSection.Gradients);

    /// <summary>Zeroes every gradient (one kernel launch).</summary>
    /// <remarks>A fill kernel, not ILGPU's memset: PoCL 6 rejects ILGPU's memset of a sub-view
    /// (CLException).</remarks>
    public void ZeroGradients() => Device.Ops.Fill(Gradients, 0f);

    /// <summary>Copies one section to the host (padding included).</summary>
    public float[] Download(ParameterSection section = ParameterSection.Values)
    {
        Device.Synchronize();
        var host = new float[Layout.Length];
        Section(section).CopyToCPU(Device.Stream, host);
        Device.Synchronize();
        return host;
    }

    /// <summary>Copies a whole section from the host.</summary>
    /// <exception cref="ArgumentException">The array length is not
    /// <see cref="ParameterLayout.Length"/>.</exception>
    public void Upload(float[] values, ParameterSection section = ParameterSection.Values)
    {
        ArgumentNullException.ThrowIfNull(values);
        if (values.Length != Layout.Length)
        {
            throw new ArgumentException(
                $"Section {section} holds {Layout.Length} floats, got {values.Length}.",
                nameof(values)
            );
        }

        Section(section).CopyFromCPU(Device.Stream, values);
        Device.Synchronize();
    }

    /// <inheritdoc/>
    public void Dispose() => _buffer.Dispose();
}
