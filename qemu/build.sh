#!/usr/bin/env bash
# Builds the hypervisor image: target/kestrel.bin (raw, with an arm64 Image header; also the
# Raspberry Pi 4's kernel8.img) from the ELF target/aarch64-unknown-none-softfloat/release/kestrel.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
cargo build --quiet --release --target aarch64-unknown-none-softfloat --bin kestrel
elf=target/aarch64-unknown-none-softfloat/release/kestrel
objcopy=""
for c in "$(rustc --print sysroot)"/lib/rustlib/*/bin/llvm-objcopy \
    "$(rustc --print sysroot)"/lib/rustlib/*/bin/rust-objcopy; do
    [ -x "$c" ] && { objcopy=$c; break; }
done
[ -x "$objcopy" ] || { echo "build.sh: llvm-objcopy missing (rustup component llvm-tools)" >&2; exit 1; }
if [ ! -f target/kestrel.bin ] || [ "$elf" -nt target/kestrel.bin ]; then
    "$objcopy" -O binary "$elf" target/kestrel.bin.tmp
    mv target/kestrel.bin.tmp target/kestrel.bin
fi
