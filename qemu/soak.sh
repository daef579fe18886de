#!/usr/bin/env bash
# Soaks the property tests: runs every proptest property of the host unit tests (or those
# matching FILTER) with many more cases than `cargo test` and a fresh random seed, which it
# prints first so that any failure can be replayed exactly. `cargo test` itself uses the fixed
# seed in .cargo/config.toml and so never finds anything new; this is where new cases come from.
#
#   qemu/soak.sh [--cases N] [--seed S] [--rounds R] [FILTER...]
#     --cases N   cases per property (default 2000; `cargo test` runs 64 to 256)
#     --seed S    a u64 seed instead of a random one (replays an earlier soak)
#     --rounds R  R rounds, each with a new random seed (default 1; ignored with --seed)
#     FILTER      test-name filters as for `cargo test` (default: all host unit tests)
#
# A failing property is shrunk and its seed appended by proptest to
# proptest-regressions/<source path>.txt: commit that file with the fix, so every later
# `cargo test` replays the case first. Replay one seed: the command printed for it.
# Exit status: 0 when every round passed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

cases=2000
seed=""
rounds=1
filters=()
while [ $# -gt 0 ]; do
    case $1 in
    --cases) cases=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) echo "soak.sh: unknown option $1" >&2; exit 2 ;;
    *) filters+=("$1"); shift ;;
    esac
done
for n in "$cases" "$rounds" ${seed:+"$seed"}; do
    case $n in '' | *[!0-9]*) echo "soak.sh: not a number: $n" >&2; exit 2 ;; esac
done
[ -n "$seed" ] && rounds=1

cargo test --quiet --lib --no-run
failed=0
for ((r = 1; r <= rounds; r++)); do
    s=${seed:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}
    echo "soak: round $r/$rounds: PROPTEST_RNG_SEED=$s PROPTEST_CASES=$cases"
    start=$(date +%s)
    if PROPTEST_RNG_SEED=$s PROPTEST_CASES=$cases \
        cargo test --quiet --lib -- "${filters[@]}"; then
        echo "soak: round $r passed in $(($(date +%s) - start)) s (seed $s)"
    else
        failed=1
        echo "soak: round $r FAILED (seed $s). Replay:"
        echo "  PROPTEST_RNG_SEED=$s PROPTEST_CASES=$cases cargo test --lib -- ${filters[*]}"
        echo "soak: new failing cases were appended under proptest-regressions/: commit them"
    fi
done
exit $failed
