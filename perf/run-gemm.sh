#!/usr/bin/env bash
# Runs the GEMM benchmark on the host (ILGPU CPU accelerator, and CUDA when present) and, when
# possible, inside the PoCL chroot (OpenCL on the CPU), writing dated tables to perf/results/.
#   bash perf/run-gemm.sh [extra benchmark options, e.g. --sizes 256,512 --reps 3]
# Needs Debian's libopenblas0 for the OpenBLAS column. OpenBLAS 0.3.21 does not know Zen 4/5 and
# would pick AVX2 kernels; on AVX-512 machines SkylakeX kernels are forced (opencl-cpu.md).
set -euo pipefail
cd "$(dirname "$0")/.."
if grep -q avx512f /proc/cpuinfo 2>/dev/null; then export OPENBLAS_CORETYPE=SkylakeX; fi
command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] && ! ldconfig -p | grep -q libopenblas.so.0 && \
  { apt-get update -qq; apt-get install -y -qq libopenblas0-pthread; }
day=$(date -u +%Y-%m-%d)
export ILGPUSAE_COMMIT=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo "+changes")
dotnet build perf/IlgpuSae.Bench -c Release -v q -nologo
bench=perf/IlgpuSae.Bench/bin/Release/net10.0/IlgpuSae.Bench.dll
dotnet "$bench" gemm --backend all --out "perf/results/gemm-$day-host.md" "$@"
if [ "$(id -u)" = 0 ] && [ -x .ci/pocl-chroot.sh ]; then
  OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-} bash .ci/pocl-chroot.sh run \
    env OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-}" ILGPUSAE_COMMIT="$ILGPUSAE_COMMIT" \
    ILGPUSAE_BENCH_NOTE="run by perf/run-gemm.sh inside the Debian trixie chroot with PoCL 6 (.ci/pocl-chroot.sh)" dotnet "$bench" gemm --backend opencl --out "perf/results/gemm-$day-pocl.md" "$@"
fi
