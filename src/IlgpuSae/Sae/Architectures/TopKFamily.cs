using ILGPU;
using IlgpuSae.Kernels;
using IlgpuSae.Tensors;

namespace IlgpuSae.Sae;

/// <summary>
/// The trainer's dead-feature counters as the AuxK loss reads them: <paramref name="StepsSinceFired"/> [M]
/// (steps since each feature last fired, before the current batch), the window in steps, and whether the
/// current batch counts (dictionary_learning: dead = not fired now and <c>steps + 1 ≥ window</c>; SAELens:
/// <c>steps &gt; window</c>).
/// </summary>
public sealed record DeadFeatureWindow(
    ArrayView<float> StepsSinceFired,
    float WindowSteps,
    bool IncludeCurrentBatch
);

/// <summary>
/// What TopK, BatchTopK and Matryoshka share: validation of k, the selection-masked backward with the AuxK
/// loss (Gao et al. 2024, App. A.2), and its loss value.
/// </summary>
internal static class TopKFamily
{
    private const string DeadName = "auxk_dead";
    private const string FiredName = "auxk_fired";
    private const string StatsName = "auxk_stats";
    private const string CodesName = "auxk_codes";
    private const string ReconName = "auxk_xhat";
    private const string DeltaName = "auxk_delta";
    private const string PsiName = "auxk_psi";
    private const string DevName = "auxk_column_deviation";
    private const string ActiveName = "auxk_active";

    public static void ValidateK(SaeConfig config, string family)
    {
        if (config.Untied || !config.UseRMag)
        {
            throw new ArgumentException(
                $"The untied and no-r_mag options apply to gated SAEs only, not to {family}."
            );
        }

        if (config.K < 1 || config.K > config.DSae)
        {
            throw new ArgumentException(
                $"A {family} SAE needs 1 ≤ k ≤ d_sae = {config.DSae}, got k = {config.K}."
            );
        }
    }

    /// <summary>
    /// SAELens's <c>rescale_acts_by_decoder_norm</c> before a selection: the decoder row norms n into
    /// <see cref="SaeWorkspace.DecoderNorms"/> and <c>U ⊙= n</c>, so the selection (and the AuxK selection
    /// after it) ranks <c>S = U ⊙ n</c>. False (nothing done) without the flag.
    /// </summary>
    public static bool RescaleForSelection(SparseAutoencoder sae, SaeWorkspace ws)
    {
        if (!sae.Config.RescaleActsByDecoderNorm)
        {
            return false;
        }

        var ops = sae.Device.Ops;
        ops.RowL2Norms(sae.Decoder, ws.DecoderNorms.Data);
        ops.MapBroadcastRows<Multiply>(ws.U, ws.DecoderNorms.Data, ws.U);
        return true;
    }

    /// <summary>
    /// Feature-sharded top-k (OpenAI's sharded TopK): <paramref name="f"/> [B, M/N] holds this block's own
    /// per-row selection of at most <paramref name="k"/> values; every block's candidates are exchanged
    /// (B·k floats each) and each row keeps its k largest over all blocks, ties to the lowest feature index
    /// (the blocks are in rank order), as one process selecting over all M features would. A no-op in one
    /// process or data-parallel.
    /// </summary>
    public static void MergeAcrossShards(
        SparseAutoencoder sae,
        SaeWorkspace ws,
        MatrixView f,
        int k,
        string name
    )
    {
        if (sae.Collectives is not { RowsSplit: false } ranks)
        {
            return;
        }

        int b = ws.Batch,
            m = sae.DSae;
        var ops = sae.Device.Ops;
        var values = ws.Scratch(name + "_candidates", b, k);
        ops.RowNonZeros(f.Data, values.Data, b, m, k);
        var all = ranks.AllGather(values.ToArray());
        var threshold = new float[b];
        var ties = new float[b];
        var pool = new List<float>(k * all.Length);
        for (int row = 0; row < b; row++)
        {
            pool.Clear();
            foreach (var block in all)
            {
                for (int j = 0; j < k && !float.IsNaN(block[row * k + j]); j++)
                {
                    pool.Add(block[row * k + j]);
                }
            }

            if (pool.Count <= k)
            {
                threshold[row] = float.NegativeInfinity; // every candidate is kept
                continue;
            }

            pool.Sort((x, y) => y.CompareTo(x));
            float t = pool[k - 1];
            int need = k - pool.Count(v => v > t);
            for (int r = 0; r <= ranks.Rank; r++)
            {
                int equal = 0;
                for (int j = 0; j < k && !float.IsNaN(all[r][row * k + j]); j++)
                {
                    equal += all[r][row * k + j] == t ? 1 : 0;
                }

                int taken = Math.Min(equal, need);
                need -= taken;
                if (r == ranks.Rank)
                {
                    ties[row] = taken;
                }
            }

            threshold[row] = t;
        }

        var rowThreshold = ws.Scratch(name + "_row_threshold", 1, b);
        var rowTies = ws.Scratch(name + "_row_ties", 1, b);
        rowThreshold.CopyFrom(threshold);
        rowTies.CopyFrom(ties);
        ops.KeepAboveRowThreshold(f.Data, rowThreshold.Data, rowTies.Data, b, m);
    }

    /// <summary>The codes of a rescaled selection back in the decoder's space, <c>codes ⊘= n</c> (SAELens
    /// decodes <c>F ⊘ n</c>), zeros kept.</summary>
    public static void UnscaleCodes(SparseAutoencoder sae, SaeWorkspace ws, MatrixView codes) =>
        sae.Device.Ops.MapBroadcastRows<DivideNonZero>(codes, ws.DecoderNorms.Data, codes);

    /// <summary>
    /// The backward pass of the family with <paramref name="phi"/> = ∂L/∂f through the reconstructions
    /// (Φ, or Matryoshka's sum over levels), plus the AuxK terms when the loss asks for them and the trainer
    /// supplied dead-feature counters. <see cref="SaeWorkspace.U"/> holds the raw pre-activations
    /// <c>U + b_enc</c> (times the decoder norms with <see cref="SaeConfig.RescaleActsByDecoderNorm"/>).
    /// </summary>
    public static void Backward(
        SparseAutoencoder sae,
        SaeWorkspace ws,
        MatrixView phi,
        float lambdaOverB,
        bool weightedL1
    )
    {
        var ops = sae.Device.Ops;
        var aux = ws.Loss?.AuxK;
        bool withAux = aux is not null && aux.Coefficient > 0 && sae.AuxDeadFeatures is not null;
        var a = ws.F;
        var psi = ws.F;
        MatrixView? duAux = null;
        if (withAux)
        {
            (a, psi, duAux) = AuxK(sae, ws, aux!, sae.AuxDeadFeatures!);
        }

        ops.Fill(ws.Scratch(ActiveName, 1, 1).Data, withAux ? 1f : 0f); // see AuxiliaryLoss
        var args = new FamilyBackwardArgs
        {
            Rows = ws.Batch,
            M = sae.DSae,
            LambdaOverB = lambdaOverB,
            WeightedL1 = weightedL1 ? 1 : 0,
            HasAux = withAux ? 1 : 0,
        };
        var gBEnc = sae.Parameters.Gradient("b_enc").Data;
        if (sae.LastStepWasSparse)
        {
            // Only the selected entries: the sparse weight gradients read dU nowhere else.
            ops.TopKFamilySparseBackward(
                ws.F.Data,
                phi.Data,
                a.Data,
                psi.Data,
                ws.DecoderNorms.Data,
                ws.DU.Data,
                gBEnc,
                ws.ColumnSums.Data,
                ws.ColIdx,
                ws.ColCount,
                args
            );
            if (duAux is { } extra)
            {
                // The aux codes' entries outside the selection: their share of db_enc and of Σ_b dU (the
                // b_dec centring term).
                ops.ReduceColumns<Sum>(extra, gBEnc, accumulate: true);
                ops.ReduceColumns<Sum>(extra, ws.ColumnSums.Data.SubView(0, sae.DSae), accumulate: true);
            }
        }
        else
        {
            ops.TopKFamilyBackward(
                ws.F.Data,
                phi.Data,
                a.Data,
                psi.Data,
                ws.DecoderNorms.Data,
                ws.DU.Data,
                gBEnc,
                ws.ColumnSums.Data,
                args
            );
        }
    }

    /// <summary>
    /// The AuxK loss's codes A [B, M] and <c>Ψa = Δa·W_decᵀ</c> [B, M]; adds <c>Aᵀ·Δa</c> to ∂L/∂W_dec and,
    /// SAELens style, <c>Σ_b Δa</c> to ∂L/∂b_dec. On the sparse path also the aux share of dU outside the
    /// selection (returned; its dW_enc share is added here).
    /// </summary>
    private static (MatrixView A, MatrixView Psi, MatrixView? DuAux) AuxK(
        SparseAutoencoder sae,
        SaeWorkspace ws,
        AuxKOptions aux,
        DeadFeatureWindow window
    )
    {
        var ops = sae.Device.Ops;
        int b = ws.Batch,
            d = sae.DIn,
            m = sae.DSae;
        bool saeLens = aux.Style == AuxKStyle.SaeLens;
        var dead = ws.Scratch(DeadName, 1, m);
        var fired = ws.Scratch(FiredName, 1, m);
        var stats = ws.Scratch(StatsName, 1, 4);
        var codes = ws.Scratch(CodesName, b, m);
        var xa = ws.Scratch(ReconName, b, d);
        var da = ws.Scratch(DeltaName, b, d);
        var psi = ws.Scratch(PsiName, b, m);
        var dev = ws.Scratch(DevName, 1, d);

        ops.ReduceColumns<CountNonZero>(ws.F, fired.Data);
        var split = sae.Collectives is { RowsSplit: true } rows ? rows : null;
        split?.Sum(sae.Device, fired.Data); // fired anywhere in the global batch
        ops.DeadMask(
            window.StepsSinceFired,
            fired.Data,
            dead.Data,
            window.WindowSteps,
            window.IncludeCurrentBatch
        );
        ops.ReduceRows<Sum>(dead.View, stats.Data.SubView(1, 1));
        bool sharded = sae.Collectives is { RowsSplit: false };
        if (sharded)
        {
            sae.Collectives!.Sum(sae.Device, stats.Data.SubView(1, 1)); // dead features of every block
        }

        ops.AuxKSelect(ws.U.Data, dead.Data, codes.Data, b, m, aux.KAux, raw: saeLens);
        MergeAcrossShards(sae, ws, codes.View, aux.KAux, "auxk");
        sae.Profile?.Mark(sae.Device, "AuxK selection");
        if (sae.Config.RescaleActsByDecoderNorm)
        {
            // U holds S = U ⊙ n (the selection ranked it); SAELens decodes the aux codes as S ⊘ n too.
            UnscaleCodes(sae, ws, codes.View);
        }

        bool sparse = sae.LastStepWasSparse;
        var wDec = sae.Decoder.Data;
        var sparseArgs = new SparseArgs
        {
            Rows = b,
            M = m,
            D = d,
        };
        if (sparse)
        {
            // The aux codes have at most k_aux entries per row: compact them (non-zero, for SAELens's raw
            // codes may be negative; psi holds |A| until it is computed below) and decode by gathering,
            // ê = A·W_dec (b_dec is AuxResidual's). Scale 0 makes SparseDecode's residual output zero; it
            // lands in Δa, which AuxResidual overwrites.
            ws.EnsureAuxSparseBuffers(m);
            ops.Map(codes.Data, psi.Data, default(Abs));
            ops.CompactRows(psi.Data, ws.AuxRowIdx, ws.AuxRowCount, b, m);
            ops.CompactColumns(psi.Data, ws.AuxColIdx, ws.AuxColCount, b, m);
            var zero = ws.Scratch("auxk_zero_bias", 1, d);
            ops.Fill(zero.Data, 0f);
            ops.SparseDecode(
                codes.Data,
                wDec,
                zero.Data,
                ws.Input.Data,
                ws.AuxRowIdx,
                ws.AuxRowCount,
                xa.Data,
                da.Data,
                sparseArgs
            );
        }
        else
        {
            ops.MatMul(codes, sae.Decoder, xa, GemmLayout.NN);
            sae.Sharding?.SumReconstructions(xa); // every block's part of ê
        }

        sae.Profile?.Mark(sae.Device, "AuxK decoder");

        var delta = ws.Delta.View.SliceRows(0, b);
        if (split is null)
        {
            ops.ColumnSquaredDeviation(delta.Data, dev.Data, b);
            ops.ReduceRows<Sum>(dev.View, stats.Data.SubView(0, 1));
        }
        else
        {
            // The rows are split: the squared deviation about the global batch's column means, summed over
            // the ranks (every rank's Δ carries the same scale 2c/b).
            var centred = ws.Scratch("auxk_centred", b, d);
            ops.ReduceColumns<Sum>(delta, dev.Data);
            split.Sum(sae.Device, dev.Data);
            ops.Map(dev.Data, dev.Data, new Scale(1f / ((float)b * split.Size)));
            ops.MapBroadcastRows<Subtract>(delta, dev.Data, centred.View);
            ops.ReduceColumns<SumOfSquares>(centred.View, dev.Data);
            ops.ReduceRows<Sum>(dev.View, stats.Data.SubView(0, 1));
            split.Sum(sae.Device, stats.Data.SubView(0, 1));
        }

        float c = ws.Loss!.Scale == ReconstructionScale.Sum ? 1f : 1f / d;
        ops.AuxResidual(
            xa.Data,
            delta.Data,
            sae.Parameters[SparseAutoencoder.DecoderBiasTensor].Data,
            da.Data,
            stats.Data,
            new AuxResidualArgs
            {
                Rows = b,
                StatRows = b * (split?.Size ?? 1),
                D = d,
                MainScale = c * 2f / b * sae.Architecture.MainReconstructionWeight(sae.Config, ws.Loss),
                Alpha = aux.Coefficient,
                K0 = aux.KAux,
                SaeLens = saeLens ? 1 : 0,
            }
        );
        if (sparse)
        {
            // Ψa = Δa·W_decᵀ at the aux entries only (zero elsewhere: the backward reads it where A ≠ 0).
            ops.Fill(psi.Data, 0f);
            ops.SparsePhiPsi(da.Data, wDec, ws.AuxRowIdx, ws.AuxRowCount, psi.Data, sparseArgs);
            sae.Profile?.Mark(sae.Device, "AuxK Ψa");

            // The main sparse weight gradients cover the selected (f > 0) entries only, where dU already
            // holds both parts; the aux codes' share elsewhere, dW_enc += X̃ᵀ·(Ψa ⊙ 1[A ≠ 0] ⊙ 1[f = 0]), and
            // dW_dec += Aᵀ·Δa run over the aux entries' column lists. SAELens's dead set may contain features
            // that fire in this batch, so the f = 0 mask matters.
            var duAux = ws.Scratch("auxk_du", b, m);
            ops.Map(psi.Data, codes.Data, duAux.Data, default(WhereNonZero));
            ops.Map(duAux.Data, ws.F.Data, duAux.Data, default(WhereZero));
            var xc = sae.Config.ApplyBDecToInput ? ws.Xc : ws.Input;
            var gEnc = sae.Parameters.Gradient(sae.Architecture.EncoderMatrices(sae.Config)[0]).Data;
            ops.SparseWeightGrad(
                xc.Data,
                duAux.Data,
                duAux.Data,
                codes.Data,
                da.Data,
                ws.AuxColIdx,
                ws.AuxColCount,
                gEnc,
                gEnc,
                sae.DecoderGradient.Data,
                sparseArgs
            );
        }
        else
        {
            ops.MatMul(da, sae.Decoder, psi, GemmLayout.NT);
            sae.Profile?.Mark(sae.Device, "AuxK Ψa");
            ops.MatMul(codes, da, sae.DecoderGradient, GemmLayout.TN, 1f, 1f);
        }

        sae.Profile?.Mark(sae.Device, "AuxK weight gradients");
        if (saeLens && (sae.Sharding is null || sae.Sharding.AddsSharedTerms))
        {
            ops.ReduceColumns<Sum>(
                da,
                sae.Parameters.Gradient(SparseAutoencoder.DecoderBiasTensor).Data,
                accumulate: true
            );
        }

        return (codes, psi, sae.LastStepWasSparse ? ws.Scratch("auxk_du", b, m).View : null);
    }

    /// <summary>The AuxK loss of the latest training pass (0 when it did not run): <c>Σ Δa²/(2·coef)</c> with
    /// <c>Δa = coef·(ê − e)</c> and <c>coef = 2α·g/B</c>, i.e. <c>α·g·(1/B)Σ‖ê − e‖²</c>.</summary>
    public static double AuxiliaryLoss(SparseAutoencoder sae, SaeWorkspace ws)
    {
        if (ws.Scratch(ActiveName, 1, 1).ToArray()[0] == 0f)
        {
            return 0;
        }

        var stats = ws.Scratch(StatsName, 1, 4).ToArray();
        double coef = stats[2];
        if (coef == 0)
        {
            return 0;
        }

        var da = ws.Scratch(DeltaName, ws.Batch, sae.DIn);
        var rows = ws.Scratch("auxk_row_sums", 1, ws.Batch);
        sae.Device.Ops.ReduceRows<SumOfSquares>(da, rows.Data);
        return rows.ToArray().Sum(v => (double)v) / (2 * coef);
    }

    /// <summary>The number of dead features the latest AuxK pass saw (0 when it did not run).</summary>
    public static int DeadCount(SaeWorkspace ws) =>
        ws.Scratch(ActiveName, 1, 1).ToArray()[0] == 0f ? 0 : (int)ws.Scratch(StatsName, 1, 4).ToArray()[1];
}
