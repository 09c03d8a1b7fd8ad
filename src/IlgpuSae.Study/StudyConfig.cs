using System.Text.Json;
using System.Text.Json.Serialization;

namespace IlgpuSae.Study;

/// <summary>The sweep arms: the paper's two architectures, its ablations (§5.1) and baseline + rescale &amp;
/// shift (§5.2).</summary>
public static class StudyArms
{
    /// <summary>Gated SAE, paper recipe.</summary>
    public const string Gated = "gated";

    /// <summary>Baseline ReLU + L1 SAE at 1.5× the gated width (equal compute).</summary>
    public const string Standard = "standard";

    /// <summary>Gated with the auxiliary loss through the live decoder.</summary>
    public const string UnfrozenAux = "gated-unfrozen-aux";

    /// <summary>Gated without r_mag (W_mag = W_gate).</summary>
    public const string NoRMag = "gated-no-rmag";

    /// <summary>Gated with independent gate and magnitude encoders.</summary>
    public const string Untied = "gated-untied";

    /// <summary>The frozen baseline of the same λ with learned per-feature rescale and shift.</summary>
    public const string RescaleShift = "standard-rescale-shift";

    /// <summary>Every arm, in report order.</summary>
    public static IReadOnlyList<string> All { get; } =
    [Gated, Standard, UnfrozenAux, NoRMag, Untied, RescaleShift];

    /// <summary>Whether the arm is a gated SAE trained from scratch.</summary>
    public static bool IsGated(string arm) => arm is Gated or UnfrozenAux or NoRMag or Untied;

    /// <summary>The training recipe of an arm (all use the paper's mode).</summary>
    /// <exception cref="ArgumentException">The arm is unknown.</exception>
    public static Training.SaeRecipe Recipe(string arm) =>
        arm switch
        {
            Gated => Training.SaeRecipe.Parse("gated"),
            Standard => Training.SaeRecipe.Parse("standard"),
            UnfrozenAux => Training.SaeRecipe.Parse("gated", ablation: "unfrozen-aux"),
            NoRMag => Training.SaeRecipe.Parse("gated", ablation: "no-rmag"),
            Untied => Training.SaeRecipe.Parse("gated", ablation: "untied"),
            RescaleShift => Training.SaeRecipe.Parse("gated", rescaleShift: true),
            _ => throw new ArgumentException($"Unknown study arm '{arm}' (arms: {string.Join(", ", All)})."),
        };
}

/// <summary>
/// A reproduction study: which model, sites, arms and λ values, how long each SAE trains, how it is
/// evaluated,
/// and the inference-time-optimisation sweep. Written to <c>study.json</c> in the output folder; a re-run
/// with the same settings skips finished runs, and different settings in the same folder are refused.
/// </summary>
public sealed record StudyConfig
{
    /// <summary>Hugging Face model folder.</summary>
    [JsonPropertyName("model")]
    public required string Model { get; init; }

    /// <summary>Corpus the activations for training come from.</summary>
    [JsonPropertyName("train_corpus")]
    public required string TrainCorpus { get; init; }

    /// <summary>Held-out corpus for evaluation (loss recovered and reconstruction metrics).</summary>
    [JsonPropertyName("eval_corpus")]
    public required string EvalCorpus { get; init; }

    /// <summary>Hook sites.</summary>
    [JsonPropertyName("sites")]
    public required IReadOnlyList<string> Sites { get; init; }

    /// <summary>Arms (see <see cref="StudyArms"/>).</summary>
    [JsonPropertyName("arms")]
    public IReadOnlyList<string> Arms { get; init; } = [StudyArms.Gated, StudyArms.Standard];

    /// <summary>Sites where the arms other than gated and standard run (null = every site; the paper ran its
    /// ablations on one site).</summary>
    [JsonPropertyName("ablation_sites")]
    public IReadOnlyList<string>? AblationSites { get; init; }

    /// <summary>The arms that run at <paramref name="site"/>.</summary>
    public IReadOnlyList<string> ArmsAt(string site) =>
        AblationSites is null || AblationSites.Contains(site)
            ? Arms
            : [.. Arms.Where(a => a is StudyArms.Gated or StudyArms.Standard)];

    /// <summary>λ values of the gated arms (and the ablations).</summary>
    [JsonPropertyName("l1_gated")]
    public required IReadOnlyList<double> L1Gated { get; init; }

    /// <summary>λ values of the baseline (and of its rescale &amp; shift arm).</summary>
    [JsonPropertyName("l1_standard")]
    public required IReadOnlyList<double> L1Standard { get; init; }

    /// <summary>Gated dictionary size as a multiple of the site width.</summary>
    [JsonPropertyName("expansion")]
    public int Expansion { get; init; } = 4;

    /// <summary>Baseline dictionary size relative to the gated one (the paper's equal-compute 1.5).</summary>
    [JsonPropertyName("baseline_width_factor")]
    public double BaselineWidthFactor { get; init; } = 1.5;

    /// <summary>Training rows per SAE.</summary>
    [JsonPropertyName("train_tokens")]
    public long TrainTokens { get; init; } = 1 << 20;

    /// <summary>Rows per training step.</summary>
    [JsonPropertyName("batch_size")]
    public int BatchSize { get; init; } = 1024;

    /// <summary>Peak learning rate.</summary>
    [JsonPropertyName("lr")]
    public double LearningRate { get; init; } = 1e-3;

    /// <summary>Learning-rate warm-up steps.</summary>
    [JsonPropertyName("lr_warmup")]
    public int LrWarmup { get; init; } = 50;

    /// <summary>λ warm-up steps.</summary>
    [JsonPropertyName("l1_warmup")]
    public int L1Warmup { get; init; } = 50;

    /// <summary>Context length of the language model.</summary>
    [JsonPropertyName("context")]
    public int Context { get; init; } = 128;

    /// <summary>Held-out tokens for evaluation.</summary>
    [JsonPropertyName("eval_tokens")]
    public int EvalTokens { get; init; } = 8192;

    /// <summary>Contexts per language-model forward pass.</summary>
    [JsonPropertyName("lm_batch")]
    public int LmBatch { get; init; } = 16;

    /// <summary>Seed of SAE initialisation and data order.</summary>
    [JsonPropertyName("seed")]
    public ulong Seed { get; init; } = 42;

    /// <summary>Site for inference-time optimisation (null = none).</summary>
    [JsonPropertyName("ito_site")]
    public string? ItoSite { get; init; }

    /// <summary>Target L0 values of the ITO sweep.</summary>
    [JsonPropertyName("ito_l0")]
    public IReadOnlyList<int> ItoL0 { get; init; } = [];

    /// <summary>Which λ runs give decoders to ITO: indices into the λ lists (default: the middle
    /// one).</summary>
    [JsonPropertyName("ito_runs")]
    public IReadOnlyList<int>? ItoRuns { get; init; }

    private static readonly JsonSerializerOptions Strict = new()
    {
        WriteIndented = true,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    };

    /// <summary>Checks the settings.</summary>
    /// <exception cref="ArgumentException">An unknown arm, an empty list, a non-positive size, or an ITO site
    /// that is not swept.</exception>
    public void Validate()
    {
        var unknown = Arms.Where(a => !StudyArms.All.Contains(a)).ToArray();
        if (unknown.Length > 0)
        {
            throw new ArgumentException(
                $"Unknown arm(s) {string.Join(", ", unknown)}; known: {string.Join(", ", StudyArms.All)}."
            );
        }

        if (Sites.Count == 0 || Arms.Count == 0 || L1Gated.Count == 0 || L1Standard.Count == 0)
        {
            throw new ArgumentException("A study needs at least one site, arm, gated λ and baseline λ.");
        }

        if (L1Gated.Concat(L1Standard).Any(l => !(l >= 0) || double.IsInfinity(l)))
        {
            throw new ArgumentException("λ values must be finite and ≥ 0.");
        }

        if (
            Expansion <= 0
            || !(BaselineWidthFactor > 0)
            || TrainTokens < BatchSize
            || BatchSize <= 0
            || EvalTokens <= 0
            || Context < 2
            || LmBatch <= 0
        )
        {
            throw new ArgumentException(
                "Expansion, width factor, batch size, eval tokens, context and lm_batch must be positive, and train_tokens at least one batch."
            );
        }

        if (Arms.Contains(StudyArms.RescaleShift) && !Arms.Contains(StudyArms.Standard))
        {
            throw new ArgumentException(
                $"The {StudyArms.RescaleShift} arm wraps the {StudyArms.Standard} runs; include both."
            );
        }

        if (AblationSites is not null && AblationSites.Any(a => !Sites.Contains(a)))
        {
            throw new ArgumentException("ablation_sites must be among the sites.");
        }

        if (ItoSite is not null && (!Sites.Contains(ItoSite) || ItoL0.Count == 0 || ItoL0.Any(k => k < 1)))
        {
            throw new ArgumentException(
                "ito_site must be one of the sites, with at least one positive ito_l0."
            );
        }
    }

    /// <summary>Reads a study file; unknown keys are an error.</summary>
    public static StudyConfig Load(string path)
    {
        try
        {
            var config =
                JsonSerializer.Deserialize<StudyConfig>(File.ReadAllText(path), Strict)
                ?? throw new InvalidDataException($"{path} is empty.");
            config.Validate();
            return config;
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path} is not a valid study file: {e.Message}", e);
        }
    }

    /// <summary>The settings as JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, Strict);

    /// <summary>
    /// The default study on the bundled model, sized to finish in under ten minutes on two CPU cores with
    /// ILGPU's CPU accelerator: both architectures, three λ each (the baseline's lower, so that both cover
    /// about
    /// the same L0 range), two sites, ITO on one.
    /// </summary>
    public static StudyConfig Reduced(string dataFolder) =>
        new()
        {
            Model = Path.Combine(dataFolder, "lm"),
            TrainCorpus = Path.Combine(dataFolder, "corpus", "train.txt.gz"),
            EvalCorpus = Path.Combine(dataFolder, "corpus", "heldout.txt.gz"),
            Sites = ["blocks.0.hook_mlp_out", "blocks.1.hook_resid_post"],
            Arms = [StudyArms.Gated, StudyArms.Standard],
            L1Gated = [1, 3, 9],
            L1Standard = [0.5, 1.5, 4],
            Expansion = 4,
            TrainTokens = 1 << 17,
            BatchSize = 512,
            LearningRate = 3e-3,
            LrWarmup = 20,
            L1Warmup = 20,
            EvalTokens = 2048,
            ItoSite = "blocks.0.hook_mlp_out",
            ItoL0 = [4, 16, 48],
        };

    /// <summary>
    /// The full study on the bundled model (docs/reproduction.md): four sites with both architectures, the
    /// ablations
    /// and rescale &amp; shift at one site (as the paper), five λ each, 8× the training tokens (2^20), ITO on
    /// the MLP output.
    /// </summary>
    public static StudyConfig Full(string dataFolder) =>
        Reduced(dataFolder) with
        {
            // blocks.0.attn.hook_z, not blocks.1's: zero-ablating layer 1's attention output barely changes
            // this model's
            // loss (4.85 vs 4.90 nats clean), so loss recovered would divide by almost nothing there.
            Sites =
            [
                "blocks.0.mlp.hook_post",
                "blocks.0.hook_mlp_out",
                "blocks.0.attn.hook_z",
                "blocks.1.hook_resid_post",
            ],
            Arms = StudyArms.All,
            AblationSites = ["blocks.0.hook_mlp_out"],
            L1Gated = [0.5, 1, 2, 4, 8],
            L1Standard = [0.35, 0.7, 1.4, 2.8, 5],
            TrainTokens = 1 << 20,
            EvalTokens = 16384,
            ItoL0 = [2, 4, 8, 16, 32, 64],
            ItoRuns = [1, 3],
        };
}
