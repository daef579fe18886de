#!/usr/bin/env bash
# Dumps the device trees QEMU hands to a kernel, as fixtures for the platform parser tests
# (src/platform): `qemu-system-aarch64 -machine ...,dumpdtb=FILE` writes the DTB it would load and
# exits without running anything. Re-run after a QEMU upgrade and review the diff of the
# `dtc -I dtb -O dts` output before committing.
# Also compiles the hand-written tests/fixtures/platform/*.dts with dtc.
# Usage: qemu/dump-dtbs.sh [output-dir]   (default: tests/fixtures/platform)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
out=${1:-$repo/tests/fixtures/platform}
HV_CACHE=${HV_CACHE:-$HOME/.cache/hv-aarch64}
QEMU=${QEMU:-qemu-system-aarch64}
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

log() { echo "dump-dtbs: $*" >&2; }

# virt NAME GIC CPUS MEM [EXTRA_MACHINE_OPTIONS [QEMU_ARGUMENTS...]]
virt() {
    local name=$1 gic=$2 cpus=$3 mem=$4 extra=${5:-}
    shift 5 2>/dev/null || shift $#
    log "$name.dtb"
    "$QEMU" -machine "virt,virtualization=on,gic-version=$gic$extra,dumpdtb=$tmp/$name.dtb" \
        -cpu cortex-a72 -smp "$cpus" -m "$mem" -nographic "$@" >/dev/null
    # QEMU's virt blob has totalsize 1 MiB, almost all padding; `dtc -O dtb` re-emits the same
    # tree packed. One blob is also kept as dumped, to test the 1 MiB DTB reservation.
    dtc -q -I dtb -O dtb -o "$out/$name.dtb" "$tmp/$name.dtb"
    if [ "$name" = virt-gicv3-4cpu-1g ]; then cp "$tmp/$name.dtb" "$out/$name-unpacked.dtb"; fi
}

virt virt-gicv2-1cpu-512m 2 1 512M
virt virt-gicv2-4cpu-1g 2 4 1G
virt virt-gicv2-4cpu-3g 2 4 3G
virt virt-gicv3-1cpu-512m 3 1 512M
virt virt-gicv3-4cpu-1g 3 4 1G
virt virt-gicv3-4cpu-3g 3 4 3G
virt virt-gicv3-4cpu-1g-secure 3 4 1G ",secure=on"
virt virt-gicv2-4cpu-1g-secure 2 4 1G ",secure=on"

# With a kernel, an initrd and a command line, QEMU adds /chosen bootargs and
# linux,initrd-start/end. The "kernel" only needs to exist; nothing runs.
head -c 65536 /dev/zero >"$tmp/Image"
head -c 1000000 /dev/zero >"$tmp/initrd"
virt virt-gicv3-2cpu-1g-initrd 3 2 1G "" \
    -kernel "$tmp/Image" -initrd "$tmp/initrd" -append "console=ttyAMA0 loglevel=debug"

# Raspberry Pi 4: the upstream DTB from Debian's kernel package, as the firmware would pass it
# before filling in memory, and as QEMU's raspi4b machine passes it (memory added, some nodes
# adjusted by hw/arm/raspi4b.c).
pi_dtb=$HV_CACHE/bcm2711-rpi-4-b.dtb
if [ -f "$pi_dtb" ]; then
    log "bcm2711-rpi-4-b.dtb (upstream)"
    cp "$pi_dtb" "$out/bcm2711-rpi-4-b.dtb"
    log "raspi4b.dtb"
    "$QEMU" -machine "raspi4b,dumpdtb=$out/raspi4b.dtb" -dtb "$pi_dtb" \
        -kernel "$tmp/Image" -append "console=ttyS1,115200 loglevel=info" -nographic >/dev/null
else
    log "missing $pi_dtb (run qemu/guest-material.sh); Raspberry Pi fixtures not refreshed"
fi
# Hand-written DTBs for cases no real machine produces (broken ones among them).
for dts in "$repo"/tests/fixtures/platform/*.dts; do
    name=$(basename "$dts" .dts)
    log "$name.dtb (from $name.dts)"
    dtc -q -I dts -O dtb -o "$out/$name.dtb" "$dts"
done
log "done: $out"
