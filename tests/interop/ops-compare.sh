#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed compare` says what `qemu-img compare` says (stdout and exit status)
# for identical images, images of other formats and chains with the same
# content, differences anywhere (sector-rounded offsets), images of
# different sizes (zero and non-zero extra part, -s), and errors (exit 2);
# and it skips what both images report as zeros: two huge sparse images
# compare at once.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io perl truncate
require_qed

# agrees NAME ARGS... — qed compare ARGS prints the same and exits with the
# same status as qemu-img compare ARGS.
agrees() {
    local name=$1 qout qrc
    shift
    run qemu-img compare "$@"
    qout=$(cat "$OUT")
    qrc=$RC
    run "$QED" compare "$@"
    tap_is "$RC: $(cat "$OUT")" "$qrc: $qout" "$name"
}

build_std_image std.qed 65536 4
build_qed_chain chain
qemu-img convert -O raw std.qed std.raw
qemu-img convert -O raw chain/top.qed chain.raw
qemu-img convert -O qed -o cluster_size=4k std.qed std4k.qed

agrees "identical: qed and its raw copy" std.qed std.raw
agrees "identical: raw and qed (-f raw -F qed)" -f raw -F qed std.raw std.qed
agrees "identical: qed with other cluster size" std.qed std4k.qed
agrees "identical: a chain and its flattened copy" chain/top.qed chain.raw
agrees "different: a chain and its base" chain/top.qed chain/base.qed
agrees "different: two unrelated images" std.qed chain/top.qed

size=$(cat std.qed.size)
for off in 0 511 512 4097 65535 $((size / 2 + 3)) $((size - 1)); do
    cp std.raw d.raw
    printf '\x5a' | dd of=d.raw bs=1 seek="$off" conv=notrunc status=none
    agrees "one byte differs at $off" std.qed d.raw
    agrees "one byte differs at $off (reversed)" d.raw std.qed
done
run "$QED" compare std.qed d.raw
tap_is "$RC" 1 "a difference exits 1"

# Sizes: a zero tail is equal, a non-zero tail is not; -s is strict.
_build_begin
rm -f s1.qed s2.qed s3.qed
b qemu-img create -q -f qed s1.qed 1M
b qemu-img create -q -f qed s2.qed 3M
b qemu-img create -q -f qed s3.qed 3M
bio qed s1.qed "write -P 1 1000 5000"
bio qed s2.qed "write -P 1 1000 5000" "write -z 2M 64k"
bio qed s3.qed "write -P 1 1000 5000" "write -P 2 $((2 * MiB + 777)) 1"
_build_end "images of different sizes"
agrees "larger with a zero tail" s1.qed s2.qed
agrees "larger with a zero tail (reversed)" s2.qed s1.qed
agrees "larger with data in the tail" s1.qed s3.qed
agrees "larger with data in the tail (reversed)" s3.qed s1.qed
agrees "strict mode, sizes differ" -s s1.qed s2.qed
agrees "difference before the end of the smaller image" s1.qed chain/top.qed
agrees "quiet" -q s1.qed s3.qed

# Errors exit 2 with one line.
run "$QED" compare std.qed nothere.qed
tap_like "$RC/$(cat "$ERR")" '^2/qed: nothere.qed: No such file' "a missing image exits 2"
run "$QED" compare std.qed
tap_is "$RC" 2 "a missing argument exits 2"
run "$QED" compare -f qed std.raw std.qed
tap_is "$RC" 2 "a wrong -f exits 2"

# Fast: what both report as zeros is never read.
_build_begin
rm -f huge1.qed huge2.qed
b qemu-img create -q -f qed huge1.qed 16T
b qemu-img create -q -f qed huge2.qed 16T
bio qed huge1.qed "write -P 3 8T 64k"
bio qed huge2.qed "write -P 3 8T 64k"
_build_end "two sparse 16 TiB images"
t0=$(date +%s)
run "$QED" compare huge1.qed huge2.qed
t1=$(date +%s)
tap_is "$RC: $(cat "$OUT")" "0: Images are identical." "two sparse 16 TiB images are identical"
[ $((t1 - t0)) -le 10 ]
ok $? "... and comparing them takes seconds, not hours ($((t1 - t0)) s)"
qemu_io -f qed huge2.qed -- "write -P 4 $((12 * 1024 * GiB + 4096 + 512)) 1"
run "$QED" compare huge1.qed huge2.qed
tap_is "$RC: $(cat "$OUT")" "1: Content mismatch at offset $((12 * 1024 * GiB + 4096 + 512))!" \
    "a single byte 12 TiB into two sparse images is found"

done_testing
