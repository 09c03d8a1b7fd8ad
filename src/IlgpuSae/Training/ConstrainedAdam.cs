using IlgpuSae.Kernels;
using IlgpuSae.Sae;
using IlgpuSae.Tensors;

namespace IlgpuSae.Training;

/// <summary>
/// The optimizer half of a training step, on gradients that <see cref="SparseAutoencoder.ComputeGradients"/>
/// left in the SAE's parameter buffer: projection of the decoder gradient orthogonal to each unit-norm
/// decoder row, optional global gradient-norm clipping of the projected gradient, one Adam update (over the
/// whole flat buffer, or per trainable tensor), and renormalisation of the decoder rows (the paper's
/// unit-norm constraint, §3.2).
/// </summary>
public sealed class ConstrainedAdam : IDisposable
{
    private readonly SparseAutoencoder _sae;
    private readonly AdamSettings _adam;
    private readonly float _clipNorm;
    private readonly bool _constrain;
    private readonly IReadOnlyList<string>? _trainable;
    private readonly SaeLossOptions _loss;
    private readonly DeviceTensor? _normPartials;

    /// <summary>An optimizer for <paramref name="sae"/>.</summary>
    /// <param name="sae">The SAE.</param>
    /// <param name="adam">Adam's β1, β2, ε and weight decay (the learning rate is given per step).</param>
    /// <param name="clipNorm">Clip the global gradient norm to this (0 = off).</param>
    /// <param name="constrainDecoderNorm">Project the decoder gradient and renormalise decoder rows.</param>
    /// <param name="trainable">Tensors to update (null = all).</param>
    /// <param name="loss">The objective, for the family's optimizer hooks (JumpReLU's log-threshold).</param>
    public ConstrainedAdam(
        SparseAutoencoder sae,
        AdamSettings adam,
        float clipNorm = 0f,
        bool constrainDecoderNorm = true,
        IReadOnlyList<string>? trainable = null,
        SaeLossOptions? loss = null
    )
    {
        ArgumentNullException.ThrowIfNull(sae);
        _sae = sae;
        _loss = loss ?? new SaeLossOptions();
        _adam = adam;
        _clipNorm = clipNorm;
        _constrain = constrainDecoderNorm;
        _trainable = trainable;
        if (clipNorm > 0)
        {
            _normPartials = sae.Device.Allocate(
                1,
                (int)(sae.Parameters.Layout.Length / ParameterLayout.Alignment),
                "grad_norm_partials"
            );
        }
    }

    /// <summary>
    /// Feature-sharded training: forms the whole SAE's squared gradient norm from this block's partial sums
    /// of squares (one per <see cref="ParameterLayout.Alignment"/> floats of the flat buffer, each within
    /// one tensor), counting the replicated tensors once; the same value on every rank. Null: the local
    /// buffer is the whole gradient.
    /// </summary>
    internal Func<float[], double>? GlobalSquaredNorm { get; set; }

    /// <summary>The optimizer a <see cref="TrainerOptions"/> describes.</summary>
    public static ConstrainedAdam For(SparseAutoencoder sae, TrainerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return new ConstrainedAdam(
            sae,
            new AdamSettings
            {
                Beta1 = options.Beta1,
                Beta2 = options.Beta2,
                Epsilon = options.Epsilon,
                WeightDecay = 0f,
            },
            options.GradClipNorm,
            options.ConstrainDecoderNorm,
            options.TrainableParameters,
            options.Loss
        );
    }

    /// <summary>Applies update number <paramref name="t"/> (1-based, for bias correction) at learning rate
    /// <paramref name="learningRate"/>.</summary>
    public void Step(long t, float learningRate)
    {
        var ops = _sae.Device.Ops;
        var p = _sae.Parameters;
        _sae.Architecture.BeforeOptimizerStep(_sae, _loss);
        if (_constrain)
        {
            ops.ProjectRows(_sae.DecoderGradient, _sae.Decoder);
        }

        // The norm of the gradient Adam sees, after the projection, as dictionary_learning's trainers
        // (remove_gradient_parallel_to_decoder_directions, then clip_grad_norm_); torch's coefficient
        // max/(‖g‖ + 1e-6), applied when below 1.
        float gradScale = 1f;
        if (_normPartials is not null)
        {
            var grads = new MatrixView(p.Gradients, _normPartials.Cols, ParameterLayout.Alignment);
            ops.ReduceRows<SumOfSquares>(grads, _normPartials.Data);
            var partials = _normPartials.ToArray();
            double norm = Math.Sqrt(GlobalSquaredNorm?.Invoke(partials) ?? partials.Sum(v => (double)v));
            double coefficient = _clipNorm / (norm + 1e-6);
            gradScale = coefficient < 1 ? (float)coefficient : 1f;
        }

        var settings = _adam with { LearningRate = learningRate };
        if (_trainable is null)
        {
            ops.AdamStep(p.Values, p.Gradients, p.FirstMoments, p.SecondMoments, settings, t, gradScale);
        }
        else
        {
            foreach (var name in _trainable)
            {
                ops.AdamStep(
                    p[name].Data,
                    p.Gradient(name).Data,
                    p.Get(name, ParameterSection.FirstMoment).Data,
                    p.Get(name, ParameterSection.SecondMoment).Data,
                    settings,
                    t,
                    gradScale
                );
            }
        }

        if (_constrain)
        {
            ops.NormalizeRows(_sae.Decoder, 1e-12f);
        }

        _sae.Architecture.AfterOptimizerStep(_sae, _loss);
    }

    /// <inheritdoc/>
    public void Dispose() => _normPartials?.Dispose();
}
