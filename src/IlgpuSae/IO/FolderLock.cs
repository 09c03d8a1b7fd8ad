using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace IlgpuSae.IO;

/// <summary>
/// An exclusive lock on an output folder: the file <see cref="FileName"/> in it, created with
/// <see cref="FileMode.CreateNew"/> and holding the owner's process id, its start time, host and command.
/// A second run into the same folder is refused while the owner runs; a lock whose process is gone (or
/// whose process id now belongs to a process started at another time) is stale and is taken over, with a
/// note. Disposing removes the lock.
/// </summary>
public sealed class FolderLock : IDisposable
{
    /// <summary>The lock file's name inside the locked folder.</summary>
    public const string FileName = ".ilgpusae.lock";

    private readonly string _token;
    private bool _released;

    private FolderLock(string folder, string path, string token, string? staleNote)
    {
        Folder = folder;
        Path = path;
        _token = token;
        StaleNote = staleNote;
    }

    /// <summary>The locked folder.</summary>
    public string Folder { get; }

    /// <summary>The lock file.</summary>
    public string Path { get; }

    /// <summary>When a stale lock was taken over: what it said; otherwise null.</summary>
    public string? StaleNote { get; }

    /// <summary>Creates <paramref name="folder"/> if needed and locks it for
    /// <paramref name="command"/>.</summary>
    /// <exception cref="IOException">Another live process holds the lock; the message names it.</exception>
    public static FolderLock Acquire(string folder, string command)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        ArgumentException.ThrowIfNullOrWhiteSpace(command);
        Directory.CreateDirectory(folder);
        var path = System.IO.Path.Combine(folder, FileName);
        using var self = Process.GetCurrentProcess();
        var token = Guid.NewGuid().ToString("N");
        var record = new JsonObject
        {
            ["pid"] = Environment.ProcessId,
            ["process_start_utc"] = StartTimeOf(self),
            ["host"] = Environment.MachineName,
            ["command"] = command,
            ["acquired_utc"] = DateTime.UtcNow.ToString("O", CultureInfo.InvariantCulture),
            ["token"] = token,
        }.ToJsonString();
        string? staleNote = null;
        for (int attempt = 0; attempt < 3; attempt++)
        {
            try
            {
                using (
                    var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.Read)
                )
                {
                    stream.Write(System.Text.Encoding.UTF8.GetBytes(record));
                    stream.Flush(flushToDisk: true);
                }

                if (File.ReadAllText(path).Contains(token, StringComparison.Ordinal))
                {
                    return new FolderLock(folder, path, token, staleNote);
                }
            }
            catch (IOException) when (File.Exists(path)) { }

            var holder = Describe(path, out bool stale);
            if (!stale)
            {
                throw new IOException(
                    $"{folder} is in use by {holder} (lock file {path}); wait for it to finish, or delete the lock file if no such run is alive."
                );
            }

            staleNote = $"took over the stale lock of {holder}";
            try
            {
                File.Delete(path);
            }
            catch (IOException) { }
        }

        throw new IOException(
            $"Could not lock {folder}: {path} keeps changing; is another run starting there?"
        );
    }

    /// <summary>Who holds the lock at <paramref name="path"/>, and whether that holder is gone.</summary>
    private static string Describe(string path, out bool stale)
    {
        JsonObject? json = null;
        try
        {
            json = JsonNode.Parse(File.ReadAllText(path)) as JsonObject;
        }
        catch (Exception e) when (e is JsonException or IOException)
        {
            // An unreadable or torn lock record: its writer died while writing it.
        }

        if (
            json?["pid"] is not JsonValue pidValue
            || !pidValue.TryGetValue<int>(out var pid)
            || json["host"]?.GetValue<string>() is not { } host
        )
        {
            stale = true;
            return "an unreadable lock record";
        }

        var command = json["command"]?.ToString() ?? "?";
        var since = json["acquired_utc"]?.ToString() ?? "?";
        var who = $"'{command}' (process {pid} on {host}, since {since})";
        if (!string.Equals(host, Environment.MachineName, StringComparison.OrdinalIgnoreCase))
        {
            stale = false; // another machine's process cannot be checked from here
            return who;
        }

        stale = !IsAlive(pid, json["process_start_utc"]?.ToString());
        return who;
    }

    private static bool IsAlive(int pid, string? startedUtc)
    {
        try
        {
            using var process = Process.GetProcessById(pid);
            if (process.HasExited)
            {
                return false;
            }

            // A reused process id belongs to a process started at another time (the start time is derived
            // from the boot clock, so allow a little jitter).
            return !DateTime.TryParse(
                    startedUtc,
                    CultureInfo.InvariantCulture,
                    DateTimeStyles.RoundtripKind,
                    out var recorded
                )
                || !DateTime.TryParse(
                    StartTimeOf(process),
                    CultureInfo.InvariantCulture,
                    DateTimeStyles.RoundtripKind,
                    out var actual
                )
                || Math.Abs((actual - recorded).TotalSeconds) < 2;
        }
        catch (ArgumentException)
        {
            return false; // no such process
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }

    private static string StartTimeOf(Process process)
    {
        try
        {
            return process.StartTime.ToUniversalTime().ToString("O", CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            return "?";
        }
    }

    /// <summary>Removes the lock file if it is still this lock's.</summary>
    public void Dispose()
    {
        if (_released)
        {
            return;
        }

        _released = true;
        try
        {
            if (File.Exists(Path) && File.ReadAllText(Path).Contains(_token, StringComparison.Ordinal))
            {
                File.Delete(Path);
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}
