using System.CommandLine;
using IlgpuSae.Data;
using IlgpuSae.IO;

namespace IlgpuSae.Cli.Commands;

/// <summary><c>synth</c>: a superposition toy dataset with known ground truth
/// (<see cref="SyntheticData"/>).</summary>
internal static class SynthCommand
{
    public static Command Create()
    {
        var rows = new Option<int>("--rows")
        {
            Description = "Rows to generate.",
            DefaultValueFactory = _ => 65536,
        };
        var d = new Option<int>("--d") { Description = "Activation width.", DefaultValueFactory = _ => 32 };
        var features = new Option<int>("--features")
        {
            Description = "True features (directions).",
            DefaultValueFactory = _ => 128,
        };
        var l0 = new Option<double>("--l0")
        {
            Description = "Mean number of active true features per row.",
            DefaultValueFactory = _ => 4,
        };
        var seed = new Option<ulong>("--seed") { Description = "Seed.", DefaultValueFactory = _ => 1UL };
        var output = new Option<string>("--out")
        {
            Description = "Output .npy [rows, d]; the true directions go to <out>.directions.npy.",
            Required = true,
        };
        var command = new Command(
            "synth",
            "Write a superposition toy dataset with known sparse ground truth (for tests and demos)."
        )
        {
            rows,
            d,
            features,
            l0,
            seed,
            output,
        };
        command.SetAction(parse =>
            CommonOptions.Guard(() =>
            {
                var data = SyntheticData.Generate(
                    parse.GetValue(rows),
                    parse.GetValue(d),
                    parse.GetValue(features),
                    parse.GetValue(l0),
                    parse.GetValue(seed)
                );
                var path = parse.GetValue(output)!;
                Npy.WriteFloats(path, data.Rows, data.N, data.D);
                Npy.WriteFloats(
                    Path.ChangeExtension(path, ".directions.npy"),
                    data.Directions,
                    data.Features,
                    data.D
                );
                Console.WriteLine(
                    $"Wrote {data.N}×{data.D} activations from {data.Features} true directions to {path}."
                );
                return 0;
            })
        );
        return command;
    }
}
