#!/usr/bin/env bash
# PTX for every kernel, assembled by ptxas (no GPU needed) → perf/results/ptxas-sm80-DATE.md
#   bash perf/run-ptxas.sh [ARCH]      (default sm_80)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
arch=${1:-sm_80}
day=$(date -u +%Y-%m-%d)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
dotnet run --project src/IlgpuSae.Cli -c Release -- kernels --emit ptx --out "$out/ptx"
bash .ci/ptxas-check.sh "$out/ptx" "perf/results/ptxas-${arch/sm_/sm}-$day.md" "$arch"
echo "Wrote perf/results/ptxas-${arch/sm_/sm}-$day.md"
