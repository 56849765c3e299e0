#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed io` against qemu-io 7.2: the same command lists run through both on
# copies of the same image must print the same stdout (timings and rates
# masked), exit with the same status, say on stderr what qemu-io says there
# (qed may add its own detail lines), and leave images that read the same.
# Every command qed io has is covered: read, readv, write, writev, discard,
# flush, aio_read, aio_write, aio_flush, map, alloc, length, info, truncate,
# sleep, help.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io cmp sort
require_qed

# Timings and rates differ from run to run; everything else must not.
mask_timing() {
    sed -E 's/[0-9]+:[0-9]{2}:[0-9]{2}\.[0-9]{2}/TIME/g
            s/[0-9]{2}\.[0-9]{2} sec/TIME/g
            s/\([^()]* and [^()]* ops\/sec\)/(RATE)/
            s/^([0-9]+),([0-9]+),TIME,[^,]+,[^,]+$/\1,\2,TIME,RATE/'
}

# qemu-io's "qemu-io: " and qed's "qed: " / "qed: FILE: " prefixes go.
strip_prefix() {
    sed -E "s/^qemu-io: //; s/^qed: (d\\.[a-z]+: )?//"
}

# parity NAME [QEMU-IO-OPTION...] -- IMAGE COMMAND... — runs the commands
# with qemu-io on q.EXT and with qed io on d.EXT, both copies of IMAGE.
parity() {
    local name=$1 opts=() args=() c img ext qrc problems=()
    shift
    while [ "$1" != -- ]; do
        opts+=("$1")
        shift
    done
    shift
    img=$1
    shift
    ext=${img##*.}
    for c in "$@"; do
        args+=(-c "$c")
    done
    cp "$img" "q.$ext" && cp "$img" "d.$ext" || bail_out "cannot copy $img"
    run qemu-io "${opts[@]}" "${args[@]}" "q.$ext"
    qrc=$RC
    mask_timing <"$OUT" >q.out
    strip_prefix <"$ERR" >q.err
    run "$QED" io "${opts[@]}" "${args[@]}" "d.$ext"
    mask_timing <"$OUT" >d.out
    strip_prefix <"$ERR" >d.err
    [ "$qrc" = "$RC" ] || problems+=("exit status: qemu-io $qrc, qed $RC")
    cmp -s q.out d.out || problems+=("stdout differs:" "$(diff q.out d.out | head -40)")
    while IFS= read -r c; do
        grep -Fxq -- "$c" d.err || problems+=("qemu-io's stderr line missing: '$c'")
    done <q.err
    if [ ${#problems[@]} -eq 0 ]; then
        pass "$name"
    else
        fail "$name" "${problems[@]}" "qed stderr: $(head -c 1500 d.err)"
    fi
}

# same_images NAME — what qemu-io left in q.EXT and qed io in d.EXT reads
# the same (qemu-img compare), and the sizes agree.
same_images() {
    local ext=$1 name=$2
    tap_cmd "$name" qemu-img compare "q.$ext" "d.$ext"
}

virtual_size() {
    qemu-img info --output=json "$1" | sed -nE 's/.*"virtual-size": ([0-9]+).*/\1/p'
}

# ---- images ---------------------------------------------------------------

qemu-img create -q -f qed -o cluster_size=4k t.qed 1M || bail_out "qemu-img create"
qemu-img create -q -f qed -o cluster_size=4k base.qed 1M
qemu-io -c 'write -P 1 0 64k' -c 'write -P 2 256k 8k' base.qed >/dev/null
qemu-img create -q -f qed -b base.qed -F qed -o cluster_size=4k top.qed
qemu-io -c 'write -P 3 4k 4k' -c 'write -z 32k 8k' -c 'write -z 512k 4k' \
    -c 'discard 600k 4k' -c 'write -P 5 700k 1k' top.qed >/dev/null
qemu-img create -q -f qed -o cluster_size=64k,table_size=2 big.qed 64M
qemu-io -c 'write -P 0x41 0 100k' -c 'write -z 1M 128k' big.qed >/dev/null
qemu-img create -q -f qed empty.qed 0
truncate -s 1000 odd.raw
printf 'abc' >src.txt
: >empty.txt

# ---- read -----------------------------------------------------------------

parity "read: reports, -q, -C, -v, zero length, unaligned" -- big.qed \
    'read 0 64k' 'read -q 0 4k' 'read -C 0 512' 'read -v 100 40' 'read 0 0' \
    'read 4095 2' 'r 512 1k' 'read -p 0 1'
parity "read -P: match, mismatch (whole range named), -s/-l window" -- big.qed \
    'read -P 0x41 0 100k' 'read -P 0x41 0 101k' 'read -P 0 -s 100k -l 1k 0 101k' \
    'read -P 0x42 -s 10 -l 20 0 512' 'read -q -P 1 0 512' 'read -v -P 0x41 0 32'
parity "read errors: past the end, numbers, pattern, options, -l without -P" -- t.qed \
    'read 1M 1' 'read 1023k 2k' 'read x 1' 'read 99999999999999999999 1' \
    'read 0 3G' 'read -P 300 0 1' 'read -x 0 1' 'read 0' 'read -a 0 1' \
    'read -l 1 0 512' 'read -P 0 -s 100 -l 500 0 512' 'read -P 0 -s 1k 0 512' \
    'read 0 -1' 'read 0 1 -P' 'read -- 0 1'
parity "read -b: sector alignment, no VM state in QED" -- t.qed \
    'read -b 1 512' 'read -b 0 100' 'read -b 0 512'

# ---- write ----------------------------------------------------------------

parity "write: default pattern, -P, -z, -z -u, -f, -C, -q, -p, alias" -- t.qed \
    'write 0 4k' 'write -P 0x44 1k 2k' 'write -z 64k 8k' 'write -z -u 128k 4k' \
    'write -f 200k 512' 'write -C 300k 1k' 'write -q 400k 1' 'w -p 500k 3' \
    'read -P 0xcd 0 1k' 'read -P 0x44 1k 2k' 'read -P 0 64k 8k'
same_images qed "write: both images read the same afterwards"
tap_cmd "write: qemu-io reads qed's data back" qemu-io -r -c 'read -P 0xcd 0 1k' \
    -c 'read -P 0x44 1k 2k' -c 'read -P 0xcd 3k 1k' -c 'read -P 0 64k 8k' \
    -c 'read -P 0xcd 200k 512' -c 'read -P 0xcd 300k 1k' -c 'read -P 0xcd 500k 3' d.qed
parity "write -s: the file's bytes repeated; missing and empty files" -- t.qed \
    'write -s src.txt 10 100' 'read -v 0 128' 'write -s nothere 0 10' \
    'write -s empty.txt 0 10' 'write -s src.txt -P 1 0 10'
same_images qed "write -s: both images read the same afterwards"
parity "write errors: option combinations, past the end, lengths" -- t.qed \
    'write -u 0 512' 'write -n 0 512' 'write -z -P 1 0 512' 'write -b -z 0 512' \
    'write -f -c 0 512' 'write 1M 1' 'write 1023k 2k' 'write -z 1023k 2k' \
    'write 0 3G' 'write -n -z 0 3G' 'write 0 x' 'write -P -1 0 1' 'write 0'
parity "write -c, -b, -z -n: not supported for QED, as in qemu" -- t.qed \
    'write -c 0 4k' 'write -c 1 512' 'write -b 0 512' 'write -z -n 0 4k'
parity "write -z -n on a raw image" -f raw -- odd.raw 'write -z -n 0 512' 'write -z -n 512 100'

# ---- readv, writev ---------------------------------------------------------

parity "readv: several buffers, -P, -v, -C, -q" -- big.qed \
    'readv 0 512 1k 4k' 'readv -P 0x41 0 32k 32k' 'readv -P 0x41 100k 1 1' \
    'readv -v 90 10 10' 'readv -C 0 512 512' 'readv -q 0 1' 'readv 0 0'
parity "readv errors: past the end, bad and huge lengths" -- t.qed \
    'readv 1023k 2k' 'readv 0 512 x' 'readv 0 3G' 'readv 0 1G 1G 1G' 'readv 0' 'readv -x 0 1'
parity "writev: several buffers, -P, -f, -C, -q" -- t.qed \
    'writev 0 512 1k' 'writev -P 0x22 4k 1 2 3' 'writev -f 8k 4k' 'writev -C 16k 512' \
    'writev -q 20k 512' 'readv -P 0x22 4k 6' 'writev 1023k 2k' 'writev 0 x'
same_images qed "writev: both images read the same afterwards"
tap_cmd "writev: qemu-io reads qed's data back" qemu-io -r -c 'read -P 0xcd 0 1536' \
    -c 'read -P 0x22 4k 6' -c 'read -P 0 4102 2042' -c 'read -P 0xcd 8k 4k' d.qed

# ---- discard, flush ---------------------------------------------------------

parity "discard and flush: reports, -C, -q, errors, argument counts" -- big.qed \
    'discard 0 64k' 'discard -C 64k 4k' 'discard -q 128k 512' 'd 0 512' \
    'discard 64M 1' 'discard 0 5G' 'flush' 'f' 'flush x' 'discard 0'
# (What discarded ranges read afterwards differs on purpose: qemu's QED
# driver ignores discards, qed releases the clusters, which then read as
# zeros; see the README.)

# ---- aio ---------------------------------------------------------------------

parity "aio_write/aio_read: one at a time, -P, -v, -C, -q, -z, -f" -- t.qed \
    'aio_write -P 7 0 4k' aio_flush 'aio_read -P 7 0 2k 2k' aio_flush \
    'aio_read -P 8 0 512' aio_flush 'aio_read -v -C 0 16' aio_flush \
    'aio_write -q 8k 4k' aio_flush 'aio_write -z 8k 4k' aio_flush \
    'aio_write -f -C 12k 512 512' aio_flush 'aio_read -q -P 0 8k 4k' aio_flush
same_images qed "aio_write: both images read the same afterwards"
tap_cmd "aio_write: qemu-io reads qed's data back" qemu-io -r -c 'read -P 7 0 4k' \
    -c 'read -P 0 8k 4k' -c 'read -P 0xcd 12k 1k' d.qed
parity "aio errors: -i, -u without -z, -z with two lengths, past the end (exit 0)" -- t.qed \
    'aio_read -i 0 1' 'aio_write -i 0 1' 'aio_write -u 0 512' \
    'aio_write -z 0 512 512' 'aio_read 0 x' 'aio_write -z 0 x' \
    'aio_read 1023k 2k' aio_flush 'aio_write 1M 1' aio_flush 'aio_flush x'
parity "aio: a request still in flight at the end reports before exit" -- t.qed \
    'aio_write -P 9 0 4k'
same_images qed "aio: the last request was written before exit"

# Two writes in flight at once: both are submitted before either reports
# (their reports follow the output of `length`, which does not wait), and
# aio_flush waits for both.  They may complete in either order.
run "$QED" io -c 'aio_write -P 0x61 0 64k' -c 'aio_write -P 0x62 512k 64k' -c length \
    -c aio_flush -c 'read -P 0x61 0 64k' -c 'read -P 0x62 512k 64k' t.qed
mask_timing <"$OUT" >d.out
tap_is "$RC|$(head -n1 d.out)|$(sed -n '2,5p' d.out | grep -c '^wrote')" "0|1 MiB|2" \
    "aio: two requests in flight at once report after length, before aio_flush returns"
cp t.qed q.qed
qemu-io -c 'aio_write -P 0x61 0 64k' -c 'aio_write -P 0x62 512k 64k' -c length \
    -c aio_flush -c 'read -P 0x61 0 64k' -c 'read -P 0x62 512k 64k' q.qed 2>&1 |
    mask_timing >q.out
tap_is "$(sort d.out | tr '\n' '|')" "$(sort q.out | tr '\n' '|')" \
    "aio: the same report lines as qemu-io's, in some order"

# ---- map, alloc -------------------------------------------------------------

parity "map: data, zero clusters, discarded and unallocated ranges over a backing file" -- \
    top.qed map
parity "map: a backing file; an image with data at both ends" -- base.qed map
parity "map: 64k clusters; an empty image prints nothing" -- big.qed map 'write 63M 1' map
parity "map: an image of 0 bytes prints nothing" -- empty.qed map
parity "map: a raw image is allocated throughout" -f raw -- odd.raw map
parity "alloc: counts, default count, offsets past the end, backing data not counted" -- top.qed \
    'alloc 0 1M' 'alloc 0' 'alloc 4k 8k' 'alloc 32k' 'alloc 512k 4k' 'alloc 4095 2' \
    'alloc 1000 10000' 'alloc 2M' 'alloc 1M' 'alloc 0 3G' 'a 700k 1' 'alloc 256k 8k'
parity "alloc errors: bad numbers, argument counts" -- top.qed \
    'alloc -1' 'alloc x' 'alloc 0 y' 'alloc' 'alloc 1 2 3'
parity "alloc on a raw image" -f raw -- odd.raw 'alloc 0' 'alloc 0 1k' 'alloc 1000 100'

# ---- length, info -------------------------------------------------------------

parity "length: QED images, aliases, argument count" -- big.qed length l 'length 1'
parity "length: a 1000-byte raw image is 1 KiB" -f raw -- odd.raw length
parity "length: an empty image" -- empty.qed length
parity "info: format, cluster size, VM state offset (4k clusters, backing file)" -- top.qed info i
parity "info: 64k clusters" -- big.qed info 'info x'
parity "info: a raw image" -f raw -- odd.raw info

# ---- truncate -------------------------------------------------------------------

parity "truncate: grow, then length and map; -m off; alias" -- t.qed \
    'truncate 2M' length map 'truncate -m off 3M' 't 4M' length 'read -P 0 1M 3M'
tap_is "$(virtual_size q.qed)|$(virtual_size d.qed)|$(qemu-img compare -q q.qed d.qed && echo same)" \
    "4194304|4194304|same" "truncate: both images have the new size and read the same"
parity "truncate errors: shrinking, invalid sizes, modes, argument counts" -- t.qed \
    'truncate 512k' 'truncate 1000' 'truncate 1T' 'truncate -m full 2M' \
    'truncate -m falloc 2M' 'truncate -m metadata 2M' 'truncate -m bogus 2M' \
    truncate 'truncate x' 'truncate -x 1M' 'truncate 1M -m' length
parity "truncate: a raw image shrinks and grows" -f raw -- odd.raw \
    'truncate 100k' length map 'truncate 1536' length 'write -P 7 0 1000' 'read -P 7 0 1000'
tap_is "$(file_size q.raw)|$(file_size d.raw)|$(cmp q.raw d.raw && echo same)" "1536|1536|same" \
    "truncate: the raw files have the same size and bytes afterwards"
parity "read-only: commands that write are refused, reads still run" -r -- top.qed \
    'write 0 512' 'writev 0 512' 'aio_write 0 512' 'discard 0 512' 'truncate 2M' \
    'write -x 0 1' 'read -P 3 4k 4k' map
tap_is "$(cmp -s top.qed d.qed && echo unchanged)|$(grep -c 'Block node is read-only' d.err)" \
    "unchanged|6" "read-only: each refused command says so, the image is unchanged"

# ---- sleep, help, the command line -------------------------------------------------

parity "sleep: milliseconds in any base; bad numbers; argument count" -- t.qed \
    'sleep 10' 'sleep 0x10' 'sleep 010' 'sleep x' 'sleep -5' 'sleep 1 2' sleep
start=$(date +%s%N)
run "$QED" io -r -c 'sleep 300' t.qed
elapsed=$((($(date +%s%N) - start) / 1000000))
tap_is "$RC|$([ "$elapsed" -ge 300 ] && echo slept)" "0|slept" "sleep 300 waits 300 ms (took $elapsed ms)"
parity "sleep: an aio request completes and reports during sleep" -- t.qed \
    'aio_write 0 512' 'sleep 200' length

for c in read readv write writev aio_read aio_write aio_flush discard flush map alloc \
    length info truncate sleep help; do
    parity "help $c: qemu-io's text" -- t.qed "help $c"
done
parity "help: aliases, unknown commands, argument count" -- t.qed \
    'help r' 'help w' 'help ?' 'help a' 'help nope' 'help read write' '? length'
run "$QED" io -c help t.qed
qemu-io -c help t.qed >q.help
missing=$(grep -vxFf q.help "$OUT")
tap_is "$RC|$missing|$(tail -n2 "$OUT" | tr '\n' '|')" \
    "0||$(tail -n2 q.help | tr '\n' '|')" "help: every line is qemu-io's line for that command"
parity "the command line: unknown commands, empty lines, every command runs after a failure" -- t.qed \
    frob '' 'read 1M 1' 'length' 'map x' 'flush x' 'length'

done_testing
