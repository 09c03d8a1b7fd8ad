#!/usr/bin/env bash
# The first run on an NVIDIA GPU, in one script that a lent machine runs in about 8 minutes:
#   1 devices          the CUDA device is seen (devices --backend cuda: exit 2 when it is not)
#   2 selfcheck        every kernel, both shapes, against its double-precision reference on CUDA
#   3 tests            the test suite filtered to the CUDA theories (ILGPUSAE_EXPECT_CUDA=1: a missing
#                      CUDA device fails them instead of skipping)
#   4 gemm             ILGPU's GEMM (CPU- and GPU-shaped, TF32 tensor cores) checked against a reference,
#                      then timed next to cuBLAS (ILGPU.Algorithms' wrapper) or, without libcublas, the FP32
#                      roofline from the device's specifications
#   5 sae-steps        training steps dense and sparse at the three shapes (standard, gated, TopK)
#   6 lm               the language-model forward (activations) on the bundled model and a GPT-2-small shape
# Each step's output goes to a log; a summary table goes to perf/results/gpu-DATE-cuda.md and the
# benchmarks to perf/results/{gemm,sae-step,lm}-DATE-cuda.md. Any disagreement with a reference, or any
# failed step, makes the script exit 1 (it goes on with the other steps first, so one run shows all).
#
#   bash perf/run-gpu.sh                run it (needs an NVIDIA driver and the .NET 10 SDK, or, without the SDK,
#                                       artifacts/gpu-bundle.tar.xz from perf/gpu-bundle.sh: then the test-suite
#                                       step is skipped)
#   bash perf/run-gpu.sh --dry-run      print the plan; on a machine without an NVIDIA GPU, every step is
#                                       reported as skipped and the script exits 0
#   bash perf/run-gpu.sh --summarize DIR   only rebuild the summary from the logs in DIR (for tests)
set -uo pipefail
cd "$(dirname "$0")/.."
day=$(date -u +%Y-%m-%d)
results=${ILGPUSAE_RESULTS:-perf/results}
steps=(devices selfcheck tests gemm sae-steps lm)
limits=(60 120 180 90 120 60)   # seconds per step; the sum (10.5 min) bounds the worst case

# summarize DIR OUT: one row per step from DIR/NAME.rc (exit code) and DIR/NAME.log; returns 1 if any step
# failed. A step with no .rc file did not run (skipped).
summarize() {
  local dir=$1 out=$2 failed=0 name rc status detail
  {
    echo "# First GPU run (perf/run-gpu.sh), $day"
    echo
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- device: $(grep -m1 -o "cuda:[0-9][^|]*" "$dir/devices.log" 2>/dev/null | sed 's/ *$//' || true)"
    echo "- logs: $dir"
    echo
    echo "| step | status | seconds | detail |"
    echo "|---|---|---:|---|"
    for name in "${steps[@]}"; do
      if [ ! -f "$dir/$name.rc" ]; then
        echo "| $name | skipped | | $(cat "$dir/$name.skip" 2>/dev/null || echo "not run") |"
        continue
      fi
      rc=$(cat "$dir/$name.rc")
      detail=$(step_detail "$name" "$dir/$name.log")
      if [ "$rc" = 0 ]; then status=passed; else status="**FAILED (exit $rc)**"; failed=1; fi
      echo "| $name | $status | $(cat "$dir/$name.seconds" 2>/dev/null) | $detail |"
    done
  } >"$out"
  cat "$out"
  return $failed
}

# The figure that matters in each step's log.
step_detail() {
  local name=$1 log=$2
  case $name in
    devices) grep -c "cuda:" "$log" | sed 's/$/ CUDA device line(s)/' ;;
    selfcheck)
      if grep -q "All kernels match their references" "$log"; then
        echo "all kernels match their references ($(grep -c '^Self-check on' "$log") kernel shapes)"
      else
        grep -m1 -E "check\(s\) failed" "$log" || echo "no verdict in the log"
        grep -m3 "^FAIL" "$log" | sed 's/|/\\|/g' | tr '\n' ' '
      fi ;;
    tests) grep -m1 -E "(Passed|Failed)! +- Failed:" "$log" | sed -E 's/.*(Failed: *[0-9]+, Passed: *[0-9]+, Skipped: *[0-9]+).*/\1/' | tr -s ' ' ;;
    gemm)
      local bad; bad=$(grep -c "MISMATCH" "$log")
      echo "$(grep -c '^| cuda |' "$log") rows, $bad mismatch(es)$(grep -m1 -o 'FP32 roofline[^|]*' "$log" | sed 's/^/; /')" ;;
    sae-steps) echo "$(grep -c '^| ' "$log") step rows" ;;
    lm) grep -m1 -E "tokens/s" "$log" || echo "no tokens/s line" ;;
  esac
}

has_gpu() {
  { command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q GPU; } \
    || ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'
}

if [ "${1:-}" = --summarize ]; then
  summarize "$2" "${3:-$2/summary.md}"
  exit $?
fi

dry=0
[ "${1:-}" = --dry-run ] && dry=1
logs=${ILGPUSAE_GPU_LOGS:-artifacts/gpu-$day}
mkdir -p "$logs" "$results"
rm -f "$logs"/*.rc "$logs"/*.skip "$logs"/*.seconds

# Without a .NET SDK (the GPU machines lent here have none), the runtime and the builds come from the bundle
# that perf/gpu-bundle.sh packs on a machine with the SDK; the test-suite step needs the SDK and is skipped.
bundle=artifacts/gpu-bundle.tar.xz
unpacked=${TMPDIR:-/tmp}/ilgpusae-gpu-bundle
if command -v dotnet >/dev/null; then
  mode=sdk
  cli=(dotnet src/IlgpuSae.Cli/bin/Release/net10.0/ilgpu-sae.dll)
  bench=(dotnet perf/IlgpuSae.Bench/bin/Release/net10.0/IlgpuSae.Bench.dll)
else
  mode=bundle
  cli=("$unpacked/gpu-bundle/dotnet/dotnet" "$unpacked/gpu-bundle/cli/ilgpu-sae.dll")
  bench=("$unpacked/gpu-bundle/dotnet/dotnet" "$unpacked/gpu-bundle/bench/IlgpuSae.Bench.dll")
fi
commands=(
  "${cli[*]} devices --backend cuda"
  "${cli[*]} selfcheck --backend cuda --variant all"
  "env ILGPUSAE_EXPECT_CUDA=1 dotnet test tests/IlgpuSae.Tests -c Release --no-build --filter DisplayName~cuda/"
  "${bench[*]} gemm --backend cuda --variants cpu,gpu,tf32 --sizes 1024,2048,4096x16384x768,16384x768x4096 --out $results/gemm-$day-cuda.md"
  "${bench[*]} sae --backend cuda --sizes 256x2048x1024,512x4096x4096,768x16384x4096 --arch standard,gated,topk --active 0.01,0.02 --steps 5 --out $results/sae-step-$day-cuda.md"
  "${bench[*]} lm --backend cuda --out $results/lm-$day-cuda.md"
)

gpu=1
has_gpu || gpu=0
if [ $dry = 1 ] || [ $gpu = 0 ]; then
  [ $gpu = 0 ] && echo "run-gpu: no NVIDIA GPU here (no nvidia-smi GPU, no libcuda.so.1): every step is skipped"
  for i in "${!steps[@]}"; do
    echo "  ${steps[i]} (≤ ${limits[i]} s): ${commands[i]}"
    echo "${limits[i]} s limit; no NVIDIA GPU on this machine" >"$logs/${steps[i]}.skip"
  done
  summarize "$logs" "$logs/summary.md" >/dev/null
  echo "run-gpu: dry run, nothing measured; plan and summary in $logs"
  exit 0
fi

if [ $mode = sdk ]; then
  echo "== build"
  dotnet build IlgpuSae.sln -c Release -nologo -v q || exit 1
  dotnet build perf/IlgpuSae.Bench -c Release -nologo -v q || exit 1
else
  [ -f "$bundle" ] || {
    echo "run-gpu: no dotnet on PATH and no $bundle: install the .NET 10 SDK, or run bash perf/gpu-bundle.sh" \
      "on a machine that has it and carry the bundle here" >&2
    exit 1
  }
  echo "== no .NET SDK here: unpacking $bundle"
  rm -rf "$unpacked"; mkdir -p "$unpacked"
  tar -C "$unpacked" -xJf "$bundle" || exit 1
  built=$(cat "$unpacked/gpu-bundle/commit")
  if [ "$built" != "$(git rev-parse HEAD 2>/dev/null)" ]; then
    echo "run-gpu: the bundle was built from $built, not from this checkout's HEAD" >&2
    exit 1
  fi
fi
for i in "${!steps[@]}"; do
  name=${steps[i]}
  if [ $mode = bundle ] && [ "$name" = tests ]; then
    echo "== $name: skipped (dotnet test needs the .NET SDK; selfcheck covered every kernel on CUDA)"
    echo "needs the .NET SDK, which this machine lacks (bundle mode)" >"$logs/$name.skip"
    continue
  fi
  echo "== $name: ${commands[i]}"
  start=$(date +%s)
  timeout "${limits[i]}" bash -c "${commands[i]}" >"$logs/$name.log" 2>&1
  echo $? >"$logs/$name.rc"
  echo $(($(date +%s) - start)) >"$logs/$name.seconds"
  tail -3 "$logs/$name.log"
done
summarize "$logs" "$results/gpu-$day-cuda.md"
status=$?
[ $status = 0 ] && echo "run-gpu: every step passed" || echo "run-gpu: FAILED, see the summary above and $logs" >&2
exit $status
