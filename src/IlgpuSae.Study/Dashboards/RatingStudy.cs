using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using IlgpuSae.Backends;
using IlgpuSae.Data;
using IlgpuSae.IO;

namespace IlgpuSae.Study.Dashboards;

/// <summary>Settings of a blinded rating study (the paper's §4.3).</summary>
public sealed record RatingStudyRequest
{
    /// <summary>The SAEs compared (folders).</summary>
    public required IReadOnlyList<string> Saes { get; init; }

    /// <summary>Features sampled per SAE.</summary>
    public int PerSae { get; init; } = 20;

    /// <summary>Seed of the sampling, the ids and the order.</summary>
    public ulong Seed { get; init; }

    /// <summary>A feature is alive when its density is above this.</summary>
    public double MinDensity { get; init; } = 1e-4;

    /// <summary>The dashboard settings every SAE is collected with (its <c>Sae</c> is replaced).</summary>
    public required DashboardRequest Dashboards { get; init; }
}

/// <summary>
/// A blinded rating study folder:
/// <list type="bullet">
/// <item><c>public/</c>: what the server shows raters — the rating page and one dashboard per sampled
/// feature under an opaque id, with nothing that tells the SAE (no index, no correlated features, whose
/// indices would betray the width);</item>
/// <item><c>study.json</c>: the ids in the rating order and the settings;</item>
/// <item><c>key.json</c>: id → SAE and feature index, kept apart (move it away for a double-blind run and
/// give it back to <c>analyze --key</c>);</item>
/// <item><c>ratings.jsonl</c>: one line per rating, appended by the server;</item>
/// <item><c>work/sae-N/</c>: the full dashboards each sample was drawn from.</item>
/// </list>
/// </summary>
public static class RatingStudy
{
    /// <summary>Public folder name.</summary>
    public const string PublicFolder = "public";

    /// <summary>The study file.</summary>
    public const string StudyFile = "study.json";

    /// <summary>The key file.</summary>
    public const string KeyFile = "key.json";

    /// <summary>The ratings log.</summary>
    public const string RatingsFile = "ratings.jsonl";

    /// <summary>Creates (or confirms) a study in <paramref name="folder"/>.</summary>
    /// <returns>The ids in rating order.</returns>
    public static IReadOnlyList<string> Create(
        SaeDevice device,
        RatingStudyRequest request,
        string folder,
        Func<int, IProgress<DashboardProgress>?>? progress = null,
        Action<string>? log = null,
        CancellationToken cancellationToken = default
    )
    {
        ArgumentNullException.ThrowIfNull(request);
        log ??= _ => { };
        if (request.Saes.Count < 2)
        {
            throw new ArgumentException(
                "A rating study compares at least two SAEs: give --sae twice or more."
            );
        }

        if (request.PerSae < 1)
        {
            throw new ArgumentException($"--per-sae must be at least 1, got {request.PerSae}.");
        }

        Directory.CreateDirectory(folder);
        var settings = new JsonObject
        {
            ["saes"] = new JsonArray([.. request.Saes.Select(s => (JsonNode)Path.GetFullPath(s))]),
            ["per_sae"] = request.PerSae,
            ["seed"] = request.Seed,
            ["min_density"] = request.MinDensity,
            ["tokens"] = request.Dashboards.Tokens,
            ["context"] = request.Dashboards.Context,
            ["corpus"] = Path.GetFullPath(request.Dashboards.Corpus),
            ["model"] = Path.GetFullPath(request.Dashboards.Model),
        };
        var studyPath = Path.Combine(folder, StudyFile);
        if (File.Exists(studyPath))
        {
            var existing = JsonNode.Parse(File.ReadAllText(studyPath))!;
            if (existing["settings"]?.ToJsonString() != settings.ToJsonString())
            {
                throw new InvalidOperationException(
                    $"{folder} holds a rating study with other settings ({StudyFile}); choose another --out folder."
                );
            }

            log($"{folder}: the study exists already");
            return [.. existing["features"]!.AsArray().Select(n => n!.GetValue<string>())];
        }

        var labels = Labels(request.Saes);
        var chosen = new List<(string Id, int Sae, FeatureRecord Record)>();
        var used = new HashSet<string>(StringComparer.Ordinal);
        for (int k = 0; k < request.Saes.Count; k++)
        {
            var work = Path.Combine(folder, "work", $"sae-{k}");
            log($"dashboards of {request.Saes[k]} ({labels[k]}) → {work}");
            var result = DashboardBuilder.Build(
                device,
                request.Dashboards with
                {
                    Sae = request.Saes[k],
                    Features = null,
                    Neuronpedia = false,
                },
                work,
                progress?.Invoke(k),
                log,
                cancellationToken
            );
            var alive = result.Records.Where(r => r.Density > request.MinDensity).ToList();
            if (alive.Count < request.PerSae)
            {
                throw new InvalidOperationException(
                    $"{request.Saes[k]} has {alive.Count} features with density above {request.MinDensity.ToString(CultureInfo.InvariantCulture)} over {result.Tokens} tokens, fewer than --per-sae {request.PerSae}; lower --per-sae or --min-density, or give more --tokens."
                );
            }

            var rng = new SplitMix64(SplitMix64.Mix(request.Seed, 1, (ulong)k));
            for (int i = alive.Count - 1; i > 0; i--)
            {
                int j = rng.NextInt(i + 1);
                (alive[i], alive[j]) = (alive[j], alive[i]);
            }

            foreach (var r in alive.Take(request.PerSae))
            {
                string id;
                ulong salt = 0;
                do
                {
                    id =
                        "f"
                        + (
                            SplitMix64.Mix(request.Seed, 2, (ulong)k, (ulong)r.Index!.Value, salt++)
                            & 0xFFFFFFFFFFUL
                        ).ToString("x10", CultureInfo.InvariantCulture);
                } while (!used.Add(id));

                chosen.Add((id, k, r));
            }
        }

        var order = new SplitMix64(SplitMix64.Mix(request.Seed, 3));
        for (int i = chosen.Count - 1; i > 0; i--)
        {
            int j = order.NextInt(i + 1);
            (chosen[i], chosen[j]) = (chosen[j], chosen[i]);
        }

        var blinded = chosen
            .Select(c => c.Record with { Index = null, Id = c.Id, CorrelatedFeatures = null })
            .ToList();
        var meta = new JsonObject
        {
            ["description"] = $"Blinded rating study: {chosen.Count} features from {request.Saes.Count} SAEs",
        };
        DashboardSite.Write(Path.Combine(folder, PublicFolder), blinded, meta, rating: true);
        var key = new JsonObject
        {
            ["saes"] = new JsonArray([
                .. request.Saes.Select(
                    (s, k) =>
                        (JsonNode)new JsonObject { ["label"] = labels[k], ["path"] = Path.GetFullPath(s) }
                ),
            ]),
            ["features"] = new JsonObject(
                chosen.Select(c =>
                    KeyValuePair.Create(
                        c.Id,
                        (JsonNode?)new JsonObject { ["sae"] = labels[c.Sae], ["index"] = c.Record.Index }
                    )
                )
            ),
        };
        AtomicFile.WriteAllText(
            Path.Combine(folder, KeyFile),
            key.ToJsonString(new() { WriteIndented = true })
        );
        var study = new JsonObject
        {
            ["created_by"] = "ilgpu-sae rating-study create",
            ["created"] = DateTime.UtcNow.ToString("O", CultureInfo.InvariantCulture),
            ["labels"] = new JsonArray("yes", "maybe", "no"),
            ["settings"] = settings,
            ["features"] = new JsonArray([.. chosen.Select(c => (JsonNode)c.Id)]),
        };
        AtomicFile.WriteAllText(studyPath, study.ToJsonString(new() { WriteIndented = true }));
        return [.. chosen.Select(c => c.Id)];
    }

    /// <summary>Short, distinct labels of SAE folders (their names, numbered when two are equal).</summary>
    public static string[] Labels(IReadOnlyList<string> saes)
    {
        ArgumentNullException.ThrowIfNull(saes);
        // The folder's name, or parent/name when two names are equal (a sweep's arm/l1-λ folders).
        var full = saes.Select(s => Path.TrimEndingDirectorySeparator(Path.GetFullPath(s))).ToArray();
        var names = full.Select(f => Path.GetFileName(f)).ToArray();
        if (names.Distinct().Count() < names.Length)
        {
            names =
            [
                .. full.Select(f => Path.GetFileName(Path.GetDirectoryName(f)) + "/" + Path.GetFileName(f)),
            ];
        }

        return [.. names.Select((n, k) => names.Count(m => m == n) > 1 ? $"{n}#{k + 1}" : n!)];
    }

    /// <summary>The ids of a study folder, in rating order.</summary>
    /// <exception cref="InvalidDataException">The folder is not a study.</exception>
    public static IReadOnlyList<string> ReadIds(string folder)
    {
        var path = Path.Combine(folder, StudyFile);
        if (!File.Exists(path) || !Directory.Exists(Path.Combine(folder, PublicFolder)))
        {
            throw new InvalidDataException(
                $"{folder} is not a rating study (no {StudyFile} or {PublicFolder}/); create one with 'rating-study create'."
            );
        }

        try
        {
            return
            [
                .. JsonNode.Parse(File.ReadAllText(path))!["features"]!
                    .AsArray()
                    .Select(n => n!.GetValue<string>()),
            ];
        }
        catch (Exception e) when (e is JsonException or NullReferenceException or InvalidOperationException)
        {
            throw new InvalidDataException($"{path} is damaged: {e.Message}", e);
        }
    }
}

/// <summary>One line of <c>ratings.jsonl</c>.</summary>
public sealed record Rating
{
    /// <summary>Position in the log (1, 2, …).</summary>
    public long Sequence { get; init; }

    /// <summary>UTC time it was saved.</summary>
    public required string Time { get; init; }

    /// <summary>Who rated.</summary>
    public required string Rater { get; init; }

    /// <summary>The feature's opaque id.</summary>
    public required string Feature { get; init; }

    /// <summary>yes, maybe or no.</summary>
    public required string Label { get; init; }

    /// <summary>Optional description.</summary>
    public string? Description { get; init; }

    /// <summary>1 for this rater's first rating of this feature, then 2, 3, … (the latest wins).</summary>
    public int Revision { get; init; }
}

/// <summary>
/// The ratings log: an append-only JSON-lines file. Each rating is written as one line and flushed to the
/// disk (fsync) before <see cref="Append"/> returns, so a rating the page reports as saved survives a
/// crash; a failed write (a full disk) throws and the rating is not reported as saved. A torn last line
/// (a crash mid-write) is skipped on reading, and the next append starts on a fresh line.
/// </summary>
public sealed class RatingLog
{
    /// <summary>The labels and their coding (the paper's: Yes = 1, Maybe = 0.5, No = 0).</summary>
    public static readonly IReadOnlyDictionary<string, double> Coding = new Dictionary<string, double>
    {
        ["yes"] = 1.0,
        ["maybe"] = 0.5,
        ["no"] = 0.0,
    };

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull,
    };

    private readonly Lock _gate = new();
    private readonly List<Rating> _all;

    private RatingLog(string path, List<Rating> all, int skipped)
    {
        Path = path;
        _all = all;
        Skipped = skipped;
    }

    /// <summary>The file.</summary>
    public string Path { get; }

    /// <summary>Lines that could not be read (a torn last line).</summary>
    public int Skipped { get; }

    /// <summary>Every rating, in order.</summary>
    public IReadOnlyList<Rating> All
    {
        get
        {
            lock (_gate)
            {
                return [.. _all];
            }
        }
    }

    /// <summary>Opens (or starts) a log.</summary>
    public static RatingLog Open(string path)
    {
        var all = new List<Rating>();
        int skipped = 0;
        if (File.Exists(path))
        {
            // Reads the file's length in bytes, no more (a device file would never end).
            byte[] bytes;
            using (var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite))
            {
                bytes = new byte[stream.Length];
                stream.ReadExactly(bytes);
            }

            foreach (var line in Encoding.UTF8.GetString(bytes).Split('\n'))
            {
                if (line.Trim().Length == 0)
                {
                    continue;
                }

                try
                {
                    var r = JsonSerializer.Deserialize<Rating>(line, Json);
                    if (
                        r is null
                        || r.Rater is null
                        || r.Feature is null
                        || !Coding.ContainsKey(r.Label ?? "")
                    )
                    {
                        skipped++;
                        continue;
                    }

                    all.Add(r);
                }
                catch (JsonException)
                {
                    skipped++;
                }
            }
        }

        return new RatingLog(path, all, skipped);
    }

    /// <summary>The latest rating per (rater, feature).</summary>
    public static Dictionary<(string Rater, string Feature), Rating> Latest(IEnumerable<Rating> ratings)
    {
        var latest = new Dictionary<(string, string), Rating>();
        foreach (var r in ratings)
        {
            latest[(r.Rater, r.Feature)] = r;
        }

        return latest;
    }

    /// <summary>Appends a rating and flushes it to the disk; returns it with its sequence and
    /// revision.</summary>
    /// <exception cref="IOException">It could not be written (then nothing is recorded).</exception>
    public Rating Append(string rater, string feature, string label, string? description)
    {
        lock (_gate)
        {
            var rating = new Rating
            {
                Sequence = (_all.Count == 0 ? 0 : _all[^1].Sequence) + 1,
                Time = DateTime.UtcNow.ToString("O", CultureInfo.InvariantCulture),
                Rater = rater,
                Feature = feature,
                Label = label,
                Description = string.IsNullOrWhiteSpace(description) ? null : description,
                Revision = _all.Count(r => r.Rater == rater && r.Feature == feature) + 1,
            };
            var bytes = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(rating, Json) + "\n");
            using (
                var stream = new FileStream(Path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.Read)
            )
            {
                long end = stream.Length;
                if (end > 0)
                {
                    stream.Seek(-1, SeekOrigin.End);
                    if (stream.ReadByte() != '\n')
                    {
                        stream.WriteByte((byte)'\n');
                    }
                }

                stream.Seek(0, SeekOrigin.End);
                stream.Write(bytes);
                stream.Flush(flushToDisk: true);
            }

            _all.Add(rating);
            return rating;
        }
    }
}
