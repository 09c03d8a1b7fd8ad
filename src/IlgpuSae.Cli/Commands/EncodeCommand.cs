using System.CommandLine;
using System.Globalization;
using IlgpuSae.Data;
using IlgpuSae.IO;
using IlgpuSae.Sae;

namespace IlgpuSae.Cli.Commands;

/// <summary><c>encode</c>: sparse features of activations as CSR rows in a safetensors file
/// (<see cref="SparseEncoder"/>).</summary>
internal static class EncodeCommand
{
    public static Command Create()
    {
        var sae = new Option<string>("--sae")
        {
            Description = "SAE folder or Gemma Scope params.npz.",
            Required = true,
        };
        var acts = new ActivationOptions();
        var output = new Option<string>("--out")
        {
            Description = "Output .safetensors file (CSR: indptr, indices, values).",
            Required = true,
        };
        var tokens = new Option<long>("--tokens")
        {
            Description = "Encode at most this many rows.",
            DefaultValueFactory = _ => long.MaxValue,
        };
        var batch = new Option<int>("--batch-size")
        {
            Description = "Rows per forward pass.",
            DefaultValueFactory = _ => 1024,
        };
        var command = new Command(
            "encode",
            "Encode activations into sparse features (indices + values, CSR rows) in a safetensors file."
        )
        {
            sae,
            acts.Acts,
            acts.Tensor,
            acts.SkipChecksums,
            output,
            tokens,
            batch,
        };
        command.SetAction(parse =>
            CommonOptions.Guard(() =>
            {
                OutputPaths.EnsureSeparate(
                    "--out",
                    parse.GetValue(output),
                    ("--sae", parse.GetValue(sae)),
                    ("--acts", parse.GetValue(acts.Acts))
                );
                using var device = CommonOptions.OpenDevice(parse);
                using var model = SaeFiles.Load(device, parse.GetValue(sae)!);
                using var data = ActivationSources.Open(
                    acts.Require(parse),
                    parse.GetValue(acts.Tensor),
                    acts.Verify(parse)
                );
                var (indptr, indices, values) = SparseEncoder.Encode(
                    model,
                    data,
                    parse.GetValue(batch),
                    parse.GetValue(tokens)
                );
                SafetensorsWriter.Write(
                    parse.GetValue(output)!,
                    [
                        new TensorToWrite("indptr", [indptr.Length], Longs: indptr),
                        new TensorToWrite("indices", [indices.Length], Ints: indices),
                        new TensorToWrite("values", [values.Length], values),
                    ],
                    new Dictionary<string, string>
                    {
                        ["d_sae"] = model.DSae.ToString(CultureInfo.InvariantCulture),
                        ["format"] = "csr",
                    }
                );
                Console.WriteLine(
                    $"Encoded {indptr.Length - 1} rows ({values.Length} non-zeros, mean L0 {values.Length / (double)(indptr.Length - 1):F2}) to {parse.GetValue(output)}."
                );
                return 0;
            })
        );
        return command;
    }
}
