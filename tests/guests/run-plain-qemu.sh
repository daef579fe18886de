#!/usr/bin/env bash
# Boots each test guest directly under plain QEMU (EL1, no hypervisor; QEMU's own PSCI over
# HVC) and checks it reaches its last line. A check of the guests themselves, not of kestrel.
#
# Usage: tests/guests/run-plain-qemu.sh [IMAGEDIR]   (default: build into a temporary folder)
# Exit status: 0 when every guest passed. Logs go to $TMPDIR/tguests-plain.*/<name>.log.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
logs=$(mktemp -d "${TMPDIR:-/tmp}/tguests-plain.XXXXXX")
img=${1:-$logs/images}
[ $# -ge 1 ] || "$here/build.sh" "$img" >/dev/null
qemu() { # name gic smp append timeout [log-suffix]
    timeout "$5" qemu-system-aarch64 -machine "virt,gic-version=$2" -cpu cortex-a72 -smp "$3" \
        -m 512M -kernel "$img/$1.img" -nographic -append "$4" </dev/null \
        >"$logs/$1-gic$2-smp$3${6:-}.log" 2>&1
}
fail=0
check() { # description log regex
    if grep -aqE "$3" "$2"; then echo "ok   $1"; else echo "FAIL $1 (see $2)"; fail=1; fi
}
for gic in 3 2; do
    qemu memtest $gic 1 "" 30 || true
    check "memtest gicv$gic" "$logs/memtest-gic$gic-smp1.log" '^MEMTEST: ok '
    qemu checksum $gic 1 "checksum.rounds=2 checksum.limit=64M" 60 || true
    check "checksum gicv$gic" "$logs/checksum-gic$gic-smp1.log" '^CHECKSUM: stable 0x'
    qemu bench $gic 1 "bench.n=1000 bench.timer_n=100" 60 || true
    check "bench gicv$gic" "$logs/bench-gic$gic-smp1.log" '^BENCH: done'
    qemu hostile $gic 2 "hostile.hv=0x60000000 hostile.peer=0x70000000 hostile.flood=8192 hostile.spin_ms=100" 60 || true
    check "hostile gicv$gic smp2" "$logs/hostile-gic$gic-smp2.log" '^HOSTILE: done [0-9]+ actions'
    qemu irqs $gic 2 "irqs.rounds=10" 60 || true
    check "irqs gicv$gic smp2" "$logs/irqs-gic$gic-smp2.log" '^IRQS: done'
done
for l in "flood ok" "cpuoff spi-rerouted ok" "cpuoff pending-sgi ok" "cpuoff new-sgi ok"; do
    check "irqs gicv3 $l" "$logs/irqs-gic3-smp2.log" "^IRQS: $l"
done
check "irqs gicv2 skipped" "$logs/irqs-gic2-smp2.log" '^IRQS: skipped \(needs a GICv3'
check "bench gicv3 timer" "$logs/bench-gic3-smp1.log" '^BENCH: timer ticks_per_op='
check "bench gicv2 timer skipped" "$logs/bench-gic2-smp1.log" '^BENCH: timer skipped \(GICv2'
check "hostile secondary" "$logs/hostile-gic3-smp2.log" '^HOSTILE: wait for secondary 0x1: ok came up'
qemu checksum 3 1 "checksum.rounds=2 checksum.limit=16M checksum.selftest=2" 60 -selftest || true
check "checksum selftest detects a change" "$logs/checksum-gic3-smp1-selftest.log" '^CHECKSUM: CHANGED'
exit $fail
