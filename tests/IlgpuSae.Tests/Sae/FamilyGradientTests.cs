using FluentAssertions;
using IlgpuSae.Sae;
using IlgpuSae.Tensors;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Verification;
using MathNet.Numerics.Differentiation;
using Xunit;

namespace IlgpuSae.Tests.Sae;

/// <summary>A batch-level family case: the SAE, its objective, and which features the AuxK loss sees as
/// dead.</summary>
public sealed record FamilyCase(string Name, SaeConfig Config, SaeLossOptions Options, bool[]? DeadBefore)
{
    /// <summary>The dead set: for AuxK in its style, for JumpReLU's pre-activation loss SAELens's (the
    /// counters before the batch).</summary>
    public DeadSpec? Dead =>
        DeadBefore is null
            ? null
            : new DeadSpec(DeadBefore, Options.AuxK?.Style == AuxKStyle.DictionaryLearning);

    public override string ToString() => Name;
}

/// <summary>
/// TopK, BatchTopK and Matryoshka (each with AuxK in both styles) and JumpReLU training: the double reference
/// against central finite differences, the JumpReLU pseudo-derivatives against their formula, then the device
/// against the reference on every backend and kernel shape, dense and sparse.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class FamilyGradientTests(DeviceFixture devices)
{
    /// <summary>The cases at width d and dictionary m.</summary>
    public static IEnumerable<FamilyCase> Cases(int d, int m)
    {
        var dead = Enumerable.Range(0, m).Select(i => i % 2 == 1).ToArray();
        var dl = new AuxKOptions { KAux = Math.Max(1, d / 2), Style = AuxKStyle.DictionaryLearning };
        var sl = new AuxKOptions
        {
            KAux = Math.Max(1, d / 2),
            Style = AuxKStyle.SaeLens,
            Coefficient = 1f,
        };
        SaeConfig Config(SaeArchitecture a, int k = 0, int[]? widths = null) =>
            new()
            {
                Architecture = a,
                DIn = d,
                DSae = m,
                K = k,
                MatryoshkaWidths = widths,
            };
        int kRow = Math.Max(1, m / 4);
        int[] widths = [Math.Max(1, m / 4), m / 2, m];
        yield return new("topk-aux-dl", Config(SaeArchitecture.TopK, kRow), new() { AuxK = dl }, dead);
        yield return new("topk-aux-saelens", Config(SaeArchitecture.TopK, kRow), new() { AuxK = sl }, dead);
        foreach (
            var (name, config) in RescaledConfigs(Config(SaeArchitecture.TopK, kRow), kRow, widths, Config)
        )
        {
            // SAELens's training default: the selections (main and AuxK) rank U ⊙ ‖W_dec[i]‖.
            yield return new(name, config, new() { AuxK = sl }, dead);
        }

        yield return new(
            "topk-aux-dl-mean-over-d",
            Config(SaeArchitecture.TopK, kRow),
            new() { AuxK = dl, Scale = ReconstructionScale.MeanOverDim },
            dead
        );
        yield return new(
            "batchtopk-aux-dl",
            Config(SaeArchitecture.BatchTopK, kRow),
            new() { AuxK = dl },
            dead
        );
        yield return new(
            "batchtopk-aux-saelens",
            Config(SaeArchitecture.BatchTopK, kRow),
            new() { AuxK = sl },
            dead
        );
        yield return new(
            "matryoshka-saelens",
            Config(SaeArchitecture.Matryoshka, kRow, widths),
            new() { AuxK = sl },
            dead
        );
        yield return new(
            "matryoshka-dl-weights",
            Config(SaeArchitecture.Matryoshka, kRow, widths),
            new() { AuxK = dl, LevelWeights = [1f / 9, 1f / 9, 1f / 9] },
            dead
        );
        yield return new(
            "jumprelu-step",
            Config(SaeArchitecture.JumpRelu),
            new()
            {
                L1Coefficient = 0.3f,
                JumpRelu = new JumpReluTraining { Bandwidth = 0.2f },
            },
            null
        );
        yield return new(
            "jumprelu-tanh",
            Config(SaeArchitecture.JumpRelu),
            new()
            {
                L1Coefficient = 0.3f,
                JumpRelu = new JumpReluTraining { Bandwidth = 0.2f, Sparsity = JumpReluSparsity.Tanh },
            },
            null
        );
        yield return new(
            "jumprelu-step-preact-dead",
            Config(SaeArchitecture.JumpRelu),
            new()
            {
                L1Coefficient = 0.3f,
                JumpRelu = new JumpReluTraining { Bandwidth = 0.2f, PreActCoefficient = 0.7f },
            },
            dead
        );
        yield return new(
            "jumprelu-tanh-preact-all",
            Config(SaeArchitecture.JumpRelu),
            new()
            {
                L1Coefficient = 0.3f,
                JumpRelu = new JumpReluTraining
                {
                    Bandwidth = 0.2f,
                    Sparsity = JumpReluSparsity.Tanh,
                    PreActCoefficient = 0.7f,
                    PreActLatents = PreActLatents.All,
                },
            },
            null
        );
        foreach (
            var (suffix, input) in new[]
            {
                ("f", JumpReluStepInput.Features),
                ("pre", JumpReluStepInput.PreActivation),
            }
        )
        {
            // dictionary_learning's trainer: no b_dec subtraction, raw θ, λ·(l0/T − 1)² with T well below the
            // batch's L0 (so the term's gradient is not zero).
            yield return new(
                "jumprelu-target-l0-" + suffix,
                Config(SaeArchitecture.JumpRelu) with
                {
                    ApplyBDecToInput = false,
                },
                new()
                {
                    L1Coefficient = 0.3f,
                    JumpRelu = new JumpReluTraining
                    {
                        Bandwidth = 0.2f,
                        LogThreshold = false,
                        Sparsity = JumpReluSparsity.TargetL0,
                        TargetL0 = 1.5f,
                        StepInput = input,
                    },
                },
                null
            );
        }

        yield return new(
            "jumprelu-step-ste",
            Config(SaeArchitecture.JumpRelu),
            new()
            {
                L1Coefficient = 0.3f,
                JumpRelu = new JumpReluTraining { Bandwidth = 0.2f, SteToInput = true },
            },
            null
        );

        // The wide band ε = 0.8 puts every θ (0.05 … 0.35, see Generate) below ε/2: the kernel window then
        // reaches pre-activations at and below 0, which the sparse path's support must hold too.
        yield return new(
            "jumprelu-step-ste-wide",
            Config(SaeArchitecture.JumpRelu),
            new()
            {
                L1Coefficient = 0.3f,
                JumpRelu = new JumpReluTraining { Bandwidth = 0.8f, SteToInput = true },
            },
            null
        );
        yield return new(
            "jumprelu-target-l0-pre-wide",
            Config(SaeArchitecture.JumpRelu) with
            {
                ApplyBDecToInput = false,
            },
            new()
            {
                L1Coefficient = 0.3f,
                JumpRelu = new JumpReluTraining
                {
                    Bandwidth = 0.8f,
                    LogThreshold = false,
                    Sparsity = JumpReluSparsity.TargetL0,
                    TargetL0 = 1.5f,
                    StepInput = JumpReluStepInput.PreActivation,
                },
            },
            null
        );
        // dictionary_learning's default: no ReLU in the training forward, raw θ that may go negative
        // (Generate makes every other θ negative for these "-norelu" cases).
        foreach (
            var (suffix, input) in new[]
            {
                ("f", JumpReluStepInput.Features),
                ("pre", JumpReluStepInput.PreActivation),
            }
        )
        {
            yield return new(
                "jumprelu-target-l0-" + suffix + "-norelu",
                Config(SaeArchitecture.JumpRelu) with
                {
                    ApplyBDecToInput = false,
                },
                new()
                {
                    L1Coefficient = 0.3f,
                    JumpRelu = new JumpReluTraining
                    {
                        Bandwidth = 0.2f,
                        LogThreshold = false,
                        TrainingRelu = false,
                        Sparsity = JumpReluSparsity.TargetL0,
                        TargetL0 = 1.5f,
                        StepInput = input,
                    },
                },
                null
            );
        }
    }

    private static IEnumerable<(string Name, SaeConfig Config)> RescaledConfigs(
        SaeConfig topK,
        int kRow,
        int[] widths,
        Func<SaeArchitecture, int, int[]?, SaeConfig> make
    )
    {
        yield return ("topk-aux-saelens-rescaled", topK with { RescaleActsByDecoderNorm = true });
        yield return (
            "batchtopk-aux-saelens-rescaled",
            make(SaeArchitecture.BatchTopK, kRow, null) with
            {
                RescaleActsByDecoderNorm = true,
            }
        );
        yield return (
            "matryoshka-saelens-rescaled",
            make(SaeArchitecture.Matryoshka, kRow, widths) with
            {
                RescaleActsByDecoderNorm = true,
            }
        );
    }

    /// <summary>Every case whose gradient is the loss's derivative (the straight-through option is by design
    /// not; the device test covers it).</summary>
    public static TheoryData<string> CaseNames()
    {
        var data = new TheoryData<string>();
        foreach (var c in Cases(4, 8).Where(c => !c.Options.JumpRelu.SteToInput))
        {
            data.Add(c.Name);
        }

        return data;
    }

    public static TheoryData<Target, string, TrainingPath> DeviceCases()
    {
        var data = new TheoryData<Target, string, TrainingPath>();
        foreach (var t in Targets.All())
        {
            foreach (var c in Cases(4, 8))
            {
                data.Add(t, c.Name, TrainingPath.Dense);
                data.Add(t, c.Name, TrainingPath.Sparse);
            }
        }

        return data;
    }

    private static FamilyCase Find(string name, int d, int m) => Cases(d, m).Single(c => c.Name == name);

    /// <summary>
    /// Random parameters and inputs (float32-representable) whose branches — every selection, the AuxK set,
    /// the JumpReLU step and kernel window — do not change under a random perturbation of size
    /// <paramref name="margin"/>, so finite differences and float32 runs see the reference's branches.
    /// </summary>
    public static (Dictionary<string, double[]> P, double[] X) Generate(
        FamilyCase c,
        int batch,
        int seed,
        double margin
    )
    {
        for (int attempt = 0; attempt < 2000; attempt++)
        {
            var random = new Random(seed + attempt * 7919);
            var p = new Dictionary<string, double[]>();
            foreach (var entry in SparseAutoencoder.LayoutFor(c.Config).Entries)
            {
                double scale = entry.Name.StartsWith('W') ? 0.6 : 0.3;
                p[entry.Name] = Enumerable
                    .Range(0, (int)entry.Length)
                    .Select(_ => (double)(float)((random.NextDouble() * 2 - 1) * scale))
                    .ToArray();
            }

            if (c.Config.RescaleActsByDecoderNorm)
            {
                // Decoder norms spread over [0.3, 2]: ranking U ⊙ n must differ from ranking U.
                var wDec = p["W_dec"];
                int dIn = c.Config.DIn;
                for (int i = 0; i < c.Config.DSae; i++)
                {
                    double factor = 0.3 + 1.7 * random.NextDouble();
                    for (int j = 0; j < dIn; j++)
                    {
                        wDec[i * dIn + j] = (float)(wDec[i * dIn + j] * factor);
                    }
                }
            }

            if (p.TryGetValue("threshold", out var theta))
            {
                bool negative = c.Name.EndsWith("-norelu", StringComparison.Ordinal);
                for (int i = 0; i < theta.Length; i++)
                {
                    theta[i] = (float)((negative && i % 2 == 0 ? -0.5 : 1) * (0.05 + Math.Abs(theta[i])));
                }
            }

            var x = Enumerable
                .Range(0, batch * c.Config.DIn)
                .Select(_ => (double)(float)(random.NextDouble() * 2 - 1))
                .ToArray();
            var pattern = Pattern(c, p, x, batch);
            bool stable = true;
            for (int trial = 0; trial < 4 && stable; trial++)
            {
                var q = p.ToDictionary(
                    kv => kv.Key,
                    kv => kv.Value.Select(v => v + margin * (random.NextDouble() * 2 - 1)).ToArray()
                );
                var y = x.Select(v => v + margin * (random.NextDouble() * 2 - 1)).ToArray();
                stable = Pattern(c, q, y, batch).SequenceEqual(pattern);
            }

            if (stable)
            {
                return (p, x);
            }
        }

        throw new InvalidOperationException("Could not draw data away from the branch points.");
    }

    private static bool[] Pattern(FamilyCase c, Dictionary<string, double[]> p, double[] x, int batch)
    {
        var pass = FamilyReference.Forward(c.Config, p, x, batch, c.Options, c.Dead);
        var bits = pass
            .F.Select(v => v != 0)
            .Concat(pass.Aux.Select(v => v != 0))
            .Concat(pass.Pre.Select(v => v > 0));
        if (p.TryGetValue("threshold", out var theta))
        {
            double eps = c.Options.JumpRelu.Bandwidth;
            int m = c.Config.DSae;
            bits = bits.Concat(pass.Pre.Select((z, t) => Math.Abs((z - theta[t % m]) / eps) < 0.5));
            // dictionary_learning's step on f has its own window.
            bits = bits.Concat(pass.F.Select((f, t) => Math.Abs((f - theta[t % m]) / eps) < 0.5));
        }

        return [.. bits];
    }

    [Theory]
    [InlineData("topk-aux-saelens-rescaled")]
    [InlineData("batchtopk-aux-saelens-rescaled")]
    [InlineData("matryoshka-saelens-rescaled")]
    public void The_rescaled_cases_select_differently_from_the_plain_ones(string caseName)
    {
        // Otherwise the "-rescaled" device and finite-difference checks could not tell the two apart.
        // The shapes, seeds and margins of the finite-difference and the device tests.
        foreach (var (d, m, batch, seed, margin) in new[] { (4, 8, 5, 3, 1e-4), (12, 40, 19, 5, 2e-4) })
        {
            var c = Find(caseName, d, m);
            var (p, x) = Generate(c, batch, seed, margin);
            var pre = FamilyReference.PreActivations(c.Config, p, x, batch);
            var rescaled = FamilyReference.Select(c.Config, p, pre, batch);
            var plain = FamilyReference.Select(
                c.Config with
                {
                    RescaleActsByDecoderNorm = false,
                },
                p,
                pre,
                batch
            );
            plain
                .Select(v => v != 0)
                .Should()
                .NotEqual(rescaled.Select(v => v != 0), $"{caseName} d{d} m{m}");
        }
    }

    [Theory]
    [InlineData("jumprelu-target-l0-f-norelu")]
    [InlineData("jumprelu-target-l0-pre-norelu")]
    public void The_norelu_cases_keep_negative_pre_activations_above_a_negative_threshold(string caseName)
    {
        // Otherwise the "-norelu" checks could not tell dictionary_learning's training forward from ours.
        foreach (var (d, m, batch, seed, margin) in new[] { (4, 8, 5, 3, 1e-4), (12, 40, 19, 5, 2e-4) })
        {
            var c = Find(caseName, d, m);
            var (p, x) = Generate(c, batch, seed, margin);
            var pass = FamilyReference.Forward(c.Config, p, x, batch, c.Options);
            pass.F.Should().Contain(v => v < 0, $"{caseName} d{d} m{m}");
        }
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void Reference_gradients_match_central_finite_differences(string caseName)
    {
        var c = Find(caseName, d: 4, m: 8);
        const int batch = 5;
        var (p, x) = Generate(c, batch, seed: 3, margin: 1e-4);
        var frozen = p.ToDictionary(kv => kv.Key, kv => (double[])kv.Value.Clone());
        var pass = FamilyReference.Forward(c.Config, p, x, batch, c.Options, c.Dead);
        if (c.Options.AuxK is not null)
        {
            pass.DeadCount.Should().BeGreaterThan(0, "the case must exercise AuxK");
            pass.Aux.Count(v => v != 0).Should().BeGreaterThan(0, "some dead latents must be selected");
        }

        var analytic = FamilyReference.Gradients(c.Config, p, x, batch, c.Options, c.Dead);
        var fd = new NumericalDerivative(3, 1) { StepType = StepType.Absolute, Epsilon = 1e-6 };
        foreach (var (name, values) in p)
        {
            if (name is "threshold" or BatchTopKSae.ThresholdTensor)
            {
                continue; // a step function's derivative: checked against the pseudo-derivative formula below
            }

            for (int k = 0; k < values.Length; k++)
            {
                double Loss(double[] theta)
                {
                    var q = p.ToDictionary(kv => kv.Key, kv => kv.Key == name ? theta : kv.Value);
                    return FamilyReference.Loss(c.Config, q, x, batch, c.Options, c.Dead, frozen);
                }

                double numeric = fd.EvaluatePartialDerivative(Loss, (double[])values.Clone(), k, 1);
                Math.Abs(numeric - analytic[name][k])
                    .Should()
                    .BeLessThan(
                        TestTolerances.FiniteDifferences.Bound(numeric),
                        $"∂L/∂{name}[{k}] in {caseName}: FD {numeric}, analytic {analytic[name][k]}"
                    );
            }
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void JumpRelu_threshold_gradient_is_the_kernel_density_estimate(bool ste)
    {
        // Rajamanoharan et al. 2024, §4: ∂L/∂θ_i = (1/(Bε))·Σ_b (I_i(x_b) − λ)·K((z_bi − θ_i)/ε) with
        // I_i = 2θ_i·W_dec[i]·(x − x̂) — written here from the paper, not from the reference's loops.
        var c = Find(ste ? "jumprelu-step-ste" : "jumprelu-step", d: 4, m: 8);
        const int batch = 6;
        var (p, x) = Generate(c, batch, seed: 9, margin: 1e-4);
        int d = c.Config.DIn,
            m = c.Config.DSae;
        double eps = c.Options.JumpRelu.Bandwidth,
            lambda = c.Options.L1Coefficient;
        var pass = FamilyReference.Forward(c.Config, p, x, batch, c.Options);
        var g = FamilyReference.Gradients(c.Config, p, x, batch, c.Options);
        int windows = 0;
        for (int i = 0; i < m; i++)
        {
            double expected = 0;
            for (int b = 0; b < batch; b++)
            {
                double z = pass.Pre[b * m + i];
                if (Math.Abs((z - p["threshold"][i]) / eps) >= 0.5)
                {
                    continue;
                }

                windows++;
                double inner = 0;
                for (int j = 0; j < d; j++)
                {
                    inner += p["W_dec"][i * d + j] * (x[b * d + j] - pass.Xhat[b * d + j]);
                }

                expected += 2 * p["threshold"][i] * inner - lambda;
            }

            expected /= batch * eps;
            g["threshold"]
                [i]
                .Should()
                .BeApproximately(expected, TestTolerances.DoubleRoundOff.Bound(expected));
        }

        windows.Should().BeGreaterThan(0, "some pre-activations must fall in a kernel window");
    }

    [Theory]
    [InlineData(JumpReluStepInput.Features)]
    [InlineData(JumpReluStepInput.PreActivation)]
    public void JumpRelu_target_l0_threshold_gradient_is_the_dictionary_learning_formula(
        JumpReluStepInput input
    )
    {
        // Variants spec §6.3, written from the formula, not from the reference's loops:
        // dθ_i = Σ_b Φ_bi·(−θ_i/ε)·K((z_bi − θ_i)/ε) + λ·(2/T)·(l0/T − 1)·(1/B)·Σ_b (−1/ε)·K((s_bi − θ_i)/ε),
        // Φ = (2/B)·(x̂ − x)·W_decᵀ, l0 = (1/B)·Σ_b Σ_i 1[s_bi > θ_i], s = f (dictionary_learning) or z.
        var c = Find(
            input == JumpReluStepInput.Features ? "jumprelu-target-l0-f" : "jumprelu-target-l0-pre",
            4,
            8
        );
        const int batch = 6;
        var (p, x) = Generate(c, batch, seed: 13, margin: 1e-4);
        int d = c.Config.DIn,
            m = c.Config.DSae;
        double eps = c.Options.JumpRelu.Bandwidth,
            lambda = c.Options.L1Coefficient,
            target = c.Options.JumpRelu.TargetL0;
        var pass = FamilyReference.Forward(c.Config, p, x, batch, c.Options);
        var g = FamilyReference.Gradients(c.Config, p, x, batch, c.Options);
        var theta = p["threshold"];
        bool onF = input == JumpReluStepInput.Features;
        double S(int b, int i) => onF ? pass.F[b * m + i] : pass.Pre[b * m + i];
        double l0 = 0;
        for (int b = 0; b < batch; b++)
        {
            for (int i = 0; i < m; i++)
            {
                l0 += S(b, i) > theta[i] ? 1.0 / batch : 0;
            }
        }

        l0.Should().NotBeApproximately(target, 0.1, "the target-L0 term must have a gradient");
        double coupling = lambda * 2 / target * (l0 / target - 1);
        int stepWindows = 0;
        for (int i = 0; i < m; i++)
        {
            double expected = 0;
            for (int b = 0; b < batch; b++)
            {
                if (Math.Abs((pass.Pre[b * m + i] - theta[i]) / eps) < 0.5)
                {
                    double phi = 0;
                    for (int j = 0; j < d; j++)
                    {
                        phi += 2.0 / batch * (pass.Xhat[b * d + j] - x[b * d + j]) * p["W_dec"][i * d + j];
                    }

                    expected += phi * -theta[i] / eps;
                }

                if (Math.Abs((S(b, i) - theta[i]) / eps) < 0.5)
                {
                    stepWindows++;
                    expected += coupling / batch * (-1 / eps);
                }
            }

            g["threshold"]
                [i]
                .Should()
                .BeApproximately(expected, TestTolerances.DoubleRoundOff.Bound(expected));
        }

        stepWindows.Should().BeGreaterThan(0, "some step inputs must fall in a kernel window");
        // The loss term itself: λ·(l0/T − 1)² on top of the reconstruction.
        var without = c.Options with
        {
            L1Coefficient = 0f,
        };
        (pass.Loss - FamilyReference.Loss(c.Config, p, x, batch, without))
            .Should()
            .BeApproximately(lambda * Math.Pow(l0 / target - 1, 2), 1e-12);
    }

    public static TheoryData<string> PreActCaseNames() =>
        ["jumprelu-step-preact-dead", "jumprelu-tanh-preact-all"];

    [Theory]
    [MemberData(nameof(PreActCaseNames))]
    public void JumpRelu_pre_act_loss_threshold_gradient_matches_central_finite_differences(string caseName)
    {
        // The pre-activation loss (λ_P/B)·Σ ReLU(θ − z)·dead·n is differentiable in θ (away from θ = z),
        // unlike the step and the JumpReLU: the loss with it minus the loss without it is that term alone.
        var c = Find(caseName, d: 4, m: 8);
        const int batch = 5;
        var (p, x) = Generate(c, batch, seed: 11, margin: 1e-4);
        var without = c.Options with { JumpRelu = c.Options.JumpRelu with { PreActCoefficient = 0f } };
        double term =
            FamilyReference.Loss(c.Config, p, x, batch, c.Options, c.Dead)
            - FamilyReference.Loss(c.Config, p, x, batch, without, c.Dead);
        term.Should().BeGreaterThan(1e-3, "the case must exercise the pre-activation loss");
        var g = FamilyReference.Gradients(c.Config, p, x, batch, c.Options, c.Dead);
        var g0 = FamilyReference.Gradients(c.Config, p, x, batch, without, c.Dead);
        var fd = new NumericalDerivative(3, 1) { StepType = StepType.Absolute, Epsilon = 1e-6 };
        int moved = 0;
        for (int k = 0; k < c.Config.DSae; k++)
        {
            double Term(double[] theta)
            {
                var q = p.ToDictionary(kv => kv.Key, kv => kv.Key == "threshold" ? theta : kv.Value);
                return FamilyReference.Loss(c.Config, q, x, batch, c.Options, c.Dead)
                    - FamilyReference.Loss(c.Config, q, x, batch, without, c.Dead);
            }

            double numeric = fd.EvaluatePartialDerivative(Term, (double[])p["threshold"].Clone(), k, 1);
            double analytic = g["threshold"][k] - g0["threshold"][k];
            moved += Math.Abs(numeric) > 1e-6 ? 1 : 0;
            Math.Abs(numeric - analytic)
                .Should()
                .BeLessThan(
                    TestTolerances.FiniteDifferences.Bound(numeric),
                    $"∂L_p/∂θ[{k}] in {caseName}: FD {numeric}, analytic {analytic}"
                );
        }

        moved.Should().BeGreaterThan(0, "some latent must sit below its threshold");
    }

    [SkippableTheory]
    [MemberData(nameof(DeviceCases))]
    public void Device_gradients_and_loss_match_the_reference(
        Target target,
        string caseName,
        TrainingPath path
    )
    {
        var device = devices.Get(target);
        var c = Find(caseName, d: 12, m: 40);
        const int batch = 19;
        var (p, x) = Generate(c, batch, seed: 5, margin: 2e-4);
        var pass = CheckDeviceGradients(device, target, c, p, x, batch, path, "FamilyBackward");
        if (c.Options.AuxK is not null)
        {
            pass.Aux.Count(v => v != 0).Should().BeGreaterThan(0, "the case must exercise AuxK");
        }

        if (c.Config.Architecture == SaeArchitecture.JumpRelu)
        {
            // The sparse path's hard corners must be in the data: inactive entries within ε/2 below θ
            // (in the support, Φ read there), and with θ < ε/2 such entries at or below z = 0.
            var theta = p["threshold"];
            double eps = c.Options.JumpRelu.Bandwidth;
            int m = c.Config.DSae;
            var band = pass
                .Pre.Select((z, t) => (Z: z, Theta: theta[t % m]))
                .Where(e => e.Z <= e.Theta && (e.Z - e.Theta) / eps > -0.5)
                .ToArray();
            band.Should().NotBeEmpty("some inactive entries must lie in the window below θ");
            if (c.Name.EndsWith("-wide", StringComparison.Ordinal))
            {
                band.Should().Contain(e => e.Z <= 0, "with θ < ε/2 the window reaches z ≤ 0");
            }
        }
    }

    /// <summary>
    /// One device pass of case <paramref name="c"/> on <paramref name="path"/> against the double
    /// reference: loads <paramref name="p"/>, sets the dead-feature window (W = 4 steps; dictionary_learning:
    /// dead ⇔ steps + 1 ≥ W and not fired now; SAELens: dead ⇔ steps &gt; W), poisons the gradient buffer
    /// (it must be zeroed and fully rewritten), and compares the loss and every gradient. Returns the
    /// reference pass for the caller's checks of what the data exercise.
    /// </summary>
    internal static FamilyReference.Pass CheckDeviceGradients(
        IlgpuSae.Backends.SaeDevice device,
        Target target,
        FamilyCase c,
        Dictionary<string, double[]> p,
        double[] x,
        int batch,
        TrainingPath path,
        string kernel
    )
    {
        using var sae = SparseAutoencoder.CreateEmpty(device, c.Config);
        sae.Path = path;
        sae.TrainingStep = 1;
        SaeTestData.Load(sae, p);
        using var counters = device.Allocate(1, c.Config.DSae, "steps_since_fired");
        if (c.Dead is { } dead)
        {
            bool dl = dead.ExcludeFiredInBatch;
            counters.CopyFrom([.. dead.DeadBefore.Select(b => b ? (dl ? 3f : 5f) : 0f)]);
            sae.AuxDeadFeatures = new DeadFeatureWindow(counters.Data, 4f, dl);
        }

        using var tx = device.Upload(x.Select(e => (float)e).ToArray(), batch, c.Config.DIn, "x");
        device.Ops.Fill(sae.Parameters.Gradients, float.NaN);
        var loss = sae.ComputeGradients(tx, c.Options, computeLoss: true)!;
        sae.LastStepWasSparse.Should().Be(path == TrainingPath.Sparse);

        var pass = FamilyReference.Forward(c.Config, p, x, batch, c.Options, c.Dead);
        loss.Total.Should().BeApproximately(pass.Loss, TestTolerances.SaeLoss.Bound(pass.Loss), "loss");
        var expected = FamilyReference.Gradients(c.Config, p, x, batch, c.Options, c.Dead);
        foreach (var (name, reference) in expected)
        {
            var actual = SaeTestData.Read(sae, name, ParameterSection.Gradients);
            double scale = Math.Max(reference.Max(Math.Abs), 1e-30);
            var result = KernelChecks.Compare(
                $"{c.Name} d{name}",
                kernel,
                actual.Select(e => (float)e).ToArray(),
                reference,
                TestTolerances.SaeGradient(name, scale)
            );
            result.Failure.Should().BeNull($"∂L/∂{name} of {c.Name} on {target}, {path} path");
        }

        return pass;
    }
}
