using System.Text;
using IlgpuSae.Backends;
using IlgpuSae.Distributed;

namespace IlgpuSae.Cli.Commands;

/// <summary>
/// The start of a <c>train --parallel</c> or <c>activations --parallel data</c> run under mpiexec: joins
/// MPI, and makes the ranks agree before their first collective work. Every rank either reaches
/// <see cref="Agree"/> with the digest of its configuration and data, or fails while setting up and reports
/// its error through <see cref="Fail"/>; both are the same collective, so a rank that cannot start never
/// leaves the others waiting, and ranks started with other options or data refuse together. A run may
/// agree more than once (<c>train --model … --cache-activations</c> agrees on the cache before building it
/// and on the training configuration after); after the first agreement a failure stops every rank
/// (<see cref="AbortAll"/>).
/// </summary>
internal sealed class ParallelLaunch : IDisposable
{
    /// <summary>Environment variable that turns on the replica check (same as
    /// <c>--parallel-check</c>).</summary>
    public const string CheckVariable = "ILGPUSAE_PARALLEL_CHECK";

    private ParallelLaunch(MpiTrainingGroup group) => Group = group;

    /// <summary>The MPI group.</summary>
    public MpiTrainingGroup Group { get; }

    /// <summary>Whether the start-up collective has run (after which a failure must abort the job).</summary>
    public bool Started { get; private set; }

    /// <summary>Whether every rank agreed (at least once) and the collective work has begun.</summary>
    public bool Agreed { get; private set; }

    /// <summary>
    /// Checks how this process was started against <paramref name="mode"/> (the <c>--parallel</c> value or
    /// null): returns null for a single-process run and joins MPI for a parallel one.
    /// </summary>
    /// <exception cref="ArgumentException">--parallel without an MPI launch, an MPI launch of several
    /// processes without --parallel, Open MPI's launcher, or no MPI library.</exception>
    public static ParallelLaunch? Open(string? mode, string outDir, string command = "train")
    {
        int? size = MpiTrainingGroup.LaunchSize();
        if (mode is null)
        {
            if (size > 1)
            {
                throw new ArgumentException(
                    command == "train"
                        ? $"train was started by mpiexec as one of {size} processes but without --parallel: each would train the same SAE into {outDir}. Add --parallel data, or run train without mpiexec."
                        : $"{command} was started by mpiexec as one of {size} processes but without --parallel: each would write the same files into {outDir}. Add --parallel data, or run {command} without mpiexec."
                );
            }

            return null;
        }

        if (size is null)
        {
            throw new ArgumentException(
                $"--parallel {mode} needs an MPI launch: start {command} under MPICH's mpiexec, e.g. mpiexec -n 2 dotnet run --project src/IlgpuSae.Cli -c Release -- {command} … --parallel {mode} (Debian packages mpich libmpich-dev)."
            );
        }

        var launch = new ParallelLaunch(MpiTrainingGroup.Join());
        Console.WriteLine(
            $"parallel {mode}: rank {launch.Group.Rank} of {launch.Group.Size}, pid {Environment.ProcessId}, host {Environment.MachineName}."
        );
        if (launch.Group.Rank != 0)
        {
            Console.SetOut(TextWriter.Null); // rank 0 reports for all; errors still reach standard error
        }

        return launch;
    }

    /// <summary>
    /// The device index of this rank when <c>--device</c> is not given: local rank r takes device
    /// r mod (devices of the backend), for a named backend with several devices; null (the backend's
    /// first usable device) otherwise.
    /// </summary>
    public int? DefaultDevice(BackendKind backend)
    {
        if (backend == BackendKind.Auto)
        {
            return null;
        }

        int count = DeviceCatalog.ListDevices().Count(d => d.Backend == backend && d.IsSupported);
        return count > 1 ? Group.LocalRank % count : null;
    }

    /// <summary>
    /// The start-up collective on a rank that is ready: fails unless every rank is ready with the same
    /// <paramref name="digest"/>. <paramref name="what"/> names what must match, for the error.
    /// </summary>
    /// <exception cref="InvalidOperationException">Another rank could not start, or the digests
    /// differ.</exception>
    public void Agree(
        byte[] digest,
        string what = "every rank must run the same train command on the same activations"
    )
    {
        var all = Exchange([0, .. digest]);
        for (int r = 0; r < all.Length; r++)
        {
            if (all[r][0] == 1)
            {
                throw new InvalidOperationException(
                    $"rank {r} of {all.Length} could not start: {Encoding.UTF8.GetString(all[r], 1, all[r].Length - 1)}"
                );
            }
        }

        var differ = Enumerable
            .Range(1, all.Length - 1)
            .Where(r => !all[r].AsSpan().SequenceEqual(all[0]))
            .ToArray();
        if (differ.Length > 0)
        {
            throw new InvalidOperationException(
                $"rank(s) {string.Join(", ", differ)} were started with other options or other data than rank 0 (their configuration digests differ): {what}."
            );
        }

        Agreed = true;
    }

    /// <summary>The start-up collective on a rank that failed while setting up: tells the others
    /// why.</summary>
    public void Fail(Exception error)
    {
        ArgumentNullException.ThrowIfNull(error);
        Exchange([1, .. Encoding.UTF8.GetBytes(error.Message)]);
    }

    private byte[][] Exchange(byte[] payload)
    {
        if (Started && !Agreed)
        {
            throw new InvalidOperationException("The start-up collective failed; it does not run again.");
        }

        Started = true;
        return Group.AllGather(payload);
    }

    /// <summary>Ends the whole job after a failure on this rank during training (others would wait in
    /// their next collective): prints the error and calls MPI_Abort.</summary>
    public void AbortAll(Exception error)
    {
        ArgumentNullException.ThrowIfNull(error);
        Console.Error.WriteLine(
            $"error: rank {Group.Rank} of {Group.Size}: {error.Message.ReplaceLineEndings(" ").Trim()} (stopping every rank)"
        );
        Console.Error.Flush();
        Console.Out.Flush();
        Group.Abort(2);
    }

    /// <inheritdoc/>
    public void Dispose() => Group.Dispose();
}
