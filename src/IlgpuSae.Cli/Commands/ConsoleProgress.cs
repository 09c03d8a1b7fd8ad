using System.Globalization;
using Spectre.Console;

namespace IlgpuSae.Cli.Commands;

/// <summary>Progress displays: a bar on a terminal, periodic lines when the output is redirected.</summary>
internal static class ConsoleProgress
{
    /// <summary>Runs <paramref name="body"/> under a progress bar (or a line every 10 %); with
    /// <paramref name="unit"/>, the rate in units per second is shown too.</summary>
    public static T Run<T>(string label, long total, Func<Action<long>, T> body, string? unit = null)
    {
        if (Console.IsOutputRedirected)
        {
            long lastPrinted = -1;
            var started = DateTime.UtcNow;
            return body(value =>
            {
                long bucket = total > 0 ? value * 10 / total : 0;
                if (bucket != lastPrinted)
                {
                    lastPrinted = bucket;
                    double seconds = (DateTime.UtcNow - started).TotalSeconds;
                    var rate = unit is null
                        ? ""
                        : string.Create(
                            CultureInfo.InvariantCulture,
                            $", {value / Math.Max(seconds, 1e-3):F0} {unit}/s"
                        );
                    Console.WriteLine(
                        string.Create(
                            CultureInfo.InvariantCulture,
                            $"{label}: {value}/{total} ({100.0 * value / Math.Max(total, 1):F0}%, {seconds:F0} s{rate})"
                        )
                    );
                }
            });
        }

        T result = default!;
        AnsiConsole
            .Progress()
            .Columns([
                new TaskDescriptionColumn(),
                new ProgressBarColumn(),
                new PercentageColumn(),
                .. (unit is null ? Array.Empty<ProgressColumn>() : [new RateColumn(unit)]),
                new RemainingTimeColumn(),
                new SpinnerColumn(),
            ])
            .Start(ctx =>
            {
                var task = ctx.AddTask(label, maxValue: Math.Max(total, 1));
                result = body(value => task.Value = value);
            });
        return result;
    }

    /// <summary>Units per second of a task (Spectre's own speed column counts bytes).</summary>
    private sealed class RateColumn(string unit) : ProgressColumn
    {
        public override Spectre.Console.Rendering.IRenderable Render(
            Spectre.Console.Rendering.RenderOptions options,
            ProgressTask task,
            TimeSpan deltaTime
        ) =>
            new Text(
                task.Speed is { } speed
                    ? string.Create(CultureInfo.InvariantCulture, $"{speed:F0} {unit}/s")
                    : $"– {unit}/s"
            );
    }

    /// <summary>Reports on the calling thread (System.Progress would post to the thread pool and reorder
    /// lines).</summary>
    public sealed class Relay<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
