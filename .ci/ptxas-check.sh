#!/usr/bin/env bash
# Assembles every PTX file in a folder with NVIDIA's ptxas (no GPU needed) and writes a per-kernel
# report of registers, spills, stack and shared memory. Fails on any ptxas error or register spill.
#
#   .ci/ptxas-check.sh PTX_DIR REPORT.md [ARCH]      (ARCH defaults to sm_80)
#
# ptxas comes from Debian non-free's nvidia-cuda-toolkit .deb, downloaded and unpacked into a scratch
# folder ($PTXAS_HOME, default ~/.cache/ilgpusae-ptxas); nothing is installed system-wide. The mirror
# is read from this machine's own apt configuration.
set -euo pipefail
PTX_DIR=${1:?usage: ptxas-check.sh PTX_DIR REPORT.md [ARCH]}
REPORT=${2:?usage: ptxas-check.sh PTX_DIR REPORT.md [ARCH]}
ARCH=${3:-sm_80}
HOME_DIR=${PTXAS_HOME:-$HOME/.cache/ilgpusae-ptxas}
PTXAS=$HOME_DIR/x/usr/bin/ptxas

if [ ! -x "$PTXAS" ]; then
  mkdir -p "$HOME_DIR/sources.d" "$HOME_DIR/lists/partial" "$HOME_DIR/deb"
  MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$MIRROR" ] || MIRROR=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list)
  . /etc/os-release
  cat > "$HOME_DIR/sources.d/nonfree.sources" <<SRC
Types: deb
URIs: $MIRROR
Suites: $VERSION_CODENAME
Components: non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  APT_OPTS=(-o "Dir::Etc::sourcelist=/dev/null" -o "Dir::Etc::sourceparts=$HOME_DIR/sources.d"
            -o "Dir::State::Lists=$HOME_DIR/lists" -o "Dir::Cache=$HOME_DIR/cache" -o "APT::Get::List-Cleanup=0")
  mkdir -p "$HOME_DIR/cache/archives/partial"
  apt-get -qq "${APT_OPTS[@]}" update
  (cd "$HOME_DIR/deb" && apt-get -qq "${APT_OPTS[@]}" download nvidia-cuda-toolkit)
  dpkg-deb -x "$HOME_DIR"/deb/nvidia-cuda-toolkit_*.deb "$HOME_DIR/x"
fi
"$PTXAS" --version | tail -1

shopt -s nullglob
files=("$PTX_DIR"/*.ptx)
[ ${#files[@]} -gt 0 ] || { echo "ptxas-check: no .ptx files in $PTX_DIR" >&2; exit 1; }

tmp=$(mktemp)
failures=0; spills=0
{
  echo "# ptxas report"
  echo
  echo "$("$PTXAS" --version | tail -1); target $ARCH; $(date -u +%Y-%m-%dT%H:%MZ); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo
  echo "| kernel | registers | spill stores (B) | spill loads (B) | stack (B) | shared (B) | result |"
  echo "|---|---:|---:|---:|---:|---:|---|"
} > "$tmp"
for f in "${files[@]}"; do
  name=$(basename "$f" .ptx)
  if out=$("$PTXAS" -arch="$ARCH" -v "$f" -o /dev/null 2>&1); then
    # largest number in front of (or after) a pattern; 0 when ptxas did not print it
    num() { { grep -oE "$1" <<<"$out" || true; } | { grep -oE '[0-9]+' || true; } | sort -n | tail -1; }
    regs=$(num 'Used [0-9]+ registers'); smem=$(num '[0-9]+ bytes smem'); stack=$(num '[0-9]+ bytes stack frame')
    sst=$(num '[0-9]+ bytes spill stores'); sld=$(num '[0-9]+ bytes spill loads')
    result=ok
    if [ "${sst:-0}" -gt 0 ] || [ "${sld:-0}" -gt 0 ]; then result=SPILLS; spills=$((spills+1)); fi
    echo "| $name | ${regs:-0} | ${sst:-0} | ${sld:-0} | ${stack:-0} | ${smem:-0} | $result |" >> "$tmp"
  else
    failures=$((failures+1))
    echo "| $name | - | - | - | - | - | **ptxas error** |" >> "$tmp"
    echo "ptxas failed on $f:" >&2; echo "$out" >&2
  fi
done
echo >> "$tmp"
echo "${#files[@]} kernels assembled, $failures failed, $spills with register spills." >> "$tmp"
mkdir -p "$(dirname "$REPORT")"; mv "$tmp" "$REPORT"
tail -1 "$REPORT"
[ "$failures" -eq 0 ] && [ "$spills" -eq 0 ]
