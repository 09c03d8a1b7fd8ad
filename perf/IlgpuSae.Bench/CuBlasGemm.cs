using System.Globalization;
using ILGPU.Runtime.Cuda;
using IlgpuSae.Backends;
using IlgpuSae.Kernels;

namespace IlgpuSae.Bench;

/// <summary>
/// cuBLAS's <c>cublasSgemm</c> (through ILGPU.Algorithms' P/Invoke wrapper) on the same device buffers as
/// the ILGPU kernel, checked against the ILGPU result and timed next to it: the GPU counterpart of the
/// OpenBLAS column. Row-major <c>C = A·B</c> is computed as the column-major <c>Cᵀ = Bᵀ·Aᵀ</c>.
/// </summary>
internal static class CuBlasGemm
{
    /// <summary>Why cuBLAS cannot be used on <paramref name="device"/>, or null when it can.</summary>
    public static string? Unavailable(SaeDevice device)
    {
        if (device.Accelerator is not CudaAccelerator cuda)
        {
            return "not a CUDA device";
        }

        try
        {
            using var blas = new CuBlas(cuda);
            return null;
        }
#pragma warning disable CA1031 // any failure to load or initialise the library means "no cuBLAS here"
        catch (Exception e)
#pragma warning restore CA1031
        {
            return $"libcublas not usable ({e.GetType().Name}: {e.Message.Split('\n')[0]})";
        }
    }

    /// <summary>
    /// The FP32 peak from the device's specifications, for when cuBLAS is absent: multiprocessors × FP32
    /// lanes per multiprocessor (64 on sm_60/70/75/80, 128 on sm_61, 86, 89, 90 and later) × 2 FLOPs per FMA
    /// × the boost clock the driver reports. Null when the device is not CUDA.
    /// </summary>
    public static (double Gflops, string Formula)? SpecPeak(SaeDevice device)
    {
        if (device.Accelerator is not CudaAccelerator cuda)
        {
            return null;
        }

        var arch = cuda.Architecture;

        int lanes = (arch.Major, arch.Minor) switch
        {
            (6, 0) or (7, _) or (8, 0) => 64,
            _ => 128,
        };
        double ghz = cuda.ClockRate / 1e6; // kHz
        double peak = cuda.NumMultiprocessors * lanes * 2 * ghz;
        return (
            peak,
            string.Create(
                CultureInfo.InvariantCulture,
                $"{cuda.NumMultiprocessors} SMs × {lanes} FP32 lanes × 2 × {ghz:0.###} GHz (sm_{arch.Major}{arch.Minor}) = {peak:0} GFLOP/s"
            )
        );
    }

    /// <summary>One table row: cuBLAS time and GFLOP/s for the product, and the largest difference from
    /// ILGPU's product of the same buffers, relative to its largest entry.</summary>
    public static string Row(
        SaeDevice device,
        GemmLayout layout,
        int m,
        int n,
        int k,
        int reps,
        float[] a,
        float[] b
    )
    {
        var cuda = (CudaAccelerator)device.Accelerator;
        using var blas = new CuBlas(cuda) { Stream = (CudaStream)device.Stream };
        blas.PointerMode = CuBlasPointerMode.Host;
        var (ar, ac) = layout == GemmLayout.TN ? (k, m) : (m, k);
        var (br, bc) = layout == GemmLayout.NT ? (n, k) : (k, n);
        using var ta = device.Upload(a, ar, ac);
        using var tb = device.Upload(b, br, bc);
        using var tc = device.Allocate(m, n);
        using var ours = device.Allocate(m, n);
        void Run()
        {
            switch (layout)
            {
                case GemmLayout.NN:
                    blas.Gemm(
                        CuBlasOperation.NonTranspose,
                        CuBlasOperation.NonTranspose,
                        n,
                        m,
                        k,
                        1f,
                        tb.Data,
                        n,
                        ta.Data,
                        k,
                        0f,
                        tc.Data,
                        n
                    );
                    break;
                case GemmLayout.NT:
                    blas.Gemm(
                        CuBlasOperation.Transpose,
                        CuBlasOperation.NonTranspose,
                        n,
                        m,
                        k,
                        1f,
                        tb.Data,
                        k,
                        ta.Data,
                        k,
                        0f,
                        tc.Data,
                        n
                    );
                    break;
                default:
                    blas.Gemm(
                        CuBlasOperation.NonTranspose,
                        CuBlasOperation.Transpose,
                        n,
                        m,
                        k,
                        1f,
                        tb.Data,
                        n,
                        ta.Data,
                        m,
                        0f,
                        tc.Data,
                        n
                    );
                    break;
            }
        }

        Run();
        device.Synchronize();
        device.Ops.MatMul(ta, tb, ours, layout);
        var got = tc.ToArray();
        var expected = ours.ToArray();
        double maxErr = 0,
            maxRef = 0;
        for (int i = 0; i < got.Length; i++)
        {
            maxErr = Math.Max(maxErr, Math.Abs(got[i] - expected[i]));
            maxRef = Math.Max(maxRef, Math.Abs(expected[i]));
        }

        double worst = maxErr / Math.Max(maxRef, 1e-30);
        string check = worst < 1e-5 ? $"ok vs ILGPU ({worst:0.0e0})" : $"MISMATCH vs ILGPU {worst:0.0e0}";
        var times = new double[Math.Max(1, reps)];
        for (int r = 0; r < times.Length; r++)
        {
            var watch = System.Diagnostics.Stopwatch.StartNew();
            Run();
            device.Synchronize();
            times[r] = watch.Elapsed.TotalSeconds;
        }

        Array.Sort(times);
        double seconds = times[times.Length / 2];
        return string.Create(
            CultureInfo.InvariantCulture,
            $"| cuda | cuBLAS sgemm | {layout} | {m}x{n}x{k} | {seconds * 1e3:0.00} | {2.0 * m * n * k / seconds / 1e9:0.00} | | | {check} |"
        );
    }
}
