using System.Globalization;
using Spectre.Console;

namespace IlgpuSae.Cli.Commands;

/// <summary>Progress displays: a bar on a terminal, periodic lines when the output is redirected.</summary>
internal static class ConsoleProgress
{
    /// <summary>Runs <paramref name="body"/> under a progress bar (or a line every 10 %).</summary>
    public static T Run<T>(string label, long total, Func<Action<long>, T> body)
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
                    Console.WriteLine(
                        string.Create(
                            CultureInfo.InvariantCulture,
                            $"{label}: {value}/{total} ({100.0 * value / Math.Max(total, 1):F0}%, {(DateTime.UtcNow - started).TotalSeconds:F0} s)"
                        )
                    );
                }
            });
        }

        T result = default!;
        AnsiConsole
            .Progress()
            .Columns(
                new TaskDescriptionColumn(),
                new ProgressBarColumn(),
                new PercentageColumn(),
                new RemainingTimeColumn(),
                new SpinnerColumn()
            )
            .Start(ctx =>
            {
                var task = ctx.AddTask(label, maxValue: Math.Max(total, 1));
                result = body(value => task.Value = value);
            });
        return result;
    }

    /// <summary>Reports on the calling thread (System.Progress would post to the thread pool and reorder
    /// lines).</summary>
    public sealed class Relay<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
