# Sourced by perf/run-*.sh: OpenBLAS kernel choice, commit stamp, benchmark build, chroot runner.
# OpenBLAS 0.3.21 does not know Zen 4/5 and would pick AVX2 kernels; on AVX-512 machines SkylakeX
# kernels are forced (see the project's OpenCL/CPU notes).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if grep -q avx512f /proc/cpuinfo 2>/dev/null; then export OPENBLAS_CORETYPE=SkylakeX; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! ldconfig -p | grep -q libopenblas.so.0; then
  apt-get update -qq; apt-get install -y -qq libopenblas0-pthread
fi
day=$(date -u +%Y-%m-%d)
export ILGPUSAE_COMMIT=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo "+changes")
dotnet build perf/IlgpuSae.Bench -c Release -v q -nologo
bench=perf/IlgpuSae.Bench/bin/Release/net10.0/IlgpuSae.Bench.dll

# in_pocl SCRIPT-NAME ARGS...: run the benchmark inside the PoCL 6 chroot when this machine allows it.
in_pocl() {
  local script=$1; shift
  if [ "$(id -u)" = 0 ] && [ -x .ci/pocl-chroot.sh ]; then
    bash .ci/pocl-chroot.sh run env OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-}" ILGPUSAE_COMMIT="$ILGPUSAE_COMMIT" \
      ILGPUSAE_BENCH_NOTE="run by perf/$script inside the Debian trixie chroot with PoCL 6 (.ci/pocl-chroot.sh)" \
      dotnet "$bench" "$@"
  fi
}
