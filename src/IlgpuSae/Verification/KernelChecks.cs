using IlgpuSae.Backends;
using IlgpuSae.Kernels;
using IlgpuSae.Tensors;

namespace IlgpuSae.Verification;

/// <summary>The outcome of one kernel check.</summary>
/// <param name="Check">The check's name, e.g. <c>MatMul NT 33x47x29</c>.</param>
/// <param name="Family">The kernel family (MatMul, Map, ReduceRows, …).</param>
/// <param name="Elements">Number of output values compared.</param>
/// <param name="MaxAbsError">Largest |actual − reference|.</param>
/// <param name="WorstRatio">Largest |actual − reference| / (atol + rtol·|reference|); ≤ 1 passes.</param>
/// <param name="Tolerance">The tolerance's name.</param>
/// <param name="Failure">The first failing element, described, or <see langword="null"/>.</param>
public sealed record CheckResult(
    string Check,
    string Family,
    long Elements,
    double MaxAbsError,
    double WorstRatio,
    string Tolerance,
    string? Failure
)
{
    /// <summary>Whether every element matched.</summary>
    public bool Passed => Failure is null;
}

/// <summary>A named check of one kernel against its <see cref="CpuReference"/> on fresh random
/// data.</summary>
/// <param name="Name">Unique name.</param>
/// <param name="Family">The kernel family.</param>
/// <param name="Run">Runs the check on a device with a seed.</param>
public sealed record KernelCheck(string Name, string Family, Func<SaeDevice, int, CheckResult> Run)
{
    /// <inheritdoc/>
    public override string ToString() => Name;
}

/// <summary>
/// Every kernel of the core checked against its double-precision reference: odd sizes (1 row, 1 column,
/// sizes that are not multiples of a tile), random inputs, and outputs poisoned with NaN before the run
/// so that an element the kernel never wrote fails. Used by <c>ilgpu-sae selfcheck</c> and the tests.
/// </summary>
public static class KernelChecks
{
    /// <summary>Matrix-product shapes (M, N, K): single row/column, tile-aligned, and ragged.</summary>
    public static IReadOnlyList<(int M, int N, int K)> GemmShapes { get; } =
    [(1, 1, 1), (1, 37, 19), (29, 1, 33), (33, 47, 29), (64, 64, 64), (130, 70, 65)];

    /// <summary>Matrix shapes (rows, cols) for maps and reductions.</summary>
    public static IReadOnlyList<(int Rows, int Cols)> MatrixShapes { get; } =
    [(1, 1), (1, 300), (257, 1), (37, 515)];

    /// <summary>All checks.</summary>
    public static IReadOnlyList<KernelCheck> All { get; } = Build();

    private static List<KernelCheck> Build()
    {
        var checks = new List<KernelCheck>();
        foreach (var layout in Enum.GetValues<GemmLayout>())
        {
            foreach (var (m, n, k) in GemmShapes)
            {
                checks.Add(
                    new(
                        $"MatMul {layout} {m}x{n}x{k}",
                        "MatMul",
                        (d, s) => MatMul(d, s, layout, m, n, k, 1f, 0f)
                    )
                );
            }

            checks.Add(
                new(
                    $"MatMul {layout} 45x70x33 alpha=-0.5 beta=0.75",
                    "MatMul",
                    (d, s) => MatMul(d, s, layout, 45, 70, 33, -0.5f, 0.75f)
                )
            );
        }

        foreach (var (rows, cols) in MatrixShapes)
        {
            string shape = $"{rows}x{cols}";
            checks.Add(Unary<Relu>($"Map Relu {shape}", rows, cols, v => Math.Max(v, 0), Tolerance.Exact));
            checks.Add(
                Unary<Heaviside>($"Map Heaviside {shape}", rows, cols, v => v > 0 ? 1 : 0, Tolerance.Exact)
            );
            checks.Add(Unary<Exp>($"Map Exp {shape}", rows, cols, Math.Exp, Tolerance.Transcendental));
            checks.Add(Unary<Abs>($"Map Abs {shape}", rows, cols, Math.Abs, Tolerance.Exact));
            checks.Add(Unary<Square>($"Map Square {shape}", rows, cols, v => v * v, Tolerance.Elementwise));
            checks.Add(Unary<Identity>($"Map Identity {shape}", rows, cols, v => v, Tolerance.Exact));
            checks.Add(
                Unary(
                    $"Map Scale {shape}",
                    rows,
                    cols,
                    new Scale(-1.75f),
                    v => -1.75 * v,
                    Tolerance.Elementwise
                )
            );
            checks.Add(
                Unary($"Map Constant {shape}", rows, cols, new Constant(0.3f), _ => 0.3f, Tolerance.Exact)
            );
            checks.Add(
                new(
                    $"Map Sqrt {shape}",
                    "Map",
                    (d, s) =>
                        RunUnary(
                            d,
                            s,
                            rows,
                            cols,
                            default(Sqrt),
                            Math.Sqrt,
                            Tolerance.Transcendental,
                            positive: true
                        )
                )
            );
            checks.Add(Binary<Add>($"Map2 Add {shape}", rows, cols, (a, b) => a + b));
            checks.Add(Binary<Subtract>($"Map2 Subtract {shape}", rows, cols, (a, b) => a - b));
            checks.Add(Binary<Multiply>($"Map2 Multiply {shape}", rows, cols, (a, b) => a * b));
            checks.Add(Binary<Divide>($"Map2 Divide {shape}", rows, cols, (a, b) => a / b));
            checks.Add(Binary<Maximum>($"Map2 Maximum {shape}", rows, cols, Math.Max));
            checks.Add(
                Binary($"Map2 Axpby {shape}", rows, cols, new Axpby(0.5f, -2f), (a, b) => 0.5 * a - 2 * b)
            );
            checks.Add(
                new(
                    $"MapBroadcastRows Add {shape}",
                    "MapBroadcast",
                    (d, s) => Broadcast(d, s, rows, cols, byRow: true)
                )
            );
            checks.Add(
                new(
                    $"MapBroadcastColumns Multiply {shape}",
                    "MapBroadcast",
                    (d, s) => Broadcast(d, s, rows, cols, byRow: false)
                )
            );
            foreach (bool accumulate in new[] { false, true })
            {
                string acc = accumulate ? " accumulate" : "";
                checks.Add(
                    Reduce<Sum>(
                        $"ReduceRows Sum {shape}{acc}",
                        rows,
                        cols,
                        byRow: true,
                        accumulate,
                        v => v,
                        (a, b) => a + b,
                        0
                    )
                );
                checks.Add(
                    Reduce<Sum>(
                        $"ReduceColumns Sum {shape}{acc}",
                        rows,
                        cols,
                        byRow: false,
                        accumulate,
                        v => v,
                        (a, b) => a + b,
                        0
                    )
                );
            }

            checks.Add(
                Reduce<SumOfSquares>(
                    $"ReduceRows SumOfSquares {shape}",
                    rows,
                    cols,
                    true,
                    false,
                    v => v * v,
                    (a, b) => a + b,
                    0
                )
            );
            checks.Add(
                Reduce<SumOfSquares>(
                    $"ReduceColumns SumOfSquares {shape}",
                    rows,
                    cols,
                    false,
                    false,
                    v => v * v,
                    (a, b) => a + b,
                    0
                )
            );
            checks.Add(
                Reduce<SumOfAbs>(
                    $"ReduceRows SumOfAbs {shape}",
                    rows,
                    cols,
                    true,
                    false,
                    Math.Abs,
                    (a, b) => a + b,
                    0
                )
            );
            checks.Add(
                Reduce<SumOfAbs>(
                    $"ReduceColumns SumOfAbs {shape}",
                    rows,
                    cols,
                    false,
                    false,
                    Math.Abs,
                    (a, b) => a + b,
                    0
                )
            );
            checks.Add(
                Reduce<Max>(
                    $"ReduceRows Max {shape}",
                    rows,
                    cols,
                    true,
                    false,
                    v => v,
                    Math.Max,
                    double.NegativeInfinity
                )
            );
            checks.Add(
                Reduce<Max>(
                    $"ReduceColumns Max {shape}",
                    rows,
                    cols,
                    false,
                    false,
                    v => v,
                    Math.Max,
                    double.NegativeInfinity
                )
            );
            checks.Add(
                Reduce<CountNonZero>(
                    $"ReduceRows CountNonZero {shape}",
                    rows,
                    cols,
                    true,
                    false,
                    v => v != 0 ? 1 : 0,
                    (a, b) => a + b,
                    0
                )
            );
            checks.Add(
                Reduce<CountNonZero>(
                    $"ReduceColumns CountNonZero {shape}",
                    rows,
                    cols,
                    false,
                    false,
                    v => v != 0 ? 1 : 0,
                    (a, b) => a + b,
                    0
                )
            );
            checks.Add(new($"RowL2Norms {shape}", "Norms", (d, s) => RowNorms(d, s, rows, cols)));
            checks.Add(new($"Transpose {shape}", "Transpose", (d, s) => Transpose(d, s, rows, cols)));
            checks.Add(new($"ProjectRows {shape}", "Norms", (d, s) => ProjectRows(d, s, rows, cols)));
            checks.Add(new($"NormalizeRows {shape}", "Norms", (d, s) => NormalizeRows(d, s, rows, cols)));
        }

        foreach (bool decoupled in new[] { true, false })
        {
            foreach (int n in new[] { 1, 1001 })
            {
                checks.Add(
                    new(
                        $"AdamStep {(decoupled ? "AdamW" : "Adam+L2")} n={n}",
                        "Adam",
                        (d, s) => Adam(d, s, n, decoupled)
                    )
                );
            }
        }

        foreach (int n in new[] { 1, 3, 1027 })
        {
            checks.Add(new($"FillUniform n={n}", "Random", (d, s) => Uniform(d, s, n)));
            checks.Add(new($"FillNormal n={n}", "Random", (d, s) => Normal(d, s, n)));
        }

        return checks;
    }

    // ------------------------------------------------------------------ comparison

    /// <summary>
    /// Compares <paramref name="actual"/> with <paramref name="reference"/> element by element under
    /// <paramref name="tolerance"/> (which may depend on the element).
    /// </summary>
    public static CheckResult Compare(
        string check,
        string family,
        float[] actual,
        double[] reference,
        Func<long, Tolerance> tolerance
    )
    {
        ArgumentNullException.ThrowIfNull(actual);
        ArgumentNullException.ThrowIfNull(reference);
        ArgumentNullException.ThrowIfNull(tolerance);
        if (actual.Length != reference.Length)
        {
            return new CheckResult(
                check,
                family,
                actual.Length,
                double.NaN,
                double.PositiveInfinity,
                "-",
                $"length {actual.Length} differs from the reference's {reference.Length}"
            );
        }

        double maxAbs = 0,
            worst = 0;
        string? failure = null;
        string tolName = actual.Length > 0 ? tolerance(0).Name : "-";
        double worstSeen = -1;
        for (long i = 0; i < actual.Length; i++)
        {
            var tol = tolerance(i);
            double a = actual[i],
                r = reference[i];
            bool ok = tol.Accepts(a, r);
            double err = Math.Abs(a - r);
            if (!double.IsNaN(err))
            {
                maxAbs = Math.Max(maxAbs, err);
            }

            double bound = tol.Atol + tol.Rtol * Math.Abs(r);
            // err/bound where both are finite and positive; an exact-tolerance miss or a NaN counts as
            // infinitely bad.
            double ratio =
                bound > 0 && double.IsFinite(err) ? err / bound
                : ok ? 0
                : double.PositiveInfinity;

            worst = Math.Max(worst, double.IsNaN(ratio) ? 0 : ratio);
            if (worst > worstSeen)
            {
                worstSeen = worst;
                tolName = tol.Name;
            }

            if (!ok && failure is null)
            {
                failure =
                    $"element {i}: got {a:G9}, reference {r:G9}, |diff| {err:G3} > {tol.Atol:G3} + {tol.Rtol:G3}·|ref| ({tol.Name})"
                    + (float.IsNaN(actual[i]) ? " — NaN: the element was probably never written" : "");
            }
        }

        return new CheckResult(check, family, actual.Length, maxAbs, worst, tolName, failure);
    }

    /// <summary>Compares under one tolerance for every element.</summary>
    public static CheckResult Compare(
        string check,
        string family,
        float[] actual,
        double[] reference,
        Tolerance tolerance
    ) => Compare(check, family, actual, reference, _ => tolerance);

    // ------------------------------------------------------------------ data

    /// <summary>Uniform random values in [-1, 1) with a few exact zeros and some values near ±4.</summary>
    public static float[] RandomData(Random random, long length, bool positive = false, bool withZeros = true)
    {
        ArgumentNullException.ThrowIfNull(random);
        var x = new float[length];
        for (long i = 0; i < length; i++)
        {
            double v = random.NextDouble() * 2 - 1;
            if (random.Next(16) == 0)
            {
                v *= 4;
            }

            if (withZeros && random.Next(10) == 0)
            {
                v = 0;
            }

            x[i] = (float)(positive ? Math.Abs(v) + 1e-3 : v);
        }

        return x;
    }

    private static DeviceTensor Poisoned(SaeDevice d, int rows, int cols)
    {
        var t = d.Allocate(rows, cols);
        d.Ops.Fill(t.Data, float.NaN);
        return t;
    }

    // ------------------------------------------------------------------ the checks

    private static CheckResult MatMul(
        SaeDevice d,
        int seed,
        GemmLayout layout,
        int m,
        int n,
        int k,
        float alpha,
        float beta
    )
    {
        var random = new Random(seed);
        var (ar, ac) = layout == GemmLayout.TN ? (k, m) : (m, k);
        var (br, bc) = layout == GemmLayout.NT ? (n, k) : (k, n);
        var a = RandomData(random, (long)ar * ac);
        var b = RandomData(random, (long)br * bc);
        var c0 = RandomData(random, (long)m * n);
        using var ta = d.Upload(a, ar, ac, "A");
        using var tb = d.Upload(b, br, bc, "B");
        using var tc = beta == 0f ? Poisoned(d, m, n) : d.Upload(c0, m, n, "C");
        d.Ops.MatMul(ta, tb, tc, layout, alpha, beta);
        var (values, magnitudes) = CpuReference.MatMul(a, b, c0, layout, m, n, k, alpha, beta);
        return Compare(
            $"MatMul {layout} {m}x{n}x{k} a={alpha} b={beta}",
            "MatMul",
            tc.ToArray(),
            values,
            i =>
                d.TensorCores
                    ? Tolerance.Tf32Accumulation(k + 1, magnitudes[i])
                    : Tolerance.Accumulation(k + 1, magnitudes[i])
        );
    }

    private static KernelCheck Unary<TOp>(
        string name,
        int rows,
        int cols,
        Func<double, double> f,
        Tolerance tol
    )
        where TOp : struct, IUnaryOp => Unary(name, rows, cols, default(TOp), f, tol);

    private static KernelCheck Unary<TOp>(
        string name,
        int rows,
        int cols,
        TOp op,
        Func<double, double> f,
        Tolerance tol
    )
        where TOp : struct, IUnaryOp =>
        new(name, "Map", (d, s) => RunUnary(d, s, rows, cols, op, f, tol, positive: false));

    private static CheckResult RunUnary<TOp>(
        SaeDevice d,
        int seed,
        int rows,
        int cols,
        TOp op,
        Func<double, double> f,
        Tolerance tol,
        bool positive
    )
        where TOp : struct, IUnaryOp
    {
        var x = RandomData(new Random(seed), (long)rows * cols, positive);
        using var tx = d.Upload(x, rows, cols);
        using var ty = Poisoned(d, rows, cols);
        d.Ops.Map(tx.Data, ty.Data, op);
        return Compare(
            $"Map {typeof(TOp).Name} {rows}x{cols}",
            "Map",
            ty.ToArray(),
            CpuReference.Map(x, f),
            tol
        );
    }

    private static KernelCheck Binary<TOp>(string name, int rows, int cols, Func<double, double, double> f)
        where TOp : struct, IBinaryOp => Binary(name, rows, cols, default(TOp), f);

    private static KernelCheck Binary<TOp>(
        string name,
        int rows,
        int cols,
        TOp op,
        Func<double, double, double> f
    )
        where TOp : struct, IBinaryOp =>
        new(
            name,
            "Map2",
            (d, s) =>
            {
                var random = new Random(s);
                var a = RandomData(random, (long)rows * cols);
                var b = RandomData(random, (long)rows * cols, positive: true);
                using var ta = d.Upload(a, rows, cols);
                using var tb = d.Upload(b, rows, cols);
                using var ty = Poisoned(d, rows, cols);
                d.Ops.Map(ta.Data, tb.Data, ty.Data, op);
                var reference = a.Select((v, i) => f(v, b[i])).ToArray();
                return Compare(name, "Map2", ty.ToArray(), reference, Tolerance.Elementwise);
            }
        );

    private static CheckResult Broadcast(SaeDevice d, int seed, int rows, int cols, bool byRow)
    {
        var random = new Random(seed);
        var x = RandomData(random, (long)rows * cols);
        var v = RandomData(random, byRow ? cols : rows);
        using var tx = d.Upload(x, rows, cols);
        using var tv = d.Upload(v, 1, v.Length);
        using var ty = Poisoned(d, rows, cols);
        double[] reference;
        if (byRow)
        {
            d.Ops.MapBroadcastRows<Add>(tx, tv.Data, ty);
            reference = x.Select((e, i) => (double)e + v[i % cols]).ToArray();
        }
        else
        {
            d.Ops.MapBroadcastColumns<Multiply>(tx, tv.Data, ty);
            reference = x.Select((e, i) => (double)e * v[i / cols]).ToArray();
        }

        return Compare(
            $"MapBroadcast{(byRow ? "Rows Add" : "Columns Multiply")} {rows}x{cols}",
            "MapBroadcast",
            ty.ToArray(),
            reference,
            Tolerance.Elementwise
        );
    }

    private static KernelCheck Reduce<TOp>(
        string name,
        int rows,
        int cols,
        bool byRow,
        bool accumulate,
        Func<double, double> map,
        Func<double, double, double> combine,
        double identity
    )
        where TOp : struct, IReduceOp =>
        new(
            name,
            byRow ? "ReduceRows" : "ReduceColumns",
            (d, s) =>
            {
                var random = new Random(s);
                var x = RandomData(random, (long)rows * cols);
                int outLength = byRow ? rows : cols;
                var y0 = RandomData(random, outLength, withZeros: false);
                using var tx = d.Upload(x, rows, cols);
                using var ty = accumulate ? d.Upload(y0, 1, outLength) : Poisoned(d, 1, outLength);
                var reference = byRow
                    ? CpuReference.ReduceRows(x, rows, cols, map, combine, identity)
                    : CpuReference.ReduceColumns(x, rows, cols, map, combine, identity);
                var magnitude = byRow
                    ? CpuReference.ReduceRows(x, rows, cols, v => Math.Abs(map(v)), (a, b) => a + b, 0)
                    : CpuReference.ReduceColumns(x, rows, cols, v => Math.Abs(map(v)), (a, b) => a + b, 0);
                if (accumulate)
                {
                    for (int i = 0; i < outLength; i++)
                    {
                        reference[i] = combine(y0[i], reference[i]);
                        magnitude[i] += Math.Abs(y0[i]);
                    }
                }

                if (byRow)
                {
                    d.Ops.ReduceRows<TOp>(tx, ty.Data, accumulate);
                }
                else
                {
                    d.Ops.ReduceColumns<TOp>(tx, ty.Data, accumulate);
                }

                int terms = (byRow ? cols : rows) + 1;
                return Compare(
                    name,
                    byRow ? "ReduceRows" : "ReduceColumns",
                    ty.ToArray(),
                    reference,
                    i => Tolerance.Accumulation(terms, magnitude[i])
                );
            }
        );

    private static CheckResult RowNorms(SaeDevice d, int seed, int rows, int cols)
    {
        var x = RandomData(new Random(seed), (long)rows * cols);
        using var tx = d.Upload(x, rows, cols);
        using var tn = Poisoned(d, 1, rows);
        d.Ops.RowL2Norms(tx, tn.Data);
        var reference = CpuReference.RowL2Norms(x, rows, cols);
        return Compare(
            $"RowL2Norms {rows}x{cols}",
            "Norms",
            tn.ToArray(),
            reference,
            i => Tolerance.Accumulation(cols + 1, reference[i])
        );
    }

    private static CheckResult Transpose(SaeDevice d, int seed, int rows, int cols)
    {
        var x = RandomData(new Random(seed), (long)rows * cols);
        using var tx = d.Upload(x, rows, cols);
        using var ty = Poisoned(d, cols, rows);
        d.Ops.Transpose(tx, ty);
        var reference = new double[x.Length];
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < cols; c++)
            {
                reference[(long)c * rows + r] = x[(long)r * cols + c];
            }
        }

        return Compare($"Transpose {rows}x{cols}", "Transpose", ty.ToArray(), reference, Tolerance.Exact);
    }

    private static CheckResult ProjectRows(SaeDevice d, int seed, int rows, int cols)
    {
        var random = new Random(seed);
        var g = RandomData(random, (long)rows * cols);
        var w = RandomData(random, (long)rows * cols, withZeros: false);
        using var tg = d.Upload(g, rows, cols);
        using var tw = d.Upload(w, rows, cols);
        d.Ops.ProjectRows(tg, tw);
        var reference = CpuReference.ProjectRows(g, w, rows, cols);
        return Compare(
            $"ProjectRows {rows}x{cols}",
            "Norms",
            tg.ToArray(),
            reference,
            _ => Tolerance.Accumulation(2 * cols + 2, 4)
        );
    }

    private static CheckResult NormalizeRows(SaeDevice d, int seed, int rows, int cols)
    {
        var x = RandomData(new Random(seed), (long)rows * cols);
        if (rows > 1)
        {
            Array.Clear(x, 0, cols); // an all-zero row must stay zero (divided by eps, not by 0)
        }

        using var tx = d.Upload(x, rows, cols);
        using var tn = Poisoned(d, 1, rows);
        const float eps = 1e-6f;
        d.Ops.NormalizeRows(tx, eps, tn.Data);
        var norms = CpuReference.RowL2Norms(x, rows, cols);
        var values = CpuReference.NormalizeRows(x, rows, cols, eps);
        var rowsResult = Compare(
            $"NormalizeRows {rows}x{cols}",
            "Norms",
            tx.ToArray(),
            values,
            _ => Tolerance.Accumulation(cols + 1, 1)
        );
        var normsResult = Compare(
            $"NormalizeRows norms {rows}x{cols}",
            "Norms",
            tn.ToArray(),
            norms,
            i => Tolerance.Accumulation(cols + 1, norms[i])
        );
        return rowsResult.Passed ? normsResult with { Check = rowsResult.Check } : rowsResult;
    }

    private static CheckResult Adam(SaeDevice d, int seed, int n, bool decoupled)
    {
        var random = new Random(seed);
        var settings = new AdamSettings
        {
            LearningRate = 3e-3f,
            Beta1 = 0.9f,
            Beta2 = 0.99f,
            Epsilon = 1e-6f,
            WeightDecay = 0.05f,
            DecoupledWeightDecay = decoupled,
        };
        var p = RandomData(random, n);
        var m = RandomData(random, n).Select(v => v * 0.1f).ToArray();
        var v = RandomData(random, n, positive: true).Select(e => e * 0.01f).ToArray();
        var layout = new ParameterLayout().Add("p", 1, n);
        using var buffer = new ParameterBuffer(d, layout);
        var pad = new float[layout.Length];
        Array.Copy(p, pad, n);
        buffer.Upload(pad, ParameterSection.Values);
        Array.Copy(m, pad, n);
        buffer.Upload(pad, ParameterSection.FirstMoment);
        Array.Copy(v, pad, n);
        buffer.Upload(pad, ParameterSection.SecondMoment);

        float[] cp = p,
            cm = m,
            cv = v;
        double[] rp = [],
            rm = [],
            rv = [];
        for (int step = 1; step <= 3; step++)
        {
            var g = RandomData(random, n);
            Array.Copy(g, pad, n);
            buffer.Upload(pad, ParameterSection.Gradients);
            d.Ops.AdamStep(
                buffer.Get("p").Data,
                buffer.Gradient("p").Data,
                buffer.Get("p", ParameterSection.FirstMoment).Data,
                buffer.Get("p", ParameterSection.SecondMoment).Data,
                settings,
                step,
                gradScale: 0.8f
            );
            (rp, rm, rv) = CpuReference.AdamStep(cp, g, cm, cv, settings, step, 0.8);
            cp = [.. rp.Select(x => (float)x)];
            cm = [.. rm.Select(x => (float)x)];
            cv = [.. rv.Select(x => (float)x)];
        }

        // Three steps of a few float32 operations each; the update is bounded by ~lr per step.
        var tol = new Tolerance("Adam (3 steps)", 2e-6, 2e-6);
        string name = $"AdamStep {(decoupled ? "AdamW" : "Adam+L2")} n={n}";
        var results = new[]
        {
            Compare(name, "Adam", buffer.Download(ParameterSection.Values)[..n], rp, tol),
            Compare(name + " m", "Adam", buffer.Download(ParameterSection.FirstMoment)[..n], rm, tol),
            Compare(name + " v", "Adam", buffer.Download(ParameterSection.SecondMoment)[..n], rv, tol),
        };
        return results.FirstOrDefault(r => !r.Passed)
            ?? results[0] with
            {
                WorstRatio = results.Max(r => r.WorstRatio),
            };
    }

    private static CheckResult Uniform(SaeDevice d, int seed, int n)
    {
        ulong s = (ulong)seed * 0x9E3779B97F4A7C15UL;
        using var ty = Poisoned(d, 1, n);
        d.Ops.FillUniform(ty.Data, -0.25f, 0.75f, s, stream: 7);
        var reference = CpuReference.Uniform(n, -0.25f, 0.75f, s, 7).Select(x => (double)x).ToArray();
        return Compare($"FillUniform n={n}", "Random", ty.ToArray(), reference, Tolerance.Exact);
    }

    private static CheckResult Normal(SaeDevice d, int seed, int n)
    {
        ulong s = (ulong)seed * 0x9E3779B97F4A7C15UL + 1;
        using var ty = Poisoned(d, 1, n);
        d.Ops.FillNormal(ty.Data, 0.5f, 2f, s, stream: 3);
        var reference = CpuReference.Normal(n, 0.5, 2, s, 3);
        // Box–Muller in float32: log, sqrt, sin/cos each add a few ulp; |z| ≤ 11 here.
        return Compare(
            $"FillNormal n={n}",
            "Random",
            ty.ToArray(),
            reference,
            new Tolerance("Box-Muller float32", 2e-5, 2e-5)
        );
    }
}
