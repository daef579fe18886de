#!/usr/bin/env bash
# Deterministic benchmarks of kestrel against the same guests booted directly on QEMU virt,
# under `-icount shift=0,sleep=off,align=off` (one virtual nanosecond per instruction).
# Method, figures and what each includes: docs/benchmarks.md.
#
#   qemu/bench.sh [--out DIR] [--no-profile] [--timeout SECONDS] [--no-run]
#
#   --out DIR       work folder (default target/bench): logs/, profiles/, results.txt, summary.txt
#   --no-profile    skip the runs under the instruction-counting QEMU plugin
#                   (benches/bench-exit-profile.c): no instruction counts, no breakdowns
#   --timeout S     per QEMU run (default 300)
#   --no-run        build nothing, run nothing: analyse the logs and profiles of the last run
#   --shared        only the benchmarks of a shared physical CPU (one CPU, GICv3, the bench test
#                   guest as VMs pinned to CPU 0): the cost of one vCPU switch (two spinning
#                   VMs, 100 us slices), and the virtual-timer wake-up alone on the CPU,
#                   beside a busy VM and beside a sleeping one; summary in shared.txt
#
# It builds what it needs (qemu/build.sh, tests/guests/build.sh, the guest initramfs, the
# ramdisks, a tiny counter-stamp program, the plugin), then runs:
#   1. boot to /init: Debian cloud kernel + busybox initramfs, 512 MiB, 1 and 2 vCPUs, GICv3,
#      directly on QEMU virt (with the devices kestrel's guests have; and, for reference, with
#      QEMU's full device tree) and under kestrel; the guest prints CNTVCT when /init starts
#      and right after "GUEST: userland reached";
#   2. exit costs: the bench test guest directly and under kestrel, GICv3 and GICv2;
#   3. (unless --no-profile) the same under the plugin: instructions executed up to each stamp,
#      and where the hypervisor's instructions go (symbols of the kestrel ELF).
# Every figure except wall-clock time is deterministic: results.txt is compared with the
# previous run's (results.prev.txt) and the summary says whether they are identical.
# Exit status: 0 when every headline figure was measured, 1 otherwise.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
HV_CACHE=${HV_CACHE:-$HOME/.cache/hv-aarch64}
export HV_CACHE

out=$repo/target/bench profile=1 timeout=300 run=1 shared=0
while [ $# -gt 0 ]; do
    case $1 in
    --shared) shared=1; shift ;;
    --out) out=$2; shift 2 ;;
    --no-profile) profile=0; shift ;;
    --timeout) timeout=$2; shift 2 ;;
    --no-run) run=0; shift ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
logs=$out/logs profs=$out/profiles build=$out/build
mkdir -p "$logs" "$profs" "$build"
log() { echo "bench: $*" >&2; }
die() { log "error: $*"; exit 1; }
t_start=$(date +%s)

# --- tools ------------------------------------------------------------------------------------
for t in qemu-system-aarch64 cpio gzip rustc cargo fdtget fdtput; do
    command -v "$t" >/dev/null || die "$t is not installed (qemu/setup.sh installs it)"
done
llvm_bin=$(dirname "$(ls "$(rustc --print sysroot)"/lib/rustlib/*/bin/llvm-nm | sed -n 1p)")
[ -x "$llvm_bin/llvm-nm" ] || die "llvm-nm missing (rustup component add llvm-tools)"
if [ $profile -eq 1 ] && ! command -v gcc >/dev/null; then
    log "gcc missing: no plugin, running with --no-profile"
    profile=0
fi

# --- builds -----------------------------------------------------------------------------------
elf=$build/kestrel.elf
kernel=$HV_CACHE/Image-cloud
initrd=$build/bench-initramfs.cpio.gz
bootargs="console=ttyAMA0 earlycon guest.test=1"
plugin=$build/bench-exit-profile.so
# The stamp program: executes the plugin's marker NOP, reads CNTVCT_EL0 and CNTFRQ_EL0, writes
# "KBENCH: stamp <label> cntvct=<ticks> cntfrq=<hz>" to stdout and exits. A static AArch64 Linux
# ELF from the bare-metal target (no libc): Linux lets EL0 read the virtual counter
# (CNTKCTL_EL1.EL0VCTEN, set for the vDSO).
stamp_src=$(cat <<'EOF'
#![no_std]
#![no_main]
use core::arch::{asm, global_asm};

// hint #0x7f: a NOP (unallocated hint) that the QEMU plugin recognises as a marker.
global_asm!(
    ".globl _start",
    "_start:",
    "hint #0x7f",
    "isb",
    "mrs x1, cntvct_el0",
    "mrs x2, cntfrq_el0",
    "mov x0, sp",
    "bl stamp_main",
    "1: b 1b",
);

fn syscall3(nr: u64, a: u64, b: u64, c: u64) -> u64 {
    let r;
    // SAFETY: a Linux system call (write or exit) with plain integer arguments.
    unsafe {
        asm!("svc #0", inlateout("x0") a => r, in("x1") b, in("x2") c, in("x8") nr,
             options(nostack))
    };
    r
}

struct Line {
    b: [u8; 128],
    n: usize,
}

impl Line {
    fn push(&mut self, s: &[u8]) {
        for &c in s {
            if self.n < self.b.len() {
                self.b[self.n] = c;
                self.n += 1;
            }
        }
    }
    fn num(&mut self, mut v: u64) {
        let mut d = [0u8; 20];
        let mut i = d.len();
        loop {
            i -= 1;
            d[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&d[i..]);
    }
}

#[unsafe(no_mangle)]
extern "C" fn stamp_main(sp: *const u64, cnt: u64, freq: u64) -> ! {
    let mut l = Line { b: [0; 128], n: 0 };
    l.push(b"KBENCH: stamp ");
    // SAFETY: the initial stack holds argc, then argv[0..argc] NUL-terminated strings (the
    // Linux ELF start-up ABI); at most 32 bytes of argv[1] are read.
    unsafe {
        if *sp > 1 {
            let mut p = *(sp.add(2)) as *const u8;
            let mut k = 0;
            while *p != 0 && k < 32 {
                l.push(&[*p]);
                p = p.add(1);
                k += 1;
            }
        }
    }
    l.push(b" cntvct=");
    l.num(cnt);
    l.push(b" cntfrq=");
    l.num(freq);
    l.push(b"\n");
    syscall3(64, 1, l.b.as_ptr() as u64, l.n as u64);
    syscall3(93, 0, 0, 0);
    loop {}
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
EOF
)

build_all() {
    log "building the hypervisor and the test guests"
    "$here/build.sh"
    "$repo/tests/guests/build.sh" "$build/guests" >/dev/null
    # The ELF the analysis symbolises, as it was for this run.
    cp "$repo/target/aarch64-unknown-none-softfloat/release/kestrel" "$elf"
    cp "$repo/target/kestrel.bin" "$build/kestrel.bin"

    [ -f "$kernel" ] || "$here/guest-material.sh"
    [ -f "$kernel" ] || die "$kernel is missing"
    "$here/build-guest-initramfs.sh" "$build/initramfs.cpio.gz" 2>/dev/null

    stamp=$build/kbench-stamp
    key=$(printf '%s' "$stamp_src" | sha256sum | cut -c1-16)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp.key" 2>/dev/null)" != "$key" ]; then
        log "building the stamp program"
        printf '%s\n' "$stamp_src" >"$build/kbench-stamp.rs"
        rustc --edition 2024 --target aarch64-unknown-none-softfloat -C opt-level=2 -C panic=abort \
            -C relocation-model=static -C strip=symbols -o "$stamp.tmp" "$build/kbench-stamp.rs"
        mv "$stamp.tmp" "$stamp"
        echo "$key" >"$stamp.key"
    fi

    # The measured initramfs: the standard one followed by a second cpio archive (Linux unpacks
    # both, later entries replace earlier ones) holding the stamp program and a copy of the
    # standard /init with three lines added: a stamp first, a stamp right after
    # "GUEST: userland reached", then poweroff -f (nothing after that point is measured).
    ovl=$build/overlay
    rm -rf "$ovl"
    mkdir -p "$ovl"
    (cd "$ovl" && zcat "$build/initramfs.cpio.gz" | cpio -i --quiet init)
    awk 'NR == 1 { print; print "/kbench-stamp init"; next }
         /^echo "GUEST: userland reached"$/ {
             print; print "/kbench-stamp userland"; print "poweroff -f"; hit = 1; next
         }
         { print }
         END { exit hit ? 0 : 1 }' "$ovl/init" >"$ovl/init.new" ||
        die "the standard /init has no 'echo \"GUEST: userland reached\"' line"
    mv "$ovl/init.new" "$ovl/init"
    cp "$stamp" "$ovl/kbench-stamp"
    chmod 755 "$ovl/init" "$ovl/kbench-stamp"
    touch -h -d @0 "$ovl/init" "$ovl/kbench-stamp"
    (cd "$ovl" && printf 'init\nkbench-stamp\n' | cpio --quiet -o -H newc --reproducible --owner=0:0) |
        gzip -9 -n >"$build/overlay.cpio.gz"
    cat "$build/initramfs.cpio.gz" "$build/overlay.cpio.gz" >"$build/bench-initramfs.cpio.gz"

    # Hypervisor ramdisks: one VM "linux" like qemu/build-default-ramdisk.sh makes (same vm.toml
    # keys), with the measured initramfs; and the bench test guest.
    for n in 1 2; do
        d=$build/vms-$n/linux
        rm -rf "$build/vms-$n"
        mkdir -p "$d"
        ln -s "$kernel" "$d/Image"
        ln -s "$initrd" "$d/initramfs.cpio.gz"
        cat >"$d/vm.toml" <<EOF
# Generated by qemu/bench.sh (like qemu/build-default-ramdisk.sh --test --cpus $n).
kernel = "Image"
initrd = "initramfs.cpio.gz"
memory = "512M"
cpus = $n
bootargs = "$bootargs"
EOF
        "$here/mkramdisk.sh" "$build/linux-$n.cpio" "$d" 2>/dev/null
    done
    "$here/mkramdisk.sh" "$build/bench.cpio" "$build/guests/vm-bench" 2>/dev/null

    # The direct boot's device tree: QEMU's own for the same machine, minus every device kestrel
    # does not give its guests (PCIe, fw_cfg, RTC, GPIO, flash, the GIC ITS), so that both
    # kernels probe the same hardware (kestrel's guests have the PMU and QEMU's 32 empty
    # virtio-mmio transports too). /chosen (bootargs, initrd) is filled in by QEMU at boot as
    # usual.
    for n in 1 2; do
        f=$build/direct-${n}cpu.dtb
        qemu-system-aarch64 -machine "virt,gic-version=3,dtb-randomness=off,dumpdtb=$f" \
            -cpu cortex-a72 -smp "$n" -m 512M -nographic >/dev/null 2>&1
        for node in $(fdtget -l "$f" /); do
            case $node in
            psci | memory@* | pl011@* | intc@* | cpus | timer | pmu | virtio_mmio@* | apb-pclk | aliases | chosen) ;;
            *) fdtput -r "$f" "/$node" ;;
            esac
        done
        gic_node=$(fdtget -l "$f" / | grep '^intc@') || die "no GIC node in QEMU's device tree"
        for node in $(fdtget -l "$f" "/$gic_node"); do
            fdtput -r "$f" "/$gic_node/$node"
        done
    done

    if [ $profile -eq 1 ]; then
        src=$repo/benches/bench-exit-profile.c
        if [ ! -f "$plugin" ] || [ "$src" -nt "$plugin" ]; then
            log "building the QEMU plugin"
            gcc -O2 -Wall -Wextra -shared -fPIC -fvisibility=hidden -o "$plugin" "$src"
        fi
    fi
}

# --- a shared CPU (--shared) -------------------------------------------------------------------
# Each run: kestrel on one CPU under -icount with VMs made from the bench test guest, every one
# pinned to CPU 0 with its own bench.mode (tests/guests/src/bin/bench.rs).
shared_vm() { # dir name bootargs [extra vm.toml line]
    local d=$1/$2
    mkdir -p "$d"
    cp "$build/guests/bench.img" "$d/bench.img"
    printf '# Generated by qemu/bench.sh --shared.\nname = "%s"\nkernel = "bench.img"\nmemory = "64M"\ncpus = 1\nphysical_cpus = [0]\nbootargs = "%s"\n%s\n' \
        "$2" "$3" "${4:-}" >"$d/vm.toml"
}
shared_run() { # name "extra vm.toml line" "vm:bootargs"...
    local name=$1 dir=$build/shared/$1 extra=$2 v rd
    shift 2
    rm -rf "$dir"
    mkdir -p "$dir"
    local folders=()
    for v in "$@"; do
        shared_vm "$dir" "${v%%:*}" "${v#*:}" "$extra"
        folders+=("$dir/${v%%:*}")
    done
    rd=$dir/ramdisk.cpio
    "$here/mkramdisk.sh" "$rd" "${folders[@]}" 2>/dev/null
    log "run $name"
    "$here/run.sh" --no-build --icount --gic 3 --cpus 1 --mem 1G --ramdisk "$rd" \
        --timeout "$timeout" --log "$logs/$name.log" </dev/null >/dev/null 2>&1 ||
        log "warning: qemu/run.sh exited $? (see $logs/$name.log)"
}
# What VM `vm` printed, its lines joined (the console mux may split a line between VMs').
shared_stream() { # log vm
    { grep -a "^\[$2\] " "$1" 2>/dev/null || true; } | sed "s/^\[$2\] //" | tr -d '\r\n'
}
shared_fig() { # log vm figure -> ns_per_op (instructions under -icount)
    shared_stream "$1" "$2" | grep -o "BENCH: $3 [^B]*" | sed -n 's/.*ns_per_op=\([0-9.]*\).*/\1/p' | sed -n 1p
}
# One switch from both VMs' counts: (window - run_a - run_b) / (gaps_a + gaps_b), in ns.
shared_switch() { # log
    local a b
    a=$(shared_stream "$1" a | grep -o 'BENCH: slices window_ticks=[0-9]* run_ticks=[0-9]* gaps=[0-9]*')
    b=$(shared_stream "$1" b | grep -o 'BENCH: slices window_ticks=[0-9]* run_ticks=[0-9]* gaps=[0-9]*')
    f=$(shared_stream "$1" a | grep -o 'cntfrq=[0-9]*' | sed -n '1s/cntfrq=//p')
    [ -n "$a" ] && [ -n "$b" ] && [ -n "$f" ] || return 0
    echo "$a $b" | tr '=' ' ' | awk -v f="$f" '{ w = ($4 + $12) / 2; r = $6 + $14; g = $8 + $16
        if (g > 0) printf "%.2f (%d switches in %.0f ms)", (w - r) / g * 1e9 / f, g, w * 1e3 / f }'
}
if [ $shared -eq 1 ]; then
    if [ $run -eq 1 ]; then
        log "building the hypervisor and the test guests"
        "$here/build.sh"
        "$repo/tests/guests/build.sh" "$build/guests" >/dev/null
        # The neighbours stay until 300 ms of counter time, well after the timer bench ends.
        # 100 us slices (the shortest timeslice_us): 2,000 switches in the 200 ms window.
        shared_run shared-switch "timeslice_us = 100" "a:bench.mode=slices" "b:bench.mode=slices"
        shared_run shared-timer-alone "" "a:bench.mode=timer"
        shared_run shared-timer-busy "" "a:bench.mode=timer" "b:bench.mode=spin bench.until_ms=300"
        shared_run shared-timer-sleeping "" "a:bench.mode=timer" "b:bench.mode=sleep bench.until_ms=300"
    fi
    sum=$out/shared.txt
    {
        echo "kestrel on a shared CPU (instructions, -icount shift=0; qemu/bench.sh --shared)"
        echo "vCPU switch at the end of a 100 us slice, two spinning VMs on one CPU (CNTHP exit included), per switch: $(shared_switch "$logs/shared-switch.log")"
        echo "timer wake-up, alone on its CPU (dedicated path): $(shared_fig "$logs/shared-timer-alone.log" a timer)"
        echo "timer wake-up, beside a busy VM on its CPU: $(shared_fig "$logs/shared-timer-busy.log" a timer)"
        echo "timer wake-up, beside a sleeping VM on its CPU: $(shared_fig "$logs/shared-timer-sleeping.log" a timer)"
    } >"$sum"
    cat "$sum"
    exit 0
fi

if [ $run -eq 1 ]; then
    build_all
fi
[ -f "$elf" ] || die "$elf missing: nothing was run yet"
# QEMU virt loads the image at the first 2 MiB-aligned address of RAM; kestrel runs with an
# identity map, so its code executes at these addresses.
hv_load=0x40200000
hv_end=$(printf '0x%x' $((hv_load + $(stat -c %s "$build/kestrel.bin"))))
bench_args=$(sed -n 's/^bootargs = "\(.*\)"$/\1/p' "$build/guests/vm-bench/vm.toml")

# --- running ----------------------------------------------------------------------------------
walls=$out/wall.txt
[ $run -eq 1 ] && : >"$walls"
now() { date +%s.%N; }
wall() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

icount=(-icount shift=0,sleep=off,align=off -rtc base=2020-01-01T00:00:00,clock=vm)
direct_qemu() { # gic smp mem kernel initrd(or "") append [extra qemu args...] log
    local gic=$1 smp=$2 mem=$3 k=$4 rd=$5 app=$6 lg=${!#}
    shift 6
    set -- "${@:1:$(($# - 1))}"
    local a=(-machine "virt,gic-version=$gic,dtb-randomness=off" -cpu cortex-a72 -smp "$smp"
        -m "$mem" "${icount[@]}" -nic none -display none -monitor none -serial stdio
        -kernel "$k" -append "$app")
    [ -n "$rd" ] && a+=(-initrd "$rd")
    timeout "$timeout" qemu-system-aarch64 "${a[@]}" "$@" </dev/null >"$lg" 2>&1 ||
        log "warning: direct QEMU run exited $? (see $lg)"
}
hv_qemu() { # gic cpus ramdisk [extra qemu args...] log
    local gic=$1 cpus=$2 rd=$3 lg=${!#}
    shift 3
    set -- "${@:1:$(($# - 1))}"
    "$here/run.sh" --no-build --icount --gic "$gic" --cpus "$cpus" --mem 2G --ramdisk "$rd" \
        --timeout "$timeout" --log "$lg" -- "$@" </dev/null >/dev/null 2>&1 ||
        log "warning: qemu/run.sh exited $? (see $lg)"
}
plugin_args() { # out-file [extra plugin options, comma-separated]
    echo "$plugin,hv_start=$hv_load,hv_end=$hv_end,out=$1${2:+,$2}"
}
# stamp LOG LABEL -> virtual ns (ticks * 1e9 / CNTFRQ), or empty
stamp_ns() {
    local l
    l=$({ grep -a "KBENCH: stamp $2 " "$1" 2>/dev/null || true; } | sed -n 1p | tr -d '\r')
    [ -n "$l" ] || return 0
    local c f
    c=$(echo "$l" | sed -n 's/.*cntvct=\([0-9]*\).*/\1/p')
    f=$(echo "$l" | sed -n 's/.*cntfrq=\([0-9]*\).*/\1/p')
    echo $((c * 1000000000 / f))
}

# One run: NAME (its log is logs/NAME.log), the line that marks success, then direct|hv and
# that function's arguments. Its wall-clock time goes to wall.txt. A run without the success
# line (e.g. QEMU killed from outside) is repeated once; the failed attempt's log is kept.
runone() { # name success-regex direct|hv args...
    local name=$1 ok=$2 kind=$3 try t0 t1
    shift 3
    for try in 1 2; do
        log "run $name"
        t0=$(now)
        case $kind in
        direct) direct_qemu "$@" "$logs/$name.log" ;;
        hv) hv_qemu "$@" "$logs/$name.log" ;;
        esac
        t1=$(now)
        if grep -aq "$ok" "$logs/$name.log"; then
            echo "$name $(wall "$t0" "$t1")" >>"$walls"
            return 0
        fi
        mv "$logs/$name.log" "$logs/$name.failed$try.log"
        log "warning: $name: no '$ok' in its log, kept as $logs/$name.failed$try.log" \
            "(attempt $try of 2; $(tail -n 1 "$logs/$name.failed$try.log" | cut -c1-100))"
    done
    echo "$name failed" >>"$walls"
}

run_all() {
    local n gic stamp='KBENCH: stamp userland' done='BENCH: done'
    rm -f "$profs"/*.txt "$logs"/*.failed*.log
    # 1. Boot to /init. "direct": QEMU's device tree minus the devices kestrel does not
    # provide; "qemudtb": QEMU's own device tree (more devices to probe), for reference.
    for n in 1 2; do
        runone boot-direct-${n}cpu "$stamp" direct 3 "$n" 512M "$kernel" "$initrd" "$bootargs" \
            -dtb "$build/direct-${n}cpu.dtb"
        runone boot-kestrel-${n}cpu "$stamp" hv 3 "$n" "$build/linux-$n.cpio"
        runone boot-qemudtb-${n}cpu "$stamp" direct 3 "$n" 512M "$kernel" "$initrd" "$bootargs"
    done
    # 2. Exit costs.
    for gic in 3 2; do
        runone bench-direct-gic$gic "$done" direct "$gic" 1 64M "$build/guests/bench.img" "" "$bench_args"
        runone bench-kestrel-gic$gic "$done" hv "$gic" 1 "$build/bench.cpio"
    done
    [ $profile -eq 1 ] || return 0
    # 3. Under the plugin. Direct: an empty hypervisor range, every instruction is the guest's.
    for n in 1 2; do
        runone prof-boot-direct-${n}cpu "$stamp" direct 3 "$n" 512M "$kernel" "$initrd" "$bootargs" \
            -dtb "$build/direct-${n}cpu.dtb" \
            -plugin "$plugin,hv_start=0x1,hv_end=0x2,out=$profs/boot-direct-${n}cpu.txt,stop_mark=2"
        runone prof-boot-kestrel-${n}cpu "$stamp" hv 3 "$n" "$build/linux-$n.cpio" \
            -plugin "$(plugin_args "$profs/boot-kestrel-${n}cpu.txt" pairs=on,stop_mark=2)"
    done
    for gic in 3 2; do
        runone prof-bench-kestrel-gic$gic "$done" hv "$gic" 1 "$build/bench.cpio" \
            -plugin "$(plugin_args "$profs/bench-kestrel-gic$gic.txt" pairs=on)"
    done
}
[ $run -eq 1 ] && run_all

# --- analysis ---------------------------------------------------------------------------------
results=$out/results.txt
[ $run -eq 1 ] && [ -f "$results" ] && mv "$results" "$out/results.prev.txt"
: >"$results"
put() { echo "$1 $2" >>"$results"; }   # key value (deterministic figures only)
bench_fig() { # log name -> ns_per_op
    { grep -a "^\(\[bench\] \)\?BENCH: $2 " "$1" 2>/dev/null || true; } |
        sed -n 's/.*ns_per_op=\([0-9.]*\).*/\1/p' | sed -n 1p
}
for n in 1 2; do
    for h in direct kestrel qemudtb; do
        lg=$logs/boot-$h-${n}cpu.log
        put "boot.$h.${n}cpu.init_ns" "$(stamp_ns "$lg" init)"
        put "boot.$h.${n}cpu.userland_ns" "$(stamp_ns "$lg" userland)"
    done
    # "[s.micros] cpuN kestrel: vm linux (id 0): ..." is logged just before the vCPU starts.
    lg=$logs/boot-kestrel-${n}cpu.log
    put "boot.kestrel.${n}cpu.vm_start_ns" "$({ grep -a 'kestrel: vm linux (id' "$lg" 2>/dev/null || true; } | sed -n 1p |
        sed -n 's/^\[ *\([0-9]*\)\.\([0-9]*\)\].*/\1 \2/p' | awk '{ printf "%d", $1 * 1000000000 + $2 * 1000 }')"
done
for gic in 3 2; do
    for h in direct kestrel; do
        for f in baseline hvc gicd uart timer; do
            put "bench.$h.gic$gic.$f" "$(bench_fig "$logs/bench-$h-gic$gic.log" $f)"
        done
    done
done
# Text symbols of the kestrel ELF (linked at 0): "offset name", names demangled and cleaned of
# the legacy Rust mangling escapes.
syms=$build/kestrel.syms
"$llvm_bin/llvm-nm" -n --demangle "$elf" |
    awk '$2 ~ /^[tTwW]$/ { a = $1; $1 = ""; $2 = ""; sub(/^ +/, ""); print a, $0 }' |
    sed -e 's/_\$LT\$/</g; s/\$LT\$/</g; s/\$GT\$/>/g; s/\$u20\$/ /g; s/\$u7b\$/{/g' \
        -e 's/\$u7d\$/}/g; s/\$RF\$/\&/g; s/\$C\$/,/g; s/\.\./::/g; s/::h[0-9a-f]\{16\}$//' >"$syms"
cat >"$build/funcs.awk" <<'EOF'
# Instructions per function of the kestrel image, from a plugin profile.
#   awk -v spec="all:1,3:-1" -v base=0x40200000 -v div=N -v top=K -f funcs.awk SYMS PROFILE
# spec: histogram classes with weights ("all" = every hypervisor instruction). Prints the top
# K functions: instructions / div, share, name.
function hex(s,   i, v) {
    v = 0; s = tolower(s); sub(/^0x/, "", s)
    for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
    return v
}
BEGIN { n = split(spec, parts, ","); for (i = 1; i <= n; i++) { split(parts[i], kv, ":"); w[kv[1]] = kv[2] } }
FNR == NR { addr[ns] = hex($1); $1 = ""; sub(/^ /, ""); name[ns++] = $0; next }
$1 == "pc" && ($2 in w) {
    off = hex($3) - hex(base); lo = 0; hi = ns - 1; k = -1
    while (lo <= hi) { m = int((lo + hi) / 2); if (addr[m] <= off) { k = m; lo = m + 1 } else hi = m - 1 }
    f = k >= 0 ? name[k] : "?"; c[f] += w[$2] * $4; tot += w[$2] * $4
}
END {
    if (tot == 0) exit
    for (f in c)
        if (c[f] != 0) printf "%14.1f %5.1f%%  %s\n", c[f] / div, 100 * c[f] / tot, f | "sort -rn | head -" top
    close("sort -rn | head -" top)
    printf "%14.1f total\n", tot / div
}
EOF
funcs() { # profile spec divisor top
    awk -v spec="$2" -v base="$hv_load" -v div="$3" -v top="$4" -f "$build/funcs.awk" "$syms" "$1"
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }   # key=value out of a line on stdin
mark() { grep "^mark $2 " "$1" 2>/dev/null || true; }       # profile k
# The trigger line of the bench guest's loop for op: the one with the most exits whose first
# instructions match (the gicd and uart loops are the same code: first and second such loop).
bench_trigger() { # profile op
    local re
    case $2 in
    hvc) re='hvc #0' ;;
    timer) re='disas=wfi' ;;
    gicd | uart) re='disas=ldr w[0-9]+, \[x[0-9]+\]; subs x[0-9]+, x[0-9]+, #1; b\.ne' ;;
    esac
    # "first exits line" for the loops (at least 100 exits), then pick.
    { grep -E "^trigger .*$re" "$1" || true; } |
        awk '{ f = $0; sub(/.* first=/, "", f); sub(/ .*/, "", f)
               e = $0; sub(/.* exits=/, "", e); sub(/ .*/, "", e)
               if (e + 0 >= 100) print f, e, $0 }' |
        case $2 in
        gicd) sort -n -k1,1 | sed -n 1p ;;
        uart) sort -n -k1,1 | sed -n 2p ;;
        *) sort -rn -k2,2 | sed -n 1p ;;
        esac | cut -d' ' -f3-
}
avg() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b }'; }

breakdown=$out/breakdown.txt
: >"$breakdown"
if [ $profile -eq 1 ]; then
    for n in 1 2; do
        p=$profs/boot-direct-${n}cpu.txt
        put "boot.direct.${n}cpu.init_insns" "$(mark "$p" 0 | field guest_insns_approx)"
        put "boot.direct.${n}cpu.userland_insns" "$(mark "$p" 1 | field guest_insns_approx)"
        p=$profs/boot-kestrel-${n}cpu.txt
        [ -f "$p" ] || continue
        for k in 0 1; do
            m=$(mark "$p" $k)
            lbl=init
            [ $k = 1 ] && lbl=userland
            if [ -n "$m" ]; then
                put "boot.kestrel.${n}cpu.${lbl}_insns" \
                    $(($(echo "$m" | field hv_insns) + $(echo "$m" | field guest_insns_approx)))
                put "boot.kestrel.${n}cpu.${lbl}_hv_insns" "$(echo "$m" | field hv_insns)"
                put "boot.kestrel.${n}cpu.${lbl}_exits" "$(echo "$m" | field exits)"
            fi
        done
        none=$(grep '^trigger none ' "$p" || true)
        put "boot.kestrel.${n}cpu.startup_hv_insns" "$(echo "$none" | field hv_insns)"
        ncls=$(echo "$none" | field class)
        {
            echo "== Boot, kestrel, $n vCPU(s), up to the userland stamp: hypervisor start-up and VM build"
            echo "   (trigger none: each CPU's first stretch of hypervisor code), instructions per function"
            funcs "$p" "$ncls:1" 1 12
            echo "== Boot, kestrel, $n vCPU(s): hypervisor instructions in exits after that, per function"
            funcs "$p" "all:1,$ncls:-1" 1 12
            echo "== Boot, kestrel, $n vCPU(s): the guest code that caused the most hypervisor instructions"
            echo "   (guest TB address, exits, hypervisor instructions, per exit, first instructions)"
            { grep '^trigger 0x' "$p" || true; } |
                awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
                d = $0; sub(/.*disas=/, "", d)
                printf "%12d %20s %7d exits %10d insns %8.1f/exit  %.60s\n", v["hv_insns"], $2,
                    v["exits"], v["hv_insns"], v["hv_insns"] / v["exits"], d }' |
                sort -rn | sed -n 1,12p | cut -c14-
            echo
        } >>"$breakdown"
    done
    for gic in 3 2; do
        p=$profs/bench-kestrel-gic$gic.txt
        [ -f "$p" ] || continue
        for op in hvc gicd uart timer; do
            t=$(bench_trigger "$p" $op)
            [ -n "$t" ] || continue
            e=$(echo "$t" | field exits)
            put "prof.kestrel.gic$gic.$op.exits" "$e"
            put "prof.kestrel.gic$gic.$op.hv_insns_per_exit" "$(avg "$(echo "$t" | field hv_insns)" "$e")"
            put "prof.kestrel.gic$gic.$op.min" "$(echo "$t" | field min)"
            put "prof.kestrel.gic$gic.$op.max" "$(echo "$t" | field max)"
            {
                echo "== Exit path, GICv$gic, $op: kestrel instructions per exit, per function ($e exits;"
                echo "   trigger $(echo "$t" | awk '{ print $2 }'): $(echo "$t" | sed 's/.*disas=//' | cut -c1-70))"
                funcs "$p" "$(echo "$t" | field class):1" "$e" 12
                echo
            } >>"$breakdown"
        done
    done
fi

# --- summary ----------------------------------------------------------------------------------
get() { awk -v k="$1" '$1 == k { print $2 }' "$results"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.4f", b / a; else printf "-" }'; }
met() { # value limit -> yes/no
    awk -v v="$1" -v l="$2" 'BEGIN { if (v == "") print "-"; else print (v + 0 < l + 0) ? "yes" : "NO" }'
}
summary=$out/summary.txt
{
    echo "kestrel benchmarks: $(git -C "$repo" describe --always --dirty 2>/dev/null || echo '?')," \
        "$(qemu-system-aarch64 --version | sed -n 1p)"
    echo "-icount shift=0,sleep=off,align=off: 1 virtual ns = 1 instruction (virtual time also"
    echo "counts idle periods, which QEMU skips); details: docs/benchmarks.md"
    echo
    echo "Boot to /init (Debian cloud kernel, busybox initramfs, 512 MiB, GICv3); CNTVCT stamps from"
    echo "QEMU start; instructions: all CPUs, hypervisor included (plugin); direct = QEMU virt with"
    echo "the devices kestrel's guests have (QEMU's own device tree: last lines)"
    printf '%-5s %-8s %13s %13s %7s | %13s %13s %7s\n' vCPUs stamp "direct ns" "kestrel ns" ratio \
        "direct insns" "kestrel insn" ratio
    for n in 1 2; do
        for s in init userland; do
            d=$(get boot.direct.${n}cpu.${s}_ns) k=$(get boot.kestrel.${n}cpu.${s}_ns)
            di=$(get boot.direct.${n}cpu.${s}_insns) ki=$(get boot.kestrel.${n}cpu.${s}_insns)
            printf '%-5s %-8s %13s %13s %7s | %13s %13s %7s\n' "$n" "$s" "${d:--}" "${k:--}" \
                "$(ratio "$d" "$k")" "${di:--}" "${ki:--}" "$(ratio "$di" "$ki")"
        done
    done
    for n in 1 2; do
        d=$(get boot.qemudtb.${n}cpu.userland_ns) k=$(get boot.kestrel.${n}cpu.userland_ns)
        echo "$n vCPU(s), userland stamp, direct with QEMU's own device tree: ${d:--} ns;" \
            "kestrel/that: $(ratio "$d" "$k")"
    done
    for n in 1 2; do
        v=$(get boot.kestrel.${n}cpu.vm_start_ns) su=$(get boot.kestrel.${n}cpu.startup_hv_insns)
        hv=$(get boot.kestrel.${n}cpu.userland_hv_insns) ex=$(get boot.kestrel.${n}cpu.userland_exits)
        echo "kestrel, $n vCPU(s): VM started at ${v:--} ns; to the userland stamp: ${hv:--} hypervisor" \
            "instructions, ${su:--} of them start-up and VM build, ${ex:--} exits"
    done
    echo "targets: KVM (nested, same QEMU) 1.377x; goal <= 1.05x"
    echo
    echo "Exit costs: bench test guest, instructions per operation (ns_per_op); 'exit' = kestrel's"
    echo "instructions per exit counted by the plugin (min-max); direct = plain QEMU, nothing traps"
    printf '%-6s %-4s %9s %9s %22s %12s %7s %4s\n' op GIC direct kestrel "exit (min-max)" "KVM nested" goal met
    for gic in 3 2; do
        for op in hvc gicd uart timer; do
            d=$(get bench.direct.gic$gic.$op) k=$(get bench.kestrel.gic$gic.$op)
            if [ -z "$d$k" ]; then
                printf '%-6s v%-3s %9s\n' "$op" "$gic" "skipped (bench guest: GICv3 only)"
                continue
            fi
            pe=$(get prof.kestrel.gic$gic.$op.hv_insns_per_exit)
            ex="-"
            [ -n "$pe" ] && ex="$pe ($(get prof.kestrel.gic$gic.$op.min)-$(get prof.kestrel.gic$gic.$op.max))"
            case $op in
            hvc) kvm=1150-1600 goal=400 ;;
            gicd) kvm=~2000 goal=800 ;;
            uart) kvm=~7000 goal=800 ;;
            timer) kvm=~10000 goal=3000 ;;
            esac
            printf '%-6s v%-3s %9s %9s %22s %12s %7s %4s\n' "$op" "$gic" "${d:--}" "${k:--}" "$ex" \
                "$kvm" "<$goal" "$(met "$k" $goal)"
        done
    done
    echo
    if [ -s "$breakdown" ]; then
        echo "Where kestrel's instructions go: $breakdown"
        echo
    fi
    echo "Wall-clock seconds per run (noisy, indicative only):"
    awk '{ printf "  %-26s %6s\n", $1, $2 }' "$walls"
    [ $run -eq 1 ] && echo "  total (this run of bench.sh) $(($(date +%s) - t_start))"
    echo
    if [ -f "$out/results.prev.txt" ]; then
        if cmp -s "$out/results.prev.txt" "$results"; then
            echo "Determinism: all $(wc -l <"$results") figures identical to the previous run."
        else
            echo "Determinism: figures differ from the previous run (results.prev.txt):"
            { diff "$out/results.prev.txt" "$results" || true; } | sed -n "1,40s/^/  /p"
        fi
    else
        echo "Determinism: no previous run to compare with (run again)."
    fi
} >"$summary"
cat "$summary"

missing=0
for k in boot.{direct,kestrel}.{1,2}cpu.userland_ns bench.{direct,kestrel}.gic{2,3}.{hvc,gicd,uart} \
    bench.{direct,kestrel}.gic3.timer; do
    [ -n "$(get "$k")" ] || { log "missing figure: $k"; missing=1; }
done
exit $missing
