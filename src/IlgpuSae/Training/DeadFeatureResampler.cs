using IlgpuSae.Data;
using IlgpuSae.Kernels;
using IlgpuSae.Sae;
using IlgpuSae.Tensors;

namespace IlgpuSae.Training;

/// <summary>
/// Tracks, per feature, the steps since it last fired, and resamples dead features as Bricken et al. (2023)
/// describe: each dead feature gets a batch row drawn with probability ∝ its squared reconstruction error;
/// its decoder row becomes that row's unit direction, its encoder column the same direction × 0.2 × the mean
/// encoder-column norm of alive features, its feature biases (<see cref="SaeArchitecture.FeatureBiases"/>) 0,
/// and the Adam moments of all of those 0. The trainer then drops the learning rate to 0.1× and lets it
/// recover.
/// </summary>
public sealed class DeadFeatureResampler : IDisposable
{
    private readonly SparseAutoencoder _sae;
    private readonly DeviceTensor _stepsSinceFired;
    private readonly DeviceTensor _firedCounts;
    private readonly ulong _seed;

    /// <summary>Tracks the features of <paramref name="sae"/>; a feature is dead after
    /// <paramref name="deadWindow"/> steps without firing.</summary>
    public DeadFeatureResampler(SparseAutoencoder sae, int deadWindow, ulong seed)
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(deadWindow);
        _sae = sae;
        DeadWindow = deadWindow;
        _seed = seed;
        _stepsSinceFired = sae.Device.Allocate(1, sae.DSae, "steps_since_fired");
        _firedCounts = sae.Device.Allocate(1, sae.DSae, "fired_counts");
        sae.Device.Ops.Fill(_stepsSinceFired.Data, 0f);
    }

    /// <summary>Steps without firing after which a feature counts as dead.</summary>
    public int DeadWindow { get; }

    /// <summary>After a training step: counts the features that fired in it and advances the
    /// counters.</summary>
    /// <param name="group">Data-parallel ranks whose firing counts are summed first (null: one
    /// process).</param>
    public void Observe(ITrainingGroup? group = null)
    {
        _sae.CountFiring(_firedCounts.Data);
        if (group is not null)
        {
            // Data-parallel: a feature fired in this step if it fired on any rank's rows (the counts are
            // whole numbers, so their float sum is exact).
            var counts = _firedCounts.ToArray();
            group.SumToAll(counts);
            _firedCounts.CopyFrom(counts);
        }

        _sae.Device.Ops.Map(
            _stepsSinceFired.Data,
            _firedCounts.Data,
            _stepsSinceFired.Data,
            default(StepsSinceFired)
        );
    }

    /// <summary>Features that have not fired within the dead window.</summary>
    public int DeadFeatures()
    {
        var steps = _stepsSinceFired.ToArray();
        return steps.Count(s => s >= DeadWindow);
    }

    /// <summary>The counters on the device (steps since each feature last fired), for the AuxK
    /// loss.</summary>
    internal ILGPU.ArrayView<float> Counters => _stepsSinceFired.Data;

    /// <summary>The counters, for checkpoints.</summary>
    public float[] StepsSinceFired() => _stepsSinceFired.ToArray();

    /// <summary>Restores the counters from a checkpoint.</summary>
    public void Restore(float[] stepsSinceFired)
    {
        ArgumentNullException.ThrowIfNull(stepsSinceFired);
        if (stepsSinceFired.Length != _sae.DSae)
        {
            throw new InvalidDataException(
                $"steps_since_fired has {stepsSinceFired.Length} entries, the SAE has {_sae.DSae} features."
            );
        }

        _stepsSinceFired.CopyFrom(stepsSinceFired);
    }

    /// <summary>
    /// Resamples the dead features from <paramref name="batch"/> [rows, d] (the step's inputs) at training
    /// step
    /// <paramref name="step"/>; returns the number resampled (at most one per batch row).
    /// </summary>
    public int Resample(float[] batch, int rows, long step)
    {
        ArgumentNullException.ThrowIfNull(batch);
        var steps = _stepsSinceFired.ToArray();
        var dead = Enumerable.Range(0, _sae.DSae).Where(i => steps[i] >= DeadWindow).ToArray();
        if (dead.Length == 0)
        {
            return 0;
        }

        int d = _sae.DIn,
            m = _sae.DSae,
            b = rows;
        var (_, xhat) = _sae.ForwardHost(batch, b);
        var weights = new double[b];
        for (int r = 0; r < b; r++)
        {
            double e = 0;
            for (int j = 0; j < d; j++)
            {
                double diff = batch[(long)r * d + j] - xhat[(long)r * d + j];
                e += diff * diff;
            }

            weights[r] = e;
        }

        var p = _sae.Parameters;
        var values = p.Download();
        var m1 = p.Download(ParameterSection.FirstMoment);
        var m2 = p.Download(ParameterSection.SecondMoment);
        var layout = p.Layout;
        long wEnc = layout[SparseAutoencoder.EncoderTensor].Offset,
            wDec = layout[SparseAutoencoder.DecoderTensor].Offset;
        var biases = _sae.Architecture.FeatureBiases(_sae.Config);
        var alive = Enumerable.Range(0, m).Where(i => steps[i] < DeadWindow).ToArray();
        double aliveNorm =
            alive.Length == 0
                ? 1
                : alive.Average(i =>
                {
                    double s = 0;
                    for (int j = 0; j < d; j++)
                    {
                        s += values[wEnc + (long)j * m + i] * values[wEnc + (long)j * m + i];
                    }

                    return Math.Sqrt(s);
                });
        var rng = new SplitMix64(SplitMix64.Mix(_seed, 0x2E5A, (ulong)step));
        double total = weights.Sum();
        int resampled = 0;
        foreach (var i in dead.Take(b))
        {
            int pick = Sample(weights, total, rng.NextDouble());
            double norm = 0;
            for (int j = 0; j < d; j++)
            {
                norm += batch[(long)pick * d + j] * (double)batch[(long)pick * d + j];
            }

            norm = Math.Max(Math.Sqrt(norm), 1e-12);
            for (int j = 0; j < d; j++)
            {
                double u = batch[(long)pick * d + j] / norm;
                values[wDec + (long)i * d + j] = (float)u;
                values[wEnc + (long)j * m + i] = (float)(u * 0.2 * aliveNorm);
                m1[wDec + (long)i * d + j] = m2[wDec + (long)i * d + j] = 0f;
                m1[wEnc + (long)j * m + i] = m2[wEnc + (long)j * m + i] = 0f;
            }

            foreach (var bias in biases)
            {
                long o = layout[bias].Offset + i;
                values[o] = m1[o] = m2[o] = 0f;
            }

            steps[i] = 0;
            resampled++;
        }

        p.Upload(values);
        p.Upload(m1, ParameterSection.FirstMoment);
        p.Upload(m2, ParameterSection.SecondMoment);
        _stepsSinceFired.CopyFrom(steps);
        return resampled;
    }

    private static int Sample(double[] weights, double total, double u)
    {
        if (total <= 0)
        {
            return (int)(u * weights.Length);
        }

        double target = u * total,
            acc = 0;
        for (int r = 0; r < weights.Length; r++)
        {
            acc += weights[r];
            if (acc > target)
            {
                return r;
            }
        }

        return weights.Length - 1;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _stepsSinceFired.Dispose();
        _firedCounts.Dispose();
    }
}
