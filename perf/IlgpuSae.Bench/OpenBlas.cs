using System.Runtime.InteropServices;

namespace IlgpuSae.Bench;

/// <summary>
/// OpenBLAS's <c>cblas_sgemm</c> through P/Invoke (Debian's <c>libopenblas0</c>), the CPU roofline the
/// benchmarks compare against. Used in perf only; the library never calls it.
/// </summary>
internal static unsafe partial class OpenBlas
{
    private const string Library = "libopenblas.so.0";
    private const int RowMajor = 101;
    private const int NoTrans = 111;
    private const int Trans = 112;

    [LibraryImport(Library, EntryPoint = "cblas_sgemm")]
    private static partial void Sgemm(
        int order,
        int transA,
        int transB,
        int m,
        int n,
        int k,
        float alpha,
        float* a,
        int lda,
        float* b,
        int ldb,
        float beta,
        float* c,
        int ldc
    );

    [LibraryImport(Library, EntryPoint = "openblas_get_config")]
    private static partial nint GetConfig();

    [LibraryImport(Library, EntryPoint = "openblas_get_num_threads")]
    private static partial int GetNumThreads();

    /// <summary>Whether the library loads, and its configuration string if so.</summary>
    public static string? TryDescribe()
    {
        try
        {
            return $"{Marshal.PtrToStringAnsi(GetConfig())}, {GetNumThreads()} threads";
        }
        catch (DllNotFoundException)
        {
            return null;
        }
    }

    /// <summary><c>C = op(A)·op(B)</c> in the given layout (row-major, no padding).</summary>
    public static void MatMul(float[] a, float[] b, float[] c, Kernels.GemmLayout layout, int m, int n, int k)
    {
        int ta = layout == Kernels.GemmLayout.TN ? Trans : NoTrans;
        int tb = layout == Kernels.GemmLayout.NT ? Trans : NoTrans;
        int lda = layout == Kernels.GemmLayout.TN ? m : k;
        int ldb = layout == Kernels.GemmLayout.NT ? k : n;
        fixed (
            float* pa = a,
                pb = b,
                pc = c
        )
        {
            Sgemm(RowMajor, ta, tb, m, n, k, 1f, pa, lda, pb, ldb, 0f, pc, n);
        }
    }
}
