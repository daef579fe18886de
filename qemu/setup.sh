#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 (or Ubuntu) machine: QEMU >= 9 (bookworm-backports on
# Debian 12), host tools, the Rust target (through rust-toolchain.toml), and the guest material
# (a Debian arm64 kernel and busybox-static) cached outside the repo in $HV_CACHE.
# Usage: qemu/setup.sh [--no-guest]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
HV_CACHE=${HV_CACHE:-$HOME/.cache/hv-aarch64}
mkdir -p "$HV_CACHE"
want_guest=1
[ "${1:-}" = "--no-guest" ] && want_guest=0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

log() { echo "setup: $*" >&2; }

qemu_ok() {
    command -v qemu-system-aarch64 >/dev/null 2>&1 || return 1
    local v
    v=$(qemu-system-aarch64 --version | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -1)
    [ -n "$v" ] && [ "$v" -ge 9 ]
}

apt_updated=0
apt_update() {
    if [ $apt_updated -eq 0 ]; then
        $SUDO apt-get update -qq
        apt_updated=1
    fi
}

. "$here/apt-sources.sh"

# QEMU >= 9 on Debian 12 comes from bookworm-backports, whose source line is derived from the
# machine's own Debian source (qemu/apt-sources.sh: apt_setup_backports says how).
. /etc/os-release 2>/dev/null || true
if [ "${ID:-}" = debian ] && [ "${VERSION_CODENAME:-}" = bookworm ]; then
    if apt_setup_backports bookworm; then
        apt_updated=0
    fi
fi
if [ "$(dpkg --print-architecture 2>/dev/null)" != arm64 ] &&
    ! dpkg --print-foreign-architectures 2>/dev/null | grep -qx arm64; then
    log "adding dpkg architecture arm64"
    $SUDO dpkg --add-architecture arm64
    apt_updated=0
fi

if ! qemu_ok; then
    apt_update
    log "installing QEMU"
    if [ "${VERSION_CODENAME:-}" = bookworm ]; then
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports \
            qemu-system-arm >/dev/null
    else
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-arm >/dev/null
    fi
fi
qemu_ok || { log "QEMU >= 9 is needed and could not be installed"; exit 1; }

need=()
for t in cpio:cpio mcopy:mtools mkfs.vfat:dosfstools dtc:device-tree-compiler \
    gdb-multiarch:gdb-multiarch sfdisk:fdisk gzip:gzip mkfs.ext4:e2fsprogs; do
    PATH=$PATH:/usr/sbin:/sbin command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    apt_update
    log "installing ${need[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The toolchain, targets and components named in rust-toolchain.toml. rustup installs a missing
# toolchain with them, but does not add components to a toolchain that is already there, so
# ask for each explicitly (quick when present).
(
    cd "$repo"
    rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install
    rustup target add aarch64-unknown-none-softfloat aarch64-unknown-none >/dev/null 2>&1 ||
        rustup target add aarch64-unknown-none-softfloat aarch64-unknown-none
    rustup component add rustfmt clippy llvm-tools >/dev/null 2>&1 ||
        rustup component add rustfmt clippy llvm-tools
)

if [ $want_guest -eq 1 ]; then
    "$here/guest-material.sh"
fi
log "ok"
