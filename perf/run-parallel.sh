#!/usr/bin/env bash
# train --parallel on this machine: per-step time split into compute and communication (collectives,
# host staging included) for 1 and 2 ranks, both modes, on the CPU accelerator (the default) or PoCL.
#   bash perf/run-parallel.sh [--sizes 512x4096x4096,768x16384x4096] [--steps 2] [--arch standard]
#                             [--backend cpu|opencl] [--commit HASH]
#   → perf/results/parallel-DATE-BACKEND.md
# Sizes are d × M × B. Each run synthesises B × (steps + 1) rows of width d, then trains steps + 1 steps
# (the first, which JIT-compiles and allocates, is not counted). Needs MPICH's mpiexec (mpich libmpich-dev).
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=512x4096x4096,768x16384x4096; steps=2; arch=standard; backend=cpu
while [ $# -gt 0 ]; do
  case $1 in
    --sizes) sizes=$2; shift 2 ;; --steps) steps=$2; shift 2 ;; --arch) arch=$2; shift 2 ;;
    --backend) backend=$2; shift 2 ;; --commit) commit=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
mpiexec=$(command -v mpiexec.mpich || command -v mpiexec.hydra || command -v mpiexec)
day=$(date -u +%Y-%m-%d)
# --commit: where git is not at hand (inside the PoCL chroot: pass the host's `git rev-parse --short HEAD`)
commit=${commit:-$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo "+changes")}
dotnet build src/IlgpuSae.Cli -c Release -v q -nologo >/dev/null
cli=src/IlgpuSae.Cli/bin/Release/net10.0/ilgpu-sae.dll
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
out=perf/results/parallel-$day-$backend.md
device=$(dotnet "$cli" devices 2>/dev/null | grep -m1 " $backend:" \
  | awk -F'│' '{ for (i = 3; i <= 5; i++) gsub(/^ +| +$/, "", $i); print $3 ", " $4 ", " $5 }' || echo "$backend")
{
  echo "# train --parallel: compute vs communication per step, $(date -u '+%Y-%m-%d %H:%M') UTC"
  echo
  echo "- command: \`bash perf/run-parallel.sh --sizes $sizes --steps $steps --arch $arch --backend $backend\`"
  echo "- commit: $commit; MPICH $("$mpiexec" --version | awk '/Version:/ {print $2; exit}') (hydra), MPI.NET 1.4.0"
  echo "- device: $device, every rank on it; machine: $(nproc) cores, load average at the start"
  echo "  $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 minutes; above the core count, other jobs shared the cores"
  echo "  and the times are upper bounds); two ranks share the same cores, so the 2-rank compute is not halved"
  echo "- step: forward + backward + Adam of one batch after a first, unmeasured step; median over $steps steps"
  echo "  of rank 0; communication = time inside collectives (device↔host staging, waiting for the other"
  echo "  rank and the transfer itself); compute = the rest; MB = payload rank 0 sent and received"
  echo
  echo "| arch | d | M | B | ranks | mode | ms/step | compute ms | communication ms | MB/step |"
  echo "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"
} > "$out.tmp"
for size in ${sizes//,/ }; do
  IFS=x read -r d m b <<<"$size"
  rows=$((b * (steps + 1)))
  dotnet "$cli" synth --rows "$rows" --d "$d" --features 64 --l0 4 --out "$work/acts-$d.npy" >/dev/null
  for ranks in 1 2; do
    for mode in data features; do
      rm -rf "$work/run"
      line=$("$mpiexec" -n "$ranks" dotnet "$cli" --backend "$backend" train --arch "$arch" \
        --acts "$work/acts-$d.npy" --d-sae "$m" --batch-size "$b" --tokens "$rows" --lr-warmup 1 \
        --log-every 1000 --parallel "$mode" --out "$work/run" 2>/dev/null | grep '^Parallel ')
      echo "$line" >&2
      # "Parallel MODE on N ranks (…): median step S s, of which C s in collectives; X MB moved per step."
      read -r s c mb < <(sed -E 's/.*median step ([0-9.]+) s, of which ([0-9.]+) s.*; ([0-9.]+) MB.*/\1 \2 \3/' <<<"$line")
      awk -v a="$arch" -v d="$d" -v m="$m" -v b="$b" -v n="$ranks" -v mode="$mode" -v s="$s" -v c="$c" -v mb="$mb" \
        'BEGIN { printf "| %s | %d | %d | %d | %d | %s | %.1f | %.1f | %.1f | %.1f |\n", a, d, m, b, n, mode, 1000*s, 1000*(s-c), 1000*c, mb }' >> "$out.tmp"
    done
  done
done
mv "$out.tmp" "$out"
echo "wrote $out"
