using System.Text.Json.Nodes;
using IlgpuSae.IO;

namespace IlgpuSae.Training;

/// <summary>
/// The JSONL metrics log of a run (one object per logged step, SAELens's wandb names), appended as training
/// goes
/// and truncated to a checkpoint's step on resume so that a resumed run's log equals an uninterrupted one.
/// </summary>
public sealed class MetricsLog
{
    /// <summary>The log's file name in a run folder.</summary>
    public const string FileName = "metrics.jsonl";

    /// <summary>A log in <paramref name="folder"/>.</summary>
    public MetricsLog(string folder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        Path = System.IO.Path.Combine(folder, FileName);
    }

    /// <summary>The log file.</summary>
    public string Path { get; }

    /// <summary>Deletes the log (a fresh run from step 0 starts a new one).</summary>
    public void Clear() => File.Delete(Path);

    /// <summary>Appends one line.</summary>
    public void Append(JsonObject line)
    {
        ArgumentNullException.ThrowIfNull(line);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(Path)!);
        File.AppendAllText(Path, line.ToJsonString() + "\n");
    }

    /// <summary>
    /// Drops every line after <paramref name="step"/> (atomically). A torn last line (no final newline, as
    /// a crash or a full disk in the middle of an append leaves it) is dropped too; a malformed complete
    /// line is an <see cref="InvalidDataException"/>.
    /// </summary>
    public void TruncateAfter(long step)
    {
        if (!File.Exists(Path))
        {
            return;
        }

        var text = File.ReadAllText(Path);
        var lines = text.Split('\n');
        // The piece after the last newline is empty for a complete log, a torn record otherwise.
        lines = lines[..^1];
        var kept = new List<string>();
        for (int n = 0; n < lines.Length; n++)
        {
            long? logged;
            try
            {
                logged = JsonNode.Parse(lines[n])?["step"]?.GetValue<long>();
            }
            catch (Exception e)
                when (e is System.Text.Json.JsonException or InvalidOperationException or FormatException)
            {
                throw new InvalidDataException(
                    $"{Path}, line {n + 1}: not a metrics record ({e.Message}).",
                    e
                );
            }

            if (logged <= step)
            {
                kept.Add(lines[n]);
            }
        }

        AtomicFile.WriteAllText(Path, kept.Count == 0 ? "" : string.Join("\n", kept) + "\n");
    }
}
