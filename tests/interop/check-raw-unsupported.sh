#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed check` on a raw image (probed or -f raw) exits 63 with qemu-img's
# "This image format does not support checks", whatever the output format,
# -q or -r: the status scripts use to tell "nothing to check" from a
# failed check (1).
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img truncate
require_qed

truncate -s 1M disk.raw
qemu-img create -q -f qed disk.qed 1M

# agrees NAME ARGS... — qemu-img check ARGS and qed check ARGS exit alike,
# print nothing on stdout, and say the same after their program name.
agrees() {
    local name=$1 qrc qerr
    shift
    run qemu-img check "$@"
    qrc=$RC
    qwarned=$(grep -c '^WARNING: Image format was not specified' "$ERR")
    # qemu-img warns about probing raw images opened for writing first.
    qerr=$(grep -v -e '^WARNING' -e '^  ' "$ERR" | sed 's/^qemu-img: //')
    tap_is "$qrc: $qerr" "63: This image format does not support checks" \
        "QEMU: qemu-img check $* exits 63"
    run "$QED" check "$@"
    # Both warn about the probed raw image when they open it for writing.
    tap_is "$RC|$(grep -v ': warning: ' "$ERR")|$(cat "$OUT")" \
        "$qrc|qed: ${*: -1}: $qerr|" "$name"
    tap_is "$(grep -c ': warning: .*probing guessed raw' "$ERR")" "$qwarned" \
        "$name: warns about probing exactly when qemu-img does"
}

agrees "probed raw: exit 63, qemu-img's message" disk.raw
agrees "-f raw: exit 63" -f raw disk.raw
agrees "-f raw on a qed image: exit 63" -f raw disk.qed
agrees "--output=json: exit 63, nothing on stdout" --output=json disk.raw
agrees "-q: exit 63, the message all the same" -q disk.raw
agrees "-r all: exit 63" -r all disk.raw
agrees "-r leaks -f raw: exit 63" -r leaks -f raw disk.raw

: >empty.img
agrees "an empty file (probed raw): exit 63" empty.img

done_testing
