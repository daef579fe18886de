#!/usr/bin/env bash
# Sets up what is missing, builds the default ramdisk (one Debian arm64 Linux VM with a busybox
# shell) and boots the hypervisor with it under QEMU virt, leaving you at the guest's shell.
#
#   qemu/boot-linux.sh [--cpus N] [--memory SIZE] [--vms N] [-- run.sh options...]
#
# --cpus / --memory / --vms configure the guest(s) (default: 2 vCPUs, 512M, 1 VM); options after
# `--` go to qemu/run.sh (e.g. `-- --gic 2 --mem 4G`). With --vms 2 or more, every VM has a
# virtio-net port on switch lan0 and an address: linux is 10.0.0.1, linux2 10.0.0.2, ... so
# `ping 10.0.0.2` in the first VM's shell reaches the second. Console keys: Ctrl-A 1..9 or Ctrl-A n
# switch the keyboard between VMs, Ctrl-A d dumps the hypervisor's state, Ctrl-A h prints help;
# `poweroff -f` in a guest ends that VM, and the machine powers off when the last VM is gone.
# Ctrl-C ends QEMU.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cpus=2 memory=512M vms=1
while [ $# -gt 0 ]; do
    case "$1" in
        --cpus) cpus=$2; shift 2 ;;
        --memory) memory=$2; shift 2 ;;
        --vms) vms=$2; shift 2 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) break ;;
    esac
done
"$here/setup.sh"
mkdir -p "$repo/target"
rd="$repo/target/default-ramdisk.cpio"
net=()
[ "$vms" -lt 2 ] || net=(--net lan0)
"$here/build-default-ramdisk.sh" --cpus "$cpus" --memory "$memory" --vms "$vms" "${net[@]}" "$rd" >&2
exec "$here/run.sh" --cpus 4 --mem 4G --ramdisk "$rd" "$@"
