#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# qed compact: content unchanged, no leaks afterwards (qemu-img agrees), the
# file shrinks to what is referenced, zero data clusters are released, a
# second run does nothing, and images with a backing file keep reading the
# same (zero clusters where the backing file would show through).
. "$(dirname "$0")/lib.sh"

"$QED" create -q -o cluster_size=4k,table_size=2 c.qed 8M
"$QED" io -c 'write -P 1 0 64k' -c 'write -P 2 1M 64k' -c 'write -P 0 2M 64k' \
    -c 'write -P 3 3M 16k' -c 'discard 1M 32k' c.qed >/dev/null
"$QED" convert -O raw c.qed before.raw
# Leaks too: a trailing unreferenced region.
truncate -s +64k c.qed
size_before=$(stat -c %s c.qed)
tap_cmd "compact succeeds" "$QED" compact c.qed
tap_like "$(cat "$OUT")" 'zero clusters released' "it says what it did"
"$QED" convert -O raw c.qed after.raw
tap_cmd "the content is unchanged" cmp before.raw after.raw
tap_cmd "qed check finds nothing" "$QED" check c.qed
tap_cmd "qemu-img agrees" "$TESTS_DIR/qemu-check-clean" c.qed
size_after=$(stat -c %s c.qed)
ok $([ "$size_after" -lt "$size_before" ]; echo $?) "the file shrank ($size_before -> $size_after bytes)"
run "$QED" map --output=json c.qed
tap_like "$(grep -c '"data": true' "$OUT")" '^[0-9]+$' "map still works"
# 64k+32k+16k of data that is not zero: 112 KiB of data clusters at most,
# plus header, L1 and 2 L2 tables.
ok $([ "$size_after" -le $((4096 + 8192 + 2 * 8192 + 112 * 1024)) ]; echo $?) \
    "only the clusters that hold data remain ($size_after bytes)"
cp c.qed c2.qed
tap_cmd "a second compact succeeds" "$QED" compact -q c.qed
tap_cmd "and changes nothing" cmp c.qed c2.qed

# Over a backing file: released zero clusters must keep hiding the backing.
truncate -s 4M base.raw
"$QED" io -f raw -c 'write -P 0x55 0 4M' base.raw >/dev/null
"$QED" create -q -o cluster_size=4k,table_size=2 -b base.raw -F raw b.qed
"$QED" io -c 'write -P 0 0 64k' -c 'write -P 7 128k 4k' b.qed >/dev/null
"$QED" convert -O raw b.qed b-before.raw
tap_cmd "compact over a backing file succeeds" "$QED" compact b.qed
"$QED" convert -O raw b.qed b-after.raw
tap_cmd "zeros written over the backing file still read as zeros" cmp b-before.raw b-after.raw
tap_cmd "qemu-img agrees with the result" "$TESTS_DIR/qemu-check-clean" b.qed
tap_cmd "qemu-img reads the same content" qemu-img compare -f qed -F raw b.qed b-before.raw
tap_cmd_rc 1 "a raw image is refused" "$QED" compact -f raw base.raw
done_testing
