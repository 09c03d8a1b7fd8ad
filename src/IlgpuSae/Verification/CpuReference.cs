using IlgpuSae.Kernels;

namespace IlgpuSae.Verification;

/// <summary>
/// Double-precision reference implementations of every kernel, written as plain loops for clarity.
/// They are the specification the device kernels are tested against (tests further check the
/// references themselves against MathNet.Numerics).
/// </summary>
public static class CpuReference
{
    /// <summary>op(A)[i,k] for a row-major A as the layout stores it.</summary>
    public static double AElement(float[] a, GemmLayout layout, int m, int k, int i, int kk) =>
        layout == GemmLayout.TN ? a[(long)kk * m + i] : a[(long)i * k + kk];

    /// <summary>op(B)[k,j] for a row-major B as the layout stores it.</summary>
    public static double BElement(float[] b, GemmLayout layout, int k, int n, int kk, int j) =>
        layout == GemmLayout.NT ? b[(long)j * k + kk] : b[(long)kk * n + j];

    /// <summary>
    /// <c>C = alpha·op(A)·op(B) + beta·C</c> in double; also returns, per element, Σ|alpha·a·b| + |beta·c|
    /// (the scale that bounds the float32 rounding error).
    /// </summary>
    public static (double[] Values, double[] Magnitudes) MatMul(
        float[] a,
        float[] b,
        float[]? c,
        GemmLayout layout,
        int m,
        int n,
        int k,
        double alpha = 1,
        double beta = 0
    )
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        var values = new double[(long)m * n];
        var magnitudes = new double[(long)m * n];
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
            {
                double sum = 0,
                    mag = 0;
                for (int kk = 0; kk < k; kk++)
                {
                    double p = AElement(a, layout, m, k, i, kk) * BElement(b, layout, k, n, kk, j);
                    sum += p;
                    mag += Math.Abs(p);
                }

                double cij = beta != 0 && c is not null ? c[(long)i * n + j] : 0;
                values[(long)i * n + j] = alpha * sum + beta * cij;
                magnitudes[(long)i * n + j] = Math.Abs(alpha) * mag + Math.Abs(beta * cij);
            }
        }

        return (values, magnitudes);
    }

    /// <summary>Applies a unary operator element-wise, in double where the operator has a closed
    /// form.</summary>
    public static double[] Map(float[] x, Func<double, double> f)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(f);
        return x.Select(v => f(v)).ToArray();
    }

    /// <summary>Row reduction in double: <c>y[r] = combine over c of map(x[r,c])</c>.</summary>
    public static double[] ReduceRows(
        float[] x,
        int rows,
        int cols,
        Func<double, double> map,
        Func<double, double, double> combine,
        double identity
    )
    {
        ArgumentNullException.ThrowIfNull(x);
        var y = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double acc = identity;
            for (int c = 0; c < cols; c++)
            {
                acc = combine(acc, map(x[(long)r * cols + c]));
            }

            y[r] = acc;
        }

        return y;
    }

    /// <summary>Column reduction in double: <c>y[c] = combine over r of map(x[r,c])</c>.</summary>
    public static double[] ReduceColumns(
        float[] x,
        int rows,
        int cols,
        Func<double, double> map,
        Func<double, double, double> combine,
        double identity
    )
    {
        ArgumentNullException.ThrowIfNull(x);
        var y = new double[cols];
        for (int c = 0; c < cols; c++)
        {
            double acc = identity;
            for (int r = 0; r < rows; r++)
            {
                acc = combine(acc, map(x[(long)r * cols + c]));
            }

            y[c] = acc;
        }

        return y;
    }

    /// <summary>Row L2 norms in double.</summary>
    public static double[] RowL2Norms(float[] x, int rows, int cols) =>
        ReduceRows(x, rows, cols, v => v * v, (p, q) => p + q, 0).Select(Math.Sqrt).ToArray();

    /// <summary>Rows scaled to unit norm, <c>x[r,:] / max(‖x[r,:]‖, eps)</c>, in double.</summary>
    public static double[] NormalizeRows(float[] x, int rows, int cols, double eps)
    {
        var norms = RowL2Norms(x, rows, cols);
        var y = new double[(long)rows * cols];
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < cols; c++)
            {
                y[(long)r * cols + c] = x[(long)r * cols + c] / Math.Max(norms[r], eps);
            }
        }

        return y;
    }

    /// <summary>Tangent projection in double: <c>g_i − (g_i·w_i/‖w_i‖²)·w_i</c> per row.</summary>
    public static double[] ProjectRows(float[] g, float[] w, int rows, int cols)
    {
        ArgumentNullException.ThrowIfNull(g);
        ArgumentNullException.ThrowIfNull(w);
        var y = new double[(long)rows * cols];
        for (int r = 0; r < rows; r++)
        {
            double dot = 0,
                nn = 0;
            for (int c = 0; c < cols; c++)
            {
                dot += (double)g[r * cols + c] * w[r * cols + c];
                nn += (double)w[r * cols + c] * w[r * cols + c];
            }

            for (int c = 0; c < cols; c++)
            {
                y[r * cols + c] = g[r * cols + c] - (nn > 0 ? dot / nn : 0) * w[r * cols + c];
            }
        }

        return y;
    }

    /// <summary>
    /// One Adam/AdamW step in double, as <c>torch.optim.Adam</c>/<c>AdamW</c> compute it. Returns the new
    /// parameters and moments.
    /// </summary>
    public static (double[] P, double[] M, double[] V) AdamStep(
        float[] p,
        float[] g,
        float[] m,
        float[] v,
        AdamSettings s,
        long step,
        double gradScale = 1
    )
    {
        ArgumentNullException.ThrowIfNull(p);
        ArgumentNullException.ThrowIfNull(g);
        ArgumentNullException.ThrowIfNull(m);
        ArgumentNullException.ThrowIfNull(v);
        ArgumentNullException.ThrowIfNull(s);
        int n = p.Length;
        var (np, nm, nv) = (new double[n], new double[n], new double[n]);
        double b1 = s.Beta1,
            b2 = s.Beta2,
            lr = s.LearningRate,
            wd = s.WeightDecay;
        double bc1 = 1 - Math.Pow(b1, step),
            bc2 = 1 - Math.Pow(b2, step);
        for (int i = 0; i < n; i++)
        {
            double pi = p[i];
            double gi = g[i] * gradScale;
            if (!s.DecoupledWeightDecay)
            {
                gi += wd * pi;
            }

            nm[i] = b1 * m[i] + (1 - b1) * gi;
            nv[i] = b2 * v[i] + (1 - b2) * gi * gi;
            if (s.DecoupledWeightDecay)
            {
                pi -= lr * wd * pi;
            }

            np[i] = pi - lr * (nm[i] / bc1) / (Math.Sqrt(nv[i] / bc2) + s.Epsilon);
        }

        return (np, nm, nv);
    }

    /// <summary>The Philox words for element <paramref name="index"/> of a fill (see
    /// <see cref="Philox"/>).</summary>
    public static uint PhiloxWord(ulong seed, ulong stream, long index)
    {
        var (r0, r1, r2, r3) = Philox.Block(
            (uint)(index / 4),
            0u,
            (uint)stream,
            (uint)(stream >> 32),
            (uint)seed,
            (uint)(seed >> 32)
        );
        return (index % 4) switch
        {
            0 => r0,
            1 => r1,
            2 => r2,
            _ => r3,
        };
    }

    /// <summary>Reference uniform fill (exactly the device's float32 arithmetic).</summary>
    public static float[] Uniform(int length, float low, float high, ulong seed, ulong stream)
    {
        var y = new float[length];
        for (int e = 0; e < length; e++)
        {
            y[e] = low + (high - low) * Philox.ToUnit(PhiloxWord(seed, stream, e));
        }

        return y;
    }

    /// <summary>Reference normal fill by Box–Muller in double.</summary>
    public static double[] Normal(int length, double mean, double std, ulong seed, ulong stream)
    {
        var y = new double[length];
        for (int e = 0; e < length; e++)
        {
            long pair = e / 2 * 2;
            double u1 = ((PhiloxWord(seed, stream, pair) >> 8) + 1.0) / 16777216.0;
            double u2 = (PhiloxWord(seed, stream, pair + 1) >> 8) / 16777216.0;
            double rad = Math.Sqrt(-2 * Math.Log(u1));
            y[e] = mean + std * rad * (e % 2 == 0 ? Math.Cos(2 * Math.PI * u2) : Math.Sin(2 * Math.PI * u2));
        }

        return y;
    }
}
