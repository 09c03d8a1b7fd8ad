using System.Text.Json;
using System.Text.Json.Nodes;

namespace IlgpuSae.Lm;

/// <summary>The transformer families the runner implements.</summary>
public enum LmArchitecture
{
    /// <summary>GPT-2 (Hugging Face <c>GPT2LMHeadModel</c>): learned positions, sequential residual, Conv1D
    /// weights [in, out].</summary>
    Gpt2,

    /// <summary>GPT-NeoX / Pythia (<c>GPTNeoXForCausalLM</c>): rotary positions, parallel (or sequential)
    /// residual, Linear weights [out, in].</summary>
    GptNeoX,
}

/// <summary>The MLP non-linearity.</summary>
public enum LmActivation
{
    /// <summary>GELU, tanh approximation (<c>gelu_new</c>, <c>gelu_fast</c>,
    /// <c>gelu_pytorch_tanh</c>).</summary>
    GeluTanh,

    /// <summary>GELU, exact (<c>gelu</c>).</summary>
    GeluErf,

    /// <summary>ReLU.</summary>
    Relu,
}

/// <summary>
/// The shape and options of a causal language model, read from a Hugging Face <c>config.json</c>
/// (<c>model_type</c> <c>gpt2</c> or <c>gpt_neox</c>) or built directly (tests, random-weight smoke runs).
/// </summary>
public sealed record LmConfig
{
    /// <summary>Model family.</summary>
    public LmArchitecture Architecture { get; init; }

    /// <summary>Vocabulary size V.</summary>
    public int VocabSize { get; init; }

    /// <summary>Longest sequence the model accepts (learned positions for GPT-2; the trained context for
    /// NeoX).</summary>
    public int ContextLength { get; init; }

    /// <summary>Residual width d_model.</summary>
    public int DModel { get; init; }

    /// <summary>Number of transformer blocks.</summary>
    public int Layers { get; init; }

    /// <summary>Attention heads per block.</summary>
    public int Heads { get; init; }

    /// <summary>MLP width (neurons).</summary>
    public int DMlp { get; init; }

    /// <summary>MLP non-linearity.</summary>
    public LmActivation Activation { get; init; } = LmActivation.GeluTanh;

    /// <summary>Layer-norm epsilon.</summary>
    public float LayerNormEpsilon { get; init; } = 1e-5f;

    /// <summary>Whether the unembedding is the token embedding (GPT-2 default).</summary>
    public bool TiedEmbeddings { get; init; } = true;

    /// <summary>NeoX: fraction of each head's dimensions that are rotated.</summary>
    public double RotaryFraction { get; init; } = 1.0;

    /// <summary>NeoX: rotary base.</summary>
    public double RotaryBase { get; init; } = 10000.0;

    /// <summary>NeoX: <c>x + attn(ln1(x)) + mlp(ln2(x))</c> instead of the sequential residual.</summary>
    public bool ParallelResidual { get; init; }

    /// <summary>Beginning-of-sequence token id (prepended to every context).</summary>
    public int BosTokenId { get; init; }

    /// <summary>End-of-sequence token id, or −1.</summary>
    public int EosTokenId { get; init; } = -1;

    /// <summary>Padding token id, or −1.</summary>
    public int PadTokenId { get; init; } = -1;

    /// <summary>Head width d_head = d_model / heads (0 while heads is not positive, which
    /// <see cref="Validate"/> refuses).</summary>
    public int HeadDim => Heads > 0 ? DModel / Heads : 0;

    /// <summary>NeoX: rotated dims per head (even).</summary>
    public int RotaryDims =>
        Architecture == LmArchitecture.GptNeoX ? (int)(HeadDim * RotaryFraction) / 2 * 2 : 0;

    /// <summary>The token ids treated as special (BOS, EOS, PAD) for masking.</summary>
    public IReadOnlySet<int> SpecialTokens =>
        new HashSet<int>(new[] { BosTokenId, EosTokenId, PadTokenId }.Where(t => t >= 0));

    /// <summary>Checks the shape.</summary>
    /// <exception cref="InvalidDataException">A size is not positive, or d_model is not divisible by the
    /// heads.</exception>
    public void Validate(string where = "config")
    {
        if (VocabSize <= 0 || ContextLength <= 0 || DModel <= 0 || Layers <= 0 || Heads <= 0 || DMlp <= 0)
        {
            throw new InvalidDataException(
                $"{where}: vocab, context, d_model, layers, heads and MLP width must be positive (got vocab "
                    + $"{VocabSize}, context {ContextLength}, d_model {DModel}, layers {Layers}, heads {Heads}, "
                    + $"MLP {DMlp})."
            );
        }

        if (DModel % Heads != 0)
        {
            throw new InvalidDataException($"{where}: d_model {DModel} is not divisible by {Heads} heads.");
        }

        if (BosTokenId < 0 || BosTokenId >= VocabSize)
        {
            throw new InvalidDataException(
                $"{where}: bos_token_id {BosTokenId} is outside the vocabulary [0, {VocabSize})."
            );
        }

        if (RotaryFraction is < 0 or > 1 || !(RotaryBase > 0))
        {
            throw new InvalidDataException(
                $"{where}: rotary_pct must be in [0, 1] and rotary_emb_base positive."
            );
        }
    }

    /// <summary>Reads a Hugging Face <c>config.json</c>.</summary>
    /// <exception cref="InvalidDataException">Unknown <c>model_type</c>, a missing key, an unsupported
    /// option, or invalid JSON.</exception>
    public static LmConfig Load(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException(
                $"{path} does not exist: a model folder needs config.json.",
                path
            );
        }

        JsonObject json;
        try
        {
            json =
                JsonNode.Parse(File.ReadAllText(path)) as JsonObject
                ?? throw new InvalidDataException($"{path} is not a JSON object.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path} is not valid JSON: {e.Message}", e);
        }

        LmConfig config;
        try
        {
            string type =
                json["model_type"]?.GetValue<string>()
                ?? throw new InvalidDataException($"{path}: model_type is missing.");
            config = type switch
            {
                "gpt2" => Gpt2(json, path),
                "gpt_neox" => NeoX(json, path),
                _ => throw new InvalidDataException(
                    $"{path}: unknown architecture model_type '{type}'. Supported: gpt2 (GPT2LMHeadModel), gpt_neox (GPTNeoXForCausalLM, Pythia)."
                ),
            };
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        {
            // JsonNode.GetValue of a key of another JSON type (a number for model_type, a string for a size).
            throw new InvalidDataException($"{path}: a key has the wrong JSON type: {e.Message}", e);
        }

        config.Validate(path);
        return config;
    }

    private static LmConfig Gpt2(JsonObject j, string path)
    {
        if (Bool(j, "scale_attn_by_inverse_layer_idx", false))
        {
            throw new InvalidDataException(
                $"{path}: scale_attn_by_inverse_layer_idx = true is not supported."
            );
        }

        int d = Int(j, path, "n_embd");
        return new LmConfig
        {
            Architecture = LmArchitecture.Gpt2,
            VocabSize = Int(j, path, "vocab_size"),
            ContextLength = Int(j, path, "n_positions"),
            DModel = d,
            Layers = Int(j, path, "n_layer"),
            Heads = Int(j, path, "n_head"),
            DMlp = j["n_inner"] is JsonValue v && v.TryGetValue<int>(out int inner) ? inner : 4 * d,
            Activation = ParseActivation(j["activation_function"]?.GetValue<string>() ?? "gelu_new", path),
            LayerNormEpsilon = (float)Double(j, "layer_norm_epsilon", 1e-5),
            TiedEmbeddings = Bool(j, "tie_word_embeddings", true),
            BosTokenId = OptionalInt(j, "bos_token_id") ?? 50256,
            EosTokenId = OptionalInt(j, "eos_token_id") ?? -1,
            PadTokenId = OptionalInt(j, "pad_token_id") ?? -1,
        };
    }

    private static LmConfig NeoX(JsonObject j, string path) =>
        new()
        {
            Architecture = LmArchitecture.GptNeoX,
            VocabSize = Int(j, path, "vocab_size"),
            ContextLength = Int(j, path, "max_position_embeddings"),
            DModel = Int(j, path, "hidden_size"),
            Layers = Int(j, path, "num_hidden_layers"),
            Heads = Int(j, path, "num_attention_heads"),
            DMlp = Int(j, path, "intermediate_size"),
            Activation = ParseActivation(j["hidden_act"]?.GetValue<string>() ?? "gelu", path),
            LayerNormEpsilon = (float)Double(j, "layer_norm_eps", 1e-5),
            TiedEmbeddings = Bool(j, "tie_word_embeddings", false),
            RotaryFraction = Double(j, "rotary_pct", 1.0),
            RotaryBase = Double(j, "rotary_emb_base", 10000.0),
            ParallelResidual = Bool(j, "use_parallel_residual", true),
            BosTokenId = OptionalInt(j, "bos_token_id") ?? 0,
            EosTokenId = OptionalInt(j, "eos_token_id") ?? -1,
            PadTokenId = OptionalInt(j, "pad_token_id") ?? -1,
        };

    private static LmActivation ParseActivation(string name, string path) =>
        name switch
        {
            "gelu_new" or "gelu_fast" or "gelu_pytorch_tanh" => LmActivation.GeluTanh,
            "gelu" => LmActivation.GeluErf,
            "relu" => LmActivation.Relu,
            _ => throw new InvalidDataException(
                $"{path}: activation '{name}' is not supported (gelu_new, gelu_fast, gelu_pytorch_tanh, gelu, relu)."
            ),
        };

    private static int Int(JsonObject j, string path, string key) =>
        OptionalInt(j, key)
        ?? throw new InvalidDataException($"{path}: '{key}' is missing or not an integer.");

    private static int? OptionalInt(JsonObject j, string key) =>
        j[key] is JsonValue v && v.TryGetValue<int>(out int i) ? i
        : j[key] is JsonValue w && w.TryGetValue<double>(out double x) && x == Math.Floor(x) ? (int)x
        : null;

    private static double Double(JsonObject j, string key, double fallback) =>
        j[key] is JsonValue v && v.TryGetValue<double>(out double x) ? x : fallback;

    private static bool Bool(JsonObject j, string key, bool fallback) =>
        j[key] is JsonValue v && v.TryGetValue<bool>(out bool b) ? b : fallback;
}
