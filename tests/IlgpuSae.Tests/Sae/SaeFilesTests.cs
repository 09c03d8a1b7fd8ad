using System.IO.Compression;
using System.Text.Json.Nodes;
using FluentAssertions;
using IlgpuSae.Backends;
using IlgpuSae.IO;
using IlgpuSae.Sae;
using IlgpuSae.Tests.Infrastructure;
using IlgpuSae.Verification;
using Xunit;

namespace IlgpuSae.Tests.Sae;

/// <summary>SAELens files, Gemma Scope npz, the exact gated → JumpReLU export, and inference
/// semantics.</summary>
[Collection(DeviceCollection.Name)]
public sealed class SaeFilesTests(DeviceFixture devices) : IDisposable
{
    private readonly TempFolder _temp = new("ilgpusae-files-");

    private SaeDevice Cpu => devices.Get(new Target(BackendKind.Cpu, KernelVariant.CpuShaped));

    public void Dispose() => _temp.Dispose();

    private string P(string name) => _temp.Path(name);

    [Theory]
    [InlineData("standard", new[] { "W_enc", "b_enc", "W_dec", "b_dec" })]
    [InlineData("gated", new[] { "W_enc", "b_gate", "b_mag", "r_mag", "W_dec", "b_dec" })]
    [InlineData("jumprelu", new[] { "W_enc", "b_enc", "threshold", "W_dec", "b_dec" })]
    public void SAELens_round_trip_keeps_names_shapes_and_values(string arch, string[] names)
    {
        var config = new SaeConfig
        {
            Architecture = SaeArchitectures.Get(arch),
            DIn = 6,
            DSae = 10,
            Metadata = new Dictionary<string, object?> { ["hook_name"] = "blocks.0.hook_resid_post" },
        };
        var (p, _) = SaeTestData.Generate(config, 1, seed: 2, margin: 0);
        using var sae = SparseAutoencoder.CreateEmpty(Cpu, config);
        SaeTestData.Load(sae, p);
        SaeFiles.Save(sae, P("sae"));

        using (var weights = new SafetensorsFile(P("sae/sae_weights.safetensors")))
        {
            weights.Entries.Keys.Should().BeEquivalentTo(names);
            weights["W_enc"].Shape.Should().Equal(6, 10);
            weights["W_dec"].Shape.Should().Equal(10, 6);
            weights["b_dec"].Shape.Should().Equal(6);
            foreach (
                var e in weights.Entries.Values.Where(e => e.Name is not ("W_enc" or "W_dec" or "b_dec"))
            )
            {
                e.Shape.Should().Equal([10], $"{e.Name} is a per-feature vector");
            }
        }

        var cfg = JsonNode.Parse(File.ReadAllText(P("sae/cfg.json")))!.AsObject();
        cfg["architecture"]!.GetValue<string>().Should().Be(arch);
        cfg["d_in"]!.GetValue<int>().Should().Be(6);
        cfg["metadata"]!["hook_name"]!.GetValue<string>().Should().Be("blocks.0.hook_resid_post");

        using var loaded = SaeFiles.Load(Cpu, P("sae"));
        loaded.Config.Architecture.Should().BeSameAs(SaeArchitectures.Get(arch));
        foreach (var name in names)
        {
            SaeTestData.Read(loaded, name).Should().Equal(p[name], name);
        }
    }

    [Fact]
    public void Bad_files_are_refused_with_a_clear_message_and_saving_never_leaves_half_a_folder()
    {
        var config = new SaeConfig
        {
            Architecture = SaeArchitecture.Gated,
            DIn = 4,
            DSae = 8,
        };
        using var sae = SparseAutoencoder.Create(Cpu, config, seed: 1);
        SaeFiles.Save(sae, P("ok"));
        Directory
            .GetDirectories(_temp.FullName)
            .Should()
            .ContainSingle("temporary folders are renamed or removed");

        void Variant(string name, Action<string> spoil)
        {
            CopyDir(P("ok"), P(name));
            spoil(P(name));
        }

        Variant(
            "unknown-key",
            d =>
                File.WriteAllText(
                    Path.Combine(d, "cfg.json"),
                    File.ReadAllText(Path.Combine(d, "cfg.json"))
                        .Replace("\"d_in\"", "\"d_inn\": 1, \"d_in\"")
                )
        );
        FluentActions
            .Invoking(() => SaeFiles.Load(Cpu, P("unknown-key")))
            .Should()
            .Throw<InvalidDataException>()
            .WithMessage("*unknown key(s) 'd_inn'*");
        Variant(
            "wrong-type",
            d =>
                File.WriteAllText(
                    Path.Combine(d, "cfg.json"),
                    File.ReadAllText(Path.Combine(d, "cfg.json"))
                        .Replace("\"apply_b_dec_to_input\": true", "\"apply_b_dec_to_input\": \"yes\"")
                )
        );
        FluentActions
            .Invoking(() => SaeFiles.Load(Cpu, P("wrong-type")))
            .Should()
            .Throw<InvalidDataException>()
            .WithMessage("*wrong type*");
        Variant(
            "unknown-family",
            d =>
                File.WriteAllText(
                    Path.Combine(d, "cfg.json"),
                    File.ReadAllText(Path.Combine(d, "cfg.json")).Replace("\"gated\"", "\"not-a-family\"")
                )
        );
        FluentActions
            .Invoking(() => SaeFiles.Load(Cpu, P("unknown-family")))
            .Should()
            .Throw<InvalidDataException>()
            .WithMessage("*architecture 'not-a-family' is not supported*");
        Variant(
            "topk-without-k",
            d =>
                File.WriteAllText(
                    Path.Combine(d, "cfg.json"),
                    File.ReadAllText(Path.Combine(d, "cfg.json")).Replace("\"gated\"", "\"topk\"")
                )
        );
        FluentActions
            .Invoking(() => SaeFiles.Load(Cpu, P("topk-without-k")))
            .Should()
            .Throw<InvalidDataException>()
            .WithMessage("*topk SAE needs 1 ≤ k ≤ d_sae*");
        Variant(
            "shape",
            d =>
                File.WriteAllText(
                    Path.Combine(d, "cfg.json"),
                    File.ReadAllText(Path.Combine(d, "cfg.json")).Replace("\"d_sae\": 8", "\"d_sae\": 9")
                )
        );
        FluentActions
            .Invoking(() => SaeFiles.Load(Cpu, P("shape")))
            .Should()
            .Throw<InvalidDataException>()
            .WithMessage("*has shape ?*8*, expected ?*9*? for d_in=4, d_sae=9*");
        Variant(
            "truncated",
            d =>
            {
                var w = Path.Combine(d, SaeFiles.WeightsFile);
                var bytes = File.ReadAllBytes(w);
                File.WriteAllBytes(w, bytes[..(bytes.Length / 2)]);
            }
        );
        FluentActions
            .Invoking(() => SaeFiles.Load(Cpu, P("truncated")))
            .Should()
            .Throw<InvalidDataException>()
            .WithMessage("*truncated*");
        Variant(
            "missing",
            d =>
                SafetensorsWriter.Write(
                    Path.Combine(d, SaeFiles.WeightsFile),
                    [new TensorToWrite("W_enc", [4, 8], new float[32])]
                )
        );
        FluentActions
            .Invoking(() => SaeFiles.Load(Cpu, P("missing")))
            .Should()
            .Throw<InvalidDataException>()
            .WithMessage("*missing tensor(s) b_gate, b_mag, r_mag, W_dec, b_dec*");
        Variant(
            "nan",
            d =>
            {
                using var f = new SafetensorsFile(Path.Combine(d, SaeFiles.WeightsFile));
                var tensors = f
                    .Entries.Values.Select(e => new TensorToWrite(e.Name, e.Shape, f.ReadFloats(e.Name)))
                    .ToList();
                f.Dispose();
                tensors[0].Floats![3] = float.NaN;
                SafetensorsWriter.Write(Path.Combine(d, SaeFiles.WeightsFile), tensors);
            }
        );
        FluentActions
            .Invoking(() => SaeFiles.Load(Cpu, P("nan")))
            .Should()
            .Throw<InvalidDataException>()
            .WithMessage("*non-finite value*element 3*");
    }

    private static void CopyDir(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from))
        {
            File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
        }
    }

    [SkippableTheory]
    [MemberData(nameof(Targets.Data), MemberType = typeof(Targets))]
    public void Gated_to_JumpReLU_export_gives_identical_features_and_reconstructions(Target target)
    {
        var device = devices.Get(target);
        var config = new SaeConfig
        {
            Architecture = SaeArchitecture.Gated,
            DIn = 12,
            DSae = 40,
        };
        const int batch = 64;
        var (p, x) = SaeTestData.Generate(config, batch, seed: 8, margin: 1e-3);
        using var gated = SparseAutoencoder.CreateEmpty(device, config);
        SaeTestData.Load(gated, p);
        using var jump = SaeFiles.ExportJumpRelu(gated);
        jump.Config.Architecture.Should().Be(SaeArchitecture.JumpRelu);
        var xs = x.Select(v => (float)v).ToArray();
        var (fg, rg) = gated.ForwardHost(xs, batch);
        var (fj, rj) = jump.ForwardHost(xs, batch);
        fg.Count(v => v != 0).Should().BeGreaterThan(0).And.BeLessThan(fg.Length);
        fj.Zip(fg)
            .Should()
            .OnlyContain(t =>
                (t.First == 0) == (t.Second == 0)
                && TestTolerances.GatedToJumpReluExport.Allows(t.First, t.Second)
            );
        rj.Zip(rg).Should().OnlyContain(t => TestTolerances.GatedToJumpReluExport.Allows(t.First, t.Second));
        // SAELens stores thresholds as non-negative values (a negative θ is the same as a plain ReLU).
        SaeTestData.Read(jump, "threshold").Should().OnlyContain(t => t >= 0);
    }

    [Fact]
    public void Gemma_Scope_params_npz_loads_as_a_JumpReLU_without_b_dec_subtraction()
    {
        int d = 5,
            m = 7;
        var random = new Random(4);
        float[] R(int n) => Enumerable.Range(0, n).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray();
        var tensors = new Dictionary<string, (float[] Data, long[] Shape)>
        {
            ["W_enc"] = (R(d * m), [d, m]),
            ["W_dec"] = (R(m * d), [m, d]),
            ["b_enc"] = (R(m), [m]),
            ["b_dec"] = (R(d), [d]),
            ["threshold"] = (R(m).Select(Math.Abs).ToArray(), [m]),
        };
        using (var zip = ZipFile.Open(P("params.npz"), ZipArchiveMode.Create))
        {
            foreach (var (name, (data, shape)) in tensors)
            {
                Npy.WriteFloats(P(name + ".npy"), data, shape);
                zip.CreateEntryFromFile(P(name + ".npy"), name + ".npy");
            }
        }

        using var sae = SaeFiles.Load(Cpu, P("params.npz"));
        sae.Config.Architecture.Should().Be(SaeArchitecture.JumpRelu);
        sae.Config.ApplyBDecToInput.Should().BeFalse();
        var x = R(3 * d);
        var p = tensors.ToDictionary(kv => kv.Key, kv => kv.Value.Data.Select(v => (double)v).ToArray());
        var expected = SaeReference.Encode(sae.Config, p, x.Select(v => (double)v).ToArray(), 3);
        sae.ForwardHost(x, 3)
            .Features.Zip(expected)
            .Should()
            .OnlyContain(t => Math.Abs(t.First - t.Second) < TestTolerances.GemmaScopeFeatures);
    }
}
