using ILGPU;

namespace IlgpuSae.Kernels;

/// <summary>
/// Sixteen adjacent floats of a matrix row, held as scalars so that kernels keep them in registers: one
/// AVX-512 vector (two AVX2 vectors) once a CPU compiler vectorises the element-wise statements.
/// </summary>
internal struct Row16
{
    /// <summary>Elements per row strip.</summary>
    public const int Width = 16;

    public float V0;

    public float V1;

    public float V2;

    public float V3;

    public float V4;

    public float V5;

    public float V6;

    public float V7;

    public float V8;

    public float V9;

    public float V10;

    public float V11;

    public float V12;

    public float V13;

    public float V14;

    public float V15;

    /// <summary>Reads <c>v[o .. o + 15]</c>.</summary>
    public static Row16 Load(ArrayView<float> v, int o)
    {
        Row16 r = default;
        r.V0 = v[o + 0];
        r.V1 = v[o + 1];
        r.V2 = v[o + 2];
        r.V3 = v[o + 3];
        r.V4 = v[o + 4];
        r.V5 = v[o + 5];
        r.V6 = v[o + 6];
        r.V7 = v[o + 7];
        r.V8 = v[o + 8];
        r.V9 = v[o + 9];
        r.V10 = v[o + 10];
        r.V11 = v[o + 11];
        r.V12 = v[o + 12];
        r.V13 = v[o + 13];
        r.V14 = v[o + 14];
        r.V15 = v[o + 15];
        return r;
    }

    /// <summary>Writes <c>v[o .. o + 15]</c>.</summary>
    public static void Store(ArrayView<float> v, int o, Row16 r)
    {
        v[o + 0] = r.V0;
        v[o + 1] = r.V1;
        v[o + 2] = r.V2;
        v[o + 3] = r.V3;
        v[o + 4] = r.V4;
        v[o + 5] = r.V5;
        v[o + 6] = r.V6;
        v[o + 7] = r.V7;
        v[o + 8] = r.V8;
        v[o + 9] = r.V9;
        v[o + 10] = r.V10;
        v[o + 11] = r.V11;
        v[o + 12] = r.V12;
        v[o + 13] = r.V13;
        v[o + 14] = r.V14;
        v[o + 15] = r.V15;
    }

    /// <summary><c>acc += x · y</c> element-wise.</summary>
    public static void MultiplyAdd(ref Row16 acc, float x, Row16 y)
    {
        acc.V0 += x * y.V0;
        acc.V1 += x * y.V1;
        acc.V2 += x * y.V2;
        acc.V3 += x * y.V3;
        acc.V4 += x * y.V4;
        acc.V5 += x * y.V5;
        acc.V6 += x * y.V6;
        acc.V7 += x * y.V7;
        acc.V8 += x * y.V8;
        acc.V9 += x * y.V9;
        acc.V10 += x * y.V10;
        acc.V11 += x * y.V11;
        acc.V12 += x * y.V12;
        acc.V13 += x * y.V13;
        acc.V14 += x * y.V14;
        acc.V15 += x * y.V15;
    }

    /// <summary><c>acc += x ⊙ y</c> element-wise.</summary>
    public static void MultiplyAdd(ref Row16 acc, Row16 x, Row16 y)
    {
        acc.V0 += x.V0 * y.V0;
        acc.V1 += x.V1 * y.V1;
        acc.V2 += x.V2 * y.V2;
        acc.V3 += x.V3 * y.V3;
        acc.V4 += x.V4 * y.V4;
        acc.V5 += x.V5 * y.V5;
        acc.V6 += x.V6 * y.V6;
        acc.V7 += x.V7 * y.V7;
        acc.V8 += x.V8 * y.V8;
        acc.V9 += x.V9 * y.V9;
        acc.V10 += x.V10 * y.V10;
        acc.V11 += x.V11 * y.V11;
        acc.V12 += x.V12 * y.V12;
        acc.V13 += x.V13 * y.V13;
        acc.V14 += x.V14 * y.V14;
        acc.V15 += x.V15 * y.V15;
    }

    /// <summary>The sum of the sixteen elements (pairwise).</summary>
    public static float Sum(Row16 v) =>
        (((v.V0 + v.V1) + (v.V2 + v.V3)) + ((v.V4 + v.V5) + (v.V6 + v.V7)))
        + (((v.V8 + v.V9) + (v.V10 + v.V11)) + ((v.V12 + v.V13) + (v.V14 + v.V15)));

    /// <summary><c>v[o + k·stride] += r[k]</c> for k = 0 … 15 (a column of a row-major matrix).</summary>
    public static void AddStrided(ArrayView<float> v, int o, int stride, Row16 r)
    {
        v[o + 0 * stride] += r.V0;
        v[o + 1 * stride] += r.V1;
        v[o + 2 * stride] += r.V2;
        v[o + 3 * stride] += r.V3;
        v[o + 4 * stride] += r.V4;
        v[o + 5 * stride] += r.V5;
        v[o + 6 * stride] += r.V6;
        v[o + 7 * stride] += r.V7;
        v[o + 8 * stride] += r.V8;
        v[o + 9 * stride] += r.V9;
        v[o + 10 * stride] += r.V10;
        v[o + 11 * stride] += r.V11;
        v[o + 12 * stride] += r.V12;
        v[o + 13 * stride] += r.V13;
        v[o + 14 * stride] += r.V14;
        v[o + 15 * stride] += r.V15;
    }

    /// <summary><c>alpha · v</c>.</summary>
    public static Row16 Scale(Row16 v, float alpha)
    {
        v.V0 *= alpha;
        v.V1 *= alpha;
        v.V2 *= alpha;
        v.V3 *= alpha;
        v.V4 *= alpha;
        v.V5 *= alpha;
        v.V6 *= alpha;
        v.V7 *= alpha;
        v.V8 *= alpha;
        v.V9 *= alpha;
        v.V10 *= alpha;
        v.V11 *= alpha;
        v.V12 *= alpha;
        v.V13 *= alpha;
        v.V14 *= alpha;
        v.V15 *= alpha;
        return v;
    }

    /// <summary><c>alpha · v + beta · w</c>.</summary>
    public static Row16 Combine(Row16 v, float alpha, Row16 w, float beta)
    {
        v.V0 = alpha * v.V0 + beta * w.V0;
        v.V1 = alpha * v.V1 + beta * w.V1;
        v.V2 = alpha * v.V2 + beta * w.V2;
        v.V3 = alpha * v.V3 + beta * w.V3;
        v.V4 = alpha * v.V4 + beta * w.V4;
        v.V5 = alpha * v.V5 + beta * w.V5;
        v.V6 = alpha * v.V6 + beta * w.V6;
        v.V7 = alpha * v.V7 + beta * w.V7;
        v.V8 = alpha * v.V8 + beta * w.V8;
        v.V9 = alpha * v.V9 + beta * w.V9;
        v.V10 = alpha * v.V10 + beta * w.V10;
        v.V11 = alpha * v.V11 + beta * w.V11;
        v.V12 = alpha * v.V12 + beta * w.V12;
        v.V13 = alpha * v.V13 + beta * w.V13;
        v.V14 = alpha * v.V14 + beta * w.V14;
        v.V15 = alpha * v.V15 + beta * w.V15;
        return v;
    }
}
