using System.CommandLine;
using IlgpuSae.Cli.Commands;

namespace IlgpuSae.Cli;

/// <summary>Entry point of <c>ilgpu-sae</c>.</summary>
public static class Program
{
    /// <summary>Parses the command line and runs the chosen command.</summary>
    public static int Main(string[] args)
    {
        var root = new RootCommand(
            "ilgpu-sae: train and evaluate sparse autoencoders (Gated, standard) with ILGPU kernels on CUDA, OpenCL or the CPU.");
        root.Options.Add(CommonOptions.Backend);
        root.Options.Add(CommonOptions.Device);
        root.Options.Add(CommonOptions.TensorCores);
        root.Subcommands.Add(DevicesCommand.Create());
        root.Subcommands.Add(SelfCheckCommand.Create());
        root.Subcommands.Add(KernelsCommand.Create());
        root.Subcommands.Add(LmCommands.Activations());
        root.Subcommands.Add(SaeCommands.Train());
        root.Subcommands.Add(SaeCommands.Eval());
        root.Subcommands.Add(SaeCommands.Export());
        root.Subcommands.Add(SaeCommands.Encode());
        root.Subcommands.Add(SaeCommands.Synth());
        root.Subcommands.Add(StudyCommands.Sweep());
        root.Subcommands.Add(StudyCommands.Reproduce());
        root.Subcommands.Add(BenchCommand.Create());
        return root.Parse(args).Invoke();
    }
}
