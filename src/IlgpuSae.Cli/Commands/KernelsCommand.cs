using System.CommandLine;
using ILGPU.Runtime.Cuda;
using IlgpuSae.Kernels;

namespace IlgpuSae.Cli.Commands;

/// <summary><c>ilgpu-sae kernels [--emit ptx --out DIR]</c>: lists the kernels, or compiles each to
/// PTX.</summary>
internal static class KernelsCommand
{
    public static Command Create()
    {
        var emit = new Option<string?>("--emit")
        {
            Description = "Compile every kernel to this target (ptx) instead of listing them.",
        };
        emit.AcceptOnlyFromAmong("ptx");
        var output = new Option<DirectoryInfo?>("--out") { Description = "Output folder for --emit." };
        var arch = new Option<string>("--arch")
        {
            Description = "CUDA architecture, e.g. sm_80, sm_86.",
            DefaultValueFactory = _ => "sm_80",
        };
        var isa = new Option<string>("--isa")
        {
            Description = "PTX ISA version; 7.8 is the newest Debian's ptxas 11.8 accepts.",
            DefaultValueFactory = _ => "7.8",
        };
        var command = new Command(
            "kernels",
            "List every ILGPU kernel of the library, or compile them all to PTX."
        )
        {
            emit,
            output,
            arch,
            isa,
        };
        command.SetAction(parse =>
            CommonOptions.Guard(() =>
            {
                if (parse.GetValue(emit) is null)
                {
                    foreach (var k in KernelCatalog.All)
                    {
                        Console.WriteLine($"{k.Name}\t{(k.ExplicitlyGrouped ? "explicit" : "implicit")}");
                    }

                    return 0;
                }

                var dir =
                    parse.GetValue(output) ?? throw new ArgumentException("--emit ptx needs --out DIR.");
                var architecture = ParseArchitecture(parse.GetValue(arch)!);
                var instructionSet = ParseIsa(parse.GetValue(isa)!);
                var files = PtxEmitter.Emit(dir.FullName, architecture, instructionSet);
                Console.WriteLine(
                    $"Wrote {files.Count} PTX files ({architecture}, {instructionSet}) to {dir.FullName}"
                );
                return 0;
            })
        );
        return command;
    }

    /// <summary>Parses <c>sm_80</c>, <c>sm_86</c>, <c>sm_120</c>, … (the last digit is the minor
    /// version).</summary>
    private static CudaArchitecture ParseArchitecture(string text)
    {
        var digits = text.Trim().ToLowerInvariant().Replace("sm_", "", StringComparison.Ordinal);
        if (digits.Length < 2 || !int.TryParse(digits, out _))
        {
            throw new ArgumentException($"--arch: expected a CUDA architecture such as sm_80, got '{text}'.");
        }

        return new CudaArchitecture(int.Parse(digits[..^1]), digits[^1] - '0');
    }

    /// <summary>Parses a PTX ISA version such as <c>7.8</c>.</summary>
    private static CudaInstructionSet ParseIsa(string text)
    {
        var parts = text.Trim().Split('.');
        if (
            parts.Length != 2
            || !int.TryParse(parts[0], out var major)
            || !int.TryParse(parts[1], out var minor)
        )
        {
            throw new ArgumentException($"--isa: expected a PTX ISA version such as 7.8, got '{text}'.");
        }

        return new CudaInstructionSet(major, minor);
    }
}
