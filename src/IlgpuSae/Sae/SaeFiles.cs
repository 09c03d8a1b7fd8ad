using System.Text.Json;
using System.Text.Json.Nodes;
using IlgpuSae.Backends;
using IlgpuSae.IO;
using IlgpuSae.Tensors;

namespace IlgpuSae.Sae;

/// <summary>
/// Saves and loads SAEs in the SAELens layout: a folder with <c>cfg.json</c> and
/// <c>sae_weights.safetensors</c> (tensor names and shapes exactly as SAELens writes them), and loads Gemma
/// Scope <c>params.npz</c> files (JumpReLU, <c>apply_b_dec_to_input = false</c>).
/// </summary>
public static class SaeFiles
{
    /// <summary>The config file name.</summary>
    public const string ConfigFile = "cfg.json";

    /// <summary>The weights file name.</summary>
    public const string WeightsFile = "sae_weights.safetensors";

    /// <summary>Top-level <c>cfg.json</c> keys understood (SAELens v6, training configs and pre-6.0 legacy
    /// keys).</summary>
    public static IReadOnlySet<string> KnownConfigKeys { get; } =
        new HashSet<string>(StringComparer.Ordinal)
        {
            "architecture",
            "d_in",
            "d_sae",
            "dtype",
            "device",
            "apply_b_dec_to_input",
            "normalize_activations",
            "reshape_activations",
            "metadata",
            "decoder_init_norm",
            "l1_coefficient",
            "l1_warm_up_steps",
            "lp_norm",
            "l0_coefficient",
            "l0_warm_up_steps",
            "jumprelu_init_threshold",
            "jumprelu_bandwidth",
            "jumprelu_sparsity_loss_mode",
            "pre_act_loss_coefficient",
            "jumprelu_tanh_scale",
            "k",
            "rescale_acts_by_decoder_norm",
            "aux_loss_coefficient",
            "use_sparse_activations",
            "topk_threshold_lr",
            "matryoshka_widths",
            "model_name",
            "hook_name",
            "hook_point",
            "hook_layer",
            "hook_point_layer",
            "hook_head_index",
            "hook_point_head_index",
            "activation_fn_str",
            "activation_fn",
            "activation_fn_kwargs",
            "context_size",
            "prepend_bos",
            "dataset_path",
            "dataset_trust_remote_code",
            "finetuning_scaling_factor",
            "sae_lens_training_version",
            "sae_lens_version",
            "neuronpedia_id",
            "model_from_pretrained_kwargs",
            "seqpos_slice",
            "exclude_special_tokens",
            "model_class_name",
            "normalize_activations_scaling_factor",
        };

    /// <summary>The SAELens version whose <c>cfg.json</c> layout is written
    /// (<c>metadata.sae_lens_version</c>): SAELens reads configs at 6.0 or later without
    /// conversion.</summary>
    public const string SaeLensFormatVersion = "6.0.0";

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    // Top-level keys of pre-6.0 SAELens configs and the metadata keys SAELens v6 moved them to.
    private static readonly (string Legacy, string Key)[] LegacyMetadataKeys =
    [
        ("model_name", "model_name"),
        ("hook_name", "hook_name"),
        ("hook_point", "hook_name"),
        ("hook_head_index", "hook_head_index"),
        ("hook_point_head_index", "hook_head_index"),
        ("model_class_name", "model_class_name"),
        ("model_from_pretrained_kwargs", "model_from_pretrained_kwargs"),
        ("prepend_bos", "prepend_bos"),
        ("exclude_special_tokens", "exclude_special_tokens"),
        ("neuronpedia_id", "neuronpedia_id"),
        ("context_size", "context_size"),
        ("seqpos_slice", "seqpos_slice"),
        ("dataset_path", "dataset_path"),
        ("sae_lens_training_version", "sae_lens_training_version"),
    ];

    /// <summary>
    /// Writes <paramref name="sae"/> into <paramref name="folder"/> (created if needed; other files there are
    /// kept).
    /// Each file is written atomically, weights first, so a crash never leaves a truncated file.
    /// </summary>
    public static void Save(SparseAutoencoder sae, string folder)
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        Directory.CreateDirectory(folder);
        var values = sae.Parameters.Download();
        var tensors = sae.Parameters.Layout.Entries.Select(e => new TensorToWrite(
            e.Name,
            e.Rows == 1 ? [e.Cols] : [e.Rows, e.Cols],
            values.AsSpan((int)e.Offset, (int)e.Length).ToArray()
        ));
        SafetensorsWriter.Write(
            Path.Combine(folder, WeightsFile),
            tensors,
            new Dictionary<string, string> { ["format"] = "pt" }
        );
        AtomicFile.WriteAllText(
            Path.Combine(folder, ConfigFile),
            ConfigJson(sae.Config).ToJsonString(Indented)
        );
    }

    /// <summary>Moves a finished folder over <paramref name="target"/>, keeping the old one until the move
    /// succeeded.</summary>
    internal static void Replace(string finished, string target)
    {
        string? old = null;
        if (Directory.Exists(target))
        {
            old = target.TrimEnd(Path.DirectorySeparatorChar) + $".old-{Guid.NewGuid():N}";
            Directory.Move(target, old);
        }

        Directory.Move(finished, target);
        if (old is not null)
        {
            Directory.Delete(old, recursive: true);
        }
    }

    /// <summary>The <c>cfg.json</c> content for <paramref name="config"/>.</summary>
    public static JsonObject ConfigJson(SaeConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        var metadata = new JsonObject();
        foreach (var (k, v) in config.Metadata)
        {
            metadata[k] = JsonSerializer.SerializeToNode(v);
        }

        // SAELens (v6) reads a cfg.json without metadata.sae_lens_version as a pre-6.0 config and rebuilds
        // the metadata from top-level keys, dropping ours; the version marks the v6 layout we write. The
        // training version stays null (as SAELens's own converters write it for SAEs it did not train);
        // values already there (an SAE saved by SAELens) are kept.
        metadata["sae_lens_version"] ??= SaeLensFormatVersion;
        if (!metadata.ContainsKey("sae_lens_training_version"))
        {
            metadata["sae_lens_training_version"] = null;
        }

        metadata["ilgpusae"] = new JsonObject
        {
            ["version"] = typeof(SaeFiles).Assembly.GetName().Version?.ToString(3),
            ["use_r_mag"] = config.UseRMag,
            ["untied"] = config.Untied,
        };
        var json = new JsonObject
        {
            ["architecture"] = config.Architecture.Name,
            ["d_in"] = config.DIn,
            ["d_sae"] = config.DSae,
            ["dtype"] = "float32",
            ["device"] = "cpu",
            ["apply_b_dec_to_input"] = config.ApplyBDecToInput,
            ["normalize_activations"] = "none",
            ["reshape_activations"] = "none",
            ["metadata"] = metadata,
        };
        if (config.K > 0)
        {
            json["k"] = config.K;
            json["rescale_acts_by_decoder_norm"] = config.RescaleActsByDecoderNorm;
        }
        else if (
            metadata["training"] is JsonObject training
            && training["l1_coefficient"] is JsonValue l1
            && l1.TryGetValue<double>(out var lambda)
        )
        {
            // The sparsity coefficient under the name SAELens's training configs read (standard, gated).
            json["l1_coefficient"] = lambda;
            json["lp_norm"] = 1.0;
        }

        if (config.MatryoshkaWidths is { } widths)
        {
            json["matryoshka_widths"] = new JsonArray([.. widths.Select(w => (JsonNode?)w)]);
        }

        if (
            config.Architecture == SaeArchitecture.JumpRelu
            && metadata["training"] is JsonObject jumpTraining
            && jumpTraining["pre_act_loss_coefficient"] is JsonValue preAct
            && preAct.TryGetValue<double>(out var preActCoefficient)
        )
        {
            // SAELens's JumpReLU training key (None when off, so absent here).
            json["pre_act_loss_coefficient"] = preActCoefficient;
        }

        return json;
    }

    /// <summary>The SAELens architecture name.</summary>
    public static string ArchitectureName(SaeArchitecture architecture)
    {
        ArgumentNullException.ThrowIfNull(architecture);
        return architecture.Name;
    }

    /// <summary>Reads and validates a <c>cfg.json</c>.</summary>
    /// <exception cref="InvalidDataException">The file is malformed, has unknown keys, or describes an
    /// unsupported SAE.</exception>
    public static SaeConfig ReadConfig(string configPath)
    {
        try
        {
            return ReadConfigCore(configPath);
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        {
            // A key of the wrong JSON type (e.g. "apply_b_dec_to_input": "yes").
            throw new InvalidDataException($"{configPath}: a value has the wrong type ({e.Message}).", e);
        }
    }

    private static SaeConfig ReadConfigCore(string configPath)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(configPath);
        if (!File.Exists(configPath))
        {
            throw new FileNotFoundException($"No {ConfigFile} at {configPath}.", configPath);
        }

        JsonObject root;
        try
        {
            root =
                JsonNode.Parse(File.ReadAllText(configPath)) as JsonObject
                ?? throw new InvalidDataException($"{configPath} is not a JSON object.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{configPath} is not valid JSON: {e.Message}", e);
        }

        var unknown = root.Select(kv => kv.Key).Where(k => !KnownConfigKeys.Contains(k)).ToArray();
        if (unknown.Length > 0)
        {
            throw new InvalidDataException(
                $"{configPath}: unknown key(s) {string.Join(", ", unknown.Select(k => $"'{k}'"))}. Known keys: {string.Join(", ", KnownConfigKeys.Order(StringComparer.Ordinal))}."
            );
        }

        string architectureName = root["architecture"]?.GetValue<string>() ?? "standard";
        int legacyK = 0;
        string? activation =
            (root["activation_fn"] ?? root["activation_fn_str"]) is JsonValue av
            && av.TryGetValue<string>(out var an)
                ? an
                : null;
        if (activation is not null && activation != "relu")
        {
            // Pre-6.0 SAELens configs say TopK through the activation function (SAELens#553, #308): loading
            // them as a ReLU SAE would silently lose the sparsity.
            if (activation != "topk" || architectureName != "standard")
            {
                throw new InvalidDataException(
                    $"{configPath}: activation_fn '{activation}' with architecture '{architectureName}' is not supported (only the legacy 'topk' with k in activation_fn_kwargs, or 'relu')."
                );
            }

            architectureName = "topk";
            legacyK =
                root["activation_fn_kwargs"]?["k"] is JsonValue kv
                && kv.TryGetValue<int>(out var lk)
                && lk > 0
                    ? lk
                    : throw new InvalidDataException(
                        $"{configPath}: a legacy activation_fn 'topk' needs a positive integer activation_fn_kwargs.k."
                    );
        }

        var architecture =
            SaeArchitectures.Find(architectureName)
            ?? throw new InvalidDataException(
                $"{configPath}: architecture '{architectureName}' is not supported (supported: {string.Join(", ", SaeArchitectures.All.Select(a => a.Name))})."
            );
        int Int(string key) =>
            root[key] is JsonValue v && v.TryGetValue<int>(out var i) && i > 0
                ? i
                : throw new InvalidDataException($"{configPath}: '{key}' must be a positive integer.");
        var normalize = root["normalize_activations"];
        if (
            normalize is JsonValue nv
            && (
                (nv.TryGetValue<string>(out var ns) && ns != "none")
                || (nv.TryGetValue<bool>(out var nb) && nb)
            )
        )
        {
            throw new InvalidDataException(
                $"{configPath}: normalize_activations = {normalize.ToJsonString()} is not supported; fold the scaling into the weights first (SAELens fold_activation_norm_scaling_factor)."
            );
        }

        var reshape = root["reshape_activations"];
        if (reshape is JsonValue rv && rv.TryGetValue<string>(out var rs) && rs != "none")
        {
            throw new InvalidDataException($"{configPath}: reshape_activations = '{rs}' is not supported.");
        }

        var metadata = new Dictionary<string, object?>(StringComparer.Ordinal);
        bool useRMag = true,
            untied = false;
        if (root["metadata"] is JsonObject meta)
        {
            foreach (var (k, v) in meta)
            {
                if (k == "ilgpusae" && v is JsonObject ours)
                {
                    useRMag = ours["use_r_mag"]?.GetValue<bool>() ?? true;
                    untied = ours["untied"]?.GetValue<bool>() ?? false;
                    continue;
                }

                metadata[k] = v?.DeepClone();
            }
        }

        // A pre-6.0 SAELens config keeps its provenance at the top level (hook_point was hook_name's old
        // name); carry it into the metadata, so that a re-saved folder (v6 layout) keeps it.
        foreach (var (legacy, key) in LegacyMetadataKeys)
        {
            if (root[legacy] is { } value && !metadata.ContainsKey(key))
            {
                metadata[key] = value.DeepClone();
            }
        }

        var config = new SaeConfig
        {
            Architecture = architecture,
            DIn = Int("d_in"),
            DSae = Int("d_sae"),
            ApplyBDecToInput = root["apply_b_dec_to_input"]?.GetValue<bool>() ?? true,
            UseRMag = useRMag,
            Untied = untied,
            K = legacyK > 0 ? legacyK : ReadK(configPath, root["k"]),
            MatryoshkaWidths = ReadWidths(configPath, root["matryoshka_widths"]),
            Metadata = metadata,
        };
        if (
            root["rescale_acts_by_decoder_norm"] is JsonValue rv2
            && rv2.TryGetValue<bool>(out var rescaled)
            && rescaled
        )
        {
            // SAELens's TopK-family training form: the selection ranks U ⊙ ‖W_dec[i]‖.
            if (architecture is not (TopKSae or BatchTopKSae))
            {
                throw new InvalidDataException(
                    $"{configPath}: rescale_acts_by_decoder_norm = true applies to the TopK family only, not to {architecture.Name}."
                );
            }

            config = config with { RescaleActsByDecoderNorm = true };
        }

        try
        {
            config.Validate();
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{configPath}: {e.Message}", e);
        }

        return config;
    }

    /// <summary>k as an integer (SAELens writes BatchTopK's k as a float, e.g. 32.0); 0 when
    /// absent.</summary>
    private static int ReadK(string configPath, JsonNode? node)
    {
        if (node is null)
        {
            return 0;
        }

        if (
            node is JsonValue v
            && v.TryGetValue<double>(out var k)
            && k == Math.Floor(k)
            && k is >= 0 and <= int.MaxValue
        )
        {
            return (int)k;
        }

        throw new InvalidDataException(
            $"{configPath}: 'k' must be a non-negative integer, got {node.ToJsonString()}."
        );
    }

    private static int[]? ReadWidths(string configPath, JsonNode? node)
    {
        if (node is null)
        {
            return null;
        }

        if (node is not JsonArray array || array.Any(n => n is not JsonValue w || !w.TryGetValue<int>(out _)))
        {
            throw new InvalidDataException(
                $"{configPath}: 'matryoshka_widths' must be a list of integers, got {node.ToJsonString()}."
            );
        }

        return [.. array.Select(n => n!.GetValue<int>())];
    }

    /// <summary>
    /// Loads an SAE from a SAELens folder (or its <c>cfg.json</c>/<c>sae_weights.safetensors</c> path) or a
    /// Gemma
    /// Scope <c>params.npz</c>. Tensor names, shapes and dtypes are checked; values are converted to float32.
    /// </summary>
    public static SparseAutoencoder Load(SaeDevice device, string path)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (File.Exists(path) && path.EndsWith(".npz", StringComparison.OrdinalIgnoreCase))
        {
            return LoadGemmaScope(device, path);
        }

        var folder = File.Exists(path) ? Path.GetDirectoryName(Path.GetFullPath(path))! : path;
        if (!Directory.Exists(folder))
        {
            throw new FileNotFoundException($"No SAE folder at {path}.", path);
        }

        var config = ReadConfig(Path.Combine(folder, ConfigFile));
        var weightsPath = Path.Combine(folder, WeightsFile);
        using var weights = new SafetensorsFile(weightsPath);
        var tensors = new Dictionary<string, float[]>(StringComparer.Ordinal);
        foreach (var (name, entry) in weights.Entries)
        {
            if (name == "finetuning_scaling_factor")
            {
                var scaling = weights.ReadFloats(name);
                if (scaling.Any(v => v != 1f))
                {
                    throw new InvalidDataException(
                        $"{weightsPath}: a finetuning_scaling_factor other than ones is not supported."
                    );
                }

                continue;
            }

            if (!entry.DType.IsFloat())
            {
                throw new InvalidDataException(
                    $"{weightsPath}: tensor '{name}' has dtype {entry.DType}; SAE weights must be floating point."
                );
            }

            tensors[name] = weights.ReadFloats(name);
            CheckShape(weightsPath, config, name, entry.Shape);
        }

        return FromTensors(device, config, tensors, weightsPath);
    }

    private static SparseAutoencoder LoadGemmaScope(SaeDevice device, string path)
    {
        var arrays = Npy.ReadNpz(path);
        foreach (var key in arrays.Keys.Where(k => k.StartsWith("w_", StringComparison.Ordinal)).ToArray())
        {
            arrays["W_" + key[2..]] = arrays[key];
            arrays.Remove(key);
        }

        if (!arrays.TryGetValue("W_enc", out var wEnc) || wEnc.Shape.Length != 2)
        {
            throw new InvalidDataException(
                $"{path}: a Gemma Scope params.npz needs a 2-D W_enc; found {string.Join(", ", arrays.Keys)}."
            );
        }

        var config = new SaeConfig
        {
            Architecture = SaeArchitecture.JumpRelu,
            DIn = checked((int)wEnc.Shape[0]),
            DSae = checked((int)wEnc.Shape[1]),
            ApplyBDecToInput = false,
            Metadata = new Dictionary<string, object?> { ["source"] = "gemma-scope params.npz" },
        };
        foreach (var (name, (_, shape)) in arrays)
        {
            CheckShape(path, config, name, shape);
        }

        return FromTensors(device, config, arrays.ToDictionary(kv => kv.Key, kv => kv.Value.Data), path);
    }

    private static void CheckShape(string path, SaeConfig config, string name, long[] shape)
    {
        var layout = SparseAutoencoder.LayoutFor(config);
        var entry =
            layout.Entries.FirstOrDefault(e => e.Name == name)
            ?? throw new InvalidDataException(
                $"{path}: unexpected tensor '{name}' for a {config.Architecture.Name} SAE (expected {string.Join(", ", layout.Entries.Select(e => e.Name))})."
            );
        long[] expected = entry.Rows == 1 ? [entry.Cols] : [entry.Rows, entry.Cols];
        if (entry.Rows == 1 && entry.Cols == 1 && shape.Length == 0)
        {
            return; // a scalar (SAELens saves topk_threshold as a 0-d tensor)
        }

        if (!shape.SequenceEqual(expected))
        {
            throw new InvalidDataException(
                $"{path}: tensor '{name}' has shape [{string.Join(", ", shape)}], expected [{string.Join(", ", expected)}] for d_in={config.DIn}, d_sae={config.DSae}."
            );
        }
    }

    internal static SparseAutoencoder FromTensors(
        SaeDevice device,
        SaeConfig config,
        Dictionary<string, float[]> tensors,
        string source
    )
    {
        var missing = SparseAutoencoder.TensorNames(config).Where(n => !tensors.ContainsKey(n)).ToArray();
        if (missing.Length > 0)
        {
            throw new InvalidDataException(
                $"{source}: missing tensor(s) {string.Join(", ", missing)} for a {config.Architecture.Name} SAE."
            );
        }

        foreach (var (name, values) in tensors)
        {
            int bad = Array.FindIndex(values, v => !float.IsFinite(v));
            if (bad >= 0)
            {
                throw new InvalidDataException(
                    $"{source}: tensor '{name}' holds a non-finite value ({values[bad]}) at element {bad}."
                );
            }
        }

        var sae = SparseAutoencoder.CreateEmpty(device, config);
        try
        {
            var flat = new float[sae.Parameters.Layout.Length];
            foreach (var e in sae.Parameters.Layout.Entries)
            {
                tensors[e.Name].CopyTo(flat, e.Offset);
            }

            sae.Parameters.Upload(flat);
            return sae;
        }
        catch
        {
            sae.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The exact JumpReLU equivalent of a tied gated SAE (paper §3.1): <c>W_enc' = W_enc·diag(e^{r_mag})</c>,
    /// <c>b_enc' = b_mag</c>, <c>θ = max(b_mag − e^{r_mag} ⊙ b_gate, 0)</c>, decoder unchanged. Exact for
    /// SAELens's JumpReLU, which applies ReLU before the threshold.
    /// </summary>
    /// <exception cref="NotSupportedException">The SAE is not gated, or is untied (its gate and magnitude
    /// directions differ).</exception>
    public static SparseAutoencoder ExportJumpRelu(SparseAutoencoder gated)
    {
        ArgumentNullException.ThrowIfNull(gated);
        if (gated.Config.Architecture != SaeArchitecture.Gated || gated.Config.Untied)
        {
            throw new NotSupportedException("Only tied gated SAEs have an exact JumpReLU form.");
        }

        var p = gated.Parameters;
        var values = p.Download();
        float[] Get(string n) => values.AsSpan((int)p.Layout[n].Offset, (int)p.Layout[n].Length).ToArray();
        int d = gated.DIn,
            m = gated.DSae;
        var wEnc = Get("W_enc");
        var bGate = Get("b_gate");
        var bMag = Get("b_mag");
        var scale = gated.Config.HasRMag
            ? Get("r_mag").Select(MathF.Exp).ToArray()
            : Enumerable.Repeat(1f, m).ToArray();
        for (int j = 0; j < d; j++)
        {
            for (int i = 0; i < m; i++)
            {
                wEnc[j * m + i] *= scale[i];
            }
        }

        var threshold = new float[m];
        for (int i = 0; i < m; i++)
        {
            threshold[i] = MathF.Max(bMag[i] - scale[i] * bGate[i], 0f);
        }

        var config = gated.Config with
        {
            Architecture = SaeArchitecture.JumpRelu,
            UseRMag = true,
            Metadata = new Dictionary<string, object?>(gated.Config.Metadata) { ["exported_from"] = "gated" },
        };
        return FromTensors(
            gated.Device,
            config,
            new Dictionary<string, float[]>
            {
                ["W_enc"] = wEnc,
                ["b_enc"] = bMag,
                ["threshold"] = threshold,
                ["W_dec"] = Get("W_dec"),
                ["b_dec"] = Get("b_dec"),
            },
            "gated export"
        );
    }
}
