using System.CommandLine;
using IlgpuSae.Sae;

namespace IlgpuSae.Cli.Commands;

/// <summary><c>export</c>: the exact JumpReLU form of a tied gated SAE
/// (<see cref="SaeFiles.ExportJumpRelu"/>).</summary>
internal static class ExportCommand
{
    public static Command Create()
    {
        var sae = new Option<string>("--sae")
        {
            Description = "A tied gated, batchtopk or matryoshka_batchtopk SAE folder.",
            Required = true,
        };
        var to = new Option<string>("--to")
        {
            Description = "Target architecture (jumprelu).",
            Required = true,
        };
        to.AcceptOnlyFromAmong("jumprelu");
        var output = new Option<string>("--out") { Description = "Output SAE folder.", Required = true };
        var command = new Command(
            "export",
            "Export a tied gated SAE as the exactly equivalent JumpReLU SAE, or a BatchTopK/Matryoshka SAE (training form) as the JumpReLU SAE of its inference threshold (SAELens layout)."
        )
        {
            sae,
            to,
            output,
        };
        command.SetAction(parse =>
            CommonOptions.Guard(() =>
            {
                IO.OutputPaths.EnsureSeparate(
                    "--out",
                    parse.GetValue(output),
                    ("--sae", parse.GetValue(sae))
                );
                using var device = CommonOptions.OpenDevice(parse);
                using var source = SaeFiles.Load(device, parse.GetValue(sae)!);
                if (
                    source.Config.Architecture != SaeArchitecture.Gated
                    && source.Architecture is not BatchTopKSae
                )
                {
                    throw new ArgumentException(
                        $"{parse.GetValue(sae)} is a {source.Config.Architecture} SAE; export --to jumprelu needs a tied gated, batchtopk or matryoshka_batchtopk one."
                    );
                }

                using var jump =
                    source.Architecture is BatchTopKSae
                        ? BatchTopKSae.ToJumpRelu(source)
                        : SaeFiles.ExportJumpRelu(source);
                SaeFiles.Save(jump, parse.GetValue(output)!);
                Console.WriteLine(
                    $"Wrote the JumpReLU form of {parse.GetValue(sae)} to {parse.GetValue(output)}."
                );
                return 0;
            })
        );
        return command;
    }
}
