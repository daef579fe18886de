#!/usr/bin/env bash
# Fetches the Raspberry Pi boot firmware (start4*.elf, fixup4*.dat, ...) from Debian's
# `raspi-firmware` package (component non-free-firmware) and unpacks it into
# $HV_CACHE/rpi-firmware (default ~/.cache/hv-aarch64), never into the repo. Idempotent.
#
# On Debian 12 the package is only in bookworm's non-free-firmware component (not in
# bookworm-backports); when apt knows no candidate for it, this adds
# /etc/apt/sources.list.d/bookworm-non-free-firmware.list once and runs apt-get update.
# Prints the firmware directory on success; exits 1 (with the reason on stderr) otherwise.
set -euo pipefail
HV_CACHE=${HV_CACHE:-$HOME/.cache/hv-aarch64}
dest="$HV_CACHE/rpi-firmware"
log() { echo "rpi-firmware: $*" >&2; }
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

if [ -f "$dest/start4.elf" ] && [ -f "$dest/fixup4.dat" ]; then
    echo "$dest"
    exit 0
fi
mkdir -p "$HV_CACHE/debs"
cd "$HV_CACHE/debs"

candidate() {
    apt-cache policy raspi-firmware 2>/dev/null | sed -n 's/^ *Candidate: *//p' | grep -v '(none)' || true
}

deb=$(ls raspi-firmware_*.deb 2>/dev/null | head -1 || true)
if [ -z "$deb" ]; then
    if [ -z "$(candidate)" ]; then
        . /etc/os-release 2>/dev/null || true
        list=/etc/apt/sources.list.d/bookworm-non-free-firmware.list
        if [ "${ID:-}" = debian ] && [ "${VERSION_CODENAME:-}" = bookworm ] && [ ! -f "$list" ]; then
            log "adding bookworm non-free-firmware to apt sources ($list)"
            echo "deb http://deb.debian.org/debian bookworm non-free-firmware" | $SUDO tee "$list" >/dev/null
        fi
        $SUDO apt-get update -qq || log "apt-get update failed"
    fi
    [ -n "$(candidate)" ] || {
        log "apt knows no raspi-firmware package (Debian component non-free-firmware needed)"
        exit 1
    }
    log "downloading raspi-firmware"
    # apt-get download drops privileges to _apt, which may not write here: use a temp dir.
    tmp=$(mktemp -d)
    chmod 777 "$tmp"
    (cd "$tmp" && apt-get download -q raspi-firmware >/dev/null 2>&1) || {
        rm -rf "$tmp"
        log "apt-get download raspi-firmware failed"
        exit 1
    }
    mv "$tmp"/raspi-firmware_*.deb .
    rm -rf "$tmp"
    deb=$(ls raspi-firmware_*.deb | head -1)
fi

rm -rf raspi-firmware.tmp
dpkg-deb -x "$deb" raspi-firmware.tmp
src=raspi-firmware.tmp/usr/lib/raspi-firmware
[ -f "$src/start4.elf" ] || { log "$deb has no usr/lib/raspi-firmware/start4.elf"; exit 1; }
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"
cp "$src"/* "$dest.tmp/"
cp raspi-firmware.tmp/usr/share/doc/raspi-firmware/copyright "$dest.tmp/LICENCE.raspi-firmware" 2>/dev/null || true
echo "${deb#raspi-firmware_}" | sed 's/_all\.deb$//' >"$dest.tmp/VERSION"
rm -rf raspi-firmware.tmp "$dest"
mv "$dest.tmp" "$dest"
log "ok: $dest ($(cat "$dest/VERSION"))"
echo "$dest"
