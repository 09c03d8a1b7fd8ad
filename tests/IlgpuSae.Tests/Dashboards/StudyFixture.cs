using IlgpuSae.Backends;
using IlgpuSae.Sae;
using IlgpuSae.Study.Dashboards;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Tests.Lm;

namespace IlgpuSae.Tests.Dashboards;

/// <summary>A small blinded study (two random SAEs, 4 features each, 600 tokens) built once; tests copy
/// it to a folder of their own.</summary>
public sealed class StudyFixture : IDisposable
{
    private readonly TempFolder _temp = new("ilgpusae-study-fixture-");

    public StudyFixture()
    {
        using var device = SaeDevice.Create(BackendKind.Cpu);
        var a = DashboardTestData.SaveRandomSae(device, _temp.Path("gated"), SaeArchitecture.Gated, 160, 11);
        var b = DashboardTestData.SaveRandomSae(
            device,
            _temp.Path("baseline"),
            SaeArchitecture.Standard,
            224,
            12
        );
        Folder = _temp.Path("study");
        Ids = RatingStudy.Create(
            device,
            new RatingStudyRequest
            {
                Saes = [a, b],
                PerSae = 4,
                Seed = 5,
                MinDensity = 1e-3,
                Dashboards = new DashboardRequest
                {
                    Sae = a,
                    Model = LmTestData.BundledModel,
                    Corpus = LmTestData.HeldOut,
                    Tokens = 600,
                    Context = 64,
                    LmBatch = 8,
                },
            },
            Folder
        );
    }

    /// <summary>The study folder (do not write into it: use <see cref="CopyTo"/>).</summary>
    public string Folder { get; }

    /// <summary>Its ids in rating order.</summary>
    public IReadOnlyList<string> Ids { get; }

    /// <summary>Copies the study (without the work folder) to <paramref name="target"/>.</summary>
    public string CopyTo(string target)
    {
        foreach (var file in Directory.GetFiles(Folder, "*", SearchOption.AllDirectories))
        {
            var rel = Path.GetRelativePath(Folder, file);
            if (rel.StartsWith("work", StringComparison.Ordinal))
            {
                continue;
            }

            var to = Path.Combine(target, rel);
            Directory.CreateDirectory(Path.GetDirectoryName(to)!);
            File.Copy(file, to);
        }

        return target;
    }

    public void Dispose() => _temp.Dispose();
}
