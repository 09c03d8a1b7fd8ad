using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using IlgpuSae.Backends;
using IlgpuSae.IO;
using IlgpuSae.Lm;

namespace IlgpuSae.Bench;

/// <summary>
/// The language-model side: tokens/s of the forward pass that <c>activations</c> runs per batch (tokens to
/// the hook site, then the activations copied to the host), on the bundled model and on a GPT-2-small
/// shape (12 layers, 768 wide, random weights, written as a Hugging Face folder), with a per-phase profile.
/// With <c>--cases DIR</c> it also writes, per model, the tokens and the activations it computed, so that
/// perf/torch/lm_forward.py can run the same checkpoint, check that it computes the same activations and
/// time its own forward in the same run.
/// <code>
/// IlgpuSae.Bench lm [--backend B] [--models bundled,gpt2-small] [--batch 8] [--context 128] [--reps 3]
///     [--cases DIR] [--out FILE.md]
/// </code>
/// </summary>
internal static class LmBench
{
    public static int Run(string[] args)
    {
        var options = Program.ParseOptions(args.Skip(1).ToArray());
        var backend = BackendKinds.Resolve(options.GetValueOrDefault("backend"));
        var models = options.GetValueOrDefault("models", "bundled,gpt2-small").Split(',');
        int batch = int.Parse(options.GetValueOrDefault("batch", "8"), CultureInfo.InvariantCulture);
        int context = int.Parse(options.GetValueOrDefault("context", "128"), CultureInfo.InvariantCulture);
        int reps = int.Parse(options.GetValueOrDefault("reps", "3"), CultureInfo.InvariantCulture);
        string? cases = options.GetValueOrDefault("cases");
        string? outPath = options.GetValueOrDefault("out");
        string scratch = cases ?? Path.Combine(Path.GetTempPath(), "ilgpusae-lm-bench");
        using var device = SaeDevice.Create(backend);
        Console.WriteLine($"device: {device}");
        var rows = new List<string>();
        var profiles = new List<string>();
        foreach (var name in models)
        {
            string folder = ModelFolder(name, scratch);
            using var model = LanguageModel.Load(device, folder);
            var c = model.Config;
            int seqLen = Math.Min(context, c.ContextLength);
            string site = $"blocks.{c.Layers - 1}.hook_resid_post";
            var random = new Random(7);
            var tokens = Enumerable.Range(0, batch * seqLen).Select(_ => random.Next(c.VocabSize)).ToArray();
            float[] first = model.Capture(tokens, batch, site); // warm-up: kernels compiled, workspace made
            var times = new double[reps];
            for (int r = 0; r < reps; r++)
            {
                var watch = Stopwatch.StartNew();
                model.Capture(tokens, batch, site);
                times[r] = watch.Elapsed.TotalSeconds;
            }

            Array.Sort(times);
            double seconds = times[reps / 2];
            double tps = batch * seqLen / seconds;
            var profile = new StepProfile();
            model.Profile = profile;
            model.Capture(tokens, batch, site);
            profile.Mark(device, "host copy of the activations");
            model.Profile = null;
            string shape = string.Create(
                CultureInfo.InvariantCulture,
                $"{c.Layers}×{c.DModel}, {c.Heads} heads, MLP {c.DMlp}, vocab {c.VocabSize}"
            );
            var row = string.Create(
                CultureInfo.InvariantCulture,
                $"| {name} | {shape} | {batch}×{seqLen} | {site} | {seconds * 1e3:0.0} | {tps:0} |"
            );
            Console.WriteLine($"{row}  ({tps:0} tokens/s)");
            rows.Add(row);
            profiles.Add($"| {name} | {Phases(profile, seconds)} |");
            if (cases is not null)
            {
                string dir = Path.Combine(cases, name);
                Directory.CreateDirectory(dir);
                Npy.WriteFloats(
                    Path.Combine(dir, "tokens.npy"),
                    tokens.Select(t => (float)t).ToArray(),
                    batch,
                    seqLen
                );
                Npy.WriteFloats(Path.Combine(dir, "activations.npy"), first, batch * seqLen, c.DModel);
                var meta = new Dictionary<string, object?>
                {
                    ["name"] = name,
                    ["model"] = Path.GetRelativePath(Environment.CurrentDirectory, Path.GetFullPath(folder)),
                    ["site"] = site,
                    ["batch"] = batch,
                    ["seq_len"] = seqLen,
                    ["shape"] = shape,
                    ["ilgpu_device"] = device.ToString(),
                    ["ilgpu_seconds"] = seconds,
                    ["ilgpu_profile"] = Phases(profile, seconds),
                    ["reps"] = reps,
                };
                AtomicFile.WriteAllText(
                    Path.Combine(dir, "case.json"),
                    JsonSerializer.Serialize(meta, new JsonSerializerOptions { WriteIndented = true })
                );
            }
        }

        var sb = new StringBuilder();
        sb.AppendLine(
            CultureInfo.InvariantCulture,
            $"# Language-model forward (the work of `activations` per batch), {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC"
        );
        sb.AppendLine();
        Program.AppendProvenance(sb, args);
        sb.AppendLine(CultureInfo.InvariantCulture, $"- device: {device}");
        sb.AppendLine(
            "- pass: token ids to the last layer's `hook_resid_post`, then the activations copied to the host; one warm-up pass, median of the timed ones; random token ids"
        );
        sb.AppendLine();
        sb.AppendLine("| model | shape | batch × context | site | ms/pass | tokens/s |");
        sb.AppendLine("|---|---|---|---|---:|---:|");
        rows.ForEach(r => sb.AppendLine(r));
        sb.AppendLine();
        sb.AppendLine("## Where the time goes");
        sb.AppendLine();
        sb.AppendLine(
            "One extra pass with the device synchronised after each phase (`LanguageModel.Profile`)."
        );
        sb.AppendLine();
        sb.AppendLine("| model | phases |");
        sb.AppendLine("|---|---|");
        profiles.ForEach(r => sb.AppendLine(r));
        Console.WriteLine(sb.ToString());
        if (outPath is not null)
        {
            AtomicFile.WriteAllText(outPath, sb.ToString());
            Console.WriteLine($"Wrote {outPath}");
        }

        return 0;
    }

    /// <summary>Each phase's share of the profiled pass.</summary>
    private static string Phases(StepProfile profile, double unprofiled)
    {
        var phases = profile.Phases;
        double sum = phases.Sum(p => p.Seconds);
        var text = phases
            .OrderByDescending(p => p.Seconds)
            .Select(p =>
                string.Create(CultureInfo.InvariantCulture, $"{p.Phase} {p.Seconds / sum * 100:0} %")
            );
        return string.Join(", ", text)
            + string.Create(
                CultureInfo.InvariantCulture,
                $" (profiled pass {sum * 1e3:0.0} ms, unprofiled {unprofiled * 1e3:0.0} ms)"
            );
    }

    /// <summary>The bundled model's folder, or a GPT-2-small-shaped random model written once under
    /// <paramref name="scratch"/>.</summary>
    private static string ModelFolder(string name, string scratch)
    {
        if (name == "bundled")
        {
            return Path.Combine("data", "lm");
        }

        if (name != "gpt2-small")
        {
            throw new ArgumentException($"lm: unknown model {name} (bundled, gpt2-small)");
        }

        string folder = Path.Combine(scratch, "gpt2-small-model");
        if (!File.Exists(Path.Combine(folder, "model.safetensors")))
        {
            var config = new LmConfig
            {
                Architecture = LmArchitecture.Gpt2,
                VocabSize = 50257,
                ContextLength = 1024,
                DModel = 768,
                Layers = 12,
                Heads = 12,
                DMlp = 3072,
                BosTokenId = 50256,
                EosTokenId = 50256,
            };
            LmFiles.SaveGpt2(folder, config, LmWeights.Random(config, seed: 1));
        }

        return folder;
    }
}
