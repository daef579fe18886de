#!/usr/bin/env bash
# Builds the hypervisor image: target/kestrel.bin (raw, with an arm64 Image header; also the
# Raspberry Pi 4's kernel8.img) from the ELF target/aarch64-unknown-none-softfloat/release/kestrel.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
cargo build --quiet --release --target aarch64-unknown-none-softfloat --bin kestrel
elf=target/aarch64-unknown-none-softfloat/release/kestrel
# KESTREL_OBJCOPY: another objcopy (tests/build_race.rs slows it down to provoke races).
objcopy=${KESTREL_OBJCOPY:-}
for c in "$(rustc --print sysroot)"/lib/rustlib/*/bin/llvm-objcopy \
    "$(rustc --print sysroot)"/lib/rustlib/*/bin/rust-objcopy; do
    [ -z "$objcopy" ] && [ -x "$c" ] && { objcopy=$c; break; }
done
[ -x "$objcopy" ] || { echo "build.sh: llvm-objcopy missing (rustup component llvm-tools)" >&2; exit 1; }
# Several builds may run at once (two qemu/run.sh): each converts into a file of its own and
# renames it over the image, so a reader sees the old image or a whole new one, never a half.
if [ ! -f target/kestrel.bin ] || [ "$elf" -nt target/kestrel.bin ]; then
    tmp=$(mktemp target/kestrel.bin.XXXXXX)
    trap 'rm -f "$tmp"' EXIT
    "$objcopy" -O binary "$elf" "$tmp"
    chmod 644 "$tmp"
    mv -f "$tmp" target/kestrel.bin
fi
