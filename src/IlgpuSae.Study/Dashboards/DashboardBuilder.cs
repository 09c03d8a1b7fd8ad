using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using ILGPU;
using ILGPU.Runtime;
using IlgpuSae.Backends;
using IlgpuSae.Data;
using IlgpuSae.IO;
using IlgpuSae.Kernels;
using IlgpuSae.Lm;
using IlgpuSae.Sae;
using IlgpuSae.Tensors;

namespace IlgpuSae.Study.Dashboards;

/// <summary>What to build dashboards of.</summary>
public sealed record DashboardRequest
{
    /// <summary>SAE folder (or params.npz).</summary>
    public required string Sae { get; init; }

    /// <summary>Model folder.</summary>
    public required string Model { get; init; }

    /// <summary>Corpus file.</summary>
    public required string Corpus { get; init; }

    /// <summary>Hook site; null = the SAE's metadata hook_name.</summary>
    public string? Site { get; init; }

    /// <summary>Tokens to stream (special tokens are not counted).</summary>
    public long Tokens { get; init; } = 16384;

    /// <summary>Context length (BOS included).</summary>
    public int Context { get; init; } = 128;

    /// <summary>Contexts per forward pass.</summary>
    public int LmBatch { get; init; } = 16;

    /// <summary>Features to collect (null = all), in increasing order.</summary>
    public int[]? Features { get; init; }

    /// <summary>What is kept per feature.</summary>
    public CollectorShape Shape { get; init; } = new();

    /// <summary>Also write Neuronpedia's batch-*.json layout into neuronpedia/.</summary>
    public bool Neuronpedia { get; init; }

    /// <summary>Largest Σ fᵢ fⱼ table (features × d_sae entries) kept for the correlated features.</summary>
    public long MaxCrossEntries { get; init; } = 1L << 25;
}

/// <summary>Progress of a dashboard run.</summary>
/// <param name="Pass">1 or 2.</param>
/// <param name="Tokens">Tokens of this pass done.</param>
/// <param name="Total">Tokens per pass.</param>
public readonly record struct DashboardProgress(int Pass, long Tokens, long Total);

/// <summary>The result of a dashboard run.</summary>
/// <param name="Folder">Output folder.</param>
/// <param name="Records">The feature records (in feature order).</param>
/// <param name="Tokens">Tokens counted.</param>
/// <param name="Resumed">Whether it resumed (or found a finished run).</param>
public sealed record DashboardResult(
    string Folder,
    IReadOnlyList<FeatureRecord> Records,
    long Tokens,
    bool Resumed
);

/// <summary>
/// Builds feature dashboards: streams tokens through the model and the whole SAE on the device (the SAE's
/// own encode, so TopK-family masks are those of all features), collects per-feature statistics with a
/// <see cref="FeatureCollector"/> in two passes over the same tokens (pass 2 needs pass 1's max for the
/// equal-width intervals and the histogram range), then computes the direct logit effect on the device and
/// writes the static site (<see cref="DashboardSite"/>). The collector state is saved atomically every few
/// batches, so an interrupted run resumes where it stopped.
/// </summary>
public static class DashboardBuilder
{
    private const string StateFile = "dashboard-state.bin";

    /// <summary>Name of the summary file written last.</summary>
    public const string SummaryFile = "dashboard.json";

    /// <summary>Runs (or resumes, or confirms) a dashboard build into <paramref name="folder"/>.</summary>
    public static DashboardResult Build(
        SaeDevice device,
        DashboardRequest request,
        string folder,
        IProgress<DashboardProgress>? progress = null,
        Action<string>? log = null,
        CancellationToken cancellationToken = default
    )
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(request);
        log ??= _ => { };
        Directory.CreateDirectory(folder);
        using var sae = SaeFiles.Load(device, request.Sae);
        using var model = LanguageModel.Load(device, request.Model);
        var tokenizer = LmTokenizer.Load(request.Model, model.Config);
        var site =
            request.Site
            ?? (
                sae.Config.Metadata.TryGetValue("hook_name", out var h) && h?.ToString() is { Length: > 0 } hn
                    ? hn
                    : throw new ArgumentException("--site is required: the SAE's metadata has no hook_name.")
            );
        var hook = model.Site(site);
        if (hook.Width != sae.DIn)
        {
            throw new ArgumentException(
                $"Site {site} has width {hook.Width}; the SAE expects d_in = {sae.DIn}."
            );
        }

        var features = request.Features ?? [.. Enumerable.Range(0, sae.DSae)];
        foreach (var f in features)
        {
            if (f < 0 || f >= sae.DSae)
            {
                throw new ArgumentException($"Feature {f} is outside the SAE's [0, {sae.DSae}).");
            }
        }

        features = [.. features.Distinct().Order()];
        var plan = ActivationPlan.Create(
            model,
            tokenizer,
            new ActivationRequest
            {
                Site = site,
                Corpus = request.Corpus,
                Tokens = request.Tokens,
                ContextSize = request.Context,
                Batch = request.LmBatch,
                ExcludeSpecialTokens = true,
            },
            cancellationToken
        );
        var fingerprint = Fingerprint(request, site, features, plan);
        var summaryPath = Path.Combine(folder, SummaryFile);
        if (File.Exists(summaryPath))
        {
            var existing = JsonNode.Parse(File.ReadAllText(summaryPath))!;
            if (existing["fingerprint"]?.ToJsonString() != fingerprint.ToJsonString())
            {
                throw new InvalidOperationException(
                    $"{folder} holds dashboards of a different request ({SummaryFile}); choose another --out folder."
                );
            }

            log($"{folder}: dashboards already complete");
            progress?.Report(new DashboardProgress(2, plan.Rows, plan.Rows));
            return new DashboardResult(folder, DashboardSite.ReadRecords(folder), plan.Rows, true);
        }

        bool cross = (long)features.Length * sae.DSae <= request.MaxCrossEntries;
        if (!cross)
        {
            log(
                $"note: {features.Length} features × {sae.DSae} exceeds {request.MaxCrossEntries} co-activation sums; correlated features are left out (ask for fewer --features)."
            );
        }

        var collector = new FeatureCollector(sae.DSae, sae.DIn, features, request.Shape, cross);
        var statePath = Path.Combine(folder, StateFile);
        int pass = 1,
            next = 0;
        bool resumed = false;
        if (File.Exists(statePath))
        {
            (pass, next) = LoadState(statePath, fingerprint, collector);
            resumed = true;
            log($"resuming: pass {pass}, context {next} of {plan.Contexts}");
        }

        var special = model.Config.SpecialTokens;
        int length = plan.ContextSize;
        var watch = Stopwatch.StartNew();
        DeviceTensor? features2 = null;
        try
        {
            for (; pass <= 2; pass++, next = 0)
            {
                long row = plan.ContextStart(next);
                progress?.Report(new DashboardProgress(pass, row, plan.Rows));
                while (next < plan.Contexts)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    int count = Math.Min(request.LmBatch, plan.Contexts - next);
                    var tokens = plan.Corpus.Contexts(next, count, length);
                    int rows = count * length;
                    if (features2 is null || features2.Rows != rows)
                    {
                        features2?.Dispose();
                        features2 = device.Allocate(rows, sae.DSae, "dashboard.f");
                    }

                    var f = new float[(long)rows * sae.DSae];
                    var x = pass == 1 ? new float[(long)rows * sae.DIn] : [];
                    var target = features2;
                    model.Run(
                        tokens,
                        count,
                        new Dictionary<string, SiteHook>
                        {
                            [site] = v =>
                            {
                                sae.Encode(v, target);
                                if (x.Length > 0)
                                {
                                    v.Data.CopyToCPU(device.Stream, x);
                                }
                            },
                        },
                        stopAfter: site
                    );
                    target.Data.CopyToCPU(device.Stream, f);
                    device.Synchronize();
                    var isSpecial = new bool[rows];
                    var counted = new bool[rows];
                    long r = row;
                    for (int n = 0; n < rows; n++)
                    {
                        isSpecial[n] = special.Contains(tokens[n]);
                        counted[n] = !isSpecial[n] && r < plan.Rows;
                        if (counted[n])
                        {
                            r++;
                        }
                    }

                    row += collector.Add(pass, f, x, counted, isSpecial, next, row, count, length);
                    next += count;
                    progress?.Report(new DashboardProgress(pass, row, plan.Rows));
                    if (watch.Elapsed.TotalSeconds > 15 && next < plan.Contexts)
                    {
                        SaveState(statePath, fingerprint, pass, next, collector);
                        watch.Restart();
                    }
                }

                if (pass == 1)
                {
                    SaveState(statePath, fingerprint, 2, 0, collector);
                    watch.Restart();
                }
            }
        }
        finally
        {
            features2?.Dispose();
        }

        var records = BuildRecords(device, sae, model, request, site, hook, plan, tokenizer, collector);
        var meta = Describe(request, site, plan, model, sae, fingerprint);
        meta["description"] = DashboardSite.Describe(meta);
        DashboardSite.Write(folder, records, meta);
        if (request.Neuronpedia)
        {
            NeuronpediaExport.Write(
                Path.Combine(folder, "neuronpedia"),
                records,
                model.Name,
                hook,
                request,
                sae.DSae
            );
        }

        var summary = Describe(request, site, plan, model, sae, fingerprint);
        summary["features"] = records.Count;
        AtomicFile.WriteAllText(summaryPath, summary.ToJsonString(new() { WriteIndented = true }));
        File.Delete(statePath);
        return new DashboardResult(folder, records, collector.Tokens, resumed);
    }

    private static JsonObject Describe(
        DashboardRequest request,
        string site,
        ActivationPlan plan,
        LanguageModel model,
        SparseAutoencoder sae,
        JsonObject fingerprint
    ) =>
        new()
        {
            ["created_by"] = "ilgpu-sae dashboard",
            ["sae"] = Path.GetFullPath(request.Sae),
            ["architecture"] = SaeFiles.ArchitectureName(sae.Architecture),
            ["d_in"] = sae.DIn,
            ["d_sae"] = sae.DSae,
            ["model"] = model.Name,
            ["hook_name"] = site,
            ["corpus"] = Path.GetFullPath(request.Corpus),
            ["tokens"] = plan.Rows,
            ["contexts"] = plan.Contexts,
            ["context_size"] = plan.ContextSize,
            ["special_tokens"] = "not counted (BOS/EOS/PAD positions are shown in windows, never sampled)",
            ["fingerprint"] = fingerprint.DeepClone(),
        };

    private static JsonObject Fingerprint(
        DashboardRequest request,
        string site,
        int[] features,
        ActivationPlan plan
    )
    {
        var files = Directory.Exists(request.Sae)
            ? Directory
                .GetFiles(request.Sae)
                .Where(p =>
                    p.EndsWith(".safetensors", StringComparison.Ordinal)
                    || p.EndsWith("cfg.json", StringComparison.Ordinal)
                )
                .Order(StringComparer.Ordinal)
                .ToArray()
            : [request.Sae];
        var sae = new JsonObject();
        foreach (var file in files)
        {
            sae[Path.GetFileName(file)] = ActivationCache.Sha256Of(file);
        }

        return new JsonObject
        {
            ["sae_files"] = sae,
            ["model"] = plan.Model.Name,
            ["model_config_sha256"] = ActivationCache.Sha256Of(Path.Combine(request.Model, "config.json")),
            ["corpus_sha256"] = ActivationCache.Sha256Of(request.Corpus),
            ["site"] = site,
            ["tokens"] = plan.Rows,
            ["context"] = plan.ContextSize,
            ["lm_batch"] = request.LmBatch,
            ["features"] = features.Length == 0 ? "" : Hash(features),
            ["shape"] = JsonSerializer.SerializeToNode(request.Shape),
            ["neuronpedia"] = request.Neuronpedia,
        };
    }

    private static string Hash(int[] features) =>
        Convert.ToHexStringLower(
            System.Security.Cryptography.SHA256.HashData(
                System.Runtime.InteropServices.MemoryMarshal.AsBytes(features.AsSpan())
            )
        );

    private static void SaveState(
        string path,
        JsonObject fingerprint,
        int pass,
        int next,
        FeatureCollector collector
    ) =>
        AtomicFile.Write(
            path,
            stream =>
            {
                using var w = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true);
                w.Write("ilgpu-sae dashboard state 1");
                w.Write(fingerprint.ToJsonString());
                w.Write(pass);
                w.Write(next);
                collector.Save(w);
            }
        );

    private static (int Pass, int Next) LoadState(
        string path,
        JsonObject fingerprint,
        FeatureCollector collector
    )
    {
        try
        {
            using var stream = File.OpenRead(path);
            using var r = new BinaryReader(stream);
            if (r.ReadString() != "ilgpu-sae dashboard state 1")
            {
                throw new InvalidDataException("unknown header");
            }

            if (r.ReadString() != fingerprint.ToJsonString())
            {
                throw new InvalidOperationException(
                    $"{path} belongs to a dashboard run of a different request; choose another --out folder or delete it."
                );
            }

            int pass = r.ReadInt32(),
                next = r.ReadInt32();
            collector.Load(r);
            return (pass, next);
        }
        catch (Exception e) when (e is EndOfStreamException or InvalidDataException or IOException)
        {
            throw new InvalidDataException(
                $"{path} is damaged ({e.Message}); the interrupted run cannot resume. Delete it and start again.",
                e
            );
        }
    }

    private static List<FeatureRecord> BuildRecords(
        SaeDevice device,
        SparseAutoencoder sae,
        LanguageModel model,
        DashboardRequest request,
        string site,
        HookSite hook,
        ActivationPlan plan,
        LmTokenizer tokenizer,
        FeatureCollector c
    )
    {
        var decoder = new float[(long)sae.DSae * sae.DIn];
        sae.Decoder.Data.CopyToCPU(device.Stream, decoder);
        device.Synchronize();
        var logits = LogitEffects(device, model, request.Model, hook, decoder, sae.DIn, c.Features);
        var text = new TokenText(tokenizer, model.Config);
        var shape = c.Shape;
        var records = new List<FeatureRecord>(c.Features.Length);
        for (int s = 0; s < c.Features.Length; s++)
        {
            int i = c.Features[s];
            float max = c.Max[s],
                min = c.Count[s] > 0 ? c.MinNonZero[s] : 0f;
            var intervals = new IntervalRecord[shape.Intervals];
            for (int q = shape.Intervals - 1; q >= 0; q--)
            {
                intervals[shape.Intervals - 1 - q] = new IntervalRecord
                {
                    BinMin = max * q / shape.Intervals,
                    BinMax = max * (q + 1) / shape.Intervals,
                    BinContains =
                        c.Tokens2 > 0 ? c.IntervalCount[s * shape.Intervals + q] / (double)c.Tokens2 : 0,
                    Examples = [.. c.Samples(s, q).Select(e => Example(e, plan, text, shape))],
                };
            }

            var row = decoder.AsSpan(i * sae.DIn, sae.DIn).ToArray();
            double l1 = 0;
            foreach (var v in row)
            {
                l1 += Math.Abs(v);
            }

            var align = Enumerable
                .Range(0, sae.DIn)
                .OrderByDescending(n => row[n])
                .ThenBy(n => n)
                .Take(3)
                .ToArray();
            var neurons = Enumerable
                .Range(0, sae.DIn)
                .Select(n => (n, c.NeuronCorrelation(s, n)))
                .Where(t => !double.IsNaN(t.Item2.Pearson))
                .OrderByDescending(t => t.Item2.Pearson)
                .ThenBy(t => t.n)
                .Take(3)
                .ToArray();
            RankedRecord? correlated = null;
            if (c.Cross is not null)
            {
                var top = Enumerable
                    .Range(0, sae.DSae)
                    .Where(j => j != i)
                    .Select(j => (j, c.FeatureCorrelation(s, j)))
                    .Where(t => !double.IsNaN(t.Item2.Pearson))
                    .OrderByDescending(t => t.Item2.Pearson)
                    .ThenBy(t => t.j)
                    .Take(3)
                    .ToArray();
                correlated = new RankedRecord
                {
                    Indices = [.. top.Select(t => t.j)],
                    Values = [.. top.Select(t => (float)t.Item2.Pearson)],
                    Second = [.. top.Select(t => (float)t.Item2.Cosine)],
                };
            }

            records.Add(
                new FeatureRecord
                {
                    Index = i,
                    Id = i.ToString(System.Globalization.CultureInfo.InvariantCulture),
                    Density = c.Tokens > 0 ? c.Count[s] / (double)c.Tokens : 0,
                    MaxAct = max,
                    MeanNonZero = c.Count[s] > 0 ? c.Sum[s] / c.Count[s] : 0,
                    Tokens = c.Tokens,
                    ActivationHistogram = new HistogramRecord
                    {
                        BarValues = Centres(min, max, shape.HistogramBins),
                        BarHeights = c
                            .Histogram.AsSpan(s * shape.HistogramBins, shape.HistogramBins)
                            .ToArray(),
                    },
                    Top = [.. c.Top(s).Select(e => Example(e, plan, text, shape))],
                    Intervals = intervals,
                    Logits = logits[s] is { } lv ? LogitTable(lv, text) : null,
                    NeuronAlignment = new RankedRecord
                    {
                        Indices = align,
                        Values = [.. align.Select(n => row[n])],
                        Second = [.. align.Select(n => l1 > 0 ? (float)(Math.Abs(row[n]) / l1) : 0f)],
                    },
                    CorrelatedNeurons = new RankedRecord
                    {
                        Indices = [.. neurons.Select(t => t.n)],
                        Values = [.. neurons.Select(t => (float)t.Item2.Pearson)],
                        Second = [.. neurons.Select(t => (float)t.Item2.Cosine)],
                    },
                    CorrelatedFeatures = correlated,
                }
            );
        }

        return records;
    }

    private static float[] Centres(float min, float max, int bins) =>
        [.. Enumerable.Range(0, bins).Select(j => (float)(min + (j + 0.5) * (max - (double)min) / bins))];

    private static ExampleRecord Example(
        FeatureExample e,
        ActivationPlan plan,
        TokenText text,
        CollectorShape shape
    )
    {
        int length = plan.ContextSize;
        var ids = plan.Corpus.Contexts(e.Context, 1, length);
        int from = Math.Max(0, e.Position - shape.Window),
            to = Math.Min(length - 1, e.Position + shape.Window);
        return new ExampleRecord
        {
            Value = e.Value,
            Row = e.Row,
            Context = e.Context,
            Position = e.Position,
            Tokens = [.. Enumerable.Range(from, to - from + 1).Select(p => text[ids[p]])],
            Values =
            [
                .. Enumerable.Range(from, to - from + 1).Select(p => e.Window[p - e.Position + shape.Window]),
            ],
            MaxIndex = e.Position - from,
        };
    }

    private static LogitRecord LogitTable(float[] logits, TokenText text)
    {
        var order = Enumerable
            .Range(0, logits.Length)
            .OrderByDescending(v => logits[v])
            .ThenBy(v => v)
            .ToArray();
        var pos = order.Take(10).ToArray();
        var neg = order.Reverse().Take(10).ToArray();
        float min = logits.Min(),
            max = logits.Max();
        var heights = new long[50];
        foreach (var v in logits)
        {
            heights[FeatureCollector.HistogramBin(v, min, max, 50)]++;
        }

        return new LogitRecord
        {
            PosStr = [.. pos.Select(t => text[t])],
            PosValues = [.. pos.Select(t => logits[t])],
            NegStr = [.. neg.Select(t => text[t])],
            NegValues = [.. neg.Select(t => logits[t])],
            Histogram = new HistogramRecord { BarValues = Centres(min, max, 50), BarHeights = heights },
        };
    }

    /// <summary>
    /// The direct logit effect of each feature: its output direction in the residual stream times the
    /// unembedding, <c>(W_dec[i] · P) · W_Uᵀ</c>, with P = I for residual and <c>*_out</c> sites,
    /// <c>W_out</c> for <c>mlp.hook_post</c> and <c>W_O</c> for <c>attn.hook_z</c> (SAEDashboard's
    /// definition: no final LayerNorm). Computed on the device, 256 features at a time.
    /// </summary>
    internal static float[]?[] LogitEffects(
        SaeDevice device,
        LanguageModel model,
        string modelFolder,
        HookSite hook,
        float[] decoder,
        int dIn,
        int[] features
    )
    {
        var result = new float[]?[features.Length];
        var weights = LmWeights.Load(modelFolder, model.Config);
        int d = model.Config.DModel,
            vocab = model.Config.VocabSize;
        float[]? project = hook.Kind switch
        {
            HookKind.MlpPost => weights.Blocks[hook.Layer].MlpOutWeight,
            HookKind.AttnZ => weights.Blocks[hook.Layer].OutWeight,
            _ => null,
        };
        using var unembed = device.Upload(weights.Unembedding, vocab, d, "W_U");
        using var p = project is null ? null : device.Upload(project, dIn, d, "W_proj");
        const int Chunk = 256;
        for (int at = 0; at < features.Length; at += Chunk)
        {
            int n = Math.Min(Chunk, features.Length - at);
            var rows = new float[(long)n * dIn];
            for (int k = 0; k < n; k++)
            {
                Array.Copy(decoder, (long)features[at + k] * dIn, rows, (long)k * dIn, dIn);
            }

            using var dirs = device.Upload(rows, n, dIn, "W_dec rows");
            using var resid = p is null ? null : device.Allocate(n, d, "resid dirs");
            if (resid is not null)
            {
                device.Ops.MatMul(dirs, p!, resid, GemmLayout.NN);
            }

            using var logits = device.Allocate(n, vocab, "logit effects");
            device.Ops.MatMul(resid ?? dirs, unembed, logits, GemmLayout.NT);
            var host = logits.ToArray();
            for (int k = 0; k < n; k++)
            {
                result[at + k] = host.AsSpan(k * vocab, vocab).ToArray();
            }
        }

        return result;
    }
}

/// <summary>Token ids as display text: SentencePiece's ▁ as a space, special tokens named.</summary>
internal sealed class TokenText(LmTokenizer tokenizer, LmConfig config)
{
    private readonly Dictionary<int, string> _cache = [];

    public string this[int id]
    {
        get
        {
            if (_cache.TryGetValue(id, out var s))
            {
                return s;
            }

            s =
                id == config.BosTokenId ? "<bos>"
                : id == config.EosTokenId ? "<eos>"
                : id == config.PadTokenId ? "<pad>"
                : tokenizer.TokenText(id);
            _cache[id] = s;
            return s;
        }
    }
}
