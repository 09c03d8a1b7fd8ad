using System.Diagnostics;
using IlgpuSae.Fuzzing;
using SharpFuzz;

namespace IlgpuSae.Fuzz;

/// <summary>
/// AFL++ harness of the untrusted readers (SharpFuzz): one target per reader, chosen by the first argument
/// (<see cref="ReaderTargets.Names"/>). Under afl-fuzz the input comes on standard input and SharpFuzz's
/// out-of-process fork server runs the target in a child process, so a hang or a process-killing fault
/// is recorded and the child restarted. An exception other than the readers' clear errors
/// (<see cref="ReaderTargets.IsClearError"/>) is reported to afl-fuzz as a crash. Run by
/// <c>tests/fuzz/run-afl.sh</c>, which instruments a copy of the assemblies first.
/// </summary>
internal static class Program
{
    private const string Usage = """
        usage: IlgpuSae.Fuzz TARGET                   fuzz TARGET on standard input (run under afl-fuzz)
               IlgpuSae.Fuzz TARGET --replay FILE...  run TARGET on each file, print what happened;
                                                      exit 1 if one crashes (a non-clear exception)
               IlgpuSae.Fuzz TARGET --seeds DIR REPO  write TARGET's seeds (valid files and REPO's
                                                      tests/bad-inputs corpus) to DIR
               IlgpuSae.Fuzz --list                   print the targets
        """;

    public static int Main(string[] args)
    {
        if (args is ["--list"])
        {
            foreach (var name in ReaderTargets.Names)
            {
                Console.WriteLine(name);
            }

            return 0;
        }

        if (args.Length == 0 || !ReaderTargets.Names.Contains(args[0]))
        {
            Console.Error.WriteLine(Usage);
            Console.Error.WriteLine($"targets: {string.Join(", ", ReaderTargets.Names)}");
            return 2;
        }

        var target = args[0];
        var scratch = Path.Combine(Path.GetTempPath(), $"ilgpusae-fuzz-{target}-{Environment.ProcessId}");
        try
        {
            var targets = new ReaderTargets(scratch);
            switch (args[1..])
            {
                case []:
                    Fuzzer.OutOfProcess.Run(stream =>
                    {
                        using var buffer = new MemoryStream();
                        stream.CopyTo(buffer);
                        try
                        {
                            targets.Run(target, buffer.ToArray());
                        }
                        catch (Exception e) when (ReaderTargets.IsClearError(e)) { }
                    });
                    return 0;
                case ["--replay", .. var files] when files.Length > 0:
                    return Replay(targets, target, files);
                case ["--seeds", var folder, var repo]:
                    Directory.CreateDirectory(folder);
                    foreach (var (name, bytes) in targets.Seeds(target, repo))
                    {
                        File.WriteAllBytes(Path.Combine(folder, name), bytes);
                    }

                    return 0;
                default:
                    Console.Error.WriteLine(Usage);
                    return 2;
            }
        }
        finally
        {
            if (Directory.Exists(scratch))
            {
                Directory.Delete(scratch, recursive: true);
            }
        }
    }

    private static int Replay(ReaderTargets targets, string target, IEnumerable<string> files)
    {
        int crashes = 0;
        foreach (var file in files)
        {
            var watch = Stopwatch.StartNew();
            string verdict;
            try
            {
                targets.Run(target, File.ReadAllBytes(file));
                verdict = "accepted";
            }
            catch (Exception e) when (ReaderTargets.IsClearError(e))
            {
                verdict = $"clear error ({e.GetType().Name}): {e.Message.ReplaceLineEndings(" ")}";
            }
            catch (Exception e)
            {
                crashes++;
                verdict = $"CRASH ({e.GetType().FullName}): {e.Message}\n{e.StackTrace}";
            }

            Console.WriteLine($"{file}: {verdict} [{watch.ElapsedMilliseconds} ms]");
        }

        return crashes == 0 ? 0 : 1;
    }
}
