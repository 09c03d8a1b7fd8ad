using System.CommandLine;
using System.Text.Json;
using IlgpuSae.Backends;
using Spectre.Console;

namespace IlgpuSae.Cli.Commands;

/// <summary><c>ilgpu-sae devices [--json]</c>: every device ILGPU sees and which one auto picks.</summary>
internal static class DevicesCommand
{
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    public static Command Create()
    {
        var json = new Option<bool>("--json") { Description = "Print machine-readable JSON." };
        var command = new Command(
            "devices",
            "List every device ILGPU sees (CUDA, OpenCL, CPU) and the one 'auto' picks."
        )
        {
            json,
        };
        command.SetAction(parse =>
            CommonOptions.Guard(() =>
            {
                var devices = DeviceCatalog.ListDevices();
                // An explicit --backend lists that backend's devices, and is an error when it has none.
                if (
                    parse.GetValue(CommonOptions.Backend) is { } explicitBackend
                    && BackendKinds.Parse(explicitBackend) is var kind and not BackendKind.Auto
                )
                {
                    if (!devices.Any(d => d.Backend == kind && d.IsSupported))
                    {
                        throw new BackendUnavailableException(
                            $"Backend '{kind.ToName()}' is not available on this machine.",
                            devices
                        );
                    }

                    devices = [.. devices.Where(d => d.Backend == kind)];
                }
                if (parse.GetValue(json))
                {
                    var payload = new
                    {
                        auto = devices.FirstOrDefault(d => d.IsAutoChoice)?.Index,
                        devices = devices.Select(d => new
                        {
                            index = d.Index,
                            backend = d.Backend.ToName(),
                            backendIndex = d.BackendIndex,
                            label = d.Label,
                            type = d.Type,
                            name = d.Name,
                            memoryBytes = d.MemoryBytes,
                            warpSize = d.WarpSize,
                            maxGroupSize = d.MaxGroupSize,
                            multiprocessors = d.Multiprocessors,
                            supported = d.IsSupported,
                            unsupportedReason = d.UnsupportedReason,
                            kernelVariant = d.DefaultVariant.ToString(),
                            auto = d.IsAutoChoice,
                        }),
                    };
                    Console.WriteLine(JsonSerializer.Serialize(payload, Json));
                    return 0;
                }

                var table = new Table().AddColumns(
                    "#",
                    "device",
                    "type",
                    "name",
                    "memory",
                    "warp",
                    "max group",
                    "MPs",
                    "kernels",
                    "auto"
                );
                foreach (var d in devices)
                {
                    table.AddRow(
                        d.Index.ToString(),
                        d.Label,
                        d.Type,
                        Markup.Escape(d.Name),
                        $"{d.MemoryBytes / (1024.0 * 1024 * 1024):0.##} GiB",
                        d.WarpSize > 0 ? d.WarpSize.ToString() : "?",
                        d.MaxGroupSize.ToString(),
                        d.Multiprocessors.ToString(),
                        d.IsSupported ? d.DefaultVariant.ToString() : "[red]unsupported[/]",
                        d.IsAutoChoice ? "[green]<- auto[/]" : ""
                    );
                }

                var console = CommonOptions.CreateConsole();
                console.Write(table);
                foreach (var d in devices.Where(d => !d.IsSupported))
                {
                    console.MarkupLine($"[yellow]{d.Label}[/]: {Markup.Escape(d.UnsupportedReason!)}");
                }

                var all = DeviceCatalog.ListDevices();
                if (
                    all.FirstOrDefault(d => d.IsAutoChoice) is { } auto
                    && DeviceCatalog.FasterBackendHint(all, auto) is { } hint
                )
                {
                    console.WriteLine(hint);
                }

                return 0;
            })
        );
        return command;
    }
}
