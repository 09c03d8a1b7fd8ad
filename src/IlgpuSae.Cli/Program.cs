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
            "ilgpu-sae: train and evaluate sparse autoencoders (Gated, standard) with ILGPU kernels on CUDA, OpenCL or the CPU."
        );
        root.Options.Add(CommonOptions.Backend);
        root.Options.Add(CommonOptions.Device);
        root.Options.Add(CommonOptions.TensorCores);
        root.Subcommands.Add(DevicesCommand.Create());
        root.Subcommands.Add(SelfCheckCommand.Create());
        root.Subcommands.Add(KernelsCommand.Create());
        root.Subcommands.Add(ActivationsCommand.Create());
        root.Subcommands.Add(TrainCommand.Create());
        root.Subcommands.Add(EvalCommand.Create());
        root.Subcommands.Add(ExportCommand.Create());
        root.Subcommands.Add(EncodeCommand.Create());
        root.Subcommands.Add(SynthCommand.Create());
        root.Subcommands.Add(SweepCommand.Create());
        root.Subcommands.Add(ReproduceCommand.Create());
        root.Subcommands.Add(BenchCommand.Create());
        root.Subcommands.Add(DashboardCommand.Create());
        root.Subcommands.Add(RatingStudyCommand.Create());
        root.Subcommands.Add(RatingStudyCommand.Serve());
        CommonOptions.AddRangeChecks(root);
        return root.Parse(args).Invoke();
    }
}
