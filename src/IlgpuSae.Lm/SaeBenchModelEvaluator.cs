using ILGPU;
using ILGPU.Runtime;
using IlgpuSae.Sae;
using IlgpuSae.SaeBench;

namespace IlgpuSae.Lm;

/// <summary>
/// SAEBench's core evaluation with a language model: one <see cref="DownstreamEvaluator"/> pass gives the KL
/// and cross-entropy metrics, and the SAE's features at the site in the same pass give SAEBench's token-level
/// metrics (<see cref="SaeBenchAccumulator"/>), one evaluation batch per batch of contexts.
/// </summary>
public static class SaeBenchModelEvaluator
{
    /// <summary>
    /// Evaluates <paramref name="sae"/> at <paramref name="site"/> on <paramref name="contexts"/> (row-major
    /// [count, L]). As SAEBench, the token-level metrics count only positions whose token is not BOS/EOS/PAD,
    /// each context is one prompt, and the cross-entropy and KL are as <paramref name="options"/> say (set
    /// <see cref="SpliceOptions.CountSpecialPositions"/> false for SAEBench's counting).
    /// </summary>
    public static (DownstreamMetrics Downstream, SaeBenchTokenMetrics SaeBench) Evaluate(
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
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(contexts);
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

        var special = model.Config.SpecialTokens;
        var metrics = new SaeEvaluator.Accumulator(sae.DIn, sae.DSae);
        var bench = new SaeBenchAccumulator(sae.DIn, sae.DSae);
        long offset = 0;
        var downstream = DownstreamEvaluator.Evaluate(
            model,
            site,
            (acts, keep) =>
            {
                var (f, xhat) = sae.Forward(acts);
                var hx = ToHost(sae, acts.Data);
                var hf = ToHost(sae, f.Data);
                var hxhat = ToHost(sae, xhat.Data);
                AddKept(metrics, hx, hf, hxhat, keep, sae.DIn, sae.DSae, null);
                var counted = new bool[acts.Rows];
                var prompts = new int[acts.Rows];
                for (int r = 0; r < acts.Rows; r++)
                {
                    counted[r] = !special.Contains(contexts[offset + r]);
                    prompts[r] = (int)((offset + r) / contextLength);
                }

                AddKept(null, hx, hf, hxhat, counted, sae.DIn, sae.DSae, (bench, prompts));
                offset += acts.Rows;
                return xhat;
            },
            contexts,
            contextLength,
            options,
            progress,
            cancellationToken
        );
        return (downstream with { Reconstruction = metrics.Result() }, bench.Result());
    }

    private static void AddKept(
        SaeEvaluator.Accumulator? metrics,
        float[] x,
        float[] f,
        float[] xhat,
        bool[] keep,
        int d,
        int m,
        (SaeBenchAccumulator Acc, int[] Prompts)? bench
    )
    {
        int kept = keep.Count(k => k);
        if (kept == 0)
        {
            return;
        }

        var kx = new float[kept * d];
        var kf = new float[(long)kept * m];
        var kr = new float[kept * d];
        var kp = new int[kept];
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
            kp[o] = bench?.Prompts[r] ?? 0;
            o++;
        }

        metrics?.Add(kx, kf, kr, kept);
        bench?.Acc.Add(kx, kf, kr, kept, kp);
    }

    private static float[] ToHost(SparseAutoencoder sae, ArrayView<float> v)
    {
        var host = new float[v.Length];
        sae.Device.Synchronize();
        v.CopyToCPU(sae.Device.Stream, host);
        sae.Device.Synchronize();
        return host;
    }
}
