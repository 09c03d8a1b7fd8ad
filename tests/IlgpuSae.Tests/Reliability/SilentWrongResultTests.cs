using System.Text.Json.Nodes;
using FluentAssertions;
using IlgpuSae.Backends;
using IlgpuSae.Data;
using IlgpuSae.Lm;
using IlgpuSae.Sae;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Training;
using Xunit;

namespace IlgpuSae.Tests.Reliability;

/// <summary>Inputs that used to give a wrong result without a word (issue 16) now give an error or a
/// warning: a bit-flipped cache shard, a truncated gzip corpus, a config.json that leaves checkpoint
/// tensors unused, a warm-up longer than the run; and SAELens v6 keeps our cfg.json metadata.</summary>
public sealed class SilentWrongResultTests : IDisposable
{
    private readonly TempFolder _temp = new("ilgpusae-silent-");

    public void Dispose() => _temp.Dispose();

    private string P(string name) => _temp.Path(name);

    private string Cache(string name)
    {
        var data = SyntheticData.Generate(512, 4, 8, 2, seed: 5).Rows;
        var writer = new ActivationCacheWriter(P(name), 4, 128);
        writer.Append(data);
        writer.Complete();
        return P(name);
    }

    [Fact]
    public void A_bit_flipped_cache_shard_is_refused_when_first_read_unless_checksums_are_skipped()
    {
        var folder = Cache("acts");
        var shard = Path.Combine(folder, "shard-00002.npy");
        var bytes = File.ReadAllBytes(shard);
        bytes[^3] ^= 0x10;
        File.WriteAllBytes(shard, bytes);
        var rows = new float[128 * 4];
        using (var cache = ActivationSources.Open(folder))
        {
            cache.ReadRows(0, rows); // shard 0 is intact
            var read = () => cache.ReadRows(256, rows);
            read.Should().Throw<InvalidDataException>().WithMessage("*shard-00002.npy has SHA-256*");
        }

        using var unchecked_ = ActivationSources.Open(folder, verifyChecksums: false);
        unchecked_.ReadRows(256, rows);
    }

    [Fact]
    public void A_truncated_gzip_corpus_is_an_error_and_an_intact_one_reads_whole()
    {
        var read = () => TokenCorpus.Documents(BadInputs.Path("corpus/truncated.txt.gz")).Count();
        read.Should().Throw<InvalidDataException>().WithMessage("*truncated.txt.gz is truncated or corrupt*");
        TokenCorpus.Documents(IlgpuSae.Tests.Lm.LmTestData.HeldOut).Should().NotBeEmpty();
    }

    [Fact]
    public void A_config_with_fewer_layers_than_the_weights_is_refused_not_silently_cut()
    {
        var folder = P("lm");
        Directory.CreateDirectory(folder);
        foreach (var f in Directory.GetFiles(IlgpuSae.Tests.Lm.LmTestData.BundledModel))
        {
            File.Copy(f, Path.Combine(folder, Path.GetFileName(f)));
        }

        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "config.json")))!;
        config["n_layer"] = 1;
        File.WriteAllText(Path.Combine(folder, "config.json"), config.ToJsonString());
        using var device = SaeDevice.Create(BackendKind.Cpu);
        var load = () => LanguageModel.Load(device, folder).Dispose();
        load.Should()
            .Throw<InvalidDataException>()
            .WithMessage("*not used by config.json (is n_layer too small?)*h.1.*");
        using var whole = LanguageModel.Load(device, IlgpuSae.Tests.Lm.LmTestData.BundledModel);
        whole.Config.Layers.Should().Be(2);
    }

    [Fact]
    public void A_warm_up_longer_than_the_run_is_a_warning_with_the_numbers()
    {
        var options = new TrainerOptions
        {
            Steps = 292,
            BatchSize = 64,
            LearningRate = 3e-4f,
            LrWarmupSteps = 1000,
        };
        TrainingWarnings
            .For(options, 100_000)
            .Should()
            .ContainSingle()
            .Which.Should()
            .Contain("(1000 steps) is longer than the run (292 steps)")
            .And.Contain("never reaches 0.0003")
            .And.Contain("ends at 8.76E-05");
        TrainingWarnings.For(options with { LrWarmupSteps = 100 }, 100_000).Should().BeEmpty();
        TrainingWarnings.For(options with { LrWarmupSteps = 100 }, 10).Should().ContainSingle();
    }

    [Fact]
    public void Cfg_json_carries_the_sae_lens_v6_version_fields_and_sparsity_coefficient_and_old_folders_still_load()
    {
        using var device = SaeDevice.Create(BackendKind.Cpu);
        var config = new SaeConfig
        {
            Architecture = SaeArchitectures.Get("gated"),
            DIn = 4,
            DSae = 8,
            Metadata = new Dictionary<string, object?>
            {
                ["hook_name"] = "blocks.0.hook_mlp_out",
                ["model_name"] = "tiny",
                ["context_size"] = 128,
                ["prepend_bos"] = false,
                ["training"] = new Dictionary<string, object?> { ["l1_coefficient"] = 3.0 },
            },
        };
        using (var sae = SparseAutoencoder.CreateEmpty(device, config))
        {
            SaeFiles.Save(sae, P("sae"));
        }

        var cfg = JsonNode.Parse(File.ReadAllText(P("sae/cfg.json")))!;
        var metadata = cfg["metadata"]!;
        // SAELens (handle_config_defaulting) treats a config as v6 when metadata.sae_lens_version >= 6.0.0,
        // and then keeps every metadata key; without it the metadata is rebuilt from top-level keys.
        new Version(metadata["sae_lens_version"]!.GetValue<string>())
            .Major.Should()
            .BeGreaterThanOrEqualTo(6);
        metadata.AsObject().ContainsKey("sae_lens_training_version").Should().BeTrue();
        metadata["hook_name"]!.GetValue<string>().Should().Be("blocks.0.hook_mlp_out");
        metadata["prepend_bos"]!.GetValue<bool>().Should().BeFalse();
        cfg["l1_coefficient"]!.GetValue<double>().Should().Be(3.0);

        // A pre-6.0 folder (provenance at the top level, no version) still loads, its provenance moved into
        // the metadata.
        var old = cfg.AsObject();
        old.Remove("metadata");
        old["hook_point"] = "blocks.1.hook_resid_post";
        old["context_size"] = 64;
        File.WriteAllText(P("sae/cfg.json"), old.ToJsonString());
        using var loaded = SaeFiles.Load(device, P("sae"));
        loaded.Config.Metadata["hook_name"]!.ToString().Should().Be("blocks.1.hook_resid_post");
        loaded.Config.Metadata["context_size"]!.ToString().Should().Be("64");
    }
}
