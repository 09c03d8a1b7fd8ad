using Xunit;

namespace IlgpuSae.Tests.Infrastructure;

/// <summary>Tests that change process-wide environment variables run alone.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class EnvironmentCollection
{
    public const string Name = "environment";
}

/// <summary>Sets an environment variable and restores it on dispose.</summary>
public sealed class EnvironmentScope : IDisposable
{
    private readonly string _name;
    private readonly string? _old;

    public EnvironmentScope(string name, string? value)
    {
        _name = name;
        _old = Environment.GetEnvironmentVariable(name);
        Environment.SetEnvironmentVariable(name, value);
    }

    public void Dispose() => Environment.SetEnvironmentVariable(_name, _old);
}
