#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed create -o size=SIZE` as qemu-img takes it: the same image as the SIZE
# argument, the last size= wins, a SIZE argument besides it is refused with
# qemu-img's message; an empty backing file name (-b "" or -o backing_file=)
# is refused with qemu-img's message, and nothing is created.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img cmp
require_qed

# msg CMD... — the error message of CMD, without the "PROGRAM: FILE: " part.
msg() { run "$@"; sed -E 's/^(qemu-img|qed): [^:]*: //' "$ERR" | head -1; }

tap_cmd "create -o size=1M" "$QED" create -q -o size=1M a.qed
qemu-img create -q -f qed a-qemu.qed 1M
tap_cmd "-o size=1M makes the bytes qemu-img create makes" cmp a.qed a-qemu.qed
run qemu-img info --output=json a.qed
tap_like "$(cat "$OUT")" '"virtual-size": 1048576' "QEMU: -o size=1M image is 1 MiB"

tap_cmd "create -o size=1M,size=2M" "$QED" create -q -o size=1M,size=2M,cluster_size=4k b.qed
qemu-img create -q -f qed -o size=1M,size=2M,cluster_size=4k b-qemu.qed
tap_cmd "the last size= wins, as in qemu-img" cmp b.qed b-qemu.qed

tap_cmd "-o size= with a backing file" "$QED" create -q -o size=2M -b a.qed -F qed c.qed
run qemu-img info --output=json c.qed
tap_like "$(cat "$OUT")" '"virtual-size": 2097152' "QEMU: -o size= wins over the backing file's size"

for extra in 2M 1M; do
    want=$(msg qemu-img create -f qed -o size=1M q-$extra.qed $extra)
    got=$(msg "$QED" create -o size=1M d-$extra.qed $extra)
    tap_cmd_rc 1 "-o size=1M and SIZE $extra: refused" "$QED" create -o size=1M d-$extra.qed $extra
    tap_is "$got" "$want" "-o size=1M and SIZE $extra: qemu-img's message"
    [ ! -e d-$extra.qed ]
    ok $? "-o size=1M and SIZE $extra: no file created"
done

for how in "-b|" "-o|backing_file=" "-o|backing_file=,backing_fmt=qed"; do
    opt=${how%%|*} val=${how#*|}
    want=$(msg qemu-img create -f qed "$opt" "$val" q.qed 1M)
    tap_cmd_rc 1 "create $opt '$val': refused" "$QED" create "$opt" "$val" e.qed 1M
    got=$(msg "$QED" create "$opt" "$val" e.qed 1M)
    tap_is "$got" "$want" "create $opt '$val': qemu-img's message"
    [ ! -e e.qed ]
    ok $? "create $opt '$val': no file created"
done
tap_is "$(msg qemu-img create -f qed -b '' q.qed 1M)" \
    "Expected backing file name, got empty string" "QEMU: the message for an empty backing name"
done_testing
