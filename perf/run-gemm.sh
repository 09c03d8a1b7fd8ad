#!/usr/bin/env bash
# GEMM per backend, kernel shape, layout and size vs OpenBLAS, on the host and (root) on PoCL.
#   bash perf/run-gemm.sh [--sizes 256,512 --reps 3]       → perf/results/gemm-DATE-{host,pocl}.md
source "$(dirname "$0")/common.sh"
dotnet "$bench" gemm --backend all --out "perf/results/gemm-$day-host.md" "$@"
in_pocl run-gemm.sh gemm --backend opencl --out "perf/results/gemm-$day-pocl.md" "$@"
