#!/usr/bin/env bash
# Fetches and unpacks the guest material from Debian's arm64 packages into $HV_CACHE (outside the
# repo; idempotent): the cloud kernel Image (QEMU virt guests), the generic kernel Image and the
# BCM2711 DTBs (Raspberry Pi 4, Pi 400, CM4), each kernel's modules (as
# $HV_CACHE/modules/<kernel version>, a link into the unpacked package:
# qemu/build-guest-initramfs.sh takes the virtio drivers from there), and busybox-static for the
# guest initramfs.
set -euo pipefail
HV_CACHE=${HV_CACHE:-$HOME/.cache/hv-aarch64}
mkdir -p "$HV_CACHE/debs"
cd "$HV_CACHE/debs"
log() { echo "guest-material: $*" >&2; }
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

# The kernel flavour's versioned package, from the bookworm (not backports) suite: 6.1 ships a
# plain arm64 Image.
resolve() {
    apt-cache depends "$1" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ :]*\).*$/\1/p' | head -1
}
fetch_deb() { # name:arch
    local pkg=$1
    if ! ls "${pkg%%:*}"_*.deb >/dev/null 2>&1; then
        log "downloading $pkg"
        apt-get download -q "$pkg" >/dev/null 2>&1 || {
            $SUDO apt-get update -qq && apt-get download -q "$pkg" >/dev/null
        }
    fi
    ls "${pkg%%:*}"_*.deb | head -1
}
unpack() { # deb dir
    [ -d "$2" ] || { rm -rf "$2.tmp" && dpkg-deb -x "$1" "$2.tmp" && mv "$2.tmp" "$2"; }
}

# $HV_CACHE/modules/<version> -> the unpacked package's lib/modules/<version>.
link_modules() { # unpacked-dir
    local tree ver
    for tree in "$1"/lib/modules/*; do
        [ -d "$tree" ] || continue
        ver=$(basename "$tree")
        mkdir -p "$HV_CACHE/modules"
        [ -e "$HV_CACHE/modules/$ver" ] || ln -sfn "$HV_CACHE/debs/$tree" "$HV_CACHE/modules/$ver"
    done
}
# True when the unpacked kernel package in DIR has its modules linked.
have_modules() { # unpacked-dir
    local tree
    for tree in "$1"/lib/modules/*; do
        [ -e "$HV_CACHE/modules/$(basename "$tree")" ] && return 0
    done
    return 1
}

if [ ! -f "$HV_CACHE/Image-cloud" ] || ! have_modules cloud; then
    pkg=$(resolve linux-image-cloud-arm64:arm64)
    [ -n "$pkg" ] || { $SUDO apt-get update -qq; pkg=$(resolve linux-image-cloud-arm64:arm64); }
    [ -n "$pkg" ] || { log "cannot resolve linux-image-cloud-arm64:arm64"; exit 1; }
    deb=$(fetch_deb "$pkg:arm64")
    unpack "$deb" cloud
    cp "$(ls cloud/boot/vmlinuz-* | head -1)" "$HV_CACHE/Image-cloud.tmp"
    mv "$HV_CACHE/Image-cloud.tmp" "$HV_CACHE/Image-cloud"
    link_modules cloud
fi
# The BCM2711 boards' DTBs: Pi 4 Model B, Pi 400, Compute Module 4 on its IO board.
pi_dtbs="bcm2711-rpi-4-b.dtb bcm2711-rpi-400.dtb bcm2711-rpi-cm4-io.dtb"
missing_dtb=0
for d in $pi_dtbs; do [ -f "$HV_CACHE/$d" ] || missing_dtb=1; done
if [ $missing_dtb -eq 1 ] || [ ! -f "$HV_CACHE/Image-generic" ] || ! have_modules generic; then
    pkg=$(resolve linux-image-arm64:arm64)
    [ -n "$pkg" ] || { log "cannot resolve linux-image-arm64:arm64"; exit 1; }
    deb=$(fetch_deb "$pkg:arm64")
    unpack "$deb" generic
    cp "$(ls generic/boot/vmlinuz-* | head -1)" "$HV_CACHE/Image-generic"
    for d in $pi_dtbs; do
        cp "$(find generic -name "$d" | head -1)" "$HV_CACHE/$d"
    done
    link_modules generic
fi
if [ ! -f "$HV_CACHE/busybox" ]; then
    deb=$(fetch_deb busybox-static:arm64)
    unpack "$deb" busybox
    cp busybox/bin/busybox "$HV_CACHE/busybox"
fi
log "ok: $HV_CACHE"
