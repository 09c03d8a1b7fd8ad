using System.Collections.Concurrent;
using ILGPU;
using ILGPU.Runtime;
using IlgpuSae.Backends;
using IlgpuSae.Tensors;

namespace IlgpuSae.Kernels;

public sealed partial class DeviceOps
{
    // ------------------------------------------------------------------ element-wise

    /// <summary><c>y[i] = op(x[i])</c>; <paramref name="y"/> may be <paramref name="x"/>.</summary>
    public void Map<TOp>(ArrayView<float> x, ArrayView<float> y, TOp op = default)
        where TOp : struct, IUnaryOp
    {
        RequireValid(x, nameof(x));
        RequireValid(y, nameof(y));
        RequireSameLength(x, y, $"Map<{typeof(TOp).Name}>", nameof(x), nameof(y));
        var kernel = Kernel(
            "Map",
            typeof(TOp),
            () =>
                Acc.LoadAutoGroupedKernel<Index1D, int, int, ArrayView<float>, ArrayView<float>, TOp>(
                    ElementwiseKernels.MapKernel<TOp>
                )
        );
        kernel(Stream, Items(ToIndex(x.Length)), ToIndex(x.Length), Items(ToIndex(x.Length)), x, y, op);
    }

    /// <summary><c>y[i] = op(a[i], b[i])</c>; <paramref name="y"/> may be <paramref name="a"/> or
    /// <paramref name="b"/>.</summary>
    public void Map<TOp>(ArrayView<float> a, ArrayView<float> b, ArrayView<float> y, TOp op = default)
        where TOp : struct, IBinaryOp
    {
        RequireValid(a, nameof(a));
        RequireValid(b, nameof(b));
        RequireValid(y, nameof(y));
        RequireSameLength(a, b, $"Map<{typeof(TOp).Name}>", nameof(a), nameof(b));
        RequireSameLength(a, y, $"Map<{typeof(TOp).Name}>", nameof(a), nameof(y));
        var kernel = Kernel(
            "Map2",
            typeof(TOp),
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    int,
                    int,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    TOp
                >(ElementwiseKernels.Map2Kernel<TOp>)
        );
        kernel(Stream, Items(ToIndex(a.Length)), ToIndex(a.Length), Items(ToIndex(a.Length)), a, b, y, op);
    }

    /// <summary><c>y[r,c] = op(x[r,c], v[c])</c>: <paramref name="v"/> holds one value per column (e.g. a
    /// bias).</summary>
    public void MapBroadcastRows<TOp>(MatrixView x, ArrayView<float> v, MatrixView y, TOp op = default)
        where TOp : struct, IBinaryOp
    {
        string Shapes() => $"MapBroadcastRows<{typeof(TOp).Name}>: x{Dims(x)} v[{v.Length}] y{Dims(y)}";
        RequireBroadcast(x, v, y, x.Cols, Shapes);
        LaunchBroadcast(x, v, y, 1, x.Cols, op);
    }

    /// <summary><c>y[r,c] = op(x[r,c], v[r])</c>: <paramref name="v"/> holds one value per row.</summary>
    public void MapBroadcastColumns<TOp>(MatrixView x, ArrayView<float> v, MatrixView y, TOp op = default)
        where TOp : struct, IBinaryOp
    {
        string Shapes() => $"MapBroadcastColumns<{typeof(TOp).Name}>: x{Dims(x)} v[{v.Length}] y{Dims(y)}";
        RequireBroadcast(x, v, y, x.Rows, Shapes);
        LaunchBroadcast(x, v, y, x.Cols, x.Rows, op);
    }

    private void LaunchBroadcast<TOp>(
        MatrixView x,
        ArrayView<float> v,
        MatrixView y,
        int divisor,
        int modulus,
        TOp op
    )
        where TOp : struct, IBinaryOp
    {
        var kernel = Kernel(
            "MapBroadcast",
            typeof(TOp),
            () =>
                Acc.LoadAutoGroupedKernel<
                    Index1D,
                    int,
                    int,
                    ArrayView<float>,
                    ArrayView<float>,
                    ArrayView<float>,
                    int,
                    int,
                    TOp
                >(ElementwiseKernels.MapBroadcastKernel<TOp>)
        );
        kernel(
            Stream,
            Items(ToIndex(x.Length)),
            ToIndex(x.Length),
            Items(ToIndex(x.Length)),
            x.Data,
            v,
            y.Data,
            divisor,
            modulus,
            op
        );
    }

    /// <summary><c>y = xᵀ</c>: <paramref name="y"/> must be [x.Cols, x.Rows] and must not overlap
    /// <paramref name="x"/>.</summary>
    public void Transpose(MatrixView x, MatrixView y)
    {
        string Shapes() => $"Transpose: x{Dims(x)} y{Dims(y)}";
        RequireValid(x, "x", Shapes);
        RequireValid(y, "y", Shapes);
        if (y.Rows != x.Cols || y.Cols != x.Rows)
        {
            throw new ArgumentException($"{Shapes()}: y must be [{x.Cols}, {x.Rows}].");
        }

        RequireNoOverlap(y.Data, x.Data, () => $"{Shapes()}: y overlaps x.");
        LaunchTranspose(x.Data, y.Data, x.Rows, x.Cols);
    }

    /// <summary>Queues <c>dst[c, r] = src[r, c]</c> for src [rows, cols], one work item per 16×16 block (no
    /// checks).</summary>
    private void LaunchTranspose(ArrayView<float> src, ArrayView<float> dst, int rows, int cols)
    {
        var kernel = Kernel(
            "Transpose",
            null,
            () =>
                Acc.LoadAutoGroupedKernel<Index1D, int, int, ArrayView<float>, ArrayView<float>, int, int>(
                    ElementwiseKernels.TransposeKernel
                )
        );
        int blocks =
            Ceil(rows, ElementwiseKernels.TransposeBlock) * Ceil(cols, ElementwiseKernels.TransposeBlock);
        kernel(Stream, Items(blocks), blocks, Items(blocks), src, dst, rows, cols);
    }

    /// <summary>Sets every element of <paramref name="y"/> to <paramref name="value"/>.</summary>
    public void Fill(ArrayView<float> y, float value) => Map(y, y, new Constant(value));

    /// <summary>Copies <paramref name="x"/> into <paramref name="y"/> (same length).</summary>
    public void Copy(ArrayView<float> x, ArrayView<float> y) => Map(x, y, default(Identity));
}
