using IlgpuSae.Kernels;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Verification;
using Xunit;
using static IlgpuSae.Tests.Kernels.KernelTestSupport;

namespace IlgpuSae.Tests.Kernels;

/// <summary>
/// Each fused SAE kernel (<c>SaeKernels</c>, <c>SparseKernels</c>) on its own against its double-precision
/// reference in
/// <see cref="SaeKernelReference"/>, on every backend and kernel shape: fresh seeded data at odd sizes (1
/// row, sizes that
/// are not multiples of 16, more work than the CPU accelerator's 256 items so the grid-stride loops turn),
/// overwritten
/// outputs poisoned with NaN, outputs the kernel must not touch checked to still be NaN. A failure names the
/// kernel.
/// </summary>
[Collection(DeviceCollection.Name)]
public sealed class SaeKernelTests(DeviceFixture devices)
{
    // (B, M): one row and one feature, one row, a ragged batch with more than 256 elements.
    private static readonly (int, int)[] ElementShapes = [(1, 1), (1, 37), (9, 37)];

    // (B, M): the backward kernels run one work item per feature, so one shape has M > 256.
    private static readonly (int, int)[] FeatureShapes = [(1, 1), (1, 37), (9, 37), (3, 300)];

    // (B, M, d): d = 1 and 5 (narrower than a 16-wide strip), 16 (one strip exactly), 37 (two strips and a
    // tail).
    private static readonly (int, int, int)[] SparseShapes =
    [
        (1, 1, 1),
        (1, 37, 16),
        (9, 37, 37),
        (3, 20, 5),
    ];

    private static readonly string[] GatedVariants = ["tied r_mag", "tied", "untied"];

    private static readonly string[] L1Variants = ["L1", "weighted L1"];

    public static TheoryData<Target, int, int> ReluEncodeCases() => Cases(ElementShapes);

    public static TheoryData<Target, int, int> JumpReluEncodeCases() => Cases(ElementShapes);

    public static TheoryData<Target, string, int, int> JumpReluSupportCases() =>
        Cases(["window", "window, pre-activation loss"], ElementShapes);

    public static TheoryData<Target, string, int, int> GatedEncodeCases() =>
        Cases(GatedVariants, ElementShapes);

    public static TheoryData<Target, string, int, int> ResidualCases() =>
        Cases(["B rows", "2B rows (gated stack)"], [(1, 1), (1, 37), (9, 37)]);

    public static TheoryData<Target, string, int, int> StandardBackwardCases() =>
        Cases(L1Variants, FeatureShapes);

    public static TheoryData<Target, string, int, int> GatedBackwardCases() =>
        Cases(
            [
                .. GatedVariants.SelectMany(g => L1Variants.Select(l => $"{g}, {l}")),
                .. GatedVariants.Select(g => $"{g}, L1, sparse"),
            ],
            FeatureShapes
        );

    public static TheoryData<Target, int, int> DecoderNormPenaltyGradCases() =>
        Cases([(1, 1), (5, 37), (9, 37)]);

    public static TheoryData<Target, int, int> StepsSinceFiredCases() => Cases([(1, 1), (1, 300), (3, 111)]);

    public static TheoryData<Target, int, int> CompactRowsCases() =>
        Cases([(1, 1), (1, 37), (9, 37), (300, 5)]);

    public static TheoryData<Target, int, int> CompactColumnsCases() =>
        Cases([(1, 1), (1, 37), (9, 37), (3, 4111)]);

    public static TheoryData<Target, string, int, int, int> SparseDecodeCases() =>
        Cases(["standard", "gated"], [.. SparseShapes, (130, 20, 37)]);

    public static TheoryData<Target, string, int, int, int> SparsePhiPsiCases() =>
        Cases(["standard", "gated"], [.. SparseShapes, (300, 7, 21)]);

    public static TheoryData<Target, string, int, int, int> SparseWeightGradCases() =>
        Cases(
            [
                "standard",
                "gated tied, frozen aux",
                "gated tied, aux into decoder",
                "gated untied, aux into decoder",
            ],
            [.. SparseShapes, (7, 100, 37)]
        );

    // ------------------------------------------------------------------ encoders

    [SkippableTheory]
    [MemberData(nameof(ReluEncodeCases))]
    public void ReluEncodeKernel_matches_its_double_reference(Target target, int rows, int m)
    {
        var device = devices.Get(target);
        int seed = Seed(target, "ReluEncode", rows, m);
        var random = new Random(seed);
        var u = Quantized(random, rows * m);
        var bEnc = Quantized(random, m);
        TieAtZero(random, u, bEnc, rows, m);
        using var tu = device.Upload(u, rows, m);
        using var tb = device.Upload(bEnc, 1, m);
        using var tf = Poisoned(device, rows, m);
        device.Ops.ReluEncode(tu.Data, tb.Data, tf.Data, m);

        // Quantized inputs: U + b_enc is exact in float32, so the result is too.
        KernelChecks
            .Compare(
                $"ReluEncode {rows}x{m}",
                "SAE",
                tf.ToArray(),
                SaeKernelReference.ReluEncode(u, bEnc, rows, m),
                Tolerance.Exact
            )
            .ShouldPass(target, seed);
    }

    [SkippableTheory]
    [MemberData(nameof(JumpReluEncodeCases))]
    public void JumpReluEncodeKernel_matches_its_double_reference(Target target, int rows, int m)
    {
        var device = devices.Get(target);
        int seed = Seed(target, "JumpReluEncode", rows, m);
        var random = new Random(seed);
        var u = Quantized(random, rows * m);
        var bEnc = Quantized(random, m);
        var threshold = Quantized(random, m); // some negative: ReLU first, so those act as a plain ReLU
        for (int e = 0; e < u.Length; e++)
        {
            // z = θ exactly on a few elements with θ > 0: the strict step H(z − θ) must give 0.
            int i = e % m;
            if (threshold[i] > 0 && random.Next(4) == 0)
            {
                u[e] = threshold[i] - bEnc[i];
            }
        }

        using var tu = device.Upload(u, rows, m);
        using var tb = device.Upload(bEnc, 1, m);
        using var tt = device.Upload(threshold, 1, m);
        using var tf = Poisoned(device, rows, m);
        device.Ops.JumpReluEncode(tu.Data, tb.Data, tt.Data, tf.Data, m);

        KernelChecks
            .Compare(
                $"JumpReluEncode {rows}x{m}",
                "SAE",
                tf.ToArray(),
                SaeKernelReference.JumpReluEncode(u, bEnc, threshold, rows, m),
                Tolerance.Exact
            )
            .ShouldPass(target, seed);
    }

    [SkippableTheory]
    [MemberData(nameof(JumpReluSupportCases))]
    public void JumpReluSupportKernel_matches_its_double_reference(
        Target target,
        string variant,
        int rows,
        int m
    )
    {
        var device = devices.Get(target);
        bool preAct = variant.Contains("pre-activation", StringComparison.Ordinal);
        int seed = Seed(target, "JumpReluSupport", variant, rows, m);
        var random = new Random(seed);
        // ε a power of two and the data on a 1/1024 grid: z − θ and (z − θ)/ε are exact in float32, so the
        // window's edges can be hit exactly.
        const float bandwidth = 0.25f;
        var u = Quantized(random, rows * m);
        var bEnc = Quantized(random, m);
        var threshold = Quantized(random, m, positive: true);
        for (int i = 0; i < m; i++)
        {
            // some θ < ε/2, still on the grid
            threshold[i] =
                i % 3 == 0 ? MathF.Max(1, MathF.Round(threshold[i] * 102.4f)) / 1024 : threshold[i];
        }

        var dead = Enumerable.Range(0, m).Select(i => i % 2 == 0 ? 1f : 0f).ToArray();
        for (int e = 0; e < u.Length; e++)
        {
            // z exactly on θ, on the window's lower edge θ − ε/2 (outside: strict) and just inside it.
            int i = e % m;
            switch (random.Next(5))
            {
                case 0:
                    u[e] = threshold[i] - bEnc[i];
                    break;
                case 1:
                    u[e] = threshold[i] - bandwidth / 2 - bEnc[i];
                    break;
                case 2:
                    u[e] = threshold[i] - bandwidth / 2 + 1f / 1024 - bEnc[i];
                    break;
            }
        }

        using var tu = device.Upload(u, rows, m);
        using var tb = device.Upload(bEnc, 1, m);
        using var tt = device.Upload(threshold, 1, m);
        using var td = device.Upload(dead, 1, m);
        using var ts = Poisoned(device, rows, m);
        device.Ops.JumpReluSupport(tu.Data, tb.Data, tt.Data, td.Data, ts.Data, m, 1f / bandwidth, preAct);

        KernelChecks
            .Compare(
                $"JumpReluSupport {variant} {rows}x{m}",
                "SAE",
                ts.ToArray(),
                SaeKernelReference.JumpReluSupport(u, bEnc, threshold, dead, rows, m, bandwidth, preAct),
                Tolerance.Exact
            )
            .ShouldPass(target, seed);
    }

    [SkippableTheory]
    [MemberData(nameof(GatedEncodeCases))]
    public void GatedEncodeKernel_matches_its_double_reference(Target target, string variant, int rows, int m)
    {
        var device = devices.Get(target);
        bool untied = variant == "untied",
            useRMag = variant == "tied r_mag";
        int seed = Seed(target, "GatedEncode", variant, rows, m);
        var random = new Random(seed);
        var u = Quantized(random, rows * m);
        var um = untied ? Quantized(random, rows * m) : null;
        var bGate = Quantized(random, m);
        var bMag = Quantized(random, m);
        var rMag = useRMag ? KernelChecks.RandomData(random, m).Select(v => 0.5f * v).ToArray() : null;
        TieAtZero(random, u, bGate, rows, m); // π_gate = 0 exactly: H(0) = 0 closes the gate

        using var tu = device.Upload(u, rows, m);
        using var tum = um is null ? null : device.Upload(um, rows, m);
        using var tg = device.Upload(bGate, 1, m);
        using var tm = device.Upload(bMag, 1, m);
        using var tr = rMag is null ? null : device.Upload(rMag, 1, m);
        using var tfa = Poisoned(device, 2 * rows, m);
        var args = new GatedArgs
        {
            Rows = rows,
            M = m,
            UseRMag = useRMag ? 1 : 0,
            Untied = untied ? 1 : 0,
        };
        // As the SAE calls it: Um is U when tied, and without r_mag b_mag stands in for the view the kernel
        // never reads.
        device.Ops.GatedEncode(tu.Data, (tum ?? tu).Data, tg.Data, tm.Data, (tr ?? tm).Data, tfa.Data, args);

        var reference = SaeKernelReference.GatedEncode(u, um, bGate, bMag, rMag, rows, m);
        KernelChecks
            .Compare(
                $"GatedEncode {variant} {rows}x{m} [F; A]",
                "SAE",
                tfa.ToArray(),
                reference.Values,
                i =>
                    useRMag
                        ? SumThroughTranscendental(2, reference.Magnitudes[i])
                        : Tolerance.Accumulation(2, reference.Magnitudes[i])
            )
            .ShouldPass(target, seed);
    }

    // ------------------------------------------------------------------ residual

    [SkippableTheory]
    [MemberData(nameof(ResidualCases))]
    public void ResidualKernel_matches_its_double_reference(Target target, string variant, int batch, int d)
    {
        var device = devices.Get(target);
        int stacked = variant.StartsWith("2B", StringComparison.Ordinal) ? 2 * batch : batch;
        int seed = Seed(target, "Residual", variant, batch, d);
        var random = new Random(seed);
        var xhat = KernelChecks.RandomData(random, stacked * d);
        var x = KernelChecks.RandomData(random, batch * d);
        var bDec = KernelChecks.RandomData(random, d);
        float scale = 2f / batch / d;
        using var th = device.Upload(xhat, stacked, d);
        using var tx = device.Upload(x, batch, d);
        using var tb = device.Upload(bDec, 1, d);
        using var tdelta = Poisoned(device, stacked, d);
        device.Ops.Residual(th.Data, tx.Data, tb.Data, tdelta.Data, d, batch, scale);

        var (refH, refDelta) = SaeKernelReference.Residual(xhat, x, bDec, stacked, d, batch, scale);
        string name = $"Residual {variant} {batch}x{d}";
        KernelChecks
            .Compare(name + " X̂ + b_dec", "SAE", th.ToArray(), refH.Values, Tolerance.Elementwise)
            .ShouldPass(target, seed);
        KernelChecks
            .Compare(
                name + " Δ",
                "SAE",
                tdelta.ToArray(),
                refDelta.Values,
                i => Tolerance.Accumulation(3, refDelta.Magnitudes[i])
            )
            .ShouldPass(target, seed);
    }

    // ------------------------------------------------------------------ element-wise backward

    [SkippableTheory]
    [MemberData(nameof(StandardBackwardCases))]
    public void StandardBackwardKernel_matches_its_double_reference(
        Target target,
        string variant,
        int rows,
        int m
    )
    {
        var device = devices.Get(target);
        bool weighted = variant == "weighted L1";
        int seed = Seed(target, "StandardBackward", variant, rows, m);
        var random = new Random(seed);
        var f = Quantized(random, rows * m).Select(v => Math.Max(v, 0f)).ToArray();
        var phi = KernelChecks.RandomData(random, rows * m);
        var norms = KernelChecks.RandomData(random, m, positive: true);
        var gBEnc = KernelChecks.RandomData(random, m);
        float lambdaOverB = 0.3f / rows;
        using var tf = device.Upload(f, rows, m);
        using var tphi = device.Upload(phi, rows, m);
        using var tn = device.Upload(norms, 1, m);
        using var tdu = Poisoned(device, rows, m);
        using var tg = device.Upload(gBEnc, 1, m);
        using var tsums = Poisoned(device, 3, m);
        device.Ops.StandardBackward(
            tf.Data,
            tphi.Data,
            tn.Data,
            tdu.Data,
            tg.Data,
            tsums.Data,
            new StandardArgs
            {
                Rows = rows,
                M = m,
                LambdaOverB = lambdaOverB,
                WeightedL1 = weighted ? 1 : 0,
            }
        );

        var r = SaeKernelReference.StandardBackward(
            f,
            phi,
            weighted ? norms : null,
            gBEnc,
            rows,
            m,
            lambdaOverB
        );
        string name = $"StandardBackward {variant} {rows}x{m}";
        var sums = tsums.ToArray();
        KernelChecks
            .Compare(
                name + " dU",
                "SAE",
                tdu.ToArray(),
                r.DU.Values,
                i => Tolerance.Accumulation(2, r.DU.Magnitudes[i])
            )
            .ShouldPass(target, seed);
        KernelChecks
            .Compare(
                name + " db_enc",
                "SAE",
                tg.ToArray(),
                r.GradBEnc.Values,
                i => Tolerance.Accumulation(rows + 2, r.GradBEnc.Magnitudes[i])
            )
            .ShouldPass(target, seed);
        KernelChecks
            .Compare(
                name + " colsum(dU)",
                "SAE",
                Slice(sums, 0, m),
                r.ColSumDU.Values,
                i => Tolerance.Accumulation(rows + 1, r.ColSumDU.Magnitudes[i])
            )
            .ShouldPass(target, seed);
        KernelChecks
            .Compare(
                name + " colsum(F)",
                "SAE",
                Slice(sums, 2 * m, m),
                r.ColSumF.Values,
                i => Tolerance.Accumulation(rows, r.ColSumF.Magnitudes[i])
            )
            .ShouldPass(target, seed);
    }

    [SkippableTheory]
    [MemberData(nameof(GatedBackwardCases))]
    public void GatedBackwardKernel_matches_its_double_reference(
        Target target,
        string variant,
        int rows,
        int m
    )
    {
        var device = devices.Get(target);
        bool untied = variant.StartsWith("untied", StringComparison.Ordinal);
        bool useRMag = variant.StartsWith("tied r_mag", StringComparison.Ordinal);
        bool weighted = variant.EndsWith("weighted L1", StringComparison.Ordinal);
        // sparse: the kernel walks only the open-gate rows of each feature, from the column lists
        bool sparse = variant.EndsWith("sparse", StringComparison.Ordinal);
        int seed = Seed(target, "GatedBackward", variant, rows, m);
        var random = new Random(seed);
        var u = Quantized(random, rows * m);
        var um = untied ? Quantized(random, rows * m) : null;
        var phiPsi = KernelChecks.RandomData(random, 2 * rows * m);
        var bGate = Quantized(random, m);
        var bMag = Quantized(random, m);
        var rMag = useRMag ? KernelChecks.RandomData(random, m).Select(v => 0.5f * v).ToArray() : null;
        var norms = KernelChecks.RandomData(random, m, positive: true);
        var gBGate = KernelChecks.RandomData(random, m);
        var gBMag = KernelChecks.RandomData(random, m);
        var gRMag = KernelChecks.RandomData(random, m);
        TieAtZero(random, u, bGate, rows, m);
        if (rMag is not null)
        {
            AwayFromMagnitudeBoundary(u, bGate, bMag, rMag, rows, m);
        }

        float lambdaOverB = 0.3f / rows;
        // Quantized: π_gate = U + b_gate is exact in float32, so the kernel's gate agrees with this one.
        var open = Enumerable.Range(0, rows * m).Select(e => u[e] + bGate[e % m] > 0f ? 1f : 0f).ToArray();
        var (colIdx, colCount) = IndexLists(SaeKernelReference.CompactColumns(open, rows, m), rows);
        using var lists = UploadInts(device, sparse ? [.. colCount, .. colIdx] : [0]);
        using var tu = device.Upload(u, rows, m);
        using var tum = um is null ? null : device.Upload(um, rows, m);
        using var tpp = device.Upload(phiPsi, 2 * rows, m);
        using var tbg = device.Upload(bGate, 1, m);
        using var tbm = device.Upload(bMag, 1, m);
        using var tr = rMag is null ? null : device.Upload(rMag, 1, m);
        using var tn = device.Upload(norms, 1, m);
        using var tdu = Poisoned(device, rows, m);
        // the SAE passes dU here when tied: the kernel must not write it then
        using var tdum = Poisoned(device, rows, m);
        using var tgg = device.Upload(gBGate, 1, m);
        using var tgm = device.Upload(gBMag, 1, m);
        // Without r_mag the SAE passes b_mag's gradient here.
        using var tgr = rMag is null ? Poisoned(device, 1, m) : device.Upload(gRMag, 1, m);
        using var tsums = Poisoned(device, 3, m);
        var args = new GatedArgs
        {
            Rows = rows,
            M = m,
            LambdaOverB = lambdaOverB,
            UseRMag = useRMag ? 1 : 0,
            Untied = untied ? 1 : 0,
            WeightedL1 = weighted ? 1 : 0,
            Sparse = sparse ? 1 : 0,
        };
        device.Ops.GatedBackward(
            tu.Data,
            (tum ?? tu).Data,
            tpp.Data,
            tbg.Data,
            tbm.Data,
            (tr ?? tbm).Data,
            tn.Data,
            tdu.Data,
            tdum.Data,
            tgg.Data,
            tgm.Data,
            tgr.Data,
            tsums.Data,
            lists.View,
            args
        );

        var r = SaeKernelReference.GatedBackward(
            u,
            um,
            phiPsi,
            bGate,
            bMag,
            rMag,
            weighted ? norms : null,
            gBGate,
            gBMag,
            rMag is null ? null : gRMag,
            rows,
            m,
            lambdaOverB
        );
        string name = $"GatedBackward {variant} {rows}x{m}";
        Func<long, Tolerance> Tol(ReferenceOutput o, int terms) =>
            i =>
                useRMag
                    ? SumThroughTranscendental(terms, o.Magnitudes[i])
                    : Tolerance.Accumulation(terms, o.Magnitudes[i]);
        var sums = tsums.ToArray();
        // The sparse kernel writes dU and dUm at open gates only; the rest must stay untouched.
        double[] AtOpenGates(double[] v) =>
            sparse ? [.. v.Select((x, e) => open[e] > 0 ? x : double.NaN)] : v;
        KernelChecks
            .Compare(name + " dU", "SAE", tdu.ToArray(), AtOpenGates(r.DU.Values), Tol(r.DU, 3))
            .ShouldPass(target, seed);
        KernelChecks
            .Compare(
                name + " dUm",
                "SAE",
                tdum.ToArray(),
                r.DUm is null ? Untouched(rows * m) : AtOpenGates(r.DUm.Values),
                r.DUm is null ? _ => Tolerance.Exact : Tol(r.DUm, 1)
            )
            .ShouldPass(target, seed);
        KernelChecks
            .Compare(name + " db_gate", "SAE", tgg.ToArray(), r.GradBGate.Values, Tol(r.GradBGate, rows + 2))
            .ShouldPass(target, seed);
        KernelChecks
            .Compare(name + " db_mag", "SAE", tgm.ToArray(), r.GradBMag.Values, Tol(r.GradBMag, rows + 1))
            .ShouldPass(target, seed);
        KernelChecks
            .Compare(
                name + " dr_mag",
                "SAE",
                tgr.ToArray(),
                r.GradRMag?.Values ?? Untouched(m),
                r.GradRMag is null ? _ => Tolerance.Exact : Tol(r.GradRMag, rows + 2)
            )
            .ShouldPass(target, seed);
        KernelChecks
            .Compare(
                name + " colsum(dU)",
                "SAE",
                Slice(sums, 0, m),
                r.ColSumDU.Values,
                Tol(r.ColSumDU, 2 * rows + 1)
            )
            .ShouldPass(target, seed);
        KernelChecks
            .Compare(
                name + " colsum(dUm)",
                "SAE",
                Slice(sums, m, m),
                r.ColSumDUm.Values,
                Tol(r.ColSumDUm, rows)
            )
            .ShouldPass(target, seed);
        KernelChecks
            .Compare(
                name + " colsum(A)",
                "SAE",
                Slice(sums, 2 * m, m),
                r.ColSumA.Values,
                Tol(r.ColSumA, 2 * rows)
            )
            .ShouldPass(target, seed);
    }

    [SkippableTheory]
    [MemberData(nameof(DecoderNormPenaltyGradCases))]
    public void DecoderNormPenaltyGradKernel_matches_its_double_reference(Target target, int m, int d)
    {
        var device = devices.Get(target);
        int seed = Seed(target, "DecoderNormPenaltyGrad", m, d);
        var random = new Random(seed);
        var wDec = KernelChecks.RandomData(random, m * d);
        if (m > 1)
        {
            Array.Clear(wDec, d, d); // a zero decoder row (norm 0) must be left alone, not divided by 0
        }

        var norms = CpuReference.RowL2Norms(wDec, m, d).Select(v => (float)v).ToArray();
        var colA = KernelChecks.RandomData(random, m, positive: true);
        var gWDec = KernelChecks.RandomData(random, m * d);
        float lambdaOverB = 0.05f;
        using var tw = device.Upload(wDec, m, d);
        using var ta = device.Upload(colA, 1, m);
        using var tn = device.Upload(norms, 1, m);
        using var tg = device.Upload(gWDec, m, d);
        device.Ops.DecoderNormPenaltyGrad(tw, ta.Data, tn.Data, tg, lambdaOverB);

        var r = SaeKernelReference.DecoderNormPenaltyGrad(wDec, colA, norms, gWDec, m, d, lambdaOverB);
        KernelChecks
            .Compare(
                $"DecoderNormPenaltyGrad {m}x{d} dW_dec",
                "SAE",
                tg.ToArray(),
                r.Values,
                i => Tolerance.Accumulation(2, r.Magnitudes[i])
            )
            .ShouldPass(target, seed);
    }

    [SkippableTheory]
    [MemberData(nameof(StepsSinceFiredCases))]
    public void StepsSinceFiredMap_matches_its_double_reference(Target target, int rows, int m)
    {
        var device = devices.Get(target);
        int seed = Seed(target, "StepsSinceFired", rows, m);
        var random = new Random(seed);
        var steps = Enumerable.Range(0, rows * m).Select(_ => (float)random.Next(100_000)).ToArray();
        // zeros, firings
        var counts = KernelChecks.RandomData(random, rows * m).Select(v => MathF.Round(4 * v)).ToArray();
        using var ts = device.Upload(steps, rows, m);
        using var tc = device.Upload(counts, rows, m);
        using var ty = Poisoned(device, rows, m);
        device.Ops.Map(ts.Data, tc.Data, ty.Data, default(StepsSinceFired));

        KernelChecks
            .Compare(
                $"Map2 StepsSinceFired {rows}x{m}",
                "SAE",
                ty.ToArray(),
                SaeKernelReference.StepsSinceFired(steps, counts),
                Tolerance.Exact
            )
            .ShouldPass(target, seed);
    }

    // ------------------------------------------------------------------ sparse kernels

    [SkippableTheory]
    [MemberData(nameof(CompactRowsCases))]
    public void CompactRowsKernel_matches_the_dense_support(Target target, int rows, int m)
    {
        var device = devices.Get(target);
        int seed = Seed(target, "CompactRows", rows, m);
        var active = ActivityWithEmptyAndFullLines(new Random(seed), rows, m, byRow: true);
        using var ta = device.Upload(active, rows, m);
        using var idx = UploadInts(device, Enumerable.Repeat(-1, rows * m).ToArray());
        using var count = UploadInts(device, Enumerable.Repeat(-1, rows).ToArray());
        device.Ops.CompactRows(ta.Data, idx.View, count.View, rows, m);

        var lists = SaeKernelReference.CompactRows(active, rows, m);
        CompareIndexLists($"CompactRows {rows}x{m}", lists, m, Download(device, idx), Download(device, count))
            .ShouldPass(target, seed);
    }

    [SkippableTheory]
    [MemberData(nameof(CompactColumnsCases))]
    public void CompactColumnsKernel_matches_the_dense_support(Target target, int rows, int m)
    {
        var device = devices.Get(target);
        int seed = Seed(target, "CompactColumns", rows, m);
        var active = ActivityWithEmptyAndFullLines(new Random(seed), rows, m, byRow: false);
        using var ta = device.Upload(active, rows, m);
        using var idx = UploadInts(device, Enumerable.Repeat(-1, rows * m).ToArray());
        using var count = UploadInts(device, Enumerable.Repeat(-1, m).ToArray());
        device.Ops.CompactColumns(ta.Data, idx.View, count.View, rows, m);

        var lists = SaeKernelReference.CompactColumns(active, rows, m);
        CompareIndexLists(
                $"CompactColumns {rows}x{m}",
                lists,
                rows,
                Download(device, idx),
                Download(device, count)
            )
            .ShouldPass(target, seed);
    }

    [SkippableTheory]
    [MemberData(nameof(SparseDecodeCases))]
    public void SparseDecodeKernel_matches_the_dense_decoder(
        Target target,
        string variant,
        int batch,
        int m,
        int d
    )
    {
        var device = devices.Get(target);
        bool gated = variant == "gated";
        int seed = Seed(target, "SparseDecode", variant, batch, m, d);
        var random = new Random(seed);
        var (fa, active) = Activations(random, batch, m, gated);
        var wDec = KernelChecks.RandomData(random, m * d);
        var bDec = KernelChecks.RandomData(random, d);
        var x = KernelChecks.RandomData(random, batch * d);
        float scale = 2f / batch / d;
        int stacked = gated ? 2 * batch : batch;
        var (rowIdx, rowCount) = IndexLists(SaeKernelReference.CompactRows(active, batch, m), m);
        using var tfa = device.Upload(fa, stacked, m);
        using var tw = device.Upload(wDec, m, d);
        using var tb = device.Upload(bDec, 1, d);
        using var tx = device.Upload(x, batch, d);
        using var idx = UploadInts(device, rowIdx);
        using var count = UploadInts(device, rowCount);
        using var th = Poisoned(device, stacked, d);
        using var tdelta = Poisoned(device, stacked, d);
        device.Ops.SparseDecode(
            tfa.Data,
            tw.Data,
            tb.Data,
            tx.Data,
            idx.View,
            count.View,
            th.Data,
            tdelta.Data,
            new SparseArgs
            {
                Rows = batch,
                M = m,
                D = d,
                Scale = scale,
                Gated = gated ? 1 : 0,
            }
        );

        var (refH, refDelta) = SaeKernelReference.SparseDecode(fa, wDec, bDec, x, batch, m, d, gated, scale);
        string name = $"SparseDecode {variant} B={batch} M={m} d={d}";
        KernelChecks
            .Compare(
                name + " X̂",
                "SAE sparse",
                th.ToArray(),
                refH.Values,
                i => Tolerance.Accumulation(m + 1, refH.Magnitudes[i])
            )
            .ShouldPass(target, seed);
        KernelChecks
            .Compare(
                name + " Δ",
                "SAE sparse",
                tdelta.ToArray(),
                refDelta.Values,
                i => Tolerance.Accumulation(m + 3, refDelta.Magnitudes[i])
            )
            .ShouldPass(target, seed);
    }

    [SkippableTheory]
    [MemberData(nameof(SparsePhiPsiCases))]
    public void SparsePhiPsiKernel_matches_the_dense_product_at_active_entries(
        Target target,
        string variant,
        int batch,
        int m,
        int d
    )
    {
        var device = devices.Get(target);
        bool gated = variant == "gated";
        int seed = Seed(target, "SparsePhiPsi", variant, batch, m, d);
        var random = new Random(seed);
        var (_, active) = Activations(random, batch, m, gated);
        int stacked = gated ? 2 * batch : batch;
        var delta = KernelChecks.RandomData(random, stacked * d);
        var wDec = KernelChecks.RandomData(random, m * d);
        var (rowIdx, rowCount) = IndexLists(SaeKernelReference.CompactRows(active, batch, m), m);
        using var tdelta = device.Upload(delta, stacked, d);
        using var tw = device.Upload(wDec, m, d);
        using var idx = UploadInts(device, rowIdx);
        using var count = UploadInts(device, rowCount);
        using var tpp = Poisoned(device, stacked, m);
        device.Ops.SparsePhiPsi(
            tdelta.Data,
            tw.Data,
            idx.View,
            count.View,
            tpp.Data,
            new SparseArgs
            {
                Rows = batch,
                M = m,
                D = d,
                Gated = gated ? 1 : 0,
            }
        );

        // The dense [Φ; Ψ] at active (b, i) — row b's activity also selects Ψ's row B + b — and untouched
        // elsewhere.
        var dense = SaeKernelReference.SparsePhiPsi(delta, wDec, stacked, m, d);
        var expected = dense.Values.Select((v, e) => active[e % (batch * m)] > 0 ? v : double.NaN).ToArray();
        KernelChecks
            .Compare(
                $"SparsePhiPsi {variant} B={batch} M={m} d={d}",
                "SAE sparse",
                tpp.ToArray(),
                expected,
                i => Tolerance.Accumulation(d + 1, dense.Magnitudes[i])
            )
            .ShouldPass(target, seed);
    }

    [SkippableTheory]
    [MemberData(nameof(SparseWeightGradCases))]
    public void SparseWeightGradKernel_matches_the_dense_gradients(
        Target target,
        string variant,
        int batch,
        int m,
        int d
    )
    {
        var device = devices.Get(target);
        bool gated = variant.StartsWith("gated", StringComparison.Ordinal);
        bool untied = variant.Contains("untied", StringComparison.Ordinal);
        bool aux = variant.EndsWith("aux into decoder", StringComparison.Ordinal);
        int seed = Seed(target, "SparseWeightGrad", variant, batch, m, d);
        var random = new Random(seed);
        var (fa, active) = Activations(random, batch, m, gated);
        int stacked = gated ? 2 * batch : batch;
        // dU and dUm vanish wherever the feature is inactive (closed gate, or F = 0).
        var du = KernelChecks
            .RandomData(random, batch * m)
            .Select((v, e) => active[e] > 0 ? v : 0f)
            .ToArray();
        var dum = untied
            ? KernelChecks.RandomData(random, batch * m).Select((v, e) => active[e] > 0 ? v : 0f).ToArray()
            : null;
        var xc = KernelChecks.RandomData(random, batch * d);
        var delta = KernelChecks.RandomData(random, stacked * d);
        var gWEnc = KernelChecks.RandomData(random, d * m);
        var gWMag = KernelChecks.RandomData(random, d * m);
        var gWDec = KernelChecks.RandomData(random, m * d);
        var (colIdx, colCount) = IndexLists(SaeKernelReference.CompactColumns(active, batch, m), batch);
        using var txc = device.Upload(xc, batch, d);
        using var tdu = device.Upload(du, batch, m);
        using var tdum = dum is null ? null : device.Upload(dum, batch, m);
        using var tfa = device.Upload(fa, stacked, m);
        using var tdelta = device.Upload(delta, stacked, d);
        using var idx = UploadInts(device, colIdx);
        using var count = UploadInts(device, colCount);
        using var tge = device.Upload(gWEnc, d, m);
        // the SAE passes dW_enc here when tied
        using var tgm = untied ? device.Upload(gWMag, d, m) : Poisoned(device, d, m);
        using var tgd = device.Upload(gWDec, m, d);
        device.Ops.SparseWeightGrad(
            txc.Data,
            tdu.Data,
            (tdum ?? tdu).Data,
            tfa.Data,
            tdelta.Data,
            idx.View,
            count.View,
            tge.Data,
            tgm.Data,
            tgd.Data,
            new SparseArgs
            {
                Rows = batch,
                M = m,
                D = d,
                Gated = gated ? 1 : 0,
                Untied = untied ? 1 : 0,
                AuxIntoDecoder = aux ? 1 : 0,
            }
        );

        var r = SaeKernelReference.SparseWeightGrad(
            xc,
            du,
            dum,
            fa,
            delta,
            gWEnc,
            untied ? gWMag : null,
            gWDec,
            batch,
            m,
            d,
            aux
        );
        string name = $"SparseWeightGrad {variant} B={batch} M={m} d={d}";
        KernelChecks
            .Compare(
                name + " dW_enc",
                "SAE sparse",
                tge.ToArray(),
                r.GradWEnc.Values,
                i => Tolerance.Accumulation(batch + 1, r.GradWEnc.Magnitudes[i])
            )
            .ShouldPass(target, seed);
        KernelChecks
            .Compare(
                name + " dW_mag",
                "SAE sparse",
                tgm.ToArray(),
                r.GradWMag?.Values ?? Untouched(d * m),
                r.GradWMag is null
                    ? _ => Tolerance.Exact
                    : i => Tolerance.Accumulation(batch + 1, r.GradWMag.Magnitudes[i])
            )
            .ShouldPass(target, seed);
        KernelChecks
            .Compare(
                name + " dW_dec",
                "SAE sparse",
                tgd.ToArray(),
                r.GradWDec.Values,
                i => Tolerance.Accumulation(2 * batch + 1, r.GradWDec.Magnitudes[i])
            )
            .ShouldPass(target, seed);
    }

    // ------------------------------------------------------------------ data

    /// <summary>Sets U = −b on about one element in six, so that U + b = 0 exactly (the strict gate/ReLU
    /// tie).</summary>
    private static void TieAtZero(Random random, float[] u, float[] b, int rows, int m)
    {
        for (int e = 0; e < rows * m; e++)
        {
            if (random.Next(6) == 0)
            {
                u[e] = -b[e % m];
            }
        }
    }

    /// <summary>
    /// Moves U (in steps of 2⁻⁶, staying quantized) until π_mag = e^{r}·U + b_mag is clearly away from 0
    /// wherever the gate
    /// is open: there float32 e^{r} may legitimately decide 1[π_mag &gt; 0] differently from double.
    /// </summary>
    private static void AwayFromMagnitudeBoundary(
        float[] u,
        float[] bGate,
        float[] bMag,
        float[] rMag,
        int rows,
        int m
    )
    {
        for (int e = 0; e < rows * m; e++)
        {
            int i = e % m;
            double s = Math.Exp(rMag[i]);
            while (
                (double)u[e] + bGate[i] > 0
                && Math.Abs(s * u[e] + bMag[i]) < 1e-4 * (Math.Abs(s * u[e]) + Math.Abs(bMag[i])) + 1e-6
            )
            {
                u[e] += 1f / 64;
            }
        }
    }

    /// <summary>
    /// Encoder outputs with the structure the sparse kernels rely on: standard F = ReLU(·) [B, M] active
    /// where F &gt; 0;
    /// gated [F; A] [2B, M] with A = ReLU(π_gate) and F nonzero only where the gate is open (A &gt; 0), which
    /// is the
    /// activity. About a third of the features are inactive.
    /// </summary>
    private static (float[] Fa, float[] Active) Activations(Random random, int batch, int m, bool gated)
    {
        var first = KernelChecks.RandomData(random, batch * m).Select(v => Math.Max(v, 0f)).ToArray();
        if (!gated)
        {
            return (first, first);
        }

        var fa = new float[2 * batch * m];
        for (int e = 0; e < batch * m; e++)
        {
            fa[batch * m + e] = first[e];
            // gate open, π_mag ≤ 0 sometimes
            fa[e] = first[e] > 0 ? Math.Max((float)(random.NextDouble() * 2 - 0.5), 0f) : 0f;
        }

        return (fa, first);
    }

    /// <summary>Random activity in which, where there is room, one line (row or column) is empty and one is
    /// full.</summary>
    private static float[] ActivityWithEmptyAndFullLines(Random random, int rows, int m, bool byRow)
    {
        var active = KernelChecks.RandomData(random, rows * m); // negatives and exact zeros are inactive
        int lines = byRow ? rows : m;
        if (lines >= 3)
        {
            for (int k = 0; k < (byRow ? m : rows); k++)
            {
                active[byRow ? 0 * m + k : k * m + 0] = 0f;
                active[byRow ? 1 * m + k : k * m + 1] = 0.5f;
            }
        }

        return active;
    }

    /// <summary>
    /// Index lists in the kernels' layout (list k at [k·stride …], counts apart). Entries past a list's end
    /// hold the
    /// list's first index (or 0): a kernel that read past the count would count a row or feature twice and
    /// fail.
    /// </summary>
    private static (int[] Index, int[] Count) IndexLists(int[][] lists, int stride)
    {
        var index = new int[lists.Length * stride];
        for (int k = 0; k < lists.Length; k++)
        {
            for (int s = 0; s < stride; s++)
            {
                index[k * stride + s] =
                    s < lists[k].Length ? lists[k][s]
                    : lists[k].Length > 0 ? lists[k][0]
                    : 0;
            }
        }

        return (index, [.. lists.Select(l => l.Length)]);
    }

    /// <summary>
    /// Compares a compaction kernel's output with the reference lists: counts, the listed indices in order,
    /// and the
    /// entries past each list's end still holding the −1 they were filled with.
    /// </summary>
    private static CheckResult CompareIndexLists(
        string name,
        int[][] lists,
        int stride,
        int[] index,
        int[] count
    )
    {
        var (expectedIndex, expectedCount) = IndexLists(lists, stride);
        for (int k = 0; k < lists.Length; k++)
        {
            for (int s = lists[k].Length; s < stride; s++)
            {
                expectedIndex[k * stride + s] = -1;
            }
        }

        var counts = KernelChecks.Compare(
            name + " counts",
            "SAE sparse",
            [.. count.Select(v => (float)v)],
            [.. expectedCount.Select(v => (double)v)],
            Tolerance.Exact
        );
        return counts.Passed
            ? KernelChecks.Compare(
                name + " indices",
                "SAE sparse",
                [.. index.Select(v => (float)v)],
                [.. expectedIndex.Select(v => (double)v)],
                Tolerance.Exact
            )
            : counts;
    }
}
