using System.Reflection;
using FluentAssertions;
using IlgpuSae.Kernels;
using Xunit;

namespace IlgpuSae.Tests.Kernels;

/// <summary>The catalog that PTX emission walks must contain every kernel of the library.</summary>
public sealed class KernelCatalogTests
{
    [Fact]
    public void Every_method_named_like_a_kernel_is_marked_and_catalogued()
    {
        var assembly = typeof(KernelCatalog).Assembly;
        var kernelMethods = assembly
            .GetTypes()
            .SelectMany(t =>
                t.GetMethods(
                    BindingFlags.Static
                        | BindingFlags.Public
                        | BindingFlags.NonPublic
                        | BindingFlags.DeclaredOnly
                )
            )
            .Where(m => m.Name.EndsWith("Kernel", StringComparison.Ordinal))
            .ToArray();
        kernelMethods.Should().NotBeEmpty();
        foreach (var method in kernelMethods)
        {
            method
                .GetCustomAttribute<KernelAttribute>()
                .Should()
                .NotBeNull($"{method.DeclaringType!.Name}.{method.Name} is a kernel");
            KernelCatalog.All.Should().Contain(k => k.Method.Name == method.Name, method.Name);
        }
    }

    [Fact]
    public void Generic_kernels_are_listed_for_every_operator_and_layout()
    {
        var names = KernelCatalog.All.Select(k => k.Name).ToArray();
        names
            .Should()
            .Contain([
                "GemmTiledKernel_LayoutNN",
                "GemmTiledKernel_LayoutNT",
                "GemmTiledKernel_LayoutTN",
                "GemmStripKernel_LayoutNN",
                "GemmStripKernel_LayoutTN",
                "GemmMmaTf32Kernel_LayoutNT",
                "MapKernel_Relu",
                "MapKernel_Heaviside",
                "MapKernel_Exp",
                "Map2Kernel_Axpby",
                "ReduceRowsTiledKernel_CountNonZero",
                "ReduceColumnsKernel_Max",
                "RandomFillKernel_NormalDistribution",
                "AdamKernel",
                "NormalizeRowsTiledKernel",
            ]);
        names.Should().OnlyHaveUniqueItems();
        names
            .Should()
            .NotContain(
                "GemmStripKernel_LayoutNT",
                "the strip kernel reads rows of B; NT products transpose B first"
            );
        KernelCatalog
            .All.Where(k => k.Name.Contains("Tiled", StringComparison.Ordinal))
            .Should()
            .OnlyContain(k => k.ExplicitlyGrouped);
    }
}
