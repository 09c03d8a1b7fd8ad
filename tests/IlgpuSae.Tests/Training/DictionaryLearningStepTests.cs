using FluentAssertions;
using IlgpuSae.Backends;
using IlgpuSae.Kernels;
using IlgpuSae.Sae;
using IlgpuSae.Tensors;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Tests.Sae;
using IlgpuSae.Training;
using Xunit;

namespace IlgpuSae.Tests.Training;

/// <summary>
/// One training step as dictionary_learning's trainers take it (trainers/trainer.py, top_k.py,
/// batch_top_k.py, jumprelu.py): the learning-rate warm-up factor, the gradient clip after the decoder
/// projection, the unclamped raw JumpReLU θ and the threshold estimator's start step.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class DictionaryLearningStepTests(DeviceFixture devices)
{
    private SaeDevice Cpu => devices.Get(new Target(BackendKind.Cpu, KernelVariant.CpuShaped));

    [Fact]
    public void The_dictionary_learning_learning_rate_warm_up_is_step_over_W_from_zero()
    {
        // get_lr_schedule: step / warmup_steps for step < warmup_steps, the first step at learning rate 0.
        var o = new TrainerOptions
        {
            Steps = 10,
            LearningRate = 1f,
            LrWarmupSteps = 4,
        }.WithRecipe(TrainingRecipe.DictionaryLearning);
        o.LrWarmupFromZero.Should().BeTrue();
        var schedule = new TrainingSchedule(o);
        schedule.LearningRateAt(0).Should().Be(0);
        schedule.LearningRateAt(1).Should().BeApproximately(0.25, 1e-12);
        schedule.LearningRateAt(4).Should().Be(1);
        new TrainingSchedule(o with { LrWarmupFromZero = false })
            .LearningRateAt(0)
            .Should()
            .BeApproximately(0.25, 1e-12);
        TrainerConfig
            .Of(
                new SaeConfig
                {
                    Architecture = SaeArchitecture.TopK,
                    DIn = 4,
                    DSae = 8,
                    K = 2,
                },
                o
            )
            .Values.Should()
            .ContainKey("lr_warmup_from_zero");
    }

    [Fact]
    public void The_gradient_norm_is_clipped_after_the_decoder_projection()
    {
        // The decoder gradient is parallel to the rows (the projection removes it) and b_enc's has norm
        // 0.5 < 1: dictionary_learning projects, then clip_grad_norm_(1.0), so nothing is clipped. Adam with
        // ε = 1 makes the step proportional to the (clipped) gradient: lr·g/(|g| + ε).
        var config = new SaeConfig
        {
            Architecture = SaeArchitecture.Standard,
            DIn = 4,
            DSae = 8,
        };
        using var sae = SparseAutoencoder.Create(Cpu, config, seed: 1);
        var p = sae.Parameters;
        var values = p.Download();
        var grads = new float[p.Layout.Length];
        var dec = p.Layout[SparseAutoencoder.DecoderTensor];
        for (long i = 0; i < dec.Length; i++)
        {
            grads[dec.Offset + i] = 100f * values[dec.Offset + i];
        }

        var bEnc = p.Layout["b_enc"];
        grads[bEnc.Offset] = 0.5f;
        p.Upload(grads, ParameterSection.Gradients);
        using var adam = new ConstrainedAdam(
            sae,
            new AdamSettings
            {
                Beta1 = 0f,
                Beta2 = 0.999f,
                Epsilon = 1f,
            },
            clipNorm: 1f
        );
        adam.Step(1, 0.1f);
        float moved = values[bEnc.Offset] - p.Download()[bEnc.Offset];
        moved.Should().BeApproximately(0.1f * 0.5f / 1.5f, 1e-5f);
    }

    [Fact]
    public void The_dictionary_learning_JumpReLU_threshold_is_not_clamped()
    {
        var recipe = SaeRecipe.Parse("jumprelu", "dictionary-learning");
        var options = recipe.Apply(new TrainerOptions { Steps = 10 }, dIn: 4);
        options.Loss.JumpRelu.LogThreshold.Should().BeFalse();
        options.Loss.JumpRelu.ClampThreshold.Should().BeFalse();
        using var sae = recipe.Create(Cpu, 4, 8, options);
        var theta = sae.Parameters["threshold"].Data;
        foreach (bool clamp in new[] { false, true })
        {
            Cpu.Ops.Fill(theta, -0.25f);
            var loss = options.Loss with { JumpRelu = options.Loss.JumpRelu with { ClampThreshold = clamp } };
            sae.Architecture.AfterOptimizerStep(sae, loss);
            float after = (float)SaeTestData.Read(sae, "threshold")[0];
            after.Should().Be(clamp ? JumpReluSae.MinimumThreshold : -0.25f);
        }
    }

    [Fact]
    public void The_dictionary_learning_JumpReLU_training_forward_has_no_ReLU_below_a_negative_threshold()
    {
        // jumprelu.py: f = JumpReLUFunction(x @ W_enc + b_enc, θ) = z·1[z > θ], no ReLU; with θ = −0.5 and
        // z = −0.25 every latent is active with f = −0.25, where SAELens's ReLU(z)·1[z > θ] gives 0.
        const int d = 4,
            m = 8,
            rows = 3;
        var recipe = SaeRecipe.Parse("jumprelu", "dictionary-learning");
        var options = recipe.Apply(new TrainerOptions { Steps = 10 }, dIn: d);
        options.Loss.JumpRelu.TrainingRelu.Should().BeFalse();
        using var sae = recipe.Create(Cpu, d, m, options);
        Cpu.Ops.Fill(sae.Parameters["W_enc"].Data, 0f);
        Cpu.Ops.Fill(sae.Parameters["b_enc"].Data, -0.25f);
        Cpu.Ops.Fill(sae.Parameters["threshold"].Data, -0.5f);
        var x = new float[rows * d];
        for (int i = 0; i < x.Length; i++)
        {
            x[i] = (i % 5) * 0.3f - 0.5f;
        }

        var wDec = SaeTestData.Read(sae, "W_dec");
        var bDec = SaeTestData.Read(sae, "b_dec");
        double Mse(double f)
        {
            double sum = 0;
            for (int b = 0; b < rows; b++)
            {
                for (int j = 0; j < d; j++)
                {
                    double xhat = bDec[j];
                    for (int i = 0; i < m; i++)
                    {
                        xhat += f * wDec[i * d + j];
                    }

                    sum += (x[b * d + j] - xhat) * (x[b * d + j] - xhat);
                }
            }

            return sum / rows;
        }

        using var tx = Cpu.Upload(x, rows, d, "x");
        sae.TrainingStep = 1;
        var noRelu = sae.ComputeGradients(tx, options.Loss, computeLoss: true)!;
        noRelu.Mse.Should().BeApproximately(Mse(-0.25), 1e-4 * Mse(-0.25));
        var withRelu = sae.ComputeGradients(
            tx,
            options.Loss with
            {
                JumpRelu = options.Loss.JumpRelu with { TrainingRelu = true },
            },
            computeLoss: true
        )!;
        withRelu.Mse.Should().BeApproximately(Mse(0), 1e-4 * Mse(0));
    }

    [Fact]
    public void The_threshold_estimator_updates_only_after_its_zero_based_start_step()
    {
        // batch_top_k.py: `if step > self.threshold_start_step: self.update_threshold(f)`, step 0-based;
        // TrainingStep is 1-based, so with start 0 the first update is at TrainingStep 2.
        var config = new SaeConfig
        {
            Architecture = SaeArchitecture.BatchTopK,
            DIn = 6,
            DSae = 24,
            K = 2,
        };
        using var sae = SparseAutoencoder.Create(Cpu, config, seed: 3);
        var rng = new Random(5);
        var x = Enumerable.Range(0, 8 * 6).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        using var tx = Cpu.Upload(x, 8, 6, "x");
        var loss = new SaeLossOptions
        {
            Threshold = ThresholdEstimator.DictionaryLearning with { StartStep = 0 },
        };
        sae.TrainingStep = 1;
        sae.ComputeGradients(tx, loss, computeLoss: false);
        BatchTopKSae.Threshold(sae).Should().BeNegative();
        sae.TrainingStep = 2;
        sae.ComputeGradients(tx, loss, computeLoss: false);
        BatchTopKSae.Threshold(sae).Should().BePositive();
    }

    [Fact]
    public void A_run_too_short_for_the_threshold_estimator_is_warned_about_not_refused()
    {
        var o = new TrainerOptions { Steps = 1 }.WithRecipe(TrainingRecipe.DictionaryLearning);
        TrainingWarnings
            .For(o, 4096, SaeArchitecture.BatchTopK)
            .Should()
            .Contain(w => w.Contains("no inference threshold"));
        TrainingWarnings.For(o, 4096, SaeArchitecture.TopK).Should().NotContain(w => w.Contains("threshold"));
    }
}
