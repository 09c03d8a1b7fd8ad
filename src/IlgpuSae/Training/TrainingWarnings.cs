using System.Globalization;

namespace IlgpuSae.Training;

/// <summary>
/// Settings that are legal but almost certainly not what was meant, with the numbers: a learning-rate or
/// λ warm-up longer than the run (the value is never reached), a batch larger than the data (every batch
/// repeats rows), a resampling or checkpoint period the run never reaches.
/// </summary>
public static class TrainingWarnings
{
    /// <summary>The warnings for <paramref name="options"/> on <paramref name="dataRows"/> rows of an SAE of
    /// <paramref name="architecture"/> (when known; one sentence each; empty when nothing looks
    /// wrong).</summary>
    public static IReadOnlyList<string> For(
        TrainerOptions options,
        long dataRows,
        Sae.SaeArchitecture? architecture = null
    )
    {
        ArgumentNullException.ThrowIfNull(options);
        var warnings = new List<string>();
        var schedule = new TrainingSchedule(options);
        var c = CultureInfo.InvariantCulture;
        long last = options.Steps - 1;
        if (options.LrWarmupSteps > options.Steps)
        {
            warnings.Add(
                string.Format(
                    c,
                    "the learning-rate warm-up ({0} steps) is longer than the run ({1} steps): the learning rate never reaches {2:G3} (it ends at {3:G3}); lower --lr-warmup or train longer.",
                    options.LrWarmupSteps,
                    options.Steps,
                    options.LearningRate,
                    schedule.LearningRateAt(last)
                )
            );
        }

        if (options.L1WarmupSteps > options.Steps)
        {
            warnings.Add(
                string.Format(
                    c,
                    "the λ warm-up ({0} steps) is longer than the run ({1} steps): λ never reaches {2:G3} (it ends at {3:G3}); lower --l1-warmup or train longer.",
                    options.L1WarmupSteps,
                    options.Steps,
                    options.Loss.L1Coefficient,
                    schedule.L1At(last)
                )
            );
        }

        if (dataRows > 0 && options.BatchSize > dataRows)
        {
            warnings.Add(
                string.Format(
                    c,
                    "the batch size ({0} rows) is larger than the data ({1} rows): every batch repeats rows.",
                    options.BatchSize,
                    dataRows
                )
            );
        }

        if (options.ResampleEvery > 0 && options.ResampleEvery >= options.Steps)
        {
            warnings.Add(
                string.Format(
                    c,
                    "resampling every {0} steps never happens in a run of {1} steps.",
                    options.ResampleEvery,
                    options.Steps
                )
            );
        }

        if (options.CheckpointEvery > 0 && options.CheckpointEvery >= options.Steps)
        {
            warnings.Add(
                string.Format(
                    c,
                    "a checkpoint every {0} steps is never written in a run of {1} steps, so an interruption loses the whole run.",
                    options.CheckpointEvery,
                    options.Steps
                )
            );
        }

        if (
            architecture is Sae.BatchTopKSae
            && !options.Loss.Threshold.SaeLensStyle
            && options.Loss.Threshold.StartStep >= options.Steps - 1
        )
        {
            // dictionary_learning trains such a run too and leaves threshold = −1; so does this trainer (the
            // training form is saved, no inference form).
            warnings.Add(
                string.Format(
                    c,
                    "the threshold estimator updates only after 0-based step {0} and the run has {1} steps: the {2} SAE ends with no inference threshold (only its training form is saved); train longer or lower --threshold-start.",
                    options.Loss.Threshold.StartStep,
                    options.Steps,
                    architecture.Name
                )
            );
        }

        return warnings;
    }
}
