#!/usr/bin/env bash
# Builds the hypervisor if needed and boots it under QEMU.
#
#   qemu/run.sh [--machine virt|raspi4b] [--cpu MODEL] [--cpus N] [--mem SIZE] [--gic 2|3]
#               [--secure] [--armstub [--x0 ADDR] [--armstub-no-gic]] [--dtb FILE] [--ramdisk FILE]
#               [--timeout SECONDS] [--gdb] [--icount] [--log FILE] [--no-build]
#               [-- EXTRA_QEMU_ARGS...]
#
#   --cpu      (virt) the CPU model (default cortex-a72, as on the Raspberry Pi 4; `max` offers
#              every feature QEMU models: SVE, PAuth, MTE with `-- -machine mte=on`, ...)
#   --armstub  (virt) enter kestrel as the Raspberry Pi 4 firmware does: secure=on, GICv2 with
#              Security Extensions, every CPU starting at EL3 in tests/firmware/armstub.S,
#              which sets up the GIC from the Secure side, parks CPUs 1-3 in a spin table and
#              enters kestrel at EL2 with the DTB tests/firmware/virt-spin-table.dts
#   --dtb      the DTB to hand over instead of QEMU's (virt) or the Debian Pi 4 one (raspi4b)
#   --x0       with --armstub: the DTB address the stub passes in x0 (default: the DTB's)
#   --armstub-no-gic  with --armstub: the stub leaves the GIC's interrupts Secure (Group 0), as
#              a Pi 4 firmware with enable_gic=0 would
#
# Exit status: 0 only when the hypervisor powered off cleanly (its last line is
# "kestrel: power off", or where there is no PSCI (raspi4b, --armstub), "kestrel: halted, power
# can be removed");
# 1 on a panic, an unexpected exception or any other end; 124 on timeout.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)

machine=virt cpu=cortex-a72 cpus=4 mem=2G gic=3 secure=0 armstub=0 armstub_no_gic=0 dtb="" x0="" ramdisk=""
timeout=0 gdb=0 icount=0 log="" build=1
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --machine) machine=$2; shift 2 ;;
        --cpus) cpus=$2; shift 2 ;;
        --cpu) cpu=$2; shift 2 ;;
        --mem) mem=$2; shift 2 ;;
        --gic) gic=$2; shift 2 ;;
        --secure) secure=1; shift ;;
        --armstub) armstub=1; shift ;;
        --dtb) dtb=$2; shift 2 ;;
        --x0) x0=$2; shift 2 ;;
        --armstub-no-gic) armstub_no_gic=1; shift ;;
        --ramdisk) ramdisk=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        --gdb) gdb=1; shift ;;
        --icount) icount=1; shift ;;
        --log) log=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

image="$repo/target/kestrel.bin"
if [ $build -eq 1 ]; then
    "$here/build.sh" >&2 || exit 1
fi
[ -f "$image" ] || { echo "run.sh: $image missing (build failed?)" >&2; exit 1; }

[ $armstub -eq 0 ] || [ "$machine" = virt ] || { echo "run.sh: --armstub needs --machine virt" >&2; exit 2; }
[ -z "$x0" ] && [ $armstub_no_gic -eq 0 ] || [ $armstub -eq 1 ] ||
    { echo "run.sh: --x0 and --armstub-no-gic need --armstub" >&2; exit 2; }

qemu=(qemu-system-aarch64)
case "$machine" in
    virt)
        if [ $armstub -eq 1 ]; then
            secure=1 gic=2
        fi
        m="virt,virtualization=on,gic-version=$gic"
        [ $secure -eq 1 ] && m="$m,secure=on"
        [ $icount -eq 1 ] && m="$m,dtb-randomness=off"
        qemu+=(-machine "$m" -cpu "$cpu" -smp "$cpus" -m "$mem")
        ;;
    raspi4b)
        [ -n "$dtb" ] || dtb="${HV_CACHE:-$HOME/.cache/hv-aarch64}/bcm2711-rpi-4-b.dtb"
        [ -f "$dtb" ] || "$here/guest-material.sh" >&2
        qemu+=(-machine raspi4b)
        [ $icount -eq 0 ] && qemu+=(-accel tcg,thread=single)
        ;;
    *) echo "run.sh: unknown machine $machine" >&2; exit 2 ;;
esac
if [ $armstub -eq 1 ]; then
    # The stub, the DTB and the ramdisk are loaded by tests/firmware/prepare.sh's arguments;
    # QEMU boots no kernel itself (-kernel would make it skip the firmware).
    fw=$(mktemp -d /tmp/kestrel-armstub.XXXXXX)
    trap 'rm -rf "$fw"' EXIT
    prep=(--kernel "$image" --cpus "$cpus")
    [ -n "$ramdisk" ] && prep+=(--ramdisk "$ramdisk")
    [ -n "$dtb" ] && prep+=(--dtb "$dtb")
    [ -n "$x0" ] && prep+=(--x0 "$x0")
    [ $armstub_no_gic -eq 1 ] && prep+=(--no-gic-setup)
    mapfile -t fwargs < <("$repo/tests/firmware/prepare.sh" "$fw" "${prep[@]}")
    [ ${#fwargs[@]} -gt 0 ] || { echo "run.sh: tests/firmware/prepare.sh failed" >&2; exit 1; }
    qemu+=("${fwargs[@]}")
else
    qemu+=(-kernel "$image")
    [ -n "$dtb" ] && qemu+=(-dtb "$dtb")
fi
qemu+=(-display none -nic none -monitor none)
if [ "$machine" = raspi4b ]; then
    # raspi4b: the first serial port is the PL011, the second the mini UART, which the Pi 4
    # DTB's stdout-path names (serial1).
    qemu+=(-serial null -serial stdio)
else
    qemu+=(-serial stdio)
fi
[ -n "$ramdisk" ] && [ $armstub -eq 0 ] && qemu+=(-initrd "$ramdisk")
[ $icount -eq 1 ] && qemu+=(-icount shift=0,sleep=off,align=off -rtc base=2020-01-01T00:00:00,clock=vm)
if [ $gdb -eq 1 ]; then
    qemu+=(-s -S)
    echo "run.sh: QEMU waits for gdb on :1234; in another terminal:" >&2
    echo "  gdb-multiarch $repo/target/aarch64-unknown-none-softfloat/release/kestrel -ex 'target remote :1234'" >&2
fi
qemu+=("${extra[@]}")

[ -n "$log" ] || log=$(mktemp /tmp/kestrel-run.XXXXXX.log)
: >"$log"

# QEMU runs in the background with its serial output copied to the terminal and the log; a
# watcher ends it on the hypervisor's final line (needed where nothing can power off) or on a
# panic, and on timeout.
final_re='kestrel: (power off|halted, power can be removed)|PANIC:|UNEXPECTED EXCEPTION'
# Explicit stdin: a background job of a non-interactive shell would otherwise read /dev/null,
# and the guest's shell would get no keyboard input.
"${qemu[@]}" <&0 > >(tee -a "$log") &
qpid=$!
start=$SECONDS
status=""
while kill -0 $qpid 2>/dev/null; do
    if grep -qE 'PANIC:|UNEXPECTED EXCEPTION' "$log"; then
        sleep 1; status=1; break
    fi
    if grep -q 'kestrel: halted, power can be removed' "$log"; then
        sleep 0.5; status=0; break
    fi
    if [ "$timeout" != 0 ] && [ $((SECONDS - start)) -ge "$timeout" ]; then
        status=124; break
    fi
    sleep 0.2
done
if [ -n "$status" ]; then
    kill $qpid 2>/dev/null; wait $qpid 2>/dev/null
else
    wait $qpid; qrc=$?
    sleep 0.2
    if [ $qrc -eq 0 ] && grep -q 'kestrel: power off' "$log"; then status=0; else status=1; fi
fi
wait 2>/dev/null
if [ "$status" = 124 ]; then
    echo "run.sh: timeout after ${timeout}s; last lines of $log:" >&2
    tail -n 20 "$log" >&2
fi
exit "$status"
