using System.Diagnostics;
using System.Text;
using FluentAssertions;
using IlgpuSae.Backends;
using IlgpuSae.Data;
using IlgpuSae.IO;
using IlgpuSae.Sae;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Training;
using Xunit;

namespace IlgpuSae.Tests.Reliability;

/// <summary>
/// A seeded mutation fuzzer over the untrusted readers (npy, npz, safetensors, cache manifest, cfg.json,
/// model config.json, metrics log): valid files and the bad-input corpus are mutated (bit flips, byte
/// overwrites, truncation, insertion, JSON numbers made huge or negative) and each reader must either accept
/// the file or throw one of the exceptions the command line turns into an <c>error:</c> line, never another
/// exception and never a crash. Each reader runs for <c>ILGPUSAE_FUZZ_SECONDS</c> (default 2) seconds; a
/// longer run: <c>ILGPUSAE_FUZZ_SECONDS=300 dotnet test --filter MutationFuzz</c>. A failure prints the seed
/// and iteration, and the mutant is kept under <c>tests/bad-inputs/fuzz-found/</c> to join the corpus.
/// </summary>
public sealed class MutationFuzzTests : IDisposable
{
    private readonly TempFolder _temp = new("ilgpusae-fuzz-");

    public void Dispose() => _temp.Dispose();

    private static double Seconds =>
        double.TryParse(
            Environment.GetEnvironmentVariable("ILGPUSAE_FUZZ_SECONDS"),
            System.Globalization.CultureInfo.InvariantCulture,
            out var s
        )
            ? s
            : 2;

    private static bool Expected(Exception e) =>
        e
            is InvalidDataException
                or ArgumentException
                or KeyNotFoundException
                or FileNotFoundException
                or NotSupportedException;

    /// <summary>Mutates <paramref name="seed"/> once.</summary>
    private static byte[] Mutate(byte[] seed, Random rng)
    {
        var b = new List<byte>(seed);
        int edits = 1 + rng.Next(4);
        for (int e = 0; e < edits && b.Count > 0; e++)
        {
            int at = rng.Next(b.Count);
            switch (rng.Next(7))
            {
                case 0:
                    b[at] ^= (byte)(1 << rng.Next(8));
                    break;
                case 1:
                    b[at] = (byte)rng.Next(256);
                    break;
                case 2:
                    b.RemoveRange(at, b.Count - at); // truncate
                    break;
                case 3:
                    b.InsertRange(at, Enumerable.Range(0, 1 + rng.Next(8)).Select(_ => (byte)rng.Next(256)));
                    break;
                case 4:
                    b.RemoveRange(at, Math.Min(b.Count - at, 1 + rng.Next(16)));
                    break;
                default:
                    // a decimal number in text made huge, negative or odd
                    int digit = b.FindIndex(at, x => x is >= (byte)'0' and <= (byte)'9');
                    if (digit >= 0)
                    {
                        var repl = rng.Next(4) switch
                        {
                            0 => "9223372036854775807",
                            1 => "-1",
                            2 => "4611686018427387904",
                            _ => "1e308",
                        };
                        b.InsertRange(digit, Encoding.ASCII.GetBytes(repl));
                    }

                    break;
            }
        }

        return [.. b];
    }

    private void Fuzz(string name, IReadOnlyList<byte[]> seeds, Action<byte[]> read, int baseSeed)
    {
        var watch = Stopwatch.StartNew();
        var rng = new Random(baseSeed);
        int n = 0;
        while (watch.Elapsed.TotalSeconds < Seconds || n < 50)
        {
            var mutant = Mutate(seeds[rng.Next(seeds.Count)], rng);
            try
            {
                read(mutant);
            }
            catch (Exception e) when (Expected(e)) { }
            catch (Exception e)
            {
                var found = Path.Combine(BadInputs.Folder(), "fuzz-found");
                Directory.CreateDirectory(found);
                File.WriteAllBytes(Path.Combine(found, $"{name}-seed{baseSeed}-{n}.bin"), mutant);
                throw new Xunit.Sdk.XunitException(
                    $"{name}, seed {baseSeed}, iteration {n}: {e.GetType().Name}: {e.Message}\n{e.StackTrace}"
                );
            }

            n++;
        }
    }

    private string Write(string name, byte[] bytes)
    {
        var path = _temp.Path(name);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static byte[][] Corpus(string folder, string pattern) =>
        [
            .. Directory
                .GetFiles(BadInputs.Path(folder), pattern, SearchOption.AllDirectories)
                .Select(File.ReadAllBytes),
        ];

    private byte[] ValidNpy()
    {
        var path = _temp.Path("valid.npy");
        Npy.WriteFloats(path, [.. Enumerable.Range(0, 24).Select(i => (float)i)], 6, 4);
        return File.ReadAllBytes(path);
    }

    [Fact]
    public void Npy_reader_survives_mutations()
    {
        var seeds = Corpus("npy", "*.npy").Append(ValidNpy()).ToArray();
        var rows = new float[4];
        Fuzz(
            "npy",
            seeds,
            bytes =>
            {
                var path = Write("m.npy", bytes);
                using (var stream = new MemoryStream(bytes))
                {
                    Npy.ReadFloats(stream, "m.npy", bytes.Length);
                }

                using var source = ActivationSources.Open(path);
                if (source.Rows > 0 && source.Dim <= 4)
                {
                    source.ReadRows(source.Rows - 1, rows.AsSpan(0, source.Dim));
                }
            },
            1
        );
    }

    [Fact]
    public void Safetensors_reader_survives_mutations()
    {
        var valid = _temp.Path("valid.safetensors");
        SafetensorsWriter.Write(
            valid,
            [
                new TensorToWrite("x", [3, 4], [.. Enumerable.Range(0, 12).Select(i => (float)i)]),
                new TensorToWrite("i", [2], Longs: [5, 6]),
            ],
            new Dictionary<string, string> { ["format"] = "pt" }
        );
        var seeds = Corpus("safetensors", "*.safetensors").Append(File.ReadAllBytes(valid)).ToArray();
        Fuzz(
            "safetensors",
            seeds,
            bytes =>
            {
                using var file = new SafetensorsFile(Write("m.safetensors", bytes));
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
            },
            2
        );
    }

    [Fact]
    public void Npz_reader_survives_mutations()
    {
        var valid = _temp.Path("params.npz");
        using (
            var zip = System.IO.Compression.ZipFile.Open(valid, System.IO.Compression.ZipArchiveMode.Create)
        )
        {
            using var s = zip.CreateEntry("W_enc.npy").Open();
            s.Write(ValidNpy());
        }

        Fuzz("npz", [File.ReadAllBytes(valid)], bytes => Npy.ReadNpz(Write("m.npz", bytes)), 3);
    }

    [Fact]
    public void Cache_manifest_reader_survives_mutations()
    {
        var folder = _temp.Path("cache");
        var writer = new ActivationCacheWriter(
            folder,
            4,
            8,
            new Dictionary<string, object?> { ["hook_name"] = "h" }
        );
        writer.Append([.. Enumerable.Range(0, 64).Select(i => (float)i)]);
        writer.Complete();
        var seeds = Corpus(".", "manifest.json")
            .Append(File.ReadAllBytes(Path.Combine(folder, "manifest.json")))
            .ToArray();
        var row = new float[4];
        Fuzz(
            "manifest",
            seeds,
            bytes =>
            {
                File.WriteAllBytes(Path.Combine(folder, "manifest.json"), bytes);
                using var cache = ActivationCache.Open(folder);
                if (cache.Rows > 0 && cache.Dim == 4)
                {
                    cache.ReadRows(cache.Rows - 1, row);
                }
            },
            4
        );
    }

    [Fact]
    public void Sae_cfg_json_reader_survives_mutations()
    {
        using var device = SaeDevice.Create(BackendKind.Cpu);
        var folder = _temp.Path("sae");
        using (
            var sae = SparseAutoencoder.CreateEmpty(
                device,
                new SaeConfig
                {
                    Architecture = SaeArchitectures.Get("gated"),
                    DIn = 4,
                    DSae = 8,
                    Metadata = new Dictionary<string, object?> { ["hook_name"] = "blocks.0.hook_mlp_out" },
                }
            )
        )
        {
            SaeFiles.Save(sae, folder);
        }

        var cfg = Path.Combine(folder, SaeFiles.ConfigFile);
        Fuzz(
            "cfg.json",
            [File.ReadAllBytes(cfg)],
            bytes =>
            {
                File.WriteAllBytes(cfg, bytes);
                SaeFiles.ReadConfig(cfg);
            },
            5
        );
    }

    [Fact]
    public void Model_config_json_reader_survives_mutations()
    {
        var seed = File.ReadAllBytes(Path.Combine(IlgpuSae.Tests.Lm.LmTestData.BundledModel, "config.json"));
        Fuzz("lm-config", [seed], bytes => IlgpuSae.Lm.LmConfig.Load(Write("lm/config.json", bytes)), 6);
    }

    [Fact]
    public void Metrics_log_reader_survives_mutations()
    {
        var seeds = Corpus("metrics", "*.jsonl");
        var log = new MetricsLog(_temp.Path("run"));
        Fuzz(
            "metrics",
            seeds,
            bytes =>
            {
                Write("run/" + MetricsLog.FileName, bytes);
                log.TruncateAfter(2);
            },
            7
        );
        log.Path.Should().NotBeNull();
    }
}
