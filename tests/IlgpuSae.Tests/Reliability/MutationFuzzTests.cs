using System.Diagnostics;
using System.Text;
using FluentAssertions;
using IlgpuSae.Fuzzing;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Tests.Lm;
using Xunit;

namespace IlgpuSae.Tests.Reliability;

/// <summary>
/// A seeded mutation fuzzer over the untrusted readers (<see cref="ReaderTargets"/>: npy, npz, safetensors,
/// cache manifest, cfg.json, model config.json, metrics log, trainer_state.json, trainer_config.json and the
/// tokenizer files tokenizer.model, tokenizer.json, vocab.json + merges.txt): valid files and the bad-input
/// corpus are mutated (bit flips, byte overwrites, truncation, insertion, JSON numbers made huge or
/// negative) and each reader must either accept the file or throw one of the exceptions the command line
/// turns into an <c>error:</c> line, never another exception and never a crash. Each reader runs for
/// <c>ILGPUSAE_FUZZ_SECONDS</c> (default 2) seconds; a longer run:
/// <c>ILGPUSAE_FUZZ_SECONDS=300 dotnet test --filter MutationFuzz</c>. A failure prints the seed and
/// iteration, and the mutant is kept under <c>tests/bad-inputs/fuzz-found/</c> to join the corpus. The same
/// targets run coverage-guided under AFL++ (<c>tests/fuzz/run-afl.sh</c>).
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

    // The rule the AFL++ harness (tests/IlgpuSae.Fuzz) applies too: the exceptions the command line turns
    // into one error: line.
    private static bool Expected(Exception e) => ReaderTargets.IsClearError(e);

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

    /// <summary>Every reader target, with the seed of its random mutations.</summary>
    public static TheoryData<string> Targets()
    {
        var data = new TheoryData<string>();
        foreach (var name in ReaderTargets.Names)
        {
            data.Add(name);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Targets))]
    public void Reader_survives_mutations(string target)
    {
        var targets = new ReaderTargets(_temp.Path("targets"));
        var seeds = targets.Seeds(target, LmTestData.Repo()).Select(s => s.Bytes).ToArray();
        seeds.Should().NotBeEmpty();
        int baseSeed = 1 + ReaderTargets.Names.ToList().IndexOf(target);
        Fuzz(target, seeds, bytes => targets.Run(target, bytes), baseSeed);
    }

    [Theory]
    [MemberData(nameof(Targets))]
    public void Every_valid_seed_is_accepted(string target)
    {
        // The fuzzers start from these files: a seed the reader rejects would leave its parser unexplored.
        var targets = new ReaderTargets(_temp.Path("targets"));
        var valid = targets
            .Seeds(target, LmTestData.Repo())
            .Where(s => s.Name.StartsWith("valid", StringComparison.Ordinal))
            .ToArray();
        valid.Should().NotBeEmpty();
        foreach (var (name, bytes) in valid)
        {
            var run = () => targets.Run(target, bytes);
            run.Should().NotThrow($"{target} seed {name} is a valid file");
        }
    }
}
