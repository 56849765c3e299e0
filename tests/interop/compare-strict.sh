#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed compare -s` prints and exits what `qemu-img compare -s` does: besides
# the content, the block status of the two images must agree range by range
# (allocated or not, zero, data, host offset known, and QEMU's end-of-file
# flag), else "Strict mode: Offset N block status mismatch!" and exit 1; a
# content difference before the first status difference is reported as
# such.  Pairs: QED (data, zero clusters, data written as zeros, contiguous
# and split clusters, other cluster sizes, several L2 tables), raw (holes,
# data, dense), QED over shorter, longer and raw backing files, chains.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io truncate
require_qed

# fmt_args IMG FLAG — -f raw / -F raw for raw images, nothing for QED.
fmt_args() { case $1 in *.raw) echo "$2 raw" ;; esac; }

# strict_pair A B — "qemu-img's output | qed's output" for compare -s A B,
# empty when they agree.
strict_pair() {
    local a=$1 b=$2 qout mout
    # shellcheck disable=SC2046 # the format flags are zero or two words
    run qemu-img compare -s $(fmt_args "$a" -f) $(fmt_args "$b" -F) "$a" "$b"
    qout="$RC: $(cat "$OUT")"
    # shellcheck disable=SC2046
    run "$QED" compare -s $(fmt_args "$a" -f) $(fmt_args "$b" -F) "$a" "$b"
    mout="$RC: $(cat "$OUT")$(cat "$ERR")"
    [ "$qout" == "$mout" ] || echo "compare -s $a $b: qemu-img '$qout', qed '$mout'"
}

# agrees NAME A B — qed compare -s A B prints and exits as qemu-img does.
agrees() {
    local d
    d=$(strict_pair "$2" "$3")
    if [ -z "$d" ]; then pass "$1"; else fail "$1" "$d"; fi
}

# expect NAME OUTPUT A B — qemu-img and qed both print OUTPUT ("RC: text").
expect() {
    local name=$1 want=$2 a=$3 b=$4
    run qemu-img compare -s "$a" "$b"
    tap_is "$RC: $(cat "$OUT")" "$want" "QEMU: $name"
    run "$QED" compare -s "$a" "$b"
    tap_is "$RC: $(cat "$OUT")" "$want" "$name"
}

mk() { b qemu-img create -q -f qed "$@"; }

_build_begin
mk empty.qed 2M
mk data0.qed 2M && bio qed data0.qed "write -P 1 0 64k"
mk zero0.qed 2M && bio qed zero0.qed "write -z 0 64k"
mk zdata0.qed 2M && bio qed zdata0.qed "write -P 0 0 64k"
mk contig.qed 128k && bio qed contig.qed "write -P 1 0 128k"
mk split.qed 128k && bio qed split.qed "write -P 1 64k 64k" "write -P 1 0 64k"
mk tailzero.qed 2M && bio qed tailzero.qed "write -z 1M 1M"
mk full.qed 2M && bio qed full.qed "write -P 7 0 2M"
mk -o cluster_size=4k full4k.qed 2M && bio qed full4k.qed "write -P 7 0 2M"
mk -o cluster_size=4k data4k.qed 2M && bio qed data4k.qed "write -P 1 0 64k"
mk base1m.qed 1M && bio qed base1m.qed "write -P 1 0 64k"
mk -b base1m.qed -F qed over-short.qed 2M
mk hollow1m.qed 1M
mk -b hollow1m.qed -F qed over-hollow.qed 2M
mk base3m.qed 3M && bio qed base3m.qed "write -P 1 0 64k"
mk base3m-z.qed 3M && bio qed base3m-z.qed "write -P 1 0 64k" "write -z 2M 64k"
mk -b base3m.qed -F qed over-long.qed 2M
mk -b base3m.qed -F qed over-long-z.qed 2M && bio qed over-long-z.qed "write -z 0 64k"
mk -b over-short.qed -F qed chain3.qed 2M && bio qed chain3.qed "write -P 3 1536k 4k"
b truncate -s 2M hole.raw
b truncate -s 2M data.raw && bio raw data.raw "write -P 1 0 64k"
b truncate -s 1M short.raw && bio raw short.raw "write -P 1 0 64k"
mk -b short.raw -F raw over-raw.qed 2M
mk -b data.raw -F raw over-raw2.qed 2M && bio qed over-raw2.qed "write -P 1 512k 64k"
mk late-a.qed 2M && bio qed late-a.qed "write -P 1 0 64k" "write -P 5 512k 64k" \
    "write -z 1M 64k" "write -P 9 1536k 64k"
mk late-b.qed 2M && bio qed late-b.qed "write -P 1 0 64k" "write -P 5 512k 64k" \
    "write -P 9 1536k 64k"
mk late-e.qed 2M && bio qed late-e.qed "write -P 1 0 64k" "write -P 5 512k 64k" \
    "write -P 8 1536k 64k"
mk late-c.qed 2M && bio qed late-c.qed "write -P 1 0 64k" "write -P 6 512k 64k" \
    "write -P 9 1536k 64k"
mk late-d.qed 2M && bio qed late-d.qed "write -P 1 0 64k" "write -P 5 512k 64k" \
    "write -z 1M 64k" "write -P 9 1536k 64k" "write -P 0 1600k 64k"
_build_end "2 MiB images: QED, raw, chains"
b dd if=/dev/zero of=dense.raw bs=64k count=32 status=none

_build_begin
mk -o cluster_size=4k,table_size=2 l2-a.qed 10M && bio qed l2-a.qed "write -P 1 3M 2M" "write -P 2 9M 1M"
mk -o cluster_size=64k l2-b.qed 10M && bio qed l2-b.qed "write -P 1 3M 2M" "write -P 2 9M 1M"
mk -o cluster_size=4k,table_size=2 l2-c.qed 10M && bio qed l2-c.qed "write -P 2 9M 1M" "write -P 1 3M 2M"
b truncate -s 10M l2.raw && bio raw l2.raw "write -P 1 3M 2M" "write -P 2 9M 1M"
_build_end "10 MiB images with several L2 tables"

# Named cases, with the output spelled out.
expect "zero cluster vs unallocated: status mismatch at 0" \
    "1: Strict mode: Offset 0 block status mismatch!" zero0.qed empty.qed
expect "data of zeros vs zero cluster: status mismatch, same content" \
    "1: Strict mode: Offset 0 block status mismatch!" zdata0.qed zero0.qed
expect "one data range vs the same data in two host ranges: mismatch at 0 (EOF flag)" \
    "1: Strict mode: Offset 0 block status mismatch!" contig.qed split.qed
expect "past the end of a shorter backing file counts as allocated" \
    "1: Strict mode: Offset 1048576 block status mismatch!" over-hollow.qed empty.qed
expect "status differs at 1 MiB: reported there" \
    "1: Strict mode: Offset 1048576 block status mismatch!" late-a.qed late-b.qed
expect "content differs after the status does: status reported" \
    "1: Strict mode: Offset 1048576 block status mismatch!" late-e.qed late-a.qed
run "$QED" compare -s -q zero0.qed empty.qed
tap_is "$RC: $(cat "$OUT")" "1: " "-q -s: a status mismatch exits 1 and prints nothing"

# Every image against every other of its size (both orders), as qemu-img;
# among them pairs the same but for their allocation (identical under -s),
# and pairs whose content differs before their status does.
declare -A size_of
for f in *.qed *.raw; do
    size_of[$f]=$(qemu-img info --output=json "$f" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')
done
for a in *.qed *.raw; do
    diffs=()
    for b in *.qed *.raw; do
        [ "${size_of[$a]}" = "${size_of[$b]}" ] || continue
        d=$(strict_pair "$a" "$b")
        [ -z "$d" ] || diffs+=("$d")
    done
    if [ ${#diffs[@]} -eq 0 ]; then
        pass "compare -s $a with every image of its size agrees with qemu-img"
    else
        fail "compare -s $a with every image of its size agrees with qemu-img" "${diffs[@]:0:10}"
    fi
done

done_testing
