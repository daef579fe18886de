#!/usr/bin/env bash
# Builds an ext4 disk image from a folder, without root (mkfs.ext4 -d), for a VM's [[disks]].
#
# Usage: qemu/mkdisk.sh [--size SIZE] [--busybox] [--label LABEL] SRC OUT
#
#   SRC           the folder whose contents become the file system's root ("" or - : empty)
#   OUT           the image to write, e.g. VMDIR/rootfs.ext4 (then name it in VMDIR/vm.toml:
#                 [[disks]] file = "rootfs.ext4"; qemu/mkramdisk.sh carries it)
#   --size SIZE   image size, e.g. 64M (default: the contents plus 16 MiB, rounded up to 1 MiB)
#   --busybox     also put busybox-static ($HV_CACHE/busybox) in /bin with a link per applet,
#                 and the folders /dev /proc /sys /tmp /sbin /etc /root: with an executable
#                 /sbin/init from SRC (a shell script, `#!/bin/sh`), the image is a root file
#                 system the guest initramfs boots with `root=/dev/vda rw` (docs/virtio.md)
#   --label LABEL the file system label
#
# The image is reproducible for the same inputs except for the UUID and time stamps mkfs.ext4
# writes. Files keep their owners (root in the guest only if you ran this as root).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
HV_CACHE=${HV_CACHE:-$HOME/.cache/hv-aarch64}
PATH=$PATH:/usr/sbin:/sbin
log() { echo "mkdisk: $*" >&2; }
die() { log "error: $*"; exit 1; }

size= busybox=0 label=
while [ $# -gt 0 ]; do
    case $1 in
    --size) [ $# -ge 2 ] || die "--size needs a value"; size=$2; shift 2 ;;
    --busybox) busybox=1; shift ;;
    --label) [ $# -ge 2 ] || die "--label needs a value"; label=$2; shift 2 ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    --) shift; break ;;
    -?*) die "unknown option $1" ;;
    *) break ;;
    esac
done
[ $# -eq 2 ] || die "usage: $0 [--size SIZE] [--busybox] [--label LABEL] SRC OUT"
src=$1 out=$2
command -v mkfs.ext4 >/dev/null || die "mkfs.ext4 is not installed (e2fsprogs; qemu/setup.sh)"
case $src in "" | -) src= ;; *) [ -d "$src" ] || die "$src is not a folder" ;; esac

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root
mkdir -p "$root"
[ -z "$src" ] || cp -a "$src/." "$root/"
if [ $busybox -eq 1 ]; then
    bb=$HV_CACHE/busybox
    [ -f "$bb" ] || "$here/guest-material.sh"
    [ -f "$bb" ] || die "$bb is missing"
    mkdir -p "$root"/{bin,dev,proc,sys,tmp,sbin,etc,root}
    cp "$bb" "$root/bin/busybox"
    chmod 755 "$root/bin/busybox"
    # The applet names: busybox keeps them as one sorted NUL-separated table starting "[", "[[".
    tr '\0' '\n' <"$bb" | awk '
        done { next }
        on && $0 == "" { done = 1; next }
        on { print }
        !on && $0 == "[[" && prev == "[" { on = 1; print prev; print }
        { prev = $0 }' >"$stage/applets"
    [ "$(wc -l <"$stage/applets")" -ge 50 ] || die "cannot read the applet list of $bb"
    while IFS= read -r a; do
        case $a in busybox | */* | "") continue ;; esac
        [ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"
    done <"$stage/applets"
fi

if [ -z "$size" ]; then
    kib=$(du -sk "$root" | cut -f1)
    size=$(( (kib / 1024 + 17) ))M
fi
mkdir -p "$(dirname "$out")"
rm -f "$out.tmp"
: >"$out.tmp"
mkfs.ext4 -q -F ${label:+-L "$label"} -d "$root" "$out.tmp" "$size" ||
    die "mkfs.ext4 failed (is $size enough for $(du -sh "$root" | cut -f1) of files?)"
mv "$out.tmp" "$out"
log "ok: $out ($(du -h --apparent-size "$out" | cut -f1), ext4${label:+, label $label})"
