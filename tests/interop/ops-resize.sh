#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed resize`: growing a QED image writes what `qemu-img resize` writes (the
# same bytes for a fresh image), up to exactly what the tables address (the
# error names that maximum); the new range reads as zeros, even over a longer
# backing file.  Shrinking needs --shrink, keeps the data before the new end,
# frees every cluster past it (the file gets shorter, `qemu-img check` finds
# no leak), and growing again reads zeros.  Relative sizes, raw files, and
# the error cases.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io perl truncate cmp
require_qed

CHECK_CLEAN=$_lib_dir/../qemu-check-clean

clean() {
    run perl "$CHECK_CLEAN" "$2"
    ok "$RC" "$1: qemu-img check is clean" "$(cat "$OUT" "$ERR")"
    run qed_walk "$2"
    ok "$RC" "$1: every cluster is referenced exactly once" "$(cat "$OUT" "$ERR")"
}

vsize() { qemu-img info --output=json "$1" | json_get /dev/stdin virtual-size; }

# reads NAME IMG CMDS... — qemu-io read commands (with -P) all pass.
reads() {
    local name=$1 img=$2
    shift 2
    qemu_io -f qed -r "$img" -- "$@"
    ok $? "$name" "$(cat "$OUT" "$ERR")"
}

# ---- growing -----------------------------------------------------------------------

qemu-img create -q -f qed g1.qed 1M
qemu-img create -q -f qed g2.qed 1M
tap_cmd "grow a fresh image" "$QED" resize g1.qed 5G
tap_is "$(cat "$OUT")" "Image resized." "prints what qemu-img prints"
qemu-img resize -q g2.qed 5G
cmp -s g1.qed g2.qed
ok $? "the file is byte for byte what qemu-img resize makes"

_build_begin
rm -f g3.qed
b qemu-img create -q -f qed -o cluster_size=4k g3.qed $((3 * MiB + 1536))
bio qed g3.qed "write -P 0x21 0 64k" "write -P 0x22 $((3 * MiB)) 1536"
_build_end "a 3 MiB + 1536 image with data up to its end"
tap_cmd "grow by +5M" "$QED" resize g3.qed +5M
tap_is "$(vsize g3.qed)" $((8 * MiB + 1536)) "+5M adds 5 MiB"
reads "old data intact, new range reads zeros" g3.qed "read -P 0x21 0 64k" \
    "read -P 0x22 $((3 * MiB)) 1536" "read -P 0 $((3 * MiB + 1536)) $((5 * MiB))"
clean "grown image" g3.qed

# Over a longer backing file, the new range must not show its data.
_build_begin
mkdir -p lb
rm -f lb/base.qed lb/top.qed
b qemu-img create -q -f qed -o cluster_size=4k lb/base.qed 4M
bio qed lb/base.qed "write -P 0x51 0 4M"
b qemu-img create -q -f qed -o cluster_size=4k -b base.qed -F qed lb/top.qed $((MiB + 512))
bio qed lb/top.qed "write -P 0x52 4k 4k"
_build_end "a 1 MiB + 512 image over a 4 MiB backing file full of data"
tap_cmd "grow over a longer backing file" "$QED" resize lb/top.qed 3M
reads "the new range reads zeros, not the backing file" lb/top.qed \
    "read -P 0x51 0 4k" "read -P 0x52 4k 4k" "read -P 0x51 8k $((MiB + 512 - 8192))" \
    "read -P 0 $((MiB + 512)) $((2 * MiB - 512))"
clean "grown over a longer backing file" lb/top.qed

# Exactly the maximum the tables address: 4k clusters, table_size 2 -> 4 GiB.
qemu-img create -q -f qed -o cluster_size=4k,table_size=2 max.qed 1M
tap_cmd "grow to exactly the maximum (4 GiB for 4k clusters, table_size 2)" "$QED" resize max.qed 4G
tap_is "$(vsize max.qed)" $((4 * GiB)) "qemu-img reads the maximum size"
qemu_io -f qed max.qed -- "write -P 0x61 $((4 * GiB - 512)) 512"
reads "the last sector is usable" max.qed "read -P 0x61 $((4 * GiB - 512)) 512"
run "$QED" resize max.qed $((4 * GiB + 512))
tap_like "$RC/$(cat "$ERR")" "^1/qed: max.qed: image size 4294967808 exceeds the maximum 4294967296" \
    "one sector more fails naming the maximum"
run "$QED" resize max.qed 5000000001
tap_like "$RC/$(cat "$ERR")" "not a multiple of 512" "a size that is not whole sectors fails"

# ---- shrinking ----------------------------------------------------------------------

_build_begin
rm -f s.qed
b qemu-img create -q -f qed -o cluster_size=4k,table_size=2 s.qed 12M
# Interleaved allocation: clusters past the new end sit between kept ones.
bio qed s.qed "write -P 0x71 11M 1M" "write -P 0x72 0 512k" "write -P 0x73 9M 64k" \
    "write -P 0x74 3M 100k" "write -z 10M 64k" "write -P 0x75 $((3 * MiB + 200 * KiB)) 8k" \
    "write -P 0x76 4M 2M"
_build_end "a 12 MiB image written out of order"
before=$(file_size s.qed)
run "$QED" resize s.qed 4M
tap_like "$RC/$(cat "$ERR")" "^1/qed: s.qed: shrinking from 12582912 to 4194304 bytes .*--shrink" \
    "shrinking without --shrink fails"
new=$((3 * MiB + 204 * KiB + 512))
tap_cmd "--shrink to 3 MiB + 204.5 KiB (inside a cluster)" "$QED" resize --shrink s.qed $new
tap_is "$(vsize s.qed)" "$new" "qemu-img reads the new size"
clean "shrunk image" s.qed
after=$(file_size s.qed)
[ "$after" -lt "$before" ]
ok $? "the file got shorter ($before -> $after bytes)"
reads "the data before the new end is intact" s.qed "read -P 0x72 0 512k" \
    "read -P 0x74 3M 100k" "read -P 0 $((3 * MiB + 100 * KiB)) $((100 * KiB))" \
    "read -P 0x75 $((3 * MiB + 200 * KiB)) $((4 * KiB + 512))"
tap_cmd "grow again" "$QED" resize s.qed 12M
reads "after shrinking and growing, everything past the old new end reads zeros" s.qed \
    "read -P 0x75 $((3 * MiB + 200 * KiB)) $((4 * KiB + 512))" "read -P 0 $new $((12 * MiB - new))"
clean "shrunk and grown image" s.qed

# Shrinking with a backing file, and by a relative size.
build_qed_pair sb
tap_cmd "--shrink by -512k over a backing file" "$QED" resize --shrink sb/top.qed -512k
tap_is "$(vsize sb/top.qed)" $((512 * KiB)) "-512k takes 512 KiB off"
qemu-img convert -O raw sb/top.qed sb.raw
run qemu-img compare -f raw -F qed sb.raw sb/top.qed
clean "shrunk image with a backing file" sb/top.qed
qemu_io -f qed -r sb/top.qed -- "read -P 0xe1 0 8k" "read -P 0xe3 8k 4k"
ok $? "its data reads as before" "$(cat "$OUT" "$ERR")"
tap_cmd "shrink to 0" "$QED" resize --shrink sb/top.qed 0
tap_is "$(vsize sb/top.qed)" 0 "qemu-img reads size 0"
clean "empty image" sb/top.qed

# ---- raw ------------------------------------------------------------------------------

truncate -s 1M r.raw
tap_cmd "raw: grow to 2000001 bytes" "$QED" resize -f raw r.raw 2000001
tap_is "$(file_size r.raw)" 2000001 "raw: the file has exactly that size"
run "$QED" resize -f raw r.raw 512k
tap_like "$RC/$(cat "$ERR")" "--shrink" "raw: shrinking needs --shrink"
tap_cmd "raw: --shrink to 512k" "$QED" resize --shrink r.raw 512k
tap_is "$(file_size r.raw)" $((512 * KiB)) "raw: the file has the new size"

# ---- errors ----------------------------------------------------------------------------

run "$QED" resize nothere.qed 1M
tap_like "$RC/$(cat "$ERR")" "^1/qed: nothere.qed: No such file" "a missing image fails"
run "$QED" resize g1.qed
tap_like "$RC/$(cat "$ERR")" "^1/qed: resize: expected FILE and SIZE" "a missing size fails"
run "$QED" resize g1.qed 12x
tap_is "$RC" 1 "a bad size fails"

done_testing
