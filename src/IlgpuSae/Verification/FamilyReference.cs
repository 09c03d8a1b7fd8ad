using IlgpuSae.Sae;

namespace IlgpuSae.Verification;

/// <summary>
/// Which features the AuxK loss treats as dead: <paramref name="DeadBefore"/>[i] from the counters before
/// the batch, and with <paramref name="ExcludeFiredInBatch"/> (dictionary_learning) a feature that fires in
/// the batch is alive whatever its counter.
/// </summary>
public sealed record DeadSpec(bool[] DeadBefore, bool ExcludeFiredInBatch);

/// <summary>
/// Double-precision reference of the batch-level families, written as plain loops for clarity: TopK,
/// BatchTopK and Matryoshka BatchTopK with their AuxK loss in either style, and JumpReLU training (SAELens
/// step sparsity with the kernel-density pseudo-derivatives). Where <see cref="SaeReference"/> works row by
/// row, these selections and losses need the whole batch (the BatchTopK budget, the AuxK variance, the dead
/// set). JumpReLU's options: the tanh sparsity and the pre-activation loss (its dead set from
/// <see cref="DeadSpec.DeadBefore"/>). Tests check <see cref="Gradients"/> against central finite
/// differences of <see cref="Loss"/> (the selections are piecewise constant; the AuxK residual is a
/// stop-gradient, so pass the live parameters as <c>frozen</c> to make it a constant) and the device
/// against <see cref="Gradients"/>.
/// </summary>
public static class FamilyReference
{
    /// <summary>Everything a forward pass computes.</summary>
    /// <param name="Pre">Raw pre-activations <c>x̃·W_enc + b_enc</c> [B, M].</param>
    /// <param name="F">Features [B, M].</param>
    /// <param name="Xhat">Full-width reconstructions [B, d].</param>
    /// <param name="Aux">AuxK codes [B, M] (zeros without AuxK).</param>
    /// <param name="AuxFactor">The AuxK gradient factor <c>2α·g/B</c> (0 without AuxK or dead
    /// features).</param>
    /// <param name="AuxResidual">The AuxK target e = x − x̂ [B, d] (from the frozen parameters).</param>
    /// <param name="AuxRecon">ê [B, d].</param>
    /// <param name="Loss">The objective.</param>
    /// <param name="DeadCount">Dead features seen by AuxK.</param>
    public sealed record Pass(
        double[] Pre,
        double[] F,
        double[] Xhat,
        double[] Aux,
        double AuxFactor,
        double[] AuxResidual,
        double[] AuxRecon,
        double Loss,
        int DeadCount
    );

    /// <summary>The objective of one batch.</summary>
    public static double Loss(
        SaeConfig config,
        IReadOnlyDictionary<string, double[]> p,
        double[] x,
        int batch,
        SaeLossOptions options,
        DeadSpec? dead = null,
        IReadOnlyDictionary<string, double[]>? frozen = null
    ) => Forward(config, p, x, batch, options, dead, frozen).Loss;

    /// <summary>The forward pass (see <see cref="Pass"/>).</summary>
    public static Pass Forward(
        SaeConfig config,
        IReadOnlyDictionary<string, double[]> p,
        double[] x,
        int batch,
        SaeLossOptions options,
        DeadSpec? dead = null,
        IReadOnlyDictionary<string, double[]>? frozen = null
    )
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(p);
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(options);
        int d = config.DIn,
            m = config.DSae,
            b = batch;
        double c = options.Scale == ReconstructionScale.Sum ? 1 : 1.0 / d;
        var pre = PreActivations(config, p, x, b);
        var f = Select(config, p, pre, b);
        if (config.Architecture == SaeArchitecture.JumpRelu && !options.JumpRelu.TrainingRelu)
        {
            // dictionary_learning's training forward: f = z·1[z > θ], no ReLU (differs where θ < 0).
            var theta = p["threshold"];
            for (long t = 0; t < pre.Length; t++)
            {
                f[t] = pre[t] > theta[t % m] ? pre[t] : 0;
            }
        }

        var wDec = p["W_dec"];
        var bDec = p["b_dec"];
        var weights = LevelWeights(config, options);
        var xhat = Decode(f, wDec, bDec, b, m, d, m);
        double loss = weights[^1] * c * SquaredError(xhat, x) / b;
        if (config.MatryoshkaWidths is { } widths)
        {
            for (int g = 0; g < widths.Count - 1; g++)
            {
                var level = Decode(f, wDec, bDec, b, m, d, widths[g]);
                loss += weights[g] * c * SquaredError(level, x) / b;
            }
        }

        if (config.Architecture == SaeArchitecture.JumpRelu)
        {
            if (options.JumpRelu.Sparsity == JumpReluSparsity.Tanh)
            {
                // (λ/B)·Σ_b Σ_i tanh(c·f_bi·‖W_dec[i]‖)
                var norms = SaeReference.RowNorms(wDec, m, d);
                double c4 = options.JumpRelu.TanhScale;
                double sum = 0;
                for (long t = 0; t < f.Length; t++)
                {
                    sum += Math.Tanh(c4 * f[t] * norms[t % m]);
                }

                loss += (double)options.L1Coefficient * sum / b;
            }
            else if (options.JumpRelu.Sparsity == JumpReluSparsity.TargetL0)
            {
                // dictionary_learning: λ·(l0/T − 1)², l0 = (1/B)·Σ_b Σ_i H(s_bi − θ_i)
                double excess = StepCount(config, p, pre, f, options) / b / options.JumpRelu.TargetL0 - 1;
                loss += (double)options.L1Coefficient * excess * excess;
            }
            else
            {
                double active = f.Count(v => v != 0);
                loss += (double)options.L1Coefficient * active / b;
            }

            if (options.JumpRelu.PreActCoefficient > 0)
            {
                // (λ_P/B)·Σ_b Σ_i ReLU(θ_i − z_bi)·dead_i·‖W_dec[i]‖
                var norms = SaeReference.RowNorms(wDec, m, d);
                var isDead = PreActDead(m, options, dead);
                var theta = p["threshold"];
                double sum = 0;
                for (long t = 0; t < pre.Length; t++)
                {
                    int i = (int)(t % m);
                    sum += isDead[i] ? Math.Max(0, theta[i] - pre[t]) * norms[i] : 0;
                }

                loss += (double)options.JumpRelu.PreActCoefficient * sum / b;
            }
        }

        var aux = new double[(long)b * m];
        var e = new double[(long)b * d];
        var ehat = new double[(long)b * d];
        double factor = 0;
        int deadCount = 0;
        if (options.AuxK is { } auxK && dead is not null)
        {
            bool saeLens = auxK.Style == AuxKStyle.SaeLens;
            var isDead = new bool[m];
            for (int i = 0; i < m; i++)
            {
                bool fired = false;
                for (int r = 0; r < b; r++)
                {
                    fired |= f[(long)r * m + i] != 0;
                }

                isDead[i] = dead.DeadBefore[i] && !(dead.ExcludeFiredInBatch && fired);
                deadCount += isDead[i] ? 1 : 0;
            }

            // The residual target is a stop-gradient: computed from the frozen parameters when given.
            var q = frozen ?? p;
            var fq = Select(config, q, PreActivations(config, q, x, b), b);
            var xq = Decode(fq, q["W_dec"], q["b_dec"], b, m, d, m);
            for (long t = 0; t < e.Length; t++)
            {
                e[t] = x[t] - xq[t];
            }

            var score = SelectionScores(config, p, pre); // SAELens ranks the aux codes as the main ones
            for (int r = 0; r < b; r++)
            {
                var order = Enumerable
                    .Range(0, m)
                    .Where(i =>
                        isDead[i]
                        && (saeLens ? !double.IsNaN(pre[(long)r * m + i]) : pre[(long)r * m + i] > 0)
                    )
                    .OrderByDescending(i => score[(long)r * m + i])
                    .ThenBy(i => i)
                    .Take(auxK.KAux);
                foreach (int i in order)
                {
                    aux[(long)r * m + i] = pre[(long)r * m + i];
                }
            }

            var zero = new double[d];
            ehat = Decode(aux, wDec, saeLens ? bDec : zero, b, m, d, m);
            double g;
            if (saeLens)
            {
                g = Math.Min(deadCount / (double)auxK.KAux, 1);
            }
            else
            {
                var mean = new double[d];
                for (int r = 0; r < b; r++)
                {
                    for (int j = 0; j < d; j++)
                    {
                        mean[j] += e[(long)r * d + j] / b;
                    }
                }

                double den = 0;
                for (int r = 0; r < b; r++)
                {
                    for (int j = 0; j < d; j++)
                    {
                        double v = e[(long)r * d + j] - mean[j];
                        den += v * v;
                    }
                }

                den /= b;
                g = deadCount > 0 && den > 0 ? 1 / den : 0;
            }

            double sse = 0;
            for (long t = 0; t < e.Length; t++)
            {
                sse += (ehat[t] - e[t]) * (ehat[t] - e[t]);
            }

            loss += auxK.Coefficient * g * sse / b;
            factor = 2 * auxK.Coefficient * g / b;
        }

        return new Pass(pre, f, xhat, aux, factor, e, ehat, loss, deadCount);
    }

    /// <summary>Analytic gradients of <see cref="Loss"/> for every parameter (θ through the
    /// pseudo-derivatives
    /// for JumpReLU).</summary>
    public static Dictionary<string, double[]> Gradients(
        SaeConfig config,
        IReadOnlyDictionary<string, double[]> p,
        double[] x,
        int batch,
        SaeLossOptions options,
        DeadSpec? dead = null
    )
    {
        var pass = Forward(config, p, x, batch, options, dead);
        int d = config.DIn,
            m = config.DSae,
            b = batch;
        double c = options.Scale == ReconstructionScale.Sum ? 1 : 1.0 / d;
        var g = p.ToDictionary(kv => kv.Key, kv => new double[kv.Value.Length]);
        var wDec = p["W_dec"];
        var wEnc = p["W_enc"];
        var bDec = p["b_dec"];
        var weights = LevelWeights(config, options);
        var dF = new double[(long)b * m];
        var levels = config.MatryoshkaWidths ?? [m];
        for (int level = 0; level < levels.Count; level++)
        {
            int width = levels[level];
            var xhat = level == levels.Count - 1 ? pass.Xhat : Decode(pass.F, wDec, bDec, b, m, d, width);
            double scale = weights[level] * c * 2 / b;
            for (int r = 0; r < b; r++)
            {
                for (int j = 0; j < d; j++)
                {
                    double delta = scale * (xhat[(long)r * d + j] - x[(long)r * d + j]);
                    g["b_dec"][j] += delta;
                    for (int i = 0; i < width; i++)
                    {
                        dF[(long)r * m + i] += delta * wDec[(long)i * d + j];
                        g["W_dec"][(long)i * d + j] += pass.F[(long)r * m + i] * delta;
                    }
                }
            }
        }

        var dU = new double[(long)b * m];
        if (config.Architecture == SaeArchitecture.JumpRelu)
        {
            var theta = p["threshold"];
            double eps = options.JumpRelu.Bandwidth;
            double lambdaOverB = (double)options.L1Coefficient / b;
            bool tanh = options.JumpRelu.Sparsity == JumpReluSparsity.Tanh;
            double c4 = options.JumpRelu.TanhScale;
            var norms = SaeReference.RowNorms(wDec, m, d);
            double preActOverB = (double)options.JumpRelu.PreActCoefficient / b;
            var isDead = PreActDead(m, options, dead);
            bool onFeatures = options.JumpRelu.StepInput == JumpReluStepInput.Features;
            // ∂L/∂H_bi of the sparsity term: λ/B, or for the target-L0 loss (λ/B)·(2/T)·(l0/T − 1).
            double step = lambdaOverB;
            if (options.JumpRelu.Sparsity == JumpReluSparsity.TargetL0)
            {
                double target = options.JumpRelu.TargetL0;
                double l0 = StepCount(config, p, pass.Pre, pass.F, options) / b;
                step = lambdaOverB * 2 / target * (l0 / target - 1);
            }

            for (int r = 0; r < b; r++)
            {
                for (int i = 0; i < m; i++)
                {
                    long t = (long)r * m + i;
                    double z = pass.Pre[t];
                    double stepTerm = step;
                    if (tanh)
                    {
                        // The tanh term's derivative joins ∂L/∂f (and so the JumpReLU pseudo-derivative);
                        // its decoder-norm part goes to W_dec.
                        double sech2 = 1 - Math.Pow(Math.Tanh(c4 * pass.F[t] * norms[i]), 2);
                        dF[t] += lambdaOverB * c4 * norms[i] * sech2;
                        for (int j = 0; j < d; j++)
                        {
                            g["W_dec"][(long)i * d + j] +=
                                lambdaOverB * c4 * pass.F[t] * sech2 * wDec[(long)i * d + j] / norms[i];
                        }

                        stepTerm = 0;
                    }

                    bool window = Math.Abs((z - theta[i]) / eps) < 0.5;
                    dU[t] = z > theta[i] ? dF[t] : 0;
                    if (window)
                    {
                        double pseudo = (theta[i] * dF[t] + (onFeatures ? 0 : stepTerm)) / eps;
                        g["threshold"][i] -= pseudo;
                        if (options.JumpRelu.SteToInput)
                        {
                            dU[t] += pseudo;
                        }
                    }

                    if (onFeatures && Math.Abs((pass.F[t] - theta[i]) / eps) < 0.5)
                    {
                        // dictionary_learning's Step(f, θ): the step's window is on f − θ.
                        g["threshold"][i] -= stepTerm / eps;
                    }

                    if (preActOverB > 0 && isDead[i] && theta[i] > z)
                    {
                        // (λ_P/B)·(θ_i − z)·n_i: −(λ_P/B)·n_i to z, +(λ_P/B)·n_i to θ_i,
                        // (λ_P/B)·(θ_i − z)·Ŵ_dec[i] to W_dec[i].
                        dU[t] -= preActOverB * norms[i];
                        g["threshold"][i] += preActOverB * norms[i];
                        for (int j = 0; j < d; j++)
                        {
                            g["W_dec"][(long)i * d + j] +=
                                preActOverB * (theta[i] - z) * wDec[(long)i * d + j] / norms[i];
                        }
                    }
                }
            }
        }
        else
        {
            for (long t = 0; t < dU.Length; t++)
            {
                dU[t] = pass.F[t] != 0 ? dF[t] : 0;
            }
        }

        if (pass.AuxFactor != 0)
        {
            bool saeLens = options.AuxK!.Style == AuxKStyle.SaeLens;
            for (int r = 0; r < b; r++)
            {
                for (int j = 0; j < d; j++)
                {
                    long t = (long)r * d + j;
                    double da = pass.AuxFactor * (pass.AuxRecon[t] - pass.AuxResidual[t]);
                    if (saeLens)
                    {
                        g["b_dec"][j] += da;
                    }

                    for (int i = 0; i < m; i++)
                    {
                        double a = pass.Aux[(long)r * m + i];
                        if (a != 0)
                        {
                            dU[(long)r * m + i] += da * wDec[(long)i * d + j];
                            g["W_dec"][(long)i * d + j] += a * da;
                        }
                    }
                }
            }
        }

        for (int r = 0; r < b; r++)
        {
            for (int i = 0; i < m; i++)
            {
                double du = dU[(long)r * m + i];
                g["b_enc"][i] += du;
                for (int j = 0; j < d; j++)
                {
                    double xc = x[(long)r * d + j] - (config.ApplyBDecToInput ? bDec[j] : 0);
                    g["W_enc"][(long)j * m + i] += xc * du;
                    if (config.ApplyBDecToInput)
                    {
                        g["b_dec"][j] -= wEnc[(long)j * m + i] * du;
                    }
                }
            }
        }

        return g;
    }

    /// <summary>The raw pre-activations <c>x̃·W_enc + b_enc</c> [B, M].</summary>
    public static double[] PreActivations(
        SaeConfig config,
        IReadOnlyDictionary<string, double[]> p,
        double[] x,
        int batch
    )
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(p);
        ArgumentNullException.ThrowIfNull(x);
        int d = config.DIn,
            m = config.DSae;
        var wEnc = p["W_enc"];
        var bEnc = p["b_enc"];
        var bDec = p["b_dec"];
        var pre = new double[(long)batch * m];
        for (int r = 0; r < batch; r++)
        {
            for (int i = 0; i < m; i++)
            {
                double s = bEnc[i];
                for (int j = 0; j < d; j++)
                {
                    s +=
                        (x[(long)r * d + j] - (config.ApplyBDecToInput ? bDec[j] : 0))
                        * wEnc[(long)j * m + i];
                }

                pre[(long)r * m + i] = s;
            }
        }

        return pre;
    }

    /// <summary>
    /// The training features from the pre-activations: TopK per row, BatchTopK (and Matryoshka) over the
    /// flattened batch (k·B largest positive values, ties to the lowest flat index), JumpReLU
    /// <c>z·1[z &gt; θ]·1[z &gt; 0]</c>.
    /// </summary>
    public static double[] Select(
        SaeConfig config,
        IReadOnlyDictionary<string, double[]> p,
        double[] pre,
        int batch
    )
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(p);
        ArgumentNullException.ThrowIfNull(pre);
        int m = config.DSae;
        var f = new double[pre.Length];
        if (config.Architecture == SaeArchitecture.JumpRelu)
        {
            var theta = p["threshold"];
            for (long t = 0; t < pre.Length; t++)
            {
                double z = pre[t];
                f[t] = z > 0 && z > theta[t % m] ? z : 0;
            }
        }
        else if (config.Architecture == SaeArchitecture.TopK)
        {
            var score = SelectionScores(config, p, pre);
            for (int r = 0; r < batch; r++)
            {
                foreach (
                    int i in Enumerable
                        .Range(0, m)
                        .Where(i => score[(long)r * m + i] > 0)
                        .OrderByDescending(i => score[(long)r * m + i])
                        .ThenBy(i => i)
                        .Take(config.K)
                )
                {
                    f[(long)r * m + i] = pre[(long)r * m + i];
                }
            }
        }
        else if (config.Architecture is BatchTopKSae)
        {
            var score = SelectionScores(config, p, pre);
            foreach (
                long t in Enumerable
                    .Range(0, pre.Length)
                    .Select(t => (long)t)
                    .Where(t => score[t] > 0)
                    .OrderByDescending(t => score[t])
                    .ThenBy(t => t)
                    .Take(config.K * batch)
            )
            {
                f[t] = pre[t];
            }
        }
        else
        {
            throw new NotSupportedException($"{config.Architecture.Name}: use SaeReference.");
        }

        return f;
    }

    /// <summary>
    /// What the TopK family's selections rank: the pre-activations, or with
    /// <see cref="SaeConfig.RescaleActsByDecoderNorm"/> <c>S = U ⊙ ‖W_dec[i]‖</c> (SAELens). The kept codes
    /// are the pre-activations either way (<c>S ⊘ ‖W_dec[i]‖</c>).
    /// </summary>
    public static double[] SelectionScores(
        SaeConfig config,
        IReadOnlyDictionary<string, double[]> p,
        double[] pre
    )
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(p);
        ArgumentNullException.ThrowIfNull(pre);
        if (!config.RescaleActsByDecoderNorm)
        {
            return pre;
        }

        int m = config.DSae;
        var norms = SaeReference.RowNorms(p["W_dec"], m, config.DIn);
        return [.. pre.Select((u, t) => u * norms[t % m])];
    }

    /// <summary>
    /// <c>Σ_b Σ_i H(s_bi − θ_i)</c>, the count of the L0 step, with s = f
    /// (<see cref="JumpReluStepInput.Features"/>, dictionary_learning) or the pre-activation z.
    /// </summary>
    public static double StepCount(
        SaeConfig config,
        IReadOnlyDictionary<string, double[]> p,
        double[] pre,
        double[] f,
        SaeLossOptions options
    )
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(p);
        ArgumentNullException.ThrowIfNull(pre);
        ArgumentNullException.ThrowIfNull(f);
        ArgumentNullException.ThrowIfNull(options);
        var theta = p["threshold"];
        var s = options.JumpRelu.StepInput == JumpReluStepInput.Features ? f : pre;
        double count = 0;
        for (long t = 0; t < s.Length; t++)
        {
            count += s[t] > theta[t % config.DSae] ? 1 : 0;
        }

        return count;
    }

    /// <summary>
    /// dead_i of JumpReLU's pre-activation loss: every latent with <see cref="PreActLatents.All"/>, else
    /// <see cref="DeadSpec.DeadBefore"/> (SAELens: the counters before the batch; a latent firing in the
    /// batch stays dead), none without a dead set.
    /// </summary>
    public static bool[] PreActDead(int m, SaeLossOptions options, DeadSpec? dead)
    {
        ArgumentNullException.ThrowIfNull(options);
        return options.JumpRelu.PreActLatents == PreActLatents.All ? Enumerable.Repeat(true, m).ToArray()
            : dead is null ? new bool[m]
            : (bool[])dead.DeadBefore.Clone();
    }

    private static IReadOnlyList<float> LevelWeights(SaeConfig config, SaeLossOptions options) =>
        config.Architecture == SaeArchitecture.Matryoshka
            ? MatryoshkaSae.LevelWeights(config, options)
            : [1f];

    /// <summary><c>f[:, :width]·W_dec[:width] + b_dec</c>.</summary>
    private static double[] Decode(double[] f, double[] wDec, double[] bDec, int b, int m, int d, int width)
    {
        var y = new double[(long)b * d];
        for (int r = 0; r < b; r++)
        {
            for (int j = 0; j < d; j++)
            {
                double s = bDec[j];
                for (int i = 0; i < width; i++)
                {
                    s += f[(long)r * m + i] * wDec[(long)i * d + j];
                }

                y[(long)r * d + j] = s;
            }
        }

        return y;
    }

    private static double SquaredError(double[] a, double[] b)
    {
        double s = 0;
        for (long t = 0; t < a.Length; t++)
        {
            s += (a[t] - b[t]) * (a[t] - b[t]);
        }

        return s;
    }
}
