using System.Text;
using IlgpuSae.Data;
using IlgpuSae.IO;
using IlgpuSae.Lm;
using IlgpuSae.Sae;
using IlgpuSae.Training;

namespace IlgpuSae.Fuzzing;

/// <summary>
/// The untrusted readers as fuzz targets, shared by the seeded mutation fuzzer (<c>MutationFuzzTests</c>)
/// and the coverage-guided AFL++ harness (<c>tests/IlgpuSae.Fuzz</c>): each target writes one input to
/// the file a reader opens and runs the reader over it the way the command line does. A target either
/// returns (the file was accepted) or throws; only <see cref="IsClearError"/> exceptions are allowed,
/// anything else (and a crash or a hang) is a bug found.
/// </summary>
internal sealed class ReaderTargets
{
    private readonly string _scratch;

    /// <summary>Targets that write their files below <paramref name="scratch"/> (created if needed); one
    /// process (or one test) per scratch folder.</summary>
    public ReaderTargets(string scratch)
    {
        _scratch = scratch;
        Directory.CreateDirectory(scratch);
    }

    /// <summary>Every target, in the order the fuzz script runs them.</summary>
    public static IReadOnlyList<string> Names { get; } =
    [
        "npy",
        "npz",
        "safetensors",
        "manifest",
        "sae-cfg",
        "lm-config",
        "metrics",
        "trainer-state",
        "trainer-config",
        "progress",
        "tokenizer-model",
        "tokenizer-json",
        "tokenizer-bpe",
    ];

    /// <summary>
    /// The exceptions a reader throws for a malformed file, each of which the command line turns into one
    /// <c>error:</c> line with exit code 2: every other exception type is a crash.
    /// </summary>
    public static bool IsClearError(Exception e) =>
        e
            is InvalidDataException
                or ArgumentException
                or KeyNotFoundException
                or FileNotFoundException
                or NotSupportedException;

    /// <summary>
    /// Byte that splits a <c>tokenizer-bpe</c> input into <c>vocab.json</c> (before it) and
    /// <c>merges.txt</c> (after it), so that one input mutates both files.
    /// </summary>
    public const byte BpeSeparator = 0;

    private const string SampleText = "Hello world, the quick brown fox.\n\tCafé 3.14 ünï 😀  x";

    private string PathOf(string relative)
    {
        var path = Path.Combine(_scratch, relative);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        return path;
    }

    private string Folder(string relative)
    {
        var path = Path.Combine(_scratch, relative);
        Directory.CreateDirectory(path);
        return path;
    }

    private string Write(string relative, byte[] bytes)
    {
        var path = PathOf(relative);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    /// <summary>Runs target <paramref name="name"/> on <paramref name="input"/>.</summary>
    public void Run(string name, byte[] input)
    {
        switch (name)
        {
            case "npy":
                Npy(input);
                break;
            case "npz":
                global::IlgpuSae.IO.Npy.ReadNpz(Write("m.npz", input));
                break;
            case "safetensors":
                Safetensors(input);
                break;
            case "manifest":
                Manifest(input);
                break;
            case "sae-cfg":
                SaeFiles.ReadConfig(Write("sae/" + SaeFiles.ConfigFile, input));
                break;
            case "lm-config":
                LmConfig.Load(Write("lm/config.json", input));
                break;
            case "metrics":
                Write("run/" + MetricsLog.FileName, input);
                new MetricsLog(Folder("run")).TruncateAfter(2);
                break;
            case "trainer-state":
                Write("checkpoint/trainer_state.json", input);
                TrainingCheckpoint.ReadState(Folder("checkpoint"));
                break;
            case "trainer-config":
                TrainerConfig.Read(Write("checkpoint/" + TrainerConfig.FileName, input));
                break;
            case "progress":
                ActivationCacheBuilder.ReadProgress(Write("acts/progress.json", input), Folder("acts"));
                break;
            case "tokenizer-model":
                Tokenizer("tok-model", ("tokenizer.model", input));
                break;
            case "tokenizer-json":
                Tokenizer("tok-json", ("tokenizer.json", input));
                break;
            case "tokenizer-bpe":
                int cut = Array.IndexOf(input, BpeSeparator);
                Tokenizer(
                    "tok-bpe",
                    ("vocab.json", cut < 0 ? input : input[..cut]),
                    ("merges.txt", cut < 0 ? [] : input[(cut + 1)..])
                );
                break;
            default:
                throw new ArgumentException(
                    $"unknown fuzz target '{name}'; targets: {string.Join(", ", Names)}",
                    nameof(name)
                );
        }
    }

    private void Npy(byte[] input)
    {
        var path = Write("m.npy", input);
        using (var stream = new MemoryStream(input))
        {
            global::IlgpuSae.IO.Npy.ReadFloats(stream, "m.npy", input.Length);
        }

        using var source = ActivationSources.Open(path);
        if (source.Rows > 0 && source.Dim <= 4)
        {
            var row = new float[4];
            source.ReadRows(source.Rows - 1, row.AsSpan(0, source.Dim));
        }
    }

    private void Safetensors(byte[] input)
    {
        using var file = new SafetensorsFile(Write("m.safetensors", input));
        foreach (var entry in file.Entries.Values.Where(e => e.Count < 1 << 16))
        {
            if (entry.DType.IsFloat())
            {
                file.ReadFloats(entry.Name);
            }
            else
            {
                file.ReadInt64(entry.Name);
            }
        }
    }

    private string CacheFolder()
    {
        var folder = Folder("cache");
        if (!File.Exists(Path.Combine(folder, "valid-manifest.json")))
        {
            var writer = new ActivationCacheWriter(
                folder,
                4,
                8,
                new Dictionary<string, object?> { ["hook_name"] = "h" }
            );
            writer.Append([.. Enumerable.Range(0, 64).Select(i => (float)i)]);
            writer.Complete();
            File.Copy(Path.Combine(folder, "manifest.json"), Path.Combine(folder, "valid-manifest.json"));
        }

        return folder;
    }

    private void Manifest(byte[] input)
    {
        var folder = CacheFolder();
        File.WriteAllBytes(Path.Combine(folder, "manifest.json"), input);
        using var cache = ActivationCache.Open(folder);
        if (cache.Rows > 0 && cache.Dim == 4)
        {
            var row = new float[4];
            cache.ReadRows(cache.Rows - 1, row);
        }
    }

    private void Tokenizer(string folderName, params (string File, byte[] Bytes)[] files)
    {
        var folder = Folder(folderName);
        foreach (var (file, bytes) in files)
        {
            File.WriteAllBytes(Path.Combine(folder, file), bytes);
        }

        // Everything the tools do with a loaded tokenizer: encode a corpus, decode, show tokens one by one.
        // Built here, not in a static field: under AFL nothing instrumented may run before SharpFuzz maps the
        // coverage memory, and LmConfig is instrumented.
        var config = new LmConfig
        {
            Architecture = LmArchitecture.Gpt2,
            VocabSize = 4096,
            ContextLength = 128,
            DModel = 128,
            Layers = 2,
            Heads = 4,
            DMlp = 512,
        };
        var tokenizer = LmTokenizer.Load(folder, config);
        var ids = tokenizer.Encode(SampleText);
        tokenizer.Encode(" ");
        tokenizer.Decode(ids);
        foreach (var id in ids.Take(8).Append(0))
        {
            tokenizer.TokenText(id);
        }
    }

    /// <summary>
    /// Seed inputs of target <paramref name="name"/>: valid files (written with the library's own writers,
    /// or the bundled model's) and the committed bad-input corpus under <paramref name="repo"/>
    /// (<c>tests/bad-inputs</c>, made by its <c>make.py</c>).
    /// </summary>
    public IReadOnlyList<(string Name, byte[] Bytes)> Seeds(string name, string repo)
    {
        var seeds = new List<(string, byte[])>();
        var badInputs = Path.Combine(repo, "tests", "bad-inputs");

        void Corpus(string folder, string pattern)
        {
            var root = Path.Combine(badInputs, folder);
            if (!Directory.Exists(root))
            {
                return;
            }

            foreach (
                var file in Directory
                    .GetFiles(root, pattern, SearchOption.AllDirectories)
                    .Where(f => !f.Contains("fuzz-found", StringComparison.Ordinal))
                    .Order(StringComparer.Ordinal)
            )
            {
                var relative = Path.GetRelativePath(badInputs, file).Replace('/', '-').Replace('\\', '-');
                seeds.Add(("bad-" + relative, File.ReadAllBytes(file)));
            }
        }

        void Bundled(string file) =>
            seeds.Add(("valid-" + file, File.ReadAllBytes(Path.Combine(repo, "data", "lm", file))));

        void Text(string file, string text) => seeds.Add((file, Encoding.UTF8.GetBytes(text)));

        switch (name)
        {
            case "npy":
                Corpus("npy", "*.npy");
                seeds.Add(("valid.npy", ValidNpy()));
                break;
            case "npz":
                Corpus(".", "*.npz");
                seeds.Add(("valid.npz", ValidNpz()));
                break;
            case "safetensors":
                Corpus("safetensors", "*.safetensors");
                seeds.Add(("valid.safetensors", ValidSafetensors()));
                break;
            case "manifest":
                Corpus(".", "manifest.json");
                seeds.Add(
                    ("valid-manifest.json", File.ReadAllBytes(Path.Combine(CacheFolder(), "manifest.json")))
                );
                break;
            case "sae-cfg":
                Corpus("sae-cfg", "*.json");
                seeds.Add(("valid-cfg.json", ValidSaeConfig()));
                break;
            case "lm-config":
                Corpus("lm-config", "*.json");
                Bundled("config.json");
                break;
            case "metrics":
                Corpus("metrics", "*.jsonl");
                Text(
                    "valid-metrics.jsonl",
                    "{\"step\":1,\"losses/overall_loss\":1.5}\n{\"step\":2,\"losses/overall_loss\":1.25}\n"
                        + "{\"step\":3,\"losses/overall_loss\":1.125}\n"
                );
                break;
            case "trainer-state":
                Corpus("trainer-state", "*.json");
                Text(
                    "valid-trainer_state.json",
                    "{\"step\":20,\"data_cursor\":640,\"last_resample_step\":0,\"normalization_scale\":1.5,"
                        + "\"seed\":42,\"total_steps\":100,\"batch_size\":32}"
                );
                break;
            case "trainer-config":
                Corpus("trainer-config", "*.json");
                Text(
                    "valid-trainer_config.json",
                    "{\n  \"batch_size\": 32,\n  \"l1\": 0.5,\n  \"lr\": 0.0003,\n  \"seed\": 42,\n"
                        + "  \"steps\": 100\n}"
                );
                break;
            case "progress":
                Corpus("progress", "*.json");
                Text(
                    "valid-progress.json",
                    "{\"fingerprint\":\"{}\",\"next_context\":12,\"produced\":192,\"sum_norm\":10.5,"
                        + "\"sum_sq_norm\":30.25,\"shards\":[{\"file\":\"shard-00000.npy\",\"rows\":64,"
                        + "\"sha256\":\"00ff\"}],\"pending\":\"pending.npy\"}"
                );
                break;
            case "tokenizer-model":
                Corpus("tokenizer", "*.model");
                Bundled("tokenizer.model");
                break;
            case "tokenizer-json":
                Corpus("tokenizer", "*.json");
                Text("valid-tokenizer.json", TokenizerJson(pairs: false));
                Text("valid-tokenizer-pairs.json", TokenizerJson(pairs: true));
                break;
            case "tokenizer-bpe":
                Corpus("tokenizer", "*.bpe");
                Text("valid.bpe", BpeVocab() + (char)BpeSeparator + BpeMerges);
                break;
            default:
                throw new ArgumentException($"unknown fuzz target '{name}'", nameof(name));
        }

        return seeds;
    }

    private byte[] ValidNpy()
    {
        var path = PathOf("seeds/valid.npy");
        global::IlgpuSae.IO.Npy.WriteFloats(path, [.. Enumerable.Range(0, 24).Select(i => (float)i)], 6, 4);
        return File.ReadAllBytes(path);
    }

    private byte[] ValidNpz()
    {
        var path = PathOf("seeds/params.npz");
        File.Delete(path);
        using (
            var zip = System.IO.Compression.ZipFile.Open(path, System.IO.Compression.ZipArchiveMode.Create)
        )
        {
            using var s = zip.CreateEntry("W_enc.npy").Open();
            s.Write(ValidNpy());
        }

        return File.ReadAllBytes(path);
    }

    private byte[] ValidSafetensors()
    {
        var path = PathOf("seeds/valid.safetensors");
        SafetensorsWriter.Write(
            path,
            [
                new TensorToWrite("x", [3, 4], [.. Enumerable.Range(0, 12).Select(i => (float)i)]),
                new TensorToWrite("i", [2], Longs: [5, 6]),
            ],
            new Dictionary<string, string> { ["format"] = "pt" }
        );
        return File.ReadAllBytes(path);
    }

    private static byte[] ValidSaeConfig() =>
        Encoding.UTF8.GetBytes(
            SaeFiles
                .ConfigJson(
                    new SaeConfig
                    {
                        Architecture = SaeArchitectures.Get("gated"),
                        DIn = 4,
                        DSae = 8,
                        Metadata = new Dictionary<string, object?>
                        {
                            ["hook_name"] = "blocks.0.hook_mlp_out",
                        },
                    }
                )
                .ToJsonString()
        );

    // A tiny byte-level BPE (GPT-2 style: Ġ is a leading space): a token for each of the 256 bytes, as
    // every byte-level vocabulary has, a few merges, and <|endoftext|>, which Microsoft.ML.Tokenizers
    // requires as the unknown token.
    private static readonly string[] Merges = ["H e", "l l", "He ll", "Hell o", "Ġ w", "o r", "Ġw or", "l d"];

    private static string BpeVocab()
    {
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var token in LmTokenizer.ByteLevelSymbols().Concat(Merges.Select(m => m.Replace(" ", ""))))
        {
            vocab.TryAdd(token, vocab.Count);
        }

        vocab["<|endoftext|>"] = vocab.Count;
        return System.Text.Json.JsonSerializer.Serialize(
            vocab,
            new System.Text.Json.JsonSerializerOptions
            {
                Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
            }
        );
    }

    private static string BpeMerges => "#version: 0.2\n" + string.Join("\n", Merges) + "\n";

    private static string TokenizerJson(bool pairs)
    {
        var merges = Merges.Select(m =>
            pairs ? "[\"" + m.Replace(" ", "\",\"", StringComparison.Ordinal) + "\"]" : "\"" + m + "\""
        );
        return "{\"version\":\"1.0\",\"model\":{\"type\":\"BPE\",\"vocab\":"
            + BpeVocab()
            + ",\"merges\":["
            + string.Join(",", merges)
            + "]}}";
    }
}
