using ILGPU;
using ILGPU.Runtime;
using IlgpuSae.Backends;
using IlgpuSae.Kernels;
using IlgpuSae.Tensors;

namespace IlgpuSae.Sae;

/// <summary>
/// A sparse autoencoder on a device, of any registered <see cref="SaeArchitecture"/>, with parameters,
/// gradients
/// and Adam moments in one <see cref="ParameterBuffer"/> (tensor names and shapes as SAELens stores them:
/// <c>W_enc [d_in, d_sae]</c>, the family's tensors, <c>W_dec [d_sae, d_in]</c>, <c>b_dec [d_in]</c>). This
/// class
/// holds what every family shares: input centring, the encoder product(s), the dense and sparse decoder for
/// the
/// stacked reconstructions, [Φ; Ψ], the weight and <c>b_dec</c> gradients, the loss terms and the workspace;
/// the family supplies the activation and its element-wise backward pass.
/// </summary>
public sealed class SparseAutoencoder : IDisposable
{
    /// <summary>Name of the encoder matrix <c>[d_in, d_sae]</c>.</summary>
    public const string EncoderTensor = "W_enc";

    /// <summary>Name of the decoder matrix <c>[d_sae, d_in]</c>.</summary>
    public const string DecoderTensor = "W_dec";

    /// <summary>Name of the decoder bias <c>[d_in]</c>.</summary>
    public const string DecoderBiasTensor = "b_dec";

    private readonly Dictionary<int, SaeWorkspace> _workspaces = [];
    private SaeWorkspace? _latest;

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

    /// <summary>The family.</summary>
    public SaeArchitecture Architecture => Config.Architecture;

    /// <summary>Parameters, gradients and Adam moments.</summary>
    public ParameterBuffer Parameters { get; }

    /// <summary>Input width d.</summary>
    public int DIn => Config.DIn;

    /// <summary>Dictionary size M.</summary>
    public int DSae => Config.DSae;

    /// <summary>The decoder <c>W_dec [M, d]</c>.</summary>
    public MatrixView Decoder => Parameters[DecoderTensor];

    /// <summary>The decoder's gradient <c>∂L/∂W_dec [M, d]</c>.</summary>
    public MatrixView DecoderGradient => Parameters.Gradient(DecoderTensor);

    /// <summary>
    /// When set, <see cref="ComputeGradients"/> synchronises the device after each phase and adds the phase's
    /// wall time
    /// here (for benchmarks: the synchronisations themselves cost a little). Null (the default) adds no
    /// synchronisation.
    /// </summary>
    public StepProfile? Profile { get; set; }

    /// <summary>How training steps run after the encoder (default <see cref="TrainingPath.Auto"/>).</summary>
    public TrainingPath Path { get; set; } = TrainingPath.Auto;

    /// <summary>
    /// With <see cref="TrainingPath.Auto"/>, the largest fraction of active (row, feature) pairs (gate open
    /// for gated,
    /// f &gt; 0 for standard, for JumpReLU its support: f &gt; 0 and the kernel window below θ) for which
    /// the sparse path is used. Early in training most gates are open and
    /// the dense
    /// products win. Defaults to <see cref="DefaultSparseDensityThreshold"/> for the device.
    /// </summary>
    public double SparseDensityThreshold { get; set; }

    /// <summary>
    /// Where the sparse step stops paying off, as measured by <c>perf/run-sae.sh</c>
    /// (perf/results/sae-step-2026-12-01-*):
    /// on ILGPU's CPU accelerator, whose matrix products run at ~7 GFLOP/s, the sparse step is still 2–3×
    /// faster at
    /// 5 % density, so 0.10; on PoCL the dense products run at 25–40 % of OpenBLAS and the sparse gated step
    /// is
    /// 1.8–2.1× faster at 1–2 % but 1.2× (512×4096) or 0.7× (768×16384) at 5 %, so 0.03 for OpenCL and CUDA
    /// (not yet
    /// measured on a GPU).
    /// </summary>
    public static double DefaultSparseDensityThreshold(SaeDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        return device.Backend == BackendKind.Cpu ? 0.10 : 0.03;
    }

    /// <summary>
    /// The trainer's dead-feature counters, for the AuxK loss of the TopK family (null = no AuxK this step).
    /// </summary>
    public DeadFeatureWindow? AuxDeadFeatures { get; set; }

    /// <summary>The 1-based number of the training step being computed (the BatchTopK threshold estimator
    /// starts after a given step).</summary>
    public long TrainingStep { get; set; }

    /// <summary>
    /// Feature-sharded training (<c>train --parallel features</c>): this SAE holds one contiguous block of
    /// the features of a wider one, and <see cref="ComputeGradients"/> sums the partial reconstructions of
    /// every block before the residual (null: a whole SAE).
    /// </summary>
    internal FeatureShardHooks? Sharding { get; set; }

    /// <summary>
    /// Training across processes (<c>train --parallel</c>): the collectives through which the statistics
    /// that couple a batch's rows (data-parallel) or its features (feature-sharded) are formed over every
    /// rank (null: one process).
    /// </summary>
    internal StepCollectives? Collectives { get; set; }

    /// <summary>Whether the latest <see cref="ComputeGradients"/> took the sparse path.</summary>
    public bool LastStepWasSparse { get; private set; }

    /// <summary>Fraction of (row, feature) pairs in the support of the latest sparse-capable step, measured
    /// on the Auto path and in profiled steps (<see cref="Profile"/> set); NaN when not measured.</summary>
    public double LastDensity { get; private set; } = double.NaN;

    /// <summary>The parameter names of <paramref name="config"/>'s architecture, in file order.</summary>
    public static IReadOnlyList<string> TensorNames(SaeConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return LayoutFor(config).Entries.Select(e => e.Name).ToArray();
    }

    /// <summary>The parameter layout of <paramref name="config"/>: <c>W_enc</c>, the family's tensors,
    /// <c>W_dec</c>, <c>b_dec</c>.</summary>
    public static ParameterLayout LayoutFor(SaeConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        var layout = new ParameterLayout().Add(EncoderTensor, config.DIn, config.DSae);
        config.Architecture.AddTensors(layout, config);
        return layout.Add(DecoderTensor, config.DSae, config.DIn).Add(DecoderBiasTensor, 1, config.DIn);
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
    /// constraint; SAELens and the April update use 0.1), <c>W_enc = W_decᵀ</c>, every other tensor zero,
    /// then
    /// the family's own initialisation (<see cref="SaeArchitecture.Initialize"/>: <c>W_mag = W_enc</c> when
    /// untied,
    /// JumpReLU thresholds <paramref name="initialThreshold"/>).
    /// </summary>
    public static SparseAutoencoder Create(
        SaeDevice device,
        SaeConfig config,
        ulong seed,
        float decoderInitNorm = 1f,
        float initialThreshold = 0.001f
    )
    {
        var sae = CreateEmpty(device, config);
        try
        {
            if (!(decoderInitNorm > 0f) || !float.IsFinite(decoderInitNorm))
            {
                throw new ArgumentException(
                    $"decoderInitNorm must be positive and finite, got {decoderInitNorm}.",
                    nameof(decoderInitNorm)
                );
            }

            var ops = device.Ops;
            var wDec = sae.Decoder;
            ops.FillNormal(wDec.Data, 0f, 1f, seed, stream: 1);
            ops.NormalizeRows(wDec, 1e-12f);
            if (decoderInitNorm != 1f)
            {
                ops.Map(wDec.Data, wDec.Data, new Scale(decoderInitNorm));
            }

            ops.Transpose(wDec, sae.Parameters[EncoderTensor]);
            config.Architecture.Initialize(
                sae,
                new SaeInitOptions { DecoderInitNorm = decoderInitNorm, InitialThreshold = initialThreshold }
            );
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
        if (
            other.Parameters.Layout.Length != Parameters.Layout.Length
            || !TensorNames(other.Config).SequenceEqual(TensorNames(Config))
        )
        {
            throw new ArgumentException("The SAEs have different parameter layouts.", nameof(other));
        }

        Parameters.Upload(other.Parameters.Download());
    }

    /// <summary>
    /// A copy on the same device in which an input scale s is folded into the weights: an SAE trained on s·x
    /// becomes one for x (every encoder matrix × s, <c>W_dec</c> and <c>b_dec</c> ÷ s; biases and thresholds,
    /// which act on pre-activations, are unchanged).
    /// </summary>
    public SparseAutoencoder WithInputScaleFolded(float scale, IReadOnlyDictionary<string, object?> metadata)
    {
        var folded = CreateEmpty(Device, Config with { Metadata = metadata });
        try
        {
            folded.CopyParametersFrom(this);
            var ops = Device.Ops;
            var fp = folded.Parameters;
            foreach (var name in Architecture.EncoderMatrices(Config))
            {
                ops.Map(fp[name].Data, fp[name].Data, new Scale(scale));
            }

            ops.Map(fp[DecoderTensor].Data, fp[DecoderTensor].Data, new Scale(1f / scale));
            ops.Map(fp[DecoderBiasTensor].Data, fp[DecoderBiasTensor].Data, new Scale(1f / scale));
            if (
                Config.RescaleActsByDecoderNorm
                && fp.Layout.Entries.Any(e => e.Name == BatchTopKSae.ThresholdTensor)
            )
            {
                // θ acts on U ⊙ ‖W_dec[i]‖, and every decoder norm shrinks by s with W_dec. (An unset
                // θ = −1 stays negative.)
                var theta = fp[BatchTopKSae.ThresholdTensor].Data;
                ops.Map(theta, theta, new Scale(1f / scale));
            }

            return folded;
        }
        catch
        {
            folded.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The equivalent SAE without <see cref="SaeConfig.RescaleActsByDecoderNorm"/> (SAELens's fold on saving
    /// a TopK-family SAE for inference): with <c>n_i = ‖W_dec[i]‖</c>, <c>W_enc[:, i] ×= n_i</c>,
    /// <c>b_enc ×= n_i</c> and <c>W_dec[i] ÷= n_i</c>, so the folded pre-activation is the rescaled one,
    /// <c>U′ = U ⊙ n</c>, the decoder rows are unit-norm, the selection and the reconstruction are unchanged,
    /// and BatchTopK's θ (measured on <c>U ⊙ n</c>) stays valid. A copy on the same device; an SAE without
    /// the flag is copied unchanged. A zero-norm row keeps its weights (its rescaled codes are 0 anyway).
    /// </summary>
    public SparseAutoencoder WithDecoderNormsFolded()
    {
        var folded = CreateEmpty(Device, Config with { RescaleActsByDecoderNorm = false });
        try
        {
            folded.CopyParametersFrom(this);
            if (!Config.RescaleActsByDecoderNorm)
            {
                return folded;
            }

            var p = folded.Parameters;
            var values = p.Download();
            int d = DIn,
                m = DSae;
            long enc = p.Layout["W_enc"].Offset,
                bias = p.Layout["b_enc"].Offset,
                dec = p.Layout[DecoderTensor].Offset;
            for (int i = 0; i < m; i++)
            {
                double sum = 0;
                for (int j = 0; j < d; j++)
                {
                    double w = values[dec + (long)i * d + j];
                    sum += w * w;
                }

                float n = (float)Math.Sqrt(sum);
                if (!(n > 0f) || !float.IsFinite(n))
                {
                    continue;
                }

                for (int j = 0; j < d; j++)
                {
                    values[enc + (long)j * m + i] *= n;
                    values[dec + (long)i * d + j] /= n;
                }

                values[bias + i] *= n;
            }

            p.Upload(values);
            return folded;
        }
        catch
        {
            folded.Dispose();
            throw;
        }
    }

    // ------------------------------------------------------------------ inference

    /// <summary>Encodes rows of <paramref name="x"/> [B, d] into <paramref name="features"/> [B,
    /// M].</summary>
    public void Encode(MatrixView x, MatrixView features)
    {
        var ws = Prepare(x);
        EncodeCore(ws, x);
        Device.Ops.Copy(
            ws.F.Data,
            features.Data.IsValid && features.Rows == ws.Batch && features.Cols == DSae
                ? features.Data
                : throw new ArgumentException(
                    $"Encode: features must be [{ws.Batch}, {DSae}], got {features}."
                )
        );
    }

    /// <summary>Decodes <paramref name="features"/> [B, M] into <paramref name="reconstruction"/> [B, d]:
    /// <c>f·W_dec + b_dec</c>.</summary>
    public void Decode(MatrixView features, MatrixView reconstruction)
    {
        if (features.Cols != DSae || reconstruction.Cols != DIn || features.Rows != reconstruction.Rows)
        {
            throw new ArgumentException(
                $"Decode: features must be [B, {DSae}] and reconstruction [B, {DIn}], got {features} and {reconstruction}."
            );
        }

        Device.Ops.MatMul(features, Decoder, reconstruction, GemmLayout.NN);
        Device.Ops.MapBroadcastRows<Add>(reconstruction, Parameters[DecoderBiasTensor].Data, reconstruction);
    }

    /// <summary>Encodes and decodes a batch; returns views (valid until the next call with this batch size)
    /// of the features [B, M] and reconstructions [B, d].</summary>
    public (MatrixView Features, MatrixView Reconstruction) Forward(MatrixView x)
    {
        var ws = Prepare(x);
        EncodeCore(ws, x);
        var xhat = ws.Xhat.SliceRows(0, ws.Batch);
        Device.Ops.MatMul(ws.F, Decoder, xhat, GemmLayout.NN);
        Device.Ops.MapBroadcastRows<Add>(xhat, Parameters[DecoderBiasTensor].Data, xhat);
        return (ws.F, xhat);
    }

    /// <summary>Host convenience: features [rows, M] and reconstructions [rows, d] of row-major
    /// <paramref name="x"/> [rows, d].</summary>
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

    /// <summary>
    /// Writes into <paramref name="counts"/> [M] the number of rows of the latest forward or training pass in
    /// which each feature fired (f &gt; 0), for dead-feature tracking.
    /// </summary>
    /// <exception cref="InvalidOperationException">No pass has run yet.</exception>
    public void CountFiring(ArrayView<float> counts)
    {
        var ws =
            _latest
            ?? throw new InvalidOperationException("CountFiring: no forward or training pass has run yet.");
        Device.Ops.ReduceColumns<CountNonZero>(ws.F, counts);
    }

    private SaeWorkspace Prepare(MatrixView x)
    {
        if (!x.IsValid || x.Cols != DIn)
        {
            throw new ArgumentException($"Input must be [B, {DIn}] (d_in = {DIn}), got {x}.");
        }

        if (!_workspaces.TryGetValue(x.Rows, out var ws))
        {
            ws = new SaeWorkspace(this, x.Rows);
            _workspaces[x.Rows] = ws;
        }

        _latest = ws;
        ws.Input = x;
        ws.Training = false;
        ws.Loss = null;
        return ws;
    }

    /// <summary>The encoder input: x centred by b_dec when configured (into the workspace), else x.</summary>
    private MatrixView EncoderInput(SaeWorkspace ws, MatrixView x) => Config.ApplyBDecToInput ? ws.Xc : x;

    /// <summary>Centres the input (if configured), computes U (and Um), then lets the family compute F (and
    /// A).</summary>
    private void EncodeCore(SaeWorkspace ws, MatrixView x)
    {
        EncoderProducts(ws, x);
        Architecture.Activate(this, ws);
    }

    /// <summary>Centring and the encoder product(s) <c>U = X̃·W_enc</c> (and <c>Um = X̃·W_mag</c>).</summary>
    private void EncoderProducts(SaeWorkspace ws, MatrixView x)
    {
        var ops = Device.Ops;
        if (Config.ApplyBDecToInput)
        {
            ops.MapBroadcastRows<Subtract>(x, Parameters[DecoderBiasTensor].Data, ws.Xc);
        }

        var xc = EncoderInput(ws, x);
        var encoders = Architecture.EncoderMatrices(Config);
        ops.MatMul(xc, Parameters[encoders[0]], ws.U, GemmLayout.NN);
        if (encoders.Count > 1)
        {
            ops.MatMul(xc, Parameters[encoders[1]], ws.Um, GemmLayout.NN);
        }
    }

    // ------------------------------------------------------------------ training

    /// <summary>
    /// Zeroes the gradients, then runs the training forward and backward pass on <paramref name="x"/> [B, d],
    /// leaving <c>∂L/∂θ</c> in <see cref="ParameterBuffer.Gradients"/> (paper §2.2 for the standard SAE,
    /// §3.2.2
    /// for the gated one). Returns the loss terms when <paramref name="computeLoss"/> (one device
    /// synchronisation), else null.
    /// </summary>
    /// <exception cref="NotSupportedException">The architecture has no training path here
    /// (JumpReLU).</exception>
    public LossBreakdown? ComputeGradients(MatrixView x, SaeLossOptions options, bool computeLoss = false)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (!Architecture.CanTrain)
        {
            throw new NotSupportedException(
                $"{Architecture.Name} SAEs are inference-only here (load, encode, export); their training arrives with its own issue."
            );
        }

        var ws = Prepare(x);
        ws.Training = true;
        ws.Loss = options;
        var ops = Device.Ops;
        var p = Parameters;
        int b = ws.Batch,
            d = DIn,
            m = DSae;
        bool stacked = ws.Stack > 1;
        float c = options.Scale == ReconstructionScale.Sum ? 1f : 1f / d;
        // The main reconstruction's weight (1 except for weighted Matryoshka levels) rides in Δ's scale.
        float mainScale = c * 2f / b * Architecture.MainReconstructionWeight(Config, options);
        float lambdaOverB = options.L1Coefficient / b;
        int rows = ws.Stack * b;
        Profile?.Start(Device);
        p.ZeroGradients();

        // Forward: U, F (and A), stacked reconstructions and residuals Δ = c·(2/B)(X̂ − X).
        EncoderProducts(ws, x);
        Profile?.Mark(Device, "encoder GEMM");
        Architecture.Activate(this, ws);
        Profile?.Mark(Device, "activation (gate, top-k)");
        var fa = ws.FA.SliceRows(0, rows);
        var xhat = ws.Xhat.SliceRows(0, rows);
        var delta = ws.Delta.SliceRows(0, rows);
        var phiPsi = ws.PhiPsi.SliceRows(0, rows);
        bool auxIntoDecoder = stacked && !options.FreezeAuxDecoder;
        bool sparse = Sharding is null ? ChooseSparse(ws) : (LastStepWasSparse = false);
        Profile?.Mark(Device, "compaction");
        var encoders = Architecture.EncoderMatrices(Config);
        bool second = encoders.Count > 1;
        var sparseArgs = new SparseArgs
        {
            Rows = b,
            M = m,
            D = d,
            Scale = mainScale,
            Gated = stacked ? 1 : 0,
            Untied = second ? 1 : 0,
            AuxIntoDecoder = auxIntoDecoder ? 1 : 0,
        };
        var wDec = Decoder;
        var bDec = p[DecoderBiasTensor].Data;
        if (sparse)
        {
            ops.SparseDecode(
                ws.FA.Data,
                wDec.Data,
                bDec,
                x.Data,
                ws.RowIdx.View,
                ws.RowCount.View,
                ws.Xhat.Data,
                ws.Delta.Data,
                sparseArgs
            );
            Profile?.Mark(Device, "decoder");
            ops.Fill(phiPsi.Data, 0f);
            ops.SparsePhiPsi(
                ws.Delta.Data,
                wDec.Data,
                ws.RowIdx.View,
                ws.RowCount.View,
                phiPsi.Data,
                sparseArgs
            );
        }
        else
        {
            ops.MatMul(fa, wDec, xhat, GemmLayout.NN);
            Sharding?.SumReconstructions(xhat);
            ops.Residual(xhat.Data, x.Data, bDec, delta.Data, d, b, mainScale);
            Profile?.Mark(Device, "decoder");

            // Backward: [Φ; Ψ] = [Δ; Δa]·W_decᵀ in one GEMM.
            ops.MatMul(delta, wDec, phiPsi, GemmLayout.NT);
        }

        Profile?.Mark(Device, "[Φ; Ψ]");

        if (options.DecoderNormWeightedL1)
        {
            ops.RowL2Norms(wDec, ws.DecoderNorms.Data);
        }

        MatrixView xc = EncoderInput(ws, x);
        var sums = ws.ColumnSums.Data;
        Architecture.Backward(this, ws, lambdaOverB, options.DecoderNormWeightedL1);
        Profile?.Mark(Device, "element-wise backward");
        int decoderRows = auxIntoDecoder ? 2 * b : b;
        var gEnc = p.Gradient(encoders[0]);
        var gMag = second ? p.Gradient(encoders[1]) : gEnc;
        if (sparse)
        {
            // dW_enc, dW_mag and dW_dec over each feature's active rows only.
            ops.SparseWeightGrad(
                xc.Data,
                ws.DU.Data,
                ws.DUm.Data,
                ws.FA.Data,
                ws.Delta.Data,
                ws.ColIdx,
                ws.ColCount,
                gEnc.Data,
                gMag.Data,
                DecoderGradient.Data,
                sparseArgs
            );
        }
        else
        {
            // Encoder weights: dW_enc = X̃ᵀ·dU (and dW_mag = X̃ᵀ·dUm with a second encoder matrix).
            ops.MatMul(xc, ws.DU, gEnc, GemmLayout.TN, 1f, 1f);
            if (second)
            {
                ops.MatMul(xc, ws.DUm, gMag, GemmLayout.TN, 1f, 1f);
            }

            // Decoder: dW_dec = Fᵀ·Δ (+ Aᵀ·Δa when the aux decoder is not frozen: one GEMM over the stack).
            ops.MatMul(
                ws.FA.SliceRows(0, decoderRows),
                ws.Delta.SliceRows(0, decoderRows),
                DecoderGradient,
                GemmLayout.TN,
                1f,
                1f
            );
        }

        Profile?.Mark(Device, "weight gradients");
        if (options.DecoderNormWeightedL1)
        {
            ops.DecoderNormPenaltyGrad(
                wDec,
                sums.SubView(2L * m, m),
                ws.DecoderNorms.Data,
                DecoderGradient,
                lambdaOverB
            );
        }

        // b_dec: output term colsum(Δ) (+ colsum(Δa) if unfrozen), input-centring term −W_enc·colsum(dU).
        // Feature-sharded, Δ is the same on every block, so one block adds the output term and the blocks'
        // gradients are then summed.
        if (Sharding is null || Sharding.AddsSharedTerms)
        {
            ops.ReduceColumns<Sum>(
                ws.Delta.SliceRows(0, decoderRows),
                p.Gradient(DecoderBiasTensor).Data,
                accumulate: true
            );
        }

        if (Config.ApplyBDecToInput)
        {
            var gbDec = new MatrixView(p.Gradient(DecoderBiasTensor).Data, d, 1);
            ops.MatMul(
                p[encoders[0]],
                new MatrixView(sums.SubView(0, m), 1, m),
                gbDec,
                GemmLayout.NT,
                -1f,
                1f
            );
            if (second)
            {
                ops.MatMul(
                    p[encoders[1]],
                    new MatrixView(sums.SubView(m, m), 1, m),
                    gbDec,
                    GemmLayout.NT,
                    -1f,
                    1f
                );
            }
        }

        Profile?.Mark(Device, "bias gradients");
        return computeLoss ? LossTerms(ws, options, c) : null;
    }

    /// <summary>Compacts the active features and decides between the sparse and the dense path.</summary>
    private bool ChooseSparse(SaeWorkspace ws)
    {
        LastStepWasSparse = false;
        LastDensity = double.NaN;
        if (Path == TrainingPath.Dense || !Architecture.SupportsSparsePath)
        {
            return false;
        }

        int b = ws.Batch,
            m = DSae;
        var support = Architecture.SupportRows(this, ws);
        ws.EnsureSparseBuffers(m);
        var ops = Device.Ops;
        ops.CompactRows(support.Data, ws.RowIdx.View, ws.RowCount.View, b, m);
        if (Path == TrainingPath.Auto || Profile is not null)
        {
            // The one synchronisation of the sparse path: the density decides it.
            Device.Synchronize();
            var counts = ws.RowCount.GetAsArray1D(Device.Stream);
            LastDensity = counts.Sum(v => (double)v) / ((double)b * m);
            if (Path == TrainingPath.Auto && LastDensity > SparseDensityThreshold)
            {
                return false;
            }
        }

        ops.CompactColumns(support.Data, ws.ColIdx, ws.ColCount, b, m);
        LastStepWasSparse = true;
        return true;
    }

    private LossBreakdown LossTerms(SaeWorkspace ws, SaeLossOptions options, float c)
    {
        var ops = Device.Ops;
        int b = ws.Batch;
        bool stacked = ws.Stack > 1;
        int rows = ws.Stack * b;
        var tmp = ws.RowTmp.Data;
        ops.ReduceRows<SumOfSquares>(ws.Delta.SliceRows(0, rows), tmp.SubView(0, rows));
        var penalised = Architecture.PenalisedRows(ws);
        var l1 = new MatrixView(tmp.SubView(2L * b, b), b, 1);
        if (Architecture.SparsityPerRow(this, ws, l1.Data)) { }
        else if (Architecture.PenaltyCountsActive)
        {
            ops.ReduceRows<CountNonZero>(penalised, l1.Data);
        }
        else if (options.DecoderNormWeightedL1)
        {
            ops.MatMul(penalised, new MatrixView(ws.DecoderNorms.Data, DSae, 1), l1, GemmLayout.NN);
        }
        else
        {
            ops.ReduceRows<Sum>(penalised, l1.Data);
        }

        ops.ReduceRows<CountNonZero>(ws.F, tmp.SubView(3L * b, b));
        Device.Synchronize();
        var host = new float[4 * b];
        tmp.SubView(0, 4 * b).CopyToCPU(Device.Stream, host);
        Device.Synchronize();
        // Σ Δ² = (2cw/B)²·Σ (x̂ − x)²  ⇒  c·Σ(x̂ − x)²/B = Σ Δ²·B/(4c·w²); the objective's term is w times
        // it.
        double w = Architecture.MainReconstructionWeight(Config, options);
        double toLoss = b / (4.0 * c * w * w);
        double mse = 0,
            aux = 0,
            sparsity = 0,
            l0 = 0;
        for (int r = 0; r < b; r++)
        {
            mse += host[r] * toLoss;
            if (stacked)
            {
                aux += host[b + r] * toLoss;
            }

            sparsity += host[2 * b + r];
            l0 += host[3 * b + r];
        }

        // Aux holds every objective term beyond the plain full-width MSE and the penalty: the gated auxiliary
        // reconstruction, the family's own terms, and (w − 1)·MSE for a weighted main level.
        aux += (w - 1) * mse + Architecture.AuxiliaryLoss(this, ws);
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
        _latest = null;
        Parameters.Dispose();
    }
}

/// <summary>What a feature block of a sharded SAE needs from the others during
/// <see cref="SparseAutoencoder.ComputeGradients"/>.</summary>
/// <param name="SumReconstructions">Replaces the block's partial reconstructions F·W_dec (the stacked rows)
/// by their sum over every block, the same bits on each.</param>
/// <param name="AddsSharedTerms">Whether this block adds the terms every block would compute alike (the
/// b_dec output term), so that they are counted once when the blocks' gradients are summed.</param>
internal sealed record FeatureShardHooks(Action<MatrixView> SumReconstructions, bool AddsSharedTerms);
