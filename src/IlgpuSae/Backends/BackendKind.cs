namespace IlgpuSae.Backends;

/// <summary>The compute backend an <see cref="SaeDevice"/> runs its kernels on.</summary>
public enum BackendKind
{
    /// <summary>
    /// Pick the best available device: CUDA, then an OpenCL GPU, then an OpenCL CPU device that ILGPU
    /// accepts, then ILGPU's CPU accelerator.
    /// </summary>
    Auto,

    /// <summary>ILGPU's CPU accelerator (a multi-threaded simulator; always available).</summary>
    Cpu,

    /// <summary>An OpenCL device (GPU or CPU) that ILGPU accepts.</summary>
    OpenCL,

    /// <summary>An NVIDIA GPU through CUDA.</summary>
    Cuda,
}

/// <summary>Parsing and naming of <see cref="BackendKind"/> values as the command line spells them.</summary>
public static class BackendKinds
{
    /// <summary>The environment variable that chooses the backend when no option does.</summary>
    public const string EnvironmentVariable = "ILGPUSAE_BACKEND";

    /// <summary>The names accepted by <see cref="Parse"/>, in the order the documentation lists
    /// them.</summary>
    public static IReadOnlyList<string> Names { get; } = ["auto", "cpu", "opencl", "cuda"];

    /// <summary>The lower-case name of <paramref name="kind"/> (<c>auto</c>, <c>cpu</c>, <c>opencl</c>,
    /// <c>cuda</c>).</summary>
    public static string ToName(this BackendKind kind) =>
        kind switch
        {
            BackendKind.Auto => "auto",
            BackendKind.Cpu => "cpu",
            BackendKind.OpenCL => "opencl",
            BackendKind.Cuda => "cuda",
            _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "Unknown backend kind."),
        };

    /// <summary>Parses a backend name (case-insensitive).</summary>
    /// <exception cref="ArgumentException">The name is not one of <see cref="Names"/>.</exception>
    public static BackendKind Parse(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return name.Trim().ToLowerInvariant() switch
        {
            "auto" or "" => BackendKind.Auto,
            "cpu" => BackendKind.Cpu,
            "opencl" or "cl" => BackendKind.OpenCL,
            "cuda" => BackendKind.Cuda,
            _ => throw new ArgumentException(
                $"Unknown backend '{name}'. Expected one of: {string.Join(", ", Names)}.",
                nameof(name)
            ),
        };
    }

    /// <summary>
    /// Resolves the backend to use: an explicit choice wins, then the <c>ILGPUSAE_BACKEND</c> environment
    /// variable, then <see cref="BackendKind.Auto"/>.
    /// </summary>
    /// <param name="explicitChoice">The value given on the command line or by the caller, if any.</param>
    public static BackendKind Resolve(string? explicitChoice)
    {
        if (!string.IsNullOrWhiteSpace(explicitChoice))
        {
            return Parse(explicitChoice);
        }

        var fromEnvironment = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (string.IsNullOrWhiteSpace(fromEnvironment))
        {
            return BackendKind.Auto;
        }

        try
        {
            return Parse(fromEnvironment);
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"{EnvironmentVariable}: {e.Message}", e);
        }
    }
}
