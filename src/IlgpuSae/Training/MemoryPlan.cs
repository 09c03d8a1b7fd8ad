using System.Globalization;
using IlgpuSae.Sae;
using IlgpuSae.Tensors;

namespace IlgpuSae.Training;

/// <summary>
/// The device memory a training run needs, computed from the shapes before anything is allocated: the flat
/// parameter buffer (values, gradients, two Adam moments), the per-batch workspace of the forward and
/// backward pass, and the trainer's own buffers.
/// </summary>
/// <param name="ParameterBytes">Parameters, gradients and both Adam moments.</param>
/// <param name="ActivationBytes">Per-batch workspace (pre-activations, features, reconstructions, residuals,
/// [Φ; Ψ], dU) and the matrix-product scratch.</param>
/// <param name="TrainerBytes">The trainer's batch, dead-feature counters and gradient-norm partials.</param>
/// <param name="BatchSize">The batch size planned for.</param>
public sealed record MemoryPlan(long ParameterBytes, long ActivationBytes, long TrainerBytes, int BatchSize)
{
    /// <summary>Total bytes.</summary>
    public long TotalBytes => ParameterBytes + ActivationBytes + TrainerBytes;

    /// <summary>Plans a run of <paramref name="config"/> at batch size
    /// <paramref name="batchSize"/>.</summary>
    public static MemoryPlan For(SaeConfig config, int batchSize)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        long d = config.DIn,
            m = config.DSae,
            b = batchSize;
        long stacked = config.Architecture.ReconstructionRows * b;
        int encoders = config.Architecture.EncoderMatrices(config).Count;
        var layout = SparseAutoencoder.LayoutFor(config);
        long parameters = 4 * layout.Length * sizeof(float);
        long floats =
            b * d // centred input
            + b * m * encoders // U (and U_mag)
            + stacked * m // [F; A]
            + 2 * stacked * d // X̂ and Δ stacks
            + stacked * m // [Φ; Ψ]
            + b * m * encoders // dU (and dU_mag)
            + 3 * m
            + m
            + 4 * b // column sums, decoder norms, row scratch
            + 2 * b * m
            + b
            + m // sparse path: row and column index lists (int32)
            + m * d; // CPU-shaped kernels: W_dec transposed for the NT product δ·W_decᵀ
        long trainer = (b * d + 2 * m + layout.Length / ParameterLayout.Alignment) * sizeof(float);
        return new MemoryPlan(parameters, floats * sizeof(float), trainer, batchSize);
    }

    /// <summary>The largest batch size (a multiple of 256 when possible) whose plan fits in
    /// <paramref name="bytes"/>, or 0.</summary>
    public static int LargestBatchFitting(SaeConfig config, long bytes)
    {
        ArgumentNullException.ThrowIfNull(config);
        var one = For(config, 1);
        var two = For(config, 2);
        long perRow = two.TotalBytes - one.TotalBytes;
        long fixedBytes = one.TotalBytes - perRow;
        if (bytes <= fixedBytes + perRow)
        {
            return 0;
        }

        long rows = Math.Min((bytes - fixedBytes) / perRow, int.MaxValue);
        return (int)(rows >= 256 ? rows / 256 * 256 : rows);
    }

    /// <summary>
    /// Throws when the plan for <paramref name="batchSize"/> exceeds <paramref name="deviceBytes"/>, naming
    /// the
    /// largest batch size that fits.
    /// </summary>
    /// <exception cref="ArgumentException">The run does not fit.</exception>
    public static MemoryPlan EnsureFits(SaeConfig config, int batchSize, long deviceBytes, string deviceName)
    {
        var plan = For(config, batchSize);
        if (plan.TotalBytes > deviceBytes)
        {
            int fits = LargestBatchFitting(config, deviceBytes);
            throw new ArgumentException(
                $"The run needs {plan} but {deviceName} has {Gib(deviceBytes)}. "
                    + (
                        fits > 0
                            ? $"A batch size of {fits} fits (--batch-size {fits})."
                            : "Even a batch of 1 does not fit: use a smaller d_sae or another device."
                    )
            );
        }

        return plan;
    }

    /// <summary>A one-line summary, e.g. <c>1.23 GiB = parameters 0.5 GiB + activations 0.7 GiB + trainer
    /// 0.03 GiB</c>.</summary>
    public override string ToString() =>
        string.Create(
            CultureInfo.InvariantCulture,
            $"{Gib(TotalBytes)} = parameters+grads+Adam {Gib(ParameterBytes)} + activations (batch {BatchSize}) {Gib(ActivationBytes)} + trainer {Gib(TrainerBytes)}"
        );

    private static string Gib(long bytes) =>
        bytes >= 1L << 30
            ? string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 30):0.00} GiB")
            : string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 20):0.0} MiB");
}
