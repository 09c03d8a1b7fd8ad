using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace IlgpuSae.Study;

/// <summary>One evaluated SAE (or one ITO target) of a study.</summary>
public sealed record RunResult
{
    /// <summary>Hook site.</summary>
    [JsonPropertyName("site")]
    public required string Site { get; init; }

    /// <summary>Arm (<see cref="StudyArms"/>), or <c>ito:</c> + the arm whose decoder ITO used.</summary>
    [JsonPropertyName("arm")]
    public required string Arm { get; init; }

    /// <summary>λ of the (source) SAE: the L1 coefficient, or for jumprelu the L0 coefficient; 0 for the TopK
    /// family.</summary>
    [JsonPropertyName("l1")]
    public double L1 { get; init; }

    /// <summary>The TopK family's k (0 for the other arms; omitted from the JSON then).</summary>
    [JsonPropertyName("k")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public int K { get; init; }

    /// <summary>Dictionary size.</summary>
    [JsonPropertyName("d_sae")]
    public int DSae { get; init; }

    /// <summary>ITO target L0 (0 for encoder runs).</summary>
    [JsonPropertyName("ito_k")]
    public int ItoK { get; init; }

    /// <summary>Mean active features per token on the held-out tokens.</summary>
    [JsonPropertyName("l0")]
    public double L0 { get; init; }

    /// <summary>Loss recovered.</summary>
    [JsonPropertyName("ce_loss_score")]
    public double LossRecovered { get; init; }

    /// <summary>KL-based score.</summary>
    [JsonPropertyName("kl_div_score")]
    public double KlScore { get; init; }

    /// <summary>Clean cross-entropy.</summary>
    [JsonPropertyName("ce_loss_without_sae")]
    public double CeClean { get; init; }

    /// <summary>Cross-entropy with the reconstruction spliced in.</summary>
    [JsonPropertyName("ce_loss_with_sae")]
    public double CeWithSae { get; init; }

    /// <summary>Cross-entropy with the site zero-ablated.</summary>
    [JsonPropertyName("ce_loss_with_ablation")]
    public double CeWithAblation { get; init; }

    /// <summary>Relative reconstruction bias γ (NaN for ITO).</summary>
    [JsonPropertyName("relative_reconstruction_bias")]
    public double Gamma { get; init; } = double.NaN;

    /// <summary>Fraction of features alive on the held-out tokens (NaN for ITO).</summary>
    [JsonPropertyName("frac_alive")]
    public double FracAlive { get; init; } = double.NaN;

    /// <summary>Explained variance (NaN for ITO).</summary>
    [JsonPropertyName("explained_variance")]
    public double ExplainedVariance { get; init; } = double.NaN;

    /// <summary>Training rows.</summary>
    [JsonPropertyName("train_tokens")]
    public long TrainTokens { get; init; }

    /// <summary>Seconds spent training.</summary>
    [JsonPropertyName("train_seconds")]
    public double TrainSeconds { get; init; }

    /// <summary>Seconds spent evaluating.</summary>
    [JsonPropertyName("eval_seconds")]
    public double EvalSeconds { get; init; }

    /// <summary>Folder of the SAE, relative to the study folder.</summary>
    [JsonPropertyName("folder")]
    public string Folder { get; init; } = "";

    /// <summary>Whether this is an ITO point.</summary>
    [JsonIgnore]
    public bool IsIto => ItoK > 0;

    /// <summary>
    /// Whether the SAE collapsed: its reconstruction explains no variance (explained variance ≤ 0, worse than
    /// predicting the batch mean), as a too-large λ does when nearly every feature dies and the L1 gradient
    /// drags b_dec away from the data. γ = E‖x̂‖² / E[x·x̂] says nothing about shrinkage then (E[x·x̂] can be
    /// near zero or negative), so the report lists such runs but leaves them out of the γ claims and plots.
    /// </summary>
    [JsonIgnore]
    public bool IsDegenerate => !IsIto && ExplainedVariance <= 0;
}

/// <summary>Pareto frontiers, interpolation and the CSV/JSON files of a study.</summary>
public static class StudyResults
{
    /// <summary>CSV columns, in order; a study with TopK-family arms appends <see cref="KColumn"/>.</summary>
    public static IReadOnlyList<string> Columns { get; } =
    [
        "site",
        "arm",
        "l1",
        "d_sae",
        "ito_k",
        "l0",
        "ce_loss_score",
        "kl_div_score",
        "ce_loss_without_sae",
        "ce_loss_with_sae",
        "ce_loss_with_ablation",
        "relative_reconstruction_bias",
        "frac_alive",
        "explained_variance",
        "train_tokens",
        "train_seconds",
        "eval_seconds",
        "folder",
    ];

    /// <summary>The last CSV column, written only when some result has a k (TopK-family arms), so that
    /// studies without them keep their file unchanged.</summary>
    public const string KColumn = "k";

    /// <summary>
    /// The Pareto frontier of (L0, score) points where lower L0 and higher score are better: the points no
    /// other
    /// point beats on both (ties on L0 keep the better score), sorted by L0.
    /// </summary>
    public static IReadOnlyList<(double L0, double Score)> Frontier(
        IEnumerable<(double L0, double Score)> points
    )
    {
        var frontier = new List<(double L0, double Score)>();
        foreach (
            var p in points
                .Where(p => double.IsFinite(p.L0) && double.IsFinite(p.Score))
                .OrderBy(p => p.L0)
                .ThenByDescending(p => p.Score)
        )
        {
            if (frontier.Count == 0 || p.Score > frontier[^1].Score)
            {
                if (frontier.Count > 0 && frontier[^1].L0 == p.L0)
                {
                    continue;
                }

                frontier.Add(p);
            }
        }

        return frontier;
    }

    /// <summary>
    /// The frontier's score at <paramref name="l0"/>, linear in log L0 between frontier points, or null
    /// outside
    /// the frontier's L0 range.
    /// </summary>
    public static double? ScoreAt(IReadOnlyList<(double L0, double Score)> frontier, double l0)
    {
        if (frontier.Count == 0 || !(l0 > 0) || l0 < frontier[0].L0 || l0 > frontier[^1].L0)
        {
            return null;
        }

        for (int i = 0; i + 1 < frontier.Count; i++)
        {
            var (a, b) = (frontier[i], frontier[i + 1]);
            if (l0 >= a.L0 && l0 <= b.L0)
            {
                double t =
                    a.L0 <= 0 || b.L0 == a.L0
                        ? 0
                        : (Math.Log(l0) - Math.Log(a.L0)) / (Math.Log(b.L0) - Math.Log(a.L0));
                return a.Score + t * (b.Score - a.Score);
            }
        }

        return frontier[^1].Score;
    }

    /// <summary>
    /// The smallest L0 at which the frontier reaches <paramref name="score"/> (linear in log L0), or null
    /// when it
    /// never does.
    /// </summary>
    public static double? L0For(IReadOnlyList<(double L0, double Score)> frontier, double score)
    {
        if (frontier.Count == 0 || score > frontier[^1].Score)
        {
            return null;
        }

        if (score <= frontier[0].Score)
        {
            return frontier[0].L0;
        }

        for (int i = 0; i + 1 < frontier.Count; i++)
        {
            var (a, b) = (frontier[i], frontier[i + 1]);
            if (score >= a.Score && score <= b.Score)
            {
                double t = (score - a.Score) / (b.Score - a.Score);
                return Math.Exp(Math.Log(a.L0) + t * (Math.Log(b.L0) - Math.Log(a.L0)));
            }
        }

        return null;
    }

    /// <summary>Writes results.csv (invariant culture, RFC 4180 quoting).</summary>
    public static string ToCsv(IEnumerable<RunResult> results)
    {
        var rows = results.ToList();
        bool withK = rows.Any(r => r.K != 0);
        var sb = new StringBuilder(string.Join(",", Columns)).Append(withK ? "," + KColumn : "").Append('\n');
        foreach (var r in rows)
        {
            string F(double v) => double.IsNaN(v) ? "" : v.ToString("R", CultureInfo.InvariantCulture);
            string Q(string s) =>
                s.Contains(',', StringComparison.Ordinal) || s.Contains('"', StringComparison.Ordinal)
                    ? "\"" + s.Replace("\"", "\"\"", StringComparison.Ordinal) + "\""
                    : s;
            sb.AppendJoin(
                    ",",
                    Q(r.Site),
                    Q(r.Arm),
                    F(r.L1),
                    r.DSae,
                    r.ItoK,
                    F(r.L0),
                    F(r.LossRecovered),
                    F(r.KlScore),
                    F(r.CeClean),
                    F(r.CeWithSae),
                    F(r.CeWithAblation),
                    F(r.Gamma),
                    F(r.FracAlive),
                    F(r.ExplainedVariance),
                    r.TrainTokens,
                    F(r.TrainSeconds),
                    F(r.EvalSeconds),
                    Q(r.Folder)
                )
                .Append(withK ? "," + r.K.ToString(CultureInfo.InvariantCulture) : "")
                .Append('\n');
        }

        return sb.ToString();
    }

    /// <summary>Reads results.csv back (for reports of finished studies and tests).</summary>
    public static List<RunResult> FromCsv(string text)
    {
        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        string header = lines.Length == 0 ? "" : lines[0].Trim();
        bool withK = header == string.Join(",", Columns) + "," + KColumn;
        if (header != string.Join(",", Columns) && !withK)
        {
            throw new InvalidDataException(
                $"Not a results.csv: the header must be {string.Join(",", Columns)}."
            );
        }

        var results = new List<RunResult>();
        foreach (var line in lines.Skip(1))
        {
            var f = SplitCsv(line.TrimEnd('\r'));
            int expected = Columns.Count + (withK ? 1 : 0);
            if (f.Count != expected)
            {
                throw new InvalidDataException(
                    $"results.csv row has {f.Count} fields, expected {expected}: {line}"
                );
            }

            double D(string s) => s.Length == 0 ? double.NaN : double.Parse(s, CultureInfo.InvariantCulture);
            results.Add(
                new RunResult
                {
                    Site = f[0],
                    Arm = f[1],
                    L1 = D(f[2]),
                    DSae = int.Parse(f[3], CultureInfo.InvariantCulture),
                    ItoK = int.Parse(f[4], CultureInfo.InvariantCulture),
                    L0 = D(f[5]),
                    LossRecovered = D(f[6]),
                    KlScore = D(f[7]),
                    CeClean = D(f[8]),
                    CeWithSae = D(f[9]),
                    CeWithAblation = D(f[10]),
                    Gamma = D(f[11]),
                    FracAlive = D(f[12]),
                    ExplainedVariance = D(f[13]),
                    TrainTokens = long.Parse(f[14], CultureInfo.InvariantCulture),
                    TrainSeconds = D(f[15]),
                    EvalSeconds = D(f[16]),
                    Folder = f[17],
                    K = withK ? int.Parse(f[18], CultureInfo.InvariantCulture) : 0,
                }
            );
        }

        return results;
    }

    private static List<string> SplitCsv(string line)
    {
        var fields = new List<string>();
        var sb = new StringBuilder();
        bool quoted = false;
        for (int i = 0; i < line.Length; i++)
        {
            char c = line[i];
            if (quoted)
            {
                if (c == '"' && i + 1 < line.Length && line[i + 1] == '"')
                {
                    sb.Append('"');
                    i++;
                }
                else if (c == '"')
                {
                    quoted = false;
                }
                else
                {
                    sb.Append(c);
                }
            }
            else if (c == '"')
            {
                quoted = true;
            }
            else if (c == ',')
            {
                fields.Add(sb.ToString());
                sb.Clear();
            }
            else
            {
                sb.Append(c);
            }
        }

        fields.Add(sb.ToString());
        return fields;
    }

    /// <summary>results.json (NaN, for metrics ITO does not have, is written as the string "NaN").</summary>
    public static string ToJson(IEnumerable<RunResult> results) =>
        JsonSerializer.Serialize(
            results,
            new JsonSerializerOptions
            {
                WriteIndented = true,
                NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
            }
        );
}
