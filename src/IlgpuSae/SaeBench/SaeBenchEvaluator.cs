using IlgpuSae.Data;
using IlgpuSae.Sae;

namespace IlgpuSae.SaeBench;

/// <summary>SAEBench's token-level core metrics of an SAE on stored activations.</summary>
public static class SaeBenchEvaluator
{
    /// <summary>
    /// Streams up to <paramref name="maxTokens"/> rows of <paramref name="source"/> (in order) through
    /// <paramref name="sae"/>, <paramref name="batchSize"/> rows per evaluation batch, and returns both the
    /// usual <see cref="SaeMetrics"/> and SAEBench's metrics from the same forward passes. Stored activations
    /// carry no prompt structure, so the consistent-activation heuristic is NaN.
    /// </summary>
    /// <exception cref="ArgumentException">The widths differ or there are no rows.</exception>
    /// <exception cref="InvalidDataException">A row holds NaN or ±∞.</exception>
    public static (SaeMetrics Metrics, SaeBenchTokenMetrics SaeBench) EvaluateActivations(
        SparseAutoencoder sae,
        IActivationSource source,
        int batchSize = 1024,
        long maxTokens = long.MaxValue,
        CancellationToken cancellationToken = default
    )
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(source);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        if (source.Dim != sae.DIn)
        {
            throw new ArgumentException(
                $"{source.Description} has d = {source.Dim}, the SAE expects d_in = {sae.DIn}."
            );
        }

        long end = Math.Min(source.Rows, Math.Max(maxTokens, 0));
        if (end <= 0)
        {
            throw new ArgumentException($"No rows to evaluate in {source.Description}.");
        }

        var metrics = new SaeEvaluator.Accumulator(sae.DIn, sae.DSae);
        var bench = new SaeBenchAccumulator(sae.DIn, sae.DSae);
        var x = new float[(long)batchSize * sae.DIn];
        for (long row = 0; row < end; row += batchSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int rows = (int)Math.Min(batchSize, end - row);
            var batch = x.AsSpan(0, rows * sae.DIn);
            source.ReadRows(row, batch);
            for (int i = 0; i < batch.Length; i++)
            {
                if (!float.IsFinite(batch[i]))
                {
                    throw new InvalidDataException(
                        $"{source.Description}: row {row + i / sae.DIn} has a non-finite value at column {i % sae.DIn}."
                    );
                }
            }

            var copy = batch.ToArray();
            var (f, xhat) = sae.ForwardHost(copy, rows);
            metrics.Add(copy, f, xhat, rows);
            bench.Add(copy, f, xhat, rows);
        }

        return (metrics.Result(), bench.Result());
    }
}
