using System.CommandLine;
using IlgpuSae.Backends;
using Spectre.Console;

namespace IlgpuSae.Cli.Commands;

/// <summary>Options every command takes, and shared helpers.</summary>
internal static class CommonOptions
{
    /// <summary><c>--backend auto|cpu|opencl|cuda</c>; falls back to <c>ILGPUSAE_BACKEND</c>, then
    /// auto.</summary>
    public static Option<string?> Backend { get; } = CreateBackend();

    /// <summary><c>--device N</c>: which device of the backend (of the full list with auto).</summary>
    public static Option<int?> Device { get; } =
        new("--device")
        {
            Description =
                "Device number within the backend (within the full list for --backend auto); see 'devices'.",
            Recursive = true,
        };

    /// <summary><c>--tensor-cores</c>: TF32 tensor-core matrix products (CUDA sm_80+; emulated on the CPU
    /// accelerator).</summary>
    public static Option<bool> TensorCores { get; } =
        new("--tensor-cores")
        {
            Description =
                "Run matrix products on TF32 tensor cores (CUDA sm_80+, ~10-bit mantissa inputs; not yet verified on a GPU). "
                + "On the CPU accelerator the instruction is emulated (slow, for testing); OpenCL refuses it.",
            Recursive = true,
        };

    private static Option<string?> CreateBackend()
    {
        var option = new Option<string?>("--backend")
        {
            Description =
                $"Compute backend: auto, cpu, opencl or cuda (default: ${BackendKinds.EnvironmentVariable}, else auto).",
            Recursive = true,
            HelpName = "auto|cpu|opencl|cuda",
        };
        option.Validators.Add(result =>
        {
            var value = result.GetValueOrDefault<string?>();
            if (value is not null && !BackendKinds.Names.Contains(value.ToLowerInvariant()))
            {
                result.AddError(
                    $"Unknown backend '{value}'. Expected one of: {string.Join(", ", BackendKinds.Names)}."
                );
            }
        });
        return option;
    }

    // Counts that must be at least 1, and counts that must not be negative, wherever a command has them.
    private static readonly HashSet<string> PositiveCounts =
    [
        "--batch-size",
        "--lm-batch",
        "--shard-rows",
        "--log-every",
        "--steps",
        "--rows",
        "--d",
        "--features",
        "--d-sae",
        "--k",
        "--expansion",
        "--eval-tokens",
        "--ito-l0",
    ];

    private static readonly HashSet<string> NonNegativeCounts =
    [
        "--tokens",
        "--lr-warmup",
        "--l1-warmup",
        "--checkpoint-every",
        "--resample-every",
        "--context",
        "--device",
    ];

    /// <summary>
    /// Adds range checks to every count option of <paramref name="command"/> and its subcommands (by name:
    /// batch sizes, periods and widths must be positive, token counts and warm-ups not negative), so that
    /// <c>--batch-size 0</c> or <c>-1</c> is a parse error naming the option, in every command.
    /// </summary>
    public static void AddRangeChecks(Command command)
    {
        ArgumentNullException.ThrowIfNull(command);
        foreach (var option in command.Options)
        {
            bool positive = PositiveCounts.Contains(option.Name);
            if (positive || NonNegativeCounts.Contains(option.Name))
            {
                option.Validators.Add(result =>
                {
                    foreach (var token in result.Tokens)
                    {
                        if (
                            long.TryParse(
                                token.Value,
                                System.Globalization.NumberStyles.Integer,
                                System.Globalization.CultureInfo.InvariantCulture,
                                out var v
                            ) && (positive ? v <= 0 : v < 0)
                        )
                        {
                            result.AddError(
                                $"{option.Name} must be {(positive ? "at least 1" : "0 or more")}, got {v}."
                            );
                        }
                    }
                });
            }
        }

        foreach (var sub in command.Subcommands)
        {
            AddRangeChecks(sub);
        }
    }

    /// <summary>Opens the device the options (or the environment) ask for.</summary>
    /// <param name="parse">The parsed command line.</param>
    /// <param name="options">Device options, or null for the defaults.</param>
    /// <param name="defaultIndex">The device when <c>--device</c> is not given (a parallel rank's
    /// round-robin choice), or null for the backend's first usable one.</param>
    public static SaeDevice OpenDevice(
        ParseResult parse,
        SaeDeviceOptions? options = null,
        int? defaultIndex = null
    )
    {
        options ??= new SaeDeviceOptions();
        if (parse.GetValue(TensorCores))
        {
            options = options with
            {
                TensorCores = true,
                Variant = options.Variant == KernelVariant.Auto ? KernelVariant.GpuShaped : options.Variant,
            };
        }

        var device = SaeDevice.Create(
            BackendKinds.Resolve(parse.GetValue(Backend)),
            parse.GetValue(Device) ?? defaultIndex,
            options
        );
        WriteSpeedHint(device.Description);
        return device;
    }

    private static bool _hinted;

    /// <summary>
    /// The first line of every command that opens a device: on ILGPU's CPU accelerator with no usable
    /// OpenCL runtime, how much faster one would be and how to get it (standard error, once per process;
    /// <c>ILGPUSAE_NO_HINT=1</c> silences it).
    /// </summary>
    public static void WriteSpeedHint(DeviceDescription chosen)
    {
        if (_hinted || Environment.GetEnvironmentVariable("ILGPUSAE_NO_HINT") == "1")
        {
            return;
        }

        _hinted = true;
        // Only the CPU accelerator can get a hint: other devices need no second device enumeration.
        if (
            chosen.Backend == BackendKind.Cpu
            && DeviceCatalog.FasterBackendHint(DeviceCatalog.ListDevices(), chosen) is { } hint
        )
        {
            Console.Error.WriteLine(hint);
        }
    }

    /// <summary>
    /// Runs a command body, turning expected failures into one <c>error:</c> line and exit code 2. Anything
    /// else (a bug) is still one line, naming the exception type, with exit code 70: no input ever produces
    /// a .NET stack trace. Cancellation (Ctrl-C) passes through.
    /// </summary>
    public static int Guard(Func<int> body)
    {
        try
        {
            return GuardExpected(body);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            Console.Error.WriteLine(
                $"error: internal error ({e.GetType().Name}): {OneLine(e.Message)} (please report this)"
            );
            return 70;
        }
    }

    private static string OneLine(string message) => message.ReplaceLineEndings(" ").Trim();

    private static int GuardExpected(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (UnauthorizedAccessException e)
        {
            Console.Error.WriteLine($"error: {OneLine(e.Message)} (no permission)");
            return 2;
        }
        catch (BackendUnavailableException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 2;
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 2;
        }
        catch (Exception e)
            when (e
                    is IOException
                        or InvalidDataException
                        or NotSupportedException
                        or KeyNotFoundException
                        or InvalidOperationException
            )
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 2;
        }
    }

    /// <summary>A console on the current standard output that does not wrap tables at 80 columns when
    /// redirected.</summary>
    public static IAnsiConsole CreateConsole()
    {
        var console = AnsiConsole.Create(
            new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Out) }
        );
        if (Console.IsOutputRedirected)
        {
            console.Profile.Width = 200;
        }

        return console;
    }
}
