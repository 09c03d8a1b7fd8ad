#!/usr/bin/env bash
# Packs what perf/run-gpu.sh needs on a GPU machine that has no .NET SDK into one file,
# artifacts/gpu-bundle.tar.xz: the .NET runtime this machine's SDK runs on (the dotnet host, hostfxr, and the
# Microsoft.NETCore.App and Microsoft.AspNetCore.App frameworks — the CLI's runtimeconfig names both), and the
# Release builds of the CLI and the benchmark, with only the linux-x64 native libraries.
#
#   bash perf/gpu-bundle.sh            build (Release) and pack; prints the bundle's size
#
# Carry artifacts/gpu-bundle.tar.xz to the GPU machine next to a checkout of the same commit; there,
# `bash perf/run-gpu.sh` finds no dotnet on PATH, unpacks the bundle and runs every step except the test-suite
# step, which needs the SDK (selfcheck still checks every kernel against its reference on CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v dotnet >/dev/null || { echo "gpu-bundle: needs the .NET 10 SDK here (dotnet on PATH)" >&2; exit 1; }
dotnet build IlgpuSae.sln -c Release -nologo -v q
dotnet build perf/IlgpuSae.Bench -c Release -nologo -v q
root=$(dirname "$(readlink -f "$(command -v dotnet)")")
runtime=$(dotnet --list-runtimes | awk '$1 == "Microsoft.NETCore.App" {v = $2} END {print v}')
[ -n "$runtime" ] || { echo "gpu-bundle: no Microsoft.NETCore.App runtime found" >&2; exit 1; }
stage=artifacts/gpu-bundle
rm -rf "$stage"
mkdir -p "$stage/dotnet/host/fxr" "$stage/dotnet/shared"
cp "$root/dotnet" "$stage/dotnet/"
cp -r "$root/host/fxr/$runtime" "$stage/dotnet/host/fxr/"
for framework in Microsoft.NETCore.App Microsoft.AspNetCore.App; do
  [ -d "$root/shared/$framework/$runtime" ] \
    || { echo "gpu-bundle: $framework $runtime is not installed with this SDK" >&2; exit 1; }
  mkdir -p "$stage/dotnet/shared/$framework"
  cp -r "$root/shared/$framework/$runtime" "$stage/dotnet/shared/$framework/"
done
pack_build() {   # pack_build FROM TO: a build output without symbols, docs or other platforms' native libraries
  mkdir -p "$2"
  (cd "$1" && find . -type f ! -name '*.pdb' ! -name '*.xml' \
      \( ! -path './runtimes/*' -o -path './runtimes/linux-x64/*' -o -path './runtimes/unix/*' \) -print0 \
    | xargs -0 cp --parents -t "$OLDPWD/$2")
}
pack_build src/IlgpuSae.Cli/bin/Release/net10.0 "$stage/cli"
pack_build perf/IlgpuSae.Bench/bin/Release/net10.0 "$stage/bench"
git rev-parse HEAD >"$stage/commit"
tar -C artifacts -cJf artifacts/gpu-bundle.tar.xz gpu-bundle
rm -rf "$stage"
echo "gpu-bundle: artifacts/gpu-bundle.tar.xz ($(du -h artifacts/gpu-bundle.tar.xz | cut -f1)), .NET $runtime," \
  "commit $(git rev-parse --short HEAD)"
