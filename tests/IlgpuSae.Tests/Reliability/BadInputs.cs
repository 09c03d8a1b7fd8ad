namespace IlgpuSae.Tests.Reliability;

/// <summary>The committed bad-input corpus (<c>tests/bad-inputs</c>, written by its
/// <c>make.py</c>).</summary>
public static class BadInputs
{
    public static string Folder([System.Runtime.CompilerServices.CallerFilePath] string here = "") =>
        System.IO.Path.GetFullPath(
            System.IO.Path.Combine(System.IO.Path.GetDirectoryName(here)!, "..", "..", "bad-inputs")
        );

    public static string Path(string relative) => System.IO.Path.Combine(Folder(), relative);

    /// <summary>SHA-256 of a file or of every file under a folder, to show an input is unchanged.</summary>
    public static string Hash(string path)
    {
        var files = Directory.Exists(path)
            ? Directory.GetFiles(path, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal)
            : (IEnumerable<string>)[path];
        using var sha = System.Security.Cryptography.SHA256.Create();
        foreach (var f in files)
        {
            var name = System.Text.Encoding.UTF8.GetBytes(System.IO.Path.GetRelativePath(path, f));
            sha.TransformBlock(name, 0, name.Length, null, 0);
            var bytes = File.ReadAllBytes(f);
            sha.TransformBlock(bytes, 0, bytes.Length, null, 0);
        }

        sha.TransformFinalBlock([], 0, 0);
        return Convert.ToHexString(sha.Hash!);
    }
}
