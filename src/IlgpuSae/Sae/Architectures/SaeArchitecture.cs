using System.Collections.Concurrent;
using IlgpuSae.Tensors;

namespace IlgpuSae.Sae;

/// <summary>
/// One SAE family: what sits between the shared encoder product <c>U = x̃·W_enc</c> and the shared decoder
/// <c>x̂ = f·W_dec + b_dec</c>. A family owns its parameter tensors, its activation (inference and training),
/// its element-wise backward pass, the feature biases that resampling resets, its extra loss terms (a stacked
/// auxiliary reconstruction, for instance) and its double-precision reference. Everything else — centring,
/// the encoder and decoder products, the sparse path, decoder and weight gradients, the workspace — is shared
/// and lives in <see cref="SparseAutoencoder"/>.
/// </summary>
/// <remarks>
/// Families are singletons registered by name in <see cref="SaeArchitectures"/>; the name is what SAELens's
/// <c>cfg.json</c> calls <c>architecture</c>. Adding one is a subclass and one call to
/// <see cref="SaeArchitectures.Register"/> (see docs/architecture.md).
/// </remarks>
public abstract class SaeArchitecture
{
    /// <summary>Creates a family named <paramref name="name"/>.</summary>
    /// <exception cref="ArgumentException">The name is empty or not lower-case ASCII letters, digits, '-' or
    /// '_'.</exception>
    protected SaeArchitecture(string name)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        if (!name.All(c => c is (>= 'a' and <= 'z') or (>= '0' and <= '9') or '-' or '_'))
        {
            throw new ArgumentException(
                $"An architecture name is lower-case ASCII letters, digits, '-' or '_', got '{name}'.",
                nameof(name)
            );
        }

        Name = name;
    }

    /// <summary>ReLU + L1 baseline (<see cref="StandardSae"/>).</summary>
    public static SaeArchitecture Standard => StandardSae.Instance;

    /// <summary>Gated SAE (<see cref="GatedSae"/>).</summary>
    public static SaeArchitecture Gated => GatedSae.Instance;

    /// <summary>TopK (<see cref="TopKSae"/>).</summary>
    public static SaeArchitecture TopK => TopKSae.Instance;

    /// <summary>JumpReLU (<see cref="JumpReluSae"/>).</summary>
    public static SaeArchitecture JumpRelu => JumpReluSae.Instance;

    /// <summary>BatchTopK (<see cref="BatchTopKSae"/>).</summary>
    public static SaeArchitecture BatchTopK => BatchTopKSae.Instance;

    /// <summary>Matryoshka BatchTopK (<see cref="MatryoshkaSae"/>).</summary>
    public static SaeArchitecture Matryoshka => MatryoshkaSae.Instance;

    /// <summary>The SAELens architecture name (<c>cfg.json</c>'s <c>architecture</c>).</summary>
    public string Name { get; }

    /// <summary>Whether <see cref="SparseAutoencoder.ComputeGradients"/> is implemented for this
    /// family.</summary>
    public virtual bool CanTrain => true;

    /// <summary>
    /// Reconstructions computed per input row: 1, or 2 when the family adds an auxiliary reconstruction from
    /// the rows <c>[B, 2B)</c> of the stacked feature matrix (the gated SAE's <c>x̂_aux = ReLU(π_gate)·W_dec
    /// + b_dec</c>).
    /// </summary>
    public virtual int ReconstructionRows => 1;

    /// <summary>
    /// Whether the sparse training path applies: the support of <see cref="SupportRows"/> must contain every
    /// non-zero of the stacked feature rows and every entry at which the element-wise backward reads Φ or Ψ
    /// (the sparse path computes them on the support only, zero elsewhere) or writes a non-zero dU or dUm
    /// (the sparse weight gradients sum over the support only).
    /// </summary>
    public virtual bool SupportsSparsePath => true;

    /// <summary>Checks the family-specific options of <paramref name="config"/> (the shared shape is checked
    /// already).</summary>
    /// <exception cref="ArgumentException">An option does not apply to this family.</exception>
    public virtual void Validate(SaeConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (config.Untied || !config.UseRMag)
        {
            throw new ArgumentException(
                $"The untied and no-r_mag options apply to gated SAEs only, not to {Name}."
            );
        }

        if (config.K != 0)
        {
            throw new ArgumentException($"k applies to the TopK family only, not to {Name}.");
        }

        if (config.MatryoshkaWidths is not null)
        {
            throw new ArgumentException(
                $"Matryoshka widths apply to matryoshka_batchtopk SAEs only, not to {Name}."
            );
        }
    }

    /// <summary>
    /// Adds the family's tensors to <paramref name="layout"/>, which holds <c>W_enc [d, M]</c> already;
    /// <c>W_dec</c> and <c>b_dec</c> follow. File order is layout order.
    /// </summary>
    public abstract void AddTensors(ParameterLayout layout, SaeConfig config);

    /// <summary>
    /// The encoder matrices, <c>[d, M]</c> each, multiplied with the centred input: <c>W_enc</c> gives U; a
    /// second
    /// one (the untied gated SAE's <c>W_mag</c>) gives Um and receives its gradient from
    /// <see cref="SaeWorkspace.DUm"/>.
    /// </summary>
    public virtual IReadOnlyList<string> EncoderMatrices(SaeConfig config) => ["W_enc"];

    /// <summary>Per-feature tensors <c>[M]</c> that resampling resets to 0 for a reinitialised
    /// feature.</summary>
    public abstract IReadOnlyList<string> FeatureBiases(SaeConfig config);

    /// <summary>The tensor whose per-feature value places the active fraction in benchmarks (the gate's
    /// bias).</summary>
    public virtual string ActivationBias(SaeConfig config) => "b_enc";

    /// <summary>
    /// Family-specific initialisation after the shared one (decoder rows random of the chosen norm,
    /// <c>W_enc = W_decᵀ</c>, every other tensor 0).
    /// </summary>
    public virtual void Initialize(SparseAutoencoder sae, SaeInitOptions options) { }

    /// <summary>
    /// From <see cref="SaeWorkspace.U"/> (and <see cref="SaeWorkspace.Um"/>) computes the features into
    /// <see cref="SaeWorkspace.F"/>, and for a stacked family the auxiliary rows into
    /// <see cref="SaeWorkspace.A"/>.
    /// </summary>
    public abstract void Activate(SparseAutoencoder sae, SaeWorkspace ws);

    /// <summary>
    /// The [B, M] rows whose positive entries are the (row, feature) pairs of the sparse path and of the
    /// density estimate (see <see cref="SupportsSparsePath"/>): the gate for gated SAEs, the features for
    /// most families, JumpReLU's own support map. Called after <see cref="Activate"/> on a training step
    /// that may go sparse, and read only by the compaction before the decoder; a family that computes its
    /// support may write it into a [B, M] buffer that is free until its <see cref="Backward"/> (JumpReLU uses
    /// <see cref="SaeWorkspace.DU"/>, which its backward then overwrites in full).
    /// </summary>
    public virtual MatrixView SupportRows(SparseAutoencoder sae, SaeWorkspace ws)
    {
        ArgumentNullException.ThrowIfNull(ws);
        return ws.F;
    }

    /// <summary>The [B, M] rows whose (decoder-norm-weighted) sum the sparsity penalty takes.</summary>
    public virtual MatrixView PenalisedRows(SaeWorkspace ws)
    {
        ArgumentNullException.ThrowIfNull(ws);
        return ws.F;
    }

    /// <summary>
    /// The element-wise backward pass. Reads <see cref="SaeWorkspace.Phi"/> (and
    /// <see cref="SaeWorkspace.Psi"/>)
    /// and writes <c>∂L/∂U</c> into <see cref="SaeWorkspace.DU"/> (and <see cref="SaeWorkspace.DUm"/>), adds
    /// the
    /// family's bias gradients, and writes the column sums <see cref="SaeWorkspace.ColumnSums"/>: Σ_b dU, Σ_b
    /// dUm
    /// and Σ_b of the penalised rows (for the decoder-norm penalty's gradient). The sparsity term's gradient
    /// per unit of activation is <paramref name="lambdaOverB"/>, times ‖W_dec[i]‖
    /// (<see cref="SaeWorkspace.DecoderNorms"/>)
    /// when <paramref name="weightedL1"/>.
    /// </summary>
    public abstract void Backward(SparseAutoencoder sae, SaeWorkspace ws, float lambdaOverB, bool weightedL1);

    /// <summary>
    /// Double precision: one row's features and auxiliary activations from its encoder products
    /// <paramref name="u"/> and <paramref name="um"/> (Um = U unless <see cref="EncoderMatrices"/> has two).
    /// The auxiliary array is the penalised and (when stacked) auxiliary-decoded activation; for a family
    /// without one it equals the features.
    /// </summary>
    public abstract (double[] F, double[] A) ReferenceActivate(
        SaeConfig config,
        IReadOnlyDictionary<string, double[]> p,
        double[] u,
        double[] um
    );

    /// <summary>
    /// Double precision: one row's element-wise backward. Given <paramref name="phi"/> = ∂L/∂f (through the
    /// main
    /// reconstruction), <paramref name="psi"/> = ∂L/∂a (auxiliary reconstruction; zeros without one) and the
    /// penalty's gradient per unit of activation <paramref name="penalty"/>[i], writes <paramref name="du"/>
    /// and
    /// <paramref name="dum"/> and adds the family's bias gradients into <paramref name="grads"/>.
    /// </summary>
    /// <exception cref="NotSupportedException">The family has no training path (<see cref="CanTrain"/> is
    /// false).</exception>
    public abstract void ReferenceBackward(
        SaeConfig config,
        IReadOnlyDictionary<string, double[]> p,
        double[] u,
        double[] um,
        double[] phi,
        double[] psi,
        double[] penalty,
        double[] du,
        double[] dum,
        IDictionary<string, double[]> grads
    );

    /// <summary>
    /// The weight of the main (full-width) reconstruction loss: 1, except for a Matryoshka SAE whose level
    /// weights say otherwise. The shared residual <c>Δ</c> carries it.
    /// </summary>
    public virtual float MainReconstructionWeight(SaeConfig config, SaeLossOptions options) => 1f;

    /// <summary>Whether the sparsity penalty counts active features (an L0 penalty: JumpReLU) instead of
    /// summing the penalised rows.</summary>
    public virtual bool PenaltyCountsActive => false;

    /// <summary>
    /// Writes the sparsity term of each row, before λ/B, into <paramref name="perRow"/> [B] and returns true,
    /// when the family's penalty is neither a (weighted) sum nor a count of the penalised rows (JumpReLU's
    /// tanh); false (the default) leaves it to the shared loss.
    /// </summary>
    public virtual bool SparsityPerRow(
        SparseAutoencoder sae,
        SaeWorkspace ws,
        ILGPU.ArrayView<float> perRow
    ) => false;

    /// <summary>
    /// Loss terms beyond the main reconstruction and the sparsity penalty that the family's
    /// <see cref="Backward"/> computed in its own buffers (AuxK, Matryoshka's inner levels), as a batch mean;
    /// called after the device has synchronised, on logging steps only.
    /// </summary>
    public virtual double AuxiliaryLoss(SparseAutoencoder sae, SaeWorkspace ws) => 0;

    /// <summary>Called by the optimizer before clipping and the Adam step (JumpReLU's log-threshold
    /// parametrisation turns θ into log θ here).</summary>
    public virtual void BeforeOptimizerStep(SparseAutoencoder sae, SaeLossOptions options) { }

    /// <summary>Called by the optimizer after the Adam step and the decoder renormalisation.</summary>
    public virtual void AfterOptimizerStep(SparseAutoencoder sae, SaeLossOptions options) { }

    /// <summary>
    /// The form in which a trained SAE of this family is saved for inference, when it differs from the
    /// training form (BatchTopK and Matryoshka: a JumpReLU SAE with their global threshold, as SAELens saves
    /// them); null when the training form is the inference form. The caller disposes the result.
    /// </summary>
    public virtual SparseAutoencoder? InferenceForm(SparseAutoencoder sae) => null;

    /// <inheritdoc/>
    public override string ToString() => Name;
}

/// <summary>Initialisation settings that a family may use
/// (<see cref="SaeArchitecture.Initialize"/>).</summary>
public sealed record SaeInitOptions
{
    /// <summary>Decoder row norm at initialisation (1 = the paper's unit-norm constraint).</summary>
    public float DecoderInitNorm { get; init; } = 1f;

    /// <summary>JumpReLU's initial threshold θ.</summary>
    public float InitialThreshold { get; init; } = 0.001f;
}

/// <summary>The registry of SAE families, by SAELens architecture name.</summary>
public static class SaeArchitectures
{
    private static readonly ConcurrentDictionary<string, SaeArchitecture> Registered = new(
        StringComparer.Ordinal
    )
    {
        [StandardSae.Instance.Name] = StandardSae.Instance,
        [GatedSae.Instance.Name] = GatedSae.Instance,
        [JumpReluSae.Instance.Name] = JumpReluSae.Instance,
        [TopKSae.Instance.Name] = TopKSae.Instance,
        [BatchTopKSae.Instance.Name] = BatchTopKSae.Instance,
        [MatryoshkaSae.Instance.Name] = MatryoshkaSae.Instance,
    };

    /// <summary>Every registered family, by name.</summary>
    public static IReadOnlyList<SaeArchitecture> All =>
        [.. Registered.Values.OrderBy(a => a.Name, StringComparer.Ordinal)];

    /// <summary>Registers <paramref name="architecture"/> under its name (idempotent for the same
    /// instance).</summary>
    /// <exception cref="ArgumentException">Another family already has that name.</exception>
    public static void Register(SaeArchitecture architecture)
    {
        ArgumentNullException.ThrowIfNull(architecture);
        var existing = Registered.GetOrAdd(architecture.Name, architecture);
        if (!ReferenceEquals(existing, architecture))
        {
            throw new ArgumentException(
                $"An architecture named '{architecture.Name}' is registered already.",
                nameof(architecture)
            );
        }
    }

    /// <summary>The family named <paramref name="name"/>, or null.</summary>
    public static SaeArchitecture? Find(string name) => Registered.TryGetValue(name, out var a) ? a : null;

    /// <summary>The family named <paramref name="name"/>.</summary>
    /// <exception cref="ArgumentException">No family has that name; the message lists the registered
    /// ones.</exception>
    public static SaeArchitecture Get(string name) =>
        Find(name)
        ?? throw new ArgumentException(
            $"Unknown SAE architecture '{name}' (registered: {string.Join(", ", All.Select(a => a.Name))}).",
            nameof(name)
        );
}
