using System.Collections.Concurrent;
using ILGPU;
using ILGPU.Runtime;
using IlgpuSae.Backends;
using IlgpuSae.Tensors;

namespace IlgpuSae.Kernels;

public sealed partial class DeviceOps
{
    // ------------------------------------------------------------------ reductions

    /// <summary>
    /// <c>y[r] = reduce over c of x[r,c]</c> (or combined into <c>y[r]</c> when
    /// <paramref name="accumulate"/>).
    /// </summary>
    public void ReduceRows<TOp>(MatrixView x, ArrayView<float> y, bool accumulate = false)
        where TOp : struct, IReduceOp
    {
        string Shapes() => $"ReduceRows<{typeof(TOp).Name}>: x{Dims(x)} y[{y.Length}]";
        RequireValid(x, "x", Shapes);
        RequireValid(y, "y");
        if (y.Length != x.Rows)
        {
            throw new ArgumentException($"{Shapes()}: y must have one value per row ({x.Rows}).");
        }

        int acc = accumulate ? 1 : 0;
        if (Gpu)
        {
            var kernel = Kernel(
                "ReduceRowsTiled",
                typeof(TOp),
                () =>
                    Acc.LoadKernel<ArrayView<float>, ArrayView<float>, int, int>(
                        ReductionKernels.ReduceRowsTiledKernel<TOp>
                    )
            );
            kernel(Stream, new KernelConfig(x.Rows, TiledKernels.GroupSize), x.Data, y, x.Cols, acc);
        }
        else
        {
            var kernel = Kernel(
                "ReduceRows",
                typeof(TOp),
                () =>
                    Acc.LoadAutoGroupedKernel<
                        Index1D,
                        int,
                        int,
                        ArrayView<float>,
                        ArrayView<float>,
                        int,
                        int
                    >(ReductionKernels.ReduceRowsKernel<TOp>)
            );
            kernel(Stream, Items(x.Rows), x.Rows, Items(x.Rows), x.Data, y, x.Cols, acc);
        }
    }

    /// <summary>
    /// <c>y[c] = reduce over r of x[r,c]</c> (or combined into <c>y[c]</c> when
    /// <paramref name="accumulate"/>).
    /// </summary>
    public void ReduceColumns<TOp>(MatrixView x, ArrayView<float> y, bool accumulate = false)
        where TOp : struct, IReduceOp
    {
        string Shapes() => $"ReduceColumns<{typeof(TOp).Name}>: x{Dims(x)} y[{y.Length}]";
        RequireValid(x, "x", Shapes);
        RequireValid(y, "y");
        if (y.Length != x.Cols)
        {
            throw new ArgumentException($"{Shapes()}: y must have one value per column ({x.Cols}).");
        }

        var kernel = Kernel(
            "ReduceColumns",
            typeof(TOp),
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    int,
                    int,
                    ArrayView<float>,
                    ArrayView<float>,
                    int,
                    int,
                    int
                >(ReductionKernels.ReduceColumnsKernel<TOp>)
        );
        kernel(Stream, Items(x.Cols), x.Cols, Items(x.Cols), x.Data, y, x.Rows, x.Cols, accumulate ? 1 : 0);
    }

    // ------------------------------------------------------------------ norms

    /// <summary><c>norms[r] = ‖x[r,:]‖₂</c>.</summary>
    public void RowL2Norms(MatrixView x, ArrayView<float> norms)
    {
        ReduceRows<SumOfSquares>(x, norms);
        Map(norms, norms, default(Sqrt));
    }

    /// <summary>
    /// Scales each row of <paramref name="x"/> in place to unit L2 norm, <c>x[r,:] /= max(‖x[r,:]‖₂,
    /// eps)</c>;
    /// writes the norms before scaling to <paramref name="norms"/> when it is a valid view.
    /// </summary>
    public void NormalizeRows(MatrixView x, float eps = 1e-12f, ArrayView<float> norms = default)
    {
        string Shapes() => $"NormalizeRows: x{Dims(x)} norms[{norms.Length}]";
        RequireValid(x, "x", Shapes);
        if (!(eps > 0f) || float.IsInfinity(eps))
        {
            throw new ArgumentException(
                $"NormalizeRows: eps must be positive and finite, got {eps}.",
                nameof(eps)
            );
        }

        int write = norms.IsValid ? 1 : 0;
        if (write == 1 && norms.Length != x.Rows)
        {
            throw new ArgumentException($"{Shapes()}: norms must have one value per row ({x.Rows}).");
        }

        var target = write == 1 ? norms : x.Data.SubView(0, 1);
        if (Gpu)
        {
            var kernel = Kernel(
                "NormalizeRowsTiled",
                null,
                () =>
                    Acc.LoadKernel<ArrayView<float>, ArrayView<float>, int, float, int>(
                        NormKernels.NormalizeRowsTiledKernel
                    )
            );
            kernel(
                Stream,
                new KernelConfig(x.Rows, TiledKernels.GroupSize),
                x.Data,
                target,
                x.Cols,
                eps,
                write
            );
        }
        else
        {
            var kernel = Kernel(
                "NormalizeRows",
                null,
                () =>
                    Acc.LoadAutoGroupedKernel<
                        Index1D,
                        int,
                        int,
                        ArrayView<float>,
                        ArrayView<float>,
                        int,
                        float,
                        int
                    >(NormKernels.NormalizeRowsKernel)
            );
            kernel(Stream, Items(x.Rows), x.Rows, Items(x.Rows), x.Data, target, x.Cols, eps, write);
        }
    }
}
