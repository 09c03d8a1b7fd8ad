namespace IlgpuSae.Training;

/// <summary>
/// The learning-rate and λ schedules of a run: linear learning-rate warm-up, linear or cosine decay over the
/// final part of training, the 0.1× drop and cosine recovery after a resampling event (Bricken et al. 2023),
/// and linear λ warm-up from 0.
/// </summary>
public sealed class TrainingSchedule
{
    private readonly TrainerOptions _options;

    /// <summary>Schedules for <paramref name="options"/>.</summary>
    public TrainingSchedule(TrainerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options;
    }

    /// <summary>Learning rate at <paramref name="step"/> (0-based; warm-up factor <c>(step + 1)/W</c>, or
    /// <c>step/W</c> with <see cref="TrainerOptions.LrWarmupFromZero"/>), given the step of the latest
    /// resampling (−1 = none).</summary>
    public double LearningRateAt(long step, long lastResample = -1)
    {
        double lr = _options.LearningRate;
        if (_options.LrWarmupSteps > 0 && step < _options.LrWarmupSteps)
        {
            lr *= (step + (_options.LrWarmupFromZero ? 0.0 : 1.0)) / _options.LrWarmupSteps;
        }

        long decayStart = (long)(_options.LrDecayStartFraction * _options.Steps);
        if (_options.LrDecay != LrDecay.None && step >= decayStart && _options.Steps > decayStart)
        {
            double t = (step - decayStart) / (double)(_options.Steps - decayStart);
            lr *= _options.LrDecay == LrDecay.Linear ? 1 - t : 0.5 * (1 + Math.Cos(Math.PI * t));
        }

        long since = step - lastResample;
        if (lastResample >= 0 && since >= 0 && since < _options.ResampleLrRecoverySteps)
        {
            lr *= 0.1 + 0.9 * 0.5 * (1 - Math.Cos(Math.PI * since / _options.ResampleLrRecoverySteps));
        }

        return lr;
    }

    /// <summary>λ at <paramref name="step"/> (0-based; linear warm-up: <c>λ·(step + 1)/W</c>, or
    /// <c>λ·step/W</c> with <see cref="TrainerOptions.L1WarmupFromZero"/>).</summary>
    public double L1At(long step) =>
        _options.L1WarmupSteps > 0 && step < _options.L1WarmupSteps
            ? _options.Loss.L1Coefficient
                * (step + (_options.L1WarmupFromZero ? 0.0 : 1.0))
                / _options.L1WarmupSteps
            : _options.Loss.L1Coefficient;
}
