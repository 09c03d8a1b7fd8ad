namespace IlgpuSae.Verification;

/// <summary>
/// A comparison tolerance: an actual value <c>a</c> matches a reference <c>r</c> when
/// <c>|a − r| ≤ Atol + Rtol·|r|</c>. NaN matches only NaN; an infinity only the same infinity.
/// </summary>
/// <param name="Name">What the tolerance is for (shown in reports).</param>
/// <param name="Atol">Absolute part.</param>
/// <param name="Rtol">Relative part.</param>
public sealed record Tolerance(string Name, double Atol, double Rtol)
{
    /// <summary>Whether <paramref name="actual"/> matches <paramref name="reference"/>.</summary>
    public bool Accepts(double actual, double reference)
    {
        if (double.IsNaN(reference) || double.IsNaN(actual))
        {
            return double.IsNaN(reference) && double.IsNaN(actual);
        }

        if (double.IsInfinity(reference) || double.IsInfinity(actual))
        {
            return actual.Equals(reference);
        }

        return Math.Abs(actual - reference) <= Atol + Rtol * Math.Abs(reference);
    }

    /// <summary>Bit-exact agreement.</summary>
    public static Tolerance Exact { get; } = new("exact", 0, 0);

    /// <summary>
    /// One float32 rounding per element (copies, ReLU, scaling): 2 ulp relative, plus a tiny absolute part
    /// for
    /// denormals.
    /// </summary>
    public static Tolerance Elementwise { get; } = new("element-wise", 1e-30, 2.5e-7);

    /// <summary>
    /// Transcendental functions (exp, log, sin, cos, sqrt): CUDA lowers them to <c>.approx</c> instructions
    /// with errors of a few ulp, and OpenCL allows up to 4 ulp for exp.
    /// </summary>
    public static Tolerance Transcendental { get; } = new("transcendental", 1e-6, 4e-6);

    /// <summary>
    /// A float32 sum of <paramref name="terms"/> products whose magnitudes sum to <paramref name="scale"/>
    /// (e.g. Σ|a_k·b_k| for a dot product): worst-case error grows like terms·ε·scale; 4·√terms·ε·scale
    /// covers blocked and tree orders with a safety factor, and is applied as an absolute bound.
    /// </summary>
    public static Tolerance Accumulation(int terms, double scale) =>
        new(
            $"sum of {terms} terms",
            4.0 * Math.Sqrt(Math.Max(terms, 1)) * 1.2e-7 * Math.Max(scale, 1e-30) + 1e-30,
            1e-6
        );

    /// <summary>
    /// A TF32 tensor-core sum: both factors of each product are rounded to TF32 (10 explicit mantissa bits,
    /// relative
    /// error ≤ 2⁻¹¹ each, so ≤ 2⁻¹⁰ per product) before a float32 accumulation as in
    /// <see cref="Accumulation"/>.
    /// </summary>
    public static Tolerance Tf32Accumulation(int terms, double scale) =>
        new(
            $"TF32 sum of {terms} terms",
            (Math.Pow(2, -10) + 4.0 * Math.Sqrt(Math.Max(terms, 1)) * 1.2e-7) * Math.Max(scale, 1e-30)
                + 1e-30,
            1e-6
        );
}
