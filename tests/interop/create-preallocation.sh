#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed create -o preallocation=off|metadata|falloc|full`: metadata writes
# every L2 table (every L1 entry needed points at a zeroed table), falloc
# also gives every guest cluster a data cluster, one after the other in
# guest order (fallocate'd), full writes those with zeros.  The images pass
# `qemu-img check`, read as zeros, `qemu-img map` = `qed map`, `qed info`'s
# actual-size follows.  A backing file goes with metadata only.  Out of
# space (a 20 MiB tmpfs), or killed midway, no file is left that opens as
# an image.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io perl
require_qed

CHECK_CLEAN=$_lib_dir/../qemu-check-clean

# layout FILE — "tables=N l2_used=N in_order=0|1 first=OFFSET": L1 entries
# set, L2 entries pointing at data, whether data offsets follow guest order
# with no gap, and the first data offset.
layout() {
    perl -e '
        my $f = shift;
        open(my $fh, "<:raw", $f) or die "$f: $!\n";
        sub rd { my ($o, $n) = @_; seek($fh, $o, 0); read($fh, my $b, $n) == $n or die "short read\n"; $b }
        my ($cs, $ts) = unpack("x4VV", rd(0, 12));
        my $l1 = unpack("Q<", rd(40, 8));
        my ($tables, $used, $in_order, $first, $prev) = (0, 0, 1, 0, undef);
        for my $t (unpack("Q<*", rd($l1, $ts * $cs))) {
            next unless $t;
            $tables++;
            for my $e (unpack("Q<*", rd($t, $ts * $cs))) {
                next if $e <= 1;
                $used++;
                $first = $e unless defined $prev;
                $in_order = 0 if defined $prev && $e != $prev + $cs;
                $prev = $e;
            }
        }
        print "tables=$tables l2_used=$used in_order=$in_order first=$first\n";
    ' "$1"
}

actual_size() { "$QED" info --output=json "$1" | json_get /dev/stdin actual-size; }

# The expected layout for SIZE bytes, cluster CS, table TS clusters, MODE.
expected() {
    local size=$1 cs=$2 ts=$3 mode=$4
    local clusters=$(((size + cs - 1) / cs)) per=$((ts * cs / 8))
    local tables=$(((clusters + per - 1) / per)) used=0 first=0
    [ "$mode" = off ] && tables=0
    if [ "$mode" = falloc ] || [ "$mode" = full ]; then
        used=$clusters
        first=$((cs + ts * cs + tables * ts * cs))
    fi
    echo "tables=$tables l2_used=$used in_order=1 first=$first"
}

for geo in "64k 4 100M" "4k 2 10M" "64k 2 1000k"; do
    set -- $geo
    cs=$1 ts=$2 size=$3
    csb=$(numfmt --from=iec "${cs^^}") sizeb=$(numfmt --from=iec "${size^^}")
    for mode in off metadata falloc full; do
        name="preallocation=$mode cluster_size=$cs table_size=$ts $size"
        img=p-$mode-$cs-$ts.qed
        tap_cmd "$name: created" "$QED" create -q -o "preallocation=$mode,cluster_size=$cs,table_size=$ts" "$img" "$size" || continue
        tap_is "$(layout "$img")" "$(expected "$sizeb" "$csb" "$ts" "$mode")" \
            "$name: L1/L2 tables and data clusters as the mode says"
        run perl "$CHECK_CLEAN" "$img"
        ok "$RC" "$name: QEMU: qemu-img check is clean" "$(cat "$OUT" "$ERR")"
        qemu_io -f qed -r "$img" -- "read -P 0 0 $size"
        ok $? "$name: QEMU: reads as zeros" "$(cat "$OUT" "$ERR")"
        map_agrees "$name: qemu-img map = qed map" "$img"
        actual=$(actual_size "$img")
        case $mode in
        off | metadata)
            [ "$actual" -lt "$sizeb" ]
            ok $? "$name: actual-size $actual is below the virtual size" ;;
        *)
            [ "$actual" -ge "$sizeb" ]
            ok $? "$name: actual-size $actual covers the virtual size" ;;
        esac
    done
done

# falloc reserves, full writes: the file system tells them apart (where it
# reports fallocate'd ranges as holes, as ext4 does).
fallocate -l 1M probe.raw 2>/dev/null
if [ -s probe.raw ] && qemu-img map -f raw --output=json probe.raw | grep -q '"data": false'; then
    "$QED" create -q -o preallocation=falloc fa.qed 10M
    "$QED" create -q -o preallocation=full fu.qed 10M
    qemu-img map -f raw --output=json fa.qed >fa.json
    qemu-img map -f raw --output=json fu.qed >fu.json
    tap_like "$(json_maplines fa.json | tail -1)" "length=10485760 .*zero=true data=false" \
        "falloc: the data clusters are reserved, not written"
    tap_is "$(json_maplines fu.json | wc -l)" 1 "full: the data clusters are written"
else
    skip "falloc: the data clusters are reserved, not written" "the file system reports fallocate'd ranges as data"
    skip "full: the data clusters are written" "the file system reports fallocate'd ranges as data"
fi

# The "Formatting" line names the mode as qemu-img's does.
run qemu-img create -f qed -o preallocation=full,cluster_size=4k q.qed 1M
want=$(sed 's/q\.qed/f.qed/' "$OUT")
run "$QED" create -o preallocation=full,cluster_size=4k f.qed 1M
tap_is "$(cat "$OUT")" "$want" "the Formatting line is qemu-img's"

tap_cmd_rc 1 "an unknown mode is refused" "$QED" create -o preallocation=bogus b.qed 1M
tap_like "$(cat "$ERR")" "Invalid preallocation mode 'bogus'" "an unknown mode: the message names it"

# Backing files: metadata keeps the backing file visible; data clusters
# would hide it, so falloc and full are refused.
"$QED" create -q base.qed 4M
"$QED" io -c "write -P 0x42 0 4M" base.qed >/dev/null
tap_cmd "metadata with a backing file" "$QED" create -q -o preallocation=metadata -b base.qed -F qed over.qed
qemu_io -f qed -r over.qed -- "read -P 0x42 0 4M"
ok $? "QEMU: metadata over a backing file reads the backing file" "$(cat "$OUT" "$ERR")"
tap_is "$(layout over.qed)" "tables=1 l2_used=0 in_order=1 first=0" "metadata over a backing file: the table is there, empty"
for mode in falloc full; do
    tap_cmd_rc 1 "$mode with a backing file is refused" "$QED" create -o preallocation=$mode -b base.qed -F qed h-$mode.qed
    tap_like "$(cat "$ERR")" "Backing file and preallocation=$mode" "$mode with a backing file: the message says why"
    [ ! -e h-$mode.qed ]
    ok $? "$mode with a backing file: nothing created"
done

# Killed while preallocating: whatever is left does not open as an image.
# (through sh, so that no shell reports the kill on stderr)
run sh -c 'timeout -s KILL 0.3 "$@"' sh "$QED" create -q -o preallocation=full big.qed 4G
if [ "$RC" -eq 137 ]; then
    run qemu-img info --output=json big.qed
    if grep -q '"format": "qed"' "$OUT"; then
        fail "killed midway: the file is not a QED image" "$(cat "$OUT")"
    else
        pass "killed midway: the file is not a QED image"
    fi
else
    skip "killed midway: the file is not a QED image" "the create finished in 0.3 s"
fi
rm -f big.qed

# Out of space.
if [ "$(id -u)" -ne 0 ] || ! command -v mount >/dev/null; then
    skip_rest=1
else
    mkdir small
    mount -t tmpfs -o size=20m tmpfs small 2>/dev/null && skip_rest=0 || skip_rest=1
fi
if [ "$skip_rest" = 1 ]; then
    for mode in metadata falloc full; do
        skip "out of space ($mode)" "needs root to mount a small tmpfs"
    done
else
    trap 'umount "$T/small" 2>/dev/null; _cleanup' EXIT
    for mode in metadata falloc full; do
        size=100M
        [ "$mode" = metadata ] && size=200G   # 100 tables of 256 KiB
        run "$QED" create -q -o preallocation=$mode small/n.qed $size
        tap_is "$RC" 1 "out of space ($mode): fails"
        tap_like "$(cat "$ERR")" "^qed: small/n.qed: preallocation=$mode: .*No space left on device" \
            "out of space ($mode): the message says so"
        [ ! -e small/n.qed ]
        ok $? "out of space ($mode): no file left"
        "$QED" create -q small/old.qed 1M
        run "$QED" create -q -o preallocation=$mode small/old.qed $size
        tap_is "$(stat -c %s small/old.qed)" 0 "out of space ($mode) over an old file: emptied, no image"
        tap_is "$(df --output=used -k small | tail -1 | tr -d ' ')" 0 \
            "out of space ($mode): the space is given back"
        rm -f small/old.qed
    done
fi
done_testing
