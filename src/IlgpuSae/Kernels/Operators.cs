using ILGPU.Algorithms;

namespace IlgpuSae.Kernels;

// Operator structs drive the generic element-wise and reduction kernels: each kernel is specialised per
// operator type at compile time, so no delegate or virtual call reaches device code. Operators may carry
// parameters as fields (e.g. Scale.Factor); they are passed to the kernel by value.

/// <summary>An element-wise function <c>y = f(x)</c>.</summary>
public interface IUnaryOp
{
    /// <summary>Applies the function.</summary>
    float Apply(float x);
}

/// <summary>An element-wise function <c>y = f(a, b)</c>.</summary>
public interface IBinaryOp
{
    /// <summary>Applies the function.</summary>
    float Apply(float a, float b);
}

/// <summary>
/// A reduction: the result is <c>Combine(…Combine(Identity, Map(x0)), …, Map(xn))</c>. <c>Combine</c> must
/// be associative and commutative (kernels reduce in any order).
/// </summary>
public interface IReduceOp
{
    /// <summary>The neutral element of <see cref="Combine"/>.</summary>
    float Identity { get; }

    /// <summary>Transforms one input before combining.</summary>
    float Map(float x);

    /// <summary>Combines two partial results.</summary>
    float Combine(float a, float b);
}

/// <summary>Copies: <c>y = x</c>.</summary>
public readonly struct Identity : IUnaryOp
{
    /// <inheritdoc/>
    public float Apply(float x) => x;
}

/// <summary>Constant fill: <c>y = Value</c> (the input is ignored).</summary>
/// <param name="value">The value written.</param>
public readonly struct Constant(float value) : IUnaryOp
{
    /// <summary>The value written.</summary>
    public float Value { get; } = value;

    /// <inheritdoc/>
    public float Apply(float x) => Value;
}

/// <summary><c>y = max(x, 0)</c>.</summary>
public readonly struct Relu : IUnaryOp
{
    /// <inheritdoc/>
    public float Apply(float x) => x > 0f ? x : 0f;
}

/// <summary>Heaviside step: <c>y = 1</c> if <c>x &gt; 0</c>, else 0 (the Gated SAE gate; H(0) = 0).</summary>
public readonly struct Heaviside : IUnaryOp
{
    /// <inheritdoc/>
    public float Apply(float x) => x > 0f ? 1f : 0f;
}

/// <summary><c>y = eˣ</c> (CUDA uses the fast approximate exponential).</summary>
public readonly struct Exp : IUnaryOp
{
    /// <inheritdoc/>
    public float Apply(float x) => XMath.Exp(x);
}

/// <summary><c>y = ln x</c> (JumpReLU's log-threshold parametrisation).</summary>
public readonly struct Log : IUnaryOp
{
    /// <inheritdoc/>
    public float Apply(float x) => XMath.Log(x);
}

/// <summary><c>y = tanh(Scale · x)</c> (JumpReLU's tanh sparsity).</summary>
/// <param name="scale">The scale c.</param>
public readonly struct ScaledTanh(float scale) : IUnaryOp
{
    /// <summary>The scale c.</summary>
    public float Scale { get; } = scale;

    /// <inheritdoc/>
    public float Apply(float x) => XMath.Tanh(Scale * x);
}

/// <summary><c>y = max(x, Floor)</c>.</summary>
/// <param name="floor">The smallest value kept.</param>
public readonly struct ClampMin(float floor) : IUnaryOp
{
    /// <summary>The smallest value kept.</summary>
    public float Floor { get; } = floor;

    /// <inheritdoc/>
    public float Apply(float x) => XMath.Max(x, Floor);
}

/// <summary><c>y = √x</c>.</summary>
public readonly struct Sqrt : IUnaryOp
{
    /// <inheritdoc/>
    public float Apply(float x) => XMath.Sqrt(x);
}

/// <summary><c>y = |x|</c>.</summary>
public readonly struct Abs : IUnaryOp
{
    /// <inheritdoc/>
    public float Apply(float x) => XMath.Abs(x);
}

/// <summary><c>y = x²</c>.</summary>
public readonly struct Square : IUnaryOp
{
    /// <inheritdoc/>
    public float Apply(float x) => x * x;
}

/// <summary><c>y = Factor · x</c>.</summary>
/// <param name="factor">The multiplier.</param>
public readonly struct Scale(float factor) : IUnaryOp
{
    /// <summary>The multiplier.</summary>
    public float Factor { get; } = factor;

    /// <inheritdoc/>
    public float Apply(float x) => Factor * x;
}

/// <summary><c>y = a + b</c>.</summary>
public readonly struct Add : IBinaryOp
{
    /// <inheritdoc/>
    public float Apply(float a, float b) => a + b;
}

/// <summary><c>y = a − b</c>.</summary>
public readonly struct Subtract : IBinaryOp
{
    /// <inheritdoc/>
    public float Apply(float a, float b) => a - b;
}

/// <summary><c>y = a · b</c>.</summary>
public readonly struct Multiply : IBinaryOp
{
    /// <inheritdoc/>
    public float Apply(float a, float b) => a * b;
}

/// <summary><c>y = a / b</c>.</summary>
public readonly struct Divide : IBinaryOp
{
    /// <inheritdoc/>
    public float Apply(float a, float b) => a / b;
}

/// <summary><c>y = a = 0 ? 0 : a / b</c>: a division that keeps zeros (a code of 0 stays 0 even where the
/// divisor is 0).</summary>
public readonly struct DivideNonZero : IBinaryOp
{
    /// <inheritdoc/>
    public float Apply(float a, float b) => a == 0f ? 0f : a / b;
}

/// <summary><c>y = max(a, b)</c>.</summary>
public readonly struct Maximum : IBinaryOp
{
    /// <inheritdoc/>
    public float Apply(float a, float b) => XMath.Max(a, b);
}

/// <summary><c>y = Alpha·a + Beta·b</c>.</summary>
/// <param name="alpha">Weight of <c>a</c>.</param>
/// <param name="beta">Weight of <c>b</c>.</param>
public readonly struct Axpby(float alpha, float beta) : IBinaryOp
{
    /// <summary>Weight of <c>a</c>.</summary>
    public float Alpha { get; } = alpha;

    /// <summary>Weight of <c>b</c>.</summary>
    public float Beta { get; } = beta;

    /// <inheritdoc/>
    public float Apply(float a, float b) => Alpha * a + Beta * b;
}

/// <summary>Sum of the values.</summary>
public readonly struct Sum : IReduceOp
{
    /// <inheritdoc/>
    public float Identity => 0f;

    /// <inheritdoc/>
    public float Map(float x) => x;

    /// <inheritdoc/>
    public float Combine(float a, float b) => a + b;
}

/// <summary>Sum of squares (the squared L2 norm).</summary>
public readonly struct SumOfSquares : IReduceOp
{
    /// <inheritdoc/>
    public float Identity => 0f;

    /// <inheritdoc/>
    public float Map(float x) => x * x;

    /// <inheritdoc/>
    public float Combine(float a, float b) => a + b;
}

/// <summary>Sum of absolute values (the L1 norm).</summary>
public readonly struct SumOfAbs : IReduceOp
{
    /// <inheritdoc/>
    public float Identity => 0f;

    /// <inheritdoc/>
    public float Map(float x) => XMath.Abs(x);

    /// <inheritdoc/>
    public float Combine(float a, float b) => a + b;
}

/// <summary>Maximum value (−∞ for an empty set).</summary>
public readonly struct Max : IReduceOp
{
    /// <inheritdoc/>
    public float Identity => float.NegativeInfinity;

    /// <inheritdoc/>
    public float Map(float x) => x;

    /// <inheritdoc/>
    public float Combine(float a, float b) => XMath.Max(a, b);
}

/// <summary><c>y = b ≠ 0 ? a : 0</c>: a masked by the support of b.</summary>
public readonly struct WhereNonZero : IBinaryOp
{
    /// <inheritdoc/>
    public float Apply(float a, float b) => b != 0f ? a : 0f;
}

/// <summary><c>y = b = 0 ? a : 0</c>: a outside the support of b.</summary>
public readonly struct WhereZero : IBinaryOp
{
    /// <inheritdoc/>
    public float Apply(float a, float b) => b == 0f ? a : 0f;
}

/// <summary>Smallest positive value (+∞ when there is none): the BatchTopK threshold estimate.</summary>
public readonly struct MinPositive : IReduceOp
{
    /// <inheritdoc/>
    public float Identity => float.PositiveInfinity;

    /// <inheritdoc/>
    public float Map(float x) => x > 0f ? x : float.PositiveInfinity;

    /// <inheritdoc/>
    public float Combine(float a, float b) => XMath.Min(a, b);
}

/// <summary>Number of non-zero values (the L0 "norm"), exact up to 2²⁴.</summary>
public readonly struct CountNonZero : IReduceOp
{
    /// <inheritdoc/>
    public float Identity => 0f;

    /// <inheritdoc/>
    public float Map(float x) => x != 0f ? 1f : 0f;

    /// <inheritdoc/>
    public float Combine(float a, float b) => a + b;
}

/// <summary>
/// GELU, tanh form (<c>gelu_new</c>, <c>gelu_fast</c>, <c>gelu_pytorch_tanh</c> in Hugging Face):
/// <c>0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))</c>.
/// </summary>
public readonly struct GeluTanh : IUnaryOp
{
    /// <inheritdoc/>
    public float Apply(float x) =>
        0.5f * x * (1f + XMath.Tanh(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}

/// <summary>
/// GELU, exact form (<c>gelu</c> in Hugging Face, used by Pythia): <c>0.5·x·(1 + erf(x/√2))</c>, with erf
/// from Abramowitz &amp; Stegun 7.1.26 (absolute error ≤ 1.5·10⁻⁷, below float32 resolution of the result).
/// </summary>
public readonly struct GeluErf : IUnaryOp
{
    /// <inheritdoc/>
    public float Apply(float x) => 0.5f * x * (1f + Erf(x * 0.70710678118654752f));

    /// <summary>The error function (A&amp;S 7.1.26).</summary>
    public static float Erf(float x)
    {
        float sign = x < 0f ? -1f : 1f;
        float a = XMath.Abs(x);
        float t = 1f / (1f + 0.3275911f * a);
        float poly =
            t
            * (
                0.254829592f
                + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f)))
            );
        return sign * (1f - poly * XMath.Exp(-a * a));
    }
}
