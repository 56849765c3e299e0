#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed bench` reads its arguments as `qemu-img bench` does: the pattern byte
# in decimal, octal or hexadecimal (-P/--pattern), sizes with qemu-img's
# suffixes and fractions, and refuses what qemu-img refuses.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img od
require_qed

# first_byte FILE — the first byte of FILE in hex.
first_byte() { od -An -tx1 -N1 "$1" | tr -d ' '; }

for p in 0x5c 92 0134 0 255 0xff; do
    qemu-img create -q -f raw ref.raw 1M
    qemu-img create -q -f raw ours.raw 1M
    run qemu-img bench -w -c 1 -s 4k -f raw --pattern="$p" ref.raw
    tap_is "$RC" 0 "premise: qemu-img bench takes --pattern=$p"
    tap_cmd "qed bench -w -P $p" "$QED" bench -w -c 1 -s 4k -f raw -P "$p" ours.raw
    tap_is "$(first_byte ours.raw)" "$(first_byte ref.raw)" "-P $p writes the byte qemu-img writes"
done

for p in 256 -1 1k x 0x; do
    run qemu-img bench -w -c 1 -f raw --pattern="$p" ref.raw
    tap_is "$RC" 1 "premise: qemu-img bench refuses --pattern=$p"
    run "$QED" bench -w -c 1 -f raw -P "$p" ours.raw
    tap_like "$RC $(cat "$ERR")" "^1 qed: Invalid pattern byte specified: '$p'" \
        "qed bench refuses -P $p with qemu-img's words, once"
    tap_is "$(wc -l < "$ERR")" 1 "-P $p: one line of error"
done

qemu-img create -q -f raw sz.raw 4M
tap_cmd "qed bench takes sizes as qemu-img does (-s 1.5k -S 0x800 -o 0.5M)" \
    "$QED" bench -c 4 -s 1.5k -S 0x800 -o 0.5M -f raw sz.raw
tap_like "$(cat "$OUT")" "1536 bytes each.*offset 524288, step size 2048" \
    "the sizes are 1536, 2048 and 524288 bytes"

done_testing
