#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed io` runs qemu-io style commands: read -P verifies and reports the first
# bad offset (exit 1), write defaults to pattern 0xcd, write -z, discard, flush,
# -r read-only, several -c in order, raw images; QEMU checks the results.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io perl truncate cmp od
require_qed

rm -f io.qed
tap_cmd "qed create io.qed" "$QED" create -q -o cluster_size=4k io.qed 1M || { done_testing; }

tap_cmd "write without -P" "$QED" io -c "write 0 4k" io.qed
tap_cmd "write without -P writes the default pattern 0xcd (qemu-io reads it)" \
    qemu-io -r -c "read -P 0xcd 0 4k" io.qed

tap_cmd "write -P with sizes given with suffixes" "$QED" io -c "write -P 0x44 1k 2k" io.qed
tap_cmd "qemu-io reads the pattern at 1k..3k and 0xcd around it" \
    qemu-io -r -c "read -P 0xcd 0 1k" -c "read -P 0x44 1k 2k" -c "read -P 0xcd 3k 1k" io.qed

tap_cmd "read -P with the right pattern exits 0" "$QED" io -r -c "read -P 0x44 1024 2048" io.qed
tap_cmd "read without -P exits 0" "$QED" io -r -c "read 0 1M" io.qed

"$QED" io -c "write -P 0x11 8k 4k" -c "write -P 0x22 $((8 * KiB + 1234)) 1" io.qed >/dev/null 2>&1
tap_cmd_rc 1 "read -P mismatch exits 1" "$QED" io -r -c "read -P 0x11 8k 4k" io.qed
tap_like "$(cat "$OUT" "$ERR")" '(^|[^0-9])(9426|0x24d2)([^0-9]|$)' "read -P mismatch prints the first bad offset (9426)"
tap_cmd_rc 1 "read -P mismatch after a good read still exits 1" \
    "$QED" io -r -c "read -P 0x44 1k 2k" -c "read -P 0x11 8k 4k" io.qed

tap_cmd "write, flush and read back in one run" \
    "$QED" io -c "write -P 0x33 64k 4k" -c flush -c "read -P 0x33 64k 4k" io.qed
tap_cmd "qemu-io sees the flushed write" qemu-io -r -c "read -P 0x33 64k 4k" io.qed

tap_cmd "unaligned write across a cluster boundary" "$QED" io -c "write -P 0x77 4095 2" io.qed
tap_cmd "qemu-io reads the unaligned write" \
    qemu-io -r -c "read -P 0xcd 4094 1" -c "read -P 0x77 4095 2" -c "read -P 0 4097 1" io.qed

tap_cmd "write -z" "$QED" io -c "write -P 0x55 128k 8k" -c "write -z 128k 8k" -c "write -z 200k 4k" io.qed
tap_cmd "qemu-io reads zeros after write -z" qemu-io -r -c "read -P 0 128k 8k" -c "read -P 0 200k 4k" io.qed

tap_cmd "discard" "$QED" io -c "discard 256k 64k" io.qed

"$QED" io -c "write -P 0xcd 512k 512" io.qed >/dev/null 2>&1
run "$QED" io -r -c "read -v 512k 32" io.qed
ok "$RC" "read -v exits 0" "$(cat "$ERR")"
grep -qi 'cd cd cd cd' "$OUT"
ok $? "read -v dumps the bytes in hex" "stdout: $(cat "$OUT")"

cp io.qed io.before
tap_cmd_rc 1 "-r: write fails" "$QED" io -r -c "write 0 512" io.qed
cmp -s io.qed io.before
ok $? "-r: the file is unchanged"
tap_cmd_rc 1 "a read past the end of the image fails" "$QED" io -r -c "read 1020k 8k" io.qed
tap_cmd_rc 1 "a write past the end of the image fails" "$QED" io -c "write 1M 512" io.qed
tap_cmd_rc 1 "an unknown command fails" "$QED" io -c "frobnicate 0 512" io.qed
tap_cmd_rc 1 "a bad number fails" "$QED" io -c "read zero 512" io.qed
tap_cmd_rc 1 "a missing file fails" "$QED" io -c "read 0 512" nothere.qed
tap_cmd "qemu-img check after all of that" qemu-img check io.qed

# Raw images.
truncate -s 64k r.raw
tap_cmd "write to a raw file (-f raw)" "$QED" io -f raw -c "write -P 0x66 4k 4k" r.raw
tap_is "$(od -An -tx1 -j 4096 -N 4 r.raw | tr -d ' ')|$(od -An -tx1 -j 8192 -N 1 r.raw | tr -d ' ')|$(file_size r.raw)" \
    "66666666|00|65536" "the raw file has the bytes at the right place and keeps its size"
tap_cmd "read a raw file (format probed)" "$QED" io -r -c "read -P 0x66 4k 4k" -c "read -P 0 0 4k" r.raw

done_testing
