#!/usr/bin/env bash
# Builds the guest initramfs: busybox-static plus an /init that prints lines test scripts can
# rely on, then powers off (kernel command line has guest.test=1) or starts a shell on the
# console.
#
# Usage: qemu/build-guest-initramfs.sh OUT
#
# busybox comes from $HV_CACHE/busybox (qemu/guest-material.sh fetches it; run here if missing).
# The result is a gzip-compressed newc cpio, cached in $HV_CACHE/initramfs/ by the content of
# busybox and of /init, and copied to OUT. Console lines /init prints, in this order:
#   GUEST: userland reached
#   GUEST: nproc=<online CPUs>
#   GUEST: memtotal_kb=<MemTotal from /proc/meminfo>
#   GUEST: checksum=<sha256 of `seq 1 1000000`>   (expected: see GUEST_CHECKSUM below)
#   GUEST: powering off                            (guest.test=1), then poweroff -f
#   GUEST: shell                                   (otherwise), then a shell on the console
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
HV_CACHE=${HV_CACHE:-$HOME/.cache/hv-aarch64}
log() { echo "build-guest-initramfs: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ $# -eq 1 ] || die "usage: $0 OUT"
out=$1

# The sha256 of the 6888896 bytes `seq 1 1000000` writes; the guest recomputes it in RAM.
GUEST_CHECKSUM=90433fcbd9e16297e6a7c1dacb1056394743194776e52f78ebf0a44b80b6b14f

busybox=$HV_CACHE/busybox
if [ ! -f "$busybox" ]; then
    log "no $busybox: running qemu/guest-material.sh"
    "$here/guest-material.sh"
fi
[ -f "$busybox" ] || die "$busybox is missing"
for tool in cpio gzip sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done

# /init. Only busybox exists until --install has made the applet links.
read -r -d '' init_script <<'EOF' || true
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mdev -s
echo "GUEST: userland reached"
n=$(nproc 2>/dev/null || grep -c '^processor' /proc/cpuinfo)
echo "GUEST: nproc=$n"
echo "GUEST: memtotal_kb=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)"
# A few MiB generated in RAM (the root is a tmpfs), then hashed.
seq 1 1000000 > /tmp/data
sum=$(sha256sum /tmp/data)
rm -f /tmp/data
echo "GUEST: checksum=${sum%% *}"
case " $(cat /proc/cmdline) " in
*" guest.test=1 "*)
    echo "GUEST: powering off"
    poweroff -f
    ;;
esac
echo "GUEST: shell"
while true; do
    setsid cttyhack sh
done
EOF

key=$( { sha256sum <"$busybox"; printf '%s' "$init_script" | sha256sum; } | sha256sum | cut -c1-16)
cached=$HV_CACHE/initramfs/initramfs-$key.cpio.gz
if [ ! -f "$cached" ]; then
    mkdir -p "$HV_CACHE/initramfs"
    stage=$(mktemp -d)
    trap 'rm -rf "$stage"' EXIT
    mkdir -p "$stage"/{bin,dev,proc,sys,tmp,root}
    cp "$busybox" "$stage/bin/busybox"
    chmod 755 "$stage/bin/busybox"
    printf '%s\n' "$init_script" >"$stage/init"
    chmod 755 "$stage/init"
    # The kernel's built-in initramfs already has /dev/console; add it too where we can.
    mknod -m 600 "$stage/dev/console" c 5 1 2>/dev/null || true
    find "$stage" -exec touch -h -d @0 {} +
    (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort |
        cpio --quiet -o -H newc --reproducible --owner=0:0) | gzip -9 -n >"$cached.tmp"
    mv "$cached.tmp" "$cached"
    log "built $cached"
fi
mkdir -p "$(dirname "$out")"
cp "$cached" "$out.tmp"
mv "$out.tmp" "$out"
log "ok: $out (expected GUEST: checksum=$GUEST_CHECKSUM)"
