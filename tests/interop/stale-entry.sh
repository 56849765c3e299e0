#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# An entry that points past the end of the file is corrupt when the table is
# read, and stays so: when the file later grows over that offset, reads
# through the entry must fail, not return another cluster's new data.
. "$(dirname "$0")/lib.sh"
require_cmd perl

"$QED" create -q -o cluster_size=4k,table_size=2 s.qed 1M
"$QED" io -c 'write -P 0x11 0 4k' s.qed >/dev/null
size=$(stat -c %s s.qed)
# L1[0] names the L2 table; point entry 5 of it at the end of the file.
perl -e '
    open(my $f, "+<:raw", $ARGV[0]) or die;
    seek($f, 40, 0); read($f, my $l1, 8); $l1 = unpack("Q<", $l1);
    seek($f, $l1, 0); read($f, my $l2, 8); $l2 = unpack("Q<", $l2);
    seek($f, $l2 + 5 * 8, 0); print $f pack("Q<", $ARGV[1]);' s.qed "$size"
tap_cmd_rc 1 "a read through the entry past the end of the file fails" \
    "$QED" io -r -c 'read 20k 4k' s.qed
tap_cmd_rc 1 "after a write grows the file over that offset, the read still fails" \
    "$QED" io -c 'write -P 0x77 4k 4k' -c 'read -P 0x77 20k 4k' s.qed
tap_like "$(cat "$OUT" "$ERR")" 'corrupt|invalid' "the failure says the image is corrupt"
tap_cmd_rc 2 "qed check reports the corruption" "$QED" check s.qed
tap_cmd "qed check -r all repairs it" "$QED" check -r all s.qed
tap_cmd "qemu-img agrees" "$TESTS_DIR/qemu-check-clean" s.qed
tap_cmd "the repaired entry reads as zeros" "$QED" io -r -c 'read -P 0 20k 4k' s.qed
done_testing
