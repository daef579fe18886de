#!/usr/bin/env bash
# Runs every test: set-up (idempotent), formatting and lints for the host and the bare-metal
# target, host unit and property tests, and the QEMU integration tests in tests/.
#   qemu/test.sh [--quick]    (--quick: host tests only, no QEMU boots)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
quick=0
[ "${1:-}" = "--quick" ] && quick=1

step() { echo; echo "==> $*"; }

step "set-up"
qemu/setup.sh

step "cargo fmt --check"
cargo fmt --check

step "clippy (host, all targets)"
cargo clippy --quiet --all-targets -- -D warnings

step "clippy (aarch64-unknown-none-softfloat)"
cargo clippy --quiet --target aarch64-unknown-none-softfloat --lib --bin kestrel -- -D warnings

step "build the hypervisor image"
qemu/build.sh
ls -l target/kestrel.bin

if [ $quick -eq 1 ]; then
    step "host tests"
    cargo test --quiet --lib
    exit 0
fi

step "host unit, property and QEMU integration tests"
cargo test --quiet --no-fail-fast -- --test-threads=2
echo
echo "all tests passed"
