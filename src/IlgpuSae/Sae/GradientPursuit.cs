using ILGPU;
using ILGPU.Runtime;
using IlgpuSae.Backends;
using IlgpuSae.Kernels;
using IlgpuSae.Tensors;

namespace IlgpuSae.Sae;

/// <summary>
/// Inference-time optimisation (Rajamanoharan et al. 2024, App. A): reconstructs activations from a trained
/// decoder alone by
/// non-negative gradient pursuit, <c>min_{α ≥ 0} ‖(x − b_dec) − αD‖²</c> with at most k atoms, one atom
/// added per iteration (the largest inner product with the residual, not its absolute value), then an
/// exact line search along the gradient restricted to the support and clipping at zero ([DL]
/// <c>grad_pursuit.py</c>). The decoder rows are normalised to unit norm first (the reconstruction
/// <c>αD̂ + b_dec</c> does not depend on that scaling). The encoder is not used.
/// </summary>
public sealed class GradientPursuit : IDisposable
{
    private readonly DeviceTensor _dictionary;
    private readonly DeviceTensor _bias;
    private Workspace? _ws;

    /// <summary>Uses the decoder (W_dec, b_dec) of <paramref name="sae"/>.</summary>
    public GradientPursuit(SparseAutoencoder sae)
    {
        ArgumentNullException.ThrowIfNull(sae);
        Device = sae.Device;
        Atoms = sae.DSae;
        DIn = sae.DIn;
        _dictionary = Device.Allocate(Atoms, DIn, "D");
        Device.Ops.Copy(sae.Parameters["W_dec"].Data, _dictionary.Data);
        Device.Ops.NormalizeRows(_dictionary, 1e-12f);
        _bias = Device.Allocate(1, DIn, "b_dec");
        Device.Ops.Copy(sae.Parameters["b_dec"].Data, _bias.Data);
    }

    /// <summary>Uses a dictionary given on the host (rows are atoms; normalised here).</summary>
    public GradientPursuit(SaeDevice device, float[] dictionary, int atoms, int dIn, float[]? bias = null)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(dictionary);
        if (
            atoms <= 0
            || dIn <= 0
            || dictionary.Length != atoms * dIn
            || (bias is not null && bias.Length != dIn)
        )
        {
            throw new ArgumentException(
                $"The dictionary must be [{atoms}, {dIn}] and the bias [{dIn}] (got {dictionary.Length} and {bias?.Length} values)."
            );
        }

        Device = device;
        Atoms = atoms;
        DIn = dIn;
        _dictionary = device.Upload(dictionary, atoms, dIn, "D");
        device.Ops.NormalizeRows(_dictionary, 1e-12f);
        _bias = device.Upload(bias ?? new float[dIn], 1, dIn, "b_dec");
    }

    /// <summary>The device.</summary>
    public SaeDevice Device { get; }

    /// <summary>Dictionary size M.</summary>
    public int Atoms { get; }

    /// <summary>Activation width d.</summary>
    public int DIn { get; }

    /// <summary>Mean number of non-zero coefficients per row of the last <see cref="Reconstruct"/>.</summary>
    public double LastL0 { get; private set; } = double.NaN;

    /// <summary>Non-zero coefficients of each row of the last <see cref="Reconstruct"/>.</summary>
    public IReadOnlyList<int> LastRowL0 { get; private set; } = [];

    /// <summary>
    /// Runs <paramref name="k"/> iterations on <paramref name="x"/> [B, d] and returns the reconstruction
    /// <c>αD̂ + b_dec</c> [B, d] (a view valid until the next call). At most k coefficients per row are
    /// non-zero,
    /// and none is negative.
    /// </summary>
    public MatrixView Reconstruct(MatrixView x, int k)
    {
        var ws = Solve(x, k);
        var xhat = ws.Xhat.SliceRows(0, x.Rows);
        Device.Ops.PursuitDecode(
            _bias.Data,
            ws.Idx.View,
            ws.Coef.Data,
            ws.Count.View,
            _dictionary.Data,
            xhat.Data,
            DIn,
            k,
            baseIsRowVector: true,
            sign: 1f
        );
        var coef = ws.Coef.ToArray();
        var count = new int[x.Rows];
        ws.Count.View.SubView(0, x.Rows).CopyToCPU(Device.Stream, count);
        Device.Synchronize();
        var rowL0 = new int[x.Rows];
        for (int b = 0; b < x.Rows; b++)
        {
            for (int t = 0; t < count[b]; t++)
            {
                rowL0[b] += coef[b * k + t] > 0f ? 1 : 0;
            }
        }

        LastRowL0 = rowL0;
        LastL0 = rowL0.Average();
        return xhat;
    }

    /// <summary>
    /// Host form for tests and tools: the dense coefficients α [rows, M] (over the unit-norm atoms) after
    /// <paramref name="k"/> iterations.
    /// </summary>
    public float[] Coefficients(float[] x, int rows, int k)
    {
        ArgumentNullException.ThrowIfNull(x);
        using var tx = Device.Upload(x, rows, DIn, "x");
        var ws = Solve(tx, k);
        var coef = ws.Coef.ToArray();
        var idx = new int[ws.Idx.Length];
        var count = new int[ws.Count.Length];
        ws.Idx.View.CopyToCPU(Device.Stream, idx);
        ws.Count.View.CopyToCPU(Device.Stream, count);
        Device.Synchronize();
        var alpha = new float[rows * Atoms];
        for (int b = 0; b < rows; b++)
        {
            for (int t = 0; t < count[b]; t++)
            {
                alpha[b * Atoms + idx[b * k + t]] = coef[b * k + t];
            }
        }

        return alpha;
    }

    private Workspace Solve(MatrixView x, int k)
    {
        if (!x.IsValid || x.Cols != DIn)
        {
            throw new ArgumentException($"Gradient pursuit: x must be [B, {DIn}], got {x}.");
        }

        if (k < 1 || k > Atoms)
        {
            throw new ArgumentException(
                $"Gradient pursuit: the target L0 k must be in [1, {Atoms}], got {k}."
            );
        }

        if (_ws is null || _ws.Rows != x.Rows || _ws.K != k)
        {
            _ws?.Dispose();
            _ws = new Workspace(Device, x.Rows, DIn, Atoms, k);
        }

        var ws = _ws;
        var ops = Device.Ops;
        ops.MapBroadcastRows<Subtract>(x, _bias.Data, ws.Xc);
        ws.Count.View.CopyFromCPU(Device.Stream, new int[x.Rows]);
        ops.Fill(ws.Coef.Data, 0f);
        for (int t = 0; t < k; t++)
        {
            ops.PursuitDecode(
                ws.Xc.Data,
                ws.Idx.View,
                ws.Coef.Data,
                ws.Count.View,
                _dictionary.Data,
                ws.R.Data,
                DIn,
                k,
                baseIsRowVector: false,
                sign: -1f
            );
            ops.MatMul(ws.R, _dictionary, ws.C, GemmLayout.NT);
            ops.PursuitSelect(
                ws.C.Data,
                ws.Idx.View,
                ws.Coef.Data,
                ws.Count.View,
                ws.G.Data,
                x.Rows,
                Atoms,
                k
            );
            ops.PursuitStep(
                ws.R.Data,
                ws.Idx.View,
                ws.Coef.Data,
                ws.Count.View,
                ws.G.Data,
                _dictionary.Data,
                x.Rows,
                DIn,
                k
            );
        }

        return ws;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _ws?.Dispose();
        _dictionary.Dispose();
        _bias.Dispose();
    }

    private sealed class Workspace : IDisposable
    {
        public Workspace(SaeDevice device, int rows, int d, int m, int k)
        {
            Rows = rows;
            K = k;
            Xc = device.Allocate(rows, d, "x_centred");
            R = device.Allocate(rows, d, "residual");
            C = device.Allocate(rows, m, "inner_products");
            Coef = device.Allocate(rows, k, "coef");
            G = device.Allocate(rows, k, "grad");
            Xhat = device.Allocate(rows, d, "reconstruction");
            Idx = device.Accelerator.Allocate1D<int>(rows * k);
            Count = device.Accelerator.Allocate1D<int>(rows);
        }

        public int Rows { get; }

        public int K { get; }

        public DeviceTensor Xc { get; }

        public DeviceTensor R { get; }

        public DeviceTensor C { get; }

        public DeviceTensor Coef { get; }

        public DeviceTensor G { get; }

        public DeviceTensor Xhat { get; }

        public MemoryBuffer1D<int, Stride1D.Dense> Idx { get; }

        public MemoryBuffer1D<int, Stride1D.Dense> Count { get; }

        public void Dispose()
        {
            foreach (var t in new[] { Xc, R, C, Coef, G, Xhat })
            {
                t.Dispose();
            }

            Idx.Dispose();
            Count.Dispose();
        }
    }
}
