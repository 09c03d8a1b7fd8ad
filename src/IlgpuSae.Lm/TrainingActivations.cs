using IlgpuSae.Data;
using IlgpuSae.Training;

namespace IlgpuSae.Lm;

/// <summary>
/// The activations a training run reads, with the SAELens provenance keys its <c>cfg.json</c> should carry
/// (<c>model_name</c>, <c>hook_name</c>, <c>context_size</c>, <c>prepend_bos</c>,
/// <c>exclude_special_tokens</c>,
/// <c>dataset_path</c>): from a file or cache folder, or from a language model's hook site over a corpus —
/// streamed, or first written to a resumable cache.
/// </summary>
public static class TrainingActivations
{
    private static readonly string[] CacheKeys =
    [
        "model_name",
        "hook_name",
        "context_size",
        "prepend_bos",
        "exclude_special_tokens",
    ];

    /// <summary>Opens an activation file or cache folder; fills <paramref name="metadata"/> from a cache's
    /// manifest. <paramref name="verifyChecksums"/>: see <see cref="ActivationSources.Open"/>.</summary>
    public static IActivationSource OpenFile(
        string path,
        string? tensor,
        IDictionary<string, object?> metadata,
        bool verifyChecksums = true
    )
    {
        ArgumentNullException.ThrowIfNull(metadata);
        var source = ActivationSources.Open(path, tensor, verifyChecksums);
        if (source is ActivationCache cache)
        {
            foreach (var key in CacheKeys)
            {
                string from = key == "model_name" ? "model" : key;
                if (cache.Manifest.Source.TryGetValue(from, out var value))
                {
                    metadata[key] = value;
                }
            }
        }

        return source;
    }

    /// <summary>
    /// Activations of <paramref name="site"/> of <paramref name="model"/> over <paramref name="corpus"/>, for
    /// <paramref name="tokens"/> rows (fewer when the corpus is shorter: training then passes over them
    /// again,
    /// which <paramref name="log"/> is told). With <paramref name="cacheFolder"/> they are written there
    /// first and
    /// read back (the model is disposed then); otherwise they stream and the returned source owns the model.
    /// Fills <paramref name="metadata"/> with the SAELens provenance keys. With <paramref name="group"/> (a
    /// parallel run; every rank calls this) the model work is split across the ranks: the cache is built
    /// sharded (<see cref="ShardedActivationCacheBuilder"/>) after <paramref name="agree"/> has made the
    /// ranks agree on its digest, or the rows stream through <see cref="ShardedStreamingActivations"/>
    /// (whose <see cref="ShardedStreamingActivations.Digest"/> the ranks must agree on before training).
    /// </summary>
    public static IActivationSource FromModel(
        LanguageModel model,
        LmTokenizer tokenizer,
        string site,
        string corpus,
        long tokens,
        int contextSize,
        int lmBatch,
        string? cacheFolder,
        IDictionary<string, object?> metadata,
        IProgress<long>? cacheProgress = null,
        Action<string>? log = null,
        CancellationToken cancellationToken = default,
        ITrainingGroup? group = null,
        Action<byte[]>? agree = null
    )
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(metadata);
        try
        {
            var plan = ActivationPlan.Create(
                model,
                tokenizer,
                new ActivationRequest
                {
                    Site = site,
                    Corpus = corpus,
                    Tokens = tokens,
                    ContextSize = contextSize,
                    Batch = lmBatch,
                    AllowFewerTokens = true,
                },
                cancellationToken
            );
            metadata["model_name"] = model.Name;
            metadata["hook_name"] = site;
            metadata["context_size"] = plan.ContextSize;
            metadata["prepend_bos"] = true;
            metadata["exclude_special_tokens"] = true;
            metadata["dataset_path"] = Path.GetFullPath(corpus);
            if (plan.Rows < tokens)
            {
                log?.Invoke(
                    $"{corpus} gives {plan.Rows} activation rows at {site}; training passes over them {tokens / (double)plan.Rows:0.##} times."
                );
            }

            var relay = cacheProgress is null ? null : new Relay(p => cacheProgress.Report(p.Rows));
            if (cacheFolder is not null && group is not null)
            {
                var digest = ShardedActivationCacheBuilder.Check(plan, cacheFolder, group.Size);
                agree?.Invoke(digest);
                ShardedActivationCacheBuilder.Build(
                    plan,
                    cacheFolder,
                    group,
                    progress: relay,
                    cancellationToken: cancellationToken
                );
                model.Dispose();
                return ActivationCache.Open(cacheFolder);
            }

            if (cacheFolder is not null)
            {
                ActivationCacheBuilder.Build(
                    plan,
                    cacheFolder,
                    progress: relay,
                    cancellationToken: cancellationToken
                );
                model.Dispose();
                return ActivationCache.Open(cacheFolder);
            }

            if (group is not null)
            {
                return new ShardedStreamingActivations(plan, group, model);
            }

            return new ModelOwningSource(new StreamingModelActivations(plan), model);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    private sealed class Relay(Action<ActivationProgress> report) : IProgress<ActivationProgress>
    {
        public void Report(ActivationProgress value) => report(value);
    }

    /// <summary>A streamed source that also disposes its model.</summary>
    private sealed class ModelOwningSource(IActivationSource inner, IDisposable model) : IActivationSource
    {
        public int Dim => inner.Dim;

        public long Rows => inner.Rows;

        public string Description => inner.Description;

        public void ReadRows(long firstRow, Span<float> destination) => inner.ReadRows(firstRow, destination);

        public void Dispose()
        {
            inner.Dispose();
            model.Dispose();
        }
    }
}
