#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed map --start-offset=N --max-length=N` (and -s/-l) lists what
# `qemu-img map` lists for the same range, in JSON and human output: only
# that range, the first and last ranges cut at its edges, one empty entry
# at the start offset when nothing is left (start at or past the end,
# length 0), sizes with suffixes, and qemu-img's limits on the values.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io perl truncate
require_qed

# human_agrees NAME IMG ARGS... — the human output is the same text.
human_agrees() {
    local name=$1 img=$2 want
    shift 2
    run qemu-img map "$@" "$img"
    want="$RC:$(cat "$OUT")"
    run "$QED" map "$@" "$img"
    tap_is "$RC:$(cat "$OUT")" "$want" "$name"
}

# both NAME IMG ARGS... — JSON and human output agree.
both() {
    local name=$1
    shift
    map_agrees "$name (json)" "$@"
    human_agrees "$name (human)" "$@"
}

build_std_image std.qed 65536 4
size=$(cat std.qed.size)
cs=65536
ranges=(
    "--start-offset=$((cs - 100)) --max-length=300"
    "--start-offset=$((3 * cs + 7)) --max-length=$((cs + 13))"
    "--start-offset=$((6 * cs + 1)) --max-length=$((2 * cs))"
    "--start-offset=$((9 * cs)) --max-length=$((2 * cs + 5))"
    "--start-offset=1k"
    "--max-length=64k"
    "--start-offset=$((size - 700))"
    "--start-offset=$((size - 1))"
    "--start-offset=$((size - 1)) --max-length=1G"
    "-s $((12 * cs + 4000)) -l 200"
    "-s 1 -l 1"
)
for r in "${ranges[@]}"; do
    # shellcheck disable=SC2086 # the range is two or four words
    both "std image, $r" std.qed $r
done

both "start at the end: one empty entry at the start offset" std.qed --start-offset="$size"
both "start past the end: one empty entry there" std.qed --start-offset=$((size + 12345))
both "max length 0: one empty entry" std.qed --start-offset=4096 --max-length=0
both "the largest start and length (no overflow)" std.qed \
    --start-offset=9223372036854775807 --max-length=9223372036854775807
both "suffixes: --start-offset=64k --max-length=1M" std.qed --start-offset=64k --max-length=1M

build_qed_chain qc
both "3-deep chain, a range across layers" qc/top.qed --start-offset=100 --max-length=300k
both "3-deep chain, start in the middle layer's range" qc/top.qed --start-offset=$((64 * KiB - 50)) --max-length=1M
both "3-deep chain, range past the base's end" qc/top.qed --start-offset=$((2 * MiB - 4096)) --max-length=$((2 * MiB))
build_raw_backed rb
both "raw backing file, range across its end" rb/top.qed --start-offset=$((4 * MiB)) --max-length=1000000
both "raw backing file, a range of backing data" rb/top.qed --start-offset=$((MiB + 100)) --max-length=5000

truncate -s 1M holes.raw
qemu-io -f raw -c "write -P 1 256k 64k" holes.raw >/dev/null
both "raw image (-f raw), a range across data and holes" holes.raw -f raw --start-offset=200k --max-length=100k

# qemu-img's limits: values are sizes up to INT64_MAX; a bad one is one
# line naming the option (qemu-img refuses the same values).
for bad in "--start-offset=8E" "--max-length=-1"; do
    run qemu-img map "$bad" std.qed
    tap_is "$RC" 1 "QEMU: qemu-img map $bad is refused"
done
run "$QED" map --start-offset=8E std.qed
tap_like "$(cat "$ERR")" "^qed: start offset 8E is too large \(it must be between 0 and 9223372036854775807\)$" \
    "the error names the option and the limit"
run "$QED" map --max-length=-1 std.qed
tap_is "$RC:$(cat "$ERR")" "1:qed: max length: invalid size '-1'" \
    "a negative --max-length is refused, naming the option"

done_testing
