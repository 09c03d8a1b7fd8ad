using ILGPU;

namespace IlgpuSae.Kernels;

// Dense row-major float32 matrix products C = alpha·op(A)·op(B) + beta·C in the three layouts an SAE needs.
// M, N, K: rows of C, columns of C, inner dimension. Every matrix holds fewer than 2^31 values.
// When beta == 0, C is never read (it may hold garbage or NaN).

/// <summary>The operand layouts of a matrix product (row-major storage).</summary>
public enum GemmLayout
{
    /// <summary><c>C[M,N] = A[M,K] · B[K,N]</c>.</summary>
    NN,

    /// <summary><c>C[M,N] = A[M,K] · B[N,K]ᵀ</c> (e.g. encoder input times a weight stored [out,
    /// in]).</summary>
    NT,

    /// <summary><c>C[M,N] = A[K,M]ᵀ · B[K,N]</c> (e.g. a weight gradient Xᵀ·δ).</summary>
    TN,
}

/// <summary>Addressing of op(A)[i,k] and op(B)[k,j] for one <see cref="GemmLayout"/>, resolved at kernel
/// compile time.</summary>
public interface IGemmLayout
{
    /// <summary>Offset of op(A)[i, 0].</summary>
    int AOffset(int i, int m, int k);

    /// <summary>Distance between op(A)[i, k] and op(A)[i, k + 1].</summary>
    int AStride(int m, int k);

    /// <summary>Offset of op(B)[0, j].</summary>
    int BOffset(int j, int k, int n);

    /// <summary>Distance between op(B)[k, j] and op(B)[k + 1, j].</summary>
    int BStride(int k, int n);

    /// <summary>Whether consecutive k are adjacent in A's storage (decides the coalesced tile load
    /// order).</summary>
    bool AKContiguous { get; }

    /// <summary>Whether consecutive k are adjacent in B's storage.</summary>
    bool BKContiguous { get; }
}

/// <summary>A layout whose B operand is stored [K, N] (row k of op(B) is contiguous): NN and TN.</summary>
public interface IGemmLayoutRowMajorB : IGemmLayout { }

/// <summary><see cref="GemmLayout.NN"/> addressing.</summary>
public readonly struct LayoutNN : IGemmLayoutRowMajorB
{
    /// <inheritdoc/>
    public int AOffset(int i, int m, int k) => i * k;

    /// <inheritdoc/>
    public int AStride(int m, int k) => 1;

    /// <inheritdoc/>
    public int BOffset(int j, int k, int n) => j;

    /// <inheritdoc/>
    public int BStride(int k, int n) => n;

    /// <inheritdoc/>
    public bool AKContiguous => true;

    /// <inheritdoc/>
    public bool BKContiguous => false;
}

/// <summary><see cref="GemmLayout.NT"/> addressing.</summary>
public readonly struct LayoutNT : IGemmLayout
{
    /// <inheritdoc/>
    public int AOffset(int i, int m, int k) => i * k;

    /// <inheritdoc/>
    public int AStride(int m, int k) => 1;

    /// <inheritdoc/>
    public int BOffset(int j, int k, int n) => j * k;

    /// <inheritdoc/>
    public int BStride(int k, int n) => 1;

    /// <inheritdoc/>
    public bool AKContiguous => true;

    /// <inheritdoc/>
    public bool BKContiguous => true;
}

/// <summary><see cref="GemmLayout.TN"/> addressing.</summary>
public readonly struct LayoutTN : IGemmLayoutRowMajorB
{
    /// <inheritdoc/>
    public int AOffset(int i, int m, int k) => i;

    /// <inheritdoc/>
    public int AStride(int m, int k) => m;

    /// <inheritdoc/>
    public int BOffset(int j, int k, int n) => j;

    /// <inheritdoc/>
    public int BStride(int k, int n) => n;

    /// <inheritdoc/>
    public bool AKContiguous => false;

    /// <inheritdoc/>
    public bool BKContiguous => false;
}

/// <summary>Scalar arguments of a matrix product.</summary>
internal struct GemmArgs
{
    public int M;
    public int N;
    public int K;
    public float Alpha;
    public float Beta;
}
