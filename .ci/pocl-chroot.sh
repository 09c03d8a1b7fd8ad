#!/usr/bin/env bash
# Runs a command inside a Debian trixie chroot that has PoCL 6 (OpenCL on the CPU), with the
# repository bind-mounted at the same path, so ILGPU's OpenCL backend runs on a real OpenCL
# runtime. Debian 12's own PoCL 3.1 lacks the generic address space ILGPU needs
# (see README "OpenCL devices"). Needs root (debootstrap, mount, chroot).
#
#   .ci/pocl-chroot.sh setup            build the chroot once (about 1-3 minutes)
#   .ci/pocl-chroot.sh run CMD ARGS...  run CMD in the repository root inside the chroot
#   .ci/pocl-chroot.sh install PKG...   add Debian packages to the chroot (benchmarks: python3-torch)
#   .ci/pocl-chroot.sh unmount          remove every mount below the chroot (after a killed run)
#
# The Debian mirror is read from this machine's own apt configuration; none is written here.
set -euo pipefail
ROOT=${POCL_ROOT:-$HOME/.cache/ilgpusae-trixie}
REPO=$(cd "$(dirname "$0")/.." && pwd)

mirror() {
  local m
  m=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$m" ] || m=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$m" ] || { echo "pocl-chroot: no Debian mirror found in apt configuration" >&2; exit 1; }
  echo "$m"
}

# Packages the tests need inside the chroot: PoCL and OpenBLAS for the kernels, Chromium for the dashboard
# browser tests (ILGPUSAE_EXPECT_BROWSER=1 below makes them fail, not skip, if it is missing), MPICH for the multi-process training tests. Extra ones for benchmarks (python3-torch):
# `.ci/pocl-chroot.sh install PKG...`.
PACKAGES=(pocl-opencl-icd ocl-icd-opencl-dev clinfo libopenblas0-pthread libicu76 chromium mpich libmpich-dev)

missing() {   # prints the packages of "$@" that the chroot does not have
  local p
  for p in "$@"; do
    chroot "$ROOT" dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}

install_packages() {
  local need
  mapfile -t need < <(missing "$@")
  [ ${#need[@]} -eq 0 ] && return 0
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  chroot "$ROOT" apt-get update -qq
  chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${need[@]}" >/dev/null
}

setup() {
  command -v debootstrap >/dev/null || { apt-get update -qq; apt-get install -y -qq debootstrap; }
  if [ ! -x "$ROOT/usr/bin/apt-get" ]; then
    rm -rf "$ROOT.partial"
    debootstrap --variant=minbase trixie "$ROOT.partial" "$(mirror)" >/tmp/ilgpusae-debootstrap.log 2>&1 \
      || { tail -30 /tmp/ilgpusae-debootstrap.log; exit 1; }
    mv "$ROOT.partial" "$ROOT"
  fi
  install_packages "${PACKAGES[@]}"
}

unmount_all() {
  # Everything mounted below the chroot, deepest first (also mounts a killed earlier run left behind).
  local m
  for m in $(awk -v r="$ROOT/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}

mnt() {   # mnt SOURCE TARGET-INSIDE-CHROOT [mount options...]
  mkdir -p "$ROOT$2"
  mount "${@:3}" "$1" "$ROOT$2"
}

run() {
  setup
  # Each run mounts in a mount namespace of its own, so runs from several checkouts (or several at once)
  # never unmount each other's mounts, and everything is unmounted when the run ends, even if it is killed.
  if [ -z "${ILGPUSAE_CHROOT_NS:-}" ] && command -v unshare >/dev/null; then
    ILGPUSAE_CHROOT_NS=1 exec unshare --mount --propagation private bash "$0" run "$@"
  fi
  if [ -z "${ILGPUSAE_CHROOT_NS:-}" ]; then
    unmount_all
    trap unmount_all EXIT
  fi
  mkdir -p "$ROOT/proc"; mount -t proc proc "$ROOT/proc"
  mnt /dev /dev --rbind; mount --make-rslave "$ROOT/dev"
  mnt /sys /sys --rbind; mount --make-rslave "$ROOT/sys"     # PoCL's hwloc needs /sys
  local dotnet_root; dotnet_root=$(dirname "$(readlink -f "$(command -v dotnet)")")
  mnt "$dotnet_root" "$dotnet_root" --bind
  mkdir -p "$HOME/.nuget"; mnt "$HOME/.nuget" "$HOME/.nuget" --bind
  if [ -d /opt/nuget ]; then mnt /opt/nuget /opt/nuget --bind; fi
  mnt "$REPO" "$REPO" --bind
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  # The machine's own CA bundle: where it trusts an extra CA (e.g. for a package mirror), a restore or a
  # download inside the chroot must trust it too.
  local ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
  if [ -f "$ca" ]; then
    mkdir -p "$ROOT/etc/ssl/certs"; touch "$ROOT/etc/ssl/certs/ca-certificates.crt"
    mount --bind -o ro "$ca" "$ROOT/etc/ssl/certs/ca-certificates.crt"
  fi
  chroot "$ROOT" env -i PATH="$dotnet_root:/usr/bin:/bin" HOME="$HOME" CI="${CI:-}" \
      DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_CLI_USE_MSBUILD_SERVER=0 \
      NUGET_CERT_REVOCATION_MODE=offline POCL_MAX_WORK_GROUP_SIZE="${POCL_MAX_WORK_GROUP_SIZE:-256}" \
      ILGPUSAE_BACKEND="${ILGPUSAE_BACKEND:-}" ILGPUSAE_EXPECT_OPENCL=1 ILGPUSAE_EXPECT_BROWSER=1 \
      ILGPUSAE_EXPECT_MPI=1 \
      bash -c 'cd "$0" && "$@"' "$REPO" "$@"
}

case "${1:-}" in
  setup) setup ;;
  install) shift; setup; install_packages "$@" ;;
  unmount) unmount_all ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 setup | install PKG... | run CMD [ARGS...] | unmount" >&2; exit 2 ;;
esac
