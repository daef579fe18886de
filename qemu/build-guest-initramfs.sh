#!/usr/bin/env bash
# Builds the guest initramfs: busybox-static, the kernel's virtio drivers (as modules) and an
# /init that prints lines test scripts can rely on, sets up virtio devices, then powers off
# (kernel command line has guest.test=1) or starts a shell on the console.
#
# Usage: qemu/build-guest-initramfs.sh [--kernel IMAGE | --modules DIR] OUT
#
#   --kernel IMAGE  the kernel the initramfs is for (default $HV_CACHE/Image-cloud): its
#                   version string picks the modules, $HV_CACHE/modules/<version>
#                   (qemu/guest-material.sh links them there for the Debian kernels it fetches)
#   --modules DIR   the kernel's module tree (a lib/modules/<version> folder) instead
#
# busybox comes from $HV_CACHE/busybox (qemu/guest-material.sh fetches it; run here if missing).
# The modules are virtio_mmio, virtio_net, virtio_blk and ext4, each with the modules it depends
# on (their `depends=` field), in load order, those the kernel has built in left out (for the
# Debian cloud kernel: virtio_ring virtio virtio_mmio failover net_failover virtio_net
# virtio_blk). A kernel without a module tree gets an initramfs without modules (a warning).
# The result is a gzip-compressed newc cpio, cached in $HV_CACHE/initramfs/ by the content of
# busybox, the modules and /init, and copied to OUT.
#
# What /init does, in order (docs/virtio.md, "The guest side"):
#   GUEST: userland reached
#   GUEST: nproc=<online CPUs>
#   GUEST: memtotal_kb=<MemTotal from /proc/meminfo>
#   when the device tree has virtio,mmio nodes: insmod the modules, then
#   GUEST: virtio modules loaded: <names>        (or GUEST: insmod <name> failed)
#   lo up; with guest.ip=ADDR/PREFIX on the command line, eth0 up with that address:
#   GUEST: eth0 <ADDR/PREFIX> mac <MAC>
#   with root=DEV on the command line: mount DEV (read-write with `rw`, else read-only; type
#   rootfstype=, default ext4) on /newroot and switch_root to init= (default /sbin/init):
#   GUEST: root <DEV> mounted <rw|ro>, starting <init>
#   with a file /guest-script (e.g. added as a second cpio archive after this one): runs it
#   with sh, then GUEST: script exit=<status>; otherwise the check:
#   GUEST: checksum=<sha256 of `seq 1 1000000`>   (expected: see GUEST_CHECKSUM below)
#   GUEST: powering off                            (guest.test=1), then poweroff -f
#   GUEST: shell                                   (otherwise), then a shell on the console
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
HV_CACHE=${HV_CACHE:-$HOME/.cache/hv-aarch64}
log() { echo "build-guest-initramfs: $*" >&2; }
die() { log "error: $*"; exit 1; }

kernel=$HV_CACHE/Image-cloud
moddir=
while [ $# -gt 0 ]; do
    case $1 in
    --kernel) [ $# -ge 2 ] || die "--kernel needs a value"; kernel=$2; shift 2 ;;
    --modules) [ $# -ge 2 ] || die "--modules needs a value"; moddir=$2; shift 2 ;;
    -h | --help) sed -n '2,40p' "$0"; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) break ;;
    esac
done
[ $# -eq 1 ] || die "usage: $0 [--kernel IMAGE | --modules DIR] OUT"
out=$1

# The sha256 of the 6888896 bytes `seq 1 1000000` writes; the guest recomputes it in RAM.
GUEST_CHECKSUM=90433fcbd9e16297e6a7c1dacb1056394743194776e52f78ebf0a44b80b6b14f

busybox=$HV_CACHE/busybox
if [ ! -f "$busybox" ]; then
    log "no $busybox: running qemu/guest-material.sh"
    "$here/guest-material.sh"
fi
[ -f "$busybox" ] || die "$busybox is missing"

# The kernel's release string (what `uname -r` prints in the guest) from its Image (plain or
# gzip-compressed).
kernel_release() { # image
    { gzip -dc "$1" 2>/dev/null || cat "$1"; } | grep -ao 'Linux version [^ ]*' | head -1 |
        cut -d' ' -f3
}
if [ -z "$moddir" ]; then
    if [ ! -f "$kernel" ] && [ "$kernel" = "$HV_CACHE/Image-cloud" ]; then
        log "no $kernel: running qemu/guest-material.sh"
        "$here/guest-material.sh"
    fi
    [ -f "$kernel" ] || die "kernel $kernel is missing"
    release=$(kernel_release "$kernel")
    [ -n "$release" ] || die "$kernel: no 'Linux version' string (is it an arm64 Image?)"
    moddir=$HV_CACHE/modules/$release
    if [ ! -d "$moddir" ]; then
        case $kernel in
        "$HV_CACHE"/Image-*) "$here/guest-material.sh" ;;
        esac
    fi
    if [ ! -d "$moddir" ]; then
        log "warning: no modules for kernel $release ($moddir): the guest gets no virtio drivers"
        moddir=
    fi
fi
release=
[ -z "$moddir" ] || release=$(basename "$(cd "$moddir" && pwd -P)")

# The modules to load, dependencies first: "name path" lines. A module the kernel has built in
# (modules.builtin) is left out; one that is neither is an error.
declare -A mod_path=() mod_done=()
mod_order=()
if [ -n "$moddir" ]; then
    while IFS= read -r -d '' f; do
        n=$(basename "$f" .ko)
        mod_path[${n//-/_}]=$f
    done < <(find -L "$moddir/kernel" -name '*.ko' -print0)
fi
builtin() { # name
    [ -f "$moddir/modules.builtin" ] &&
        sed 's|.*/||; s|\.ko$||; s|-|_|g' "$moddir/modules.builtin" | grep -qx "$1"
}
add_module() { # name
    local n=${1//-/_} dep deps
    [ -z "${mod_done[$n]:-}" ] || return 0
    mod_done[$n]=1
    if [ -z "${mod_path[$n]:-}" ]; then
        builtin "$n" || die "kernel $release has no module $n and does not have it built in"
        return 0
    fi
    deps=$(tr '\0' '\n' <"${mod_path[$n]}" | sed -n 's/^depends=//p' | head -1)
    for dep in ${deps//,/ }; do
        add_module "$dep"
    done
    mod_order+=("$n")
}
if [ -n "$moddir" ]; then
    for m in virtio_mmio virtio_net virtio_blk ext4; do
        add_module "$m"
    done
fi
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
cmdline=" $(cat /proc/cmdline) "
# The value of KEY=VALUE on the kernel command line (false when absent).
arg() {
    for w in $cmdline; do
        case $w in "$1="*) echo "${w#*=}"; return 0 ;; esac
    done
    return 1
}
# The virtio drivers, when the device tree has virtio-mmio transports.
if ls /sys/firmware/devicetree/base 2>/dev/null | grep -q '^virtio_mmio@'; then
    moddir=/lib/modules/$(uname -r)
    if [ -f "$moddir/load-order" ]; then
        loaded=
        for m in $(cat "$moddir/load-order"); do
            if insmod "$moddir/$m.ko"; then
                loaded="$loaded $m"
            else
                echo "GUEST: insmod $m failed"
            fi
        done
        echo "GUEST: virtio modules loaded:$loaded"
    else
        echo "GUEST: no modules for kernel $(uname -r) in this initramfs"
    fi
fi
ip link set lo up
if addr=$(arg guest.ip); then
    n=0
    while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
    if ip link set eth0 up && ip addr add "$addr" dev eth0; then
        echo "GUEST: eth0 $addr mac $(cat /sys/class/net/eth0/address)"
    else
        echo "GUEST: eth0 set-up failed"
    fi
fi
if root=$(arg root); then
    n=0
    while [ ! -b "$root" ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
    mode=ro
    case $cmdline in *" rw "*) mode=rw ;; esac
    fstype=$(arg rootfstype) || fstype=ext4
    newinit=$(arg init) || newinit=/sbin/init
    mkdir -p /newroot
    if mount -t "$fstype" -o "$mode" "$root" /newroot; then
        echo "GUEST: root $root mounted $mode, starting $newinit"
        for d in dev proc sys; do
            if [ -d "/newroot/$d" ]; then mount --move "/$d" "/newroot/$d"; else umount "/$d"; fi
        done
        exec switch_root /newroot "$newinit"
    fi
    echo "GUEST: mounting root $root failed"
fi
if [ -f /guest-script ]; then
    sh /guest-script
    echo "GUEST: script exit=$?"
else
    # A few MiB generated in RAM (the root is a tmpfs), then hashed.
    seq 1 1000000 > /tmp/data
    sum=$(sha256sum /tmp/data)
    rm -f /tmp/data
    echo "GUEST: checksum=${sum%% *}"
fi
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

key=$( {
    sha256sum <"$busybox"
    printf '%s' "$init_script" | sha256sum
    echo "$release ${mod_order[*]}"
    for m in "${mod_order[@]}"; do sha256sum <"${mod_path[$m]}"; done
} | sha256sum | cut -c1-16)
cached=$HV_CACHE/initramfs/initramfs-$key.cpio.gz
if [ ! -f "$cached" ]; then
    mkdir -p "$HV_CACHE/initramfs"
    stage=$(mktemp -d)
    trap 'rm -rf "$stage"' EXIT
    mkdir -p "$stage"/{bin,dev,proc,sys,tmp,root}
    cp "$busybox" "$stage/bin/busybox"
    chmod 755 "$stage/bin/busybox"
    printf '%s\n' "$init_script" >"$stage/init"
    if [ ${#mod_order[@]} -gt 0 ]; then
        mkdir -p "$stage/lib/modules/$release"
        for m in "${mod_order[@]}"; do
            cp "${mod_path[$m]}" "$stage/lib/modules/$release/$m.ko"
        done
        printf '%s\n' "${mod_order[@]}" >"$stage/lib/modules/$release/load-order"
    fi
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
log "ok: $out (kernel ${release:-?}, modules: ${mod_order[*]:-none}; expected GUEST: checksum=$GUEST_CHECKSUM)"
