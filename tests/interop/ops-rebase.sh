#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed rebase`: the safe rebase leaves what the image reads unchanged (checked
# against a raw snapshot) while the header names the new backing file
# (qemu-img info), onto QED and raw backing files, dropping a middle layer,
# and removing the backing file (-b ""); the result reads like `qemu-img
# rebase` makes it and passes `qemu-img check`.  -u rewrites only the header,
# also when the old backing file is gone.  A name that does not fit in the
# header, a missing backing file or a loop fail and leave the file byte for
# byte as it was.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io perl truncate cmp
require_qed

CHECK_CLEAN=$_lib_dir/../qemu-check-clean

clean() {
    run perl "$CHECK_CLEAN" "$2"
    ok "$RC" "$1: qemu-img check is clean" "$(cat "$OUT" "$ERR")"
}

info_field() {
    qemu-img info --output=json "$1" >"$T/.info.json" 2>&1
    json_get "$T/.info.json" "$2" || echo "<absent>"
}

# rebase_case NAME DIR IMG NEW-BACKING [FMT] — qed rebase -b NEW [-F FMT] on
# DIR/IMG, and qemu-img rebase on a copy of DIR.
rebase_case() {
    local name=$1 d=$2 img=$3 new=$4 fmt=${5:-} fargs=()
    [ -n "$fmt" ] && fargs=(-F "$fmt")
    rm -rf "$d.qemu"
    cp -a "$d" "$d.qemu"
    qemu-img convert -O raw "$d/$img" "$d.view.raw"
    tap_cmd "$name: qed rebase" "$QED" rebase -b "$new" "${fargs[@]}" "$d/$img" || return
    run qemu-img compare -F raw "$d/$img" "$d.view.raw"
    tap_is "$RC: $(cat "$OUT")" "0: Images are identical." "$name: the image reads as before"
    if [ -n "$new" ]; then
        tap_is "$(info_field "$d/$img" backing-filename)" "$new" "$name: qemu-img info shows the new backing file"
    else
        tap_is "$(info_field "$d/$img" backing-filename)" "<absent>" "$name: qemu-img info shows no backing file"
    fi
    clean "$name" "$d/$img"
    run qemu-img rebase -b "$new" "${fargs[@]}" "$d.qemu/$img"
    if [ "$RC" -eq 0 ]; then
        run qemu-img compare "$d/$img" "$d.qemu/$img"
        tap_is "$RC: $(cat "$OUT")" "0: Images are identical." "$name: reads like after qemu-img rebase"
    else
        fail "$name: qemu-img rebase of the copy" "$(cat "$ERR")"
    fi
}

# Onto another QED file with partly different content.
build_qed_pair pair
_build_begin
b qemu-img create -q -f qed -o cluster_size=64k pair/other.qed 1M
bio qed pair/other.qed "write -P 0xe1 0 32k" "write -P 0x71 100k 300k" "write -P 0xe2 512k 12k"
_build_end "another QED backing file"
rebase_case "onto another QED file" pair top.qed other.qed qed
tap_is "$(info_field pair/top.qed backing-filename-format)" "<absent>" "a QED backing file's format is left to probing"

# Onto a raw file (-F raw records it).
build_qed_pair praw
_build_begin
b truncate -s 700k praw/base.raw
bio raw praw/base.raw "write -P 0xe1 0 64k" "write -P 0x72 600k 100k"
_build_end "a raw backing file shorter than the image"
rebase_case "onto a shorter raw file" praw top.qed base.raw raw
tap_is "$(info_field praw/top.qed backing-filename-format)" "raw" "-F raw is recorded (NO_PROBE)"

# Dropping the middle of a chain.
build_qed_chain chain
rebase_case "top of a 3-deep chain onto the bottom" chain top.qed base.qed qed

# Removing the backing file: what it provided is copied in.
build_raw_backed nob
rebase_case "removing the backing file (-b \"\")" nob top.qed ""
tap_is "$(($(peek_le nob/top.qed "$HDR_FEATURES" 8) & 5))" 0 "BACKING_FILE and NO_PROBE are clear"

# -u: only the header; the old backing file may be gone.
build_qed_pair uns
cp uns/base.qed uns/copy.qed
rm uns/base.qed
tap_cmd "-u with the old backing file gone" "$QED" rebase -u -b copy.qed -F qed uns/top.qed
tap_is "$(info_field uns/top.qed backing-filename)" "copy.qed" "-u: qemu-img info shows the new name"
tap_cmd "-u: qemu-img check is happy" qemu-img check uns/top.qed
qemu-img create -q -f qed -b copy.qed -F qed uns/ref.qed 1M
tap_is "$(qemu-img info uns/top.qed | grep -c 'backing file')" 1 "-u: one backing file line"
tap_cmd "-u -b \"\"" "$QED" rebase -u -b "" uns/top.qed
tap_is "$(info_field uns/top.qed backing-filename)" "<absent>" "-u -b \"\": no backing file"
tap_cmd "-u onto a file that does not exist (as qemu-img -u with -F)" "$QED" rebase -u -b later.qed -F qed uns/top.qed
tap_is "$(info_field uns/top.qed backing-filename)" "later.qed" "-u records the name anyway"
run qemu-img rebase -u -b later2.qed -F qed uns/top.qed
tap_is "$RC/$(info_field uns/top.qed backing-filename)" "0/later2.qed" "QEMU reads the header qed rewrote"

# Errors leave the file byte for byte as it was.
build_qed_pair err
long=$(printf 'n%.0s' $(seq 1 4040)).qed
cp err/top.qed err.before
run "$QED" rebase -b "$long" err/top.qed
tap_like "$RC/$(cat "$ERR")" "^1/qed: err/top.qed: backing file name is 4044 bytes; at most 4032 fit in the header" \
    "a name that does not fit in the header fails"
cmp -s err/top.qed err.before
ok $? "... and the file is byte for byte unchanged"
run "$QED" rebase -u -b "$long" err/top.qed
tap_like "$RC/$(cat "$ERR")" "^1/qed: err/top.qed: backing file name is 4044 bytes" "the same with -u"
cmp -s err/top.qed err.before
ok $? "... and the file is byte for byte unchanged"
run "$QED" rebase -b nothere.qed err/top.qed
tap_like "$RC/$(cat "$ERR")" "^1/qed: err/top.qed: backing file '.*nothere.qed'" "a missing new backing file fails"
cmp -s err/top.qed err.before
ok $? "... and the file is byte for byte unchanged"
run "$QED" rebase -b top.qed -F qed err/top.qed
tap_like "$RC/$(cat "$ERR")" "^1/qed: err/top.qed: .*(loop|already in the chain)" "rebasing onto itself fails"
cmp -s err/top.qed err.before
ok $? "... and the file is byte for byte unchanged"
qemu-img create -q -f qed -b top.qed -F qed err/above.qed 1M
run "$QED" rebase -b above.qed -F qed err/top.qed
tap_like "$RC/$(cat "$ERR")" "^1/qed: err/top.qed: .*loop" "rebasing onto an image above it fails (loop)"
cmp -s err/top.qed err.before
ok $? "... and the file is byte for byte unchanged"
truncate -s 1M err/plain.raw
run "$QED" rebase -b x.qed err/plain.raw
tap_like "$RC/$(tail -n1 "$ERR")" "^1/qed: err/plain.raw: .*raw image" "a raw image fails"
run "$QED" rebase err/top.qed
tap_like "$RC/$(cat "$ERR")" "^1/qed: rebase: -b BACKING is required" "-b is required"

# Big header clusters take long names (past the first 4 KiB block).
_build_begin
mkdir -p big
b qemu-img create -q -f qed -o cluster_size=64k big/base.qed 1M
bio qed big/base.qed "write -P 0x41 0 128k"
b qemu-img create -q -f qed -o cluster_size=64k -b base.qed -F qed big/top.qed 1M
bio qed big/top.qed "write -P 0x42 64k 4k"
_build_end "an image with 64 KiB clusters"
name=$(printf 'd%.0s/' $(seq 1 2000))../../$(printf 'x%.0s' $(seq 1 50))
mkdir -p "big/$(printf 'd%.0s/' $(seq 1 2000))"
ln -s "$PWD/big/base.qed" "big/$(printf 'd%.0s/' $(seq 1 2000) | sed 's|/$||' | sed 's|/[^/]*$||')/../$(printf 'x%.0s' $(seq 1 50))" 2>/dev/null
qemu-img convert -O raw big/top.qed big.view.raw
len=${#name}
if [ -e "big/$name" ]; then
    tap_cmd "a $len-byte name (past the first 4 KiB block)" "$QED" rebase -b "$name" -F qed big/top.qed
    tap_is "$(info_field big/top.qed backing-filename)" "$name" "qemu-img info shows the long name"
    run qemu-img compare -F raw big/top.qed big.view.raw
    tap_is "$RC" 0 "the image reads as before"
else
    skip "a $len-byte name" "could not build the path"
fi

done_testing
