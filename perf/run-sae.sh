#!/usr/bin/env bash
# Training-step benchmark (tokens/s vs the OpenBLAS roofline) on the host backend and, when possible,
# on PoCL inside the chroot. Results go to perf/results/sae-step-DATE-*.md.
#   bash perf/run-sae.sh [--sizes 256x2048x1024,512x4096x4096] [--steps 3]
set -euo pipefail
cd "$(dirname "$0")/.."
if grep -q avx512f /proc/cpuinfo 2>/dev/null; then export OPENBLAS_CORETYPE=SkylakeX; fi
day=$(date -u +%Y-%m-%d)
export ILGPUSAE_COMMIT=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo "+changes")
dotnet build perf/IlgpuSae.Bench -c Release -v q -nologo
bench=perf/IlgpuSae.Bench/bin/Release/net10.0/IlgpuSae.Bench.dll
dotnet "$bench" sae --backend auto --out "perf/results/sae-step-$day-host.md" "$@"
if [ "$(id -u)" = 0 ] && [ -x .ci/pocl-chroot.sh ]; then
  bash .ci/pocl-chroot.sh run env OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-}" ILGPUSAE_COMMIT="$ILGPUSAE_COMMIT" \
    ILGPUSAE_BENCH_NOTE="run by perf/run-sae.sh inside the Debian trixie chroot with PoCL 6 (.ci/pocl-chroot.sh)" \
    dotnet "$bench" sae --backend opencl --out "perf/results/sae-step-$day-pocl.md" "$@"
fi
