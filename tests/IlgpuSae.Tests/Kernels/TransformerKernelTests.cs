using IlgpuSae.Kernels;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Tests.Lm;
using IlgpuSae.Verification;
using Xunit;
using static IlgpuSae.Tests.Kernels.KernelTestSupport;

namespace IlgpuSae.Tests.Kernels;

/// <summary>
/// Each language-model kernel (<c>TransformerKernels</c> and the GELU operators) on its own against its
/// double-precision reference in <see cref="TransformerReference"/>, on every backend and kernel shape: fresh
/// seeded
/// data at odd sizes (1 row, sizes that are not multiples of 16, more work than the CPU accelerator's 256
/// items),
/// outputs poisoned with NaN. A failure names the kernel, not only the model's logits.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class TransformerKernelTests(DeviceFixture devices)
{
    private const double Epsilon = 1.2e-7; // float32 machine epsilon, as Tolerance.Accumulation uses it

    // Rotary variants: heads, head dim, rotary dims, base (full rotation; GPT-NeoX's partial rotation; a
    // ragged one).
    private static readonly Dictionary<
        string,
        (int Heads, int HeadDim, int RotaryDims, double Base)
    > RotaryVariants = new()
    {
        ["full r = dh = 12, base 10000"] = (3, 12, 12, 10000),
        ["partial r = 4 of dh = 12, base 10000"] = (3, 12, 4, 10000),
        ["partial r = 6 of dh = 10, base 500"] = (2, 10, 6, 500),
    };

    public static TheoryData<Target, string, int, int> EmbedCases() =>
        Cases(["token only", "token + position"], [(1, 1), (7, 37), (10, 33)]);

    public static TheoryData<Target, string, int, int> LayerNormCases() =>
        Cases(["separate output", "in place"], [(1, 1), (1, 37), (300, 7), (3, 515)]);

    public static TheoryData<Target, string, int, int> GeluCases() =>
        Cases(
            ["tanh (gelu_new)", "erf (gelu)"],
            [.. KernelChecks.MatrixShapes.Select(s => (s.Rows, s.Cols))]
        );

    public static TheoryData<Target, string, int, int> RotaryCases() =>
        Cases(RotaryVariants.Keys, [(1, 1), (14, 7), (26, 13)]);

    // Head dims × (B, T, H): a single position, a ragged sequence, three sequences, and 288 (sequence, head,
    // position)
    // work items.
    public static TheoryData<Target, string, int, int, int> AttentionCases() =>
        Cases(["dh = 1", "dh = 7", "dh = 10"], [(1, 1, 1), (1, 5, 2), (3, 13, 3), (2, 9, 16)]);

    public static TheoryData<Target, int, int> CrossEntropyCases() =>
        Cases([(1, 1), (1, 97), (300, 7), (5, 515)]);

    public static TheoryData<Target, int, int> KlDivergenceCases() =>
        Cases([(1, 1), (1, 97), (300, 7), (5, 515)]);

    [SkippableTheory]
    [MemberData(nameof(EmbedCases))]
    public void EmbedKernel_matches_its_double_reference(Target target, string variant, int rows, int d)
    {
        var device = devices.Get(target);
        bool positions = variant == "token + position";
        int seed = Seed(target, "Embed", variant, rows, d);
        var random = new Random(seed);
        int vocab = 11,
            seqLen = Math.Max(1, rows / 2 + 1);
        var ids = Enumerable.Range(0, rows).Select(_ => random.Next(vocab)).ToArray();
        var wte = KernelChecks.RandomData(random, vocab * d);
        var wpe = KernelChecks.RandomData(random, seqLen * d);
        using var tids = UploadInts(device, ids);
        using var twte = device.Upload(wte, vocab, d);
        using var twpe = device.Upload(wpe, seqLen, d);
        using var tx = Poisoned(device, rows, d);
        device.Ops.Embed(
            tids.View,
            twte.Data,
            positions ? twpe.Data : twte.Data,
            tx.Data,
            d,
            seqLen,
            positions
        );

        var reference = TransformerReference.Embed(ids, wte, positions ? wpe : null, d, seqLen);
        KernelChecks
            .Compare(
                $"Embed {variant} {rows}x{d}",
                "LM",
                tx.ToArray(),
                reference,
                positions ? Tolerance.Elementwise : Tolerance.Exact
            )
            .ShouldPass(target, seed);
    }

    [SkippableTheory]
    [MemberData(nameof(LayerNormCases))]
    public void LayerNormKernel_matches_its_double_reference(Target target, string variant, int rows, int d)
    {
        var device = devices.Get(target);
        bool inPlace = variant == "in place";
        int seed = Seed(target, "LayerNorm", variant, rows, d);
        var random = new Random(seed);
        // off-centre rows
        var x = KernelChecks.RandomData(random, rows * d).Select(v => 3f * v + 0.5f).ToArray();
        if (rows > 1)
        {
            Array.Fill(x, 1.25f, 0, d); // a constant row: zero variance, y = b up to eps
        }

        var w = KernelChecks.RandomData(random, d);
        var b = KernelChecks.RandomData(random, d);
        const float eps = 1e-5f;
        using var tx = device.Upload(x, rows, d);
        using var tw = device.Upload(w, 1, d);
        using var tb = device.Upload(b, 1, d);
        using var ty = inPlace ? null : Poisoned(device, rows, d);
        device.Ops.LayerNorm(tx.Data, tw.Data, tb.Data, (ty ?? tx).Data, d, eps);

        var r = TransformerReference.LayerNorm(x, w, b, rows, d, eps);
        // Two float32 sums of d terms (mean, variance) and one 1/√(σ² + eps).
        KernelChecks
            .Compare(
                $"LayerNorm {variant} {rows}x{d}",
                "LM",
                (ty ?? tx).ToArray(),
                r.Values,
                i => SumThroughTranscendental(d + 2, r.Magnitudes[i])
            )
            .ShouldPass(target, seed);
    }

    [SkippableTheory]
    [MemberData(nameof(GeluCases))]
    public void GeluKernel_matches_its_double_reference(Target target, string variant, int rows, int cols)
    {
        var device = devices.Get(target);
        bool tanh = variant.StartsWith("tanh", StringComparison.Ordinal);
        int seed = Seed(target, "Gelu", variant, rows, cols);
        // |x| up to 6
        var x = KernelChecks.RandomData(new Random(seed), rows * cols).Select(v => 1.5f * v).ToArray();
        using var tx = device.Upload(x, rows, cols);
        using var ty = Poisoned(device, rows, cols);
        if (tanh)
        {
            device.Ops.Map<GeluTanh>(tx.Data, ty.Data);
        }
        else
        {
            device.Ops.Map<GeluErf>(tx.Data, ty.Data);
        }

        // The erf kernel uses Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7, so ≤ 4.5e-7 in GELU for |x| ≤ 6):
        // inside the
        // transcendental tolerance's absolute part; the two GELUs differ by up to ~2e-4, far outside it.
        var reference = CpuReference.Map(
            x,
            tanh ? TransformerReference.GeluTanh : TransformerReference.GeluErf
        );
        KernelChecks
            .Compare($"Gelu {variant} {rows}x{cols}", "LM", ty.ToArray(), reference, Tolerance.Transcendental)
            .ShouldPass(target, seed);
    }

    [SkippableTheory]
    [MemberData(nameof(RotaryCases))]
    public void RotaryKernel_matches_its_double_reference(Target target, string variant, int rows, int seqLen)
    {
        var device = devices.Get(target);
        var (heads, headDim, rotaryDims, rotaryBase) = RotaryVariants[variant];
        int seed = Seed(target, "Rotary", variant, rows, seqLen);
        var qkv = KernelChecks.RandomData(new Random(seed), rows * 3 * heads * headDim);
        var invFreq = new float[rotaryDims / 2];
        for (int i = 0; i < invFreq.Length; i++)
        {
            // as LanguageModel uploads it
            invFreq[i] = 1f / MathF.Pow((float)rotaryBase, 2f * i / rotaryDims);
        }

        using var tqkv = device.Upload(qkv, rows, 3 * heads * headDim);
        using var tinv = device.Upload(invFreq, 1, invFreq.Length);
        device.Ops.Rotary(tqkv.Data, tinv.Data, rows, seqLen, heads, headDim, rotaryDims);

        var r = TransformerReference.Rotary(qkv, invFreq, rows, seqLen, heads, headDim, rotaryDims);
        // Per rotated value: the angle pos·invFreq is rounded to float32 (|Δθ| ≤ ε·θ), cos/sin are
        // transcendental, and
        // two products and a sum round; all scale with |a| + |b|. Unrotated values (v, dims past r) must be
        // bit-exact.
        double maxAngle = (seqLen - 1) * (double)invFreq[0];
        double perUnit =
            Tolerance.Transcendental.Atol + Tolerance.Transcendental.Rtol + Epsilon * (maxAngle + 2);
        KernelChecks
            .Compare(
                $"Rotary {variant} {rows}x{seqLen}",
                "LM",
                tqkv.ToArray(),
                r.Values,
                i => new Tolerance("rotation (angle rounding, cos/sin)", perUnit * r.Magnitudes[i], 0)
            )
            .ShouldPass(target, seed);
    }

    [SkippableTheory]
    [MemberData(nameof(AttentionCases))]
    public void AttentionKernel_matches_its_double_reference(
        Target target,
        string variant,
        int batch,
        int seqLen,
        int heads
    )
    {
        var device = devices.Get(target);
        int headDim = int.Parse(variant.AsSpan(5), System.Globalization.CultureInfo.InvariantCulture);
        int seed = Seed(target, "Attention", variant, batch, seqLen, heads);
        int rows = batch * seqLen,
            width = heads * headDim;
        var qkv = KernelChecks.RandomData(new Random(seed), rows * 3 * width).Select(v => 2f * v).ToArray();
        float scale = 1f / MathF.Sqrt(headDim);
        using var tqkv = device.Upload(qkv, rows, 3 * width);
        using var scratch = device.Allocate(batch * heads * seqLen, seqLen);
        using var tz = Poisoned(device, rows, width);
        device.Ops.Attention(tqkv.Data, scratch.Data, tz.Data, batch, seqLen, heads, headDim, scale);

        var r = TransformerReference.Attention(qkv, batch, seqLen, heads, headDim, scale);
        // Each score is a float32 dot product of dh terms (error ∝ its magnitude); a score error δ changes
        // the weights by
        // a factor e^{±2δ}; exp and the sums of t + 1 weights and weighted values add their own relative
        // error.
        KernelChecks
            .Compare(
                $"Attention {variant} B={batch} T={seqLen} H={heads}",
                "LM",
                tz.ToArray(),
                r.Z,
                i =>
                {
                    double relative =
                        2 * Tolerance.Accumulation(headDim + 1, r.ScoreMagnitudes[i]).Atol
                        + Tolerance.Transcendental.Rtol
                        + Tolerance.Accumulation(r.Keys[i] + 2, 1).Atol;
                    return new Tolerance(
                        "softmax-weighted sum",
                        relative * r.Magnitudes[i] + 1e-30,
                        Tolerance.Transcendental.Rtol
                    );
                }
            )
            .ShouldPass(target, seed);
    }

    [SkippableTheory]
    [MemberData(nameof(CrossEntropyCases))]
    public void CrossEntropyKernel_matches_its_double_reference(Target target, int rows, int vocab)
    {
        var device = devices.Get(target);
        int seed = Seed(target, "CrossEntropy", rows, vocab);
        var random = new Random(seed);
        var logits = KernelChecks.RandomData(random, rows * vocab).Select(v => 3f * v).ToArray();
        // some not counted
        var targets = Enumerable.Range(0, rows).Select(n => n % 4 == 3 ? -1 : random.Next(vocab)).ToArray();
        using var tl = device.Upload(logits, rows, vocab);
        using var tt = UploadInts(device, targets);
        using var loss = Poisoned(device, 1, rows);
        device.Ops.CrossEntropy(tl.Data, tt.View, loss.Data, vocab);

        var r = TransformerReference.CrossEntropy(logits, targets, vocab);
        KernelChecks
            .Compare(
                $"CrossEntropy {rows}x{vocab}",
                "LM",
                loss.ToArray(),
                r.Values,
                i =>
                    targets[i] < 0
                        ? Tolerance.Exact
                        : new Tolerance(
                            "log-sum-exp",
                            LogSumError(vocab, r.LogSums[i])
                                + 2 * Tolerance.Elementwise.Rtol * r.Magnitudes[i],
                            Tolerance.Elementwise.Rtol
                        )
            )
            .ShouldPass(target, seed);
    }

    [SkippableTheory]
    [MemberData(nameof(KlDivergenceCases))]
    public void KlDivergenceKernel_matches_its_double_reference(Target target, int rows, int vocab)
    {
        var device = devices.Get(target);
        int seed = Seed(target, "KlDivergence", rows, vocab);
        var random = new Random(seed);
        var clean = KernelChecks.RandomData(random, rows * vocab).Select(v => 3f * v).ToArray();
        var noise = KernelChecks.RandomData(random, rows * vocab);
        // Rows of three kinds: patched (a fraction of a nat), unrelated, and identical (KL = 0).
        var patched = clean
            .Select(
                (v, e) =>
                    (e / vocab % 3) switch
                    {
                        0 => v + 0.5f * noise[e],
                        1 => 3f * noise[e],
                        _ => v,
                    }
            )
            .ToArray();
        using var tc = device.Upload(clean, rows, vocab);
        using var tp = device.Upload(patched, rows, vocab);
        using var kl = Poisoned(device, 1, rows);
        device.Ops.KlDivergence(tc.Data, tp.Data, kl.Data, vocab);

        var r = TransformerReference.KlDivergence(clean, patched, vocab);
        // Both log-sum-exps shift every log p_v − log q_v alike (Σ p_v = 1), single roundings act on the
        // log-probabilities,
        // and the weighted sum over V terms carries exp's relative error and its own accumulation error.
        KernelChecks
            .Compare(
                $"KlDivergence {rows}x{vocab}",
                "LM",
                kl.ToArray(),
                r.Values,
                i => new Tolerance(
                    "KL of two log-sum-exps",
                    2 * LogSumError(vocab, r.LogSums[i] / 2)
                        + 2 * Tolerance.Elementwise.Rtol * r.Magnitudes[i]
                        + Tolerance.Accumulation(vocab + 1, r.WeightedSums[i]).Atol
                        + Tolerance.Transcendental.Rtol * r.WeightedSums[i],
                    Tolerance.Elementwise.Rtol
                )
            )
            .ShouldPass(target, seed);
    }

    /// <summary>
    /// Error bound of a float32 log Σ_v exp(x_v − max) over V terms: the sum's relative error (V positive
    /// terms, each
    /// exp with its transcendental relative error) becomes an absolute error of the log, plus the log's own
    /// error.
    /// </summary>
    private static double LogSumError(int vocab, double logSum) =>
        Tolerance.Accumulation(vocab + 1, 1).Atol
        + Tolerance.Transcendental.Rtol
        + Tolerance.Transcendental.Atol
        + Tolerance.Transcendental.Rtol * logSum;
}
