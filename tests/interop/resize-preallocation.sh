#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed resize --preallocation=off|metadata|falloc|full` preallocates only
# what growing adds: metadata the L2 tables covering it, falloc/full a data
# cluster for every whole new cluster, in guest order after the file's end;
# what the image held before (data and unallocated clusters) is untouched.
# The result passes `qemu-img check`, reads the old data and zeros, and
# `qemu-img map` = `qed map`.  qemu-img's messages for shrinking with
# preallocation and for an unknown mode; raw files; out of space.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io perl
require_qed

CHECK_CLEAN=$_lib_dir/../qemu-check-clean

# tables FILE — L1 entries set.
tables() {
    perl -e '
        open(my $fh, "<:raw", $ARGV[0]) or die;
        sub rd { my ($o, $n) = @_; seek($fh, $o, 0); read($fh, my $b, $n) == $n or die "short read\n"; $b }
        my ($cs, $ts) = unpack("x4VV", rd(0, 12));
        my $l1 = unpack("Q<", rd(40, 8));
        print scalar(grep { $_ } unpack("Q<*", rd($l1, $ts * $cs))), "\n";
    ' "$1"
}

# 4 KiB clusters, 2-cluster tables: one table covers 4 MiB.
for mode in off metadata falloc full; do
    img=r-$mode.qed
    name="resize --preallocation=$mode"
    "$QED" create -q -o cluster_size=4k,table_size=2 "$img" 3M
    "$QED" io -c "write -P 0x11 0 8k" -c "write -P 0x22 2m 1020k" "$img" >/dev/null
    before=$(file_size "$img")
    tap_cmd "$name: 3M -> 19M+1k" "$QED" resize --preallocation=$mode "$img" $((19 * MiB + 1024))
    run perl "$CHECK_CLEAN" "$img"
    ok "$RC" "$name: QEMU: qemu-img check is clean" "$(cat "$OUT" "$ERR")"
    qemu_io -f qed -r "$img" -- "read -P 0x11 0 8k" "read -P 0 8k 2040k" "read -P 0x22 2m 1020k" \
        "read -P 0 3068k 4k" "read -P 0 3m 16m" "read -P 0 19m 1k"
    ok $? "$name: QEMU: old data kept, the rest reads zeros" "$(cat "$OUT" "$ERR")"
    map_agrees "$name: qemu-img map = qed map" "$img"
    qemu-img map --output=json "$img" >m.json
    maplines=$(json_maplines m.json)
    # The hole before the old end stays a hole: only the grown part changes.
    tap_like "$maplines" "^start=8192 length=2088960 depth=0 present=false" \
        "$name: the unallocated range before the old end stays unallocated"
    case $mode in
    off)
        tap_is "$(tables "$img")" 1 "$name: no new table"
        tap_like "$(printf '%s\n' "$maplines" | tail -1)" "^start=3141632 length=16782336 depth=0 present=false" \
            "$name: the grown range is unallocated" ;;
    metadata)
        tap_is "$(tables "$img")" 5 "$name: the L2 tables covering the grown range are there"
        tap_is "$(file_size "$img")" $((before + 4 * 8192)) "$name: the file grew by the 4 new tables"
        tap_like "$(printf '%s\n' "$maplines" | tail -1)" "^start=3141632 length=16782336 depth=0 present=false" \
            "$name: the grown range is unallocated" ;;
    *)
        tap_is "$(tables "$img")" 5 "$name: the L2 tables covering the grown range are there"
        # The data clusters follow the new tables, one after the other.
        tap_like "$(printf '%s\n' "$maplines" | tail -1)" \
            "^start=3145728 length=16778240 depth=0 present=true zero=false data=true offset=$((before + 4 * 8192))\$" \
            "$name: every new cluster allocated, contiguous in guest order after the new tables"
        tap_is "$(file_size "$img")" $((before + 4 * 8192 + 4097 * 4096)) "$name: the file holds exactly that" ;;
    esac
done

# An existing table whose entries past the old end were freed by a shrink.
"$QED" create -q -o cluster_size=4k,table_size=2 z.qed 2M
"$QED" io -c "write -P 0x55 1m 1m" z.qed >/dev/null
"$QED" resize -q --shrink z.qed 1M
tap_cmd "falloc after a shrink" "$QED" resize --preallocation=falloc z.qed 3M
run perl "$CHECK_CLEAN" z.qed
ok "$RC" "falloc after a shrink: QEMU: qemu-img check is clean" "$(cat "$OUT" "$ERR")"
map_agrees "falloc after a shrink: qemu-img map = qed map" z.qed
qemu-img map --output=json z.qed >m.json
tap_like "$(json_maplines m.json)" "^start=1048576 length=2097152 depth=0 present=true zero=false data=true offset=" \
    "falloc after a shrink: the grown range is allocated in one run"
qemu_io -f qed -r z.qed -- "read -P 0 1m 2m"
ok $? "falloc after a shrink: QEMU: the grown range reads zeros" "$(cat "$OUT" "$ERR")"

# Over a longer backing file the grown range still reads zeros.
"$QED" create -q base.qed 8M
"$QED" io -c "write -P 0x33 0 8M" base.qed >/dev/null
"$QED" create -q -b base.qed -F qed top.qed 2M
tap_cmd "falloc over a longer backing file" "$QED" resize --preallocation=falloc top.qed 8M
qemu_io -f qed -r top.qed -- "read -P 0x33 0 2M" "read -P 0 2M 6M"
ok $? "falloc over a longer backing file: QEMU: backing data, then zeros" "$(cat "$OUT" "$ERR")"
run perl "$CHECK_CLEAN" top.qed
ok "$RC" "falloc over a longer backing file: QEMU: qemu-img check is clean" "$(cat "$OUT" "$ERR")"
qemu-img map --output=json top.qed >m.json
tap_like "$(json_maplines m.json)" "^start=2097152 length=6291456 depth=0 present=true zero=false data=true offset=" \
    "falloc over a longer backing file: its zero clusters became data clusters, in one run"

# qemu-img's messages.
qemu-img create -q -f qed q.qed 2M
run qemu-img resize --shrink --preallocation=falloc q.qed 1M
want=$(sed 's/^qemu-img: //' "$ERR")
"$QED" create -q s.qed 2M
run "$QED" resize --shrink --preallocation=falloc s.qed 1M
tap_is "$RC" 1 "shrinking with preallocation fails"
tap_like "$(cat "$ERR")" "$want" "shrinking with preallocation: qemu-img's message"
tap_cmd "shrinking with --preallocation=off works" "$QED" resize -q --shrink --preallocation=off s.qed 1M
run qemu-img resize --preallocation=bogus q.qed 4M
want=$(sed 's/^qemu-img: //' "$ERR")
run "$QED" resize --preallocation=bogus s.qed 4M
tap_is "$RC" 1 "an unknown mode fails"
tap_like "$(cat "$ERR")" "$want" "an unknown mode: qemu-img's message"

# Raw files: falloc reserves the new bytes, full writes them, metadata is
# qemu-img's "Unsupported".
for mode in falloc full; do
    truncate -s 1M r-$mode.raw
    tap_cmd "raw --preallocation=$mode" "$QED" resize -q -f raw --preallocation=$mode r-$mode.raw 9M
    tap_is "$(file_size r-$mode.raw)" $((9 * MiB)) "raw --preallocation=$mode: the new size"
    blocks=$(stat -c %b r-$mode.raw)
    [ $((blocks * 512)) -ge $((8 * MiB)) ]
    ok $? "raw --preallocation=$mode: the 8 MiB added are allocated ($((blocks * 512)) bytes)"
done
truncate -s 1M m.raw
run qemu-img resize -f raw --preallocation=metadata m.raw 9M
want=$(sed 's/^qemu-img: //' "$ERR")
run "$QED" resize -f raw --preallocation=metadata m.raw 9M
tap_is "$RC" 1 "raw --preallocation=metadata fails"
tap_like "$(cat "$ERR")" "$want" "raw --preallocation=metadata: qemu-img's message"

# Out of space: a clear message, and the image stays consistent (grown,
# without the preallocation).
if [ "$(id -u)" -eq 0 ] && mkdir small && mount -t tmpfs -o size=20m tmpfs small 2>/dev/null; then
    trap 'umount "$T/small" 2>/dev/null; _cleanup' EXIT
    "$QED" create -q small/x.qed 1M
    "$QED" io -c "write -P 0x44 0 64k" small/x.qed >/dev/null
    run "$QED" resize --preallocation=falloc small/x.qed 100M
    tap_is "$RC" 1 "out of space: fails"
    tap_like "$(cat "$ERR")" "^qed: small/x.qed: resized to 104857600 bytes, but preallocating the new range failed: .*No space left on device" \
        "out of space: the message says what happened"
    run perl "$CHECK_CLEAN" small/x.qed
    ok "$RC" "out of space: QEMU: qemu-img check is clean" "$(cat "$OUT" "$ERR")"
    qemu_io -f qed -r small/x.qed -- "read -P 0x44 0 64k" "read -P 0 64k 1m"
    ok $? "out of space: QEMU: the data is intact" "$(cat "$OUT" "$ERR")"
    [ "$(file_size small/x.qed)" -lt $((MiB)) ]
    ok $? "out of space: the space is given back"
else
    skip "out of space" "needs root to mount a small tmpfs"
fi
done_testing
