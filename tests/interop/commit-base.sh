#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed commit -b BASE` commits into a file further down the backing chain,
# as `qemu-img commit -b` does on an identical copy: the base then reads
# like the top image did (and like qemu-img's base), it grows to the top's
# size when smaller, the top and the layers in between keep their bytes
# (they read like qemu-img's afterwards: the top as before, the layers in
# between over the new base), zero clusters and the zeros past the end of a
# shorter layer in between reach the base.  BASE is named as qemu-img names
# it (relative to the image above it); a file not in the chain fails with
# qemu-img's "Did not find ..." and changes nothing.  -d is accepted.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io perl truncate cmp
require_qed

CHECK_CLEAN=$_lib_dir/../qemu-check-clean

# view IMG [FMT] — what IMG reads, as a raw file IMG.view.
view() { qemu-img convert ${2:+-f "$2"} -O raw "$1" "$1.view"; }

# commit_base NAME DIR TOP BASE BASE-FMT OTHER... — qed commit -b BASE
# DIR/TOP, and qemu-img commit -b BASE on a copy of DIR; compares every
# layer (TOP and the OTHER layers must keep their bytes).
commit_base() {
    local name=$1 d=$2 top=$3 base=$4 fmt=$5 f diffs=()
    shift 5
    rm -rf "$d.qemu" "$d.before"
    cp -a "$d" "$d.qemu"
    cp -a "$d" "$d.before"
    view "$d/$top"
    run qemu-img commit -q -b "$base" "$d.qemu/$top"
    tap_is "$RC:$(cat "$ERR")" "0:" "QEMU: $name: qemu-img commit -b $base"
    run "$QED" commit -b "$base" "$d/$top"
    tap_is "$RC:$(cat "$OUT")$(cat "$ERR")" "0:Image committed." "$name: qed commit -b $base prints what qemu-img prints"
    # The base: the top's old view, clean.
    run qemu-img compare -f raw -F "$fmt" "$d/$top.view" "$d/$base"
    f="$RC: $(cat "$OUT")"
    if [ "$fmt" = qed ]; then
        run perl "$CHECK_CLEAN" "$d/$base"
        [ "$RC" -eq 0 ] || f="$f; qemu-img check: $(cat "$OUT" "$ERR")"
    fi
    tap_is "$f" "0: Images are identical." "$name: the base reads like the top did (and is clean)"
    # Every layer against qemu-img's: the base byte for byte as raw (size
    # included), the others reading alike and keeping their bytes.
    view "$d/$base" "$fmt"
    view "$d.qemu/$base" "$fmt"
    cmp -s "$d/$base.view" "$d.qemu/$base.view" ||
        diffs+=("$base: reads unlike qemu-img's (or has another size)")
    for f in "$top" "$@"; do
        cmp -s "$d/$f" "$d.before/$f" || diffs+=("$f: its bytes changed")
        run qemu-img compare "$d.qemu/$f" "$d/$f"
        [ "$RC" -eq 0 ] || diffs+=("$f: reads unlike qemu-img's: $(cat "$OUT" "$ERR")")
    done
    if [ ${#diffs[@]} -eq 0 ]; then
        pass "$name: every layer reads like qemu-img's ($base $top $*); only $base changed"
    else
        fail "$name: every layer reads like qemu-img's ($base $top $*); only $base changed" "${diffs[@]}"
    fi
}

# A 3-deep chain: top 4 MiB (16k clusters) -> mid 3 MiB (4k) -> base 2 MiB
# (64k): the base grows, the mid's zero cluster lies over base data, and the
# top reads zeros past the mid's end where the grown base must too.
build_qed_chain c1
qemu_io -f qed c1/mid.qed -- "write -P 0xc4 $((2 * MiB + 100 * KiB)) 8k" ||
    fail "QEMU: mid data past the base's end" "$(cat "$ERR")"
qemu_io -f qed c1/base.qed -- "write -P 0xb3 $((MiB + 512 * KiB)) 256k" ||
    fail "QEMU: more base data" "$(cat "$ERR")"
commit_base "3-deep chain into the bottom" c1 top.qed base.qed qed mid.qed

# The top over a longer mid: ranges past the mid's end read zeros and must
# become zeros in a base that has data there.
_build_begin
mkdir -p c2 && rm -f c2/*.qed
b qemu-img create -q -f qed c2/base.qed 4M
bio qed c2/base.qed "write -P 0x51 0 4M"
b qemu-img create -q -f qed -o cluster_size=4k -b base.qed -F qed c2/mid.qed 1M
bio qed c2/mid.qed "write -P 0x52 64k 4k" "write -z 128k 64k"
b qemu-img create -q -f qed -b mid.qed -F qed c2/top.qed 4M
bio qed c2/top.qed "write -P 0x53 3M 64k" "write -z 2M 128k"
_build_end "top 4M -> mid 1M -> base 4M full of data"
commit_base "past the end of a shorter middle layer" c2 top.qed base.qed qed mid.qed

# A raw base at the bottom.
_build_begin
mkdir -p c3 && rm -f c3/*
b truncate -s 2M c3/base.raw
bio raw c3/base.raw "write -P 0x61 0 1M"
b qemu-img create -q -f qed -o cluster_size=4k -b base.raw -F raw c3/mid.qed 2M
bio qed c3/mid.qed "write -P 0x62 512k 64k" "write -z 64k 64k"
b qemu-img create -q -f qed -b mid.qed -F qed c3/top.qed 2M
bio qed c3/top.qed "write -P 0x63 900k 300k"
_build_end "top.qed -> mid.qed -> base.raw"
commit_base "raw base at the bottom" c3 top.qed base.raw raw mid.qed

# Four layers, committing into the second: the bottom is not touched.
_build_begin
mkdir -p c4 && rm -f c4/*.qed
b qemu-img create -q -f qed c4/l3.qed 1M
bio qed c4/l3.qed "write -P 0x71 0 1M"
b qemu-img create -q -f qed -b l3.qed -F qed c4/l2.qed 1M
bio qed c4/l2.qed "write -P 0x72 0 64k"
b qemu-img create -q -f qed -b l2.qed -F qed c4/l1.qed 1M
bio qed c4/l1.qed "write -P 0x73 128k 64k"
b qemu-img create -q -f qed -b l1.qed -F qed c4/top.qed 1M
bio qed c4/top.qed "write -z 256k 64k"
_build_end "top -> l1 -> l2 -> l3"
commit_base "4 layers, into the third" c4 top.qed l2.qed qed l1.qed l3.qed

# -b naming the backing file itself is a plain commit; -d is accepted.
build_qed_pair p1
commit_base "-b the backing file itself" p1 top.qed base.qed qed
build_qed_pair p2
cp -a p2 p2.qemu
run "$QED" commit -d -b base.qed p2/top.qed
tap_is "$RC:$(cat "$OUT")$(cat "$ERR")" "0:Image committed." "-d -b: accepted"
run qemu-img commit -q -d -b base.qed p2.qemu/top.qed
run qemu-img compare p2.qemu/base.qed p2/base.qed
tap_is "$RC: $(cat "$OUT")" "0: Images are identical." "-d -b: the base reads like qemu-img's"

# BASE is resolved as qemu-img resolves it: relative to the image above.
build_qed_chain c5
run "$QED" commit -b "$T/c5/base.qed" c5/top.qed
tap_is "$RC:$(cat "$OUT")" "0:Image committed." "an absolute -b names the base"

# Not in the chain: qemu-img's message, nothing changes.
build_qed_chain c6
cp -a c6 c6.before
qemu-img create -q -f qed other.qed 4M
for bad in other.qed c6/base.qed top.qed nothere.qed; do
    run qemu-img commit -b "$bad" c6/top.qed
    qerr=$(sed 's/^qemu-img: //' "$ERR")
    tap_like "$RC:$qerr" "^1:Did not find '$bad' in the backing chain of 'c6/top.qed'$" \
        "QEMU: -b $bad is not in the chain"
    run "$QED" commit -b "$bad" c6/top.qed
    got="$RC:$(cat "$ERR")"
    diff -r c6 c6.before >/dev/null || got="$got (and files of the chain changed)"
    tap_is "$got" "1:qed: c6/top.qed: $qerr" "-b $bad: qemu-img's error, exit 1, nothing changed"
done
run "$QED" commit -b other.qed other.qed
tap_is "$RC:$(cat "$ERR")" "1:qed: other.qed: Did not find 'other.qed' in the backing chain of 'other.qed'" \
    "-b on an image without a backing file: qemu-img's error"

done_testing
