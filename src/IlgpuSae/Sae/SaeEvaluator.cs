using System.Text.Json.Serialization;
using IlgpuSae.Data;

namespace IlgpuSae.Sae;

/// <summary>
/// Reconstruction and sparsity metrics of an SAE on held-out activations, under SAELens names (L0, §2.3; γ,
/// §4.2 and Eq. 10 of Rajamanoharan et al. 2024).
/// </summary>
public sealed record SaeMetrics
{
    /// <summary>Rows (tokens) evaluated.</summary>
    [JsonPropertyName("tokens")]
    public long Tokens { get; init; }

    /// <summary>Mean number of non-zero features per token.</summary>
    [JsonPropertyName("l0")]
    public double L0 { get; init; }

    /// <summary>Mean L1 norm of the features per token.</summary>
    [JsonPropertyName("l1")]
    public double L1 { get; init; }

    /// <summary>Mean squared error per element, <c>mean_{b,j} (x − x̂)²</c>.</summary>
    [JsonPropertyName("mse")]
    public double Mse { get; init; }

    /// <summary>
    /// SAELens's <c>explained_variance</c>: <c>1 − Σ_b ‖x − x̂‖² / Σ_b ‖x − x̄‖²</c>, x̄ the mean of each
    /// evaluation batch.
    /// </summary>
    [JsonPropertyName("explained_variance")]
    public double ExplainedVariance { get; init; }

    /// <summary>SAELens's <c>explained_variance_legacy</c>: the per-token <c>1 − ‖x − x̂‖²/‖x − x̄‖²</c>,
    /// averaged.</summary>
    [JsonPropertyName("explained_variance_legacy")]
    public double ExplainedVarianceLegacy { get; init; }

    /// <summary>Mean cosine similarity between x and x̂.</summary>
    [JsonPropertyName("cossim")]
    public double CosSim { get; init; }

    /// <summary>Mean ‖x‖.</summary>
    [JsonPropertyName("l2_norm_in")]
    public double L2NormIn { get; init; }

    /// <summary>Mean ‖x̂‖.</summary>
    [JsonPropertyName("l2_norm_out")]
    public double L2NormOut { get; init; }

    /// <summary>Mean of ‖x̂‖/‖x‖.</summary>
    [JsonPropertyName("l2_ratio")]
    public double L2Ratio { get; init; }

    /// <summary>γ = E‖x̂‖² / E[x·x̂] (ratio of means; γ &lt; 1 is shrinkage). The corrected formula of the
    /// paper's final version.</summary>
    [JsonPropertyName("relative_reconstruction_bias")]
    public double RelativeReconstructionBias { get; init; }

    /// <summary>Fraction of features that fire at least once on the evaluation set.</summary>
    [JsonPropertyName("frac_alive")]
    public double FractionAlive { get; init; }

    /// <summary>Number of features that never fire on the evaluation set.</summary>
    [JsonPropertyName("dead_features")]
    public int DeadFeatures { get; init; }

    /// <summary>Histogram of log10 feature density (fraction of tokens a feature fires on); dead features
    /// excluded.</summary>
    [JsonPropertyName("log10_feature_density_histogram")]
    public DensityHistogram DensityHistogram { get; init; } = new([], []);
}

/// <summary>A histogram: bin edges (length n + 1) and counts (length n).</summary>
/// <param name="Edges">Bin edges.</param>
/// <param name="Counts">Counts per bin.</param>
public sealed record DensityHistogram(
    [property: JsonPropertyName("edges")] double[] Edges,
    [property: JsonPropertyName("counts")] int[] Counts
);

/// <summary>Computes <see cref="SaeMetrics"/> by streaming activations through an SAE on its
/// device.</summary>
public static class SaeEvaluator
{
    /// <summary>
    /// Evaluates <paramref name="sae"/> on up to <paramref name="maxTokens"/> rows of
    /// <paramref name="source"/>
    /// (from <paramref name="startRow"/>, in order), <paramref name="batchSize"/> rows at a time. Device work
    /// is the SAE forward pass; the metrics are accumulated on the host in double precision.
    /// </summary>
    public static SaeMetrics Evaluate(
        SparseAutoencoder sae,
        IActivationSource source,
        int batchSize = 1024,
        long maxTokens = long.MaxValue,
        long startRow = 0,
        CancellationToken cancellationToken = default
    )
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(source);
        if (source.Dim != sae.DIn)
        {
            throw new ArgumentException(
                $"{source.Description} has d = {source.Dim}, the SAE expects d_in = {sae.DIn}."
            );
        }

        long end = Math.Min(source.Rows, startRow + maxTokens);
        if (startRow < 0 || startRow >= end)
        {
            throw new ArgumentException(
                $"No rows to evaluate in [{startRow}, {end}) of {source.Description}."
            );
        }

        var acc = new Accumulator(sae.DIn, sae.DSae);
        var x = new float[(long)batchSize * sae.DIn];
        for (long row = startRow; row < end; row += batchSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int rows = (int)Math.Min(batchSize, end - row);
            var span = x.AsSpan(0, rows * sae.DIn);
            source.ReadRows(row, span);
            int bad = FirstNonFinite(span);
            if (bad >= 0)
            {
                throw new InvalidDataException(
                    $"{source.Description}: row {row + bad / sae.DIn} has a non-finite value at column {bad % sae.DIn}."
                );
            }

            var batch = span.ToArray();
            var (f, xhat) = sae.ForwardHost(batch, rows);
            acc.Add(batch, f, xhat, rows);
        }

        return acc.Result();
    }

    private static int FirstNonFinite(ReadOnlySpan<float> values)
    {
        for (int i = 0; i < values.Length; i++)
        {
            if (!float.IsFinite(values[i]))
            {
                return i;
            }
        }

        return -1;
    }

    /// <summary>Host-side accumulation of the metric sums (public for tests and tools with their own forward
    /// pass).</summary>
    public sealed class Accumulator(int dIn, int dSae)
    {
        private readonly long[] _fired = new long[dSae];
        private double _l0,
            _l1,
            _sq,
            _tv,
            _legacy,
            _cos,
            _normIn,
            _normOut,
            _ratio,
            _xhat2,
            _dot;
        private long _tokens;

        /// <summary>Adds one batch: inputs, features and reconstructions, row-major.</summary>
        public void Add(float[] x, float[] f, float[] xhat, int rows)
        {
            ArgumentNullException.ThrowIfNull(x);
            ArgumentNullException.ThrowIfNull(f);
            ArgumentNullException.ThrowIfNull(xhat);
            var mean = new double[dIn];
            for (int b = 0; b < rows; b++)
            {
                for (int j = 0; j < dIn; j++)
                {
                    mean[j] += x[(long)b * dIn + j] / (double)rows;
                }
            }

            for (int b = 0; b < rows; b++)
            {
                double sq = 0,
                    tv = 0,
                    xx = 0,
                    hh = 0,
                    xh = 0;
                for (int j = 0; j < dIn; j++)
                {
                    double xv = x[(long)b * dIn + j],
                        hv = xhat[(long)b * dIn + j];
                    sq += (xv - hv) * (xv - hv);
                    tv += (xv - mean[j]) * (xv - mean[j]);
                    xx += xv * xv;
                    hh += hv * hv;
                    xh += xv * hv;
                }

                int l0 = 0;
                double l1 = 0;
                for (int i = 0; i < dSae; i++)
                {
                    float fv = f[(long)b * dSae + i];
                    if (fv != 0f)
                    {
                        l0++;
                        _fired[i]++;
                    }

                    l1 += Math.Abs(fv);
                }

                _l0 += l0;
                _l1 += l1;
                _sq += sq;
                _tv += tv;
                _legacy += tv > 0 ? 1 - sq / tv : 0;
                _cos += xx > 0 && hh > 0 ? xh / Math.Sqrt(xx * hh) : 0;
                _normIn += Math.Sqrt(xx);
                _normOut += Math.Sqrt(hh);
                _ratio += xx > 0 ? Math.Sqrt(hh / xx) : 0;
                _xhat2 += hh;
                _dot += xh;
                _tokens++;
            }
        }

        /// <summary>The metrics so far.</summary>
        public SaeMetrics Result()
        {
            double n = Math.Max(_tokens, 1);
            var densities = _fired.Where(c => c > 0).Select(c => Math.Log10(c / n)).ToArray();
            // 24 bins from 10^-decades (the rarest density n tokens can show, at least 10^-6) up to 1.
            double decades = Math.Max(6.0, Math.Ceiling(Math.Log10(n)));
            var edges = Enumerable.Range(0, 25).Select(k => -decades + k * decades / 24).ToArray();
            var counts = new int[edges.Length - 1];
            foreach (var v in densities)
            {
                int bin = Math.Clamp((int)((v - edges[0]) / (edges[1] - edges[0])), 0, counts.Length - 1);
                counts[bin]++;
            }

            int alive = _fired.Count(c => c > 0);
            return new SaeMetrics
            {
                Tokens = _tokens,
                L0 = _l0 / n,
                L1 = _l1 / n,
                Mse = _sq / (n * dIn),
                ExplainedVariance = _tv > 0 ? 1 - _sq / _tv : 0,
                ExplainedVarianceLegacy = _legacy / n,
                CosSim = _cos / n,
                L2NormIn = _normIn / n,
                L2NormOut = _normOut / n,
                L2Ratio = _ratio / n,
                RelativeReconstructionBias = _dot != 0 ? _xhat2 / _dot : double.NaN,
                FractionAlive = alive / (double)dSae,
                DeadFeatures = dSae - alive,
                DensityHistogram = new DensityHistogram(edges, counts),
            };
        }
    }
}
