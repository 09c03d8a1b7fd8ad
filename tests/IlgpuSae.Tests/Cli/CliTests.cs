using System.Text.Json;
using FluentAssertions;
using IlgpuSae.Backends;
using IlgpuSae.Kernels;
using IlgpuSae.Tests.Infrastructure;
using Xunit;

namespace IlgpuSae.Tests.Cli;

/// <summary>The <c>ilgpu-sae</c> commands of the foundation, run in-process.</summary>
[Collection(EnvironmentCollection.Name)]
public sealed class CliTests
{
    private static (int Code, string Out, string Err) Run(params string[] args) => CliRunner.Run(args);

    [Fact]
    public void Devices_json_lists_every_device_and_the_auto_choice()
    {
        var (code, output, _) = Run("devices", "--json");
        code.Should().Be(0);
        using var doc = JsonDocument.Parse(output);
        var devices = doc.RootElement.GetProperty("devices").EnumerateArray().ToArray();
        devices.Should().Contain(d => d.GetProperty("backend").GetString() == "cpu");
        devices.Count(d => d.GetProperty("auto").GetBoolean()).Should().Be(1);
        doc.RootElement.GetProperty("auto")
            .GetInt32()
            .Should()
            .Be(devices.Single(d => d.GetProperty("auto").GetBoolean()).GetProperty("index").GetInt32());
        foreach (var d in devices)
        {
            foreach (var field in new[] { "type", "name", "memoryBytes", "warpSize", "maxGroupSize" })
            {
                d.TryGetProperty(field, out _).Should().BeTrue(field);
            }
        }
    }

    [Fact]
    public void Devices_table_marks_the_auto_choice()
    {
        var (code, output, _) = Run("devices");
        code.Should().Be(0);
        output.Should().Contain("cpu:0").And.Contain("<- auto");
    }

    [Fact]
    public void A_missing_backend_fails_with_the_list_of_devices()
    {
        if (DeviceCatalog.ListDevices().Any(d => d.Backend == BackendKind.Cuda && d.IsSupported))
        {
            return; // this machine has CUDA; nothing is missing
        }

        var (code, _, err) = Run("--backend", "cuda", "selfcheck", "--filter", "Map Relu 1x1");
        code.Should().Be(2);
        err.Should().Contain("'cuda' is not available").And.Contain("cpu:0");
        using var env = new EnvironmentScope(BackendKinds.EnvironmentVariable, "cuda");
        var (envCode, _, envErr) = Run("selfcheck", "--filter", "Map Relu 1x1");
        envCode.Should().Be(2);
        envErr.Should().Contain("'cuda' is not available");
    }

    [Fact]
    public void An_unknown_backend_name_is_a_usage_error()
    {
        var (code, output, err) = Run("--backend", "metal", "devices");
        code.Should().NotBe(0);
        (output + err).Should().Contain("Unknown backend 'metal'");
    }

    [Fact]
    public void Selfcheck_runs_the_chosen_checks_on_the_cpu_and_reports_success()
    {
        var (code, output, _) = Run(
            "--backend",
            "cpu",
            "selfcheck",
            "--filter",
            "MatMul NT 33x47x29",
            "--variant",
            "all"
        );
        code.Should().Be(0);
        output
            .Should()
            .Contain("CpuShaped")
            .And.Contain("GpuShaped")
            .And.Contain("All kernels match their references");
    }

    [Fact]
    public void Kernels_emit_ptx_writes_one_sm80_file_per_kernel()
    {
        using var dir = new TempFolder("ilgpusae-ptx-");
        var (code, output, err) = Run("kernels", "--emit", "ptx", "--out", dir.FullName);
        code.Should().Be(0, err);
        output.Should().Contain($"Wrote {KernelCatalog.All.Count} PTX files");
        var files = new DirectoryInfo(dir.FullName).GetFiles("*.ptx");
        files
            .Select(f => Path.GetFileNameWithoutExtension(f.Name))
            .Should()
            .BeEquivalentTo(KernelCatalog.All.Select(k => k.Name));
        foreach (var file in files)
        {
            var text = File.ReadAllText(file.FullName);
            text.Should().Contain(".version 7.8").And.Contain(".target sm_80").And.Contain(".entry");
        }
    }

    [Fact]
    public void Kernels_emit_without_an_output_folder_is_an_error()
    {
        var (code, _, err) = Run("kernels", "--emit", "ptx");
        code.Should().Be(2);
        err.Should().Contain("--out");
    }
}
