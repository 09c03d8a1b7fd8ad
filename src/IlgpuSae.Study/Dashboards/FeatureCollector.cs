using IlgpuSae.Data;

namespace IlgpuSae.Study.Dashboards;

/// <summary>Sizes of what <see cref="FeatureCollector"/> keeps per feature.</summary>
public sealed record CollectorShape
{
    /// <summary>Top activating examples kept per feature (SAEDashboard <c>top_acts_group_size</c>).</summary>
    public int TopK { get; init; } = 20;

    /// <summary>Equal-width intervals of [0, max] (SAEDashboard's <c>n_quantiles</c>).</summary>
    public int Intervals { get; init; } = 5;

    /// <summary>Random examples kept per interval (<c>quantile_group_size</c>).</summary>
    public int PerInterval { get; init; } = 5;

    /// <summary>Tokens shown on each side of an example's token (SAEDashboard's HTML default is 5).</summary>
    public int Window { get; init; } = 5;

    /// <summary>Bins of the activation histogram (SAEDashboard: 50).</summary>
    public int HistogramBins { get; init; } = 50;

    /// <summary>Seed of the interval samples.</summary>
    public ulong Seed { get; init; }

    /// <summary>Window length, 2·Window + 1.</summary>
    public int WindowLength => 2 * Window + 1;
}

/// <summary>One example: a token, its activation and the activations of its window.</summary>
/// <param name="Value">The feature's activation at the token.</param>
/// <param name="Row">The token's index among the tokens counted (special tokens are not counted).</param>
/// <param name="Context">The context (prompt) it is in.</param>
/// <param name="Position">Its position in the context (BOS is position 0).</param>
/// <param name="Window">The feature's activations at positions Position − w … Position + w (NaN outside the
/// context; 0 at special tokens).</param>
public sealed record FeatureExample(float Value, long Row, int Context, int Position, float[] Window);

/// <summary>
/// Per-feature statistics of SAE activations, merged batch by batch without holding the activations: pass 1
/// gives the count, sum, sum of squares, max and smallest non-zero value, the top-k examples (ties to the
/// earliest token), the sums Σ fᵢ fⱼ over tokens against every feature and Σ fᵢ xₙ against every input
/// neuron; pass 2, which needs pass 1's max and min, gives the histogram of the non-zero values and the
/// interval groups. An interval sample is the <see cref="CollectorShape.PerInterval"/> firing tokens of the
/// interval with the smallest hash of (seed, feature, row) — a uniform sample without replacement that needs
/// no random state, so it is the same however the run is cut and resumed.
/// </summary>
public sealed class FeatureCollector
{
    private readonly int[] _slot;

    /// <summary>Creates an empty collector.</summary>
    /// <param name="dSae">Width of the SAE.</param>
    /// <param name="dIn">Width of its input.</param>
    /// <param name="features">The features to collect, in increasing order.</param>
    /// <param name="shape">What to keep.</param>
    /// <param name="crossFeatures">Whether to keep Σ fᵢ fⱼ (features × d_sae doubles).</param>
    public FeatureCollector(int dSae, int dIn, int[] features, CollectorShape shape, bool crossFeatures)
    {
        ArgumentNullException.ThrowIfNull(features);
        ArgumentNullException.ThrowIfNull(shape);
        DSae = dSae;
        DIn = dIn;
        Features = features;
        Shape = shape;
        _slot = new int[dSae];
        Array.Fill(_slot, -1);
        for (int s = 0; s < features.Length; s++)
        {
            if (features[s] < 0 || features[s] >= dSae || (s > 0 && features[s] <= features[s - 1]))
            {
                throw new ArgumentException(
                    $"Features must be distinct, in increasing order and in [0, {dSae}); got {features[s]}."
                );
            }

            _slot[features[s]] = s;
        }

        int n = features.Length;
        Count = new long[n];
        Sum = new double[n];
        SumSq = new double[n];
        Max = new float[n];
        MinNonZero = new float[n];
        Array.Fill(MinNonZero, float.PositiveInfinity);
        TopValue = new float[n * shape.TopK];
        TopRow = new long[n * shape.TopK];
        Array.Fill(TopRow, -1);
        TopContext = new int[n * shape.TopK];
        TopPosition = new int[n * shape.TopK];
        TopWindow = new float[n * shape.TopK * shape.WindowLength];
        AllSum = new double[dSae];
        AllSumSq = new double[dSae];
        Cross = crossFeatures ? new double[(long)n * dSae] : null;
        NeuronCross = new double[(long)n * dIn];
        InputSum = new double[dIn];
        InputSumSq = new double[dIn];
        Histogram = new long[n * shape.HistogramBins];
        IntervalCount = new long[n * shape.Intervals];
        int slots = n * shape.Intervals * shape.PerInterval;
        SampleKey = new ulong[slots];
        Array.Fill(SampleKey, ulong.MaxValue);
        SampleValue = new float[slots];
        SampleRow = new long[slots];
        Array.Fill(SampleRow, -1);
        SampleContext = new int[slots];
        SamplePosition = new int[slots];
        SampleWindow = new float[slots * shape.WindowLength];
    }

    /// <summary>SAE width.</summary>
    public int DSae { get; }

    /// <summary>SAE input width.</summary>
    public int DIn { get; }

    /// <summary>The features collected (slot s holds feature Features[s]).</summary>
    public int[] Features { get; }

    /// <summary>What is kept.</summary>
    public CollectorShape Shape { get; }

    /// <summary>Tokens counted in pass 1.</summary>
    public long Tokens { get; set; }

    /// <summary>Tokens counted in pass 2.</summary>
    public long Tokens2 { get; set; }

#pragma warning disable CA1819 // Plain arrays: the state is saved and restored whole.
    /// <summary>Per slot: tokens on which the feature fires (f ≠ 0).</summary>
    public long[] Count { get; }

    /// <summary>Per slot: Σ f.</summary>
    public double[] Sum { get; }

    /// <summary>Per slot: Σ f².</summary>
    public double[] SumSq { get; }

    /// <summary>Per slot: max f (0 when it never fires).</summary>
    public float[] Max { get; }

    /// <summary>Per slot: smallest non-zero f (∞ when it never fires).</summary>
    public float[] MinNonZero { get; }

    /// <summary>Per slot × TopK: the kept top values (unordered).</summary>
    public float[] TopValue { get; }

    /// <summary>Per slot × TopK: their rows (−1 = empty).</summary>
    public long[] TopRow { get; }

    /// <summary>Per slot × TopK: their contexts.</summary>
    public int[] TopContext { get; }

    /// <summary>Per slot × TopK: their positions.</summary>
    public int[] TopPosition { get; }

    /// <summary>Per slot × TopK × window: their windows.</summary>
    public float[] TopWindow { get; }

    /// <summary>Per feature of the whole SAE: Σ f.</summary>
    public double[] AllSum { get; }

    /// <summary>Per feature of the whole SAE: Σ f².</summary>
    public double[] AllSumSq { get; }

    /// <summary>Per slot × d_sae: Σ fᵢ fⱼ, or null when not kept.</summary>
    public double[]? Cross { get; }

    /// <summary>Per slot × d_in: Σ fᵢ xₙ.</summary>
    public double[] NeuronCross { get; }

    /// <summary>Per input neuron: Σ x.</summary>
    public double[] InputSum { get; }

    /// <summary>Per input neuron: Σ x².</summary>
    public double[] InputSumSq { get; }

    /// <summary>Per slot × bins: histogram counts of the non-zero values (pass 2).</summary>
    public long[] Histogram { get; }

    /// <summary>Per slot × intervals: firing tokens in each interval (pass 2; interval 0 is the
    /// lowest).</summary>
    public long[] IntervalCount { get; }

    /// <summary>Per slot × interval × sample: the sample's hash key (max = empty).</summary>
    public ulong[] SampleKey { get; }

    /// <summary>Per sample: value.</summary>
    public float[] SampleValue { get; }

    /// <summary>Per sample: row.</summary>
    public long[] SampleRow { get; }

    /// <summary>Per sample: context.</summary>
    public int[] SampleContext { get; }

    /// <summary>Per sample: position.</summary>
    public int[] SamplePosition { get; }

    /// <summary>Per sample × window: window.</summary>
    public float[] SampleWindow { get; }
#pragma warning restore CA1819

    /// <summary>Writes every counter and kept example (for resuming).</summary>
    public void Save(BinaryWriter w)
    {
        ArgumentNullException.ThrowIfNull(w);
        w.Write(Tokens);
        w.Write(Tokens2);
        foreach (var a in Arrays())
        {
            switch (a)
            {
                case long[] l:
                    w.Write(l.Length);
                    w.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(l.AsSpan()));
                    break;
                case double[] d:
                    w.Write(d.Length);
                    w.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(d.AsSpan()));
                    break;
                case float[] f:
                    w.Write(f.Length);
                    w.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(f.AsSpan()));
                    break;
                case int[] i:
                    w.Write(i.Length);
                    w.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(i.AsSpan()));
                    break;
                case ulong[] u:
                    w.Write(u.Length);
                    w.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(u.AsSpan()));
                    break;
            }
        }
    }

    /// <summary>Reads what <see cref="Save"/> wrote into this collector (of the same shape).</summary>
    /// <exception cref="InvalidDataException">The sizes differ.</exception>
    public void Load(BinaryReader r)
    {
        ArgumentNullException.ThrowIfNull(r);
        Tokens = r.ReadInt64();
        Tokens2 = r.ReadInt64();
        foreach (var a in Arrays())
        {
            int n = r.ReadInt32();
            if (n != a.Length)
            {
                throw new InvalidDataException(
                    $"A saved array holds {n} values where {a.Length} are expected."
                );
            }

            Span<byte> bytes = a switch
            {
                long[] l => System.Runtime.InteropServices.MemoryMarshal.AsBytes(l.AsSpan()),
                double[] d => System.Runtime.InteropServices.MemoryMarshal.AsBytes(d.AsSpan()),
                float[] f => System.Runtime.InteropServices.MemoryMarshal.AsBytes(f.AsSpan()),
                int[] i => System.Runtime.InteropServices.MemoryMarshal.AsBytes(i.AsSpan()),
                ulong[] u => System.Runtime.InteropServices.MemoryMarshal.AsBytes(u.AsSpan()),
                _ => throw new InvalidOperationException(),
            };
            if (r.Read(bytes) != bytes.Length)
            {
                throw new InvalidDataException("The saved collector state ends early.");
            }
        }
    }

    private Array[] Arrays() =>
        [
            Count,
            Sum,
            SumSq,
            Max,
            MinNonZero,
            TopValue,
            TopRow,
            TopContext,
            TopPosition,
            TopWindow,
            AllSum,
            AllSumSq,
            Cross ?? [],
            NeuronCross,
            InputSum,
            InputSumSq,
            Histogram,
            IntervalCount,
            SampleKey,
            SampleValue,
            SampleRow,
            SampleContext,
            SamplePosition,
            SampleWindow,
        ];

    /// <summary>
    /// Adds one batch of <paramref name="contexts"/> contexts of <paramref name="length"/> positions.
    /// </summary>
    /// <param name="pass">1 or 2.</param>
    /// <param name="f">Features [contexts·length, d_sae], row-major.</param>
    /// <param name="x">SAE inputs [contexts·length, d_in] (pass 1 only; may be empty in pass 2).</param>
    /// <param name="counted">Per position: whether it counts (not a special token, and within the token
    /// budget).</param>
    /// <param name="firstContext">Index of the first context.</param>
    /// <param name="firstRow">Row index of the first counted token of the batch.</param>
    /// <param name="contexts">Contexts in the batch.</param>
    /// <param name="length">Positions per context.</param>
    /// <param name="special">Per position: whether it is a special token (its window value is 0).</param>
    /// <returns>Tokens counted.</returns>
    public long Add(
        int pass,
        ReadOnlySpan<float> f,
        ReadOnlySpan<float> x,
        ReadOnlySpan<bool> counted,
        ReadOnlySpan<bool> special,
        int firstContext,
        long firstRow,
        int contexts,
        int length
    )
    {
        int m = DSae;
        var nz = new List<int>(256);
        long row = firstRow;
        for (int n = 0; n < contexts * length; n++)
        {
            if (!counted[n])
            {
                continue;
            }

            var fr = f.Slice(n * m, m);
            nz.Clear();
            for (int j = 0; j < m; j++)
            {
                if (fr[j] != 0f)
                {
                    nz.Add(j);
                }
            }

            int c = n / length,
                p = n % length;
            if (pass == 1)
            {
                AddPass1(fr, x.Slice(n * DIn, DIn), nz, row, firstContext + c, p, f, special, c, length);
            }
            else
            {
                AddPass2(fr, nz, row, firstContext + c, p, f, special, c, length);
            }

            row++;
        }

        long added = row - firstRow;
        if (pass == 1)
        {
            Tokens += added;
        }
        else
        {
            Tokens2 += added;
        }

        return added;
    }

    private void AddPass1(
        ReadOnlySpan<float> fr,
        ReadOnlySpan<float> xr,
        List<int> nz,
        long row,
        int context,
        int position,
        ReadOnlySpan<float> f,
        ReadOnlySpan<bool> special,
        int c,
        int length
    )
    {
        for (int k = 0; k < xr.Length; k++)
        {
            InputSum[k] += xr[k];
            InputSumSq[k] += (double)xr[k] * xr[k];
        }

        foreach (int j in nz)
        {
            AllSum[j] += fr[j];
            AllSumSq[j] += (double)fr[j] * fr[j];
        }

        int topK = Shape.TopK;
        foreach (int i in nz)
        {
            int s = _slot[i];
            if (s < 0)
            {
                continue;
            }

            float v = fr[i];
            Count[s]++;
            Sum[s] += v;
            SumSq[s] += (double)v * v;
            Max[s] = Count[s] == 1 ? v : Math.Max(Max[s], v);

            if (v != 0f && Math.Abs(v) < Math.Abs(MinNonZero[s]))
            {
                MinNonZero[s] = v;
            }

            // Top-k: replace the smallest kept value (the latest of equal smallest ones) when v beats it.
            int worst = -1;
            for (int t = 0; t < topK; t++)
            {
                int at = s * topK + t;
                if (TopRow[at] < 0)
                {
                    worst = at;
                    break;
                }

                if (
                    worst < 0
                    || TopValue[at] < TopValue[worst]
                    || (TopValue[at] == TopValue[worst] && TopRow[at] > TopRow[worst])
                )
                {
                    worst = at;
                }
            }

            if (TopRow[worst] < 0 || v > TopValue[worst])
            {
                TopValue[worst] = v;
                TopRow[worst] = row;
                TopContext[worst] = context;
                TopPosition[worst] = position;
                CopyWindow(f, special, c, position, length, i, TopWindow.AsSpan(worst * Shape.WindowLength));
            }

            var nc = NeuronCross.AsSpan((int)((long)s * DIn), DIn);
            for (int k = 0; k < xr.Length; k++)
            {
                nc[k] += v * (double)xr[k];
            }

            if (Cross is not null)
            {
                long b = (long)s * DSae;
                foreach (int j in nz)
                {
                    Cross[b + j] += v * (double)fr[j];
                }
            }
        }
    }

    private void AddPass2(
        ReadOnlySpan<float> fr,
        List<int> nz,
        long row,
        int context,
        int position,
        ReadOnlySpan<float> f,
        ReadOnlySpan<bool> special,
        int c,
        int length
    )
    {
        int bins = Shape.HistogramBins,
            q = Shape.Intervals,
            g = Shape.PerInterval;
        foreach (int i in nz)
        {
            int s = _slot[i];
            if (s < 0)
            {
                continue;
            }

            float v = fr[i];
            Histogram[s * bins + HistogramBin(v, MinNonZero[s], Max[s], bins)]++;
            int interval = IntervalOf(v, Max[s], q);
            if (interval < 0)
            {
                continue;
            }

            IntervalCount[s * q + interval]++;
            ulong key = SplitMix64.Mix(Shape.Seed, (ulong)i, (ulong)row);
            int base0 = (s * q + interval) * g;
            int worst = base0;
            for (int t = base0 + 1; t < base0 + g; t++)
            {
                if (SampleKey[t] > SampleKey[worst])
                {
                    worst = t;
                }
            }

            if (key < SampleKey[worst])
            {
                SampleKey[worst] = key;
                SampleValue[worst] = v;
                SampleRow[worst] = row;
                SampleContext[worst] = context;
                SamplePosition[worst] = position;
                CopyWindow(
                    f,
                    special,
                    c,
                    position,
                    length,
                    i,
                    SampleWindow.AsSpan(worst * Shape.WindowLength)
                );
            }
        }
    }

    private void CopyWindow(
        ReadOnlySpan<float> f,
        ReadOnlySpan<bool> special,
        int c,
        int position,
        int length,
        int feature,
        Span<float> window
    )
    {
        int w = Shape.Window;
        for (int o = -w; o <= w; o++)
        {
            int p = position + o;
            int n = c * length + p;
            window[o + w] =
                p < 0 || p >= length ? float.NaN
                : special[n] ? 0f
                : f[n * DSae + feature];
        }
    }

    /// <summary>The histogram bin of <paramref name="v"/>: equal-width bins of [min, max] as
    /// <c>torch.histc</c> (the max falls in the last bin; min = max puts everything in bin 0).</summary>
    public static int HistogramBin(float v, float min, float max, int bins)
    {
        if (!(max > min))
        {
            return 0;
        }

        int b = (int)Math.Floor((v - (double)min) / ((double)max - min) * bins);
        return Math.Clamp(b, 0, bins - 1);
    }

    /// <summary>The interval of a firing value: interval q holds q·max/Q &lt; v ≤ (q+1)·max/Q, so the
    /// lowest one starts just above 0 (−1 for v ≤ 0).</summary>
    public static int IntervalOf(float v, float max, int intervals)
    {
        if (!(v > 0f) || !(max > 0f))
        {
            return -1;
        }

        int q = (int)Math.Ceiling(v / (double)max * intervals) - 1;
        return Math.Clamp(q, 0, intervals - 1);
    }

    /// <summary>The kept top examples of slot <paramref name="s"/>, largest first (ties: earliest
    /// row first).</summary>
    public IReadOnlyList<FeatureExample> Top(int s)
    {
        var list = new List<FeatureExample>();
        int k = Shape.TopK,
            w = Shape.WindowLength;
        for (int t = s * k; t < (s + 1) * k; t++)
        {
            if (TopRow[t] >= 0)
            {
                list.Add(
                    new FeatureExample(
                        TopValue[t],
                        TopRow[t],
                        TopContext[t],
                        TopPosition[t],
                        TopWindow.AsSpan(t * w, w).ToArray()
                    )
                );
            }
        }

        return [.. list.OrderByDescending(e => e.Value).ThenBy(e => e.Row)];
    }

    /// <summary>The samples of interval <paramref name="q"/> of slot <paramref name="s"/>, in row
    /// order.</summary>
    public IReadOnlyList<FeatureExample> Samples(int s, int q)
    {
        var list = new List<FeatureExample>();
        int g = Shape.PerInterval,
            w = Shape.WindowLength;
        int b = (s * Shape.Intervals + q) * g;
        for (int t = b; t < b + g; t++)
        {
            if (SampleRow[t] >= 0)
            {
                list.Add(
                    new FeatureExample(
                        SampleValue[t],
                        SampleRow[t],
                        SampleContext[t],
                        SamplePosition[t],
                        SampleWindow.AsSpan(t * w, w).ToArray()
                    )
                );
            }
        }

        return [.. list.OrderBy(e => e.Row)];
    }

    /// <summary>Pearson correlation and cosine similarity of slot s with feature j over the tokens.</summary>
    public (double Pearson, double Cosine) FeatureCorrelation(int s, int j)
    {
        double cross = Cross![(long)s * DSae + j];
        return Correlation(Tokens, Sum[s], SumSq[s], AllSum[j], AllSumSq[j], cross);
    }

    /// <summary>Pearson correlation and cosine similarity of slot s with input neuron n.</summary>
    public (double Pearson, double Cosine) NeuronCorrelation(int s, int n) =>
        Correlation(Tokens, Sum[s], SumSq[s], InputSum[n], InputSumSq[n], NeuronCross[(long)s * DIn + n]);

    /// <summary>
    /// Pearson r = (N Σab − Σa Σb) / √((N Σa² − (Σa)²)(N Σb² − (Σb)²)) and cosine Σab / √(Σa² Σb²) from
    /// sums over N tokens (NaN where a variance or norm is 0).
    /// </summary>
    public static (double Pearson, double Cosine) Correlation(
        long n,
        double sa,
        double saa,
        double sb,
        double sbb,
        double sab
    )
    {
        double va = n * saa - sa * sa,
            vb = n * sbb - sb * sb;
        double pearson = va > 0 && vb > 0 ? (n * sab - sa * sb) / Math.Sqrt(va * vb) : double.NaN;
        double cosine = saa > 0 && sbb > 0 ? sab / Math.Sqrt(saa * sbb) : double.NaN;
        return (pearson, cosine);
    }
}
