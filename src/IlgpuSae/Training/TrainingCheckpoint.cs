using System.Text.Json;
using System.Text.Json.Nodes;
using IlgpuSae.IO;
using IlgpuSae.Sae;
using IlgpuSae.Tensors;

namespace IlgpuSae.Training;

/// <summary>Where a run stands: what a checkpoint records besides tensors.</summary>
/// <param name="Step">Steps done.</param>
/// <param name="DataCursor">The loader's position.</param>
/// <param name="LastResample">Step of the latest resampling (−1 = none).</param>
/// <param name="NormalizationScale">The activation scale in use.</param>
public sealed record TrainerState(long Step, long DataCursor, long LastResample, float NormalizationScale);

/// <summary>
/// Checkpoint folders <c>checkpoints/step-NNNNNNNN</c>: the SAE in the SAELens layout,
/// <c>optimizer.safetensors</c>
/// (both Adam moments of the flat buffer and the dead-feature counters), <c>trainer_state.json</c> and
/// <c>trainer_config.json</c>. A checkpoint is written into a temporary folder and moved into place, so a
/// crash
/// never leaves a partial one.
/// </summary>
public static class TrainingCheckpoint
{
    /// <summary>Name of the checkpoint folder in a run folder.</summary>
    public const string Folder = "checkpoints";

    private const string OptimizerFile = "optimizer.safetensors";
    private const string StateFile = "trainer_state.json";

    /// <summary>Writes a checkpoint of <paramref name="sae"/> at <paramref name="state"/> under
    /// <paramref name="runFolder"/>; returns its folder.</summary>
    public static string Save(
        string runFolder,
        SparseAutoencoder sae,
        float[] stepsSinceFired,
        TrainerState state,
        TrainerConfig config
    )
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(runFolder);
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(stepsSinceFired);
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(config);
        var folder = Path.Combine(runFolder, Folder, $"step-{state.Step:D8}");
        var temp = folder + $".tmp-{Guid.NewGuid():N}";
        SaeFiles.Save(sae, temp);
        var p = sae.Parameters;
        SafetensorsWriter.Write(
            Path.Combine(temp, OptimizerFile),
            [
                new TensorToWrite("exp_avg", [p.Layout.Length], p.Download(ParameterSection.FirstMoment)),
                new TensorToWrite("exp_avg_sq", [p.Layout.Length], p.Download(ParameterSection.SecondMoment)),
                new TensorToWrite("steps_since_fired", [sae.DSae], stepsSinceFired),
            ]
        );
        var json = new JsonObject
        {
            ["step"] = state.Step,
            ["data_cursor"] = state.DataCursor,
            ["last_resample_step"] = state.LastResample,
            ["normalization_scale"] = state.NormalizationScale,
            ["seed"] = JsonNode.Parse(config.Values["seed"]),
            ["total_steps"] = JsonNode.Parse(config.Values["steps"]),
            ["batch_size"] = JsonNode.Parse(config.Values["batch_size"]),
        };
        AtomicFile.WriteAllText(Path.Combine(temp, StateFile), json.ToJsonString());
        config.Write(Path.Combine(temp, TrainerConfig.FileName));
        SaeFiles.Replace(temp, folder);
        return folder;
    }

    /// <summary>The newest complete checkpoint folder under <paramref name="runFolder"/>, or null.</summary>
    public static string? Latest(string runFolder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(runFolder);
        var root = Path.Combine(runFolder, Folder);
        return Directory.Exists(root)
            ? Directory
                .GetDirectories(root, "step-*")
                .Where(d =>
                    !d.Contains(".tmp-", StringComparison.Ordinal)
                    && !d.Contains(".old-", StringComparison.Ordinal)
                )
                .Order(StringComparer.Ordinal)
                .LastOrDefault()
            : null;
    }

    /// <summary>
    /// Checks that <paramref name="checkpoint"/> was written with <paramref name="requested"/> (apart from
    /// <paramref name="overrides"/>). Checkpoints from before <c>trainer_config.json</c> existed are checked
    /// on
    /// their batch size and seed only.
    /// </summary>
    /// <exception cref="InvalidOperationException">A setting differs.</exception>
    public static void EnsureCompatible(
        string checkpoint,
        TrainerConfig requested,
        IReadOnlyCollection<string>? overrides
    )
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(checkpoint);
        ArgumentNullException.ThrowIfNull(requested);
        var configPath = Path.Combine(checkpoint, TrainerConfig.FileName);
        if (File.Exists(configPath))
        {
            TrainerConfig.Read(configPath).EnsureResumableWith(requested, overrides, checkpoint);
            return;
        }

        var state = ReadStateJson(checkpoint);
        if (
            state["batch_size"]?.ToJsonString() != requested.Values["batch_size"]
            || state["seed"]?.ToJsonString() != requested.Values["seed"]
        )
        {
            throw new InvalidOperationException(
                $"{checkpoint} was written with batch size {state["batch_size"]} and seed {state["seed"]}; resume with the same settings."
            );
        }
    }

    /// <summary>
    /// Loads the checkpoint's weights into <paramref name="sae"/> and its Adam moments into the SAE's buffer;
    /// returns the state and the dead-feature counters.
    /// </summary>
    /// <exception cref="InvalidDataException">The checkpoint holds another SAE or is malformed.</exception>
    public static (TrainerState State, float[] StepsSinceFired) Load(string checkpoint, SparseAutoencoder sae)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(checkpoint);
        ArgumentNullException.ThrowIfNull(sae);
        // Everything is read and checked before the SAE is touched, so a malformed checkpoint changes
        // nothing.
        var state = ReadState(checkpoint);
        float[] m1,
            m2,
            steps;
        using (var optimizer = new SafetensorsFile(Path.Combine(checkpoint, OptimizerFile)))
        {
            m1 = optimizer.ReadFloats("exp_avg");
            m2 = optimizer.ReadFloats("exp_avg_sq");
            steps = optimizer.ReadFloats("steps_since_fired");
        }

        if (
            m1.Length != sae.Parameters.Layout.Length
            || m2.Length != sae.Parameters.Layout.Length
            || steps.Length != sae.DSae
        )
        {
            throw new InvalidDataException(
                $"{checkpoint}: the Adam moments hold {m1.Length} and {m2.Length} values and the dead-feature counters {steps.Length}; the SAE needs {sae.Parameters.Layout.Length} and {sae.DSae}."
            );
        }

        using (var saved = SaeFiles.Load(sae.Device, checkpoint))
        {
            if (
                saved.Config.DIn != sae.DIn
                || saved.Config.DSae != sae.DSae
                || saved.Config.Architecture != sae.Config.Architecture
            )
            {
                throw new InvalidDataException(
                    $"{checkpoint} holds a different SAE ({saved.Config.Architecture}, {saved.DIn}×{saved.DSae})."
                );
            }

            sae.CopyParametersFrom(saved);
        }

        sae.Parameters.Upload(m1, ParameterSection.FirstMoment);
        sae.Parameters.Upload(m2, ParameterSection.SecondMoment);
        return (state, steps);
    }

    private static JsonObject ReadStateJson(string checkpoint)
    {
        var statePath = Path.Combine(checkpoint, StateFile);
        if (!File.Exists(statePath))
        {
            throw new InvalidDataException(
                $"{checkpoint} is not a training checkpoint: {StateFile} is missing."
            );
        }

        try
        {
            return JsonNode.Parse(File.ReadAllText(statePath)) as JsonObject
                ?? throw new InvalidDataException($"{statePath} is not a JSON object.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{statePath} is not valid JSON: {e.Message}", e);
        }
    }

    /// <summary>Reads and checks <c>trainer_state.json</c> of <paramref name="checkpoint"/>.</summary>
    /// <exception cref="InvalidDataException">The file is missing, not JSON, or a field is missing or of
    /// the wrong type.</exception>
    internal static TrainerState ReadState(string checkpoint)
    {
        var json = ReadStateJson(checkpoint);
        T Field<T>(string name)
        {
            try
            {
                return json[name] is JsonValue v
                    ? v.GetValue<T>()
                    : throw new InvalidDataException(
                        $"{Path.Combine(checkpoint, StateFile)} has no '{name}'."
                    );
            }
            catch (Exception e) when (e is InvalidOperationException or FormatException)
            {
                throw new InvalidDataException(
                    $"{Path.Combine(checkpoint, StateFile)}: '{name}' has the wrong type.",
                    e
                );
            }
        }

        return new TrainerState(
            Field<long>("step"),
            Field<long>("data_cursor"),
            Field<long>("last_resample_step"),
            Field<float>("normalization_scale")
        );
    }
}
