using IlgpuSae.Sae;
using IlgpuSae.Tensors;

namespace IlgpuSae.Training;

/// <summary>
/// Feature-sharded training (<c>train --parallel features</c>): rank r of N owns features
/// [r·M/N, (r+1)·M/N) of an SAE of M features — those columns of <c>W_enc</c>, rows of <c>W_dec</c>, entries
/// of every per-feature bias, and their Adam moments — while <c>b_dec</c> is replicated. The ranks' SAEs are
/// narrow SAEs of M/N features; rank 0 also holds the whole SAE (on the host) to start from, checkpoint and
/// save.
/// </summary>
public sealed class FeatureShards
{
    /// <summary>Sharding of an SAE of configuration <paramref name="whole"/>.</summary>
    /// <param name="whole">The whole SAE's configuration.</param>
    /// <param name="wholeOnRoot">Rank 0: the whole SAE (its starting weights; checkpoints and the final
    /// SAE are gathered into it). The other ranks: null.</param>
    public FeatureShards(SaeConfig whole, SparseAutoencoder? wholeOnRoot)
    {
        ArgumentNullException.ThrowIfNull(whole);
        Whole = whole;
        WholeOnRoot = wholeOnRoot;
    }

    /// <summary>The whole SAE's configuration.</summary>
    public SaeConfig Whole { get; }

    /// <summary>Why Matryoshka SAEs are not feature-sharded.</summary>
    public const string MatryoshkaRefusal =
        "feature-sharded training does not split Matryoshka SAEs (each nested prefix would need its own sum of reconstructions over the blocks): train them with --parallel data or in one process.";

    /// <summary>The whole SAE on rank 0, else null.</summary>
    public SparseAutoencoder? WholeOnRoot { get; }

    /// <summary>The configuration of one rank's block of features.</summary>
    /// <exception cref="ArgumentException">The features do not divide among the ranks.</exception>
    public static SaeConfig ShardConfig(SaeConfig whole, int ranks)
    {
        ArgumentNullException.ThrowIfNull(whole);
        if (whole.DSae % ranks != 0)
        {
            throw new ArgumentException(
                $"d_sae = {whole.DSae} does not divide among {ranks} ranks: feature-sharded training gives every rank an equal block of features; choose a --d-sae that is a multiple of {ranks}."
            );
        }

        return whole with
        {
            DSae = whole.DSae / ranks,
        };
    }

    /// <summary>
    /// Copies block <paramref name="rank"/> between a whole parameter section (<paramref name="whole"/>,
    /// laid out as <paramref name="wholeLayout"/>) and a block's (<paramref name="shard"/>): a tensor with
    /// fewer rows in the block is a block of rows, one with fewer columns a block of columns, any other is
    /// replicated (copied whole).
    /// </summary>
    internal static void Copy(
        ParameterLayout wholeLayout,
        ParameterLayout shardLayout,
        int rank,
        float[] whole,
        float[] shard,
        bool toShard
    )
    {
        foreach (var s in shardLayout.Entries)
        {
            var w = wholeLayout[s.Name];
            for (int row = 0; row < s.Rows; row++)
            {
                long shardAt = s.Offset + (long)row * s.Cols;
                long wholeAt =
                    s.Rows != w.Rows ? w.Offset + ((long)rank * s.Rows + row) * w.Cols
                    : s.Cols != w.Cols ? w.Offset + (long)row * w.Cols + (long)rank * s.Cols
                    : w.Offset + (long)row * w.Cols;
                if (toShard)
                {
                    Array.Copy(whole, wholeAt, shard, shardAt, s.Cols);
                }
                else
                {
                    Array.Copy(shard, shardAt, whole, wholeAt, s.Cols);
                }
            }
        }
    }

    /// <summary>Whether a tensor is replicated on every rank (not split by features).</summary>
    internal static bool Replicated(ParameterLayout wholeLayout, ParameterEntry shardEntry) =>
        wholeLayout[shardEntry.Name] is var w && w.Rows == shardEntry.Rows && w.Cols == shardEntry.Cols;
}
