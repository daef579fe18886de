#!/usr/bin/env bash
# Builds a Raspberry Pi 4 SD-card image that boots kestrel: an MBR with one FAT32 partition
# (type 0x0c, starting at 4 MiB) holding the GPU firmware from Debian's raspi-firmware package,
# the mainline Raspberry Pi 4 DTB, config.txt, cmdline.txt, kernel8.img (the hypervisor) and its
# ramdisk. Needs no root and no loop device: sfdisk and mtools work on the image file.
#
#   qemu/mksdimage.sh OUT.img [--ramdisk FILE] [--kernel FILE] [--uart mini|pl011]
#                             [--dtb FILE] [--cmdline TEXT]
#
#   --kernel   the hypervisor image (default target/kestrel.bin, built by qemu/build.sh if
#              missing); padded to its arm64 Image header's image_size, so that `initramfs ...
#              followkernel` puts the ramdisk after kestrel's .bss and stacks
#   --ramdisk  kestrel's ramdisk, written as `initramfs` (without it, config.txt's initramfs line
#              is commented out)
#   --uart     console on GPIO 14/15: mini (mini UART, the default) or pl011 (adds kestrel's
#              overlays/disable-bt.dtbo, built from boot/rpi4/disable-bt-overlay.dts)
#   --dtb      the Pi 4 Model B device tree (default $HV_CACHE/bcm2711-rpi-4-b.dtb from
#              qemu/guest-material.sh); the Pi 400's and the CM4's (bcm2711-rpi-400.dtb,
#              bcm2711-rpi-cm4-io.dtb) are added from $HV_CACHE, so one card boots all three
#   --cmdline  cmdline.txt, which the firmware puts in /chosen/bootargs (default loglevel=info)
#
# Downloads (firmware, DTB) are cached in $HV_CACHE (default ~/.cache/hv-aarch64).
# Write the image with `dd if=OUT.img of=/dev/sdX bs=4M conv=fsync` (see docs/rpi4.md).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
HV_CACHE=${HV_CACHE:-$HOME/.cache/hv-aarch64}
export HV_CACHE
log() { echo "mksdimage: $*" >&2; }
die() { log "$*"; exit 1; }
usage() { sed -n '7,9p' "$0" | sed 's/^# *//' >&2; exit 2; }

out="" ramdisk="" kernel="" uart=mini dtb="" cmdline="loglevel=info"
while [ $# -gt 0 ]; do
    case "$1" in
        --ramdisk) ramdisk=$2; shift 2 ;;
        --kernel) kernel=$2; shift 2 ;;
        --uart) uart=$2; shift 2 ;;
        --dtb) dtb=$2; shift 2 ;;
        --cmdline) cmdline=$2; shift 2 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        -*) log "unknown option $1"; usage ;;
        *) [ -z "$out" ] || usage; out=$1; shift ;;
    esac
done
[ -n "$out" ] || usage
case "$uart" in mini|pl011) ;; *) die "--uart must be mini or pl011" ;; esac
for t in sfdisk mformat mcopy mmd mdir; do
    command -v "$t" >/dev/null || die "$t missing (run qemu/setup.sh: packages fdisk, mtools)"
done

if [ -z "$kernel" ]; then
    kernel="$repo/target/kestrel.bin"
    [ -f "$kernel" ] || "$here/build.sh" >&2
fi
[ -f "$kernel" ] || die "kernel $kernel not found"
[ -z "$ramdisk" ] || [ -f "$ramdisk" ] || die "ramdisk $ramdisk not found"
if [ -z "$dtb" ]; then
    dtb="$HV_CACHE/bcm2711-rpi-4-b.dtb"
    [ -f "$dtb" ] || "$here/guest-material.sh" >&2
fi
[ -f "$dtb" ] || die "DTB $dtb not found"
fw=$("$here/rpi-firmware.sh") || die "no Raspberry Pi firmware (Debian package raspi-firmware)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/fat"

# kernel8.img: the image, zero-padded to the Image header's image_size (offset 16, LE u64)
# when it has a valid header (magic "ARM\x64" at offset 56).
cp "$kernel" "$work/fat/kernel8.img"
if [ "$(od -An -c -j56 -N4 "$kernel" | tr -d ' ')" = 'ARMd' ]; then
    image_size=$(od -An -tu8 -j16 -N8 "$kernel" | tr -d ' ')
    file_size=$(stat -c %s "$kernel")
    if [ "$image_size" -gt "$file_size" ] && [ "$image_size" -le $((256 << 20)) ]; then
        truncate -s "$image_size" "$work/fat/kernel8.img"
    fi
else
    log "warning: $kernel has no arm64 Image header; not padded"
fi

# Firmware: the Pi 4 loader (start4/fixup4) and its cut-down, debug and extended variants;
# bootcode.bin and start.elf are for Pi 0-3 and not needed (the Pi 4 boots from its EEPROM).
for f in start4.elf fixup4.dat start4cd.elf fixup4cd.dat start4db.elf fixup4db.dat \
    start4x.elf fixup4x.dat; do
    [ -f "$fw/$f" ] && cp "$fw/$f" "$work/fat/"
done
[ -f "$work/fat/start4.elf" ] && [ -f "$work/fat/fixup4.dat" ] || die "firmware in $fw incomplete"
[ -f "$fw/LICENCE.raspi-firmware" ] && cp "$fw/LICENCE.raspi-firmware" "$work/fat/"
cp "$dtb" "$work/fat/bcm2711-rpi-4-b.dtb"
# The firmware loads the DTB named after the board: bcm2711-rpi-400.dtb on a Pi 400; on a CM4,
# config.txt's [cm4] section names the IO board's mainline DTB.
for d in bcm2711-rpi-400.dtb bcm2711-rpi-cm4-io.dtb; do
    [ -f "$HV_CACHE/$d" ] || "$here/guest-material.sh" >&2
    [ -f "$HV_CACHE/$d" ] || die "$HV_CACHE/$d missing (qemu/guest-material.sh)"
    cp "$HV_CACHE/$d" "$work/fat/$d"
done

cp "$repo/boot/rpi4/config.txt" "$work/fat/config.txt"
if [ "$uart" = pl011 ]; then
    command -v dtc >/dev/null || die "dtc missing (package device-tree-compiler)"
    mkdir -p "$work/fat/overlays"
    dtc -q -@ -I dts -O dtb -o "$work/fat/overlays/disable-bt.dtbo" \
        "$repo/boot/rpi4/disable-bt-overlay.dts"
    sed -i 's/^#pl011: //' "$work/fat/config.txt"
fi
if [ -n "$ramdisk" ]; then
    cp "$ramdisk" "$work/fat/initramfs"
else
    sed -i 's/^initramfs /#(no --ramdisk) initramfs /' "$work/fat/config.txt"
fi
printf '%s\n' "$cmdline" >"$work/fat/cmdline.txt"

# Sizes: the partition starts at 4 MiB (sector 8192, as Raspberry Pi OS images do) and holds
# the files plus 16 MiB, at least 64 MiB (FAT32 wants >= 65525 clusters).
sector=512
start=8192
used=$(du -sb --apparent-size "$work/fat" | cut -f1)
part_mib=$(((used >> 20) + 16))
[ $part_mib -ge 64 ] || part_mib=64
part_sectors=$((part_mib << 20 >> 9))
total=$(((start + part_sectors) * sector))

rm -f "$out"
truncate -s "$total" "$out"
printf 'label: dos\nlabel-id: 0x6b657374\nunit: sectors\n\nstart=%d, size=%d, type=c\n' \
    "$start" "$part_sectors" | sfdisk --no-reread --no-tell-kernel -q "$out" >/dev/null
img="$out@@$((start * sector))"
export MTOOLS_SKIP_CHECK=1
mformat -i "$img" -F -T "$part_sectors" -h 64 -s 32 -H "$start" -N 6b657374 -v KESTREL ::
(cd "$work/fat" && mcopy -i "$img" -s -m -Q ./* ::/)
log "wrote $out ($((total >> 20)) MiB, FAT32 at sector $start, uart $uart)"
mdir -i "$img" -/ -b :: >&2 || true
