using FluentAssertions;
using IlgpuSae.Data;
using IlgpuSae.IO;
using IlgpuSae.Tests.Infrastructure;
using Xunit;

namespace IlgpuSae.Tests.Data;

/// <summary>Activation sources over every file kind, caches and the resumable shuffled loader.</summary>
public sealed class DataTests : IDisposable
{
    private readonly TempFolder _temp = new("ilgpusae-data-");

    public void Dispose() => _temp.Dispose();

    private string P(string name) => _temp.Path(name);

    private static float[] Rows(int n, int d) =>
        Enumerable.Range(0, n * d).Select(i => (float)(i % 977) / 100f - 4f).ToArray();

    [Fact]
    public void Npy_safetensors_and_cache_sources_read_the_same_rows()
    {
        int n = 3000,
            d = 7;
        var data = Rows(n, d);
        Npy.WriteFloats(P("a.npy"), data, n, d);
        SafetensorsWriter.Write(P("a.safetensors"), [new TensorToWrite("acts", [n, d], data)]);
        var writer = new ActivationCacheWriter(
            P("cache"),
            d,
            shardRows: 1000,
            new Dictionary<string, object?> { ["model"] = "toy" }
        );
        writer.Append(data.AsSpan(0, 1234 * d));
        writer.Append(data.AsSpan(1234 * d));
        writer.Complete().Shards.Should().HaveCount(3);
        foreach (var path in new[] { P("a.npy"), P("a.safetensors"), P("cache") })
        {
            using var source = ActivationSources.Open(path);
            source.Rows.Should().Be(n);
            source.Dim.Should().Be(d);
            var rows = new float[5 * d];
            source.ReadRows(997, rows);
            rows.Should().Equal(data.AsSpan(997 * d, 5 * d).ToArray(), path);
        }

        using var cache = ActivationCache.Open(P("cache"));
        cache.Verify();
        File.WriteAllBytes(
            P("cache/shard-00001.npy"),
            File.ReadAllBytes(P("cache/shard-00001.npy"))
                .Select((b, i) => i == 200 ? (byte)(b ^ 1) : b)
                .ToArray()
        );
        FluentActions
            .Invoking(cache.Verify)
            .Should()
            .Throw<InvalidDataException>()
            .WithMessage("*shard-00001.npy*SHA-256*");
    }

    [Fact]
    public void Loader_visits_every_row_once_per_epoch_deterministically_and_resumes_exactly()
    {
        int n = 5000,
            d = 3;
        var data = Enumerable.Range(0, n * d).Select(i => (float)(i / d)).ToArray(); // row r holds r
        Npy.WriteFloats(P("l.npy"), data, n, d);
        using var source = ActivationSources.Open(P("l.npy"));
        List<float> Take(ActivationLoader loader, int batches)
        {
            var seen = new List<float>();
            var batch = new float[loader.BatchSize * d];
            for (int k = 0; k < batches; k++)
            {
                loader.NextBatch(batch);
                for (int r = 0; r < loader.BatchSize; r++)
                {
                    seen.Add(batch[r * d]);
                }
            }

            return seen;
        }

        var a = Take(new ActivationLoader(source, 100, seed: 9, shuffleBufferRows: 2048), 50);
        var b = Take(new ActivationLoader(source, 100, seed: 9, shuffleBufferRows: 2048), 50);
        a.Should().Equal(b);
        a.Should().OnlyHaveUniqueItems().And.HaveCount(n, "one epoch visits each row exactly once");
        a.Should().NotBeInAscendingOrder();
        var resumed = new ActivationLoader(source, 100, seed: 9, shuffleBufferRows: 2048);
        resumed.Seek(2300);
        Take(resumed, 10).Should().Equal(a.Skip(2300).Take(1000));
        var other = Take(new ActivationLoader(source, 100, seed: 10, shuffleBufferRows: 2048), 50);
        other.Should().NotEqual(a);
        var r0 = Take(new ActivationLoader(source, 50, seed: 9, rank: 0, worldSize: 2), 18);
        var r1 = Take(new ActivationLoader(source, 50, seed: 9, rank: 1, worldSize: 2), 18);
        r0.Intersect(r1).Should().BeEmpty("within an epoch, ranks read disjoint blocks");
    }

    [Fact]
    public void Non_finite_rows_are_named()
    {
        var data = Rows(2048, 4);
        data[1500 * 4 + 2] = float.NaN;
        Npy.WriteFloats(P("nan.npy"), data, 2048, 4);
        using var source = ActivationSources.Open(P("nan.npy"));
        var loader = new ActivationLoader(source, 2048, seed: 1, shuffle: false);
        FluentActions
            .Invoking(() => loader.NextBatch(new float[2048 * 4]))
            .Should()
            .Throw<InvalidDataException>()
            .WithMessage("*row 1500*column 2*");
        FluentActions
            .Invoking(() => new ActivationCacheWriter(P("c2"), 4).Append(data))
            .Should()
            .Throw<ArgumentException>()
            .WithMessage("*Row 1500*");
    }
}
