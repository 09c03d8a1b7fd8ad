using ILGPU;
using ILGPU.Runtime;
using IlgpuSae.Kernels;
using IlgpuSae.Sae;
using IlgpuSae.Tensors;

namespace IlgpuSae.SaeBench;

/// <summary>SAEBench's weight-based per-latent metrics (SAEBench 0.6.0, <c>evals/core/main.py</c>,
/// <c>get_featurewise_weight_based_metrics</c>).</summary>
public sealed record SaeBenchWeightMetrics
{
    /// <summary><c>encoder_bias</c>: <c>b_enc</c>; <c>b_mag</c> for a gated SAE; zeros when the SAE has
    /// neither.</summary>
    public required IReadOnlyList<double> EncoderBias { get; init; }

    /// <summary><c>encoder_norm</c>: <c>‖W_enc[:, i]‖</c>.</summary>
    public required IReadOnlyList<double> EncoderNorm { get; init; }

    /// <summary><c>encoder_decoder_cosine_sim</c>: <c>cos(W_enc[:, i], W_dec[i])</c> (NaN when either is
    /// zero).</summary>
    public required IReadOnlyList<double> EncoderDecoderCosineSim { get; init; }

    /// <summary><c>max_encoder_cosine_sim</c>: <c>max_{j≠i} cos(W_enc[:, i], W_enc[:, j])</c> (a zero column
    /// counts as cosine 0; −∞ when M = 1).</summary>
    public required IReadOnlyList<double> MaxEncoderCosineSim { get; init; }

    /// <summary><c>max_decoder_cosine_sim</c>: <c>max_{j≠i} cos(W_dec[i], W_dec[j])</c>.</summary>
    public required IReadOnlyList<double> MaxDecoderCosineSim { get; init; }
}

/// <summary>Computes <see cref="SaeBenchWeightMetrics"/> on the SAE's device.</summary>
public static class SaeBenchWeights
{
    /// <summary>Latent rows per Gram block by default: the block's [rows, M] product holds at most 2^24
    /// values (64 MiB), and at most 1024 rows.</summary>
    public static int DefaultBlockRows(int dSae) => Math.Clamp((1 << 24) / Math.Max(dSae, 1), 1, 1024);

    /// <summary>
    /// Computes the metrics of <paramref name="sae"/>. The maximum cosines come from the Gram matrix of the
    /// unit-normalised columns (<c>x / max(‖x‖, 1e-12)</c>, as <c>torch.nn.functional.normalize</c>), formed
    /// on the device <paramref name="blockRows"/> latents at a time with the GEMM kernels, so memory stays at
    /// 3·M·d + blockRows·M floats; each block's off-diagonal columns are reduced on the device and its small
    /// diagonal block on the host.
    /// </summary>
    public static SaeBenchWeightMetrics Compute(SparseAutoencoder sae, int blockRows = 0)
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentOutOfRangeException.ThrowIfNegative(blockRows);
        int m = sae.DSae,
            d = sae.DIn;
        int block = Math.Min(m, blockRows == 0 ? DefaultBlockRows(m) : blockRows);
        var device = sae.Device;
        var ops = device.Ops;
        using var enc = device.Allocate(m, d, "unit_W_enc_T");
        using var dec = device.Allocate(m, d, "unit_W_dec");
        using var norms = device.Allocate(2, m, "norms");
        using var dots = device.Allocate(1, m, "enc_dec_dots");
        ops.Transpose(sae.Parameters[SparseAutoencoder.EncoderTensor], enc);
        ops.Copy(sae.Decoder.Data, dec.Data);
        ops.NormalizeRows(enc, 1e-12f, norms.Data.SubView(0, m));
        ops.NormalizeRows(dec, 1e-12f, norms.Data.SubView(m, m));
        using (var products = device.Allocate(m, d, "enc_dec_products"))
        {
            // cos(W_enc[:, i], W_dec[i]) = the dot product of the unit rows.
            ops.Map<Multiply>(enc.Data, dec.Data, products.Data);
            ops.ReduceRows<Sum>(products, dots.Data);
            device.Synchronize();
        }

        var hostNorms = norms.ToArray();
        var hostDots = dots.ToArray();
        var maxEnc = MaxOffDiagonal(sae, enc, block);
        var maxDec = MaxOffDiagonal(sae, dec, block);
        var cos = new double[m];
        for (int i = 0; i < m; i++)
        {
            cos[i] = hostNorms[i] > 0 && hostNorms[m + i] > 0 ? hostDots[i] : double.NaN;
        }

        return new SaeBenchWeightMetrics
        {
            EncoderBias = EncoderBias(sae),
            EncoderNorm = [.. hostNorms.Take(m).Select(v => (double)v)],
            EncoderDecoderCosineSim = cos,
            MaxEncoderCosineSim = maxEnc,
            MaxDecoderCosineSim = maxDec,
        };
    }

    /// <summary>The per-latent bias SAEBench reports: <c>b_mag</c> for gated, else <c>b_enc</c>, else
    /// zeros.</summary>
    public static double[] EncoderBias(SparseAutoencoder sae)
    {
        ArgumentNullException.ThrowIfNull(sae);
        var names = sae.Parameters.Layout.Entries.Select(e => e.Name).ToHashSet(StringComparer.Ordinal);
        string? name =
            sae.Architecture == SaeArchitecture.Gated && names.Contains("b_mag") ? "b_mag"
            : names.Contains("b_enc") ? "b_enc"
            : null;
        if (name is null)
        {
            return new double[sae.DSae];
        }

        var view = sae.Parameters[name];
        var host = new float[view.Length];
        view.Data.CopyToCPU(sae.Device.Stream, host);
        sae.Device.Synchronize();
        return [.. host.Select(v => (double)v)];
    }

    /// <summary>For unit rows U [M, d]: <c>max_{j≠i} U_i·U_j</c> per row, blockwise.</summary>
    private static double[] MaxOffDiagonal(SparseAutoencoder sae, MatrixView unit, int block)
    {
        var device = sae.Device;
        var ops = device.Ops;
        int m = unit.Rows;
        using var max = device.Allocate(1, m, "max_cos");
        using var gram = device.Allocate(block, Math.Max(m - 1, 1), "gram_block");
        using var diagonal = device.Allocate(block, block, "gram_diagonal_block");
        ops.Fill(max.Data, float.NegativeInfinity);
        var hostDiagonal = new double[m];
        var tile = new float[(long)block * block];
        for (int start = 0; start < m; start += block)
        {
            int rows = Math.Min(block, m - start);
            var a = unit.SliceRows(start, rows);
            var target = max.Data.SubView(start, rows);
            foreach (var (first, count) in new[] { (0, start), (start + rows, m - start - rows) })
            {
                if (count == 0)
                {
                    continue;
                }

                var g = new MatrixView(gram.Data.SubView(0, (long)rows * count), rows, count, "gram");
                ops.MatMul(a, unit.SliceRows(first, count), g, GemmLayout.NT);
                ops.ReduceRows<Max>(g, target, accumulate: true);
            }

            var dg = new MatrixView(diagonal.Data.SubView(0, (long)rows * rows), rows, rows, "gram_diagonal");
            ops.MatMul(a, a, dg, GemmLayout.NT);
            dg.Data.CopyToCPU(device.Stream, tile.AsSpan(0, rows * rows));
            device.Synchronize();
            for (int r = 0; r < rows; r++)
            {
                double best = double.NegativeInfinity;
                for (int c = 0; c < rows; c++)
                {
                    if (c != r)
                    {
                        best = Math.Max(best, tile[r * rows + c]);
                    }
                }

                hostDiagonal[start + r] = best;
            }
        }

        var result = max.ToArray();
        return [.. result.Select((v, i) => Math.Max(v, hostDiagonal[i]))];
    }
}
