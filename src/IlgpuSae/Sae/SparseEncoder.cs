using IlgpuSae.Data;

namespace IlgpuSae.Sae;

/// <summary>Encodes activations into sparse features in CSR form (row pointers, feature indices,
/// values).</summary>
public static class SparseEncoder
{
    /// <summary>
    /// Encodes up to <paramref name="maxRows"/> rows of <paramref name="source"/>. Row r's features are
    /// <c>indices[indptr[r]..indptr[r+1]]</c> with <c>values</c> at the same positions, in increasing index
    /// order.
    /// </summary>
    public static (long[] IndPtr, int[] Indices, float[] Values) Encode(
        SparseAutoencoder sae,
        IActivationSource source,
        int batchSize = 1024,
        long maxRows = long.MaxValue,
        CancellationToken cancellationToken = default
    )
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(source);
        if (source.Dim != sae.DIn)
        {
            throw new ArgumentException(
                $"{source.Description} has d = {source.Dim}, the SAE expects d_in = {sae.DIn}."
            );
        }

        long rows = Math.Min(maxRows, source.Rows);
        var indptr = new List<long>(capacity: (int)Math.Min(rows + 1, int.MaxValue)) { 0 };
        var indices = new List<int>();
        var values = new List<float>();
        var x = new float[(long)batchSize * sae.DIn];
        for (long row = 0; row < rows; row += batchSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int n = (int)Math.Min(batchSize, rows - row);
            var batch = x.AsSpan(0, n * sae.DIn);
            source.ReadRows(row, batch);
            for (int i = 0; i < batch.Length; i++)
            {
                if (!float.IsFinite(batch[i]))
                {
                    throw new InvalidDataException(
                        $"{source.Description}: row {row + i / sae.DIn} has a non-finite value at column {i % sae.DIn}."
                    );
                }
            }

            var (f, _) = sae.ForwardHost(batch.ToArray(), n);
            for (int r = 0; r < n; r++)
            {
                for (int i = 0; i < sae.DSae; i++)
                {
                    float v = f[(long)r * sae.DSae + i];
                    if (v != 0f)
                    {
                        indices.Add(i);
                        values.Add(v);
                    }
                }

                indptr.Add(indices.Count);
            }
        }

        return ([.. indptr], [.. indices], [.. values]);
    }
}
