#!/usr/bin/env bash
# ILGPU vs PyTorch in the same run, inside the PoCL 6 chroot (Debian trixie's python3-torch, installed on
# first use), on the same cores:
#  - SAE training steps: the same shapes, data, initial tensors and recipe; the losses of the first two
#    steps checked to agree; with the OpenBLAS roofline → perf/results/vs-torch-DATE-pocl.md (+ .json)
#  - the language-model forward (`activations`' work per batch) on the bundled model and a GPT-2-small
#    shape; the activations checked to agree → perf/results/lm-vs-torch-DATE-pocl.md (+ .json)
#   bash perf/run-vs-torch.sh [--only sae|lm] [--sizes 512x4096x4096,768x16384x4096]
#                             [--arch standard,gated,topk] [--active 0.02] [--k 32] [--steps 3]
# Either half exits non-zero when the two implementations disagree (then they would not do the same work).
source "$(dirname "$0")/common.sh"
[ "$(id -u)" = 0 ] || { echo "run-vs-torch.sh: needs root for the PoCL chroot (.ci/pocl-chroot.sh)" >&2; exit 1; }
only=
if [ "${1:-}" = --only ]; then only=$2; shift 2; fi
bash .ci/pocl-chroot.sh install python3-torch python3-numpy
cases=artifacts/vs-torch-cases   # inside the repository: the chroot sees it at the same path
rm -rf "$cases"; mkdir -p "$cases/sae" "$cases/lm"
steps=3
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do [ "${args[i]}" = --steps ] && steps=${args[i + 1]}; done
note="run by perf/run-vs-torch.sh inside the Debian trixie chroot with PoCL 6 (.ci/pocl-chroot.sh)"
chroot_run() {
  bash .ci/pocl-chroot.sh run env OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-}" ILGPUSAE_COMMIT="$ILGPUSAE_COMMIT" \
    ILGPUSAE_BENCH_NOTE="$note" "$@"
}
if [ "$only" != lm ]; then
  chroot_run dotnet "$bench" torch-case --backend opencl --out "$cases/sae" "$@"
  chroot_run python3 perf/torch/sae_step.py "$cases/sae" --threads "$(nproc)" --steps "$steps" \
    --command "bash perf/run-vs-torch.sh $*" --out "perf/results/vs-torch-$day-pocl.md"
fi
if [ "$only" != sae ]; then
  chroot_run dotnet "$bench" lm --backend opencl --cases "$cases/lm"
  chroot_run python3 perf/torch/lm_forward.py "$cases/lm" --threads "$(nproc)" \
    --command "bash perf/run-vs-torch.sh --only lm" --out "perf/results/lm-vs-torch-$day-pocl.md"
fi
