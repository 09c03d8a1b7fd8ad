using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using IlgpuSae.Training;

namespace IlgpuSae.Distributed;

/// <summary>
/// A <see cref="ITrainingGroup"/> over MPI (MPI.NET 1.4.0 on MPICH). MPI.NET P/Invokes <c>msmpi.dll</c>
/// (Microsoft MPI); MPICH shares MS-MPI's handle constants and status layout, so the name is resolved to
/// MPICH's <c>libmpich.so.12</c> (or <c>ILGPUSAE_MPI_LIBRARY</c>). Open MPI's ABI differs and does not work.
/// Nothing here is loaded unless a run asks for it, so single-process training needs no MPI library.
/// </summary>
public sealed class MpiTrainingGroup : ITrainingGroup, IDisposable
{
    /// <summary>Environment variable naming the MPI library to load instead of libmpich.so.12.</summary>
    public const string LibraryVariable = "ILGPUSAE_MPI_LIBRARY";

    private static IntPtr _library;
    private readonly MPI.Environment _environment;
    private readonly MPI.Intracommunicator _world;
    private readonly Stopwatch _watch = new();
    private bool _aborted;

    private MpiTrainingGroup(MPI.Environment environment)
    {
        _environment = environment;
        _world = MPI.Communicator.world;
    }

    /// <inheritdoc/>
    public int Rank => _world.Rank;

    /// <inheritdoc/>
    public int Size => _world.Size;

    /// <summary>This process's rank among the ranks on its node (hydra's <c>MPI_LOCALRANKID</c>), for
    /// picking a device; the world rank when the launcher does not say.</summary>
    public int LocalRank =>
        int.TryParse(
            System.Environment.GetEnvironmentVariable("MPI_LOCALRANKID"),
            NumberStyles.Integer,
            CultureInfo.InvariantCulture,
            out int local
        )
            ? local
            : Rank;

    /// <inheritdoc/>
    public long BytesMoved { get; private set; }

    /// <inheritdoc/>
    public double CommunicationSeconds => _watch.Elapsed.TotalSeconds;

    /// <summary>
    /// The number of processes an MPI launcher started this one among (MPICH hydra's <c>PMI_SIZE</c>), or
    /// null when it was not started by one.
    /// </summary>
    /// <exception cref="ArgumentException">Open MPI's launcher started it (its ABI does not work with
    /// MPI.NET).</exception>
    public static int? LaunchSize()
    {
        if (System.Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_SIZE") is not null)
        {
            throw new ArgumentException(
                "this process was started by Open MPI's mpirun, which MPI.NET cannot use; start it with MPICH's mpiexec (Debian: mpiexec.mpich, packages mpich libmpich-dev)."
            );
        }

        string? size = System.Environment.GetEnvironmentVariable("PMI_SIZE");
        return int.TryParse(size, NumberStyles.Integer, CultureInfo.InvariantCulture, out int n) ? n : null;
    }

    /// <summary>Initialises MPI (once per process) and joins the world communicator.</summary>
    /// <exception cref="ArgumentException">No MPI library could be loaded; the message names the Debian
    /// packages.</exception>
    public static MpiTrainingGroup Join()
    {
        LoadLibrary();
        var args = Array.Empty<string>();
        return new MpiTrainingGroup(new MPI.Environment(ref args));
    }

    private static void LoadLibrary()
    {
        if (_library != IntPtr.Zero)
        {
            return;
        }

        string name = System.Environment.GetEnvironmentVariable(LibraryVariable) ?? "libmpich.so.12";
        if (!NativeLibrary.TryLoad(name, out var handle))
        {
            throw new ArgumentException(
                $"the MPI library {name} could not be loaded: install MPICH (Debian packages mpich libmpich-dev) or set {LibraryVariable} to its libmpich.so."
            );
        }

        _library = handle;
        NativeLibrary.SetDllImportResolver(
            typeof(MPI.Communicator).Assembly,
            (library, _, _) =>
                library.StartsWith("msmpi", StringComparison.OrdinalIgnoreCase) ? _library : IntPtr.Zero
        );
    }

    /// <inheritdoc/>
    public void SumToAll(float[] buffer)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        Timed(
            () =>
            {
                var sum = _world.Reduce(buffer, MPI.Operation<float>.Add, 0);
                if (Rank == 0)
                {
                    Array.Copy(sum, buffer, buffer.Length);
                }

                _world.Broadcast(ref buffer, 0);
            },
            2L * buffer.Length * sizeof(float)
        );
    }

    /// <inheritdoc/>
    public void SumToAll(double[] buffer)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        Timed(
            () =>
            {
                var sum = _world.Reduce(buffer, MPI.Operation<double>.Add, 0);
                if (Rank == 0)
                {
                    Array.Copy(sum, buffer, buffer.Length);
                }

                _world.Broadcast(ref buffer, 0);
            },
            2L * buffer.Length * sizeof(double)
        );
    }

    /// <inheritdoc/>
    public void Broadcast(float[] buffer, int root = 0) =>
        Timed(() => _world.Broadcast(ref buffer, root), (long)buffer.Length * sizeof(float));

    /// <inheritdoc/>
    public void Broadcast(double[] buffer, int root = 0) =>
        Timed(() => _world.Broadcast(ref buffer, root), (long)buffer.Length * sizeof(double));

    /// <inheritdoc/>
    public void Broadcast(long[] buffer, int root = 0) =>
        Timed(() => _world.Broadcast(ref buffer, root), (long)buffer.Length * sizeof(long));

    /// <inheritdoc/>
    public float[]? Gather(float[] local, int root = 0)
    {
        ArgumentNullException.ThrowIfNull(local);
        float[]? all = null;
        Timed(
            () =>
            {
                var gathered = _world.GatherFlattened(local, root);
                all = Rank == root ? gathered : null;
            },
            (long)local.Length * sizeof(float)
        );
        return all;
    }

    /// <inheritdoc/>
    public byte[][] AllGather(byte[] value)
    {
        ArgumentNullException.ThrowIfNull(value);
        byte[][] result = [];
        Timed(
            () =>
            {
                var lengths = _world.Allgather(value.Length);
                var flat = _world.AllgatherFlattened(value, lengths);
                result = new byte[lengths.Length][];
                int offset = 0;
                for (int r = 0; r < lengths.Length; r++)
                {
                    result[r] = flat.AsSpan(offset, lengths[r]).ToArray();
                    offset += lengths[r];
                }
            },
            value.Length * (long)Size
        );
        return result;
    }

    /// <summary>Ends every rank of the job at once (MPI_Abort): for a failure on one rank mid-run, where
    /// the others would otherwise wait forever in the next collective.</summary>
    public void Abort(int exitCode)
    {
        _aborted = true;
        _world.Abort(exitCode);
    }

    private void Timed(Action body, long bytes)
    {
        _watch.Start();
        try
        {
            body();
        }
        finally
        {
            _watch.Stop();
        }

        BytesMoved += bytes;
    }

    /// <summary>Finalises MPI (after every rank's last collective).</summary>
    public void Dispose()
    {
        if (!_aborted && !MPI.Environment.Finalized)
        {
            _environment.Dispose();
        }
    }
}
