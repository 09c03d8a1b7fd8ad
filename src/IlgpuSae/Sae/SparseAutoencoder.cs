using ILGPU;
using ILGPU.Runtime;
using IlgpuSae.Backends;
using IlgpuSae.Kernels;
using IlgpuSae.Tensors;
using IlgpuSae.Training;

namespace IlgpuSae.Sae;

/// <summary>How the squared reconstruction error is normalised (spec §2.2, §10.3).</summary>
public enum ReconstructionScale
{
    /// <summary><c>Σ_j (x − x̂)_j²</c>, mean over the batch: dictionary_learning and SAELens (default).</summary>
    Sum,

    /// <summary><c>Σ_j (x − x̂)_j² / d</c>: the paper's own infrastructure (its λ values assume this).</summary>
    MeanOverDim,
}

/// <summary>The training objective's settings.</summary>
public sealed record SaeLossOptions
{
    /// <summary>Sparsity coefficient λ (may be warmed up by the trainer).</summary>
    public float L1Coefficient { get; init; }

    /// <summary>
    /// Weight each feature's sparsity penalty by its decoder row norm ‖W_dec[i]‖ (Anthropic April update,
    /// SAELens). The paper keeps decoder rows at unit norm instead, so weights are 1 (default: false).
    /// </summary>
    public bool DecoderNormWeightedL1 { get; init; }

    /// <summary>
    /// Gated only: stop gradients into W_dec and b_dec through the auxiliary reconstruction (the paper's
    /// <c>sg(W_dec)</c>, default true). False is SAELens's behaviour and the paper's first ablation.
    /// </summary>
    public bool FreezeAuxDecoder { get; init; } = true;

    /// <summary>Normalisation of the squared error.</summary>
    public ReconstructionScale Scale { get; init; } = ReconstructionScale.Sum;
}

/// <summary>How a training step runs after the dense encoder product.</summary>
public enum TrainingPath
{
    /// <summary>Sparse when the fraction of active (row, feature) pairs is at most <see cref="SparseAutoencoder.SparseDensityThreshold"/>, else dense.</summary>
    Auto,

    /// <summary>Dense matrix products for the decoder, [Φ; Ψ] and the weight gradients.</summary>
    Dense,

    /// <summary>Index lists of the active features; decoder, [Φ; Ψ] and weight gradients cost O(B·L0·d).</summary>
    Sparse,
}

/// <summary>Loss terms of one batch (batch means).</summary>
/// <param name="Mse">Reconstruction term <c>c·Σ_j (x − x̂)²</c> averaged over the batch.</param>
/// <param name="Sparsity">Sparsity term <c>λ·Σ_i w_i·a_i</c> (a = ReLU(π_gate) for gated, f for standard).</param>
/// <param name="Aux">Gated auxiliary reconstruction term (0 for standard).</param>
/// <param name="L0">Mean number of active features per row.</param>
public sealed record LossBreakdown(double Mse, double Sparsity, double Aux, double L0)
{
    /// <summary>The total loss.</summary>
    public double Total => Mse + Sparsity + Aux;
}

/// <summary>
/// A sparse autoencoder on a device: standard, gated or JumpReLU, with parameters, gradients and Adam
/// moments in one <see cref="ParameterBuffer"/> (tensor names and shapes as SAELens stores them:
/// <c>W_enc [d_in, d_sae]</c>, <c>W_dec [d_sae, d_in]</c>, <c>b_dec [d_in]</c>, and <c>b_enc</c> or
/// <c>b_gate</c>/<c>b_mag</c>/<c>r_mag</c> or <c>threshold</c> [d_sae]). Forward and backward run as ILGPU
/// kernels: one dense encoder GEMM shared by the gate and magnitude paths, one decoder GEMM for the
/// stacked reconstructions [X̂; X̂_aux], one GEMM for the stacked [Φ; Ψ], and fused column kernels for the
/// element-wise backward and bias gradients.
/// </summary>
public sealed class SparseAutoencoder : IDisposable
{
    private readonly Dictionary<int, Workspace> _workspaces = [];

    private SparseAutoencoder(SaeDevice device, SaeConfig config)
    {
        config.Validate();
        Device = device;
        Config = config;
        Parameters = new ParameterBuffer(device, LayoutFor(config));
        SparseDensityThreshold = DefaultSparseDensityThreshold(device);
    }

    /// <summary>The device holding the parameters.</summary>
    public SaeDevice Device { get; }

    /// <summary>Shape and semantics.</summary>
    public SaeConfig Config { get; }

    /// <summary>Parameters, gradients and Adam moments.</summary>
    public ParameterBuffer Parameters { get; }

    /// <summary>Input width d.</summary>
    public int DIn => Config.DIn;

    /// <summary>
    /// When set, <see cref="ComputeGradients"/> synchronises the device after each phase and adds the phase's wall time
    /// here (for benchmarks: the synchronisations themselves cost a little). Null (the default) adds no synchronisation.
    /// </summary>
    public StepProfile? Profile { get; set; }

    /// <summary>How training steps run after the encoder (default <see cref="TrainingPath.Auto"/>).</summary>
    public TrainingPath Path { get; set; } = TrainingPath.Auto;

    /// <summary>
    /// With <see cref="TrainingPath.Auto"/>, the largest fraction of active (row, feature) pairs (gate open for gated,
    /// f &gt; 0 for standard) for which the sparse path is used. Early in training most gates are open and the dense
    /// products win. Defaults to <see cref="DefaultSparseDensityThreshold"/> for the device.
    /// </summary>
    public double SparseDensityThreshold { get; set; }

    /// <summary>
    /// Where the sparse step stops paying off, as measured by <c>perf/run-sae.sh</c> (perf/results/sae-step-2026-12-01-*):
    /// on ILGPU's CPU accelerator, whose matrix products run at ~7 GFLOP/s, the sparse step is still 2–3× faster at
    /// 5 % density, so 0.10; on PoCL the dense products run at 25–40 % of OpenBLAS and the sparse gated step is
    /// 1.8–2.1× faster at 1–2 % but 1.2× (512×4096) or 0.7× (768×16384) at 5 %, so 0.03 for OpenCL and CUDA (not yet
    /// measured on a GPU).
    /// </summary>
    public static double DefaultSparseDensityThreshold(SaeDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        return device.Backend == BackendKind.Cpu ? 0.10 : 0.03;
    }

    /// <summary>Whether the latest <see cref="ComputeGradients"/> took the sparse path.</summary>
    public bool LastStepWasSparse { get; private set; }

    /// <summary>Fraction of active (row, feature) pairs in the latest sparse-capable step (NaN when not measured).</summary>
    public double LastDensity { get; private set; } = double.NaN;

    /// <summary>Dictionary size M.</summary>
    public int DSae => Config.DSae;

    private bool IsGated => Config.Architecture == SaeArchitecture.Gated;

    /// <summary>The parameter names of <paramref name="config"/>'s architecture, in file order.</summary>
    public static IReadOnlyList<string> TensorNames(SaeConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return LayoutFor(config).Entries.Select(e => e.Name).ToArray();
    }

    internal static ParameterLayout LayoutFor(SaeConfig c)
    {
        var layout = new ParameterLayout().Add("W_enc", c.DIn, c.DSae);
        switch (c.Architecture)
        {
            case SaeArchitecture.Standard:
                layout.Add("b_enc", 1, c.DSae);
                break;
            case SaeArchitecture.Gated:
                if (c.Untied)
                {
                    layout.Add("W_mag", c.DIn, c.DSae);
                }

                layout.Add("b_gate", 1, c.DSae).Add("b_mag", 1, c.DSae);
                if (!c.Untied)
                {
                    layout.Add("r_mag", 1, c.DSae);
                }

                break;
            default:
                layout.Add("b_enc", 1, c.DSae).Add("threshold", 1, c.DSae);
                break;
        }

        return layout.Add("W_dec", c.DSae, c.DIn).Add("b_dec", 1, c.DIn);
    }

    /// <summary>Allocates an SAE with all parameters zero (load or initialise them next).</summary>
    public static SparseAutoencoder CreateEmpty(SaeDevice device, SaeConfig config)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(config);
        return new SparseAutoencoder(device, config);
    }

    /// <summary>
    /// Creates an SAE with seeded random initialisation (dictionary_learning / SAELens): decoder rows are
    /// random Gaussian directions scaled to <paramref name="decoderInitNorm"/> (1 = unit norm, the paper's
    /// constraint; SAELens and the April update use 0.1), <c>W_enc = W_decᵀ</c> (and <c>W_mag = W_enc</c> when
    /// untied), all biases and <c>r_mag</c> zero, JumpReLU thresholds <paramref name="initialThreshold"/>.
    /// </summary>
    public static SparseAutoencoder Create(SaeDevice device, SaeConfig config, ulong seed, float decoderInitNorm = 1f, float initialThreshold = 0.001f)
    {
        var sae = CreateEmpty(device, config);
        try
        {
            if (!(decoderInitNorm > 0f) || !float.IsFinite(decoderInitNorm))
            {
                throw new ArgumentException($"decoderInitNorm must be positive and finite, got {decoderInitNorm}.", nameof(decoderInitNorm));
            }

            var ops = device.Ops;
            var wDec = sae.Parameters["W_dec"];
            ops.FillNormal(wDec.Data, 0f, 1f, seed, stream: 1);
            ops.NormalizeRows(wDec, 1e-12f);
            if (decoderInitNorm != 1f)
            {
                ops.Map(wDec.Data, wDec.Data, new Scale(decoderInitNorm));
            }

            ops.Transpose(wDec, sae.Parameters["W_enc"]);
            if (config.Untied)
            {
                ops.Copy(sae.Parameters["W_enc"].Data, sae.Parameters["W_mag"].Data);
            }

            if (config.Architecture == SaeArchitecture.JumpRelu)
            {
                ops.Fill(sae.Parameters["threshold"].Data, initialThreshold);
            }

            device.Synchronize();
            return sae;
        }
        catch
        {
            sae.Dispose();
            throw;
        }
    }

    /// <summary>Copies every parameter from <paramref name="other"/> (same configuration shapes).</summary>
    public void CopyParametersFrom(SparseAutoencoder other)
    {
        ArgumentNullException.ThrowIfNull(other);
        if (other.Parameters.Layout.Length != Parameters.Layout.Length ||
            !TensorNames(other.Config).SequenceEqual(TensorNames(Config)))
        {
            throw new ArgumentException("The SAEs have different parameter layouts.", nameof(other));
        }

        Parameters.Upload(other.Parameters.Download());
    }

    // ------------------------------------------------------------------ inference

    /// <summary>Encodes rows of <paramref name="x"/> [B, d] into <paramref name="features"/> [B, M].</summary>
    public void Encode(MatrixView x, MatrixView features)
    {
        var ws = Prepare(x);
        EncodeCore(ws, x);
        Device.Ops.Copy(ws.F.Data, features.Data.IsValid && features.Rows == ws.Batch && features.Cols == DSae
            ? features.Data
            : throw new ArgumentException($"Encode: features must be [{ws.Batch}, {DSae}], got {features}."));
    }

    /// <summary>Decodes <paramref name="features"/> [B, M] into <paramref name="reconstruction"/> [B, d]: <c>f·W_dec + b_dec</c>.</summary>
    public void Decode(MatrixView features, MatrixView reconstruction)
    {
        if (features.Cols != DSae || reconstruction.Cols != DIn || features.Rows != reconstruction.Rows)
        {
            throw new ArgumentException($"Decode: features must be [B, {DSae}] and reconstruction [B, {DIn}], got {features} and {reconstruction}.");
        }

        Device.Ops.MatMul(features, Parameters["W_dec"], reconstruction, GemmLayout.NN);
        Device.Ops.MapBroadcastRows<Add>(reconstruction, Parameters["b_dec"].Data, reconstruction);
    }

    /// <summary>Encodes and decodes a batch; returns views (valid until the next call with this batch size) of the features [B, M] and reconstructions [B, d].</summary>
    public (MatrixView Features, MatrixView Reconstruction) Forward(MatrixView x)
    {
        var ws = Prepare(x);
        EncodeCore(ws, x);
        var xhat = ws.Xhat.SliceRows(0, ws.Batch);
        Device.Ops.MatMul(ws.F, Parameters["W_dec"], xhat, GemmLayout.NN);
        Device.Ops.MapBroadcastRows<Add>(xhat, Parameters["b_dec"].Data, xhat);
        return (ws.F, xhat);
    }

    /// <summary>Host convenience: features [rows, M] and reconstructions [rows, d] of row-major <paramref name="x"/> [rows, d].</summary>
    public (float[] Features, float[] Reconstruction) ForwardHost(float[] x, int rows)
    {
        using var tx = Device.Upload(x, rows, DIn, "x");
        var (f, xhat) = Forward(tx);
        Device.Synchronize();
        var features = new float[(long)rows * DSae];
        var reconstruction = new float[(long)rows * DIn];
        f.Data.CopyToCPU(Device.Stream, features);
        xhat.Data.CopyToCPU(Device.Stream, reconstruction);
        Device.Synchronize();
        return (features, reconstruction);
    }

    /// <summary>The features [B, M] of the last forward pass with batch size <paramref name="batch"/> (workspace view).</summary>
    internal MatrixView LastFeatures(int batch) => _workspaces[batch].F;

    private Workspace Prepare(MatrixView x)
    {
        if (!x.IsValid || x.Cols != DIn)
        {
            throw new ArgumentException($"Input must be [B, {DIn}] (d_in = {DIn}), got {x}.");
        }

        if (!_workspaces.TryGetValue(x.Rows, out var ws))
        {
            ws = new Workspace(this, x.Rows);
            _workspaces[x.Rows] = ws;
        }

        return ws;
    }

    /// <summary>Centres the input (if configured) and computes U, then F (and A for gated) into the workspace.</summary>
    private void EncodeCore(Workspace ws, MatrixView x)
    {
        var ops = Device.Ops;
        int b = ws.Batch, m = DSae;
        MatrixView xc = x;
        if (Config.ApplyBDecToInput)
        {
            ops.MapBroadcastRows<Subtract>(x, Parameters["b_dec"].Data, ws.Xc);
            xc = ws.Xc;
        }

        ops.MatMul(xc, Parameters["W_enc"], ws.U, GemmLayout.NN);
        switch (Config.Architecture)
        {
            case SaeArchitecture.Standard:
                ops.ReluEncode(ws.U.Data, Parameters["b_enc"].Data, ws.F.Data, m);
                break;
            case SaeArchitecture.JumpRelu:
                ops.JumpReluEncode(ws.U.Data, Parameters["b_enc"].Data, Parameters["threshold"].Data, ws.F.Data, m);
                break;
            default:
                if (Config.Untied)
                {
                    ops.MatMul(xc, Parameters["W_mag"], ws.Um, GemmLayout.NN);
                }

                ops.GatedEncode(ws.U.Data, Config.Untied ? ws.Um.Data : ws.U.Data, Parameters["b_gate"].Data, Parameters["b_mag"].Data,
                    RMagOrDummy(Parameters, ParameterSection.Values), ws.FA.Data, GatedArgsFor(b, 0f, false));
                break;
        }
    }

    /// <summary>r_mag's view, or (untied SAEs have none) b_mag's as a placeholder the kernels never touch.</summary>
    private ArrayView<float> RMagOrDummy(ParameterBuffer p, ParameterSection section) =>
        p.Get(Config.Untied ? "b_mag" : "r_mag", section).Data;

    private GatedArgs GatedArgsFor(int batch, float lambdaOverB, bool weighted) => new()
    {
        Rows = batch,
        M = DSae,
        LambdaOverB = lambdaOverB,
        UseRMag = Config.HasRMag ? 1 : 0,
        Untied = Config.Untied ? 1 : 0,
        WeightedL1 = weighted ? 1 : 0,
    };

    // ------------------------------------------------------------------ training

    /// <summary>
    /// Zeroes the gradients, then runs the training forward and backward pass on <paramref name="x"/> [B, d],
    /// leaving <c>∂L/∂θ</c> in <see cref="ParameterBuffer.Gradients"/> (spec §2.3 for standard, §3.3 for gated).
    /// Returns the loss terms when <paramref name="computeLoss"/> (one device synchronisation), else null.
    /// </summary>
    /// <exception cref="NotSupportedException">The architecture has no training path here (JumpReLU).</exception>
    public LossBreakdown? ComputeGradients(MatrixView x, SaeLossOptions options, bool computeLoss = false)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (Config.Architecture == SaeArchitecture.JumpRelu)
        {
            throw new NotSupportedException("JumpReLU SAEs are inference-only here (load, encode, export); JumpReLU training arrives with its own issue.");
        }

        var ws = Prepare(x);
        var ops = Device.Ops;
        var p = Parameters;
        int b = ws.Batch, d = DIn, m = DSae;
        float c = options.Scale == ReconstructionScale.Sum ? 1f : 1f / d;
        float lambdaOverB = options.L1Coefficient / b;
        int rows = IsGated ? 2 * b : b;
        Profile?.Start(Device);
        p.ZeroGradients();

        // Forward: U, F (and A), stacked reconstructions and residuals Δ = c·(2/B)(X̂ − X).
        EncodeCore(ws, x);
        Profile?.Mark(Device, "encoder (dense GEMM + gate)");
        var fa = ws.FA.SliceRows(0, rows);
        var xhat = ws.Xhat.SliceRows(0, rows);
        var delta = ws.Delta.SliceRows(0, rows);
        var phiPsi = ws.PhiPsi.SliceRows(0, rows);
        bool auxIntoDecoder = IsGated && !options.FreezeAuxDecoder;
        bool sparse = ChooseSparse(ws);
        Profile?.Mark(Device, "compaction");
        var sparseArgs = new SparseArgs
        {
            Rows = b, M = m, D = d, Scale = c * 2f / b, Gated = IsGated ? 1 : 0, Untied = Config.Untied ? 1 : 0,
            AuxIntoDecoder = auxIntoDecoder ? 1 : 0,
        };
        if (sparse)
        {
            ops.SparseDecode(ws.FA.Data, p["W_dec"].Data, p["b_dec"].Data, x.Data, ws.RowIdx.View, ws.RowCount.View,
                ws.Xhat.Data, ws.Delta.Data, sparseArgs);
            Profile?.Mark(Device, "decoder");
            ops.Fill(phiPsi.Data, 0f);
            ops.SparsePhiPsi(ws.Delta.Data, p["W_dec"].Data, ws.RowIdx.View, ws.RowCount.View, phiPsi.Data, sparseArgs);
        }
        else
        {
            ops.MatMul(fa, p["W_dec"], xhat, GemmLayout.NN);
            ops.Residual(xhat.Data, x.Data, p["b_dec"].Data, delta.Data, d, b, c * 2f / b);
            Profile?.Mark(Device, "decoder");

            // Backward: [Φ; Ψ] = [Δ; Δa]·W_decᵀ in one GEMM.
            ops.MatMul(delta, p["W_dec"], phiPsi, GemmLayout.NT);
        }

        Profile?.Mark(Device, "[Φ; Ψ]");

        if (options.DecoderNormWeightedL1)
        {
            ops.RowL2Norms(p["W_dec"], ws.Norms.Data);
        }

        MatrixView xc = Config.ApplyBDecToInput ? ws.Xc : x;
        var sums = ws.Sums.Data;
        if (IsGated)
        {
            ops.GatedBackward(ws.U.Data, Config.Untied ? ws.Um.Data : ws.U.Data, phiPsi.Data, p["b_gate"].Data, p["b_mag"].Data,
                RMagOrDummy(p, ParameterSection.Values), ws.Norms.Data, ws.DU.Data, Config.Untied ? ws.DUm.Data : ws.DU.Data,
                p.Gradient("b_gate").Data, p.Gradient("b_mag").Data, RMagOrDummy(p, ParameterSection.Gradients), sums,
                GatedArgsFor(b, lambdaOverB, options.DecoderNormWeightedL1));
        }
        else
        {
            ops.StandardBackward(ws.F.Data, phiPsi.Data, ws.Norms.Data, ws.DU.Data, p.Gradient("b_enc").Data, sums,
                new StandardArgs { Rows = b, M = m, LambdaOverB = lambdaOverB, WeightedL1 = options.DecoderNormWeightedL1 ? 1 : 0 });
        }

        Profile?.Mark(Device, "element-wise backward");
        int decoderRows = auxIntoDecoder ? 2 * b : b;
        if (sparse)
        {
            // dW_enc, dW_mag and dW_dec over each feature's active rows only.
            ops.SparseWeightGrad(xc.Data, ws.DU.Data, ws.DUm.Data, ws.FA.Data, ws.Delta.Data, ws.ColIdx.View, ws.ColCount.View,
                p.Gradient("W_enc").Data, Config.Untied ? p.Gradient("W_mag").Data : p.Gradient("W_enc").Data,
                p.Gradient("W_dec").Data, sparseArgs);
        }
        else
        {
            // Encoder weights: dW_enc = X̃ᵀ·dU (and dW_mag = X̃ᵀ·dUm when untied).
            ops.MatMul(xc, ws.DU, p.Gradient("W_enc"), GemmLayout.TN, 1f, 1f);
            if (Config.Untied)
            {
                ops.MatMul(xc, ws.DUm, p.Gradient("W_mag"), GemmLayout.TN, 1f, 1f);
            }

            // Decoder: dW_dec = Fᵀ·Δ (+ Aᵀ·Δa when the aux decoder is not frozen: one GEMM over the stack).
            ops.MatMul(ws.FA.SliceRows(0, decoderRows), ws.Delta.SliceRows(0, decoderRows), p.Gradient("W_dec"), GemmLayout.TN, 1f, 1f);
        }

        Profile?.Mark(Device, "weight gradients");
        if (options.DecoderNormWeightedL1)
        {
            ops.DecoderNormPenaltyGrad(p["W_dec"], sums.SubView(2L * m, m), ws.Norms.Data, p.Gradient("W_dec"), lambdaOverB);
        }

        // b_dec: output term colsum(Δ) (+ colsum(Δa) if unfrozen), input-centring term −W_enc·colsum(dU).
        ops.ReduceColumns<Sum>(ws.Delta.SliceRows(0, decoderRows), p.Gradient("b_dec").Data, accumulate: true);
        if (Config.ApplyBDecToInput)
        {
            var gbDec = new MatrixView(p.Gradient("b_dec").Data, d, 1);
            ops.MatMul(p["W_enc"], new MatrixView(sums.SubView(0, m), 1, m), gbDec, GemmLayout.NT, -1f, 1f);
            if (Config.Untied)
            {
                ops.MatMul(p["W_mag"], new MatrixView(sums.SubView(m, m), 1, m), gbDec, GemmLayout.NT, -1f, 1f);
            }
        }

        Profile?.Mark(Device, "bias gradients");
        return computeLoss ? LossTerms(ws, options, c) : null;
    }

    /// <summary>Compacts the active features and decides between the sparse and the dense path.</summary>
    private bool ChooseSparse(Workspace ws)
    {
        LastStepWasSparse = false;
        LastDensity = double.NaN;
        if (Path == TrainingPath.Dense)
        {
            return false;
        }

        int b = ws.Batch, m = DSae;
        var active = IsGated ? ws.FA.SliceRows(b, b) : ws.F;
        ws.EnsureSparseBuffers();
        var ops = Device.Ops;
        ops.CompactRows(active.Data, ws.RowIdx.View, ws.RowCount.View, b, m);
        if (Path == TrainingPath.Auto)
        {
            Device.Synchronize();
            var counts = ws.RowCount.GetAsArray1D(Device.Stream);
            LastDensity = counts.Sum(v => (double)v) / ((double)b * m);
            if (LastDensity > SparseDensityThreshold)
            {
                return false;
            }
        }

        ops.CompactColumns(active.Data, ws.ColIdx.View, ws.ColCount.View, b, m);
        LastStepWasSparse = true;
        return true;
    }

    private LossBreakdown LossTerms(Workspace ws, SaeLossOptions options, float c)
    {
        var ops = Device.Ops;
        int b = ws.Batch;
        int rows = IsGated ? 2 * b : b;
        var tmp = ws.RowTmp.Data;
        ops.ReduceRows<SumOfSquares>(ws.Delta.SliceRows(0, rows), tmp.SubView(0, rows));
        var sparse = ws.FA.SliceRows(IsGated ? b : 0, b);
        var l1 = new MatrixView(tmp.SubView(2L * b, b), b, 1);
        if (options.DecoderNormWeightedL1)
        {
            ops.MatMul(sparse, new MatrixView(ws.Norms.Data, DSae, 1), l1, GemmLayout.NN);
        }
        else
        {
            ops.ReduceRows<Sum>(sparse, l1.Data);
        }

        ops.ReduceRows<CountNonZero>(ws.F, tmp.SubView(3L * b, b));
        Device.Synchronize();
        var host = new float[4 * b];
        tmp.SubView(0, 4 * b).CopyToCPU(Device.Stream, host);
        Device.Synchronize();
        // Σ Δ² = (2c/B)²·Σ (x̂ − x)²  ⇒  c·Σ(x̂ − x)²/B = Σ Δ²·B/(4c).
        double toLoss = b / (4.0 * c);
        double mse = 0, aux = 0, sparsity = 0, l0 = 0;
        for (int r = 0; r < b; r++)
        {
            mse += host[r] * toLoss;
            if (IsGated)
            {
                aux += host[b + r] * toLoss;
            }

            sparsity += host[2 * b + r];
            l0 += host[3 * b + r];
        }

        return new LossBreakdown(mse, options.L1Coefficient * sparsity / b, aux, l0 / b);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var ws in _workspaces.Values)
        {
            ws.Dispose();
        }

        _workspaces.Clear();
        Parameters.Dispose();
    }

    /// <summary>Device buffers for one batch size.</summary>
    private sealed class Workspace : IDisposable
    {
        private readonly List<DeviceTensor> _owned = [];

        private readonly SaeDevice _device;
        private readonly int _m;

        public Workspace(SparseAutoencoder sae, int batch)
        {
            Batch = batch;
            _device = sae.Device;
            _m = sae.DSae;
            int d = sae.DIn, m = sae.DSae;
            bool gated = sae.IsGated;
            int stacked = gated ? 2 * batch : batch;
            var dev = sae.Device;
            DeviceTensor Own(int r, int c, string name)
            {
                var t = dev.Allocate(r, c, name);
                _owned.Add(t);
                return t;
            }

            Xc = Own(batch, d, "x_centred");
            U = Own(batch, m, "U");
            Um = sae.Config.Untied ? Own(batch, m, "U_mag") : U;
            FA = Own(stacked, m, "F_A");
            F = FA.View.SliceRows(0, batch);
            Xhat = Own(stacked, d, "x_hat");
            Delta = Own(stacked, d, "delta");
            PhiPsi = Own(stacked, m, "phi_psi");
            DU = Own(batch, m, "dU");
            DUm = sae.Config.Untied ? Own(batch, m, "dU_mag") : DU;
            Sums = Own(1, 3 * m, "column_sums");
            Norms = Own(1, m, "decoder_norms");
            RowTmp = Own(1, 4 * batch, "row_tmp");
        }

        public int Batch { get; }

        public MatrixView Xc { get; }

        public MatrixView U { get; }

        public MatrixView Um { get; }

        public DeviceTensor FA { get; }

        public MatrixView F { get; }

        public DeviceTensor Xhat { get; }

        public DeviceTensor Delta { get; }

        public DeviceTensor PhiPsi { get; }

        public MatrixView DU { get; }

        public MatrixView DUm { get; }

        public DeviceTensor Sums { get; }

        public DeviceTensor Norms { get; }

        public DeviceTensor RowTmp { get; }

        public MemoryBuffer1D<int, Stride1D.Dense> RowIdx { get; private set; } = null!;

        public MemoryBuffer1D<int, Stride1D.Dense> RowCount { get; private set; } = null!;

        public MemoryBuffer1D<int, Stride1D.Dense> ColIdx { get; private set; } = null!;

        public MemoryBuffer1D<int, Stride1D.Dense> ColCount { get; private set; } = null!;

        /// <summary>Allocates the index lists of the sparse path on first use (B·M entries each way: no overflow possible).</summary>
        public void EnsureSparseBuffers()
        {
            if (RowIdx is not null)
            {
                return;
            }

            var acc = _device.Accelerator;
            RowIdx = acc.Allocate1D<int>((long)Batch * _m);
            RowCount = acc.Allocate1D<int>(Batch);
            ColIdx = acc.Allocate1D<int>((long)Batch * _m);
            ColCount = acc.Allocate1D<int>(_m);
        }

        public void Dispose()
        {
            _owned.ForEach(t => t.Dispose());
            RowIdx?.Dispose();
            RowCount?.Dispose();
            ColIdx?.Dispose();
            ColCount?.Dispose();
        }
    }
}
