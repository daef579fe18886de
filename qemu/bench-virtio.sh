#!/usr/bin/env bash
# Deterministic benchmarks of kestrel's virtio devices (issue 11) under
# `-icount shift=0,sleep=off,align=off` (one virtual nanosecond per instruction, all CPUs
# counted): VM-to-VM TCP and ping over a kestrel switch beside the same over loopback in one
# guest on plain QEMU (the guest network stack's own cost), and dd of 64 MiB from a virtio
# disk (O_DIRECT) beside reading the same bytes from the guest's initramfs. Exits per
# operation come from the VMs' counters, minus a run that does everything but the measured
# work (the network run pings and connects as usual and sends 0 bytes).
# Figures and method: docs/benchmarks.md ("virtio").
#
#   qemu/bench-virtio.sh [--out DIR] [--timeout SECONDS] [--net-cpus N] [--no-run]
#
#   --out DIR     work folder (default target/bench-virtio): logs/, results.txt, summary.txt
#   --timeout S   per QEMU run (default 900)
#   --net-cpus N  host CPUs of the network runs (default 3: one per VM and a free one, which
#                 polls the transmit queues; 2: no free CPU, transmit on the sender's exit)
#   --no-run      analyse the logs of the last run only
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
HV_CACHE=${HV_CACHE:-$HOME/.cache/hv-aarch64}
export HV_CACHE

out=$repo/target/bench-virtio timeout=900 run=1 net_cpus=3
while [ $# -gt 0 ]; do
    case $1 in
    --out) out=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --net-cpus) net_cpus=$2; shift 2 ;;
    --no-run) run=0; shift ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "bench-virtio.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
logs=$out/logs build=$out/build
mkdir -p "$logs" "$build"
log() { echo "bench-virtio: $*" >&2; }
die() { log "error: $*"; exit 1; }

kernel=$HV_CACHE/Image-cloud
MIB=64

# --- guest scripts (appended to the guest initramfs as /guest-script) -------------------------
# Time stamps: CLOCK_MONOTONIC in ns from /proc/timer_list (busybox `date` has no %N); virtual
# ns under -icount. Every measured line starts "VBENCH: ".
read -r -d '' net_script <<'EOF' || true
arg() { for w in $(cat /proc/cmdline); do case $w in "$1="*) echo "${w#*=}"; return 0 ;; esac; done; return 1; }
role=$(arg bench.role)
peer=$(arg bench.peer)
mib=$(arg bench.mib)
ns() { sed -n 's/^now at \([0-9]*\) nsecs.*/\1/p; 3q' /proc/timer_list; }
case $role in
receiver)
    # The data listener first, then a probe listener the sender uses as a barrier.
    nc -l -p 5000 -e sh -c 'cat > /dev/null' &
    data=$!
    nc -l -p 5001 -e true
    echo "VBENCH: receiver ready"
    wait $data
    # Tell the sender everything arrived (it stops its clock then).
    until nc "$peer" 5002 -e true 2>/dev/null; do sleep 0.01; done
    echo "VBENCH: received"
    echo "VBENCH: rx-if $(cd /sys/class/net/eth0/statistics && for f in rx_packets rx_dropped rx_errors rx_length_errors rx_over_errors rx_missed_errors; do printf '%s=%s ' $f "$(cat $f)"; done)"
    awk '/^TcpExt:/ { if (!h) { for (i = 2; i <= NF; i++) k[i] = $i; h = 1 } else { o = ""; for (i = 2; i <= NF; i++) if ($i != 0 && k[i] ~ /Drop|Prune|OFO|Collapse|Backlog|Csum|Zero/) o = o " " k[i] "=" $i; print "VBENCH: rx-tcpext" o } }' /proc/net/netstat
    echo "VBENCH: softnet $(head -1 /proc/net/softnet_stat)"
    awk '/^Tcp:/ { if (!h) { for (i = 1; i <= NF; i++) n[$i] = i; h = 1 } else print "VBENCH: rx-tcp-stats inerrs=" $n["InErrs"] " incsumerrors=" $n["InCsumErrors"] " insegs=" $n["InSegs"] }' /proc/net/snmp
    exit 0
    ;;
loopback)
    (nc -l -p 5000 -e sh -c 'cat > /dev/null'; until nc 127.0.0.1 5002 -e true; do sleep 0.01; done) &
    nc -l -p 5001 -e true &
    ;;
esac
dd if=/dev/zero of=/tmp/data bs=1M count="$mib" 2>/dev/null
n=0
until nc "$peer" 5001 -e true 2>/dev/null; do
    n=$((n + 1))
    [ $n -lt 600 ] || break
    sleep 0.1
done
echo "VBENCH: barrier after $n tries"
# The run that skips the measured work does everything else (ping, connections, the lines
# printed) and sends 0 bytes, so that exits minus its exits are the transfer's.
count=
[ "$(arg bench.skip)" = 1 ] && count=count=0 mib=0
ping -c 20 -i 0.2 "$peer" | sed -n 's/.*round-trip.*= \([0-9.]*\)\/\([0-9.]*\)\/\([0-9.]*\) ms.*/VBENCH: rtt_ms min=\1 avg=\2 max=\3/p'
bs=$(arg bench.bs)
# The clock stops when the receiver says it has everything (a connection to port 5002).
nc -l -p 5002 -e true &
done=$!
t0=$(ns)
nc "$peer" 5000 -e dd if=/tmp/data bs="$bs" $count 2>/dev/null
wait $done
t1=$(ns)
echo "VBENCH: tcp bytes=$((mib << 20)) ns=$((t1 - t0))"
awk '/^Tcp:/ { if (!h) { for (i = 1; i <= NF; i++) n[$i] = i; h = 1 } else print "VBENCH: tcp-stats retrans=" $n["RetransSegs"] " outsegs=" $n["OutSegs"] }' /proc/net/snmp
awk '/^TcpExt:/ { if (!h) { for (i = 2; i <= NF; i++) k[i] = $i; h = 1 } else { o = ""; for (i = 2; i <= NF; i++) if ($i != 0 && k[i] ~ /Retrans|Timeout|Loss|Spurious|Recovery|Reorder|SACK/) o = o " " k[i] "=" $i; print "VBENCH: tcpext" o } }' /proc/net/netstat
EOF

read -r -d '' blk_script <<'EOF' || true
arg() { for w in $(cat /proc/cmdline); do case $w in "$1="*) echo "${w#*=}"; return 0 ;; esac; done; return 1; }
mib=$(arg bench.mib)
ns() { sed -n 's/^now at \([0-9]*\) nsecs.*/\1/p; 3q' /proc/timer_list; }
n=0
while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
[ "$(arg bench.skip)" = 1 ] && exit 0
# Warm nothing: O_DIRECT reads bypass the page cache; the initramfs file is in RAM already.
t0=$(ns)
dd if=/dev/vda of=/dev/null bs=1M count="$mib" iflag=direct 2>/dev/null
t1=$(ns)
dd if=/data.img of=/dev/null bs=1M count="$mib" 2>/dev/null
t2=$(ns)
echo "VBENCH: vda_direct bytes=$((mib << 20)) ns=$((t1 - t0))"
echo "VBENCH: initramfs bytes=$((mib << 20)) ns=$((t2 - t1))"
EOF

# --- builds -----------------------------------------------------------------------------------
# A cpio (newc) holding FILE(s) from DIR, uncompressed, appended after the gzip initramfs at a
# 4-byte aligned offset.
append_cpio() { # base-initramfs out dir files...
    local base=$1 dst=$2 dir=$3
    shift 3
    cp "$base" "$dst"
    local pad=$(((4 - $(stat -c %s "$dst") % 4) % 4))
    head -c "$pad" /dev/zero >>"$dst"
    (cd "$dir" && printf '%s\n' "$@" | cpio --quiet -o -H newc --reproducible --owner=0:0) >>"$dst"
}

build_all() {
    "$here/build.sh"
    [ -f "$kernel" ] || "$here/guest-material.sh"
    "$here/build-guest-initramfs.sh" --kernel "$kernel" "$build/initramfs.cpio.gz" 2>/dev/null
    local s=$build/stage
    rm -rf "$s"
    mkdir -p "$s/net" "$s/blk"
    printf '%s\n' "$net_script" >"$s/net/guest-script"
    printf '%s\n' "$blk_script" >"$s/blk/guest-script"
    head -c "$((MIB << 20))" /dev/zero | tr '\0' 'k' >"$s/blk/data.img"
    touch -h -d @0 "$s"/net/* "$s"/blk/*
    append_cpio "$build/initramfs.cpio.gz" "$build/net-initrd" "$s/net" guest-script
    append_cpio "$build/initramfs.cpio.gz" "$build/blk-initrd" "$s/blk" guest-script data.img

    # Network: the transfer written with dd bs=1M and bs=64k, and a run that skips the measured
    # work (for the exit counts); the disk: measured and skipped.
    local variant
    for variant in 1M 64k skip; do
        local v=$build/net-$variant skip=0 bs=$variant
        [ $variant = skip ] && skip=1 bs=1M
        rm -rf "$v"
        for i in 1 2; do
            local d=$v/vm$i role=sender peer=10.0.0.2
            [ $i -eq 2 ] && role=receiver peer=10.0.0.1
            mkdir -p "$d"
            ln -s "$kernel" "$d/Image"
            ln -s "$build/net-initrd" "$d/initramfs.cpio.gz"
            cat >"$d/vm.toml" <<TOML
kernel = "Image"
initrd = "initramfs.cpio.gz"
memory = "512M"
cpus = 1
bootargs = "console=ttyAMA0 guest.test=1 guest.ip=10.0.0.$i/24 bench.role=$role bench.peer=$peer bench.mib=$MIB bench.bs=$bs bench.skip=$skip"

[[net]]
switch = "lan0"
TOML
        done
        "$here/mkramdisk.sh" "$build/net-$variant.cpio" "$v/vm1" "$v/vm2" 2>/dev/null
    done
    local skip
    for skip in 0 1; do
        v=$build/blk-$skip
        rm -rf "$v"
        mkdir -p "$v/disk"
        ln -s "$kernel" "$v/disk/Image"
        ln -s "$build/blk-initrd" "$v/disk/initramfs.cpio.gz"
        ln -s "$s/blk/data.img" "$v/disk/data.img"
        cat >"$v/disk/vm.toml" <<TOML
kernel = "Image"
initrd = "initramfs.cpio.gz"
memory = "512M"
cpus = 1
bootargs = "console=ttyAMA0 guest.test=1 bench.mib=$MIB bench.skip=$skip"

[[disks]]
file = "data.img"
readonly = true
TOML
        "$here/mkramdisk.sh" "$build/blk-$skip.cpio" "$v/disk" 2>/dev/null
    done
}

icount=(-icount shift=0,sleep=off,align=off -rtc base=2020-01-01T00:00:00,clock=vm)
hv_run() { # name ramdisk cpus
    log "run $1"
    "$here/run.sh" --no-build --icount --gic 3 --cpus "$3" --mem 2G --ramdisk "$2" \
        --timeout "$timeout" --log "$logs/$1.log" </dev/null >/dev/null 2>&1 ||
        log "warning: $1: qemu/run.sh exited $? (see $logs/$1.log)"
}
direct_run() { # name initrd append
    log "run $1"
    timeout "$timeout" qemu-system-aarch64 -machine virt,gic-version=3,dtb-randomness=off \
        -cpu cortex-a72 -smp 1 -m 512M "${icount[@]}" -nic none -display none -monitor none \
        -serial stdio -kernel "$kernel" -initrd "$2" -append "$3" </dev/null >"$logs/$1.log" 2>&1 ||
        log "warning: $1: QEMU exited $? (see $logs/$1.log)"
}

if [ $run -eq 1 ]; then
    build_all
    for variant in 1M 64k skip; do
        hv_run "net-kestrel-$variant" "$build/net-$variant.cpio" "$net_cpus"
    done
    for skip in 0 1; do
        hv_run "blk-kestrel-$skip" "$build/blk-$skip.cpio" 1
    done
    for bs in 1M 64k; do
        direct_run "net-loopback-$bs" "$build/net-initrd" \
            "console=ttyAMA0 guest.test=1 bench.role=loopback bench.peer=127.0.0.1 bench.mib=$MIB bench.bs=$bs"
    done
fi

# --- analysis ---------------------------------------------------------------------------------
# vbench LOG KEY FIELD -> value of FIELD= on the first "VBENCH: KEY ..." line
vbench() {
    { grep -a "VBENCH: $2 " "$1" 2>/dev/null || true; } | sed -n 1p | tr ' \r' '\n\n' |
        sed -n "s/^$3=//p"
}
# counter LOG VM KEY INDEX -> the INDEX-th (0-based) value of counter KEY of VM's counters line
counter() {
    { grep -a "kestrel: vm $2: counters:" "$1" 2>/dev/null || true; } | sed -n 1p |
        tr -d '\r' | tr ' ;' '\n\n' | awk -F= -v k="$3" -v i="$4" '
            index($1, k) == 1 { n = split($2, v, "/"); if (i < n) print v[i + 1]; exit }'
}
exits() { # LOG VM -> every exit counted on the counters line
    local t=0 k v
    for k in hvc smc ram-fault mmio iabt sysreg irq undef; do
        v=$(counter "$1" "$2" "$k" 0)
        t=$((t + ${v:-0}))
    done
    echo $t
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.3f", a / b }'; }
per() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.0f", a / b }'; }

res=$out/results.txt
sum=$out/summary.txt
L=$logs
{
    for bs in 1M 64k; do
        tcp_ns=$(vbench "$L/net-kestrel-$bs.log" tcp ns)
        lo_ns=$(vbench "$L/net-loopback-$bs.log" tcp ns)
        echo "tcp_${bs}_vm_to_vm_ns_per_mib $(per "${tcp_ns:-0}" $MIB)"
        echo "tcp_${bs}_loopback_direct_ns_per_mib $(per "${lo_ns:-0}" $MIB)"
        echo "tcp_${bs}_throughput_vm_to_vm_over_loopback $(ratio "${lo_ns:-0}" "${tcp_ns:-0}")"
        rtt=$(vbench "$L/net-kestrel-$bs.log" rtt_ms avg)
        lo_rtt=$(vbench "$L/net-loopback-$bs.log" rtt_ms avg)
        echo "ping_${bs}_rtt_vm_to_vm_ns $(awk -v r="${rtt:-0}" 'BEGIN { printf "%.0f", r * 1e6 }')"
        echo "ping_${bs}_rtt_loopback_direct_ns $(awk -v r="${lo_rtt:-0}" 'BEGIN { printf "%.0f", r * 1e6 }')"
        for vm in vm1 vm2; do
            i=0
            for f in txf txB rxf rxB rxdrop txdrop offdrop notify irq isr ack; do
                a=$(counter "$L/net-kestrel-$bs.log" "$vm" "net0(" $i)
                b=$(counter "$L/net-kestrel-skip.log" "$vm" "net0(" $i)
                echo "net_${bs}_${vm}_$f $((${a:-0} - ${b:-0}))"
                i=$((i + 1))
            done
            echo "net_${bs}_${vm}_exits $(($(exits "$L/net-kestrel-$bs.log" "$vm") - $(exits "$L/net-kestrel-skip.log" "$vm")))"
            for k in mmio irq; do
                a=$(counter "$L/net-kestrel-$bs.log" "$vm" "$k" 0)
                b=$(counter "$L/net-kestrel-skip.log" "$vm" "$k" 0)
                echo "net_${bs}_${vm}_exits_$k $((${a:-0} - ${b:-0}))"
            done
        done
    done
    vda=$(vbench "$L/blk-kestrel-0.log" vda_direct ns)
    ird=$(vbench "$L/blk-kestrel-0.log" initramfs ns)
    echo "dd_vda_direct_ns_per_mib $(per "${vda:-0}" $MIB)"
    echo "dd_initramfs_ns_per_mib $(per "${ird:-0}" $MIB)"
    echo "dd_vda_over_initramfs $(ratio "${vda:-0}" "${ird:-0}")"
    i=0
    for f in rd wr flush rdB wrB err notify irq isr ack; do
        a=$(counter "$L/blk-kestrel-0.log" disk "disk0(" $i)
        b=$(counter "$L/blk-kestrel-1.log" disk "disk0(" $i)
        echo "blk_$f $((${a:-0} - ${b:-0}))"
        i=$((i + 1))
    done
    echo "blk_exits $(($(exits "$L/blk-kestrel-0.log" disk) - $(exits "$L/blk-kestrel-1.log" disk)))"
} >"$res"
get() { sed -n "s/^$1 //p" "$res"; }
{
    echo "kestrel virtio benchmarks: $(git -C "$repo" describe --always --dirty 2>/dev/null), $(qemu-system-aarch64 --version | head -1)"
    echo "-icount shift=0,sleep=off,align=off: 1 virtual ns = 1 instruction, all CPUs (docs/benchmarks.md); network runs on $net_cpus host CPUs"
    echo
    printf '%-52s %12s %12s %8s\n' measurement kestrel "direct" ratio
    for bs in 1M 64k; do
        printf '%-52s %12s %12s %8s\n' "TCP 64 MiB (dd bs=$bs), ns per MiB: VM to VM | loopback" \
            "$(get tcp_${bs}_vm_to_vm_ns_per_mib)" "$(get tcp_${bs}_loopback_direct_ns_per_mib)" \
            "$(get tcp_${bs}_throughput_vm_to_vm_over_loopback)"
    done
    printf '%-52s %12s %12s\n' "ping round trip, ns: VM to VM | loopback" "$(get ping_1M_rtt_vm_to_vm_ns)" \
        "$(get ping_1M_rtt_loopback_direct_ns)"
    printf '%-52s %12s %12s %8s\n' "read 64 MiB, ns per MiB: vda O_DIRECT | initramfs" \
        "$(get dd_vda_direct_ns_per_mib)" "$(get dd_initramfs_ns_per_mib)" "$(get dd_vda_over_initramfs)"
    for bs in 1M 64k; do
        echo
        s_tx=$(get net_${bs}_vm1_txB)
        echo "bs=$bs sender (vm1), the 64 MiB transfer (minus a run sending 0 bytes): $(get net_${bs}_vm1_txf) frames, $s_tx bytes sent; QueueNotify exits $(get net_${bs}_vm1_notify), interrupts $(get net_${bs}_vm1_irq), all exits $(get net_${bs}_vm1_exits) (mmio $(get net_${bs}_vm1_exits_mmio), irq $(get net_${bs}_vm1_exits_irq))"
        echo "  per 64 KiB sent: QueueNotify exits $(ratio "$(get net_${bs}_vm1_notify)" "$(per "${s_tx:-0}" 65536)"), all exits $(ratio "$(get net_${bs}_vm1_exits)" "$(per "${s_tx:-0}" 65536)")"
        echo "bs=$bs receiver (vm2): $(get net_${bs}_vm2_rxf) frames, $(get net_${bs}_vm2_rxB) bytes received, rx drops $(get net_${bs}_vm2_rxdrop); QueueNotify exits $(get net_${bs}_vm2_notify), interrupts $(get net_${bs}_vm2_irq), all exits $(get net_${bs}_vm2_exits) (mmio $(get net_${bs}_vm2_exits_mmio), irq $(get net_${bs}_vm2_exits_irq))"
    done
    echo
    echo "disk: $(get blk_rd) reads, $(get blk_rdB) bytes; QueueNotify exits $(get blk_notify), interrupts $(get blk_irq), all exits $(get blk_exits); exits per MiB $(ratio "$(get blk_exits)" $MIB)"
} >"$sum"
cat "$sum"
