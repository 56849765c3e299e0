#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs every libFuzzer target over its kept crash reproducers
# (fuzz/regressions) and seed corpus, then fuzzes each for a few seconds.
# The targets are built by `make fuzz-build` (make check does it).
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${FUZZ_BUILD:-$top/build-fuzz}
seconds=${FUZZ_SMOKE_SECONDS:-5}
count=0 failed=0
ok() { count=$((count + 1)); echo "ok $count - $*"; }
not_ok() { count=$((count + 1)); failed=$((failed + 1)); echo "not ok $count - $*"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for src in "$top"/fuzz/fuzz-*.c; do
    t=$(basename "$src" .c)
    bin=$build/$t
    if [ ! -x "$bin" ]; then
        not_ok "$t: fuzzer is built"
        continue
    fi
    inputs=()
    for dir in "$top/fuzz/regressions/$t" "$top/fuzz/corpus/$t"; do
        [ -d "$dir" ] && inputs+=("$dir"/*)
    done
    if [ ${#inputs[@]} -gt 0 ]; then
        if "$bin" -runs=0 "${inputs[@]}" >"$work/$t.replay" 2>&1; then
            ok "$t: ${#inputs[@]} kept inputs (regressions and seeds) run clean"
        else
            not_ok "$t: kept inputs run clean"
            sed 's/^/# /' "$work/$t.replay" | grep -E "ERROR|SUMMARY|Running" | head -20
        fi
    fi
    mkdir -p "$work/corpus-$t"
    if "$bin" -max_total_time="$seconds" -artifact_prefix="$work/$t-" \
        "$work/corpus-$t" "$top/fuzz/corpus/$t" >"$work/$t.log" 2>&1; then
        ok "$t: ${seconds} s of fuzzing find nothing ($(grep -o 'Done [0-9]* runs' "$work/$t.log"))"
    else
        not_ok "$t: ${seconds} s of fuzzing find nothing"
        grep -E "ERROR|SUMMARY" "$work/$t.log" | head -5 | sed 's/^/# /'
    fi
done
echo "1..$count"
[ $failed -eq 0 ]
