using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using IlgpuSae.Backends;

namespace IlgpuSae.Sae;

/// <summary>
/// What a training step needs from the other ranks when one SAE trains across processes: in a
/// data-parallel run (<see cref="RowsSplit"/>) each rank holds B/N rows of the batch, so the statistics
/// that couple the rows (BatchTopK's batch-wide selection and threshold, the AuxK loss's "fired in this
/// batch" and residual variance, JumpReLU's batch L0) are summed over the ranks; in a feature-sharded run
/// each rank holds M/N features of every row, so the statistics that couple the features are. Every rank
/// calls every operation in the same order; the sums are formed once and broadcast, so every rank receives
/// the same bits.
/// </summary>
/// <param name="rank">This process's rank.</param>
/// <param name="size">Number of ranks.</param>
/// <param name="rowsSplit">True: data-parallel (rows split); false: feature-sharded.</param>
/// <param name="sum">Element-wise sum over the ranks, in place, the same bits on every rank.</param>
/// <param name="allGather">Every rank's bytes, indexed by rank, on every rank.</param>
internal sealed class StepCollectives(
    int rank,
    int size,
    bool rowsSplit,
    Action<float[]> sum,
    Func<byte[], byte[][]> allGather
)
{
    /// <summary>This process's rank.</summary>
    public int Rank => rank;

    /// <summary>Number of ranks.</summary>
    public int Size => size;

    /// <summary>Whether the batch's rows are split across the ranks (data-parallel) rather than the
    /// features.</summary>
    public bool RowsSplit => rowsSplit;

    /// <summary>Replaces a device buffer by its element-wise sum over the ranks (host-staged).</summary>
    public void Sum(SaeDevice device, ArrayView<float> view)
    {
        var host = new float[view.Length];
        device.Synchronize();
        view.CopyToCPU(device.Stream, host);
        device.Synchronize();
        sum(host);
        view.CopyFromCPU(device.Stream, host);
        device.Synchronize();
    }

    /// <summary>Replaces a one-element device buffer by its minimum over the ranks.</summary>
    public void Min(SaeDevice device, ArrayView<float> view)
    {
        var host = new float[1];
        device.Synchronize();
        view.SubView(0, 1).CopyToCPU(device.Stream, host);
        device.Synchronize();
        var all = allGather(BitConverter.GetBytes(host[0]));
        host[0] = all.Select(b => BitConverter.ToSingle(b)).Min();
        view.SubView(0, 1).CopyFromCPU(device.Stream, host);
        device.Synchronize();
    }

    /// <summary>Every rank's integers (each of the same length), indexed by rank.</summary>
    public int[][] AllGather(int[] local)
    {
        var all = allGather(MemoryMarshal.AsBytes(local.AsSpan()).ToArray());
        return [.. all.Select(b => MemoryMarshal.Cast<byte, int>(b).ToArray())];
    }

    /// <summary>Every rank's floats, indexed by rank.</summary>
    public float[][] AllGather(float[] local)
    {
        var all = allGather(MemoryMarshal.AsBytes(local.AsSpan()).ToArray());
        return [.. all.Select(b => MemoryMarshal.Cast<byte, float>(b).ToArray())];
    }

    /// <summary>The exchange the batch-wide top-k selection runs its radix histograms through.</summary>
    public Kernels.RankExchange Exchange => new(rank, AllGather);
}
