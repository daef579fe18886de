#!/usr/bin/env bash
# Runs every test: set-up (idempotent), formatting and lints for the host and the bare-metal
# target, host unit and property tests, the QEMU integration tests in tests/, kvm-unit-tests on
# GICv3 and GICv2 (qemu/kvm-unit-tests.sh), and every fuzzer for a minute.
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

# Property tests are seeded from .cargo/config.toml (the same cases every run) unless the
# environment says otherwise; qemu/soak.sh runs them with random seeds and many more cases.
proptest_seed=${PROPTEST_RNG_SEED:-$(sed -n 's/^PROPTEST_RNG_SEED = "\(.*\)"$/\1/p' .cargo/config.toml)}

if [ $quick -eq 1 ]; then
    step "host tests (PROPTEST_RNG_SEED=$proptest_seed)"
    cargo test --quiet --lib
    exit 0
fi

step "host unit, property (PROPTEST_RNG_SEED=$proptest_seed) and QEMU integration tests"
cargo test --quiet --no-fail-fast -- --test-threads=2

# KVM's own conformance suite, each test a kestrel guest, on both GIC versions. Run alone (not
# beside the cargo tests): the timer test checks a wall-clock latency bound.
step "kvm-unit-tests (qemu/kvm-unit-tests.sh, GICv3 and GICv2)"
kut_ok=1
qemu/kvm-unit-tests.sh --no-build --gic 3 || kut_ok=0
qemu/kvm-unit-tests.sh --no-build --gic 2 || kut_ok=0
[ $kut_ok -eq 1 ] || { echo "kvm-unit-tests failed (see above)"; exit 1; }

# Every fuzzer for 60 s (FUZZ_SECONDS overrides), in two parallel halves on this 2-core budget,
# from a fixed libFuzzer seed (FUZZ_SEED overrides; 0 = random) so that CI explores the same
# inputs each run; new inputs come from local and soak runs with random seeds (docs/fuzzing.md).
fuzz_seed=${FUZZ_SEED:-1}
step "fuzzers (qemu/fuzz.sh, ${FUZZ_SECONDS:-60} s each, seed $fuzz_seed)"
mapfile -t targets < <(qemu/fuzz.sh --list)
half=$(( (${#targets[@]} + 1) / 2 ))
qemu/fuzz.sh --time "${FUZZ_SECONDS:-60}" --seed "$fuzz_seed" "${targets[@]:0:$half}" &
first=$!
qemu/fuzz.sh --time "${FUZZ_SECONDS:-60}" --seed "$fuzz_seed" "${targets[@]:$half}" &
second=$!
fuzz_ok=1
wait $first || fuzz_ok=0
wait $second || fuzz_ok=0
[ $fuzz_ok -eq 1 ] || { echo "a fuzzer failed (see above)"; exit 1; }
echo
echo "all tests passed"
