using System.Diagnostics;
using Xunit;

namespace IlgpuSae.Tests.Infrastructure;

/// <summary>
/// MPICH's launcher for the tests that train across processes. <c>ILGPUSAE_MPIEXEC</c> names it; otherwise
/// the first of mpiexec.mpich, mpiexec.hydra and mpiexec on PATH that is MPICH's hydra (Open MPI's
/// mpiexec cannot run MPI.NET). Without one the tests skip, except that with <c>ILGPUSAE_EXPECT_MPI=1</c>
/// (set by CI inside its PoCL chroot) they fail.
/// </summary>
public static class Mpi
{
    private static readonly Lazy<string?> Found = new(Find);

    /// <summary>The launcher, or a skip (a failure where MPI is expected).</summary>
    public static string Exec()
    {
        if (Found.Value is { } exec)
        {
            return exec;
        }

        if (Environment.GetEnvironmentVariable("ILGPUSAE_EXPECT_MPI") == "1")
        {
            throw new InvalidOperationException(
                "MPICH's mpiexec is required here (ILGPUSAE_EXPECT_MPI=1) but missing: install mpich libmpich-dev."
            );
        }

        Skip.If(true, "MPICH's mpiexec is not installed (Debian packages mpich libmpich-dev)");
        return "";
    }

    private static string? Find()
    {
        if (Environment.GetEnvironmentVariable("ILGPUSAE_MPIEXEC") is { Length: > 0 } given)
        {
            return given;
        }

        var path = Environment.GetEnvironmentVariable("PATH") ?? "";
        foreach (var name in new[] { "mpiexec.mpich", "mpiexec.hydra", "mpiexec" })
        {
            foreach (var dir in path.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
            {
                var candidate = Path.Combine(dir, name);
                if (File.Exists(candidate) && IsHydra(candidate))
                {
                    return candidate;
                }
            }
        }

        return null;
    }

    private static bool IsHydra(string exec)
    {
        try
        {
            var (code, output, _) = Launch(exec, ["--version"], null, TimeSpan.FromSeconds(30));
            return code == 0 && output.Contains("HYDRA", StringComparison.Ordinal);
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return false;
        }
    }

    /// <summary>The path of the built command-line tool beside the tests.</summary>
    public static string Cli => Path.Combine(AppContext.BaseDirectory, "ilgpu-sae.dll");

    /// <summary>Runs <c>mpiexec -n <paramref name="ranks"/> dotnet ilgpu-sae.dll ARGS</c> to the
    /// end.</summary>
    public static (int Code, string Out, string Err) Run(
        int ranks,
        IEnumerable<string> args,
        IReadOnlyDictionary<string, string>? environment = null
    ) =>
        Launch(
            Exec(),
            ["-n", ranks.ToString(), "dotnet", Cli, .. args],
            environment,
            TimeSpan.FromMinutes(5)
        );

    /// <summary>Runs a program to the end (killed after <paramref name="timeout"/>).</summary>
    public static (int Code, string Out, string Err) Launch(
        string program,
        IEnumerable<string> args,
        IReadOnlyDictionary<string, string>? environment,
        TimeSpan timeout
    )
    {
        using var process = Start(program, args, environment);
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
        }

        return (process.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>Starts a program with redirected output.</summary>
    public static Process Start(
        string program,
        IEnumerable<string> args,
        IReadOnlyDictionary<string, string>? environment
    )
    {
        var info = new ProcessStartInfo(program)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var a in args)
        {
            info.ArgumentList.Add(a);
        }

        foreach (var (k, v) in environment ?? new Dictionary<string, string>())
        {
            info.Environment[k] = v;
        }

        return Process.Start(info)!;
    }
}
