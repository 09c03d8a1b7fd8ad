using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using IlgpuSae.Sae;

namespace IlgpuSae.Training;

/// <summary>
/// Every setting of a training run — the SAE's shape and family and every <see cref="TrainerOptions"/> field
/// — as
/// flat <c>name → value</c> pairs, saved as <c>trainer_config.json</c> with every checkpoint and checked on
/// resume,
/// so that continuing a run with another learning rate, λ or architecture never goes unnoticed.
/// </summary>
public sealed class TrainerConfig
{
    /// <summary>File name inside a checkpoint (and next to the final SAE).</summary>
    public const string FileName = "trainer_config.json";

    /// <summary>Settings that define the run's identity and data order: a resume can never change
    /// them.</summary>
    public static IReadOnlySet<string> Fixed { get; } =
        new HashSet<string>(StringComparer.Ordinal)
        {
            "architecture",
            "d_in",
            "d_sae",
            "apply_b_dec_to_input",
            "use_r_mag",
            "untied",
            "k",
            "matryoshka_widths",
            "rescale_acts_by_decoder_norm",
            "batch_size",
            "seed",
            "shuffle_buffer_rows",
            "normalize_activations",
            "trainable_parameters",
        };

    /// <summary>Settings that change only logging and checkpointing, free to differ on resume.</summary>
    public static IReadOnlySet<string> Free { get; } =
        new HashSet<string>(StringComparer.Ordinal) { "log_every", "checkpoint_every" };

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    private TrainerConfig(SortedDictionary<string, string> values) => Values = values;

    /// <summary>Setting name → its value as JSON text.</summary>
    public IReadOnlyDictionary<string, string> Values { get; }

    /// <summary>The settings of a run of <paramref name="sae"/> with <paramref name="options"/>.</summary>
    public static TrainerConfig Of(SaeConfig sae, TrainerOptions options)
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(options);
        var o = options;
        var values = new SortedDictionary<string, string>(StringComparer.Ordinal);
        void Put(string name, JsonNode? value) => values[name] = value?.ToJsonString() ?? "null";
        Put("architecture", sae.Architecture.Name);
        Put("d_in", sae.DIn);
        Put("d_sae", sae.DSae);
        Put("apply_b_dec_to_input", sae.ApplyBDecToInput);
        Put("use_r_mag", sae.UseRMag);
        Put("untied", sae.Untied);
        Put("k", sae.K);
        if (sae.RescaleActsByDecoderNorm)
        {
            Put("rescale_acts_by_decoder_norm", true);
        }

        Put("steps", o.Steps);
        Put("batch_size", o.BatchSize);
        Put("learning_rate", F(o.LearningRate));
        Put("adam_beta1", F(o.Beta1));
        Put("adam_beta2", F(o.Beta2));
        Put("adam_epsilon", F(o.Epsilon));
        Put("lr_warmup_steps", o.LrWarmupSteps);
        if (o.LrWarmupFromZero)
        {
            Put("lr_warmup_from_zero", true);
        }
        Put("lr_decay", o.LrDecay.ToString().ToLowerInvariant());
        Put("lr_decay_start_fraction", o.LrDecayStartFraction);
        Put("l1_coefficient", F(o.Loss.L1Coefficient));
        Put("decoder_norm_weighted_l1", o.Loss.DecoderNormWeightedL1);
        Put("freeze_aux_decoder", o.Loss.FreezeAuxDecoder);
        Put("loss_scale", o.Loss.Scale == ReconstructionScale.Sum ? "sum" : "mean-d");
        Put("l1_warmup_steps", o.L1WarmupSteps);
        if (o.L1WarmupFromZero)
        {
            Put("l1_warmup_from_zero", true);
        }

        Put("constrain_decoder_norm", o.ConstrainDecoderNorm);
        Put("grad_clip_norm", F(o.GradClipNorm));
        Put("resample_every", o.ResampleEvery);
        Put("resample_dead_window", o.ResampleDeadWindow);
        Put("resample_lr_recovery_steps", o.ResampleLrRecoverySteps);
        Put("normalize_activations", o.NormalizeActivations);
        Put("decoder_init_norm", F(o.DecoderInitNorm));
        Put("seed", o.Seed);
        Put("shuffle_buffer_rows", o.ShuffleBufferRows);
        Put("log_every", o.LogEvery);
        Put("checkpoint_every", o.CheckpointEvery);
        // Family settings, recorded only where they apply (so that older runs' files stay comparable).
        if (sae.MatryoshkaWidths is { } widths)
        {
            Put("matryoshka_widths", new JsonArray([.. widths.Select(w => (JsonNode?)w)]));
            Put(
                "level_weights",
                o.Loss.LevelWeights is null ? null : new JsonArray([.. o.Loss.LevelWeights.Select(w => F(w))])
            );
        }

        if (o.Loss.AuxK is { } aux)
        {
            Put("aux_k", aux.KAux);
            Put("aux_coefficient", F(aux.Coefficient));
            Put("aux_style", aux.Style == AuxKStyle.SaeLens ? "saelens" : "dictionary-learning");
            Put("aux_dead_window_tokens", o.AuxDeadWindowTokens);
        }

        if (sae.Architecture is BatchTopKSae)
        {
            Put("threshold_estimator", o.Loss.Threshold.SaeLensStyle ? "saelens" : "dictionary-learning");
            Put("threshold_rate", F(o.Loss.Threshold.Rate));
            Put("threshold_start_step", o.Loss.Threshold.StartStep);
        }

        if (sae.Architecture == SaeArchitecture.JumpRelu)
        {
            Put("jumprelu_bandwidth", F(o.Loss.JumpRelu.Bandwidth));
            Put("jumprelu_log_threshold", o.Loss.JumpRelu.LogThreshold);
            if (!o.Loss.JumpRelu.LogThreshold && !o.Loss.JumpRelu.ClampThreshold)
            {
                Put("jumprelu_clamp_threshold", false);
            }

            if (!o.Loss.JumpRelu.TrainingRelu)
            {
                Put("jumprelu_training_relu", false);
            }
            Put("jumprelu_ste_to_input", o.Loss.JumpRelu.SteToInput);
            if (o.Loss.JumpRelu.Sparsity == JumpReluSparsity.Tanh)
            {
                Put("jumprelu_sparsity_loss_mode", "tanh");
                Put("jumprelu_tanh_scale", F(o.Loss.JumpRelu.TanhScale));
            }
            else if (o.Loss.JumpRelu.Sparsity == JumpReluSparsity.TargetL0)
            {
                // dictionary_learning's JumpReluTrainer names (sparsity_penalty is l1_coefficient here).
                Put("jumprelu_sparsity_loss_mode", "target_l0");
                Put("target_l0", F(o.Loss.JumpRelu.TargetL0));
            }

            bool onFeatures = o.Loss.JumpRelu.StepInput == JumpReluStepInput.Features;
            if (onFeatures || o.Loss.JumpRelu.Sparsity == JumpReluSparsity.TargetL0)
            {
                Put("jumprelu_l0_step_on", onFeatures ? "f" : "pre");
            }

            if (o.Loss.JumpRelu.PreActCoefficient > 0)
            {
                Put("pre_act_loss_coefficient", F(o.Loss.JumpRelu.PreActCoefficient));
                bool dead = o.Loss.JumpRelu.PreActLatents == PreActLatents.Dead;
                Put("pre_act_loss_latents", dead ? "dead" : "all");
                if (dead)
                {
                    Put("dead_window_tokens", o.AuxDeadWindowTokens ?? 1000L * o.BatchSize);
                }
            }

            Put("jumprelu_init_threshold", F(o.InitialThreshold));
        }

        if (o.DecoderBiasInit != DecoderBiasInit.Keep)
        {
            Put("b_dec_init", o.DecoderBiasInit == DecoderBiasInit.Mean ? "mean" : "geometric-median");
        }

        Put(
            "trainable_parameters",
            o.TrainableParameters is null
                ? null
                : new JsonArray([.. o.TrainableParameters.Select(n => (JsonNode?)n)])
        );
        return new TrainerConfig(values);
    }

    /// <summary>Reads a <c>trainer_config.json</c>.</summary>
    /// <exception cref="InvalidDataException">The file is not a flat JSON object.</exception>
    public static TrainerConfig Read(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        JsonObject root;
        try
        {
            root =
                JsonNode.Parse(File.ReadAllText(path)) as JsonObject
                ?? throw new InvalidDataException($"{path} is not a JSON object.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path} is not valid JSON: {e.Message}", e);
        }

        var values = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var (k, v) in root)
        {
            values[k] = v?.ToJsonString() ?? "null";
        }

        return new TrainerConfig(values);
    }

    /// <summary>Writes the settings atomically to <paramref name="path"/>.</summary>
    public void Write(string path)
    {
        var root = new JsonObject();
        foreach (var (k, v) in Values)
        {
            root[k] = JsonNode.Parse(v);
        }

        IO.AtomicFile.WriteAllText(path, root.ToJsonString(Indented));
    }

    /// <summary>The settings whose values differ (or exist on one side only), ignoring <see cref="Free"/>
    /// ones.</summary>
    public IReadOnlyList<(string Name, string? Saved, string? Requested)> Differences(TrainerConfig requested)
    {
        ArgumentNullException.ThrowIfNull(requested);
        return Values
            .Keys.Union(requested.Values.Keys)
            .Where(k => !Free.Contains(k))
            .Order(StringComparer.Ordinal)
            .Select(k => (k, Values.GetValueOrDefault(k), requested.Values.GetValueOrDefault(k)))
            .Where(t => t.Item2 != t.Item3)
            .ToArray();
    }

    /// <summary>
    /// Throws unless <paramref name="requested"/> equals these saved settings, apart from the names in
    /// <paramref name="overrides"/> (never a <see cref="Fixed"/> one) and the <see cref="Free"/> ones.
    /// </summary>
    /// <exception cref="InvalidOperationException">A setting differs; the message names each one with both
    /// values.</exception>
    /// <exception cref="ArgumentException">An override names an unknown or a fixed setting.</exception>
    public void EnsureResumableWith(
        TrainerConfig requested,
        IReadOnlyCollection<string>? overrides,
        string checkpoint
    )
    {
        ArgumentNullException.ThrowIfNull(requested);
        overrides ??= [];
        var unknown = overrides.Where(n => !requested.Values.ContainsKey(n)).ToArray();
        if (unknown.Length > 0)
        {
            throw new ArgumentException(
                $"--override {string.Join(", ", unknown)}: no such setting (settings: {string.Join(", ", requested.Values.Keys)})."
            );
        }

        var fixedOverrides = overrides.Where(Fixed.Contains).ToArray();
        if (fixedOverrides.Length > 0)
        {
            throw new ArgumentException(
                $"--override {string.Join(", ", fixedOverrides)}: these settings define the run and its data order and cannot change on resume; start a new run instead."
            );
        }

        var refused = Differences(requested).Where(d => !overrides.Contains(d.Name)).ToArray();
        if (refused.Length > 0)
        {
            string list = string.Join(
                "; ",
                refused.Select(d =>
                    $"{d.Name}: checkpoint {d.Saved ?? "(absent)"}, this run {d.Requested ?? "(absent)"}"
                )
            );
            bool anyFixed = refused.Any(d => Fixed.Contains(d.Name));
            throw new InvalidOperationException(
                $"{checkpoint} was trained with other settings: {list}. Resume with the checkpoint's settings"
                    + (
                        anyFixed
                            ? "; "
                                + string.Join(
                                    ", ",
                                    refused.Where(d => Fixed.Contains(d.Name)).Select(d => d.Name)
                                )
                                + " can never change on resume"
                            : $", or accept the change with --override {string.Join(" --override ", refused.Select(d => d.Name))}"
                    )
                    + "."
            );
        }
    }

    private static JsonNode F(float value) =>
        JsonValue.Create(
            double.Parse(value.ToString("R", CultureInfo.InvariantCulture), CultureInfo.InvariantCulture)
        );
}
