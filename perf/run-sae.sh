#!/usr/bin/env bash
# Training steps (dense vs sparse) vs the OpenBLAS roofline, on the host and (root) on PoCL.
#   bash perf/run-sae.sh [--sizes 256x2048x1024,512x4096x4096] [--steps 3] [--active 0.02]
#   → perf/results/sae-step-DATE-{host,pocl}.md
source "$(dirname "$0")/common.sh"
dotnet "$bench" sae --backend auto --out "perf/results/sae-step-$day-host.md" "$@"
in_pocl run-sae.sh sae --backend opencl --out "perf/results/sae-step-$day-pocl.md" "$@"
