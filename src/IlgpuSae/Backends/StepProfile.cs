using System.Diagnostics;
using System.Globalization;
using IlgpuSae.Backends;

namespace IlgpuSae.Backends;

/// <summary>
/// Wall time per phase of training steps, accumulated over the steps it is attached to
/// (<see cref="Sae.SparseAutoencoder.Profile"/>): the device is synchronised at each mark, so each phase's
/// time is
/// the time its kernels took.
/// </summary>
public sealed class StepProfile
{
    private readonly Dictionary<string, double> _seconds = [];
    private readonly List<string> _order = [];
    private readonly Stopwatch _watch = new();

    /// <summary>Seconds per phase, in the order the phases first ran.</summary>
    public IReadOnlyList<(string Phase, double Seconds)> Phases => [.. _order.Select(p => (p, _seconds[p]))];

    /// <summary>Synchronises <paramref name="device"/> and starts timing the next phase.</summary>
    public void Start(SaeDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        device.Synchronize();
        _watch.Restart();
    }

    /// <summary>Synchronises <paramref name="device"/> and adds the time since the last mark to
    /// <paramref name="phase"/>.</summary>
    public void Mark(SaeDevice device, string phase)
    {
        ArgumentNullException.ThrowIfNull(device);
        device.Synchronize();
        double elapsed = _watch.Elapsed.TotalSeconds;
        _watch.Restart();
        if (!_seconds.TryAdd(phase, elapsed))
        {
            _seconds[phase] += elapsed;
        }
        else
        {
            _order.Add(phase);
        }
    }

    /// <summary>One line: each phase's share of the total, e.g. <c>encoder 41 %, decoder 12 %,
    /// …</c>.</summary>
    public override string ToString()
    {
        double total = _seconds.Values.Sum();
        return total <= 0
            ? ""
            : string.Join(
                ", ",
                Phases.Select(p =>
                    string.Create(CultureInfo.InvariantCulture, $"{p.Phase} {p.Seconds / total * 100:0} %")
                )
            );
    }
}
