using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using ILGPU.Runtime;
using IlgpuSae.Data;
using IlgpuSae.IO;
using IlgpuSae.Kernels;
using IlgpuSae.Sae;
using IlgpuSae.Tensors;

namespace IlgpuSae.Training;

/// <summary>A progress report, sent after every step.</summary>
/// <param name="Step">Steps done.</param>
/// <param name="TotalSteps">Steps planned.</param>
/// <param name="Tokens">Rows consumed.</param>
/// <param name="TokensPerSecond">Throughput since this process started training.</param>
/// <param name="Loss">Loss terms of the latest logged step.</param>
/// <param name="DeadFeatures">Features that have not fired within the dead window.</param>
public sealed record TrainingProgress(long Step, long TotalSteps, long Tokens, double TokensPerSecond, LossBreakdown? Loss, int DeadFeatures);

/// <summary>
/// Trains an SAE with Adam on activations: learning-rate warm-up and decay, λ warm-up, unit-norm decoder
/// constraint, gradient clipping, Bricken-style resampling of dead features (0.1× learning rate, cosine
/// recovery), optional activation normalisation, a JSONL metrics log with SAELens names, and atomic
/// checkpoints (weights, Adam moments, data cursor, dead-feature counters) from which training resumes exactly.
/// Runs are deterministic on the CPU accelerator for a given seed.
/// </summary>
public sealed class SaeTrainer : IDisposable
{
    /// <summary>Name of the metrics log in the output folder.</summary>
    public const string MetricsFile = "metrics.jsonl";

    /// <summary>Name of the checkpoint folder in the output folder.</summary>
    public const string CheckpointFolder = "checkpoints";

    private readonly SparseAutoencoder _sae;
    private readonly IActivationSource _data;
    private readonly TrainerOptions _options;
    private readonly string? _output;
    private readonly ActivationLoader _loader;
    private readonly DeviceTensor _batch;
    private readonly DeviceTensor _stepsSinceFired;
    private readonly DeviceTensor _firedCounts;
    private readonly DeviceTensor _gradNorms;
    private readonly float[] _hostBatch;
    private long _step;
    private long _lastResample = -1;
    private float _normScale = 1f;
    private LossBreakdown? _lastLoss;

    /// <summary>Prepares training of <paramref name="sae"/> on <paramref name="data"/>; writes to <paramref name="outputFolder"/> if given.</summary>
    public SaeTrainer(SparseAutoencoder sae, IActivationSource data, TrainerOptions options, string? outputFolder)
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (data.Dim != sae.DIn)
        {
            throw new ArgumentException($"{data.Description} has d = {data.Dim}, the SAE expects d_in = {sae.DIn}.");
        }

        if (options.TrainableParameters is { } names)
        {
            var unknown = names.Where(n => !SparseAutoencoder.TensorNames(sae.Config).Contains(n)).ToArray();
            if (unknown.Length > 0)
            {
                throw new ArgumentException($"Unknown trainable parameter(s) {string.Join(", ", unknown)}; the SAE has {string.Join(", ", SparseAutoencoder.TensorNames(sae.Config))}.");
            }
        }

        if (options.TrainableParameters is not null && options.ResampleEvery > 0)
        {
            throw new ArgumentException("Resampling rewrites encoder and decoder rows; it cannot be combined with a restricted set of trainable parameters.");
        }

        _sae = sae;
        _data = data;
        _options = options;
        _output = outputFolder;
        _loader = new ActivationLoader(data, options.BatchSize, options.Seed, shuffle: true, options.ShuffleBufferRows);
        var device = sae.Device;
        _batch = device.Allocate(options.BatchSize, sae.DIn, "batch");
        _stepsSinceFired = device.Allocate(1, sae.DSae, "steps_since_fired");
        _firedCounts = device.Allocate(1, sae.DSae, "fired_counts");
        _gradNorms = device.Allocate(1, (int)(sae.Parameters.Layout.Length / ParameterLayout.Alignment), "grad_norm_partials");
        device.Ops.Fill(_stepsSinceFired.Data, 0f);
        _hostBatch = new float[(long)options.BatchSize * sae.DIn];
    }

    /// <summary>Steps done so far.</summary>
    public long Step => _step;

    /// <summary>The activation scale in use (1 unless <see cref="TrainerOptions.NormalizeActivations"/>).</summary>
    public float NormalizationScale => _normScale;

    /// <summary>Features that have not fired within the dead window.</summary>
    public int DeadFeatures()
    {
        var steps = _stepsSinceFired.ToArray();
        int window = DeadWindow;
        return steps.Count(s => s >= window);
    }

    private int DeadWindow => _options.ResampleDeadWindow ?? Math.Max(1, _options.ResampleEvery > 0 ? _options.ResampleEvery / 2 : 1000);

    /// <summary>Learning rate at a step (warm-up, decay, resampling recovery).</summary>
    public double LearningRateAt(long step)
    {
        double lr = _options.LearningRate;
        if (_options.LrWarmupSteps > 0 && step < _options.LrWarmupSteps)
        {
            lr *= (step + 1.0) / _options.LrWarmupSteps;
        }

        long decayStart = (long)(_options.LrDecayStartFraction * _options.Steps);
        if (_options.LrDecay != LrDecay.None && step >= decayStart && _options.Steps > decayStart)
        {
            double t = (step - decayStart) / (double)(_options.Steps - decayStart);
            lr *= _options.LrDecay == LrDecay.Linear ? 1 - t : 0.5 * (1 + Math.Cos(Math.PI * t));
        }

        long since = step - _lastResample;
        if (_lastResample >= 0 && since >= 0 && since < _options.ResampleLrRecoverySteps)
        {
            lr *= 0.1 + 0.9 * 0.5 * (1 - Math.Cos(Math.PI * since / _options.ResampleLrRecoverySteps));
        }

        return lr;
    }

    /// <summary>λ at a step (linear warm-up).</summary>
    public double L1At(long step) => _options.L1WarmupSteps > 0 && step < _options.L1WarmupSteps
        ? _options.Loss.L1Coefficient * (step + 1.0) / _options.L1WarmupSteps
        : _options.Loss.L1Coefficient;

    /// <summary>
    /// Runs the remaining steps. Saves the final SAE (activation scale folded in) to the output folder and
    /// returns its loss at the last logged step.
    /// </summary>
    public LossBreakdown? Train(IProgress<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var ops = _sae.Device.Ops;
        var p = _sae.Parameters;
        if (_step == 0 && _options.NormalizeActivations && _normScale == 1f)
        {
            _normScale = EstimateNormalization();
        }

        var watch = Stopwatch.StartNew();
        long startStep = _step;
        var adam = new AdamSettings { Beta1 = _options.Beta1, Beta2 = _options.Beta2, Epsilon = _options.Epsilon, WeightDecay = 0f };
        var trainable = _options.TrainableParameters ?? SparseAutoencoder.TensorNames(_sae.Config);
        bool trainAll = _options.TrainableParameters is null;
        while (_step < _options.Steps)
        {
            cancellationToken.ThrowIfCancellationRequested();
            _loader.NextBatch(_hostBatch);
            if (_normScale != 1f)
            {
                for (int i = 0; i < _hostBatch.Length; i++)
                {
                    _hostBatch[i] *= _normScale;
                }
            }

            _batch.CopyFrom(_hostBatch);
            bool log = (_step + 1) % _options.LogEvery == 0 || _step + 1 == _options.Steps;
            var loss = _sae.ComputeGradients(_batch, _options.Loss with { L1Coefficient = (float)L1At(_step) }, computeLoss: log);

            float gradScale = 1f;
            if (_options.GradClipNorm > 0)
            {
                var grads = new MatrixView(p.Gradients, _gradNorms.Cols, ParameterLayout.Alignment);
                ops.ReduceRows<SumOfSquares>(grads, _gradNorms.Data);
                double norm = Math.Sqrt(_gradNorms.ToArray().Sum(v => (double)v));
                gradScale = norm > _options.GradClipNorm ? (float)(_options.GradClipNorm / norm) : 1f;
            }

            if (_options.ConstrainDecoderNorm)
            {
                ops.ProjectRows(p.Gradient("W_dec"), p["W_dec"]);
            }

            var settings = adam with { LearningRate = (float)LearningRateAt(_step) };
            if (trainAll)
            {
                ops.AdamStep(p.Values, p.Gradients, p.FirstMoments, p.SecondMoments, settings, _step + 1, gradScale);
            }
            else
            {
                foreach (var name in trainable)
                {
                    ops.AdamStep(p[name].Data, p.Gradient(name).Data, p.Get(name, ParameterSection.FirstMoment).Data,
                        p.Get(name, ParameterSection.SecondMoment).Data, settings, _step + 1, gradScale);
                }
            }

            if (_options.ConstrainDecoderNorm)
            {
                ops.NormalizeRows(p["W_dec"], 1e-12f);
            }

            ops.ReduceColumns<CountNonZero>(_sae.LastFeatures(_options.BatchSize), _firedCounts.Data);
            ops.Map(_stepsSinceFired.Data, _firedCounts.Data, _stepsSinceFired.Data, default(StepsSinceFired));
            _step++;

            if (_options.ResampleEvery > 0 && _step % _options.ResampleEvery == 0 && _step < _options.Steps)
            {
                Resample();
            }

            if (log)
            {
                _lastLoss = loss;
                WriteMetrics(loss!, watch.Elapsed.TotalSeconds, (_step - startStep) * (double)_options.BatchSize);
            }

            if (_options.CheckpointEvery > 0 && _step % _options.CheckpointEvery == 0 && _step < _options.Steps)
            {
                SaveCheckpoint();
            }

            double seconds = Math.Max(watch.Elapsed.TotalSeconds, 1e-9);
            progress?.Report(new TrainingProgress(_step, _options.Steps, _step * (long)_options.BatchSize,
                (_step - startStep) * (double)_options.BatchSize / seconds, _lastLoss, log ? DeadFeatures() : -1));
        }

        _sae.Device.Synchronize();
        if (_output is not null)
        {
            SaveFinal(_output);
        }

        return _lastLoss;
    }

    /// <summary>The factor s with E‖s·x‖ = √d over a few batches (SAELens <c>expected_average_only_in</c>).</summary>
    private float EstimateNormalization()
    {
        var probe = new ActivationLoader(_data, _options.BatchSize, _options.Seed ^ 0x4E4F524DUL, shuffle: true, _options.ShuffleBufferRows);
        double sum = 0;
        long n = 0;
        var buffer = new float[_hostBatch.Length];
        int batches = (int)Math.Clamp(_data.Rows / _options.BatchSize, 1, 32);
        for (int k = 0; k < batches; k++)
        {
            probe.NextBatch(buffer);
            for (int r = 0; r < _options.BatchSize; r++)
            {
                double sq = 0;
                for (int j = 0; j < _sae.DIn; j++)
                {
                    double v = buffer[(long)r * _sae.DIn + j];
                    sq += v * v;
                }

                sum += Math.Sqrt(sq);
                n++;
            }
        }

        double mean = sum / n;
        return mean > 0 ? (float)(Math.Sqrt(_sae.DIn) / mean) : 1f;
    }

    /// <summary>
    /// Bricken-style resampling (spec §2.4): each dead feature gets a batch row drawn with probability ∝ its
    /// squared reconstruction error; its decoder row becomes that row's unit direction, its encoder column the
    /// same direction × 0.2 × the mean encoder-column norm of alive features, its biases (and r_mag) 0, and its
    /// Adam moments 0. The learning rate then drops to 0.1× and recovers over a cosine.
    /// </summary>
    private void Resample()
    {
        var steps = _stepsSinceFired.ToArray();
        var dead = Enumerable.Range(0, _sae.DSae).Where(i => steps[i] >= DeadWindow).ToArray();
        if (dead.Length == 0)
        {
            return;
        }

        int d = _sae.DIn, m = _sae.DSae, b = _options.BatchSize;
        var (_, xhat) = _sae.ForwardHost(_hostBatch, b);
        var weights = new double[b];
        for (int r = 0; r < b; r++)
        {
            double e = 0;
            for (int j = 0; j < d; j++)
            {
                double diff = _hostBatch[(long)r * d + j] - xhat[(long)r * d + j];
                e += diff * diff;
            }

            weights[r] = e;
        }

        var p = _sae.Parameters;
        var values = p.Download();
        var m1 = p.Download(ParameterSection.FirstMoment);
        var m2 = p.Download(ParameterSection.SecondMoment);
        var layout = p.Layout;
        long wEnc = layout["W_enc"].Offset, wDec = layout["W_dec"].Offset;
        var alive = Enumerable.Range(0, m).Where(i => steps[i] < DeadWindow).ToArray();
        double aliveNorm = alive.Length == 0 ? 1 : alive.Average(i =>
        {
            double s = 0;
            for (int j = 0; j < d; j++)
            {
                s += values[wEnc + (long)j * m + i] * values[wEnc + (long)j * m + i];
            }

            return Math.Sqrt(s);
        });
        var rng = new SplitMix64(SplitMix64.Mix(_options.Seed, 0x2E5A, (ulong)_step));
        double total = weights.Sum();
        foreach (var i in dead.Take(b))
        {
            int pick = Sample(weights, total, rng.NextDouble());
            double norm = 0;
            for (int j = 0; j < d; j++)
            {
                norm += _hostBatch[(long)pick * d + j] * (double)_hostBatch[(long)pick * d + j];
            }

            norm = Math.Max(Math.Sqrt(norm), 1e-12);
            for (int j = 0; j < d; j++)
            {
                double u = _hostBatch[(long)pick * d + j] / norm;
                values[wDec + (long)i * d + j] = (float)u;
                values[wEnc + (long)j * m + i] = (float)(u * 0.2 * aliveNorm);
                m1[wDec + (long)i * d + j] = m2[wDec + (long)i * d + j] = 0f;
                m1[wEnc + (long)j * m + i] = m2[wEnc + (long)j * m + i] = 0f;
            }

            foreach (var bias in new[] { "b_enc", "b_gate", "b_mag", "r_mag" })
            {
                if (SparseAutoencoder.TensorNames(_sae.Config).Contains(bias))
                {
                    long o = layout[bias].Offset + i;
                    values[o] = m1[o] = m2[o] = 0f;
                }
            }

            steps[i] = 0;
        }

        p.Upload(values);
        p.Upload(m1, ParameterSection.FirstMoment);
        p.Upload(m2, ParameterSection.SecondMoment);
        _stepsSinceFired.CopyFrom(steps);
        _lastResample = _step;
    }

    private static int Sample(double[] weights, double total, double u)
    {
        if (total <= 0)
        {
            return (int)(u * weights.Length);
        }

        double target = u * total, acc = 0;
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

    private void WriteMetrics(LossBreakdown loss, double seconds, double tokensThisRun)
    {
        if (_output is null)
        {
            return;
        }

        var line = new JsonObject
        {
            ["step"] = _step,
            ["n_training_tokens"] = _step * (long)_options.BatchSize,
            ["losses/overall_loss"] = loss.Total,
            ["losses/mse_loss"] = loss.Mse,
            ["losses/l1_loss"] = loss.Sparsity,
            ["losses/auxiliary_reconstruction_loss"] = loss.Aux,
            ["metrics/l0"] = loss.L0,
            ["sparsity/dead_features"] = DeadFeatures(),
            ["details/current_learning_rate"] = LearningRateAt(_step - 1),
            ["details/current_l1_coefficient"] = L1At(_step - 1),
            ["details/tokens_per_second"] = seconds > 0 ? tokensThisRun / seconds : 0,
        };
        Directory.CreateDirectory(_output);
        File.AppendAllText(Path.Combine(_output, MetricsFile), line.ToJsonString() + "\n");
    }

    /// <summary>Writes a checkpoint folder <c>checkpoints/step-NNNNNNNN</c> atomically.</summary>
    public string SaveCheckpoint()
    {
        if (_output is null)
        {
            throw new InvalidOperationException("Checkpoints need an output folder.");
        }

        var folder = Path.Combine(_output, CheckpointFolder, $"step-{_step:D8}");
        var temp = folder + $".tmp-{Guid.NewGuid():N}";
        SaeFiles.Save(_sae, temp);
        var p = _sae.Parameters;
        SafetensorsWriter.Write(Path.Combine(temp, "optimizer.safetensors"),
        [
            new TensorToWrite("exp_avg", [p.Layout.Length], p.Download(ParameterSection.FirstMoment)),
            new TensorToWrite("exp_avg_sq", [p.Layout.Length], p.Download(ParameterSection.SecondMoment)),
            new TensorToWrite("steps_since_fired", [_sae.DSae], _stepsSinceFired.ToArray()),
        ]);
        var state = new JsonObject
        {
            ["step"] = _step,
            ["data_cursor"] = _loader.Cursor,
            ["last_resample_step"] = _lastResample,
            ["normalization_scale"] = _normScale,
            ["seed"] = _options.Seed,
            ["total_steps"] = _options.Steps,
            ["batch_size"] = _options.BatchSize,
        };
        AtomicFile.WriteAllText(Path.Combine(temp, "trainer_state.json"), state.ToJsonString());
        SaeFiles.Replace(temp, folder);
        return folder;
    }

    /// <summary>The newest checkpoint folder under <paramref name="outputFolder"/>, or null.</summary>
    public static string? LatestCheckpoint(string outputFolder)
    {
        var root = Path.Combine(outputFolder, CheckpointFolder);
        return Directory.Exists(root)
            ? Directory.GetDirectories(root, "step-*").Where(d => !d.Contains(".tmp-", StringComparison.Ordinal)).Order(StringComparer.Ordinal).LastOrDefault()
            : null;
    }

    /// <summary>
    /// Restores weights, Adam moments, dead-feature counters, the data cursor and the step from a checkpoint,
    /// and truncates the metrics log to that step, so that training continues exactly as if never stopped.
    /// </summary>
    public void Resume(string checkpoint)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(checkpoint);
        var statePath = Path.Combine(checkpoint, "trainer_state.json");
        var state = JsonNode.Parse(File.ReadAllText(statePath)) as JsonObject ?? throw new InvalidDataException($"{statePath} is not a JSON object.");
        if (state["batch_size"]!.GetValue<int>() != _options.BatchSize || state["seed"]!.GetValue<ulong>() != _options.Seed)
        {
            throw new InvalidDataException($"{checkpoint} was written with batch size {state["batch_size"]} and seed {state["seed"]}; resume with the same settings.");
        }

        using (var saved = SaeFiles.Load(_sae.Device, checkpoint))
        {
            if (saved.Config.DIn != _sae.DIn || saved.Config.DSae != _sae.DSae || saved.Config.Architecture != _sae.Config.Architecture)
            {
                throw new InvalidDataException($"{checkpoint} holds a different SAE ({saved.Config.Architecture}, {saved.DIn}×{saved.DSae}).");
            }

            _sae.CopyParametersFrom(saved);
        }

        using (var optimizer = new SafetensorsFile(Path.Combine(checkpoint, "optimizer.safetensors")))
        {
            _sae.Parameters.Upload(optimizer.ReadFloats("exp_avg"), ParameterSection.FirstMoment);
            _sae.Parameters.Upload(optimizer.ReadFloats("exp_avg_sq"), ParameterSection.SecondMoment);
            _stepsSinceFired.CopyFrom(optimizer.ReadFloats("steps_since_fired"));
        }

        _step = state["step"]!.GetValue<long>();
        _lastResample = state["last_resample_step"]!.GetValue<long>();
        _normScale = state["normalization_scale"]!.GetValue<float>();
        _loader.Seek(state["data_cursor"]!.GetValue<long>());
        if (_output is not null && File.Exists(Path.Combine(_output, MetricsFile)))
        {
            var path = Path.Combine(_output, MetricsFile);
            var kept = File.ReadAllLines(path).Where(l => JsonNode.Parse(l)?["step"]?.GetValue<long>() <= _step).ToArray();
            AtomicFile.WriteAllText(path, kept.Length == 0 ? "" : string.Join("\n", kept) + "\n");
        }
    }

    /// <summary>Saves the SAE with the activation scale folded into the weights (W_enc·s, W_dec/s, b_dec/s).</summary>
    private void SaveFinal(string folder)
    {
        if (_normScale == 1f)
        {
            SaeFiles.Save(_sae, folder);
            return;
        }

        var config = _sae.Config with
        {
            Metadata = new Dictionary<string, object?>(_sae.Config.Metadata)
            {
                ["activation_normalization_folded"] = _normScale.ToString("R", CultureInfo.InvariantCulture),
            },
        };
        using var folded = SparseAutoencoder.CreateEmpty(_sae.Device, config);
        folded.CopyParametersFrom(_sae);
        var ops = _sae.Device.Ops;
        var fp = folded.Parameters;
        ops.Map(fp["W_enc"].Data, fp["W_enc"].Data, new Scale(_normScale));
        if (config.Untied)
        {
            ops.Map(fp["W_mag"].Data, fp["W_mag"].Data, new Scale(_normScale));
        }

        ops.Map(fp["W_dec"].Data, fp["W_dec"].Data, new Scale(1f / _normScale));
        ops.Map(fp["b_dec"].Data, fp["b_dec"].Data, new Scale(1f / _normScale));
        SaeFiles.Save(folded, folder);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _batch.Dispose();
        _stepsSinceFired.Dispose();
        _firedCounts.Dispose();
        _gradNorms.Dispose();
    }
}
