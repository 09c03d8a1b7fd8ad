namespace IlgpuSae.Kernels;

/// <summary>How a kernel is launched.</summary>
internal enum KernelGrouping
{
    /// <summary>Implicitly grouped: the first parameter is the global index; no shared memory or
    /// barriers.</summary>
    Implicit,

    /// <summary>Explicitly grouped: launched with a grid and group size; may use shared memory and
    /// barriers.</summary>
    Explicit,
}

/// <summary>
/// Marks a static method as an ILGPU kernel entry point. <see cref="KernelCatalog"/> finds every marked
/// method (and every instantiation of a generic one) by reflection, so PTX emission and the
/// coverage test cannot miss a kernel.
/// </summary>
[AttributeUsage(AttributeTargets.Method, AllowMultiple = false)]
internal sealed class KernelAttribute(KernelGrouping grouping) : Attribute
{
    /// <summary>How the kernel is launched.</summary>
    public KernelGrouping Grouping { get; } = grouping;
}
