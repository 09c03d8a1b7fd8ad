namespace IlgpuSae.Training;

/// <summary>
/// The processes that train one SAE together (<c>train --parallel data</c>): their number, this process's
/// place among them, and the few collective operations a data-parallel step needs. Every rank calls every
/// operation in the same order. The MPI implementation is <see cref="Distributed.MpiTrainingGroup"/>; a
/// plain single-process run has no group at all.
/// </summary>
public interface ITrainingGroup
{
    /// <summary>This process's rank, 0 ≤ rank &lt; <see cref="Size"/>; rank 0 writes every file.</summary>
    int Rank { get; }

    /// <summary>Number of processes.</summary>
    int Size { get; }

    /// <summary>
    /// Replaces <paramref name="buffer"/> on every rank by its element-wise sum over the ranks. Every rank
    /// receives the same bits: the sum is formed once (on rank 0) and then broadcast, so no rank can round
    /// differently from another.
    /// </summary>
    void SumToAll(float[] buffer);

    /// <inheritdoc cref="SumToAll(float[])"/>
    void SumToAll(double[] buffer);

    /// <summary>Replaces <paramref name="buffer"/> on every rank by rank <paramref name="root"/>'s.</summary>
    void Broadcast(float[] buffer, int root = 0);

    /// <inheritdoc cref="Broadcast(float[], int)"/>
    void Broadcast(double[] buffer, int root = 0);

    /// <inheritdoc cref="Broadcast(float[], int)"/>
    void Broadcast(long[] buffer, int root = 0);

    /// <summary>The ranks' <paramref name="local"/> arrays (each of the same length) one after another in
    /// rank order, on rank <paramref name="root"/>; null on the others.</summary>
    float[]? Gather(float[] local, int root = 0);

    /// <summary>Every rank's <paramref name="value"/> (any length), indexed by rank, on every rank.</summary>
    byte[][] AllGather(byte[] value);

    /// <summary>Bytes this rank has sent and received in collectives so far (payload, both ways).</summary>
    long BytesMoved { get; }

    /// <summary>Seconds this rank has spent inside collectives so far (waiting for peers included).</summary>
    double CommunicationSeconds { get; }
}
