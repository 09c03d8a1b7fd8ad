using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using ILGPU.Runtime;
using IlgpuSae.Data;
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
public sealed record TrainingProgress(
    long Step,
    long TotalSteps,
    long Tokens,
    double TokensPerSecond,
    LossBreakdown? Loss,
    int DeadFeatures
);

/// <summary>The time of one training step on this rank.</summary>
/// <param name="Seconds">Wall-clock seconds of the whole step (data, compute, collectives, metrics,
/// checkpoint).</param>
/// <param name="CommunicationSeconds">Of which inside collectives (waiting for other ranks
/// included).</param>
/// <param name="CommunicationBytes">Payload bytes this rank moved in the step's collectives.</param>
public sealed record TrainingStepTime(double Seconds, double CommunicationSeconds, long CommunicationBytes);

/// <summary>
/// Trains an SAE with Adam on activations. The loop is assembled from parts: <see cref="TrainingSchedule"/>
/// (learning-rate warm-up and decay, λ warm-up, recovery after resampling), <see cref="ConstrainedAdam"/>
/// (clipping, decoder projection, Adam, renormalisation), <see cref="DeadFeatureResampler"/>,
/// <see cref="MetricsLog"/> (JSONL, SAELens names) and <see cref="TrainingCheckpoint"/> (atomic checkpoints
/// with
/// <see cref="TrainerConfig"/>, from which training resumes exactly). Optional activation normalisation is
/// folded into the saved weights. Runs are deterministic on the CPU accelerator for a given seed.
/// </summary>
public sealed class SaeTrainer : IDisposable
{
    /// <summary>Name of the metrics log in the output folder.</summary>
    public const string MetricsFile = MetricsLog.FileName;

    /// <summary>Name of the checkpoint folder in the output folder.</summary>
    public const string CheckpointFolder = TrainingCheckpoint.Folder;

    private readonly SparseAutoencoder _sae;
    private readonly IActivationSource _data;
    private readonly TrainerOptions _options;
    private readonly TrainerConfig _config;
    private readonly string? _output;
    private readonly MetricsLog? _log;
    private readonly ActivationLoader _loader;
    private readonly TrainingSchedule _schedule;
    private readonly ConstrainedAdam _optimizer;
    private readonly DeadFeatureResampler _resampler;
    private readonly DeviceTensor _batch;
    private readonly float[] _hostBatch;
    private readonly ITrainingGroup? _group;
    private readonly float[]? _localBatch;
    private readonly float[]? _gradients;
    private readonly FeatureShards? _shards;
    private float[]? _wholeCounters;
    private DeadFeatureResampler? _wholeResampler;
    private long _step;
    private long _lastResample = -1;
    private float _normScale = 1f;
    private LossBreakdown? _lastLoss;

    /// <summary>Prepares training of <paramref name="sae"/> on <paramref name="data"/>; writes to
    /// <paramref name="outputFolder"/> if given.</summary>
    /// <param name="sae">The SAE to train (its weights are the starting point).</param>
    /// <param name="data">The training activations.</param>
    /// <param name="options">Every setting of the run.</param>
    /// <param name="outputFolder">Where the metrics, checkpoints and final SAE go (rank 0 only when
    /// <paramref name="group"/> is given; the other ranks write nothing).</param>
    /// <param name="group">
    /// Data-parallel training over these processes (<c>train --parallel data</c>), or null for one process.
    /// Every rank reads the same seeded shuffle and trains on its own equal, disjoint slice of each global
    /// batch of <see cref="TrainerOptions.BatchSize"/> rows (rank r takes rows [r·B/N, (r+1)·B/N) of the
    /// rows the single-process run uses for that step); the flat gradient buffer is summed over the ranks
    /// (see <see cref="ITrainingGroup.SumToAll(float[])"/>) and divided by N, which is the gradient of the
    /// whole batch, and every rank then applies the same Adam step to the same bits.
    /// </param>
    /// <param name="shards">
    /// With <paramref name="group"/>: train feature-sharded instead (<c>train --parallel features</c>):
    /// <paramref name="sae"/> is this rank's block of features of the whole SAE these describe. Every rank
    /// trains on the whole batch; the partial reconstructions (B × d, stacked with the gated auxiliary
    /// ones) and the b_dec gradient are summed over the ranks; everything else stays on its rank.
    /// </param>
    /// <exception cref="ArgumentException">The batch does not divide among the ranks.</exception>
    /// <exception cref="NotSupportedException">The family cannot train data-parallel here.</exception>
    public SaeTrainer(
        SparseAutoencoder sae,
        IActivationSource data,
        TrainerOptions options,
        string? outputFolder,
        ITrainingGroup? group = null,
        FeatureShards? shards = null
    )
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (!sae.Architecture.CanTrain)
        {
            throw new NotSupportedException($"{sae.Architecture.Name} SAEs cannot be trained here.");
        }

        if (data.Dim != sae.DIn)
        {
            throw new ArgumentException(
                $"{data.Description} has d = {data.Dim}, the SAE expects d_in = {sae.DIn}."
            );
        }

        var names = SparseAutoencoder.TensorNames(sae.Config);
        if (options.TrainableParameters is { } trainable)
        {
            var unknown = trainable.Where(n => !names.Contains(n)).ToArray();
            if (unknown.Length > 0)
            {
                throw new ArgumentException(
                    $"Unknown trainable parameter(s) {string.Join(", ", unknown)}; the SAE has {string.Join(", ", names)}."
                );
            }
        }

        if (options.TrainableParameters is not null && options.ResampleEvery > 0)
        {
            throw new ArgumentException(
                "Resampling rewrites encoder and decoder rows; it cannot be combined with a restricted set of trainable parameters."
            );
        }

        if (shards is not null && group is null)
        {
            throw new ArgumentException("Feature sharding needs a group of ranks.", nameof(shards));
        }

        if (group is not null)
        {
            CheckParallel(sae, options, group, shards);
            if (group.Rank != 0)
            {
                outputFolder = null;
            }
        }

        _group = group;
        _shards = shards;
        _sae = sae;
        _data = data;
        _options = options;
        _config = TrainerConfig.Of(shards?.Whole ?? sae.Config, options);
        _output = outputFolder;
        _log = outputFolder is null ? null : new MetricsLog(outputFolder);
        _loader = new ActivationLoader(
            data,
            options.BatchSize,
            options.Seed,
            shuffle: true,
            options.ShuffleBufferRows
        );
        _schedule = new TrainingSchedule(options);
        int localRows = shards is null ? options.BatchSize / (group?.Size ?? 1) : options.BatchSize;
        _batch = sae.Device.Allocate(localRows, sae.DIn, "batch");
        if (group is not null)
        {
            sae.Collectives = new StepCollectives(
                group.Rank,
                group.Size,
                rowsSplit: shards is null,
                group.SumToAll,
                group.AllGather
            );
        }

        if (shards is not null)
        {
            sae.Sharding = new FeatureShardHooks(SumReconstructions, group!.Rank == 0);
            _gradients = new float[sae.DIn];
            _wholeCounters = new float[shards.Whole.DSae];
        }
        else if (group is not null)
        {
            _localBatch = new float[(long)localRows * sae.DIn];
            _gradients = new float[sae.Parameters.Layout.Length];
        }

        _optimizer = ConstrainedAdam.For(sae, options);
        if (shards is not null && options.GradClipNorm > 0)
        {
            _optimizer.GlobalSquaredNorm = ShardedSquaredNorm(sae, shards, group!);
        }
        _resampler = new DeadFeatureResampler(sae, DeadWindowOf(options), options.Seed);
        _hostBatch = new float[(long)options.BatchSize * sae.DIn];
        CheckFamilyOptions(sae, options);
        if (options.Loss.AuxK is { } aux)
        {
            long tokens =
                options.AuxDeadWindowTokens
                ?? (aux.Style == AuxKStyle.SaeLens ? 1000L * options.BatchSize : 10_000_000L);
            _auxWindowSteps = (float)Math.Ceiling(tokens / (double)options.BatchSize);
        }
        else if (PreActOnDead(sae, options))
        {
            // SAELens's dead_feature_window: 1000 steps.
            long tokens = options.AuxDeadWindowTokens ?? 1000L * options.BatchSize;
            _auxWindowSteps = (float)Math.Ceiling(tokens / (double)options.BatchSize);
        }
    }

    /// <summary>Whether JumpReLU's pre-activation loss restricted to dead latents is on (it reads the
    /// dead-feature counters as the SAELens AuxK does).</summary>
    private static bool PreActOnDead(SparseAutoencoder sae, TrainerOptions options) =>
        sae.Architecture == SaeArchitecture.JumpRelu
        && options.Loss.JumpRelu.PreActCoefficient > 0
        && options.Loss.JumpRelu.PreActLatents == PreActLatents.Dead;

    /// <summary>Refuses data-parallel runs this trainer cannot split exactly.</summary>
    private static void CheckParallel(
        SparseAutoencoder sae,
        TrainerOptions options,
        ITrainingGroup group,
        FeatureShards? shards
    )
    {
        if (shards is not null)
        {
            var expected = FeatureShards.ShardConfig(shards.Whole, group.Size);
            if (
                sae.DSae != expected.DSae
                || sae.DIn != expected.DIn
                || sae.Architecture != expected.Architecture
            )
            {
                throw new ArgumentException(
                    $"A rank's block of a {shards.Whole.DSae}-feature SAE over {group.Size} ranks has {expected.DSae} features, got {sae.DSae}."
                );
            }

            string? refused = options.TrainableParameters is not null
                ? "a restricted set of trainable parameters"
                : null;
            if (refused is not null)
            {
                throw new NotSupportedException(
                    $"feature-sharded training does not support {refused} yet: train with --parallel data or in one process."
                );
            }
        }
        else if (options.BatchSize % group.Size != 0)
        {
            throw new ArgumentException(
                $"the batch size {options.BatchSize} does not divide among {group.Size} ranks: data-parallel training gives every rank an equal share of each global batch; choose a batch size that is a multiple of {group.Size}."
            );
        }

        if (shards is not null && sae.Config.MatryoshkaWidths is not null)
        {
            throw new NotSupportedException(FeatureShards.MatryoshkaRefusal);
        }
    }

    /// <summary>
    /// When set (and training is data-parallel), every rank hashes its weights, Adam moments and
    /// dead-feature counters after every step and the run stops with an error naming the step and rank if
    /// any rank's hash differs from rank 0's (<c>--parallel-check</c>).
    /// </summary>
    public bool VerifyReplicas { get; set; }

    /// <summary>The time of every step this process ran, in order.</summary>
    public IReadOnlyList<TrainingStepTime> StepTimings => _timings;

    private readonly List<TrainingStepTime> _timings = [];

    /// <summary>Seconds this rank has spent in collectives (0 for one process).</summary>
    public double CommunicationSeconds => _group?.CommunicationSeconds ?? 0;

    /// <summary>Bytes this rank has moved in collectives (0 for one process).</summary>
    public long CommunicationBytes => _group?.BytesMoved ?? 0;

    /// <summary>The dead window of the AuxK loss (or of JumpReLU's pre-activation loss on dead latents) in
    /// steps (0 without either).</summary>
    private readonly float _auxWindowSteps;

    /// <summary>Refuses family options that do not apply or would make the run meaningless.</summary>
    private static void CheckFamilyOptions(SparseAutoencoder sae, TrainerOptions options)
    {
        var arch = sae.Architecture;
        bool topKFamily = arch is TopKSae or BatchTopKSae;
        if (options.Loss.AuxK is { } aux)
        {
            if (!topKFamily)
            {
                throw new ArgumentException($"The AuxK loss applies to the TopK family, not to {arch.Name}.");
            }

            if (aux.KAux > sae.DSae)
            {
                throw new ArgumentException($"k_aux = {aux.KAux} exceeds d_sae = {sae.DSae}.");
            }
        }

        if (arch is MatryoshkaSae)
        {
            _ = MatryoshkaSae.LevelWeights(sae.Config, options.Loss);
        }
        else if (options.Loss.LevelWeights is not null)
        {
            throw new ArgumentException(
                $"Level weights apply to matryoshka_batchtopk SAEs only, not to {arch.Name}."
            );
        }

        if (arch == SaeArchitecture.JumpRelu && options.Loss.DecoderNormWeightedL1)
        {
            throw new ArgumentException("JumpReLU's L0 penalty is not decoder-norm weighted.");
        }

        if (arch != SaeArchitecture.JumpRelu && options.Loss.JumpRelu.PreActCoefficient > 0)
        {
            throw new ArgumentException(
                $"The pre-activation loss applies to jumprelu SAEs, not to {arch.Name}."
            );
        }
    }

    /// <summary>Gives the SAE the AuxK (or JumpReLU pre-activation loss) dead set for this step, or none
    /// when no feature can be dead yet (the AuxK products are skipped then; the pre-activation loss is
    /// 0).</summary>
    private void PrepareAuxK()
    {
        if (_options.Loss.AuxK is null && !PreActOnDead(_sae, _options))
        {
            return;
        }

        var steps = _resampler.StepsSinceFired();
        bool saeLens = _options.Loss.AuxK is null || _options.Loss.AuxK.Style == AuxKStyle.SaeLens;
        bool any = saeLens ? steps.Any(s => s > _auxWindowSteps) : steps.Any(s => s + 1f >= _auxWindowSteps);
        _sae.AuxDeadFeatures = any
            ? new DeadFeatureWindow(_resampler.Counters, _auxWindowSteps, IncludeCurrentBatch: !saeLens)
            : null;
    }

    /// <summary>The SAE that init, resume and saving work on: the whole one (rank 0 of a feature-sharded
    /// run) or the one being trained.</summary>
    private SparseAutoencoder Primary => _shards?.WholeOnRoot ?? _sae;

    /// <summary>Steps done so far.</summary>
    public long Step => _step;

    /// <summary>The activation scale in use (1 unless
    /// <see cref="TrainerOptions.NormalizeActivations"/>).</summary>
    public float NormalizationScale => _normScale;

    /// <summary>Every setting of this run, as saved with its checkpoints.</summary>
    public TrainerConfig Config => _config;

    /// <summary>Features that have not fired within the dead window (feature-sharded: of this rank's
    /// block).</summary>
    public int DeadFeatures() => _resampler.DeadFeatures();

    /// <summary>Dead features of the whole SAE: a collective in a feature-sharded run.</summary>
    private int AllDeadFeatures()
    {
        if (_shards is null)
        {
            return DeadFeatures();
        }

        double[] dead = [DeadFeatures()];
        _group!.SumToAll(dead);
        return (int)dead[0];
    }

    private static int DeadWindowOf(TrainerOptions o) =>
        o.ResampleDeadWindow ?? Math.Max(1, o.ResampleEvery > 0 ? o.ResampleEvery / 2 : 1000);

    /// <summary>Learning rate at a step (warm-up, decay, resampling recovery).</summary>
    public double LearningRateAt(long step) => _schedule.LearningRateAt(step, _lastResample);

    /// <summary>λ at a step (linear warm-up).</summary>
    public double L1At(long step) => _schedule.L1At(step);

    /// <summary>
    /// Runs the remaining steps. Saves the final SAE (activation scale folded in) to the output folder and
    /// returns its loss at the last logged step.
    /// </summary>
    public LossBreakdown? Train(
        IProgress<TrainingProgress>? progress = null,
        CancellationToken cancellationToken = default
    )
    {
        bool root = _group is null || _group.Rank == 0;
        if (root && _step == 0 && _options.NormalizeActivations && _normScale == 1f)
        {
            _normScale = EstimateNormalization();
        }

        if (root && _step == 0 && _options.DecoderBiasInit != DecoderBiasInit.Keep)
        {
            InitializeDecoderBias();
        }

        if (_group is not null)
        {
            // Rank 0's weights, Adam moments, counters and position (initialised, loaded by --init or
            // resumed) become every rank's.
            SynchronizeFromRoot();
        }

        var watch = Stopwatch.StartNew();
        long startStep = _step;
        while (_step < _options.Steps)
        {
            cancellationToken.ThrowIfCancellationRequested();
            double stepStart = watch.Elapsed.TotalSeconds,
                commStart = CommunicationSeconds;
            long bytesStart = CommunicationBytes;
            _loader.NextBatch(_hostBatch);
            if (_normScale != 1f)
            {
                for (int i = 0; i < _hostBatch.Length; i++)
                {
                    _hostBatch[i] *= _normScale;
                }
            }

            if (_group is null || _shards is not null)
            {
                _batch.CopyFrom(_hostBatch);
            }
            else
            {
                Array.Copy(
                    _hostBatch,
                    _group.Rank * _localBatch!.LongLength,
                    _localBatch,
                    0,
                    _localBatch.Length
                );
                _batch.CopyFrom(_localBatch);
            }

            bool log = (_step + 1) % _options.LogEvery == 0 || _step + 1 == _options.Steps;
            _sae.TrainingStep = _step + 1;
            PrepareAuxK();
            var loss = _sae.ComputeGradients(
                _batch,
                _options.Loss with
                {
                    L1Coefficient = (float)L1At(_step),
                },
                computeLoss: log
            );
            if (_shards is not null)
            {
                ReduceSharedGradients();
                loss = ReduceShardLoss(loss);
            }
            else if (_group is not null)
            {
                ReduceGradients();
                loss = ReduceLoss(loss);
            }

            _optimizer.Step(_step + 1, (float)LearningRateAt(_step));
            _resampler.Observe(_shards is null ? _group : null);
            _step++;

            if (_options.ResampleEvery > 0 && _step % _options.ResampleEvery == 0 && _step < _options.Steps)
            {
                if (Resample() > 0)
                {
                    _lastResample = _step;
                }
            }

            if (VerifyReplicas && _group is not null)
            {
                EnsureReplicasEqual();
            }

            int dead = log ? AllDeadFeatures() : -1;
            if (log)
            {
                _lastLoss = loss;
                WriteMetrics(
                    loss!,
                    watch.Elapsed.TotalSeconds,
                    (_step - startStep) * (double)_options.BatchSize,
                    dead
                );
            }

            if (
                _options.CheckpointEvery > 0
                && _step % _options.CheckpointEvery == 0
                && _step < _options.Steps
            )
            {
                GatherWhole();
                if (root)
                {
                    SaveCheckpoint();
                }
            }

            _timings.Add(
                new TrainingStepTime(
                    watch.Elapsed.TotalSeconds - stepStart,
                    CommunicationSeconds - commStart,
                    CommunicationBytes - bytesStart
                )
            );
            double seconds = Math.Max(watch.Elapsed.TotalSeconds, 1e-9);
            progress?.Report(
                new TrainingProgress(
                    _step,
                    _options.Steps,
                    _step * (long)_options.BatchSize,
                    (_step - startStep) * (double)_options.BatchSize / seconds,
                    _lastLoss,
                    dead
                )
            );
        }

        _sae.Device.Synchronize();
        GatherWhole();
        if (_output is not null)
        {
            SaveFinal(_output);
        }

        return _lastLoss;
    }

    /// <summary>
    /// Sums the flat gradient buffer over the ranks and divides it by their number. Each rank's gradient is
    /// the mean over its B/N rows, so the mean of the N rank gradients is the mean over all B rows: the
    /// single-process gradient up to the order of the float additions.
    /// </summary>
    private void ReduceGradients()
    {
        var stream = _sae.Device.Stream;
        var gradients = _sae.Parameters.Gradients;
        _sae.Device.Synchronize();
        gradients.CopyToCPU(stream, _gradients!);
        _sae.Device.Synchronize();
        _group!.SumToAll(_gradients!);
        float inverse = 1f / _group.Size;
        for (int i = 0; i < _gradients!.Length; i++)
        {
            _gradients[i] *= inverse;
        }

        gradients.CopyFromCPU(stream, _gradients);
        _sae.Device.Synchronize();
    }

    /// <summary>
    /// Feature-sharded gradient clipping: the whole SAE's squared gradient norm from a block's partial sums
    /// (one per aligned chunk of its flat buffer): the feature blocks' parts summed over the ranks, the
    /// replicated tensors' (b_dec, summed before) once.
    /// </summary>
    private static Func<float[], double> ShardedSquaredNorm(
        SparseAutoencoder sae,
        FeatureShards shards,
        ITrainingGroup group
    )
    {
        var wholeLayout = SparseAutoencoder.LayoutFor(shards.Whole);
        var replicated = new bool[sae.Parameters.Layout.Length / ParameterLayout.Alignment];
        foreach (var e in sae.Parameters.Layout.Entries.Where(e => FeatureShards.Replicated(wholeLayout, e)))
        {
            long first = e.Offset / ParameterLayout.Alignment;
            long chunks = (e.Length + ParameterLayout.Alignment - 1) / ParameterLayout.Alignment;
            for (long i = first; i < first + chunks; i++)
            {
                replicated[i] = true;
            }
        }

        return partials =>
        {
            double shared = 0;
            double[] block = [0];
            for (int i = 0; i < partials.Length; i++)
            {
                if (replicated[i])
                {
                    shared += partials[i];
                }
                else
                {
                    block[0] += partials[i];
                }
            }

            group.SumToAll(block);
            return block[0] + shared;
        };
    }

    /// <summary>Feature-sharded: the sum over the ranks of the partial reconstructions (every rank's
    /// stacked F·W_dec rows), the same bits on each.</summary>
    private void SumReconstructions(MatrixView partial)
    {
        var host = new float[partial.Length];
        _sae.Device.Synchronize();
        partial.Data.CopyToCPU(_sae.Device.Stream, host);
        _sae.Device.Synchronize();
        _group!.SumToAll(host);
        partial.Data.CopyFromCPU(_sae.Device.Stream, host);
        _sae.Device.Synchronize();
    }

    /// <summary>Feature-sharded: sums the b_dec gradient over the ranks (rank 0 holds the output term,
    /// every rank its block's input-centring term).</summary>
    private void ReduceSharedGradients()
    {
        var g = _sae.Parameters.Gradient(SparseAutoencoder.DecoderBiasTensor).Data;
        _sae.Device.Synchronize();
        g.CopyToCPU(_sae.Device.Stream, _gradients!);
        _sae.Device.Synchronize();
        _group!.SumToAll(_gradients!);
        g.CopyFromCPU(_sae.Device.Stream, _gradients!);
        _sae.Device.Synchronize();
    }

    /// <summary>Feature-sharded loss: the reconstruction terms are computed from the summed reconstruction
    /// (alike on every rank); the sparsity penalty and L0 are sums over the feature blocks.</summary>
    private LossBreakdown? ReduceShardLoss(LossBreakdown? local)
    {
        if (local is null)
        {
            return null;
        }

        // JumpReLU's auxiliary term (the pre-activation loss) is a sum over features; gated's auxiliary
        // reconstruction comes from the summed reconstructions. JumpReLU's target-L0 term is formed from the
        // batch L0 already summed over the blocks.
        bool jumpRelu = _sae.Architecture == SaeArchitecture.JumpRelu;
        bool coupled = jumpRelu && _options.Loss.JumpRelu.Sparsity == JumpReluSparsity.TargetL0;
        double[] terms = [coupled ? 0 : local.Sparsity, local.L0, jumpRelu ? local.Aux : 0];
        _group!.SumToAll(terms);
        return new LossBreakdown(
            local.Mse,
            coupled ? local.Sparsity : terms[0],
            jumpRelu ? terms[2] : local.Aux,
            terms[1]
        );
    }

    private static readonly ParameterSection[] StateSections =
    [
        ParameterSection.Values,
        ParameterSection.FirstMoment,
        ParameterSection.SecondMoment,
    ];

    /// <summary>Feature-sharded: rank 0 sends the whole SAE's weights, moments and counters; each rank keeps
    /// its block.</summary>
    private void ScatterWhole()
    {
        var shards = _shards!;
        var wholeLayout = SparseAutoencoder.LayoutFor(shards.Whole);
        var p = _sae.Parameters;
        var block = new float[p.Layout.Length];
        foreach (var section in StateSections)
        {
            var whole = shards.WholeOnRoot?.Parameters.Download(section) ?? new float[wholeLayout.Length];
            _group!.Broadcast(whole);
            FeatureShards.Copy(wholeLayout, p.Layout, _group.Rank, whole, block, toShard: true);
            p.Upload(block, section);
        }

        var counters = _group!.Rank == 0 ? _wholeCounters! : new float[shards.Whole.DSae];
        _group.Broadcast(counters);
        _resampler.Restore(counters.AsSpan(_group.Rank * _sae.DSae, _sae.DSae).ToArray());
    }

    /// <summary>Feature-sharded: gathers every rank's block into rank 0's whole SAE (a collective; a no-op
    /// otherwise).</summary>
    private void GatherWhole()
    {
        if (_shards is null)
        {
            return;
        }

        var wholeLayout = SparseAutoencoder.LayoutFor(_shards.Whole);
        var p = _sae.Parameters;
        long blockLength = p.Layout.Length;
        foreach (var section in StateSections)
        {
            var all = _group!.Gather(p.Download(section));
            if (all is null)
            {
                continue;
            }

            var whole = new float[wholeLayout.Length];
            for (int r = 0; r < _group.Size; r++)
            {
                var block = all.AsSpan((int)(r * blockLength), (int)blockLength).ToArray();
                FeatureShards.Copy(wholeLayout, p.Layout, r, whole, block, toShard: false);
            }

            _shards.WholeOnRoot!.Parameters.Upload(whole, section);
        }

        var counters = _group!.Gather(_resampler.StepsSinceFired());
        if (counters is not null)
        {
            _wholeCounters = counters;
        }
    }

    /// <summary>The loss terms over the whole global batch: the mean of the ranks' means (equal
    /// shares).</summary>
    private LossBreakdown? ReduceLoss(LossBreakdown? local)
    {
        if (local is null)
        {
            return null;
        }

        double[] terms = [local.Mse, local.Sparsity, local.Aux, local.L0];
        _group!.SumToAll(terms);
        double n = _group.Size;
        return new LossBreakdown(terms[0] / n, terms[1] / n, terms[2] / n, terms[3] / n);
    }

    /// <summary>Resamples dead features: in one process directly; data-parallel, rank 0 decides on the
    /// whole global batch (every rank holds it) and sends the result to the others; feature-sharded, the
    /// blocks (weights, moments, counters) are gathered into rank 0's whole SAE, which is resampled as one
    /// process would and scattered again.</summary>
    private int Resample()
    {
        if (_group is null)
        {
            return _resampler.Resample(_hostBatch, _options.BatchSize, _step);
        }

        if (_shards is not null)
        {
            GatherWhole();
            long[] count = [_group.Rank == 0 ? ResampleWhole() : 0];
            _group.Broadcast(count);
            if (count[0] > 0)
            {
                ScatterWhole();
            }

            return (int)count[0];
        }

        long[] resampled =
        [
            _group.Rank == 0 ? _resampler.Resample(_hostBatch, _options.BatchSize, _step) : 0,
        ];
        _group.Broadcast(resampled);
        if (resampled[0] > 0)
        {
            BroadcastWeightsAndCounters();
        }

        return (int)resampled[0];
    }

    /// <summary>Feature-sharded, rank 0: resamples the gathered whole SAE (on the host device) from the
    /// global batch and keeps its counters for the scatter.</summary>
    private int ResampleWhole()
    {
        _wholeResampler ??= new DeadFeatureResampler(
            _shards!.WholeOnRoot!,
            _resampler.DeadWindow,
            _options.Seed
        );
        _wholeResampler.Restore(_wholeCounters!);
        int count = _wholeResampler.Resample(_hostBatch, _options.BatchSize, _step);
        _wholeCounters = _wholeResampler.StepsSinceFired();
        return count;
    }

    /// <summary>Rank 0's weights, Adam moments and dead-feature counters, on every rank.</summary>
    private void BroadcastWeightsAndCounters()
    {
        var p = _sae.Parameters;
        foreach (
            var section in new[]
            {
                ParameterSection.Values,
                ParameterSection.FirstMoment,
                ParameterSection.SecondMoment,
            }
        )
        {
            var host = p.Download(section);
            _group!.Broadcast(host);
            p.Upload(host, section);
        }

        var counters = _resampler.StepsSinceFired();
        _group!.Broadcast(counters);
        _resampler.Restore(counters);
    }

    /// <summary>Makes every rank continue from rank 0's state: weights, moments, counters, step, data
    /// cursor, last resampling and activation scale.</summary>
    private void SynchronizeFromRoot()
    {
        if (_shards is null)
        {
            BroadcastWeightsAndCounters();
        }
        else
        {
            ScatterWhole();
        }

        long[] state = [_step, _loader.Cursor, _lastResample, BitConverter.SingleToInt32Bits(_normScale)];
        _group!.Broadcast(state);
        // Every rank reads the same rows in the same order from here on (rank 0's set-up reads are done).
        (_data as ICollectiveActivationSource)?.EnterLockstep();
        _step = state[0];
        _loader.Seek(state[1]);
        _lastResample = state[2];
        _normScale = BitConverter.Int32BitsToSingle((int)state[3]);
    }

    /// <summary>Fails if any rank's weights, moments or counters differ from rank 0's by one bit.</summary>
    private void EnsureReplicasEqual()
    {
        var p = _sae.Parameters;
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var wholeLayout = _shards is null ? null : SparseAutoencoder.LayoutFor(_shards.Whole);
        foreach (
            var section in new[]
            {
                ParameterSection.Values,
                ParameterSection.FirstMoment,
                ParameterSection.SecondMoment,
            }
        )
        {
            var host = p.Download(section);
            if (wholeLayout is null)
            {
                hash.AppendData(MemoryMarshal.AsBytes(host.AsSpan()));
                continue;
            }

            // Feature-sharded: only the replicated tensors (b_dec) must agree.
            foreach (var e in p.Layout.Entries.Where(e => FeatureShards.Replicated(wholeLayout, e)))
            {
                hash.AppendData(MemoryMarshal.AsBytes(host.AsSpan((int)e.Offset, (int)e.Length)));
            }
        }

        if (wholeLayout is null)
        {
            hash.AppendData(MemoryMarshal.AsBytes(_resampler.StepsSinceFired().AsSpan()));
        }

        var all = _group!.AllGather(hash.GetHashAndReset());
        for (int r = 1; r < all.Length; r++)
        {
            if (!all[r].AsSpan().SequenceEqual(all[0]))
            {
                throw new InvalidOperationException(
                    $"parallel check: after step {_step} the weights of rank {r} differ from rank 0's (SHA-256 {Convert.ToHexStringLower(all[r])[..16]}… vs {Convert.ToHexStringLower(all[0])[..16]}…)."
                );
            }
        }
    }

    /// <summary>
    /// SHA-256 of what must agree across the ranks of a data-parallel run: every trainer setting, the SAE's
    /// shape and family, the data's shape and the contents of the first global batch (so ranks that read
    /// other files, or the same path holding other data, are told apart).
    /// </summary>
    public byte[] ConfigurationDigest()
    {
        var text = new StringBuilder();
        foreach (var (key, value) in _config.Values.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            text.Append(key).Append('=').Append(value).Append('\n');
        }

        text.Append(
            CultureInfo.InvariantCulture,
            $"arch={_sae.Architecture.Name} d_in={_sae.DIn} d_sae={_sae.DSae} rows={_data.Rows} dim={_data.Dim}\n"
        );
        var probe = new ActivationLoader(
            _data,
            _options.BatchSize,
            _options.Seed,
            shuffle: true,
            _options.ShuffleBufferRows
        );
        var first = new float[_hostBatch.Length];
        probe.NextBatch(first);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(Encoding.UTF8.GetBytes(text.ToString()));
        hash.AppendData(MemoryMarshal.AsBytes(first.AsSpan()));
        return hash.GetHashAndReset();
    }

    /// <summary>The factor s with E‖s·x‖ = √d over a few batches (SAELens
    /// <c>expected_average_only_in</c>).</summary>
    private float EstimateNormalization()
    {
        var probe = new ActivationLoader(
            _data,
            _options.BatchSize,
            _options.Seed ^ 0x4E4F524DUL,
            shuffle: true,
            _options.ShuffleBufferRows
        );
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

    /// <summary>b_dec from the first training batch (the same rows step 1 trains on), scaled as training
    /// sees them.</summary>
    private void InitializeDecoderBias()
    {
        var probe = new ActivationLoader(
            _data,
            _options.BatchSize,
            _options.Seed,
            shuffle: true,
            _options.ShuffleBufferRows
        );
        var rows = new float[_hostBatch.Length];
        probe.NextBatch(rows);
        if (_normScale != 1f)
        {
            for (int i = 0; i < rows.Length; i++)
            {
                rows[i] *= _normScale;
            }
        }

        var center =
            _options.DecoderBiasInit == DecoderBiasInit.Mean
                ? GeometricMedian.Mean(rows, _options.BatchSize, _sae.DIn)
                : GeometricMedian.Compute(rows, _options.BatchSize, _sae.DIn);
        var target = Primary;
        target
            .Parameters[SparseAutoencoder.DecoderBiasTensor]
            .Data.CopyFromCPU(target.Device.Stream, center.Select(v => (float)v).ToArray());
        target.Device.Synchronize();
    }

    private void WriteMetrics(LossBreakdown loss, double seconds, double tokensThisRun, int dead)
    {
        if (_log is null)
        {
            return;
        }

        var record = MetricsRecord(loss, seconds, tokensThisRun, dead);
        if (_sae.Architecture is BatchTopKSae)
        {
            // The inference threshold as estimated so far (negative while unset), to compare the inference L0
            // with k (SAELens's EMA starts at 0 and runs low in short runs).
            record["details/topk_threshold"] = BatchTopKSae.Threshold(_sae);
        }

        _log.Append(record);
    }

    private JsonObject MetricsRecord(LossBreakdown loss, double seconds, double tokensThisRun, int dead) =>
        new JsonObject
        {
            ["step"] = _step,
            ["n_training_tokens"] = _step * (long)_options.BatchSize,
            ["losses/overall_loss"] = loss.Total,
            ["losses/mse_loss"] = loss.Mse,
            ["losses/l1_loss"] = loss.Sparsity,
            ["losses/auxiliary_reconstruction_loss"] = loss.Aux,
            ["metrics/l0"] = loss.L0,
            ["sparsity/dead_features"] = dead,
            ["details/current_learning_rate"] = LearningRateAt(_step - 1),
            ["details/current_l1_coefficient"] = L1At(_step - 1),
            ["details/tokens_per_second"] = seconds > 0 ? tokensThisRun / seconds : 0,
        };

    /// <summary>Writes a checkpoint folder <c>checkpoints/step-NNNNNNNN</c> atomically.</summary>
    public string SaveCheckpoint()
    {
        if (_output is null)
        {
            throw new InvalidOperationException("Checkpoints need an output folder.");
        }

        return TrainingCheckpoint.Save(
            _output,
            Primary,
            _shards is null ? _resampler.StepsSinceFired() : _wholeCounters!,
            new TrainerState(_step, _loader.Cursor, _lastResample, _normScale),
            _config
        );
    }

    /// <summary>The newest checkpoint folder under <paramref name="outputFolder"/>, or null.</summary>
    public static string? LatestCheckpoint(string outputFolder) => TrainingCheckpoint.Latest(outputFolder);

    /// <summary>
    /// Restores weights, Adam moments, dead-feature counters, the data cursor and the step from a checkpoint,
    /// and truncates the metrics log to that step, so that training continues exactly as if never stopped.
    /// Every setting must equal the checkpoint's <c>trainer_config.json</c>, except those named in
    /// <paramref name="overrides"/> (which may not include the run-defining ones,
    /// <see cref="TrainerConfig.Fixed"/>).
    /// </summary>
    /// <exception cref="InvalidOperationException">A setting differs from the checkpoint's; the message names
    /// it.</exception>
    /// <exception cref="InvalidDataException">The checkpoint is malformed or holds another SAE.</exception>
    public void Resume(string checkpoint, IReadOnlyCollection<string>? overrides = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(checkpoint);
        TrainingCheckpoint.EnsureCompatible(checkpoint, _config, overrides);
        var (state, stepsSinceFired) = TrainingCheckpoint.Load(checkpoint, Primary);
        if (_shards is null)
        {
            _resampler.Restore(stepsSinceFired);
        }
        else
        {
            _wholeCounters = stepsSinceFired; // sent to the ranks when training starts
        }

        _step = state.Step;
        _lastResample = state.LastResample;
        _normScale = state.NormalizationScale;
        _loader.Seek(state.DataCursor);
        _log?.TruncateAfter(_step);
    }

    /// <summary>Saves the SAE with the activation scale folded into the weights, and this run's settings
    /// beside it.</summary>
    private void SaveFinal(string folder)
    {
        var sae = Primary;
        if (_normScale == 1f)
        {
            SaveForms(sae, folder);
        }
        else
        {
            var metadata = new Dictionary<string, object?>(sae.Config.Metadata)
            {
                ["activation_normalization_folded"] = _normScale.ToString("R", CultureInfo.InvariantCulture),
            };
            using var folded = sae.WithInputScaleFolded(_normScale, metadata);
            SaveForms(folded, folder);
        }

        _config.Write(Path.Combine(folder, TrainerConfig.FileName));
    }

    /// <summary>Name of the subfolder holding the training form of a family saved for inference in another
    /// form (BatchTopK, Matryoshka; TopK with rescale_acts_by_decoder_norm).</summary>
    public const string TrainingFormFolder = "training_form";

    /// <summary>
    /// Saves the SAE in its inference form (BatchTopK and Matryoshka: JumpReLU, as SAELens does) and, when
    /// that differs, the training form under <see cref="TrainingFormFolder"/>.
    /// </summary>
    private static void SaveForms(SparseAutoencoder sae, string folder)
    {
        SparseAutoencoder? inference;
        try
        {
            inference = sae.Architecture.InferenceForm(sae);
        }
        catch (InvalidOperationException)
        {
            inference = null; // the threshold never got set: keep the training form, whose encode says so
        }

        if (inference is null)
        {
            SaeFiles.Save(sae, folder);
            return;
        }

        using (inference)
        {
            SaeFiles.Save(inference, folder);
        }

        SaeFiles.Save(sae, Path.Combine(folder, TrainingFormFolder));
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _batch.Dispose();
        _optimizer.Dispose();
        _resampler.Dispose();
        _wholeResampler?.Dispose();
    }
}
