namespace IlgpuSae.SaeBench;

/// <summary>
/// The token-level part of SAEBench's <c>core</c> evaluation (SAEBench 0.6.0,
/// <c>sae_bench/evals/core/main.py</c>, <c>get_sparsity_and_variance_metrics</c>), accumulated in double
/// precision. Each value follows SAEBench's definition, including how it averages over evaluation batches
/// (see the members of <see cref="SaeBenchTokenMetrics"/>), except <c>explained_variance</c>, for which the
/// correct formula is reported and SAEBench's buggy one is kept separately.
/// </summary>
/// <remarks>
/// One call to <see cref="Add"/> is one SAEBench evaluation batch: pass only the positions that count
/// (SAEBench drops BOS/EOS/PAD positions from every average). The rows of one prompt must be consecutive and
/// in one batch.
/// </remarks>
public sealed class SaeBenchAccumulator
{
    private readonly int _d;
    private readonly int _m;
    private readonly long[] _fired;
    private readonly long[] _firedPrompts;
    private readonly int[] _lastPrompt;
    private readonly double[] _shift;
    private readonly double[] _sumX;
    private readonly double[] _sumX2;
    private bool? _promptsGiven;
    private long _tokens;
    private int _batches;
    private double _sse,
        _l0,
        _l1,
        _legacy,
        _mseQuirk,
        _cos,
        _normIn,
        _normOut,
        _ratio,
        _gammaSum,
        _bugSse,
        _bugSquares;

    /// <summary>Creates an empty accumulator for inputs of width <paramref name="dIn"/> and
    /// <paramref name="dSae"/> latents.</summary>
    public SaeBenchAccumulator(int dIn, int dSae)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(dIn);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(dSae);
        (_d, _m) = (dIn, dSae);
        _fired = new long[dSae];
        _firedPrompts = new long[dSae];
        _lastPrompt = new int[dSae];
        _shift = new double[dIn];
        _sumX = new double[dIn];
        _sumX2 = new double[dIn];
    }

    /// <summary>Tokens added so far.</summary>
    public long Tokens => _tokens;

    /// <summary>
    /// Adds one evaluation batch of <paramref name="rows"/> counted positions: inputs <paramref name="x"/>
    /// [rows, d], features <paramref name="f"/> [rows, M] and reconstructions <paramref name="xhat"/>
    /// [rows, d], row-major. <paramref name="prompts"/> gives each row's prompt (non-decreasing; needed for
    /// the consistent-activation heuristic, which is NaN when no batch gave prompts); empty when unknown.
    /// </summary>
    /// <exception cref="ArgumentException">A length does not match, the prompts decrease, or some batches
    /// give prompts and others do not.</exception>
    public void Add(
        ReadOnlySpan<float> x,
        ReadOnlySpan<float> f,
        ReadOnlySpan<float> xhat,
        int rows,
        ReadOnlySpan<int> prompts = default
    )
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        if (x.Length != (long)rows * _d || xhat.Length != (long)rows * _d || f.Length != (long)rows * _m)
        {
            throw new ArgumentException(
                $"Expected x and xhat of {(long)rows * _d} and f of {(long)rows * _m} values for {rows} rows, got {x.Length}, {xhat.Length} and {f.Length}."
            );
        }

        bool given = !prompts.IsEmpty;
        if (given && prompts.Length != rows)
        {
            throw new ArgumentException($"Expected {rows} prompt indices, got {prompts.Length}.");
        }

        if (rows == 0)
        {
            return;
        }

        if (_promptsGiven is { } before && before != given)
        {
            throw new ArgumentException("Either every batch gives its rows' prompts or none does.");
        }

        _promptsGiven = given;
        for (int r = 1; given && r < rows; r++)
        {
            if (prompts[r] < prompts[r - 1])
            {
                throw new ArgumentException(
                    $"Prompt indices must be non-decreasing (row {r}: {prompts[r]} after {prompts[r - 1]})."
                );
            }
        }

        if (_tokens == 0)
        {
            // Shift the per-dimension sums by the first row (numerically stable variance).
            for (int j = 0; j < _d; j++)
            {
                _shift[j] = x[j];
            }
        }

        var mean = new double[_d];
        for (int b = 0; b < rows; b++)
        {
            for (int j = 0; j < _d; j++)
            {
                mean[j] += x[b * _d + j];
            }
        }

        for (int j = 0; j < _d; j++)
        {
            mean[j] /= rows;
        }

        Array.Fill(_lastPrompt, -1);
        double batchSse = 0,
            batchXhat2 = 0,
            batchDot = 0,
            batchX2 = 0;
        for (int b = 0; b < rows; b++)
        {
            double sse = 0,
                tv = 0,
                xx = 0,
                hh = 0,
                xh = 0;
            for (int j = 0; j < _d; j++)
            {
                double xv = x[b * _d + j],
                    hv = xhat[b * _d + j];
                sse += (xv - hv) * (xv - hv);
                tv += (xv - mean[j]) * (xv - mean[j]);
                xx += xv * xv;
                hh += hv * hv;
                xh += xv * hv;
                double c = xv - _shift[j];
                _sumX[j] += c;
                _sumX2[j] += c * c;
            }

            double nx = Math.Sqrt(xx),
                nh = Math.Sqrt(hh);
            _sse += sse;
            _legacy += 1 - sse / tv;
            _cos += xh / (nx * nh);
            _normIn += nx;
            _normOut += nh;
            _ratio += nh / (Math.Abs(nx) < 1e-4 ? 1 : nx);
            batchSse += sse;
            batchXhat2 += hh;
            batchDot += xh;
            batchX2 += xx;

            int l0 = 0;
            double l1 = 0;
            var row = f.Slice(b * _m, _m);
            for (int i = 0; i < _m; i++)
            {
                float v = row[i];
                if (v == 0f)
                {
                    continue;
                }

                l0++;
                l1 += v;
                if (v > 0f)
                {
                    _fired[i]++;
                    if (given && _lastPrompt[i] != prompts[b])
                    {
                        _lastPrompt[i] = prompts[b];
                        _firedPrompts[i]++;
                    }
                }
            }

            _l0 += l0;
            _l1 += l1;
        }

        _tokens += rows;
        _batches++;
        _mseQuirk += batchSse / rows;
        _gammaSum += batchXhat2 / rows / (batchDot / rows);
        _bugSse += batchSse / rows;
        _bugSquares += batchX2 / rows;
    }

    /// <summary>The metrics of everything added so far.</summary>
    /// <exception cref="InvalidOperationException">Nothing was added.</exception>
    public SaeBenchTokenMetrics Result()
    {
        if (_tokens == 0)
        {
            throw new InvalidOperationException("No tokens were added.");
        }

        double n = _tokens;
        double totalVariance = 0;
        for (int j = 0; j < _d; j++)
        {
            double m1 = _sumX[j] / n;
            totalVariance += _sumX2[j] / n - m1 * m1;
        }

        double meanSquares = _bugSquares / _batches;
        double meanPerDim = meanSquares / _d;
        bool prompts = _promptsGiven == true;
        return new SaeBenchTokenMetrics
        {
            Tokens = _tokens,
            Batches = _batches,
            L0 = _l0 / n,
            L1 = _l1 / n,
            Mse = _mseQuirk / n,
            MsePerElement = _sse / (n * _d),
            ExplainedVariance = 1 - _sse / n / totalVariance,
            ExplainedVarianceLegacy = _legacy / n,
            ExplainedVarianceBugCompatible = 1 - _bugSse / _batches / (meanSquares - meanPerDim * meanPerDim),
            CosSim = _cos / n,
            L2NormIn = _normIn / n,
            L2NormOut = _normOut / n,
            L2Ratio = _ratio / n,
            RelativeReconstructionBias = _gammaSum / _batches,
            FeatureDensity = [.. _fired.Select(c => c / n)],
            ConsistentActivationHeuristic = prompts
                ? [.. _fired.Select((c, i) => c / (double)_firedPrompts[i])]
                : [.. Enumerable.Repeat(double.NaN, _m)],
        };
    }
}

/// <summary>
/// SAEBench's token-level core metrics (SAEBench 0.6.0, <c>evals/core/main.py</c>). "Token" means a counted
/// position; "batch" one call to <see cref="SaeBenchAccumulator.Add"/>. Values may be NaN or infinite exactly
/// where SAEBench's are (a zero-norm input or reconstruction, a batch of identical rows).
/// </summary>
public sealed record SaeBenchTokenMetrics
{
    /// <summary>Counted tokens.</summary>
    public long Tokens { get; init; }

    /// <summary>Evaluation batches.</summary>
    public int Batches { get; init; }

    /// <summary><c>l0</c>: mean number of non-zero latents per token.</summary>
    public double L0 { get; init; }

    /// <summary><c>l1</c>: mean of <c>Σ_i f_i</c> per token (no absolute value, as SAEBench).</summary>
    public double L1 { get; init; }

    /// <summary>
    /// <c>mse</c> as SAEBench computes it: <c>mean_t(SSE_t / N_b)</c> with <c>SSE_t = ‖x_t − x̂_t‖²</c> and
    /// <c>N_b</c> the counted tokens of t's batch (not d), so it depends on the batch size.
    /// </summary>
    public double Mse { get; init; }

    /// <summary>The per-element mean squared error <c>E[SSE]/d</c> (not a SAEBench field).</summary>
    public double MsePerElement { get; init; }

    /// <summary>
    /// The correct explained variance, <c>1 − E[SSE] / Σ_j (E[x_j²] − E[x_j]²)</c>, expectations over every
    /// counted token (decoderesearch/SAELens#659): 0 for predicting the per-dimension mean, 1 for a perfect
    /// reconstruction.
    /// </summary>
    public double ExplainedVariance { get; init; }

    /// <summary>
    /// <c>explained_variance_legacy</c>: <c>mean_t[1 − SSE_t / Σ_j (x_tj − μ_j)²]</c>, μ the mean of t's
    /// batch (a mean of per-token ratios; the value the SAEBench paper and Neuronpedia report).
    /// </summary>
    public double ExplainedVarianceLegacy { get; init; }

    /// <summary>
    /// SAEBench 0.6.0's (and SAELens 6.18's) buggy <c>explained_variance</c>:
    /// <c>1 − mean_b E_b[SSE] / (mean_b E_b‖x‖² − (mean_{b,j} E_b[x_j²])²)</c>, means over batches of
    /// per-batch means. Kept for comparison with numbers published from that code.
    /// </summary>
    public double ExplainedVarianceBugCompatible { get; init; }

    /// <summary><c>cossim</c>: mean of <c>cos(x_t, x̂_t)</c> (NaN if any norm is 0, as SAEBench).</summary>
    public double CosSim { get; init; }

    /// <summary><c>l2_norm_in</c>: mean ‖x‖.</summary>
    public double L2NormIn { get; init; }

    /// <summary><c>l2_norm_out</c>: mean ‖x̂‖.</summary>
    public double L2NormOut { get; init; }

    /// <summary><c>l2_ratio</c>: mean of ‖x̂‖/‖x‖, dividing by 1 where ‖x‖ &lt; 1e-4.</summary>
    public double L2Ratio { get; init; }

    /// <summary><c>relative_reconstruction_bias</c>: per batch <c>E‖x̂‖² / E[x·x̂]</c>, then the mean over
    /// batches.</summary>
    public double RelativeReconstructionBias { get; init; }

    /// <summary><c>feature_density</c> per latent: the fraction of counted tokens with
    /// <c>f_i &gt; 0</c>.</summary>
    public IReadOnlyList<double> FeatureDensity { get; init; } = [];

    /// <summary>
    /// <c>consistent_activation_heuristic</c> per latent: tokens with <c>f_i &gt; 0</c> divided by the
    /// prompts with at least one such token (NaN for a dead latent, and for every latent when prompts are
    /// unknown).
    /// </summary>
    public IReadOnlyList<double> ConsistentActivationHeuristic { get; init; } = [];
}
