using IlgpuSae.Sae;

namespace IlgpuSae.Verification;

/// <summary>
/// Double-precision reference of the SAE forward pass, loss and every parameter gradient (paper §2.2 and
/// §3.2.2),
/// written as plain loops. Tests check it against central finite differences and then check the device
/// kernels against it. Parameters are keyed by their SAELens names; matrices are row-major.
/// </summary>
public static class SaeReference
{
    /// <summary>
    /// The batch-mean loss. <paramref name="frozenDecoder"/> and <paramref name="frozenDecoderBias"/> are the
    /// values the gated auxiliary reconstruction uses when its decoder is frozen (stop-gradient): pass copies
    /// of the live values so that finite differences see them as constants.
    /// </summary>
    public static double Loss(
        SaeConfig config,
        IReadOnlyDictionary<string, double[]> p,
        double[] x,
        int batch,
        SaeLossOptions options,
        double[]? frozenDecoder = null,
        double[]? frozenDecoderBias = null
    )
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(p);
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(options);
        int d = config.DIn,
            m = config.DSae;
        double c = options.Scale == ReconstructionScale.Sum ? 1 : 1.0 / d;
        var wDec = p["W_dec"];
        var bDec = p["b_dec"];
        var auxDec = options.FreezeAuxDecoder ? frozenDecoder ?? wDec : wDec;
        var auxBias = options.FreezeAuxDecoder ? frozenDecoderBias ?? bDec : bDec;
        var norms = RowNorms(wDec, m, d);
        double total = 0;
        for (int b = 0; b < batch; b++)
        {
            var (f, a, _, _) = EncodeRow(config, p, x, b);
            total += c * SquaredError(x, b, f, wDec, bDec, d, m);
            double penalty = 0;
            for (int i = 0; i < m; i++)
            {
                penalty += (options.DecoderNormWeightedL1 ? norms[i] : 1) * a[i];
            }

            total += options.L1Coefficient * penalty;
            if (config.Architecture.ReconstructionRows > 1)
            {
                total += c * SquaredError(x, b, a, auxDec, auxBias, d, m);
            }
        }

        return total / batch;
    }

    /// <summary>Features of every row: [B, M].</summary>
    public static double[] Encode(
        SaeConfig config,
        IReadOnlyDictionary<string, double[]> p,
        double[] x,
        int batch
    )
    {
        ArgumentNullException.ThrowIfNull(config);
        var f = new double[(long)batch * config.DSae];
        for (int b = 0; b < batch; b++)
        {
            EncodeRow(config, p, x, b).F.CopyTo(f, (long)b * config.DSae);
        }

        return f;
    }

    /// <summary>
    /// One row's features F, penalised activations A (ReLU(π_gate) for gated SAEs, F otherwise), encoder
    /// product
    /// U (x̃·W_enc) and second encoder product Um (x̃·W_mag when untied, else U). The activation is the
    /// family's
    /// (<see cref="SaeArchitecture.ReferenceActivate"/>).
    /// </summary>
    public static (double[] F, double[] A, double[] U, double[] Um) EncodeRow(
        SaeConfig config,
        IReadOnlyDictionary<string, double[]> p,
        double[] x,
        int row
    )
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(p);
        ArgumentNullException.ThrowIfNull(x);
        int d = config.DIn,
            m = config.DSae;
        var xc = new double[d];
        for (int j = 0; j < d; j++)
        {
            xc[j] = x[(long)row * d + j] - (config.ApplyBDecToInput ? p["b_dec"][j] : 0);
        }

        var encoders = config.Architecture.EncoderMatrices(config);
        var u = MatVec(xc, p[encoders[0]], d, m);
        var um = encoders.Count > 1 ? MatVec(xc, p[encoders[1]], d, m) : u;
        var (f, a) = config.Architecture.ReferenceActivate(config, p, u, um);
        return (f, a, u, um);
    }

    /// <summary>Analytic gradients of <see cref="Loss"/> for every trainable parameter (paper §2.2 and
    /// §3.2.2).</summary>
    public static Dictionary<string, double[]> Gradients(
        SaeConfig config,
        IReadOnlyDictionary<string, double[]> p,
        double[] x,
        int batch,
        SaeLossOptions options
    )
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(p);
        ArgumentNullException.ThrowIfNull(options);
        int d = config.DIn,
            m = config.DSae;
        bool stacked = config.Architecture.ReconstructionRows > 1;
        var encoders = config.Architecture.EncoderMatrices(config);
        bool second = encoders.Count > 1;
        var wEnc = p[encoders[0]];
        var wMag = second ? p[encoders[1]] : wEnc;
        double c = options.Scale == ReconstructionScale.Sum ? 1 : 1.0 / d;
        var g = p.ToDictionary(kv => kv.Key, kv => new double[kv.Value.Length]);
        var wDec = p["W_dec"];
        var bDec = p["b_dec"];
        var norms = RowNorms(wDec, m, d);
        var colA = new double[m];
        for (int b = 0; b < batch; b++)
        {
            var (f, a, u, um) = EncodeRow(config, p, x, b);
            var delta = Residual(x, b, f, wDec, bDec, d, m, 2 * c / batch);
            var deltaA = stacked ? Residual(x, b, a, wDec, bDec, d, m, 2 * c / batch) : new double[d];
            var phi = MatTVec(delta, wDec, m, d);
            var psi = MatTVec(deltaA, wDec, m, d);
            var du = new double[m];
            var dum = new double[m];
            var penalty = new double[m];
            for (int i = 0; i < m; i++)
            {
                penalty[i] = options.L1Coefficient / batch * (options.DecoderNormWeightedL1 ? norms[i] : 1);
                colA[i] += a[i];
            }

            config.Architecture.ReferenceBackward(config, p, u, um, phi, psi, penalty, du, dum, g);

            for (int j = 0; j < d; j++)
            {
                double xc = x[(long)b * d + j] - (config.ApplyBDecToInput ? bDec[j] : 0);
                for (int i = 0; i < m; i++)
                {
                    g[encoders[0]][(long)j * m + i] += xc * du[i];
                    if (second)
                    {
                        g[encoders[1]][(long)j * m + i] += xc * dum[i];
                    }
                }
            }

            bool auxIntoDecoder = stacked && !options.FreezeAuxDecoder;
            for (int i = 0; i < m; i++)
            {
                for (int j = 0; j < d; j++)
                {
                    g["W_dec"][(long)i * d + j] += f[i] * delta[j] + (auxIntoDecoder ? a[i] * deltaA[j] : 0);
                }
            }

            for (int j = 0; j < d; j++)
            {
                g["b_dec"][j] += delta[j] + (auxIntoDecoder ? deltaA[j] : 0);
                if (config.ApplyBDecToInput)
                {
                    for (int i = 0; i < m; i++)
                    {
                        g["b_dec"][j] -=
                            wEnc[(long)j * m + i] * du[i] + (second ? wMag[(long)j * m + i] * dum[i] : 0);
                    }
                }
            }
        }

        if (options.DecoderNormWeightedL1)
        {
            for (int i = 0; i < m; i++)
            {
                for (int j = 0; j < d; j++)
                {
                    if (norms[i] > 0)
                    {
                        g["W_dec"][(long)i * d + j] +=
                            options.L1Coefficient / batch * colA[i] * wDec[(long)i * d + j] / norms[i];
                    }
                }
            }
        }

        return g;
    }

    private static double[] MatVec(double[] v, double[] w, int rows, int cols)
    {
        var y = new double[cols];
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < cols; c++)
            {
                y[c] += v[r] * w[(long)r * cols + c];
            }
        }

        return y;
    }

    private static double[] MatTVec(double[] v, double[] w, int rows, int cols)
    {
        var y = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < cols; c++)
            {
                y[r] += v[c] * w[(long)r * cols + c];
            }
        }

        return y;
    }

    /// <summary>The Euclidean norm of each row of <paramref name="w"/> [rows, cols].</summary>
    internal static double[] RowNorms(double[] w, int rows, int cols)
    {
        var n = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double s = 0;
            for (int c = 0; c < cols; c++)
            {
                s += w[(long)r * cols + c] * w[(long)r * cols + c];
            }

            n[r] = Math.Sqrt(s);
        }

        return n;
    }

    private static double[] Residual(
        double[] x,
        int row,
        double[] f,
        double[] wDec,
        double[] bDec,
        int d,
        int m,
        double scale
    )
    {
        var xhat = MatVec(f, wDec, m, d);
        for (int j = 0; j < d; j++)
        {
            xhat[j] = scale * (xhat[j] + bDec[j] - x[(long)row * d + j]);
        }

        return xhat;
    }

    private static double SquaredError(
        double[] x,
        int row,
        double[] f,
        double[] wDec,
        double[] bDec,
        int d,
        int m
    )
    {
        var r = Residual(x, row, f, wDec, bDec, d, m, 1);
        return r.Sum(v => v * v);
    }
}
