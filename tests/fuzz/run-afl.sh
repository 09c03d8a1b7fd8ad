#!/usr/bin/env bash
# Coverage-guided fuzzing of the untrusted readers with AFL++ through SharpFuzz (docs/run-folder.md,
# "Fuzzing"). One afl-fuzz run per target of tests/IlgpuSae.Fuzz, bounded in time:
#
#   tests/fuzz/run-afl.sh [--seconds N] [--timeout MS] [--no-build] [TARGET...]
#
#   --seconds N   fuzz each target for N seconds (default 60)
#   --timeout MS  an input that runs longer than MS milliseconds is a hang (default 3000)
#   --no-build    use the existing Release build of tests/IlgpuSae.Fuzz
#   --report-only inputs AFL finds are listed and kept but do not fail the run (CI: a finding is random, and
#                 must not block an unrelated change; a seed or corpus file that crashes still fails it)
#   TARGET...     targets to fuzz (default: all; `dotnet .../IlgpuSae.Fuzz.dll --list` prints them)
#
# Builds the harness (Release), copies its output to artifacts/fuzz/bin and instruments the copy with
# SharpFuzz (the reader types of IlgpuSae.dll and IlgpuSae.Lm.dll, Microsoft.ML.Tokenizers and Google.Protobuf);
# seeds each target with valid files and the committed bad-input corpus (tests/bad-inputs, made by its
# make.py); runs afl-fuzz. Exits 1, listing the inputs with the exception each one throws, when AFL finds
# a crash (an exception other than the readers' clear errors) or a hang; those inputs are copied to
# tests/bad-inputs/fuzz-found/ (git-ignored) to join the corpus once the reader is fixed.
# Needs afl-fuzz (Debian: apt-get install afl++) and the SharpFuzz.CommandLine tool pinned in
# dotnet-tools.json (dotnet tool restore); it installs nothing itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
seconds=60
timeout_ms=3000
build=1
report_only=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --timeout) timeout_ms=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --report-only) report_only=1; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "run-afl: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

missing=()
command -v afl-fuzz >/dev/null || missing+=("afl-fuzz (Debian package afl++: apt-get install afl++)")
dotnet tool run sharpfuzz >/dev/null 2>&1 \
  || missing+=("the sharpfuzz tool (SharpFuzz.CommandLine, pinned in dotnet-tools.json: dotnet tool restore)")
if [ ${#missing[@]} -gt 0 ]; then
  printf 'run-afl: needs %s\n' "${missing[@]}" >&2
  exit 2
fi

BUILT=tests/IlgpuSae.Fuzz/bin/Release/net10.0
if [ "$build" = 1 ]; then
  dotnet build tests/IlgpuSae.Fuzz -c Release -nologo -v q
fi
HARNESS="$BUILT/IlgpuSae.Fuzz.dll"   # uninstrumented: seeds and replays
[ -f "$HARNESS" ] || { echo "run-afl: $HARNESS is missing; build first (or drop --no-build)" >&2; exit 2; }
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(dotnet "$HARNESS" --list)

OUT=${FUZZ_OUT:-$REPO/artifacts/fuzz}
rm -rf "$OUT"
mkdir -p "$OUT"
cp -r "$BUILT" "$OUT/bin"
# Instrument the readers only: kernels compiled by ILGPU must stay as they are.
dotnet tool run sharpfuzz "$OUT/bin/IlgpuSae.dll" \
  IlgpuSae.IO IlgpuSae.Data IlgpuSae.Sae.SaeFiles IlgpuSae.Sae.SaeConfig IlgpuSae.Training
dotnet tool run sharpfuzz "$OUT/bin/IlgpuSae.Lm.dll" \
  IlgpuSae.Lm.LmConfig IlgpuSae.Lm.LmTokenizer IlgpuSae.Lm.ActivationCacheBuilder
dotnet tool run sharpfuzz "$OUT/bin/Microsoft.ML.Tokenizers.dll"
dotnet tool run sharpfuzz "$OUT/bin/Google.Protobuf.dll"   # parses tokenizer.model

# Scratch files of the targets: in memory where possible, removed at the end.
scratch=$(mktemp -d "$( [ -w /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}")/ilgpusae-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
export TMPDIR=$scratch

export AFL_SKIP_BIN_CHECK=1            # the target is `dotnet`; the instrumentation is in the assemblies
export AFL_MAP_SIZE=65536              # the coverage map SharpFuzz writes
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
export AFL_FORKSRV_INIT_TMOUT=60000    # dotnet start-up on a loaded machine
export AFL_SKIP_CRASHES=1 AFL_IGNORE_SEED_PROBLEMS=1  # the seeds are replayed and judged before afl-fuzz

found=()
failed=0
field() { awk -F' *: *' -v k="$2" '$1==k {print $2}' "$1" 2>/dev/null; }
for t in "${targets[@]}"; do
  dir="$OUT/$t"
  dotnet "$HARNESS" "$t" --seeds "$dir/seeds" "$REPO"
  # A seed that already crashes is a finding without AFL.
  if ! timeout 300 dotnet "$HARNESS" "$t" --replay "$dir"/seeds/* >"$dir/seeds.log" 2>&1; then
    echo "run-afl: $t: a seed crashes:"; grep -A3 ': CRASH' "$dir/seeds.log" || tail -5 "$dir/seeds.log"
    failed=1
  fi
  start=$SECONDS
  if ! afl-fuzz -i "$dir/seeds" -o "$dir/findings" -V "$seconds" -t "$timeout_ms" -m none \
      -- dotnet "$OUT/bin/IlgpuSae.Fuzz.dll" "$t" >"$dir/afl.log" 2>&1; then
    echo "run-afl: $t: afl-fuzz failed; the end of $dir/afl.log:"; tail -25 "$dir/afl.log"
    failed=1
    continue
  fi
  s="$dir/findings/default/fuzzer_stats"
  printf 'run-afl: %-15s %6s s  %8s execs  %7s execs/s  paths %4s (%s new)  map %6s  crashes %s  hangs %s\n' \
    "$t" "$((SECONDS - start))" "$(field "$s" execs_done)" "$(field "$s" execs_per_sec)" \
    "$(field "$s" corpus_count)" "$(field "$s" corpus_found)" "$(field "$s" bitmap_cvg)" \
    "$(field "$s" saved_crashes)" "$(field "$s" saved_hangs)"
  for kind in crashes hangs; do
    for f in "$dir/findings/default/$kind"/id:*; do
      [ -e "$f" ] || continue
      keep="$REPO/tests/bad-inputs/fuzz-found/$t-$kind-$(basename "$f" | tr ':,' '__')"
      mkdir -p "$(dirname "$keep")"
      cp "$f" "$keep"
      found+=("$keep")
      rc=0
      timeout $((timeout_ms / 100 + 10)) dotnet "$HARNESS" "$t" --replay "$keep" >"$dir/replay.log" 2>&1 \
        || rc=$?
      if [ "$rc" = 124 ]; then
        echo "$keep: still running after $((timeout_ms / 100 + 10)) s (a hang)"
      else
        head -12 "$dir/replay.log"
      fi
    done
  done
done

if [ ${#found[@]} -gt 0 ]; then
  echo "run-afl: AFL found ${#found[@]} crashing or hanging input(s):"
  printf '  %s\n' "${found[@]}"
  if [ "$report_only" = 1 ]; then
    echo "run-afl: NEW FINDINGS (reported, not failing: --report-only): fix the reader, then add each input" \
      "to tests/bad-inputs (make.py) with a regression test"
  else
    exit 1
  fi
fi
[ "$failed" = 0 ] || exit 1
echo "run-afl: no crash or hang in ${#targets[@]} target(s), ${seconds} s each"
