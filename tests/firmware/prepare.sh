#!/usr/bin/env bash
# Prepares kestrel's firmware-like entry on QEMU virt (docs/rpi4.md, "Firmware-like entry in
# CI"): builds tests/firmware/armstub.S into OUTDIR/armstub.bin and fills in its parameter words
# (counter frequency, DTB address, kernel entry) as the Raspberry Pi firmware fills in its own
# stub's; compiles tests/firmware/virt-spin-table.dts into OUTDIR/virt-spin-table.dtb with
# /chosen bootargs and, with --ramdisk, linux,initrd-start/-end, as the firmware does from
# cmdline.txt and `initramfs`. Prints the QEMU arguments that load everything, one per line.
#
#   tests/firmware/prepare.sh OUTDIR --kernel FILE [--ramdisk FILE] [--cmdline TEXT]
#                             [--cpus N] [--dtb FILE] [--x0 ADDR] [--no-gic-setup]
#
#   --cpus   CPUs QEMU has (1-4, default 4): the DTB lists that many
#   --dtb    use this DTB instead of virt-spin-table.dts (it must reserve the stub's page)
#   --x0     the DTB address the stub passes to the kernel (default: where QEMU puts the DTB);
#            for testing what a kernel does with a wrong one
#   --no-gic-setup  the stub leaves every interrupt Secure (Group 0), as a Pi 4 firmware with
#            enable_gic=0 or an armstub without GIC support does
#
# Memory map (QEMU virt: RAM from 0x40000000): the DTB at 0x40000000 (QEMU puts -dtb at the
# start of RAM when a firmware is given), the stub at 0x40100000, the kernel at 0x40200000,
# the ramdisk at 0x48000000. Needs the Rust toolchain of rust-toolchain.toml (rustc for the
# aarch64-unknown-none target, rust-lld, llvm-objcopy) and dtc, fdtput (device-tree-compiler).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

STUB_BASE=0x40100000
DTB_BASE=0x40000000
KERNEL_BASE=0x40200000
RAMDISK_BASE=0x48000000
# QEMU's generic timer runs at 62.5 MHz for a Cortex-A72 (the Pi 4's crystal: 54 MHz).
CNTFRQ=62500000

out="" kernel="" ramdisk="" cmdline="" dtb="" x0=$DTB_BASE cpus=4 flags=0
while [ $# -gt 0 ]; do
    case "$1" in
        --kernel) kernel=$2; shift 2 ;;
        --ramdisk) ramdisk=$2; shift 2 ;;
        --cmdline) cmdline=$2; shift 2 ;;
        --dtb) dtb=$2; shift 2 ;;
        --cpus) cpus=$2; shift 2 ;;
        --no-gic-setup) flags=1; shift ;;
        --x0) x0=$2; shift 2 ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        -*) echo "prepare.sh: unknown option $1" >&2; exit 2 ;;
        *) out=$1; shift ;;
    esac
done
[ -n "$out" ] && [ -n "$kernel" ] || { echo "usage: prepare.sh OUTDIR --kernel FILE ..." >&2; exit 2; }
mkdir -p "$out"
for t in dtc fdtput; do
    command -v "$t" >/dev/null || { echo "prepare.sh: $t missing (run qemu/setup.sh)" >&2; exit 1; }
done
sysbin=$(echo "$(rustc --print sysroot)"/lib/rustlib/*/bin)

# The stub, assembled by rustc (no other assembler needed) and linked at its load address (it
# is position independent anyway).
printf '#![no_std]\ncore::arch::global_asm!(include_str!("%s"), options(raw));\n' \
    "$here/armstub.S" >"$out/armstub.rs"
(cd "$here" && rustc --edition 2021 --crate-type lib --emit obj --target aarch64-unknown-none \
    -o "$out/armstub.o" "$out/armstub.rs")
"$sysbin/rust-lld" -flavor gnu --image-base=$STUB_BASE -Ttext=$STUB_BASE -e _start \
    -o "$out/armstub.elf" "$out/armstub.o"
"$sysbin/llvm-objcopy" -O binary "$out/armstub.elf" "$out/armstub.bin"

# put32 FILE OFFSET VALUE: a little-endian 32-bit word into FILE.
put32() {
    local v=$(($3))
    printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $((v & 255)) $((v >> 8 & 255)) \
        $((v >> 16 & 255)) $((v >> 24 & 255)))" |
        dd of="$1" bs=1 seek=$(($2)) conv=notrunc status=none
}
put32 "$out/armstub.bin" 0xd0 $CNTFRQ
put32 "$out/armstub.bin" 0xd4 $flags
put32 "$out/armstub.bin" 0xf8 "$x0"
put32 "$out/armstub.bin" 0xfc $KERNEL_BASE

if [ -n "$dtb" ]; then
    cp "$dtb" "$out/virt-spin-table.dtb"
else
    dtc -q -I dts -O dtb -o "$out/virt-spin-table.dtb" "$here/virt-spin-table.dts"
    for ((i = cpus; i < 4; i++)); do
        fdtput -r "$out/virt-spin-table.dtb" "/cpus/cpu@$i"
    done
fi
chmod u+w "$out/virt-spin-table.dtb"
[ -n "$cmdline" ] && fdtput -p -t s "$out/virt-spin-table.dtb" /chosen bootargs "$cmdline"
args=(-bios "$out/armstub.bin"
    -global "cortex-a72-arm-cpu.rvbar=$STUB_BASE"
    -device "loader,file=$out/armstub.bin,addr=$STUB_BASE,force-raw=on"
    -device "loader,file=$kernel,addr=$KERNEL_BASE,force-raw=on"
    -dtb "$out/virt-spin-table.dtb")
if [ -n "$ramdisk" ]; then
    size=$(stat -c %s "$ramdisk")
    fdtput -p -t x "$out/virt-spin-table.dtb" /chosen linux,initrd-start 0 $RAMDISK_BASE
    fdtput -p -t x "$out/virt-spin-table.dtb" /chosen linux,initrd-end \
        0 "$(printf '%x' $((RAMDISK_BASE + size)))"
    args+=(-device "loader,file=$ramdisk,addr=$RAMDISK_BASE,force-raw=on")
fi
printf '%s\n' "${args[@]}"
