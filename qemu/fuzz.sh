#!/usr/bin/env bash
# Builds and runs the cargo-fuzz (libFuzzer) targets of fuzz/ on the host, each for a fixed
# time, starting from its committed seed corpus. Exits non-zero if any target crashed, hung
# (an input slower than --timeout) or ran out of memory, and prints the crash input's path.
#
# Usage: qemu/fuzz.sh [--time SECONDS] [--timeout SECONDS] [--seed N] [--list] [TARGET...]
#   --time      seconds per target (default 60)
#   --seed      libFuzzer's random seed (default 0: a new one each run, which libFuzzer prints
#               as "Seed:"); CI passes a fixed one so that its runs explore the same inputs
#   --timeout   seconds one input may take before it counts as a hang (default 10)
#   --list      print the targets and exit
#   TARGET...   targets to run (default: all of fuzz/fuzz_targets/*.rs, in alphabetical order)
#
# Toolchain: the repository's own stable toolchain (rust-toolchain.toml) with
# RUSTC_BOOTSTRAP=1, which lets stable rustc accept the -Z flags cargo-fuzz passes
# (-Zsanitizer=address and the libFuzzer instrumentation); stable's rust-std ships the ASan
# runtime. So nothing beyond rustup's stable toolchain and crates.io is needed: the script
# installs cargo-fuzz with `cargo install` when it is missing (idempotent).
#
# New inputs libFuzzer finds go to fuzz/corpus-work/<target>/ (gitignored, kept between runs,
# so repeated local runs build on each other); fuzz/corpus/<target>/ is only read. Crash
# inputs go to fuzz/artifacts/<target>/ (gitignored); copy each one to
# tests/fixtures/fuzz/<target>/ and list it in tests/fuzz_regressions.rs (docs/fuzzing.md).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

CARGO_FUZZ_VERSION=0.13.2
time_per_target=60
timeout=10
seed=0
list=0
targets=()
while [ $# -gt 0 ]; do
    case $1 in
    --time) time_per_target=$2; shift 2 ;;
    --time=*) time_per_target=${1#--time=}; shift ;;
    --timeout) timeout=$2; shift 2 ;;
    --timeout=*) timeout=${1#--timeout=}; shift ;;
    --seed) seed=$2; shift 2 ;;
    --list) list=1; shift ;;
    -h | --help) sed -n '2,23p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
    esac
done
case $time_per_target in '' | *[!0-9]*) echo "fuzz.sh: --time needs seconds" >&2; exit 2 ;; esac
case $timeout in '' | *[!0-9]*) echo "fuzz.sh: --timeout needs seconds" >&2; exit 2 ;; esac
case $seed in '' | *[!0-9]*) echo "fuzz.sh: --seed needs a number" >&2; exit 2 ;; esac

all_targets=()
for f in fuzz/fuzz_targets/*.rs; do
    all_targets+=("$(basename "$f" .rs)")
done
if [ $list -eq 1 ]; then
    printf '%s\n' "${all_targets[@]}"
    exit 0
fi
[ ${#targets[@]} -eq 0 ] && targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
    [ -f "fuzz/fuzz_targets/$t.rs" ] || {
        echo "fuzz.sh: no target $t (have: ${all_targets[*]})" >&2
        exit 2
    }
done

log() { echo "fuzz.sh: $*" >&2; }

# cargo-fuzz from crates.io, once.
if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
# libFuzzer's C++ part is compiled by libfuzzer-sys's build script.
if ! command -v c++ >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    log "installing g++ (libFuzzer is C++)"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq g++ >/dev/null
fi

export RUSTC_BOOTSTRAP=1
log "building ${targets[*]} ($(rustc --version))"
for t in "${targets[@]}"; do
    cargo fuzz build --fuzz-dir fuzz "$t"
done

failed=()
summary=()
logdir=$(mktemp -d)
trap 'rm -rf "$logdir"' EXIT
for t in "${targets[@]}"; do
    work="fuzz/corpus-work/$t"
    mkdir -p "$work" "fuzz/artifacts/$t"
    before=$(find "fuzz/artifacts/$t" -type f | sort)
    log "running $t for ${time_per_target}s"
    set +e
    # -rss_limit_mb: a run over 2 GiB counts as unbounded allocation (the hypervisor's heap
    # is much smaller); -timeout: one slow input counts as a hang.
    cargo fuzz run --fuzz-dir fuzz "$t" "$work" "fuzz/corpus/$t" -- \
        -max_total_time="$time_per_target" -timeout="$timeout" -rss_limit_mb=2048 -seed="$seed" \
        -print_final_stats=1 2>&1 | tee "$logdir/$t.log" |
        grep -Ev '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)'
    rc=${PIPESTATUS[0]}
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logdir/$t.log" | tail -1)
    cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$logdir/$t.log" | tail -1)
    after=$(find "fuzz/artifacts/$t" -type f | sort)
    new=$(comm -13 <(echo "$before") <(echo "$after") | sed '/^$/d')
    if [ "$rc" -ne 0 ] || [ -n "$new" ]; then
        failed+=("$t")
        summary+=("$t: FAILED (exit $rc) after ${execs:-?} runs; input: ${new:-see log above}")
    else
        summary+=("$t: ok, ${execs:-?} runs in ${time_per_target}s, ${cov:-no coverage line}")
    fi
done

echo
echo "fuzz summary:"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
    echo "fuzz.sh: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
    echo "fuzz.sh: reproduce with: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz TARGET INPUT" >&2
    exit 1
fi
