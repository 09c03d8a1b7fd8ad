using ILGPU;
using ILGPU.Runtime;
using IlgpuSae.Backends;
using IlgpuSae.Kernels;
using IlgpuSae.Tensors;

namespace IlgpuSae.Lm;

/// <summary>
/// Called at a hook site during <see cref="LanguageModel.Run"/> with the site's activations [B·T, width]
/// (row n is sequence n / T, position n mod T). The view may be read (capture) or overwritten in place
/// (replacement: zeros, an SAE reconstruction); the forward pass continues from whatever it then holds.
/// The view is only valid during the call.
/// </summary>
public delegate void SiteHook(MatrixView activations);

/// <summary>
/// A causal transformer (GPT-2 or GPT-NeoX/Pythia) running as ILGPU kernels on an <see cref="SaeDevice"/>:
/// a full-sequence (KV-cache-free) batched forward pass with TransformerLens-named hook sites that can
/// be captured or replaced. Weights live on the device; workspaces are sized per batch shape and reused.
/// </summary>
public sealed class LanguageModel : IDisposable
{
    private readonly List<DeviceTensor> _owned = [];
    private readonly Block[] _blocks;
    private readonly DeviceTensor _wte;
    private readonly DeviceTensor? _wpe;
    private readonly DeviceTensor _lnfW;
    private readonly DeviceTensor _lnfB;
    private readonly DeviceTensor _unembed;
    private readonly DeviceTensor? _invFreq;
    private Workspace? _ws;

    private LanguageModel(SaeDevice device, LmConfig config, LmWeights weights, string name)
    {
        config.Validate(name);
        Device = device;
        Config = config;
        Name = name;
        int d = config.DModel,
            m = config.DMlp;
        DeviceTensor Up(float[] data, int rows, int cols, string n)
        {
            var t = device.Upload(data, rows, cols, n);
            _owned.Add(t);
            return t;
        }

        _wte = Up(weights.TokenEmbedding, config.VocabSize, d, "wte");
        _wpe = weights.PositionEmbedding is null
            ? null
            : Up(weights.PositionEmbedding, config.ContextLength, d, "wpe");
        _blocks =
        [
            .. weights.Blocks.Select(
                (b, l) =>
                    new Block(
                        Up(b.Ln1Weight, 1, d, $"blocks.{l}.ln1.w"),
                        Up(b.Ln1Bias, 1, d, $"blocks.{l}.ln1.b"),
                        Up(b.QkvWeight, d, 3 * d, $"blocks.{l}.W_qkv"),
                        Up(b.QkvBias, 1, 3 * d, $"blocks.{l}.b_qkv"),
                        Up(b.OutWeight, d, d, $"blocks.{l}.W_O"),
                        Up(b.OutBias, 1, d, $"blocks.{l}.b_O"),
                        Up(b.Ln2Weight, 1, d, $"blocks.{l}.ln2.w"),
                        Up(b.Ln2Bias, 1, d, $"blocks.{l}.ln2.b"),
                        Up(b.MlpInWeight, d, m, $"blocks.{l}.W_in"),
                        Up(b.MlpInBias, 1, m, $"blocks.{l}.b_in"),
                        Up(b.MlpOutWeight, m, d, $"blocks.{l}.W_out"),
                        Up(b.MlpOutBias, 1, d, $"blocks.{l}.b_out")
                    )
            ),
        ];
        _lnfW = Up(weights.FinalLnWeight, 1, d, "ln_f.w");
        _lnfB = Up(weights.FinalLnBias, 1, d, "ln_f.b");
        _unembed = ReferenceEquals(weights.Unembedding, weights.TokenEmbedding)
            ? _wte
            : Up(weights.Unembedding, config.VocabSize, d, "W_U");
        if (config.RotaryDims > 0)
        {
            int half = config.RotaryDims / 2;
            var inv = new float[half];
            for (int i = 0; i < half; i++)
            {
                // As Hugging Face computes it: 1 / base^(2i / r) in float32.
                inv[i] = 1f / MathF.Pow((float)config.RotaryBase, 2f * i / config.RotaryDims);
            }

            _invFreq = Up(inv, 1, half, "inv_freq");
        }

        Sites = HookSites.All(config);
    }

    /// <summary>The device the model runs on.</summary>
    public SaeDevice Device { get; }

    /// <summary>The model's shape and options.</summary>
    public LmConfig Config { get; }

    /// <summary>A name for messages and manifests (the folder name when loaded from disk).</summary>
    public string Name { get; }

    /// <summary>Every hook site of this model, in forward order.</summary>
    public IReadOnlyList<HookSite> Sites { get; }

    /// <summary>
    /// When set, each forward pass synchronises the device after every phase (embedding, LayerNorm,
    /// attention products, attention, MLP products, element-wise ops, unembedding) and adds the phase's
    /// time to this profile: for benchmarks only, the synchronisations slow the pass down.
    /// </summary>
    public StepProfile? Profile { get; set; }

    private void Mark(string phase) => Profile?.Mark(Device, phase);

    /// <summary>Loads a Hugging Face model folder (<c>config.json</c> + <c>*.safetensors</c>) onto
    /// <paramref name="device"/>.</summary>
    /// <exception cref="InvalidDataException">Unknown architecture, or missing/mismatched
    /// weights.</exception>
    public static LanguageModel Load(SaeDevice device, string folder)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (!Directory.Exists(folder))
        {
            throw new DirectoryNotFoundException($"Model folder {folder} does not exist.");
        }

        var config = LmConfig.Load(Path.Combine(folder, "config.json"));
        var weights = LmWeights.Load(folder, config);
        return new LanguageModel(
            device,
            config,
            weights,
            Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(folder)))
        );
    }

    /// <summary>Builds a model from host weights (tests, random-weight smoke runs).</summary>
    public static LanguageModel FromWeights(
        SaeDevice device,
        LmConfig config,
        LmWeights weights,
        string name = "in-memory"
    )
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(weights);
        return new LanguageModel(device, config, weights, name);
    }

    /// <summary>Resolves a TransformerLens site name for this model.</summary>
    /// <exception cref="ArgumentException">The name is not a site of this model (the message lists the valid
    /// ones).</exception>
    public HookSite Site(string name) => HookSites.Parse(name, Config);

    /// <summary>
    /// Runs the forward pass on <paramref name="tokens"/> (<paramref name="batch"/> sequences of equal
    /// length,
    /// row-major). <paramref name="hooks"/> are called at their sites in forward order. When
    /// <paramref name="stopAfter"/> is given, the pass ends right after that site and returns an invalid
    /// view;
    /// otherwise it returns the logits [B·T, V] (valid until the next call).
    /// </summary>
    /// <exception cref="ArgumentException">Bad shape, a token outside the vocabulary, a sequence longer than
    /// the context, or an unknown site.</exception>
    public MatrixView Run(
        ReadOnlySpan<int> tokens,
        int batch,
        IReadOnlyDictionary<string, SiteHook>? hooks = null,
        string? stopAfter = null
    )
    {
        int seqLen = CheckTokens(tokens, batch);
        if (hooks is not null)
        {
            foreach (var name in hooks.Keys)
            {
                Site(name);
            }
        }

        if (stopAfter is not null)
        {
            Site(stopAfter);
        }

        var ws = Prepare(batch, seqLen);
        ws.Ids.View.CopyFromCPU(Device.Stream, tokens);
        var ops = Device.Ops;
        int d = Config.DModel;
        bool SiteHit(string name, MatrixView value)
        {
            if (hooks is not null && hooks.TryGetValue(name, out var hook))
            {
                hook(value);
            }

            return name == stopAfter;
        }

        Profile?.Start(Device);
        ops.Embed(ws.Ids.View, _wte.Data, _wpe?.Data ?? _wte.Data, ws.X.Data, d, seqLen, _wpe is not null);
        Mark("embedding");
        for (int l = 0; l < _blocks.Length; l++)
        {
            var b = _blocks[l];
            if (SiteHit($"blocks.{l}.hook_resid_pre", ws.X))
            {
                return default;
            }

            ops.LayerNorm(ws.X.Data, b.Ln1W.Data, b.Ln1B.Data, ws.A.Data, d, Config.LayerNormEpsilon);
            Mark("LayerNorm");
            Linear(ws.A, b.Wqkv, b.Bqkv, ws.Qkv);
            Mark("attention products (QKV, output)");
            if (_invFreq is not null)
            {
                ops.Rotary(
                    ws.Qkv.Data,
                    _invFreq.Data,
                    ws.Rows,
                    seqLen,
                    Config.Heads,
                    Config.HeadDim,
                    Config.RotaryDims
                );
            }

            ops.Attention(
                ws.Qkv.Data,
                ws.Scratch.Data,
                ws.Z.Data,
                batch,
                seqLen,
                Config.Heads,
                Config.HeadDim,
                1f / MathF.Sqrt(Config.HeadDim)
            );
            Mark("attention (rotary, scores, softmax, values)");
            if (SiteHit($"blocks.{l}.attn.hook_z", ws.Z))
            {
                return default;
            }

            Linear(ws.Z, b.Wo, b.Bo, ws.AttnOut);
            Mark("attention products (QKV, output)");
            if (SiteHit($"blocks.{l}.hook_attn_out", ws.AttnOut))
            {
                return default;
            }

            if (!Config.ParallelResidual)
            {
                ops.Map<Add>(ws.X.Data, ws.AttnOut.Data, ws.X.Data);
                if (SiteHit($"blocks.{l}.hook_resid_mid", ws.X))
                {
                    return default;
                }
            }

            ops.LayerNorm(ws.X.Data, b.Ln2W.Data, b.Ln2B.Data, ws.A.Data, d, Config.LayerNormEpsilon);
            Mark("LayerNorm");
            Linear(ws.A, b.Win, b.Bin, ws.H);
            Mark("MLP products");
            switch (Config.Activation)
            {
                case LmActivation.GeluTanh:
                    ops.Map<GeluTanh>(ws.H.Data, ws.H.Data);
                    break;
                case LmActivation.GeluErf:
                    ops.Map<GeluErf>(ws.H.Data, ws.H.Data);
                    break;
                case LmActivation.Relu:
                    ops.Map<Relu>(ws.H.Data, ws.H.Data);
                    break;
                default:
                    throw new NotSupportedException($"MLP activation {Config.Activation} has no kernel.");
            }

            Mark("element-wise (GELU, residual adds)");

            if (SiteHit($"blocks.{l}.mlp.hook_post", ws.H))
            {
                return default;
            }

            Linear(ws.H, b.Wout, b.Bout, ws.MlpOut);
            Mark("MLP products");
            if (SiteHit($"blocks.{l}.hook_mlp_out", ws.MlpOut))
            {
                return default;
            }

            if (Config.ParallelResidual)
            {
                ops.Map<Add>(ws.X.Data, ws.AttnOut.Data, ws.X.Data);
            }

            ops.Map<Add>(ws.X.Data, ws.MlpOut.Data, ws.X.Data);
            Mark("element-wise (GELU, residual adds)");
            if (SiteHit($"blocks.{l}.hook_resid_post", ws.X))
            {
                return default;
            }
        }

        ops.LayerNorm(ws.X.Data, _lnfW.Data, _lnfB.Data, ws.A.Data, d, Config.LayerNormEpsilon);
        ops.MatMul(ws.A, _unembed, ws.Logits, GemmLayout.NT);
        Mark("unembedding");
        return ws.Logits;
    }

    /// <summary>Host convenience: the logits [B·T, V] of <paramref name="tokens"/>.</summary>
    public float[] Logits(int[] tokens, int batch, IReadOnlyDictionary<string, SiteHook>? hooks = null)
    {
        var logits = Run(tokens, batch, hooks);
        return ToHost(logits);
    }

    /// <summary>Host convenience: the activations [B·T, width] at <paramref name="site"/> (the forward stops
    /// there).</summary>
    public float[] Capture(int[] tokens, int batch, string site)
    {
        float[]? result = null;
        Run(
            tokens,
            batch,
            new Dictionary<string, SiteHook> { [site] = v => result = ToHost(v) },
            stopAfter: site
        );
        return result!;
    }

    /// <summary>
    /// Per-position next-token cross-entropy of the logits of the last full <see cref="Run"/>:
    /// <c>loss[n] = −log softmax(logits[n])[targets[n]]</c>, 0 where <c>targets[n] &lt; 0</c>.
    /// </summary>
    internal void CrossEntropy(MatrixView logits, ArrayView<int> targets, ArrayView<float> loss) =>
        Device.Ops.CrossEntropy(logits.Data, targets, loss, Config.VocabSize);

    private float[] ToHost(MatrixView v)
    {
        var host = new float[v.Length];
        v.Data.CopyToCPU(Device.Stream, host);
        Device.Synchronize();
        return host;
    }

    private void Linear(MatrixView x, DeviceTensor w, DeviceTensor bias, MatrixView y)
    {
        Device.Ops.MatMul(x, w, y, GemmLayout.NN);
        Device.Ops.MapBroadcastRows<Add>(y, bias.Data, y);
    }

    private int CheckTokens(ReadOnlySpan<int> tokens, int batch)
    {
        if (batch <= 0 || tokens.Length == 0 || tokens.Length % batch != 0)
        {
            throw new ArgumentException(
                $"{tokens.Length} tokens do not form {batch} sequences of equal, non-zero length."
            );
        }

        int seqLen = tokens.Length / batch;
        if (seqLen > Config.ContextLength)
        {
            throw new ArgumentException(
                $"Sequences of {seqLen} tokens are longer than the model's context of {Config.ContextLength}."
            );
        }

        for (int i = 0; i < tokens.Length; i++)
        {
            if ((uint)tokens[i] >= (uint)Config.VocabSize)
            {
                throw new ArgumentException(
                    $"Token {tokens[i]} at position {i} is outside the vocabulary [0, {Config.VocabSize})."
                );
            }
        }

        return seqLen;
    }

    private Workspace Prepare(int batch, int seqLen)
    {
        if (_ws is null || _ws.Batch != batch || _ws.SeqLen != seqLen)
        {
            _ws?.Dispose();
            _ws = new Workspace(Device, Config, batch, seqLen);
        }

        return _ws;
    }

    /// <summary>Device memory the weights occupy, in bytes.</summary>
    public long WeightBytes => _owned.Sum(t => t.View.Length) * sizeof(float);

    /// <summary>Device memory a forward pass of <paramref name="batch"/> × <paramref name="seqLen"/> needs
    /// beyond the weights, in bytes.</summary>
    public long WorkspaceBytes(int batch, int seqLen) =>
        Workspace.Floats(Config, batch, seqLen) * sizeof(float);

    /// <inheritdoc/>
    public void Dispose()
    {
        _ws?.Dispose();
        foreach (var t in _owned)
        {
            t.Dispose();
        }
    }

    private sealed record Block(
        DeviceTensor Ln1W,
        DeviceTensor Ln1B,
        DeviceTensor Wqkv,
        DeviceTensor Bqkv,
        DeviceTensor Wo,
        DeviceTensor Bo,
        DeviceTensor Ln2W,
        DeviceTensor Ln2B,
        DeviceTensor Win,
        DeviceTensor Bin,
        DeviceTensor Wout,
        DeviceTensor Bout
    );

    private sealed class Workspace : IDisposable
    {
        public Workspace(SaeDevice device, LmConfig c, int batch, int seqLen)
        {
            Batch = batch;
            SeqLen = seqLen;
            Rows = batch * seqLen;
            int d = c.DModel;
            X = device.Allocate(Rows, d, "x");
            A = device.Allocate(Rows, d, "ln");
            Qkv = device.Allocate(Rows, 3 * d, "qkv");
            Z = device.Allocate(Rows, d, "z");
            AttnOut = device.Allocate(Rows, d, "attn_out");
            H = device.Allocate(Rows, c.DMlp, "mlp_post");
            MlpOut = device.Allocate(Rows, d, "mlp_out");
            Scratch = device.Allocate(batch * c.Heads * seqLen, seqLen, "attn_probs");
            Logits = device.Allocate(Rows, c.VocabSize, "logits");
            Ids = device.Accelerator.Allocate1D<int>(Rows);
        }

        public static long Floats(LmConfig c, int batch, int seqLen)
        {
            long rows = (long)batch * seqLen;
            return rows * (6L * c.DModel + 3L * c.DModel + c.DMlp + c.VocabSize + 1)
                + (long)batch * c.Heads * seqLen * seqLen;
        }

        public int Batch { get; }

        public int SeqLen { get; }

        public int Rows { get; }

        public DeviceTensor X { get; }

        public DeviceTensor A { get; }

        public DeviceTensor Qkv { get; }

        public DeviceTensor Z { get; }

        public DeviceTensor AttnOut { get; }

        public DeviceTensor H { get; }

        public DeviceTensor MlpOut { get; }

        public DeviceTensor Scratch { get; }

        public DeviceTensor Logits { get; }

        public MemoryBuffer1D<int, Stride1D.Dense> Ids { get; }

        public void Dispose()
        {
            foreach (var t in new[] { X, A, Qkv, Z, AttnOut, H, MlpOut, Scratch, Logits })
            {
                t.Dispose();
            }

            Ids.Dispose();
        }
    }
}
