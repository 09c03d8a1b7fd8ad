using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace IlgpuSae.Kernels;

/// <summary>One kernel compiled to PTX.</summary>
/// <param name="Kernel">The kernel.</param>
/// <param name="Path">The written <c>.ptx</c> file.</param>
/// <param name="Lines">Number of PTX lines.</param>
public sealed record PtxFile(KernelEntry Kernel, string Path, int Lines);

/// <summary>
/// Compiles every kernel in <see cref="KernelCatalog"/> to PTX through ILGPU's PTX backend. No GPU or CUDA
/// driver is needed, so CI can assemble the result with <c>ptxas</c> and prove the CUDA path compiles.
/// </summary>
public static class PtxEmitter
{
    /// <summary>
    /// Writes one <c>.ptx</c> file per kernel into <paramref name="outputDirectory"/>. ISA 7.8 is the newest
    /// that Debian's ptxas 11.8 accepts; ILGPU always writes <c>.target sm_80</c> or lower for these targets.
    /// </summary>
    public static IReadOnlyList<PtxFile> Emit(
        string outputDirectory,
        CudaArchitecture? architecture = null,
        CudaInstructionSet? instructionSet = null,
        CancellationToken cancellationToken = default
    )
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(outputDirectory);
        var arch = architecture ?? CudaArchitecture.SM_80;
        var isa = instructionSet ?? CudaInstructionSet.ISA_78;
        Directory.CreateDirectory(outputDirectory);

        // One context per target: a second PTX backend on the same context would return cached kernels.
        using var context = Context.Create(b => b.Cuda().EnableAlgorithms().Optimize(OptimizationLevel.O1));
        using var backend = new PTXBackend(
            context,
            new CudaCapabilityContext(arch),
            arch,
            isa,
            nvvmAPI: null
        );
        var files = new List<PtxFile>();
        foreach (var kernel in KernelCatalog.All)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var entry = kernel.ExplicitlyGrouped
                ? EntryPointDescription.FromExplicitlyGroupedKernel(kernel.Method)
                : EntryPointDescription.FromImplicitlyGroupedKernel(kernel.Method);
            var compiled = (PTXCompiledKernel)backend.Compile(entry, new KernelSpecialization());
            var path = Path.Combine(outputDirectory, kernel.Name + ".ptx");
            var temp = path + ".tmp";
            File.WriteAllText(temp, compiled.PTXAssembly);
            File.Move(temp, path, overwrite: true);
            files.Add(new PtxFile(kernel, path, compiled.PTXAssembly.Count(c => c == '\n')));
        }

        return files;
    }
}
