namespace IlgpuSae.IO;

/// <summary>Element types IlgpuSae reads and writes (safetensors names: F32, F16, BF16, F64, I32,
/// I64).</summary>
public enum TensorDType
{
    /// <summary>32-bit IEEE float.</summary>
    F32,

    /// <summary>16-bit IEEE float.</summary>
    F16,

    /// <summary>bfloat16 (the top half of a float32).</summary>
    BF16,

    /// <summary>64-bit IEEE float.</summary>
    F64,

    /// <summary>32-bit signed integer.</summary>
    I32,

    /// <summary>64-bit signed integer.</summary>
    I64,
}

/// <summary>Sizes and conversions of <see cref="TensorDType"/> values.</summary>
public static class TensorDTypes
{
    /// <summary>Bytes per element.</summary>
    public static int Size(this TensorDType type) =>
        type switch
        {
            TensorDType.F16 or TensorDType.BF16 => 2,
            TensorDType.F32 or TensorDType.I32 => 4,
            _ => 8,
        };

    /// <summary>Whether the type is a floating-point type.</summary>
    public static bool IsFloat(this TensorDType type) =>
        type is TensorDType.F32 or TensorDType.F16 or TensorDType.BF16 or TensorDType.F64;

    /// <summary>Converts little-endian elements of <paramref name="type"/> to float32.</summary>
    public static void ToFloat32(ReadOnlySpan<byte> source, TensorDType type, Span<float> destination)
    {
        int n = destination.Length;
        if (source.Length < (long)n * type.Size())
        {
            throw new ArgumentException(
                $"Need {n} elements of {type}, got {source.Length} bytes.",
                nameof(source)
            );
        }

        switch (type)
        {
            case TensorDType.F32:
                System
                    .Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(source)[..n]
                    .CopyTo(destination);
                break;
            case TensorDType.F16:
                var halves = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(source);
                for (int i = 0; i < n; i++)
                {
                    destination[i] = (float)halves[i];
                }

                break;
            case TensorDType.BF16:
                var shorts = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(source);
                for (int i = 0; i < n; i++)
                {
                    destination[i] = BitConverter.Int32BitsToSingle(shorts[i] << 16);
                }

                break;
            case TensorDType.F64:
                var doubles = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, double>(source);
                for (int i = 0; i < n; i++)
                {
                    destination[i] = (float)doubles[i];
                }

                break;
            default:
                throw new InvalidDataException($"Tensor of type {type} cannot be read as floating point.");
        }
    }
}
