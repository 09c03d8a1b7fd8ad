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

    /// <summary>Opens the device the options (or the environment) ask for.</summary>
    public static SaeDevice OpenDevice(ParseResult parse, SaeDeviceOptions? options = null)
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

        return SaeDevice.Create(
            BackendKinds.Resolve(parse.GetValue(Backend)),
            parse.GetValue(Device),
            options
        );
    }

    /// <summary>Runs a command body, turning expected failures into a message and exit code 2.</summary>
    public static int Guard(Func<int> body)
    {
        try
        {
            return body();
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
