using System.Globalization;
using System.Numerics;

namespace IlgpuSae.Lm;

/// <summary>
/// The exact sum of finite doubles, whatever their order or grouping: each value m·2^e is added to a bin
/// for its exponent (an Int128 of mantissas, safe for 2^74 additions), and the bins are one integer
/// (the sum scaled by 2^1074). So the ranks of a sharded cache build, each summing its own rows, combine
/// to the very bits one process gets summing all of them in corpus order.
/// </summary>
internal sealed class ExactSum
{
    private const int Scale = 1074; // 2^-1074 is the smallest double

    private readonly Int128[] _bins = new Int128[2048];
    private BigInteger _rest;

    /// <summary>Adds <paramref name="value"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">NaN or ±∞.</exception>
    public void Add(double value)
    {
        if (!double.IsFinite(value))
        {
            throw new ArgumentOutOfRangeException(nameof(value), value, "Only finite values have a sum.");
        }

        long bits = BitConverter.DoubleToInt64Bits(value);
        int exponent = (int)((bits >> 52) & 0x7FF);
        long mantissa = bits & 0xF_FFFF_FFFF_FFFFL;
        if (exponent == 0)
        {
            exponent = 1; // subnormal: m·2^(1 - 1075)
        }
        else
        {
            mantissa |= 1L << 52;
        }

        _bins[exponent] += bits < 0 ? -mantissa : mantissa; // value·2^1074 = mantissa·2^(exponent - 1)
    }

    /// <summary>Adds another sum.</summary>
    public void Add(ExactSum other)
    {
        ArgumentNullException.ThrowIfNull(other);
        _rest += other.Scaled();
    }

    /// <summary>The sum times 2^1074, an integer.</summary>
    private BigInteger Scaled()
    {
        var total = _rest;
        for (int e = 1; e < _bins.Length; e++)
        {
            if (_bins[e] != 0)
            {
                total += (BigInteger)_bins[e] << (e - 1);
            }
        }

        return total;
    }

    /// <summary>The sum rounded to the nearest double.</summary>
    public double ToDouble()
    {
        var scaled = Scaled();
        if (scaled.IsZero)
        {
            return 0;
        }

        bool negative = scaled.Sign < 0;
        var magnitude = BigInteger.Abs(scaled);
        int shift = (int)Math.Max(0, magnitude.GetBitLength() - 64);
        var top = (ulong)(magnitude >> shift);
        if (shift > 0 && !(magnitude & ((BigInteger.One << shift) - 1)).IsZero)
        {
            top |= 1; // sticky bit: rounds like the full value (64 bits hold 53 + guard + sticky)
        }

        double result = Math.ScaleB(top, shift - Scale);
        return negative ? -result : result;
    }

    /// <summary>The exact value, for a progress record.</summary>
    public override string ToString() => Scaled().ToString(CultureInfo.InvariantCulture);

    /// <summary>A sum saved with <see cref="ToString"/>.</summary>
    /// <exception cref="FormatException">Not an integer.</exception>
    public static ExactSum Parse(string text)
    {
        var sum = new ExactSum();
        sum._rest = BigInteger.Parse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
        return sum;
    }

    /// <summary>A sum that starts at <paramref name="value"/> (a progress record of an older version, which
    /// saved the sum as a double).</summary>
    public static ExactSum Of(double value)
    {
        var sum = new ExactSum();
        sum.Add(value);
        return sum;
    }
}
