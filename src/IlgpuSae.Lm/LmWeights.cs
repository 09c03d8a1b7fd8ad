using IlgpuSae.IO;

namespace IlgpuSae.Lm;

/// <summary>One transformer block's weights in the runner's layout (row-major; matrices are [in,
/// out]).</summary>
public sealed class LmBlockWeights
{
    /// <summary>First layer norm (before attention): scale [d] and bias [d].</summary>
    public required float[] Ln1Weight { get; init; }

    /// <inheritdoc cref="Ln1Weight"/>
    public required float[] Ln1Bias { get; init; }

    /// <summary>Fused Q, K, V projection [d, 3d]: columns [0, d) are the queries (heads concatenated), then
    /// keys, then values.</summary>
    public required float[] QkvWeight { get; init; }

    /// <summary>Bias of the fused projection [3d].</summary>
    public required float[] QkvBias { get; init; }

    /// <summary>Attention output projection W_O [d, d].</summary>
    public required float[] OutWeight { get; init; }

    /// <summary>Bias of W_O [d].</summary>
    public required float[] OutBias { get; init; }

    /// <summary>Second layer norm (before the MLP): scale [d] and bias [d].</summary>
    public required float[] Ln2Weight { get; init; }

    /// <inheritdoc cref="Ln2Weight"/>
    public required float[] Ln2Bias { get; init; }

    /// <summary>MLP input projection [d, m].</summary>
    public required float[] MlpInWeight { get; init; }

    /// <summary>MLP input bias [m].</summary>
    public required float[] MlpInBias { get; init; }

    /// <summary>MLP output projection [m, d].</summary>
    public required float[] MlpOutWeight { get; init; }

    /// <summary>MLP output bias [d].</summary>
    public required float[] MlpOutBias { get; init; }
}

/// <summary>
/// A language model's weights on the host in one layout for both families: GPT-2's Conv1D matrices are
/// already [in, out]; GPT-NeoX's Linear matrices [out, in] are transposed and its per-head interleaved
/// Q/K/V rows are regrouped into GPT-2's [q | k | v] column blocks.
/// </summary>
public sealed class LmWeights
{
    /// <summary>Token embedding [V, d].</summary>
    public required float[] TokenEmbedding { get; init; }

    /// <summary>Learned position embedding [context, d] (GPT-2), or null (NeoX, rotary).</summary>
    public float[]? PositionEmbedding { get; init; }

    /// <summary>The blocks.</summary>
    public required LmBlockWeights[] Blocks { get; init; }

    /// <summary>Final layer norm scale [d].</summary>
    public required float[] FinalLnWeight { get; init; }

    /// <summary>Final layer norm bias [d].</summary>
    public required float[] FinalLnBias { get; init; }

    /// <summary>Unembedding [V, d] (logits = x·Uᵀ); the token embedding when tied.</summary>
    public required float[] Unembedding { get; init; }

    /// <summary>
    /// Reads the weights of <paramref name="config"/> from every <c>*.safetensors</c> file in
    /// <paramref name="folder"/>
    /// (float32, float16 or bfloat16; sharded checkpoints allowed).
    /// </summary>
    /// <exception cref="InvalidDataException">No weight file, or a tensor is missing or has the wrong shape
    /// (all such problems are listed).</exception>
    public static LmWeights Load(string folder, LmConfig config)
    {
        var files = Directory.Exists(folder)
            ? Directory
                .GetFiles(folder, "*.safetensors")
                .Where(f => !Path.GetFileName(f).StartsWith("golden", StringComparison.Ordinal))
                .Order(StringComparer.Ordinal)
                .ToArray()
            : [];
        if (files.Length == 0)
        {
            throw new InvalidDataException(
                $"{folder}: no *.safetensors weight file (PyTorch .bin checkpoints are not read; convert them to safetensors)."
            );
        }

        var opened = files.Select(f => new SafetensorsFile(f)).ToArray();
        try
        {
            var index = new Dictionary<string, (SafetensorsFile File, SafetensorsEntry Entry)>(
                StringComparer.Ordinal
            );
            foreach (var file in opened)
            {
                foreach (var (name, entry) in file.Entries)
                {
                    index[name] = (file, entry);
                }
            }

            var reader = new Reader(folder, index);
            var weights =
                config.Architecture == LmArchitecture.Gpt2
                    ? ReadGpt2(reader, config)
                    : ReadNeoX(reader, config);
            reader.ThrowIfProblems();
            return weights;
        }
        finally
        {
            foreach (var f in opened)
            {
                f.Dispose();
            }
        }
    }

    private static LmWeights ReadGpt2(Reader r, LmConfig c)
    {
        // GPT2LMHeadModel.save_pretrained writes "transformer.h.0..." and "lm_head.weight"; GPT2Model and the
        // hub's gpt2 write "h.0...".
        r.Prefix = r.Has("transformer.wte.weight") ? "transformer." : "";
        int d = c.DModel,
            m = c.DMlp,
            v = c.VocabSize;
        var wte = r.Read("wte.weight", v, d);
        var blocks = new LmBlockWeights[c.Layers];
        for (int l = 0; l < c.Layers; l++)
        {
            string h = $"h.{l}.";
            blocks[l] = new LmBlockWeights
            {
                Ln1Weight = r.Read(h + "ln_1.weight", d),
                Ln1Bias = r.Read(h + "ln_1.bias", d),
                QkvWeight = r.Read(h + "attn.c_attn.weight", d, 3 * d),
                QkvBias = r.Read(h + "attn.c_attn.bias", 3 * d),
                OutWeight = r.Read(h + "attn.c_proj.weight", d, d),
                OutBias = r.Read(h + "attn.c_proj.bias", d),
                Ln2Weight = r.Read(h + "ln_2.weight", d),
                Ln2Bias = r.Read(h + "ln_2.bias", d),
                MlpInWeight = r.Read(h + "mlp.c_fc.weight", d, m),
                MlpInBias = r.Read(h + "mlp.c_fc.bias", m),
                MlpOutWeight = r.Read(h + "mlp.c_proj.weight", m, d),
                MlpOutBias = r.Read(h + "mlp.c_proj.bias", d),
            };
        }

        var wpe = r.Read("wpe.weight", c.ContextLength, d);
        var lnW = r.Read("ln_f.weight", d);
        var lnB = r.Read("ln_f.bias", d);
        r.Prefix = "";
        var unembed = c.TiedEmbeddings || !r.Has("lm_head.weight") ? wte : r.Read("lm_head.weight", v, d);
        r.Skip("lm_head.weight"); // tied: a copy of the embedding
        return new LmWeights
        {
            TokenEmbedding = wte,
            PositionEmbedding = wpe,
            Blocks = blocks,
            FinalLnWeight = lnW,
            FinalLnBias = lnB,
            Unembedding = unembed,
        };
    }

    private static LmWeights ReadNeoX(Reader r, LmConfig c)
    {
        int d = c.DModel,
            m = c.DMlp,
            v = c.VocabSize,
            heads = c.Heads,
            dh = c.HeadDim;
        r.Prefix = "gpt_neox.";
        var wte = r.Read("embed_in.weight", v, d);
        var blocks = new LmBlockWeights[c.Layers];
        for (int l = 0; l < c.Layers; l++)
        {
            string h = $"layers.{l}.";

            // query_key_value: Linear [3d, d] whose output rows are grouped per head as [q_h | k_h | v_h] (dh
            // each).
            var qkvRows = r.Read(h + "attention.query_key_value.weight", 3 * d, d);
            var qkvBiasRows = r.Read(h + "attention.query_key_value.bias", 3 * d);
            var qkv = new float[d * 3 * d];
            var qkvBias = new float[3 * d];
            if (qkvRows.Length > 0)
            {
                for (int head = 0; head < heads; head++)
                {
                    for (int part = 0; part < 3; part++)
                    {
                        for (int j = 0; j < dh; j++)
                        {
                            int src = head * 3 * dh + part * dh + j;
                            int dst = part * d + head * dh + j;
                            qkvBias[dst] = qkvBiasRows.Length > 0 ? qkvBiasRows[src] : 0f;
                            for (int i = 0; i < d; i++)
                            {
                                qkv[i * 3 * d + dst] = qkvRows[src * d + i];
                            }
                        }
                    }
                }
            }

            blocks[l] = new LmBlockWeights
            {
                Ln1Weight = r.Read(h + "input_layernorm.weight", d),
                Ln1Bias = r.Read(h + "input_layernorm.bias", d),
                QkvWeight = qkv,
                QkvBias = qkvBias,
                OutWeight = Transpose(r.Read(h + "attention.dense.weight", d, d), d, d),
                OutBias = r.Read(h + "attention.dense.bias", d),
                Ln2Weight = r.Read(h + "post_attention_layernorm.weight", d),
                Ln2Bias = r.Read(h + "post_attention_layernorm.bias", d),
                MlpInWeight = Transpose(r.Read(h + "mlp.dense_h_to_4h.weight", m, d), m, d),
                MlpInBias = r.Read(h + "mlp.dense_h_to_4h.bias", m),
                MlpOutWeight = Transpose(r.Read(h + "mlp.dense_4h_to_h.weight", d, m), d, m),
                MlpOutBias = r.Read(h + "mlp.dense_4h_to_h.bias", d),
            };
        }

        var lnW = r.Read("final_layer_norm.weight", d);
        var lnB = r.Read("final_layer_norm.bias", d);
        r.Prefix = "";
        var unembed = c.TiedEmbeddings ? wte : r.Read("embed_out.weight", v, d);
        r.Skip("embed_out.weight"); // tied: a copy of the embedding
        return new LmWeights
        {
            TokenEmbedding = wte,
            Blocks = blocks,
            FinalLnWeight = lnW,
            FinalLnBias = lnB,
            Unembedding = unembed,
        };
    }

    /// <summary>Row-major transpose of [rows, cols] into [cols, rows].</summary>
    internal static float[] Transpose(float[] a, int rows, int cols)
    {
        if (a.Length == 0)
        {
            return a;
        }

        var t = new float[a.Length];
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < cols; c++)
            {
                t[c * rows + r] = a[r * cols + c];
            }
        }

        return t;
    }

    /// <summary>
    /// Random weights of the given shape (normal, std 0.02, layer norms near identity), for smoke tests and
    /// benchmarks of real model shapes without their checkpoints.
    /// </summary>
    public static LmWeights Random(LmConfig config, int seed)
    {
        config.Validate();
        var rng = new Random(seed);
        int d = config.DModel,
            m = config.DMlp;
        float[] Normal(int n, float std)
        {
            var a = new float[n];
            for (int i = 0; i < n; i++)
            {
                a[i] = (float)(
                    std
                    * Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble()))
                    * Math.Cos(2 * Math.PI * rng.NextDouble())
                );
            }

            return a;
        }

        float[] Near(int n, float center) => Normal(n, 0.05f).Select(x => x + center).ToArray();
        var wte = Normal(config.VocabSize * d, 0.02f);
        return new LmWeights
        {
            TokenEmbedding = wte,
            PositionEmbedding =
                config.Architecture == LmArchitecture.Gpt2 ? Normal(config.ContextLength * d, 0.01f) : null,
            Blocks =
            [
                .. Enumerable
                    .Range(0, config.Layers)
                    .Select(_ => new LmBlockWeights
                    {
                        Ln1Weight = Near(d, 1f),
                        Ln1Bias = Near(d, 0f),
                        QkvWeight = Normal(d * 3 * d, 0.02f),
                        QkvBias = Normal(3 * d, 0.02f),
                        OutWeight = Normal(d * d, 0.02f),
                        OutBias = Normal(d, 0.02f),
                        Ln2Weight = Near(d, 1f),
                        Ln2Bias = Near(d, 0f),
                        MlpInWeight = Normal(d * m, 0.02f),
                        MlpInBias = Normal(m, 0.02f),
                        MlpOutWeight = Normal(m * d, 0.02f),
                        MlpOutBias = Normal(d, 0.02f),
                    }),
            ],
            FinalLnWeight = Near(d, 1f),
            FinalLnBias = Near(d, 0f),
            Unembedding = config.TiedEmbeddings ? wte : Normal(config.VocabSize * d, 0.02f),
        };
    }

    private sealed class Reader(
        string folder,
        Dictionary<string, (SafetensorsFile File, SafetensorsEntry Entry)> index
    )
    {
        private readonly List<string> _problems = [];
        private readonly HashSet<string> _used = new(StringComparer.Ordinal);

        public string Prefix { get; set; } = "";

        public bool Has(string name) => index.ContainsKey(name);

        /// <summary>Marks a tensor that is present but deliberately not read (e.g. a tied output
        /// matrix).</summary>
        public void Skip(string name) => _used.Add(name);

        private static bool IsBuffer(string name) =>
            name.EndsWith(".attn.bias", StringComparison.Ordinal)
            || name.EndsWith(".attn.masked_bias", StringComparison.Ordinal)
            || name.EndsWith(".attention.bias", StringComparison.Ordinal)
            || name.EndsWith(".attention.masked_bias", StringComparison.Ordinal)
            || name.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal);

        public float[] Read(string name, params int[] shape)
        {
            string full = Prefix + name;
            if (!index.TryGetValue(full, out var hit))
            {
                _problems.Add($"missing tensor '{full}' (expected [{string.Join(", ", shape)}])");
                return [];
            }

            _used.Add(full);
            var expected = shape.Select(s => (long)s).ToArray();
            if (!hit.Entry.Shape.SequenceEqual(expected))
            {
                _problems.Add(
                    $"tensor '{full}' is {hit.Entry.ShapeText}, expected [{string.Join(", ", shape)}]"
                );
                return [];
            }

            if (!hit.Entry.DType.IsFloat())
            {
                _problems.Add($"tensor '{full}' has dtype {hit.Entry.DType}, expected a float type");
                return [];
            }

            var values = hit.File.ReadFloats(full);
            int bad = Array.FindIndex(values, x => !float.IsFinite(x));
            if (bad >= 0)
            {
                _problems.Add($"tensor '{full}' has a non-finite value at flat index {bad}");
            }

            return values;
        }

        public void ThrowIfProblems()
        {
            // Every tensor of the checkpoint must be used: a config.json with a smaller n_layer (or a
            // narrower shape elsewhere) would otherwise silently drop layers. Causal-mask and rotary
            // buffers, and an output matrix tied to the embedding, are not weights.
            var unused = index
                .Keys.Where(n => !_used.Contains(n) && !IsBuffer(n))
                .Order(StringComparer.Ordinal)
                .ToArray();
            if (unused.Length > 0)
            {
                _problems.Add(
                    $"{unused.Length} tensor(s) of the checkpoint are not used by config.json (is n_layer too small?): {string.Join(", ", unused.Take(8))}{(unused.Length > 8 ? ", …" : "")}"
                );
            }

            if (_problems.Count > 0)
            {
                throw new InvalidDataException(
                    $"{folder}: the weights do not match config.json ({_problems.Count} problem(s)):\n  "
                        + string.Join("\n  ", _problems.Take(20))
                        + (_problems.Count > 20 ? $"\n  … and {_problems.Count - 20} more" : "")
                );
            }
        }
    }
}
