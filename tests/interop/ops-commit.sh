#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed commit` writes what an image holds itself (data and zero clusters)
# into its backing file, QED or raw, so that the backing file then reads
# like the image did: checked against a raw snapshot of the image and
# against `qemu-img commit` on a copy.  The image itself is not changed (its
# bytes are the same afterwards); the backing file passes `qemu-img check`
# and grows when it is smaller than the image; errors fail cleanly.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io perl truncate cmp
require_qed

CHECK_CLEAN=$_lib_dir/../qemu-check-clean

clean() {
    run perl "$CHECK_CLEAN" "$2"
    ok "$RC" "$1: qemu-img check is clean" "$(cat "$OUT" "$ERR")"
}

# commit_case NAME DIR TOP BASE BASE-FMT — commits DIR/TOP with qed, and a
# copy of DIR with qemu-img commit, then compares.
commit_case() {
    local name=$1 d=$2 top=$3 base=$4 fmt=$5
    rm -rf "$d.qemu"
    cp -a "$d" "$d.qemu"
    qemu-img convert -O raw "$d/$top" "$d.view.raw"
    cp "$d/$top" "$d.top.before"
    cp "$d/$base" "$d.base.before"
    tap_cmd "$name: qed commit" "$QED" commit "$d/$top" || return
    tap_is "$(cat "$OUT")" "Image committed." "$name: prints what qemu-img prints"
    cmp -s "$d/$top" "$d.top.before"
    ok $? "$name: the image itself is byte for byte unchanged"
    run qemu-img compare -f raw -F "$fmt" "$d.view.raw" "$d/$base"
    tap_is "$RC: $(cat "$OUT")" "0: Images are identical." "$name: the backing file now reads like the image did"
    run qemu-img compare "$d/$top" "$d.view.raw"
    tap_is "$RC" 0 "$name: the image still reads the same"
    [ "$fmt" = qed ] && clean "$name: backing file" "$d/$base"
    clean "$name: image" "$d/$top"
    if run qemu-img commit -q -d "$d.qemu/$top" && [ "$RC" -eq 0 ]; then
        run qemu-img compare -f "$fmt" -F "$fmt" "$d/$base" "$d.qemu/$base"
        tap_is "$RC: $(cat "$OUT")" "0: Images are identical." "$name: the backing file reads like after qemu-img commit"
        tap_is "$(qemu-img info --output=json "$d/$base" | json_get /dev/stdin virtual-size)" \
            "$(qemu-img info --output=json "$d.qemu/$base" | json_get /dev/stdin virtual-size)" \
            "$name: the backing file has the size qemu-img commit gives it"
    else
        fail "$name: qemu-img commit of the copy" "$(cat "$ERR")"
    fi
}

# QED over QED, same size; zero clusters over backing data.
build_qed_pair pair
commit_case "QED over QED" pair top.qed base.qed qed

# QED over a shorter raw backing file: the raw file grows.
build_raw_backed rawb
commit_case "QED over a shorter raw file" rawb top.qed base.raw raw
tap_is "$(file_size rawb/base.raw)" $((6 * MiB)) "the raw backing file grew to the image's size"

# The middle of a three-deep chain: commit top into mid; base is untouched.
build_qed_chain chain
cp chain/base.qed chain.bottom.before
commit_case "top of a 3-deep chain into its QED backing file" chain top.qed mid.qed qed
cmp -s chain/base.qed chain.bottom.before
ok $? "the bottom of the chain is untouched"
run qemu-img compare chain/mid.qed chain.view.raw
tap_is "$RC" 0 "the middle layer (over its own backing file) reads like the top did"

# The backing file is smaller and QED: it grows.
_build_begin
mkdir -p grow
rm -f grow/base.qed grow/top.qed
b qemu-img create -q -f qed -o cluster_size=4k grow/base.qed 1M
bio qed grow/base.qed "write -P 0x31 0 1M"
b qemu-img create -q -f qed -o cluster_size=64k -b base.qed -F qed grow/top.qed 3M
bio qed grow/top.qed "write -P 0x32 $((2 * MiB + 100)) 5000" "write -z 0 64k" "write -P 0x33 $((MiB - 10)) 20"
_build_end "a 3 MiB image over a 1 MiB QED backing file"
commit_case "QED over a smaller QED backing file" grow top.qed base.qed qed

# Progress on a terminal.
if command -v script >/dev/null; then
    build_qed_pair prog
    script -qec "$(cmdline "$QED" commit -p prog/top.qed)" /dev/null >tty.out 2>&1
    tap_like "$(tr '\r' '\n' <tty.out | grep -c '(100.00/100%)')" '^[1-9]' "-p on a terminal ends at 100%"
else
    skip "-p on a terminal" "script is not installed"
fi

# Errors.
qemu-img create -q -f qed alone.qed 1M
run "$QED" commit alone.qed
tap_like "$RC/$(cat "$ERR")" "^1/qed: alone.qed: .*no backing file" "an image without a backing file fails"
truncate -s 1M plain.raw
run "$QED" commit plain.raw
tap_like "$RC/$(cat "$ERR")" "^1/qed: plain.raw: .*no backing file" "a raw image fails"
build_qed_pair gone
rm gone/base.qed
cp gone/top.qed gone.top.before
run "$QED" commit gone/top.qed
tap_like "$RC/$(cat "$ERR")" "^1/qed: gone/top.qed: .*base.qed" "a missing backing file fails naming it"
cmp -s gone/top.qed gone.top.before
ok $? "... and leaves the image untouched"

done_testing
