namespace IlgpuSae.IO;

/// <summary>
/// Checked size arithmetic for untrusted headers (npy, npz, safetensors, cache manifests): every product or
/// sum that a file declares is computed with overflow checks, and an overflow is an
/// <see cref="InvalidDataException"/> naming the file, never a wrapped value that passes a size check.
/// </summary>
public static class SizeMath
{
    /// <summary>The number of elements of <paramref name="shape"/>.</summary>
    /// <exception cref="InvalidDataException">A dimension is negative or the product overflows a 64-bit
    /// count; <paramref name="what"/> names the file and tensor in the message.</exception>
    public static long ElementCount(IReadOnlyList<long> shape, string what)
    {
        ArgumentNullException.ThrowIfNull(shape);
        long count = 1;
        foreach (var dim in shape)
        {
            if (dim < 0)
            {
                throw new InvalidDataException($"{what}: negative dimension {dim}.");
            }

            try
            {
                count = checked(count * dim);
            }
            catch (OverflowException)
            {
                throw new InvalidDataException(
                    $"{what}: shape [{string.Join(", ", shape)}] has more elements than a 64-bit count holds."
                );
            }
        }

        return count;
    }

    /// <summary>The bytes of <paramref name="count"/> elements of <paramref name="itemSize"/>
    /// bytes.</summary>
    /// <exception cref="InvalidDataException">The product overflows.</exception>
    public static long ByteCount(long count, int itemSize, string what)
    {
        try
        {
            return checked(count * itemSize);
        }
        catch (OverflowException)
        {
            throw new InvalidDataException(
                $"{what}: {count} elements of {itemSize} bytes are more bytes than a 64-bit size holds."
            );
        }
    }

    /// <summary>The sum of <paramref name="values"/>.</summary>
    /// <exception cref="InvalidDataException">A value is negative or the sum overflows.</exception>
    public static long Sum(IEnumerable<long> values, string what)
    {
        ArgumentNullException.ThrowIfNull(values);
        long sum = 0;
        foreach (var v in values)
        {
            if (v < 0)
            {
                throw new InvalidDataException($"{what}: negative count {v}.");
            }

            try
            {
                sum = checked(sum + v);
            }
            catch (OverflowException)
            {
                throw new InvalidDataException(
                    $"{what}: the counts add up to more than a 64-bit count holds."
                );
            }
        }

        return sum;
    }

    /// <summary>Throws unless <paramref name="count"/> elements fit one .NET array.</summary>
    /// <exception cref="InvalidDataException">They do not.</exception>
    public static int ArrayLength(long count, string what) =>
        count is >= 0 && count <= Array.MaxLength
            ? (int)count
            : throw new InvalidDataException(
                $"{what}: {count} elements are more than one in-memory array holds ({Array.MaxLength})."
            );
}
