using FluentAssertions;
using IlgpuSae.Data;
using IlgpuSae.IO;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Training;
using Xunit;

namespace IlgpuSae.Tests.Reliability;

/// <summary>Every size a file declares is checked: overflow, nulls and torn records in the committed
/// bad-input corpus are one clear <see cref="InvalidDataException"/>, never a wrapped size or a
/// crash.</summary>
public sealed class UntrustedHeaderTests : IDisposable
{
    private readonly TempFolder _temp = new("ilgpusae-bad-");

    public void Dispose() => _temp.Dispose();

    [Theory]
    [InlineData("npy/overflow-rows.npy")]
    [InlineData("npy/overflow-shape.npy")]
    [InlineData("npy/truncated-data.npy")]
    [InlineData("npy/truncated-header.npy")]
    [InlineData("npy/truncated-length.npy")]
    [InlineData("npy/huge-header-length.npy")]
    [InlineData("safetensors/overflow-shape.safetensors")]
    [InlineData("safetensors/string-offsets.safetensors")]
    [InlineData("safetensors/numeric-dtype.safetensors")]
    [InlineData("safetensors/huge-header.safetensors")]
    [InlineData("cache-null-file")]
    [InlineData("cache-overflow-rows")]
    [InlineData("cache-null-shards")]
    public void A_bad_activation_file_is_one_clear_invalid_data_error(string name)
    {
        var path = BadInputs.Path(name);
        var before = BadInputs.Hash(path);
        var open = () =>
        {
            using var source = ActivationSources.Open(path);
        };
        open.Should().Throw<InvalidDataException>().Which.Message.Should().Contain(path);
        BadInputs.Hash(path).Should().Be(before, "a reader never changes its input");
    }

    [Theory]
    [InlineData("lm-config/numeric-model-type.json")]
    [InlineData("lm-config/numeric-activation.json")]
    [InlineData("lm-config/zero-heads.json")] // a DivideByZeroException before the fix
    public void A_model_config_key_of_the_wrong_json_type_is_one_clear_error(string name)
    {
        var path = BadInputs.Path(name);
        var load = () => IlgpuSae.Lm.LmConfig.Load(path);
        load.Should().Throw<InvalidDataException>().Which.Message.Should().Contain(path);
    }

    [Fact]
    public void Npy_headers_check_every_size_product_for_overflow()
    {
        using var stream = File.OpenRead(BadInputs.Path("npy/overflow-rows.npy"));
        var read = () => Npy.ReadHeader(stream, "x.npy", stream.Length);
        read.Should().Throw<InvalidDataException>().WithMessage("*x.npy*");
        var count = () => new NpyHeader(TensorDType.F32, [1L << 40, 1L << 40], 128).Count;
        count.Should().Throw<InvalidDataException>().WithMessage("*64-bit*");
    }

    [Fact]
    public void An_npz_member_too_large_for_memory_is_a_clear_error()
    {
        var path = _temp.Path("params.npz");
        using (
            var zip = System.IO.Compression.ZipFile.Open(path, System.IO.Compression.ZipArchiveMode.Create)
        )
        {
            using var s = zip.CreateEntry("W_enc.npy").Open();
            s.Write(File.ReadAllBytes(BadInputs.Path("npy/overflow-shape.npy")));
        }

        var read = () => Npy.ReadNpz(path);
        read.Should().Throw<InvalidDataException>().WithMessage("*params.npz*");
    }

    [Fact]
    public void Size_sums_and_array_lengths_are_checked()
    {
        var sum = () => SizeMath.Sum([long.MaxValue, 1], "m.json");
        sum.Should().Throw<InvalidDataException>().WithMessage("m.json*");
        var length = () => SizeMath.ArrayLength(1L << 40, "t");
        length.Should().Throw<InvalidDataException>();
        SizeMath.ElementCount([3, 4, 5], "t").Should().Be(60);
    }

    [Fact]
    public void A_torn_last_metrics_line_is_dropped_on_resume_and_complete_lines_kept()
    {
        File.Copy(BadInputs.Path("metrics/torn-tail.jsonl"), _temp.Path(MetricsLog.FileName));
        var log = new MetricsLog(_temp.FullName);
        log.TruncateAfter(10);
        File.ReadAllLines(log.Path).Should().HaveCount(2).And.OnlyContain(l => l.StartsWith("{\"step\":"));
        log.TruncateAfter(1);
        File.ReadAllLines(log.Path).Should().ContainSingle();
    }

    [Fact]
    public void A_torn_activation_progress_record_is_a_clear_error()
    {
        var folder = _temp.Path("acts");
        Directory.CreateDirectory(folder);
        File.Copy(BadInputs.Path("progress/torn-progress.json"), Path.Combine(folder, "progress.json"));
        var model = Lm.LmTestData.BundledModel;
        using var device = IlgpuSae.Backends.SaeDevice.Create(IlgpuSae.Backends.BackendKind.Cpu);
        using var lm = IlgpuSae.Lm.LanguageModel.Load(device, model);
        var tokenizer = IlgpuSae.Lm.LmTokenizer.Load(model, lm.Config);
        var plan = IlgpuSae.Lm.ActivationPlan.Create(
            lm,
            tokenizer,
            new IlgpuSae.Lm.ActivationRequest
            {
                Site = "blocks.0.hook_resid_post",
                Corpus = Lm.LmTestData.HeldOut,
                Tokens = 256,
                ContextSize = 16,
                Batch = 4,
            }
        );
        var build = () => IlgpuSae.Lm.ActivationCacheBuilder.Build(plan, folder, shardRows: 64);
        build.Should().Throw<InvalidDataException>().WithMessage("*progress.json is damaged*");
    }
}
