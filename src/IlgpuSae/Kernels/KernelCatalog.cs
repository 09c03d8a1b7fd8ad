using System.Reflection;

namespace IlgpuSae.Kernels;

/// <summary>One compiled form of a kernel: a concrete (non-generic) entry point.</summary>
/// <param name="Name">A file-name-safe name such as <c>GemmTiledKernel_LayoutNT</c>.</param>
/// <param name="Method">The concrete static method.</param>
/// <param name="ExplicitlyGrouped">Whether the kernel is launched with explicit groups.</param>
public sealed record KernelEntry(string Name, MethodInfo Method, bool ExplicitlyGrouped);

/// <summary>
/// Every kernel of the library, found by reflection over methods marked as kernels. Generic kernels are
/// listed once per operator/layout struct of the library that satisfies their constraints.
/// </summary>
public static class KernelCatalog
{
    /// <summary>All kernel entry points, ordered by name.</summary>
    public static IReadOnlyList<KernelEntry> All { get; } = Build();

    private static KernelEntry[] Build()
    {
        var assembly = typeof(KernelCatalog).Assembly;
        var structs = assembly
            .GetTypes()
            .Where(t => t.IsValueType && !t.IsGenericTypeDefinition && !t.IsEnum)
            .ToArray();
        var result = new List<KernelEntry>();
        foreach (var type in assembly.GetTypes())
        {
            foreach (
                var method in type.GetMethods(
                    BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic
                )
            )
            {
                var attribute = method.GetCustomAttribute<KernelAttribute>();
                if (attribute is null)
                {
                    continue;
                }

                bool explicitGroups = attribute.Grouping == KernelGrouping.Explicit;
                if (!method.IsGenericMethodDefinition)
                {
                    result.Add(new KernelEntry(method.Name, method, explicitGroups));
                    continue;
                }

                var parameter = method.GetGenericArguments().Single();
                var constraints = parameter
                    .GetGenericParameterConstraints()
                    .Where(c => c.IsInterface)
                    .ToArray();
                foreach (var candidate in structs.Where(s => constraints.All(c => c.IsAssignableFrom(s))))
                {
                    result.Add(
                        new KernelEntry(
                            $"{method.Name}_{candidate.Name}",
                            method.MakeGenericMethod(candidate),
                            explicitGroups
                        )
                    );
                }
            }
        }

        return [.. result.OrderBy(e => e.Name, StringComparer.Ordinal)];
    }
}
