#!/usr/bin/env bash
# Sets up what is missing, builds the default ramdisk and boots the hypervisor with a Linux
# guest under QEMU, leaving you at the guest's shell. Extra arguments go to qemu/run.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/setup.sh"
exec "$here/run.sh" "$@"
