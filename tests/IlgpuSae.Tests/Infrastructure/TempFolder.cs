namespace IlgpuSae.Tests.Infrastructure;

/// <summary>
/// A new, empty folder under the system temp directory (named <c>prefix</c> plus a random suffix, so
/// leftovers
/// say which test wrote them), deleted with everything in it on <see cref="Dispose"/>. Hold one per test:
/// as a field of a disposable test class (xunit disposes the instance after each test) or with <c>using</c>.
/// </summary>
public sealed class TempFolder : IDisposable
{
    /// <summary>Creates the folder.</summary>
    /// <param name="prefix">The start of the folder's name, e.g. <c>ilgpusae-data-</c>.</param>
    public TempFolder(string prefix = "ilgpusae-")
    {
        FullName = Directory.CreateTempSubdirectory(prefix).FullName;
    }

    /// <summary>The folder's absolute path.</summary>
    public string FullName { get; }

    /// <summary>The path of <paramref name="name"/> (a file or folder name, or a relative path) inside the
    /// folder.</summary>
    public string Path(string name) => System.IO.Path.Combine(FullName, name);

    /// <summary>The path of <paramref name="parts"/>, joined, inside the folder.</summary>
    public string Combine(params string[] parts) => System.IO.Path.Combine([FullName, .. parts]);

    /// <summary>
    /// Deletes the folder and its contents. A failure (a file still open elsewhere, the folder already gone)
    /// is ignored: cleaning up must not fail or mask the test.
    /// </summary>
    public void Dispose()
    {
        try
        {
            Directory.Delete(FullName, recursive: true);
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    public override string ToString() => FullName;
}
