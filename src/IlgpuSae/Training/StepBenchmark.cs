using System.Diagnostics;
using IlgpuSae.Backends;
using IlgpuSae.Kernels;
using IlgpuSae.Sae;

namespace IlgpuSae.Training;

/// <summary>The measured speed of one training step.</summary>
/// <param name="Config">The SAE shape.</param>
/// <param name="Batch">Rows per step.</param>
/// <param name="SecondsPerStep">Median wall time of a step (forward, backward, decoder projection, Adam,
/// renormalisation).</param>
/// <param name="FlopsPerStep">The dense step's matrix-product FLOPs (see
/// <see cref="StepBenchmark.DenseStepFlops"/>).</param>
/// <param name="Plan">The device memory plan.</param>
/// <param name="Device">The device, described.</param>
public sealed record StepTiming(
    SaeConfig Config,
    int Batch,
    double SecondsPerStep,
    double FlopsPerStep,
    MemoryPlan Plan,
    string Device
)
{
    /// <summary>Whether the timed steps took the sparse path.</summary>
    public bool Sparse { get; init; }

    /// <summary>Per-phase times of one extra, synchronised step.</summary>
    public StepProfile? Profile { get; init; }

    /// <summary>Fraction of active (row, feature) pairs, when measured.</summary>
    public double Density { get; init; } = double.NaN;

    /// <summary>Rows (tokens) per second.</summary>
    public double TokensPerSecond => Batch / SecondsPerStep;

    /// <summary>Effective GFLOP/s of the dense step's matrix products.</summary>
    public double Gflops => FlopsPerStep / SecondsPerStep / 1e9;
}

/// <summary>Times full training steps of an SAE on random data (the same work as <see cref="SaeTrainer"/> per
/// step).</summary>
public static class StepBenchmark
{
    /// <summary>
    /// Matrix-product FLOPs of one dense step, 2·B·d·M per product: 3 + 2S with S the
    /// stacked reconstructions (encoder, dW_enc, dW_dec once; the decoder and [Φ; Ψ] on S·B rows): standard
    /// 5, gated 7.
    /// </summary>
    public static double DenseStepFlops(SaeConfig config, int batch)
    {
        ArgumentNullException.ThrowIfNull(config);
        double unit = 2.0 * batch * config.DIn * config.DSae;
        int stack = config.Architecture.ReconstructionRows;
        return (3 + 2 * stack) * unit;
    }

    /// <summary>
    /// Runs <paramref name="warmup"/> + <paramref name="steps"/> steps on the given <paramref name="path"/>
    /// and returns the
    /// median timing. With <paramref name="activeFraction"/> set, each feature's gate (or encoder) bias is
    /// placed at
    /// the quantile of its pre-activations on the batch that leaves that fraction of rows active, the state
    /// of a
    /// trained SAE at L0 ≈ fraction·M (random initialisation opens about half of all gates).
    /// </summary>
    public static StepTiming Measure(
        SaeDevice device,
        SaeConfig config,
        int batch,
        int steps = 3,
        int warmup = 1,
        TrainingPath path = TrainingPath.Dense,
        double? activeFraction = null,
        CancellationToken cancellationToken = default,
        double auxDeadFraction = 0
    )
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(config);
        var plan = MemoryPlan.EnsureFits(
            config,
            batch,
            device.Description.MemoryBytes,
            device.Description.Label
        );
        var (sae, x) = Prepare(device, config, batch, activeFraction);
        using var saeScope = sae;
        using var xScope = x;
        sae.Path = path;
        var loss = LossFor(config);
        using var counters =
            auxDeadFraction > 0 ? device.Allocate(1, config.DSae, "steps_since_fired") : null;
        if (counters is not null)
        {
            // The TopK family's AuxK loss on a fraction of dead latents (SAELens's counting: dead whether or
            // not they fire in the batch, so the dead set is exactly the marked latents, every
            // round(1/fraction)-th).
            if (config.K == 0)
            {
                throw new ArgumentException("The AuxK benchmark applies to the TopK family only.");
            }

            int every = Math.Max(1, (int)Math.Round(1 / auxDeadFraction));
            counters.CopyFrom([.. Enumerable.Range(0, config.DSae).Select(i => i % every == 0 ? 2f : 0f)]);
            sae.AuxDeadFeatures = new DeadFeatureWindow(counters.Data, 1f, IncludeCurrentBatch: false);
            loss = loss with
            {
                AuxK = new AuxKOptions
                {
                    KAux = Math.Max(1, config.DIn / 2),
                    Style = AuxKStyle.SaeLens,
                    Coefficient = 1f / 32,
                },
            };
        }

        using var optimizer = CreateOptimizer(sae);
        void Step(int t)
        {
            sae.ComputeGradients(x, loss);
            optimizer.Step(t, LearningRate);
        }

        var times = new List<double>();
        for (int s = 0; s < warmup + steps; s++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var watch = Stopwatch.StartNew();
            Step(s + 1);
            device.Synchronize();
            if (s >= warmup)
            {
                times.Add(watch.Elapsed.TotalSeconds);
            }
        }

        // One more step with a per-phase profile (its synchronisations are kept out of the timings above).
        var profile = new StepProfile();
        sae.Profile = profile;
        Step(warmup + steps + 1);
        profile.Mark(device, "optimizer (projection, Adam, renormalisation)");
        sae.Profile = null;

        times.Sort();
        return new StepTiming(
            config,
            batch,
            times[times.Count / 2],
            DenseStepFlops(config, batch),
            plan,
            device.ToString()
        )
        {
            Sparse = sae.LastStepWasSparse,
            Density = sae.LastDensity,
            Profile = profile,
        };
    }

    /// <summary>The learning rate of every benchmarked step.</summary>
    public const float LearningRate = 1e-4f;

    /// <summary>
    /// The benchmark's starting state: the SAE initialised with seed 1, a batch of standard-normal rows (seed
    /// 2) and, with <paramref name="activeFraction"/> set, each feature's gate (or encoder) bias placed at
    /// the quantile that leaves that fraction of the batch's rows active. Deterministic, so that a second
    /// call (or another implementation given the same tensors) starts from exactly the same point.
    /// </summary>
    public static (SparseAutoencoder Sae, Tensors.DeviceTensor X) Prepare(
        SaeDevice device,
        SaeConfig config,
        int batch,
        double? activeFraction = null
    )
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(config);
        var sae = SparseAutoencoder.Create(device, config, seed: 1);
        var x = device.Allocate(batch, config.DIn, "x");
        device.Ops.FillNormal(x.Data, 0f, 1f, seed: 2);
        if (activeFraction is double fraction)
        {
            SetActiveFraction(sae, x, fraction);
        }

        return (sae, x);
    }

    /// <summary>The benchmark's objective: λ = 10⁻³ on the unweighted L1 (unit-norm decoder), the squared
    /// error summed over the input dimension; the TopK family has no penalty (its sparsity is k) and no
    /// AuxK.</summary>
    public static SaeLossOptions LossFor(SaeConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return new SaeLossOptions { L1Coefficient = config.K > 0 ? 0f : 1e-3f };
    }

    /// <summary>The benchmark's optimizer: Adam with β1 = 0, β2 = 0.999, ε = 10⁻⁸, no clipping, the decoder
    /// gradient projected and the decoder rows renormalised (the paper's recipe).</summary>
    public static ConstrainedAdam CreateOptimizer(SparseAutoencoder sae) =>
        new(sae, new AdamSettings { Beta1 = 0f }, clipNorm: 0f, constrainDecoderNorm: true);

    private static void SetActiveFraction(SparseAutoencoder sae, Tensors.DeviceTensor x, double fraction)
    {
        var device = sae.Device;
        int b = x.Rows,
            m = sae.DSae;
        using var u = device.Allocate(b, m, "U");
        device.Ops.MatMul(x, sae.Parameters[SparseAutoencoder.EncoderTensor], u, GemmLayout.NN);
        var values = u.ToArray();
        var bias = new float[m];
        var column = new float[b];
        // JumpReLU's active entries are z = U + b_enc > θ: its bias is placed relative to θ (0.001 at
        // initialisation), so that exactly `keep` rows clear the threshold. The kernel window (θ − ε/2, θ]
        // then holds the rows just below the quantile, a share of the support that grows with ε (and, with
        // θ < ε/2 as at initialisation, reaches pre-activations below 0).
        var offset =
            sae.Architecture == SaeArchitecture.JumpRelu
                ? sae
                    .Parameters.Download()
                    .AsSpan((int)sae.Parameters.Layout["threshold"].Offset, m)
                    .ToArray()
                : new float[m];
        int keep = Math.Clamp((int)Math.Round(fraction * b), 1, b);
        for (int i = 0; i < m; i++)
        {
            for (int r = 0; r < b; r++)
            {
                column[r] = values[(long)r * m + i];
            }

            Array.Sort(column);
            // Exactly `keep` rows have U + bias > 0, the threshold halfway between two order statistics:
            // no row sits at the gate's discontinuity, where another summation order of U (another
            // backend, or PyTorch in perf/) could flip it.
            float above = column[b - keep];
            float below = keep < b ? column[b - keep - 1] : above - 1f;
            bias[i] = offset[i] + (above > below ? -(0.5f * above + 0.5f * below) : -above + 1e-6f);
        }

        var name = sae.Architecture.ActivationBias(sae.Config);
        using var t = device.Upload(bias, 1, m);
        device.Ops.Copy(t.Data, sae.Parameters[name].Data);
        device.Synchronize();
    }
}
