using System.Text.Json;
using System.Text.Json.Serialization;

namespace IlgpuSae.Study.Dashboards;

/// <summary>An example as a dashboard shows it: a token window with the feature's activation per
/// token.</summary>
public sealed record ExampleRecord
{
    /// <summary>The activation at the example's token.</summary>
    public float Value { get; init; }

    /// <summary>The token's index among the tokens counted.</summary>
    public long Row { get; init; }

    /// <summary>The context it is in.</summary>
    public int Context { get; init; }

    /// <summary>Its position in the context (BOS = 0).</summary>
    public int Position { get; init; }

    /// <summary>The window's tokens, as text.</summary>
    public required string[] Tokens { get; init; }

    /// <summary>The feature's activation per window token (0 at special tokens).</summary>
    public required float[] Values { get; init; }

    /// <summary>Where the example's token is in <see cref="Tokens"/>.</summary>
    public int MaxIndex { get; init; }
}

/// <summary>An interval group: examples with bin_min &lt; value ≤ bin_max.</summary>
public sealed record IntervalRecord
{
    /// <summary>Lower edge (exclusive).</summary>
    public float BinMin { get; init; }

    /// <summary>Upper edge (inclusive).</summary>
    public float BinMax { get; init; }

    /// <summary>Fraction of all counted tokens whose activation is in the interval.</summary>
    public double BinContains { get; init; }

    /// <summary>Random examples of the interval.</summary>
    public required ExampleRecord[] Examples { get; init; }
}

/// <summary>A histogram: bin centres and counts.</summary>
public sealed record HistogramRecord
{
    /// <summary>Bin centres min + (j + ½)(max − min)/bins.</summary>
    public required float[] BarValues { get; init; }

    /// <summary>Counts.</summary>
    public required long[] BarHeights { get; init; }
}

/// <summary>The direct logit effect of a feature's output direction.</summary>
public sealed record LogitRecord
{
    /// <summary>Tokens with the largest effect.</summary>
    public required string[] PosStr { get; init; }

    /// <summary>Their effects.</summary>
    public required float[] PosValues { get; init; }

    /// <summary>Tokens with the smallest effect (most negative first).</summary>
    public required string[] NegStr { get; init; }

    /// <summary>Their effects.</summary>
    public required float[] NegValues { get; init; }

    /// <summary>50-bin histogram of the effect over the whole vocabulary.</summary>
    public required HistogramRecord Histogram { get; init; }
}

/// <summary>Top entries of a ranking: indices, a value and a second value per index.</summary>
public sealed record RankedRecord
{
    /// <summary>Indices (input neurons or features).</summary>
    public required int[] Indices { get; init; }

    /// <summary>The value ranked by.</summary>
    public required float[] Values { get; init; }

    /// <summary>The second value (see the field's documentation in docs).</summary>
    public required float[] Second { get; init; }
}

/// <summary>One feature's dashboard: the JSON record the feature page renders.</summary>
public sealed record FeatureRecord
{
    /// <summary>The feature's index in the SAE, or null in a blinded study.</summary>
    public int? Index { get; init; }

    /// <summary>The id the pages use (the index, or an opaque id in a study).</summary>
    public required string Id { get; init; }

    /// <summary>Fraction of counted tokens on which the feature is non-zero.</summary>
    public double Density { get; init; }

    /// <summary>Largest activation.</summary>
    public float MaxAct { get; init; }

    /// <summary>Mean of the non-zero activations.</summary>
    public double MeanNonZero { get; init; }

    /// <summary>Tokens counted.</summary>
    public long Tokens { get; init; }

    /// <summary>Histogram of the non-zero activations.</summary>
    public required HistogramRecord ActivationHistogram { get; init; }

    /// <summary>Top activating examples, largest first.</summary>
    public required ExampleRecord[] Top { get; init; }

    /// <summary>Interval groups, highest first.</summary>
    public required IntervalRecord[] Intervals { get; init; }

    /// <summary>Direct logit effect.</summary>
    public LogitRecord? Logits { get; init; }

    /// <summary>Top 3 entries of the decoder row by value; Second = |value| / ‖row‖₁.</summary>
    public required RankedRecord NeuronAlignment { get; init; }

    /// <summary>Top 3 input neurons by Pearson correlation with the activation; Second = cosine.</summary>
    public required RankedRecord CorrelatedNeurons { get; init; }

    /// <summary>Top 3 other features by Pearson correlation; Second = cosine (null when not
    /// computed).</summary>
    public RankedRecord? CorrelatedFeatures { get; init; }
}

/// <summary>A row of the index page.</summary>
public sealed record IndexEntry
{
    /// <summary>Page id.</summary>
    public required string Id { get; init; }

    /// <summary>Feature index, or null in a study.</summary>
    public int? Index { get; init; }

    /// <summary>Density.</summary>
    public double Density { get; init; }

    /// <summary>Max activation.</summary>
    public float MaxAct { get; init; }

    /// <summary>Tokens of the top examples (what the search box searches, with the id).</summary>
    public required string TopTokens { get; init; }

    /// <summary>Top positive logit tokens.</summary>
    public required string TopLogits { get; init; }
}

/// <summary>JSON settings of dashboard files.</summary>
public static class DashboardJson
{
    /// <summary>snake_case names, NaN as JSON literals refused (windows carry 0 or NaN → null is handled by
    /// the writer).</summary>
    public static JsonSerializerOptions Options { get; } =
        new()
        {
            PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
            DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
            NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        };
}
