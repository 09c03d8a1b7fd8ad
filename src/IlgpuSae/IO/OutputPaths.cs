namespace IlgpuSae.IO;

/// <summary>
/// Refuses an output path that would overwrite or sit inside an input (or hold an input inside it): every
/// command passes its outputs and inputs here before it writes anything.
/// </summary>
public static class OutputPaths
{
    /// <summary>
    /// Throws unless <paramref name="output"/> is separate from every input: not the same path, not inside
    /// an input folder, and not a folder that holds an input. Paths are compared after
    /// <see cref="Path.GetFullPath(string)"/> and after resolving a symbolic link at the final component.
    /// </summary>
    /// <param name="outputOption">The option that gave the output, e.g. <c>--out</c>.</param>
    /// <param name="output">The output path (file or folder).</param>
    /// <param name="inputs">Each input's option and path; null paths are skipped.</param>
    /// <exception cref="ArgumentException">The output overlaps an input; the message names both
    /// options.</exception>
    public static void EnsureSeparate(
        string outputOption,
        string? output,
        params IEnumerable<(string Option, string? Path)> inputs
    )
    {
        ArgumentNullException.ThrowIfNull(inputs);
        if (output is null)
        {
            return;
        }

        var outFull = Normalize(output);
        foreach (var (option, path) in inputs)
        {
            if (path is null)
            {
                continue;
            }

            var inFull = Normalize(path);
            string? relation =
                inFull == outFull ? "is the same path as"
                : IsInside(outFull, inFull) ? "lies inside"
                : IsInside(inFull, outFull) ? "contains"
                : null;
            if (relation is not null)
            {
                throw new ArgumentException(
                    $"{outputOption} {output} {relation} the input {option} {path}; inputs are never overwritten, choose another {outputOption}."
                );
            }
        }
    }

    /// <summary>Whether <paramref name="path"/> lies strictly inside <paramref name="folder"/> (both
    /// normalized).</summary>
    private static bool IsInside(string path, string folder) =>
        path.StartsWith(
            folder.EndsWith(Path.DirectorySeparatorChar) ? folder : folder + Path.DirectorySeparatorChar,
            OperatingSystem.IsWindows() || OperatingSystem.IsMacOS()
                ? StringComparison.OrdinalIgnoreCase
                : StringComparison.Ordinal
        );

    private static string Normalize(string path)
    {
        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        try
        {
            FileSystemInfo info = Directory.Exists(full) ? new DirectoryInfo(full) : new FileInfo(full);
            if (info.ResolveLinkTarget(returnFinalTarget: true) is { } target)
            {
                full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(target.FullName));
            }
        }
        catch (IOException)
        {
            // An unresolvable link: compare the path as written.
        }

        return Path.TrimEndingDirectorySeparator(full);
    }
}
