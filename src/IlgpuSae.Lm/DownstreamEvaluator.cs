using System.Text.Json.Serialization;
using ILGPU;
using ILGPU.Runtime;
using IlgpuSae.Kernels;
using IlgpuSae.Sae;
using IlgpuSae.Tensors;

namespace IlgpuSae.Lm;

/// <summary>Which positions an intervention touches and which predictions the loss counts.</summary>
public sealed record SpliceOptions
{
    /// <summary>
    /// Whether the SAE reconstruction (and the zero-ablation) also replaces the activations at special-token
    /// positions (BOS/EOS/PAD). Default false: special positions keep their clean activations, as SAEBench
    /// and
    /// SAELens do with <c>exclude_special_tokens_from_reconstruction=True</c> (BOS activations are huge-norm
    /// outliers no SAE in the cache was trained on). The bundled golden ablation losses use true.
    /// </summary>
    public bool SpliceSpecialTokens { get; init; }

    /// <summary>
    /// Whether predictions made at special-token positions (e.g. the first token of a document, predicted
    /// from BOS) count in the cross-entropy. Default true: every next-token prediction in the context
    /// counts (as dictionary_learning and the bundled golden losses do).
    /// </summary>
    public bool CountSpecialPositions { get; init; } = true;

    /// <summary>Contexts per forward pass.</summary>
    public int Batch { get; init; } = 8;

    /// <summary>A one-line statement of which tokens are counted and replaced, for reports.</summary>
    public string Describe() =>
        $"loss over {(CountSpecialPositions ? "every next-token prediction" : "predictions from non-special positions")} of each context; "
        + $"the site is replaced at {(SpliceSpecialTokens ? "every position" : "every position except BOS/EOS/PAD")}";
}

/// <summary>Loss recovered and the KL-based score, with SAELens metric names.</summary>
public sealed record DownstreamMetrics
{
    /// <summary>Mean next-token cross-entropy of the clean model.</summary>
    [JsonPropertyName("ce_loss_without_sae")]
    public double CeLossWithoutSae { get; init; }

    /// <summary>Mean cross-entropy with the SAE's reconstruction spliced in at the site.</summary>
    [JsonPropertyName("ce_loss_with_sae")]
    public double CeLossWithSae { get; init; }

    /// <summary>Mean cross-entropy with the site zero-ablated.</summary>
    [JsonPropertyName("ce_loss_with_ablation")]
    public double CeLossWithAblation { get; init; }

    /// <summary>Loss recovered: (CE_ablation − CE_sae) / (CE_ablation − CE_clean).</summary>
    [JsonPropertyName("ce_loss_score")]
    public double CeLossScore { get; init; }

    /// <summary>Mean KL(clean ‖ with SAE) per counted position, in nats.</summary>
    [JsonPropertyName("kl_div_with_sae")]
    public double KlDivWithSae { get; init; }

    /// <summary>Mean KL(clean ‖ zero-ablated) per counted position.</summary>
    [JsonPropertyName("kl_div_with_ablation")]
    public double KlDivWithAblation { get; init; }

    /// <summary>(KL_ablation − KL_sae) / KL_ablation.</summary>
    [JsonPropertyName("kl_div_score")]
    public double KlDivScore { get; init; }

    /// <summary>Predictions counted.</summary>
    [JsonPropertyName("ce_tokens")]
    public long CountedTokens { get; init; }

    /// <summary>Contexts evaluated.</summary>
    [JsonPropertyName("contexts")]
    public int Contexts { get; init; }

    /// <summary>Context length.</summary>
    [JsonPropertyName("context_size")]
    public int ContextSize { get; init; }

    /// <summary>Which tokens are counted and replaced.</summary>
    [JsonPropertyName("tokens_counted")]
    public string TokensCounted { get; init; } = "";

    /// <summary>Reconstruction metrics at the site over the replaced positions (null when no SAE).</summary>
    [JsonPropertyName("reconstruction")]
    public SaeMetrics? Reconstruction { get; init; }
}

/// <summary>
/// Computes loss recovered (Rajamanoharan et al. 2024, Eq. 5) by running the model three times per batch:
/// clean, with the site's
/// activations replaced by a reconstruction, and with them zero-ablated.
/// </summary>
public static class DownstreamEvaluator
{
    /// <summary>
    /// Evaluates an SAE at <paramref name="site"/> on <paramref name="contexts"/> (row-major [count, L]).
    /// Also accumulates the SAE's reconstruction metrics over the replaced positions.
    /// </summary>
    public static DownstreamMetrics Evaluate(
        LanguageModel model,
        string site,
        SparseAutoencoder sae,
        int[] contexts,
        int contextLength,
        SpliceOptions? options = null,
        IProgress<int>? progress = null,
        CancellationToken cancellationToken = default
    )
    {
        ArgumentNullException.ThrowIfNull(sae);
        var hookSite = model.Site(site);
        if (sae.DIn != hookSite.Width)
        {
            throw new ArgumentException(
                $"The SAE has d_in = {sae.DIn} but site {site} of {model.Name} has width {hookSite.Width}."
            );
        }

        if (!ReferenceEquals(sae.Device, model.Device))
        {
            throw new ArgumentException("The SAE and the model must be on the same device.");
        }

        var acc = new SaeEvaluator.Accumulator(sae.DIn, sae.DSae);
        var metrics = Evaluate(
            model,
            site,
            (acts, keep) =>
            {
                var (f, xhat) = sae.Forward(acts);
                var hx = ToHost(model, acts);
                var hf = ToHost(model, f);
                var hxhat = ToHost(model, xhat);
                Accumulate(acc, hx, hf, hxhat, keep, sae.DIn, sae.DSae);
                return xhat;
            },
            contexts,
            contextLength,
            options,
            progress,
            cancellationToken
        );
        return metrics with { Reconstruction = acc.Result() };
    }

    /// <summary>
    /// Evaluates any reconstruction: <paramref name="reconstruct"/> receives the site's activations
    /// [B·L, width] and which rows will be replaced, and returns a view of the same shape with the
    /// reconstruction (it may be the input itself for the identity).
    /// </summary>
    public static DownstreamMetrics Evaluate(
        LanguageModel model,
        string site,
        Func<MatrixView, bool[], MatrixView> reconstruct,
        int[] contexts,
        int contextLength,
        SpliceOptions? options = null,
        IProgress<int>? progress = null,
        CancellationToken cancellationToken = default
    )
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(reconstruct);
        ArgumentNullException.ThrowIfNull(contexts);
        options ??= new SpliceOptions();
        var hookSite = model.Site(site);
        if (contextLength < 2 || contexts.Length == 0 || contexts.Length % contextLength != 0)
        {
            throw new ArgumentException(
                $"Need at least one context of length ≥ 2 (got {contexts.Length} tokens for length {contextLength})."
            );
        }

        var device = model.Device;
        var special = model.Config.SpecialTokens;
        int count = contexts.Length / contextLength;
        int batch = Math.Clamp(options.Batch, 1, count);
        int rows = batch * contextLength,
            vocab = model.Config.VocabSize;
        using var targets = device.Accelerator.Allocate1D<int>(rows);
        using var loss = device.Allocate(rows, 1, "loss");
        using var kl = device.Allocate(rows, 1, "kl");
        using var clean = device.Allocate(rows, vocab, "clean_logits");
        using var mask = device.Allocate(rows, 1, "replace_mask");
        using var inverse = device.Allocate(rows, 1, "keep_mask");
        using var diff = device.Allocate(rows, hookSite.Width, "diff");
        double sumClean = 0,
            sumSae = 0,
            sumZero = 0,
            klSae = 0,
            klZero = 0;
        long counted = 0;
        for (int first = 0; first < count; first += batch)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int b = Math.Min(batch, count - first);
            int n0 = b * contextLength;
            var tokens = contexts.AsSpan(first * contextLength, n0).ToArray();
            var tgt = targets.View.SubView(0, n0);
            var lossView = loss.Data.SubView(0, n0);
            var klView = kl.Data.SubView(0, n0);
            var maskView = mask.Data.SubView(0, n0);
            var inverseView = inverse.Data.SubView(0, n0);
            var hostTargets = new int[n0];
            var keep = new bool[n0];
            var hostMask = new float[n0];
            for (int n = 0; n < n0; n++)
            {
                bool isSpecial = special.Contains(tokens[n]);
                keep[n] = options.SpliceSpecialTokens || !isSpecial;
                hostMask[n] = keep[n] ? 1f : 0f;
                bool last = n % contextLength == contextLength - 1;
                hostTargets[n] = last || (isSpecial && !options.CountSpecialPositions) ? -1 : tokens[n + 1];
            }

            counted += hostTargets.Count(t => t >= 0);
            tgt.CopyFromCPU(device.Stream, hostTargets);
            maskView.CopyFromCPU(device.Stream, hostMask);
            inverseView.CopyFromCPU(device.Stream, [.. hostMask.Select(v => 1f - v)]);
            var cleanView = clean.Data.SubView(0, (long)n0 * vocab);

            var logits = model.Run(tokens, b);
            device.Ops.Copy(logits.Data, cleanView);
            model.CrossEntropy(logits, tgt, lossView);
            sumClean += Sum(model, lossView);

            void Splice(MatrixView acts, MatrixView replacement)
            {
                // acts += mask ⊙ (replacement − acts): only the kept rows change.
                var d = diff.SliceRows(0, acts.Rows);
                device.Ops.Map<Subtract>(replacement.Data, acts.Data, d.Data);
                device.Ops.MapBroadcastColumns<Multiply>(d, maskView, d);
                device.Ops.Map<Add>(acts.Data, d.Data, acts.Data);
            }

            logits = model.Run(
                tokens,
                b,
                new Dictionary<string, SiteHook>
                {
                    [site] = acts =>
                    {
                        var recon = reconstruct(acts, keep);
                        if (recon.Rows != acts.Rows || recon.Cols != acts.Cols)
                        {
                            throw new ArgumentException(
                                $"The reconstruction is {recon}, the site holds {acts}."
                            );
                        }

                        if (!recon.Data.Equals(acts.Data))
                        {
                            Splice(acts, recon);
                        }
                    },
                }
            );
            model.CrossEntropy(logits, tgt, lossView);
            sumSae += Sum(model, lossView);
            device.Ops.KlDivergence(cleanView, logits.Data, klView, vocab);
            klSae += MaskedSum(model, klView, hostTargets);

            logits = model.Run(
                tokens,
                b,
                new Dictionary<string, SiteHook>
                {
                    [site] = acts =>
                    {
                        // acts ← (1 − mask) ⊙ acts: zero the kept rows.
                        device.Ops.MapBroadcastColumns<Multiply>(acts, inverseView, acts);
                    },
                }
            );
            model.CrossEntropy(logits, tgt, lossView);
            sumZero += Sum(model, lossView);
            device.Ops.KlDivergence(cleanView, logits.Data, klView, vocab);
            klZero += MaskedSum(model, klView, hostTargets);
            progress?.Report(first + b);
        }

        if (counted == 0)
        {
            throw new ArgumentException(
                $"No predictions to count: {count} contexts of length {contextLength} with batch {batch}."
            );
        }

        double ceClean = sumClean / counted,
            ceSae = sumSae / counted,
            ceZero = sumZero / counted;
        double kS = klSae / counted,
            kZ = klZero / counted;
        return new DownstreamMetrics
        {
            CeLossWithoutSae = ceClean,
            CeLossWithSae = ceSae,
            CeLossWithAblation = ceZero,
            CeLossScore = (ceZero - ceSae) / (ceZero - ceClean),
            KlDivWithSae = kS,
            KlDivWithAblation = kZ,
            KlDivScore = (kZ - kS) / kZ,
            CountedTokens = counted,
            Contexts = count,
            ContextSize = contextLength,
            TokensCounted = options.Describe(),
        };
    }

    private static void Accumulate(
        SaeEvaluator.Accumulator acc,
        float[] x,
        float[] f,
        float[] xhat,
        bool[] keep,
        int d,
        int m
    )
    {
        int kept = keep.Count(k => k);
        if (kept == keep.Length)
        {
            acc.Add(x, f, xhat, keep.Length);
            return;
        }

        var kx = new float[kept * d];
        var kf = new float[kept * m];
        var kr = new float[kept * d];
        int o = 0;
        for (int r = 0; r < keep.Length; r++)
        {
            if (!keep[r])
            {
                continue;
            }

            Array.Copy(x, r * d, kx, o * d, d);
            Array.Copy(f, (long)r * m, kf, (long)o * m, m);
            Array.Copy(xhat, r * d, kr, o * d, d);
            o++;
        }

        if (kept > 0)
        {
            acc.Add(kx, kf, kr, kept);
        }
    }

    private static float[] ToHost(LanguageModel model, MatrixView v)
    {
        var host = new float[v.Length];
        v.Data.CopyToCPU(model.Device.Stream, host);
        model.Device.Synchronize();
        return host;
    }

    private static float[] ToHost(LanguageModel model, ArrayView<float> v)
    {
        var host = new float[v.Length];
        v.CopyToCPU(model.Device.Stream, host);
        model.Device.Synchronize();
        return host;
    }

    private static double Sum(LanguageModel model, ArrayView<float> t) =>
        ToHost(model, t).Sum(v => (double)v);

    private static double MaskedSum(LanguageModel model, ArrayView<float> t, int[] targets)
    {
        var host = ToHost(model, t);
        double s = 0;
        for (int i = 0; i < host.Length; i++)
        {
            if (targets[i] >= 0)
            {
                s += host[i];
            }
        }

        return s;
    }
}
