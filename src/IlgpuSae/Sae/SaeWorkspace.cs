using ILGPU;
using ILGPU.Runtime;
using IlgpuSae.Backends;
using IlgpuSae.Tensors;

namespace IlgpuSae.Sae;

/// <summary>
/// The device buffers of one batch size: what an <see cref="SaeArchitecture"/> reads and writes during a
/// forward and backward pass. B = batch rows, d = input width, M = dictionary size, S = the family's
/// <see cref="SaeArchitecture.ReconstructionRows"/>; row-major throughout.
/// </summary>
public sealed class SaeWorkspace : IDisposable
{
    private readonly List<DeviceTensor> _owned = [];
    private readonly Dictionary<string, DeviceTensor> _scratch = new(StringComparer.Ordinal);
    private readonly SaeDevice _device;

    internal SaeWorkspace(SparseAutoencoder sae, int batch)
    {
        Batch = batch;
        _device = sae.Device;
        int d = sae.DIn,
            m = sae.DSae;
        Stack = sae.Config.Architecture.ReconstructionRows;
        bool second = sae.Config.Architecture.EncoderMatrices(sae.Config).Count > 1;
        int stacked = Stack * batch;
        DeviceTensor Own(int r, int c, string name)
        {
            var t = _device.Allocate(r, c, name);
            _owned.Add(t);
            return t;
        }

        Xc = Own(batch, d, "x_centred");
        U = Own(batch, m, "U");
        Um = second ? Own(batch, m, "U_mag") : U;
        FA = Own(stacked, m, "F_A");
        F = FA.View.SliceRows(0, batch);
        A = Stack > 1 ? FA.View.SliceRows(batch, batch) : F;
        Xhat = Own(stacked, d, "x_hat");
        Delta = Own(stacked, d, "delta");
        PhiPsi = Own(stacked, m, "phi_psi");
        Phi = PhiPsi.View.SliceRows(0, batch);
        Psi = Stack > 1 ? PhiPsi.View.SliceRows(batch, batch) : Phi;
        DU = Own(batch, m, "dU");
        DUm = second ? Own(batch, m, "dU_mag") : DU;
        ColumnSums = Own(1, 3 * m, "column_sums");
        DecoderNorms = Own(1, m, "decoder_norms");
        RowTmp = Own(1, 4 * batch, "row_tmp");
    }

    /// <summary>Rows B.</summary>
    public int Batch { get; }

    /// <summary>Reconstructions per row S (1, or 2 with an auxiliary reconstruction).</summary>
    public int Stack { get; }

    /// <summary>The centred input x − b_dec [B, d] (used when the SAE subtracts b_dec).</summary>
    public MatrixView Xc { get; }

    /// <summary>Encoder product x̃·W_enc [B, M].</summary>
    public MatrixView U { get; }

    /// <summary>Second encoder product x̃·W_mag [B, M] for families with two encoder matrices; else
    /// <see cref="U"/>.</summary>
    public MatrixView Um { get; }

    /// <summary>The stacked feature rows [S·B, M]: F, then the auxiliary activations.</summary>
    public DeviceTensor FA { get; }

    /// <summary>Features f [B, M].</summary>
    public MatrixView F { get; }

    /// <summary>Auxiliary activations [B, M] (rows B…2B of <see cref="FA"/>) when S = 2; else
    /// <see cref="F"/>.</summary>
    public MatrixView A { get; }

    /// <summary>Stacked reconstructions [S·B, d].</summary>
    public DeviceTensor Xhat { get; }

    /// <summary>Stacked scaled residuals Δ = c·(2/B)(X̂ − X) [S·B, d].</summary>
    public DeviceTensor Delta { get; }

    /// <summary>Stacked [Φ; Ψ] = Δ·W_decᵀ [S·B, M].</summary>
    public DeviceTensor PhiPsi { get; }

    /// <summary>Φ = ∂L/∂f through the main reconstruction [B, M].</summary>
    public MatrixView Phi { get; }

    /// <summary>Ψ = ∂L/∂a through the auxiliary reconstruction [B, M] when S = 2; else
    /// <see cref="Phi"/>.</summary>
    public MatrixView Psi { get; }

    /// <summary>∂L/∂U [B, M].</summary>
    public MatrixView DU { get; }

    /// <summary>∂L/∂Um [B, M] for families with two encoder matrices; else <see cref="DU"/>.</summary>
    public MatrixView DUm { get; }

    /// <summary>Column sums [3·M]: Σ_b dU, Σ_b dUm, Σ_b of the penalised rows.</summary>
    public DeviceTensor ColumnSums { get; }

    /// <summary>Decoder row norms ‖W_dec[i]‖ [M] (filled when the penalty is decoder-norm
    /// weighted).</summary>
    public DeviceTensor DecoderNorms { get; }

    internal DeviceTensor RowTmp { get; }

    /// <summary>The input rows x [B, d] of the latest pass through this workspace.</summary>
    public MatrixView Input { get; internal set; }

    /// <summary>Whether the latest pass is a training pass (<see cref="SparseAutoencoder.ComputeGradients"/>)
    /// rather than inference: BatchTopK selects over the batch only when training.</summary>
    public bool Training { get; internal set; }

    /// <summary>The objective of the latest training pass (null after an inference pass).</summary>
    public SaeLossOptions? Loss { get; internal set; }

    /// <summary>
    /// A family's own device buffer of this batch size, allocated on first use under
    /// <paramref name="name"/> and kept with the workspace (AuxK codes, Matryoshka prefixes …).
    /// </summary>
    /// <exception cref="InvalidOperationException">The name is in use with another shape.</exception>
    public DeviceTensor Scratch(string name, int rows, int cols)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        if (_scratch.TryGetValue(name, out var t))
        {
            return t.Rows == rows && t.Cols == cols
                ? t
                : throw new InvalidOperationException(
                    $"Scratch '{name}' is [{t.Rows}, {t.Cols}], asked for [{rows}, {cols}]."
                );
        }

        t = _device.Allocate(rows, cols, name);
        _scratch[name] = t;
        _owned.Add(t);
        return t;
    }

    internal MemoryBuffer1D<int, Stride1D.Dense> RowIdx { get; private set; } = null!;

    internal MemoryBuffer1D<int, Stride1D.Dense> RowCount { get; private set; } = null!;

    /// <summary>Feature i's active rows, <c>ColIdx[i·B …]</c> (a view into <see cref="ColLists"/>).</summary>
    internal ArrayView<int> ColIdx { get; private set; }

    /// <summary>Feature i's number of active rows (the first M ints of <see cref="ColLists"/>).</summary>
    internal ArrayView<int> ColCount { get; private set; }

    /// <summary>The column lists in one buffer, counts first: <c>[colCount (M) | colIdx (M·B)]</c>, for
    /// kernels that take them as one argument.</summary>
    internal ArrayView<int> ColLists => _colLists!.View;

    private MemoryBuffer1D<int, Stride1D.Dense>? _colLists;

    /// <summary>The column lists of the sparse path (<see cref="ColLists"/>) when the latest step took it;
    /// otherwise a one-element placeholder (a kernel with an unused index argument still needs a valid
    /// buffer).</summary>
    internal ArrayView<int> ColumnLists(bool sparse)
    {
        if (sparse)
        {
            return ColLists;
        }

        _noIndex ??= _device.Accelerator.Allocate1D<int>(1);
        return _noIndex.View;
    }

    private MemoryBuffer1D<int, Stride1D.Dense>? _noIndex;

    /// <summary>The AuxK codes' per-row lists (<c>[B·M]</c>, row b's at <c>b·M</c>) on the sparse
    /// path.</summary>
    internal ArrayView<int> AuxRowIdx { get; private set; }

    /// <summary>The AuxK codes' per-row counts [B].</summary>
    internal ArrayView<int> AuxRowCount { get; private set; }

    /// <summary>The AuxK codes' per-feature lists (<c>[M·B]</c>, feature i's at <c>i·B</c>).</summary>
    internal ArrayView<int> AuxColIdx { get; private set; }

    /// <summary>The AuxK codes' per-feature counts [M].</summary>
    internal ArrayView<int> AuxColCount { get; private set; }

    private MemoryBuffer1D<int, Stride1D.Dense>? _auxLists;

    /// <summary>Allocates the AuxK index lists of the sparse path on first use (one buffer:
    /// <c>[row counts (B) | row lists (B·M) | column counts (M) | column lists (M·B)]</c>).</summary>
    internal void EnsureAuxSparseBuffers(int m)
    {
        if (_auxLists is not null)
        {
            return;
        }

        long bm = (long)Batch * m;
        _auxLists = _device.Accelerator.Allocate1D<int>(Batch + bm + m + bm);
        var all = _auxLists.View;
        AuxRowCount = all.SubView(0, Batch);
        AuxRowIdx = all.SubView(Batch, bm);
        AuxColCount = all.SubView(Batch + bm, m);
        AuxColIdx = all.SubView(Batch + bm + m, bm);
    }

    /// <summary>Allocates the index lists of the sparse path on first use (B·M entries each way: no overflow
    /// possible).</summary>
    internal void EnsureSparseBuffers(int m)
    {
        if (RowIdx is not null)
        {
            return;
        }

        var acc = _device.Accelerator;
        RowIdx = acc.Allocate1D<int>((long)Batch * m);
        RowCount = acc.Allocate1D<int>(Batch);
        _colLists = acc.Allocate1D<int>(m + (long)Batch * m);
        ColCount = _colLists.View.SubView(0, m);
        ColIdx = _colLists.View.SubView(m, (long)Batch * m);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _owned.ForEach(t => t.Dispose());
        RowIdx?.Dispose();
        RowCount?.Dispose();
        _colLists?.Dispose();
        _noIndex?.Dispose();
        _auxLists?.Dispose();
    }
}
