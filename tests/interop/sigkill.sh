#!/bin/bash
# SPDX-License-Identifier: MIT
# A writer killed with SIGKILL at a random moment: `qed io` runs ~3000
# write / write -z / discard / flush commands on an image without a backing
# file, over a raw one and over a QED one, and is killed 5-200 ms in.  Then
# `qed check -r all` must repair the image (exit 0), `qemu-img check` must
# find it clean, qemu-io must read it whole, and its content must be what the
# commands wrote: every command writes its own byte range, and the commands
# run one after the other, so every command before the last one whose bytes
# show must show whole, only that one may be partial, none after it shows,
# and no byte holds anything but its old content or a command's.  (SIGKILL
# loses no written data: the page cache survives the process.)
#
# QED_SIGKILL_ROUNDS (default 24) rounds, and no new round after ~20 s.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io perl truncate sleep kill
require_qed

CHECK_CLEAN=${TESTS_DIR:-$_lib_dir/..}/qemu-check-clean
ROUNDS=${QED_SIGKILL_ROUNDS:-24}
BUDGET=20
SIZE=$((16 * MiB))
BASE_SIZE=$((12 * MiB + 1536))
BASE_PATTERN=90 # 0x5a
NCMDS=3000

# The verifier: RAW (the image's content) CMDS (one "kind offset length
# pattern" per line, in the order run) BASE_SIZE BASE_PATTERN.  Old content:
# BASE_PATTERN below BASE_SIZE, zeros above (BASE_SIZE 0 without backing).
verify_pl='
use strict;
use warnings;
my ($raw, $cmds, $bsize, $bpat) = @ARGV;
open(my $fh, "<:raw", $raw) or die "$raw: $!\n";
local $/;
my $data = <$fh>;
close($fh);
open(my $ch, "<", $cmds) or die "$cmds: $!\n";
my @c = map { [split] } grep { /\S/ } split /\n/, <$ch>;
close($ch);
my (@state, $last) = ();
$last = -1;
for my $i (0 .. $#c) {
    my ($kind, $off, $len, $pat) = @{$c[$i]};
    next if $kind eq "flush";
    my $new = $kind eq "write" ? $pat : 0;
    my ($n_new, $n_old, $n_info) = (0, 0, 0);
    my $got = substr($data, $off, $len);
    my $nold = $off >= $bsize ? 0 : $off + $len <= $bsize ? $len : $bsize - $off;
    my $old_str = chr($bpat) x $nold . chr(0) x ($len - $nold);
    my $new_str = chr($new) x $len;
    if ($got eq $new_str || $got eq $old_str) {
        # Whole: count the bytes where new and old differ.
        my $diff = ($new_str ^ $old_str) =~ tr/\0//c;
        $n_info = $diff;
        ($got eq $new_str ? $n_new : $n_old) = $diff;
    } else {
        for my $k (0 .. $len - 1) {
            my $b = ord(substr($got, $k, 1));
            my $old = ord(substr($old_str, $k, 1));
            if ($b != $new && $b != $old) {
                printf "command %d (%s %d+%d, pattern %d): byte at %d is %d, neither old (%d) nor new (%d)\n",
                    $i + 1, $kind, $off, $len, $pat, $off + $k, $b, $old, $new;
                exit 1;
            }
            next if $new == $old;  # tells nothing
            $n_info++;
            $b == $new ? $n_new++ : $n_old++;
        }
    }
    # Discards may keep the old bytes: they say nothing about the order.
    next if $kind eq "discard" || $n_info == 0;
    $state[$i] = $n_old == 0 ? "new" : $n_new == 0 ? "old" : "partial";
    $last = $i if $n_new > 0;
}
for my $i (0 .. $#c) {
    my $s = $state[$i] // next;
    my ($kind, $off, $len) = @{$c[$i]};
    if ($i < $last && $s ne "new") {
        printf "command %d (%s %d+%d) is %s, but command %d after it landed\n",
            $i + 1, $kind, $off, $len, $s, $last + 1;
        exit 1;
    }
}
printf "%d of %d commands landed\n", $last + 1, scalar(@c);
'

# make_image DIR KIND CS — DIR/img.qed (16 MiB, cluster size CS,
# table_size 2, which QEMU can open) over DIR/base.raw or DIR/base.qed (KIND raw|qed, first
# BASE_SIZE bytes BASE_PATTERN), or none.
make_image() {
    local d=$1 kind=$2 cs=$3
    mkdir -p "$d" || return 1
    case $kind in
    none)
        "$QED" create -q -o "cluster_size=$cs,table_size=2" "$d/img.qed" "$SIZE"
        ;;
    raw)
        truncate -s "$BASE_SIZE" "$d/base.raw" &&
            qemu-io -f raw -c "write -q -P $BASE_PATTERN 0 $BASE_SIZE" "$d/base.raw" >/dev/null &&
            "$QED" create -q -b base.raw -F raw -o "cluster_size=$cs,table_size=2" "$d/img.qed" "$SIZE"
        ;;
    qed)
        "$QED" create -q -o cluster_size=64k "$d/base.qed" "$SIZE" &&
            "$QED" io -c "write -q -P $BASE_PATTERN 0 $BASE_SIZE" "$d/base.qed" >/dev/null &&
            "$QED" create -q -b base.qed -F qed -o "cluster_size=$cs,table_size=2" "$d/img.qed" "$SIZE"
        ;;
    esac
}

# make_commands FILE — NCMDS commands, each on its own byte range (a slot of
# the disk), slots in random order; writes "kind offset length pattern"
# lines to FILE and the qed io arguments to the array CMDS.
make_commands() {
    local file=$1 slot=$((SIZE / NCMDS)) i j t kind off len pat r
    local order=()
    CMDS=()
    : >"$file"
    for ((i = 0; i < NCMDS; i++)); do order[i]=$i; done
    for ((i = NCMDS - 1; i > 0; i--)); do
        j=$((RANDOM * 32768 + RANDOM))
        j=$((j % (i + 1)))
        t=${order[i]} order[i]=${order[j]} order[j]=$t
    done
    for ((i = 0; i < NCMDS; i++)); do
        r=$((RANDOM % 100))
        if [ "$r" -lt 4 ]; then
            echo "flush 0 0 0" >>"$file"
            CMDS+=(-c flush)
            continue
        fi
        off=$((order[i] * slot + (RANDOM % 4) * 512 + RANDOM % 3))
        len=$((1 + RANDOM % (slot - 2048 - 2)))
        pat=$((1 + RANDOM % 254))
        [ "$pat" -eq "$BASE_PATTERN" ] && pat=$((pat + 1))
        if [ "$r" -lt 70 ]; then
            kind="write"
            CMDS+=(-c "write -q -P $pat $off $len")
        elif [ "$r" -lt 88 ]; then
            kind=zero
            CMDS+=(-c "write -q -z $off $len")
        else
            kind=discard
            CMDS+=(-c "discard -q $off $len")
        fi
        echo "$kind $off $len $pat" >>"$file"
    done
}

start=$SECONDS
kinds=(none raw qed)
sizes=(4096 65536 16384)
for ((round = 1; round <= ROUNDS; round++)); do
    if [ $((SECONDS - start)) -ge "$BUDGET" ]; then
        note "time budget of ${BUDGET}s used after $((round - 1)) rounds"
        break
    fi
    kind=${kinds[round % 3]}
    cs=${sizes[(round / 3) % 3]}
    d=$T/r$round
    delay=$((5 + RANDOM % 196))
    name="round $round ($kind backing, cluster_size $cs, killed after ${delay} ms)"
    if ! make_image "$d" "$kind" "$cs" >"$T/.mk.out" 2>&1; then
        fail "$name: images created" "$(cat "$T/.mk.out")"
        continue
    fi
    make_commands "$d/cmds"
    "$QED" io "${CMDS[@]}" "$d/img.qed" >"$d/io.out" 2>&1 &
    pid=$!
    sleep "$(printf '0.%03d' "$delay")"
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    st=$?
    # Its image locks go once the kernel has finished with its files.
    wait_unlocked "$d/img.qed" || note "$name: the killed writer's locks stayed"
    note "$name: qed io exit status $st ($([ "$st" -eq 137 ] && echo killed || echo finished first))"

    tap_cmd "$name: qed check -r all repairs it" "$QED" check -r all "$d/img.qed"
    tap_cmd "$name: qemu-img check finds it clean" "$CHECK_CLEAN" "$d/img.qed"
    tap_cmd "$name: qemu-io reads it whole" \
        qemu-io -r -c "read -q 0 $SIZE" "$d/img.qed"
    if ! qemu-img convert -O raw "$d/img.qed" "$d/img.raw" 2>"$T/.cv.err"; then
        fail "$name: the content is what the commands wrote" \
            "qemu-img convert failed: $(cat "$T/.cv.err")"
        continue
    fi
    bsize=0
    [ "$kind" != none ] && bsize=$BASE_SIZE
    run perl -e "$verify_pl" "$d/img.raw" "$d/cmds" "$bsize" "$BASE_PATTERN"
    if [ "$RC" -eq 0 ]; then
        pass "$name: the content is what the commands wrote ($(cat "$OUT"))"
    else
        fail "$name: the content is what the commands wrote" "$(cat "$OUT" "$ERR")"
    fi
    rm -f "$d/img.raw"
done

done_testing
