using System.IO.Compression;
using System.Text;
using FluentAssertions;
using IlgpuSae.Data;
using IlgpuSae.IO;
using IlgpuSae.Tests.Infrastructure;
using Xunit;

namespace IlgpuSae.Tests.IO;

/// <summary>The .npy, .npz and safetensors readers and writers: dtypes, round trips, and damaged files
/// refused with the reason.</summary>
public sealed class TensorFileTests : IDisposable
{
    private readonly TempFolder _temp = new("ilgpusae-io-");

    public void Dispose() => _temp.Dispose();

    private string P(string name) => _temp.Path(name);

    private static float[] Rows(int n, int d) =>
        Enumerable.Range(0, n * d).Select(i => (float)(i % 977) / 100f - 4f).ToArray();

    [Fact]
    public void Float16_npy_is_converted()
    {
        var halves = new[] { (Half)1.5f, (Half)(-2.25f), (Half)0.125f, (Half)3f };
        var header = "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 2), }";
        header += new string(' ', 63 - (10 + header.Length) % 64) + "\n";
        using (var fs = File.Create(P("h.npy")))
        {
            fs.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0]);
            fs.Write(BitConverter.GetBytes((ushort)header.Length));
            fs.Write(Encoding.Latin1.GetBytes(header));
            foreach (var h in halves)
            {
                fs.Write(BitConverter.GetBytes(h));
            }
        }

        using var source = ActivationSources.Open(P("h.npy"));
        var rows = new float[4];
        source.ReadRows(0, rows);
        rows.Should().Equal(1.5f, -2.25f, 0.125f, 3f);
    }

    [Fact]
    public void Truncated_and_corrupt_files_are_refused_with_the_reason()
    {
        Npy.WriteFloats(P("t.npy"), Rows(100, 4), 100, 4);
        var bytes = File.ReadAllBytes(P("t.npy"));
        File.WriteAllBytes(P("t.npy"), bytes[..(bytes.Length - 10)]);
        FluentActions
            .Invoking(() => ActivationSources.Open(P("t.npy")))
            .Should()
            .Throw<InvalidDataException>()
            .WithMessage("*truncated*");

        SafetensorsWriter.Write(P("s.safetensors"), [new TensorToWrite("acts", [100, 4], Rows(100, 4))]);
        var st = File.ReadAllBytes(P("s.safetensors"));
        File.WriteAllBytes(P("s1.safetensors"), st[..(st.Length - 4)]);
        FluentActions
            .Invoking(() => new SafetensorsFile(P("s1.safetensors")))
            .Should()
            .Throw<InvalidDataException>()
            .WithMessage("*truncated*");
        File.WriteAllBytes(P("s2.safetensors"), st[..20]);
        FluentActions
            .Invoking(() => new SafetensorsFile(P("s2.safetensors")))
            .Should()
            .Throw<InvalidDataException>();

        void WriteRaw(string name, string json, int dataBytes)
        {
            var h = Encoding.UTF8.GetBytes(json);
            using var fs = File.Create(P(name));
            fs.Write(BitConverter.GetBytes((long)h.Length));
            fs.Write(h);
            fs.Write(new byte[dataBytes]);
        }

        WriteRaw(
            "overlap.safetensors",
            """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""",
            12
        );
        FluentActions
            .Invoking(() => new SafetensorsFile(P("overlap.safetensors")))
            .Should()
            .Throw<InvalidDataException>()
            .WithMessage("*overlapping*");
        WriteRaw("shape.safetensors", """{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}""", 8);
        FluentActions
            .Invoking(() => new SafetensorsFile(P("shape.safetensors")))
            .Should()
            .Throw<InvalidDataException>()
            .WithMessage("*needs 12 bytes*");
        WriteRaw("dtype.safetensors", """{"a":{"dtype":"Q8","shape":[2],"data_offsets":[0,2]}}""", 2);
        FluentActions
            .Invoking(() => new SafetensorsFile(P("dtype.safetensors")))
            .Should()
            .Throw<InvalidDataException>()
            .WithMessage("*unsupported dtype 'Q8'*");
        WriteRaw("json.safetensors", """{"a": [""", 0);
        FluentActions
            .Invoking(() => new SafetensorsFile(P("json.safetensors")))
            .Should()
            .Throw<InvalidDataException>()
            .WithMessage("*not valid JSON*");
    }

    [Fact]
    public void Safetensors_round_trip_keeps_names_shapes_values_and_metadata()
    {
        SafetensorsWriter.Write(
            P("r.safetensors"),
            [
                new TensorToWrite("W", [2, 3], [1, 2, 3, 4, 5, 6]),
                new TensorToWrite("idx", [3], Ints: [7, -8, 9]),
                new TensorToWrite("ptr", [2], Longs: [0, 1L << 40]),
            ],
            new Dictionary<string, string> { ["format"] = "pt" }
        );
        using var f = new SafetensorsFile(P("r.safetensors"));
        f.Metadata["format"].Should().Be("pt");
        f["W"].Shape.Should().Equal(2, 3);
        f.ReadFloats("W").Should().Equal(1, 2, 3, 4, 5, 6);
        f.ReadInt64("idx").Should().Equal(7, -8, 9);
        f.ReadInt64("ptr").Should().Equal(0, 1L << 40);
        FluentActions
            .Invoking(() => f["nope"])
            .Should()
            .Throw<KeyNotFoundException>()
            .WithMessage("*W, idx, ptr*");
    }

    [Fact]
    public void Npz_archives_are_read()
    {
        Npy.WriteFloats(P("x.npy"), [1, 2, 3, 4, 5, 6], 2, 3);
        using (var zip = ZipFile.Open(P("p.npz"), ZipArchiveMode.Create))
        {
            zip.CreateEntryFromFile(P("x.npy"), "W_enc.npy");
        }

        var arrays = Npy.ReadNpz(P("p.npz"));
        arrays["W_enc"].Shape.Should().Equal(2, 3);
        arrays["W_enc"].Data.Should().Equal(1, 2, 3, 4, 5, 6);
    }
}
