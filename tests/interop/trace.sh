#!/bin/bash
# SPDX-License-Identifier: MIT
# QED_TRACE=1 makes `qed` print the engine's trace on stderr, one
# "qed: trace: ..." line per event: the request, each state it goes through
# (an allocating write: lookup, claim, mark-dirty, extend, write-data,
# commit, done) and the phases of the table's group write; over a backing
# file, copy-on-write and the data flush before the table.  Output and
# image are the same as without it; without it, or with QED_TRACE=0, no
# trace line is printed.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img cmp
require_qed

"$QED" create -q plain.qed 4M
run env QED_TRACE=1 "$QED" io -c 'write -P 7 0 64k' plain.qed
tap_is "$RC" 0 "a traced write succeeds"
cp "$OUT" traced.out
trace=$(cat "$ERR")
tap_like "$trace" "qed: trace: open 'plain.qed': qed, read-write" "the open is traced"
tap_like "$trace" 'qed: trace: request 0x[0-9a-f]+: write 0\+65536 on' "the request is traced with its range"
for state in lookup claim mark-dirty extend write-data commit done; do
    tap_like "$trace" "qed request 0x[0-9a-f]+: $state at" "the allocating write enters $state"
done
tap_like "$trace" 'qed table 0 group write: write-table' "the group write of table 0 writes it"
tap_like "$trace" 'qed table 0 group write: link' "... and links the new table in L1"
tap_like "$trace" 'request 0x[0-9a-f]+ done: ok' "the request's completion is traced"
tap_like "$trace" "qed: trace: close 'plain.qed'" "the close is traced"
tap_is "$(grep -cv '^qed: trace: ' "$ERR")" 0 "every line on stderr is a trace line"

# QED_IO_ENGINE is the tool's to read: it asks the library for that engine.
run env QED_TRACE=1 QED_IO_ENGINE=threads "$QED" info plain.qed
tap_like "$(cat "$ERR")" "open 'plain.qed': .* threads engine" "QED_IO_ENGINE=threads: the tool opens with the thread pool"

# The same write without the trace: same output, same image, nothing on stderr.
"$QED" create -q quiet.qed 4M
run "$QED" io -c 'write -P 7 0 64k' quiet.qed
tap_is "$(head -1 "$OUT")" "$(head -1 traced.out)" "the output is the same without the trace (but for the timing)"
tap_is "$(cat "$ERR")" "" "without QED_TRACE nothing is traced"
run env QED_TRACE=0 "$QED" io -c 'read 0 64k' quiet.qed
tap_is "$(cat "$ERR")" "" "QED_TRACE=0 traces nothing"
tap_cmd "the traced image reads like the untraced one" qemu-img compare -q plain.qed quiet.qed

# Over a backing file: the clusters' head and tail come from it, and the
# data is flushed before the table points at it.
qemu-img create -q -f raw base.raw 4M
qemu-img create -q -f qed -b base.raw -F raw over.qed
run env QED_TRACE=1 "$QED" io -c 'write 4k 4k' over.qed
tap_is "$RC" 0 "a traced write over a backing file succeeds"
tap_like "$(cat "$ERR")" 'qed request 0x[0-9a-f]+: copy-on-write at 4096' "it copies the rest of the cluster from the backing file"
tap_like "$(cat "$ERR")" 'group write: flush-data' "the group's data is flushed before the table"
tap_is "$(grep -o 'group write: [a-z-]*' "$ERR" | head -3 | tr '\n' ' ')" \
    "group write: apply group write: flush-data group write: write-table " \
    "the flush comes between applying the entries and writing the table"

done_testing
