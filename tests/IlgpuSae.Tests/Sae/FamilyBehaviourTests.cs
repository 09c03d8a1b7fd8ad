using FluentAssertions;
using IlgpuSae.Backends;
using IlgpuSae.Sae;
using IlgpuSae.Tensors;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Training;
using IlgpuSae.Verification;
using Xunit;

namespace IlgpuSae.Tests.Sae;

/// <summary>
/// The known bugs of the peer libraries' TopK, BatchTopK, Matryoshka and JumpReLU trainers (the variants
/// spec's §12), each as a test of ours, plus folding and the geometric median.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class FamilyBehaviourTests(DeviceFixture devices)
{
    private SaeDevice Cpu => devices.Get(new Target(BackendKind.Cpu, KernelVariant.CpuShaped));

    private static SaeConfig Config(
        SaeArchitecture a,
        int d,
        int m,
        int k = 0,
        int[]? widths = null,
        bool center = true
    ) =>
        new()
        {
            Architecture = a,
            DIn = d,
            DSae = m,
            K = k,
            MatryoshkaWidths = widths,
            ApplyBDecToInput = center,
        };

    private static float[] RandomRows(int rows, int d, int seed, double scale = 1)
    {
        var random = new Random(seed);
        return [.. Enumerable.Range(0, rows * d).Select(_ => (float)((random.NextDouble() * 2 - 1) * scale))];
    }

    /// <summary>One training pass; returns the loss and every gradient, as doubles by tensor name.</summary>
    private (LossBreakdown Loss, Dictionary<string, double[]> Grads) Pass(
        SparseAutoencoder sae,
        float[] x,
        int rows,
        SaeLossOptions options,
        DeadFeatureWindow? dead = null
    )
    {
        sae.AuxDeadFeatures = dead;
        sae.TrainingStep = 1;
        using var tx = Cpu.Upload(x, rows, sae.DIn, "x");
        var loss = sae.ComputeGradients(tx, options, computeLoss: true)!;
        var grads = SparseAutoencoder
            .TensorNames(sae.Config)
            .ToDictionary(n => n, n => SaeTestData.Read(sae, n, ParameterSection.Gradients));
        return (loss, grads);
    }

    /// <summary>Counters making every feature dead in the dictionary_learning sense (window 1 step, counted
    /// with the current batch: dead unless it fires now) or the SAELens one (counter above the
    /// window).</summary>
    private DeadFeatureWindow AllDead(DeviceTensor counters, bool saeLens)
    {
        counters.CopyFrom([.. Enumerable.Repeat(saeLens ? 10f : 0f, counters.Cols)]);
        return new DeadFeatureWindow(counters.Data, saeLens ? 5f : 1f, IncludeCurrentBatch: !saeLens);
    }

    [Theory]
    [InlineData(AuxKStyle.DictionaryLearning)]
    [InlineData(AuxKStyle.SaeLens)]
    public void AuxK_decodes_without_b_dec_in_dictionary_learning_style_and_with_it_in_SAELens_style(
        AuxKStyle style
    )
    {
        // EleutherAI/sparsify#132: decoding the aux codes with b_dec double-counts it. With b_dec ≠ 0 and no
        // input centring, the only way AuxK reaches b_dec is through that bias.
        const int d = 6,
            m = 24,
            rows = 16;
        using var sae = SparseAutoencoder.Create(
            Cpu,
            Config(SaeArchitecture.TopK, d, m, k: 2, center: false),
            seed: 3
        );
        Cpu.Ops.Fill(sae.Parameters[SparseAutoencoder.DecoderBiasTensor].Data, 0.4f);
        using var counters = Cpu.Allocate(1, m, "counters");
        var x = RandomRows(rows, d, seed: 1);
        var aux = new AuxKOptions
        {
            KAux = 3,
            Style = style,
            Coefficient = 0.5f,
        };
        var without = Pass(sae, x, rows, new SaeLossOptions());
        var with = Pass(
            sae,
            x,
            rows,
            new SaeLossOptions { AuxK = aux },
            AllDead(counters, style == AuxKStyle.SaeLens)
        );
        with.Loss.Aux.Should().BeGreaterThan(0, "the aux loss must run");
        var diff = with.Grads["b_dec"].Zip(without.Grads["b_dec"], (a, b) => Math.Abs(a - b)).Max();
        if (style == AuxKStyle.DictionaryLearning)
        {
            diff.Should().Be(0, "dictionary_learning's ê = A·W_dec has no b_dec");
        }
        else
        {
            diff.Should().BeGreaterThan(1e-4, "SAELens's ê = A·W_dec + b_dec passes Σ_b Δa to b_dec");
        }
    }

    [Fact]
    public void AuxK_gradient_reaches_only_the_aux_selected_latents_and_k_aux_is_half_of_d_in()
    {
        // bartbussmann/BatchTopK#4 (residual not detached) and SAELens#432 (k_aux from d_sae instead of
        // d_in).
        const int d = 8,
            m = 32,
            rows = 12;
        var config = Config(SaeArchitecture.TopK, d, m, k: 2);
        using var sae = SparseAutoencoder.Create(Cpu, config, seed: 5);
        using var counters = Cpu.Allocate(1, m, "counters");
        var x = RandomRows(rows, d, seed: 2);
        var options = SaeRecipe.Parse("topk", k: 2).Apply(new TrainerOptions { Steps = 1 }, dIn: d).Loss;
        options.AuxK!.KAux.Should().Be(d / 2);
        var without = Pass(sae, x, rows, options with { AuxK = null });
        var with = Pass(sae, x, rows, options, AllDead(counters, saeLens: false));

        var p = SparseAutoencoder.TensorNames(config).ToDictionary(n => n, n => SaeTestData.Read(sae, n));
        var xd = x.Select(v => (double)v).ToArray();
        var dead = new DeadSpec([.. Enumerable.Repeat(true, m)], ExcludeFiredInBatch: true);
        var pass = FamilyReference.Forward(config, p, xd, rows, options, dead);
        var selected = Enumerable
            .Range(0, m)
            .Select(i => Enumerable.Range(0, rows).Any(r => pass.Aux[r * m + i] != 0))
            .ToArray();
        selected.Count(s => s).Should().BeGreaterThan(0);
        for (int i = 0; i < m; i++)
        {
            double encoder = Enumerable
                .Range(0, d)
                .Max(j => Math.Abs(with.Grads["W_enc"][j * m + i] - without.Grads["W_enc"][j * m + i]));
            double decoder = Enumerable
                .Range(0, d)
                .Max(j => Math.Abs(with.Grads["W_dec"][i * d + j] - without.Grads["W_dec"][i * d + j]));
            if (!selected[i])
            {
                encoder.Should().Be(0, $"feature {i} was not aux-selected (encoder column)");
                decoder.Should().Be(0, $"feature {i} was not aux-selected (decoder row)");
            }
        }
    }

    [Fact]
    public void AuxK_loss_is_linear_in_its_coefficient_and_changes_the_gradient()
    {
        // oclivegriffin/crosscode#3 (aux never back-propagated); dictionary_learning#34/#36 (coefficient
        // twice).
        const int d = 6,
            m = 24,
            rows = 16;
        using var sae = SparseAutoencoder.Create(Cpu, Config(SaeArchitecture.BatchTopK, d, m, k: 2), seed: 7);
        using var counters = Cpu.Allocate(1, m, "counters");
        var x = RandomRows(rows, d, seed: 3);
        SaeLossOptions With(float alpha) =>
            new()
            {
                AuxK = new AuxKOptions { KAux = 3, Coefficient = alpha },
                Threshold = ThresholdEstimator.SaeLens,
            };
        var one = Pass(sae, x, rows, With(0.25f), AllDead(counters, saeLens: false));
        var two = Pass(sae, x, rows, With(0.5f), AllDead(counters, saeLens: false));
        var off = Pass(sae, x, rows, new SaeLossOptions { Threshold = ThresholdEstimator.SaeLens });
        one.Loss.Aux.Should().BeGreaterThan(0);
        two.Loss.Aux.Should().BeApproximately(2 * one.Loss.Aux, 1e-5 * two.Loss.Aux);
        double Norm(Dictionary<string, double[]> g) => Math.Sqrt(g.Values.Sum(v => v.Sum(e => e * e)));
        Math.Abs(Norm(one.Grads) - Norm(off.Grads))
            .Should()
            .BeGreaterThan(1e-5, "AuxK must reach the gradients");
    }

    [Fact]
    public void JumpRelu_threshold_gradient_is_nonzero_for_an_inactive_latent_just_below_its_threshold()
    {
        // dictionary_learning#55: the step applied to f instead of the pre-activation sees no inactive
        // latent.
        const int d = 4,
            m = 3,
            rows = 1;
        var config = Config(SaeArchitecture.JumpRelu, d, m, center: false);
        using var sae = SparseAutoencoder.CreateEmpty(Cpu, config);
        var p = SparseAutoencoder
            .LayoutFor(config)
            .Entries.ToDictionary(e => e.Name, e => new double[e.Length]);
        for (int j = 0; j < d; j++)
        {
            p["W_enc"][j * m + 0] = j == 0 ? 1 : 0; // feature 0 reads x[0]
            p["W_dec"][0 * d + j] = j == 0 ? 1 : 0;
        }

        p["threshold"] = [0.5, 0.5, 0.5];
        SaeTestData.Load(sae, p);
        const float eps = 0.2f;
        var x = new float[] { 0.45f, 0.1f, -0.2f, 0.3f }; // z₀ = 0.45: inactive, within ε/2 below θ = 0.5
        var options = new SaeLossOptions
        {
            L1Coefficient = 0.1f,
            JumpRelu = new JumpReluTraining { Bandwidth = eps },
        };
        var (loss, grads) = Pass(sae, x, rows, options);
        loss.L0.Should().Be(0, "no feature is active");
        grads["threshold"][0].Should().NotBe(0);
        // Both pseudo-derivatives act on the inactive latent: −(θ·Φ + λ/B)/ε, with
        // Φ = (2/B)·W_dec[0]·(x̂ − x) = 2·(0 − 0.45), since nothing is active (x̂ = b_dec = 0) and B = 1.
        double expected = -(0.5 * 2 * (0 - 0.45) + 0.1) / eps;
        grads["threshold"][0].Should().BeApproximately(expected, 1e-5);
    }

    [Theory]
    [InlineData(JumpReluStepInput.Features)]
    [InlineData(JumpReluStepInput.PreActivation)]
    public void Dictionary_learning_target_l0_reproduces_the_step_on_f_and_the_pre_activation_option_sees_inactive_latents(
        JumpReluStepInput input
    )
    {
        // saprmarks/dictionary_learning#55 (variants spec §12.4): with the step on f, an inactive latent
        // (f = 0) is outside the kernel window once θ > ε/2, so its sparsity gradient is 0; on the
        // pre-activation, a latent just below θ gets one. Feature 0: z = 0.45 (inactive, within ε/2 below
        // θ = 0.5); feature 1: z = 0.55 (active, within ε/2 above); feature 2: z = 0.
        const int d = 4,
            m = 3,
            rows = 1;
        var config = Config(SaeArchitecture.JumpRelu, d, m, center: false);
        using var sae = SparseAutoencoder.CreateEmpty(Cpu, config);
        var p = SparseAutoencoder
            .LayoutFor(config)
            .Entries.ToDictionary(e => e.Name, e => new double[e.Length]);
        for (int i = 0; i < 2; i++)
        {
            p["W_enc"][i * m + i] = 1;
            p["W_dec"][i * d + i] = 1;
        }

        p["threshold"] = [0.5, 0.5, 0.5];
        SaeTestData.Load(sae, p);
        const float eps = 0.2f,
            lambda = 0.1f,
            target = 2f;
        var x = new float[] { 0.45f, 0.55f, -0.2f, 0.3f };
        var options = new SaeLossOptions
        {
            L1Coefficient = lambda,
            JumpRelu = new JumpReluTraining
            {
                Bandwidth = eps,
                LogThreshold = false,
                Sparsity = JumpReluSparsity.TargetL0,
                TargetL0 = target,
                StepInput = input,
            },
        };
        var (loss, grads) = Pass(sae, x, rows, options);
        var (_, reconOnly) = Pass(sae, x, rows, options with { L1Coefficient = 0f });
        loss.L0.Should().Be(1);
        // λ·(l0/T − 1)² with l0 = 1, T = 2.
        loss.Sparsity.Should().BeApproximately(lambda * 0.25, 1e-7);
        // The term's θ gradient per kernel hit: (λ/B)·(2/T)·(l0/T − 1)·(−1/ε) = 0.1·1·(−0.5)·(−5) = 0.25.
        double[] sparsity =
        [
            .. Enumerable.Range(0, m).Select(i => grads["threshold"][i] - reconOnly["threshold"][i]),
        ];
        sparsity[1].Should().BeApproximately(0.25, 1e-6, "an active latent is in both windows");
        if (input == JumpReluStepInput.Features)
        {
            sparsity[0]
                .Should()
                .Be(0, "dictionary_learning's step on f misses the inactive latent (its bug)");
        }
        else
        {
            sparsity[0].Should().BeApproximately(0.25, 1e-6, "the step on z sees the inactive latent");
        }

        sparsity[2].Should().Be(0, "z = 0 is far from θ");
        grads["b_enc"].Should().Equal(reconOnly["b_enc"], "the step passes no gradient to z");
    }

    [Fact]
    public void The_dictionary_learning_JumpRelu_recipe_has_dictionary_learnings_defaults()
    {
        // dictionary_learning's JumpReluTrainer (variants spec §6.3): no b_dec subtraction, raw θ₀ = 0.001,
        // ε = 0.001, T = 20, λ = 1 warmed up as step/2000, Adam (0, 0.999), unit-norm decoder, clip 1.
        var recipe = SaeRecipe.Parse("jumprelu", "dictionary-learning");
        var o = recipe.Apply(new TrainerOptions { Steps = 5000 }, dIn: 8);
        recipe.Config(8, 16).ApplyBDecToInput.Should().BeFalse();
        o.Beta1.Should().Be(0f);
        o.Beta2.Should().Be(0.999f);
        o.ConstrainDecoderNorm.Should().BeTrue();
        o.GradClipNorm.Should().Be(1f);
        o.InitialThreshold.Should().Be(0.001f);
        o.LrWarmupSteps.Should().Be(1000);
        o.Loss.L1Coefficient.Should().Be(1f);
        o.Loss.JumpRelu.Should()
            .Be(
                new JumpReluTraining
                {
                    Bandwidth = 0.001f,
                    LogThreshold = false,
                    Sparsity = JumpReluSparsity.TargetL0,
                    TargetL0 = 20f,
                    StepInput = JumpReluStepInput.Features,
                    ClampThreshold = false,
                    TrainingRelu = false,
                }
            );
        var schedule = new TrainingSchedule(o);
        schedule.L1At(0).Should().Be(0, "s(0) = 0/2000");
        schedule.L1At(1000).Should().Be(0.5);
        schedule.L1At(2000).Should().Be(1);
        // The SAELens recipe keeps its own defaults and warm-up convention.
        var saeLens = SaeRecipe
            .Parse("jumprelu")
            .Apply(new TrainerOptions { Steps = 10, L1WarmupSteps = 4 }, 8);
        saeLens.L1WarmupFromZero.Should().BeFalse();
        new TrainingSchedule(saeLens with { Loss = saeLens.Loss with { L1Coefficient = 1f } })
            .L1At(0)
            .Should()
            .Be(0.25);
        SaeRecipe.Parse("jumprelu").Config(8, 16).ApplyBDecToInput.Should().BeTrue();
    }

    [Fact]
    public void JumpRelu_threshold_gradient_is_nonzero_at_the_SAELens_defaults_on_normalised_inputs()
    {
        // SAELens#494: with ε too small for the activation scale the θ gradient is almost always zero and L0
        // never falls. Our defaults (θ₀ = 0.01, ε = 0.05) on inputs normalised to E‖x‖ = √d must train θ.
        const int d = 16,
            m = 64,
            rows = 64;
        var recipe = SaeRecipe.Parse("jumprelu");
        var options = recipe.Apply(new TrainerOptions { Steps = 1 }, dIn: d);
        using var sae = recipe.Create(Cpu, d, m, options);
        var x = RandomRows(rows, d, seed: 4);
        double meanNorm = Enumerable
            .Range(0, rows)
            .Average(r => Math.Sqrt(Enumerable.Range(0, d).Sum(j => x[r * d + j] * (double)x[r * d + j])));
        var scaled = x.Select(v => (float)(v * Math.Sqrt(d) / meanNorm)).ToArray();
        var (_, grads) = Pass(sae, scaled, rows, options.Loss with { L1Coefficient = 1f });
        grads["threshold"].Count(g => g != 0).Should().BeGreaterThan(m / 4);
        SaeTestData.Read(sae, "threshold").Should().AllSatisfy(t => t.Should().BeApproximately(0.01, 1e-9));
    }

    [Theory]
    [InlineData(PreActLatents.Dead)]
    [InlineData(PreActLatents.All)]
    public void JumpRelu_pre_act_loss_covers_the_dead_latents_in_SAELens_style_and_every_latent_in_Anthropics(
        PreActLatents latents
    )
    {
        // Variants spec §1.9: SAELens computes the pre-activation loss "only for latents that are actually
        // dead"; Anthropic's recipe applies it to every latent. Feature i reads x[i] (z = x_i, b_enc = 0),
        // θ = 0.5 each, decoder norms 2, 3, 0.5. Features 0 and 2 are dead (counters 10 > window 5), 1 is
        // alive; 0 and 1 sit below θ in both rows, 2 is active in both.
        const int d = 4,
            m = 3,
            rows = 2;
        var config = Config(SaeArchitecture.JumpRelu, d, m, center: false);
        using var sae = SparseAutoencoder.CreateEmpty(Cpu, config);
        var p = SparseAutoencoder
            .LayoutFor(config)
            .Entries.ToDictionary(e => e.Name, e => new double[e.Length]);
        double[] norms = [2, 3, 0.5];
        for (int i = 0; i < m; i++)
        {
            p["W_enc"][i * m + i] = 1;
            p["W_dec"][i * d + i] = norms[i];
        }

        p["threshold"] = [0.5, 0.5, 0.5];
        SaeTestData.Load(sae, p);
        var x = new float[] { 0.1f, 0.2f, 0.9f, 0f, 0.3f, -0.4f, 0.8f, 0f };
        using var counters = Cpu.Allocate(1, m, "steps_since_fired");
        counters.CopyFrom([10f, 0f, 10f]);
        var window = new DeadFeatureWindow(counters.Data, 5f, IncludeCurrentBatch: false);
        const float lambdaP = 0.25f;
        var off = new SaeLossOptions
        {
            L1Coefficient = 0.1f,
            JumpRelu = new JumpReluTraining { Bandwidth = 0.05f, LogThreshold = false },
        };
        var on = off with
        {
            JumpRelu = off.JumpRelu with { PreActCoefficient = lambdaP, PreActLatents = latents },
        };
        var (lossOff, gOff) = Pass(sae, x, rows, off, window);
        var (lossOn, gOn) = Pass(sae, x, rows, on, window);

        // (λ_P/B)·Σ_b (θ − z)·n: feature 0 gives 2·(0.4 + 0.2), feature 1 (all latents only) 3·(0.3 + 0.9).
        bool all = latents == PreActLatents.All;
        double expected = lambdaP / rows * (2 * 0.6 + (all ? 3 * 1.2 : 0));
        (lossOn.Aux - lossOff.Aux).Should().BeApproximately(expected, 1e-6);
        lossOn.Mse.Should().Be(lossOff.Mse, "the pre-activation loss does not change the forward pass");
        double[] dTheta = [.. Enumerable.Range(0, m).Select(i => gOn["threshold"][i] - gOff["threshold"][i])];
        double[] dBEnc = [.. Enumerable.Range(0, m).Select(i => gOn["b_enc"][i] - gOff["b_enc"][i])];
        // ∂/∂θ_i = (λ_P/B)·n_i per row below θ; ∂/∂z = minus that.
        dTheta[0].Should().BeApproximately(lambdaP / rows * 2 * 2, 1e-6);
        dTheta[1].Should().BeApproximately(all ? lambdaP / rows * 3 * 2 : 0, 1e-6);
        dTheta[2].Should().Be(0, "an active latent is above its threshold");
        dBEnc[0].Should().BeApproximately(-dTheta[0], 1e-6);
        dBEnc[1].Should().BeApproximately(-dTheta[1], 1e-6);
        // W_dec[i] gets (λ_P/B)·Σ_b (θ − z)·Ŵ_dec[i]: along its own axis, (λ_P/B)·0.6 for feature 0.
        (gOn["W_dec"][0] - gOff["W_dec"][0])
            .Should()
            .BeApproximately(lambdaP / rows * 0.6, 1e-6);
        (gOn["W_dec"][1 * d + 1] - gOff["W_dec"][1 * d + 1])
            .Should()
            .BeApproximately(all ? lambdaP / rows * 1.2 : 0, 1e-6);
    }

    [Fact]
    public void Without_dead_feature_counters_the_SAELens_pre_act_loss_is_zero()
    {
        // SAELens returns 0 when dead_neuron_mask is None or all false: a trainer that cannot yet see a dead
        // latent gives the SAE no counters.
        const int d = 4,
            m = 8,
            rows = 6;
        var config = Config(SaeArchitecture.JumpRelu, d, m);
        using var sae = SparseAutoencoder.Create(Cpu, config, seed: 3, initialThreshold: 0.5f);
        var x = RandomRows(rows, d, seed: 2);
        var options = new SaeLossOptions
        {
            L1Coefficient = 0.1f,
            JumpRelu = new JumpReluTraining { PreActCoefficient = 1f },
        };
        var (withLoss, with) = Pass(sae, x, rows, options);
        var (withoutLoss, without) = Pass(
            sae,
            x,
            rows,
            options with
            {
                JumpRelu = options.JumpRelu with { PreActCoefficient = 0f },
            }
        );
        withLoss.Total.Should().Be(withoutLoss.Total);
        foreach (var (name, g) in with)
        {
            g.Should().Equal(without[name], name);
        }

        // The same SAE with Anthropic's all-latents variant does see the term (θ = 0.5 is above most z).
        var (allLoss, _) = Pass(
            sae,
            x,
            rows,
            options with
            {
                JumpRelu = options.JumpRelu with { PreActLatents = PreActLatents.All },
            }
        );
        (allLoss.Total - withoutLoss.Total).Should().BeGreaterThan(1e-3);
    }

    [Fact]
    public void Matryoshka_levels_share_one_global_mask()
    {
        // SAELens#571: every level uses the full-width BatchTopK mask; changing the widths changes no
        // feature.
        const int d = 6,
            m = 24,
            rows = 16;
        var x = RandomRows(rows, d, seed: 5);
        float[] Firing(int[] widths)
        {
            using var sae = SparseAutoencoder.Create(
                Cpu,
                Config(SaeArchitecture.Matryoshka, d, m, k: 3, widths),
                seed: 9
            );
            Pass(sae, x, rows, new SaeLossOptions());
            using var counts = Cpu.Allocate(1, m, "counts");
            sae.CountFiring(counts.Data);
            return counts.ToArray();
        }

        var a = Firing([4, 12, 24]);
        var b = Firing([8, 24]);
        a.Sum().Should().Be(3 * rows, "BatchTopK keeps k·B entries");
        b.Should().Equal(a);
    }

    [Fact]
    public void Matryoshka_without_widths_or_with_bad_widths_is_a_clear_error()
    {
        // SAELens: matryoshka_widths = [] raises IndexError.
        var bad = new (int[]? Widths, string Message)[]
        {
            (null, "needs its nested widths"),
            ([], "needs its nested widths"),
            ([8, 4, 24], "strictly increasing"),
            ([4, 12], "must end at d_sae"),
            ([0, 24], "positive"),
        };
        foreach (var (widths, message) in bad)
        {
            var act = () => Config(SaeArchitecture.Matryoshka, 6, 24, k: 2, widths).Validate();
            act.Should().Throw<ArgumentException>().WithMessage($"*{message}*");
        }
    }

    [Fact]
    public void An_unset_BatchTopK_threshold_makes_encoding_and_export_an_error()
    {
        // dictionary_learning: θ = −1 makes encode a plain ReLU; SAEBench raises. We raise.
        using var sae = SparseAutoencoder.Create(
            Cpu,
            Config(SaeArchitecture.BatchTopK, 6, 24, k: 2),
            seed: 1
        );
        BatchTopKSae.Threshold(sae).Should().BeNegative();
        var x = RandomRows(4, 6, seed: 6);
        var encode = () => sae.ForwardHost(x, 4);
        encode.Should().Throw<InvalidOperationException>().WithMessage("*threshold is unset*");
        var export = () => BatchTopKSae.ToJumpRelu(sae);
        export.Should().Throw<InvalidOperationException>().WithMessage("*unset*");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void A_batch_with_an_all_zero_row_leaves_the_threshold_finite(bool saeLens)
    {
        // dictionary_learning's TopK tracks the mean of each row's smallest kept value: a row with none makes
        // it +∞. Our estimate is the batch's smallest positive value.
        const int d = 6,
            m = 24,
            rows = 8;
        using var sae = SparseAutoencoder.Create(
            Cpu,
            Config(SaeArchitecture.BatchTopK, d, m, k: 2, center: false),
            seed: 2
        );
        var x = RandomRows(rows, d, seed: 7, scale: 3);
        Array.Clear(x, 0, d); // row 0 is zero: with b_enc = −0.5 none of its pre-activations is positive
        Cpu.Ops.Fill(sae.Parameters["b_enc"].Data, -0.5f);
        var estimator = saeLens
            ? ThresholdEstimator.SaeLens
            : ThresholdEstimator.DictionaryLearning with
            {
                StartStep = -1,
            };
        Pass(sae, x, rows, new SaeLossOptions { Threshold = estimator });
        float theta = BatchTopKSae.Threshold(sae);
        float.IsFinite(theta).Should().BeTrue();
        theta.Should().BePositive();
    }

    [Fact]
    public void The_SAELens_estimator_starts_at_zero_without_bias_correction_and_dictionary_learning_starts_at_the_estimate()
    {
        // SAELens's EMA from θ = 0 (no bias correction) gives θ_T = (1 − 0.99^T)·m for a constant estimate m;
        // dictionary_learning's first update sets θ = m.
        const int d = 6,
            m = 24,
            rows = 8;
        var x = RandomRows(rows, d, seed: 8);
        foreach (bool saeLens in new[] { true, false })
        {
            using var sae = SparseAutoencoder.Create(
                Cpu,
                Config(SaeArchitecture.BatchTopK, d, m, k: 2),
                seed: 4
            );
            var options = new SaeLossOptions
            {
                Threshold = saeLens
                    ? ThresholdEstimator.SaeLens
                    : ThresholdEstimator.DictionaryLearning with
                    {
                        StartStep = -1,
                    },
            };
            Pass(sae, x, rows, options); // gradients only: the weights, hence m, stay as they are
            float first = BatchTopKSae.Threshold(sae);
            const int steps = 20;
            for (int t = 1; t < steps; t++)
            {
                Pass(sae, x, rows, options);
            }

            float theta = BatchTopKSae.Threshold(sae);
            var p = SparseAutoencoder
                .TensorNames(sae.Config)
                .ToDictionary(n => n, n => SaeTestData.Read(sae, n));
            var f = FamilyReference.Select(
                sae.Config,
                p,
                FamilyReference.PreActivations(sae.Config, p, [.. x.Select(v => (double)v)], rows),
                rows
            );
            double estimate = f.Where(v => v > 0).Min();
            if (saeLens)
            {
                first.Should().BeApproximately((float)(0.01 * estimate), 1e-6f);
                theta.Should().BeApproximately((float)((1 - Math.Pow(0.99, steps)) * estimate), 1e-5f);
            }
            else
            {
                first.Should().BeApproximately((float)estimate, 1e-6f);
                theta.Should().BeApproximately((float)estimate, 1e-5f);
            }
        }
    }

    public static TheoryData<string> FoldCases() => ["topk", "batchtopk", "matryoshka_batchtopk", "jumprelu"];

    [Theory]
    [MemberData(nameof(FoldCases))]
    public void Folding_an_input_scale_leaves_encode_and_decode_unchanged(string family)
    {
        // SAELens#354/#565: a fold must divide b_dec too and keep thresholds and top-k sets.
        const int d = 6,
            m = 24,
            rows = 8;
        const float s = 2.5f;
        var arch = SaeArchitectures.Get(family);
        var config = Config(
            arch,
            d,
            m,
            k: arch is TopKSae or BatchTopKSae ? 3 : 0,
            widths: arch == SaeArchitecture.Matryoshka ? [6, 24] : null
        );
        using var sae = SparseAutoencoder.Create(Cpu, config, seed: 6, initialThreshold: 0.05f);
        Cpu.Ops.Fill(sae.Parameters[SparseAutoencoder.DecoderBiasTensor].Data, 0.3f);
        if (arch is BatchTopKSae)
        {
            Cpu.Ops.Fill(sae.Parameters[BatchTopKSae.ThresholdTensor].Data, 0.05f);
        }

        var x = RandomRows(rows, d, seed: 9);
        var (f1, r1) = sae.ForwardHost([.. x.Select(v => v * s)], rows);
        using var folded = sae.WithInputScaleFolded(s, new Dictionary<string, object?>());
        var (f2, r2) = folded.ForwardHost(x, rows);
        f2.Select(v => v != 0).Should().Equal(f1.Select(v => v != 0), "the same features fire");
        for (int i = 0; i < f1.Length; i++)
        {
            f2[i].Should().BeApproximately(f1[i], 1e-5f + 1e-5f * Math.Abs(f1[i]));
        }

        for (int i = 0; i < r1.Length; i++)
        {
            (r2[i] * s).Should().BeApproximately(r1[i], 1e-4f + 1e-5f * Math.Abs(r1[i]));
        }
    }

    [Fact]
    public void The_geometric_median_of_identical_rows_is_that_row_and_of_points_on_a_line_their_median()
    {
        // dictionary_learning's Weiszfeld divides by zero when the estimate lands on a row (NaN).
        var constant = Enumerable.Repeat(new[] { 1.5f, -2f, 0.25f }, 10).SelectMany(r => r).ToArray();
        GeometricMedian.Compute(constant, 10, 3).Should().Equal(1.5, -2, 0.25);
        var line = new[] { 0f, 1f, 10f, 2f, 3f };
        GeometricMedian.Compute(line, 5, 1)[0].Should().BeApproximately(2, 1e-3);
        GeometricMedian.Mean(line, 5, 1)[0].Should().BeApproximately(3.2, 1e-12);
    }
}
