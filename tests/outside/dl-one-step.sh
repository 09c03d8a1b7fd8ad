#!/usr/bin/env bash
# Runs the outside check of `train --mode dictionary-learning` against dictionary_learning's own trainers:
#
#   tests/outside/dl-one-step.sh DL_CHECKOUT WORK_DIR [CASE...]
#
# DL_CHECKOUT is a saprmarks/dictionary_learning checkout (the user's; nothing of it is in this repository),
# WORK_DIR a scratch folder, CASE names of tests/outside/cases/*.json (default: all). $PYTHON runs Python
# with torch, numpy and einops (default python3; e.g. PYTHON="bash .ci/pocl-chroot.sh run python3" with
# DL_CHECKOUT and WORK_DIR inside the repository). $ILGPU_SAE is the built CLI (default the Release build).
# Prints, per case and parameter, max |a − r|/(1e-6 + |r|), max|a − r|/max|r| and ‖a − r‖/‖r‖.
set -euo pipefail
cd "$(dirname "$0")/../.."
dl=$1 work=$2
shift 2
PYTHON=${PYTHON:-python3}
CLI=${ILGPU_SAE:-src/IlgpuSae.Cli/bin/Release/net10.0/ilgpu-sae}
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=($(ls tests/outside/cases | sed 's/\.json$//'))
tool=tests/outside/dl_one_step.py
for name in "${cases[@]}"; do
  dir=$work/$name
  mkdir -p "$dir"
  cp tests/outside/cases/$name.json "$dir/case.json"
  get() { sed -n "s/.*\"$1\": *\([^,}]*\).*/\1/p" "$dir/case.json" | tr -d '"'; }
  $PYTHON $tool gen "$dir/case.json"
  $PYTHON $tool dl "$dir/case.json" --dl "$dl"
  arch=$(get arch) steps=$(get steps) batch=$(get batch)
  args=(--backend cpu train --arch "$arch" --mode dictionary-learning --init "$dir/init" --acts "$dir/x.npy"
    --tokens $((steps * batch)) --batch-size "$batch" --lr "$(get lr)" --lr-warmup "$(get lr_warmup)"
    --seed "$(get seed)" --log-every 1 --out "$dir/ours")
  for key in k dead_window threshold_start bandwidth target_l0; do
    value=$(get $key)
    [ -z "$value" ] || args+=(--${key//_/-} "$value")
  done
  [ "$arch" != jumprelu ] || args+=(--l1-warmup "$(get l0_warmup)")
  rm -rf "$dir/ours"
  "$CLI" "${args[@]}" > "$dir/ours.log" 2>&1 || { tail -3 "$dir/ours.log"; exit 1; }
  out=$dir/ours
  [ ! -d "$out/training_form" ] || out=$out/training_form
  echo "== $name"
  $PYTHON $tool cmp "$dir/case.json" "$out"
done
