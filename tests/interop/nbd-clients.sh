#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed serve` with real NBD clients: qemu-io and qemu-img (QEMU 7.2), nbdinfo
# and nbdcopy (libnbd), fio's nbd engine.  Data written through the export
# reads back (through NBD and from the file after the server stops); exports
# compare equal to `qed convert -O raw`; nbdinfo's flags, block sizes and
# contexts; `nbdinfo --map` (base:allocation and qemu:allocation-depth) agrees
# with `qed map`; socket activation; -x, -r, -e 1.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io nbdinfo nbdcopy fio python3 perl cmp
require_qed

TAP_TIMEOUT=30
RAW=$_lib_dir/nbd_raw_client.py
CHECK_CLEAN=${TESTS_DIR:-$_lib_dir/..}/qemu-check-clean

# ---- server management ------------------------------------------------------

. "$_lib_dir/nbd-server.bash"

# wait_line FILE REGEX — waits (up to 10 s) for a line matching REGEX.
wait_line() {
    local i
    for ((i = 0; i < 1000; i++)); do
        grep -Eq -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.01
    done
    return 1
}

uri() { printf 'nbd+unix:///%s?socket=%s' "${2:-}" "$1"; }

# need_check_clear NAME IMG — bit 0x2 of the header's features is clear.
need_check_clear() {
    local f
    f=$(peek_le "$2" "$HDR_FEATURES" 8)
    tap_is "$((f & 2))" 0 "$1"
}

# ---- map comparison ------------------------------------------------------------

# nbd_map_agrees NAME IMG SOCK CONTEXT — `nbdinfo --map=CONTEXT --json` of the
# export equals what `qed map --output=json IMG` implies: for base:allocation
# type = (data ? 0 : HOLE) | (zero ? ZERO : 0); for qemu:allocation-depth
# type = present ? depth + 1 : 0.  Adjacent equal entries are merged on both
# sides before comparing.
nbd_map_agrees() {
    local name=$1 img=$2 sock=$3 ctx=$4
    "$QED" map --output=json "$img" >"$T/.qedmap.json" 2>"$T/.qedmap.err" || {
        fail "$name" "qed map failed: $(cat "$T/.qedmap.err")"
        return 1
    }
    run nbdinfo --map="$ctx" --json "$(uri "$sock")"
    if [ "$RC" -ne 0 ]; then
        fail "$name"
        _run_diag nbdinfo --map="$ctx" --json "$(uri "$sock")"
        return 1
    fi
    local res
    res=$(perl -MJSON::PP -e '
        my ($qf, $nf, $ctx) = @ARGV;
        sub load { open(my $fh, "<", $_[0]) or die "$_[0]: $!\n"; local $/; decode_json(<$fh>) }
        sub merged {
            my @out;
            for my $e (@_) {
                if (@out && $out[-1][0] + $out[-1][1] == $e->[0] && $out[-1][2] == $e->[2]) {
                    $out[-1][1] += $e->[1];
                } else {
                    push @out, [@$e];
                }
            }
            return map { "$_->[0]+$_->[1]:$_->[2]" } @out;
        }
        my @want = merged(map {
            my $t = $ctx eq "base:allocation"
                ? (($_->{data} ? 0 : 1) | ($_->{zero} ? 2 : 0))
                : ($_->{present} ? $_->{depth} + 1 : 0);
            [$_->{start}, $_->{length}, $t]
        } grep { $_->{length} > 0 } @{ load($qf) });
        my @got = merged(map { [$_->{offset}, $_->{length}, $_->{type}] } @{ load($nf) });
        my ($w, $g) = (join(" ", @want), join(" ", @got));
        if ($w ne $g) { print "want (qed map): $w\ngot (nbdinfo): $g\n"; exit 1 }
    ' "$T/.qedmap.json" "$OUT" "$ctx" 2>&1)
    if [ $? -eq 0 ]; then
        pass "$name"
        return 0
    fi
    fail "$name" "$res"
    return 1
}

# ---- read-only views of images: maps, copies, comparisons -----------------------

# export_agrees LABEL IMG — serves IMG read-only and checks nbdinfo --map for
# both contexts, qemu-img convert/compare and nbdcopy against `qed convert`.
export_agrees() {
    local label=$1 img=$2 sock=$T/ro.sock
    "$QED" convert -O raw "$img" "$T/ref.raw" >/dev/null 2>&1 || {
        fail "$label: qed convert -O raw (reference)"
        return 1
    }
    if ! start_server ro "$sock" -r -t "$img"; then
        fail "$label: qed serve -r starts" "$(cat "$T/ro.err")"
        return 1
    fi
    nbd_map_agrees "$label: nbdinfo --map (base:allocation) agrees with qed map" "$img" "$sock" base:allocation
    nbd_map_agrees "$label: nbdinfo --map=qemu:allocation-depth agrees with qed map" "$img" "$sock" \
        qemu:allocation-depth
    rm -f "$T/q.raw" "$T/n.raw"
    tap_cmd "$label: qemu-img convert out of the export" qemu-img convert -f raw -O raw "$(uri "$sock")" "$T/q.raw" &&
        same_raw "$label: qemu-img convert of the export = qed convert -O raw" "$T/q.raw" "$T/ref.raw"
    tap_cmd "$label: qemu-img compare export vs the image file" \
        qemu-img compare -f raw -F qed "$(uri "$sock")" "$img"
    tap_cmd "$label: nbdcopy out of the export" nbdcopy "$(uri "$sock")" "$T/n.raw" &&
        same_raw "$label: nbdcopy of the export = qed convert -O raw" "$T/n.raw" "$T/ref.raw"
    stop_server "$SRV_PID"
    tap_is "$SRV_RC" 0 "$label: the read-only server exits 0 on SIGTERM"
}

build_std_image std4k.qed 4096 2
export_agrees "4k clusters, data, zero clusters, unallocated" std4k.qed
run nbdinfo --json -- [ "$QED" serve -r std4k.qed ]
cp "$OUT" info4k.json
tap_json_field info4k.json exports/0/block_size_preferred 4096 "4k clusters: nbdinfo block_size_preferred 4096"
build_std_image std64k.qed 65536 4
export_agrees "64k clusters" std64k.qed
build_raw_backed rb
export_agrees "over a shorter raw backing file" rb/top.qed
build_qed_chain chain
export_agrees "3-deep QED chain" chain/top.qed

# ---- nbdinfo --json --------------------------------------------------------------

SOCK=$T/w.sock
tap_cmd "qed create w.qed (32 MiB, 64k clusters)" "$QED" create -q -o cluster_size=64k w.qed 32M
start_server w "$SOCK" -t w.qed
ok $? "qed serve -t -k w.qed starts" "$(cat "$T/w.err")"
URI=$(uri "$SOCK")

run nbdinfo --json "$URI"
ok "$RC" "nbdinfo --json" "$(cat "$ERR")"
cp "$OUT" info.json
J='exports/0'
tap_json_field info.json "$J/export-size" $((32 * MiB)) "nbdinfo: export-size"
tap_json_field info.json "$J/is_read_only" false "nbdinfo: is_read_only false"
for f in can_multi_conn can_fua can_trim can_zero can_fast_zero can_df can_cache can_flush; do
    tap_json_field info.json "$J/$f" true "nbdinfo: $f true"
done
tap_json_field info.json "$J/block_size_minimum" 1 "nbdinfo: block_size_minimum 1"
tap_json_field info.json "$J/block_size_preferred" 65536 "nbdinfo: block_size_preferred = cluster size (64k)"
tap_json_field info.json "$J/block_size_maximum" 33554432 "nbdinfo: block_size_maximum 32 MiB"
tap_json_field info.json "$J/contexts" '["base:allocation","qemu:allocation-depth"]' \
    "nbdinfo: contexts base:allocation and qemu:allocation-depth"
tap_json_field info.json "structured" true "nbdinfo: structured replies"
tap_json_field info.json "protocol" newstyle-fixed "nbdinfo: fixed newstyle"

# ---- qemu-io -------------------------------------------------------------------

qemu_io -f raw "$URI" -- "write -P 0x41 0 64k" "write -P 0x42 100000 3000" "write -P 0x43 1M 256k" \
    "write -z 1M 128k" "write -P 0x44 2M 64k" "discard 2M 64k" "write -P 0x45 3M 4k" "write -z -u 3M 4k" flush \
    "aio_write -P 0x46 4M 64k" "aio_write -P 0x47 $((5 * MiB + 512)) 8k" aio_flush \
    "write -P 0x48 $((32 * MiB - 512)) 512"
ok $? "qemu-io over nbd+unix: write -P, write -z, discard, flush, aio_write" "$(cat "$OUT" "$ERR")"
READS=("read -P 0x41 0 64k" "read -P 0 64k 34464" "read -P 0x42 100000 3000" "read -P 0 1M 128k"
    "read -P 0x43 $((MiB + 128 * KiB)) 128k" "read -P 0 3M 4k" "read -P 0x46 4M 64k"
    "read -P 0x47 $((5 * MiB + 512)) 8k" "read -P 0 $((5 * MiB)) 512" "read -P 0x48 $((32 * MiB - 512)) 512")
qemu_io -f raw -r "$URI" -- "${READS[@]}"
ok $? "qemu-io read -P through the export sees every write" "$(cat "$OUT" "$ERR")"
qemu_io -f raw "$URI" -- "read -P 0 $((32 * MiB - 512)) 1024"
tap_is "$RC" 1 "qemu-io: a read across the end of the export fails"

# ---- qemu-img and nbdcopy into the export ----------------------------------------

perl -e 'binmode STDOUT; for my $i (0 .. 511) { print chr(($i * 7 + 1) % 256) x 65536 }' >src1.raw
truncate -s $((32 * MiB)) src1.raw
tap_cmd "qemu-img convert -n into the export" qemu-img convert -n -f raw -O raw src1.raw "$URI"
tap_cmd "qemu-img compare: the export equals the source" qemu-img compare -f raw -F raw src1.raw "$URI"

head -c $((3 * MiB)) /dev/urandom >src2.raw
truncate -s $((20 * MiB)) src2.raw
perl -e 'binmode STDOUT; print "\x5a" x (1 << 20)' >>src2.raw
truncate -s $((32 * MiB)) src2.raw
tap_cmd "nbdcopy into the export" nbdcopy src2.raw "$URI"
rm -f back.raw
tap_cmd "nbdcopy out of the export" nbdcopy "$URI" back.raw &&
    same_raw "nbdcopy round trip: what went in comes out" back.raw src2.raw

stop_server "$SRV_PID"
tap_is "$SRV_RC" 0 "the server exits 0 on SIGTERM"
tap_is "$([ -e "$SOCK" ] && echo exists || echo removed)" removed "the socket file is removed"
need_check_clear "w.qed: NEED_CHECK clear after the server stops" w.qed
tap_cmd "w.qed passes qemu-img check" "$CHECK_CLEAN" w.qed
rm -f w.raw
"$QED" convert -O raw w.qed w.raw >/dev/null 2>&1
same_raw "w.qed holds what nbdcopy wrote" w.raw src2.raw
tap_cmd "qemu-img compare w.qed with the source" qemu-img compare -f qed -F raw w.qed src2.raw

# ---- fio ---------------------------------------------------------------------------

tap_cmd "qed create f.qed (16 MiB, 64k clusters)" "$QED" create -q -o cluster_size=64k f.qed 16M
start_server f "$SOCK" -t f.qed
ok $? "qed serve f.qed starts" "$(cat "$T/f.err")"
run fio --name=nbdverify --ioengine=nbd --uri="$(uri "$SOCK")" --rw=randwrite --bs=4k --bsrange=512-64k \
    --size=4M --offset_increment=4M --numjobs=4 --iodepth=8 --verify=crc32c --verify_fatal=1 \
    --group_reporting
ok "$RC" "fio nbd engine: 4 jobs on disjoint ranges, verify=crc32c, exit 0" \
    "$(tail -c 2000 "$OUT")" "$(cat "$ERR")"
tap_like "$(grep -o 'err= *[0-9]*' "$OUT" | sort -u | tr '\n' ' ')" '^err= *0 $' "fio reports err=0"
run fio --name=nbdmixed --ioengine=nbd --uri="$(uri "$SOCK")" --rw=randrw --bs=4k --size=4M \
    --offset_increment=4M --numjobs=4 --iodepth=16 --time_based --runtime=2 --group_reporting
ok "$RC" "fio nbd engine: 4 jobs of random reads and writes for 2 s" "$(tail -c 2000 "$OUT")" "$(cat "$ERR")"
stop_server "$SRV_PID"
tap_is "$SRV_RC" 0 "the server exits 0 after fio"
tap_cmd "f.qed passes qemu-img check after fio" "$CHECK_CLEAN" f.qed

# ---- socket activation -----------------------------------------------------------

run nbdinfo --size -- [ "$QED" serve f.qed ]
ok "$RC" "socket activation: nbdinfo --size -- [ qed serve IMG ] exits 0" "$(cat "$ERR")"
tap_is "$(cat "$OUT")" $((16 * MiB)) "socket activation: nbdinfo prints the size"
run nbdinfo --map -- [ "$QED" serve -r std64k.qed ]
ok "$RC" "socket activation with -r: nbdinfo --map works" "$(cat "$ERR")"

# ---- -x NAME ---------------------------------------------------------------------

start_server named "$SOCK" -t -x disk1 f.qed
ok $? "qed serve -x disk1 starts" "$(cat "$T/named.err")"
tap_cmd "nbdinfo --size with the right export name" nbdinfo --size "$(uri "$SOCK" disk1)"
tap_is "$(cat "$OUT")" $((16 * MiB)) "the named export has the image's size"
tap_cmd_rc 1 "nbdinfo with a wrong export name fails" nbdinfo --size "$(uri "$SOCK" wrong)"
tap_cmd_rc 1 "nbdinfo with the default (empty) name fails on a named export" nbdinfo --size "$(uri "$SOCK")"
qemu_io -f raw -r "$(uri "$SOCK" disk1)" -- "read 0 64k"
ok $? "qemu-io reads the named export" "$(cat "$OUT" "$ERR")"
qemu_io -f raw -r "$(uri "$SOCK" wrong)" -- "read 0 64k"
tap_is "$RC" 1 "qemu-io with a wrong export name fails"
run nbdinfo --list --json "$(uri "$SOCK" disk1)"
tap_like "$(cat "$OUT")" '"export-name": "disk1"' "nbdinfo --list shows the export name"
stop_server "$SRV_PID"

# ---- -r ------------------------------------------------------------------------------

cp f.qed f.before
start_server ro "$SOCK" -t -r f.qed
ok $? "qed serve -r starts" "$(cat "$T/ro.err")"
run nbdinfo --json "$(uri "$SOCK")"
cp "$OUT" ro.json
tap_json_field ro.json exports/0/is_read_only true "read-only export: nbdinfo is_read_only true"
tap_cmd "read-only export: nbdinfo --is read-only exits 0" nbdinfo --is read-only "$(uri "$SOCK")"
qemu_io -f raw "$(uri "$SOCK")" -- "write -P 0x11 0 4k"
tap_is "$RC" 1 "read-only export: qemu-io write fails"
qemu_io -f raw "$(uri "$SOCK")" -- "write -z 0 64k"
tap_is "$RC" 1 "read-only export: qemu-io write -z fails"
qemu_io -f raw "$(uri "$SOCK")" -- "discard 0 64k"
tap_is "$RC" 1 "read-only export: qemu-io discard fails"
qemu_io -f raw -r "$(uri "$SOCK")" -- "read 0 1M"
ok $? "read-only export: qemu-io read works" "$(cat "$OUT" "$ERR")"
stop_server "$SRV_PID"
tap_is "$SRV_RC" 0 "read-only server exits 0"
cmp -s f.qed f.before
ok $? "read-only export: the image file is unchanged"

# ---- -e 1 -------------------------------------------------------------------------------

# With -t: a second client is not answered while the first is connected, and
# is served once the first leaves.
start_server e1 "$SOCK" -t -e 1 f.qed
ok $? "qed serve -e 1 -t starts" "$(cat "$T/e1.err")"
t0=$(date +%s%N)
python3 "$RAW" -k "$SOCK" hello go: sleep:2 read:0:16 >"$T/a.out" 2>&1 &
A=$!
wait_line "$T/a.out" '^go:'
run timeout 1 nbdinfo --size "$(uri "$SOCK")"
tap_is "$RC" 124 "-e 1: a second client gets no answer while the first is connected (nbdinfo waits)"
run python3 "$RAW" -t 8 -k "$SOCK" hello go: read:0:16
t1=$(date +%s%N)
wait "$A"
tap_like "$(sed -n 3p "$OUT")" '-> error=0 ' "-e 1: the waiting client is served once the first leaves"
waited=$(((t1 - t0) / 1000000))
[ "$waited" -ge 1900 ]
ok $? "-e 1: ... and only then (served ${waited} ms after the first client, which held on 2 s, connected)"
tap_like "$(cat "$T/a.out")" 'read:0:16 -> error=0' "-e 1: the first client was unaffected"
tap_cmd "-e 1: a new client works when the others are gone" nbdinfo --size "$(uri "$SOCK")"
stop_server "$SRV_PID"
tap_is "$SRV_RC" 0 "-e 1 server exits 0"

# Without -t the server exits when its last client leaves: a client that was
# waiting for the slot is served first, then the server exits.
start_server e1b "$SOCK" -e 1 f.qed
python3 "$RAW" -k "$SOCK" hello go: sleep:1 read:0:16 >"$T/a.out" 2>&1 &
A=$!
wait_line "$T/a.out" '^go:'
run python3 "$RAW" -t 8 -k "$SOCK" hello go: read:0:16
wait "$A"
tap_like "$(sed -n 3p "$OUT")" '-> error=0 ' \
    "-e 1 without -t: a client waiting for the slot is served once the first leaves"
for ((i = 0; i < 300; i++)); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.01; done
wait "$SRV_PID"
tap_is "$?" 0 "-e 1 without -t: the server exited 0 after its last client left"

# A connection that never negotiates is not a client: its leaving does not
# end a server started without -t.
start_server e1c "$SOCK" f.qed
run python3 "$RAW" -t 8 -k "$SOCK" greeting
run python3 "$RAW" -t 8 -k "$SOCK" hello abort
sleep 0.2
kill -0 "$SRV_PID" 2>/dev/null
ok $? "without -t: connections that leave before negotiating do not end the server"
run python3 "$RAW" -t 8 -k "$SOCK" hello go: read:0:16
tap_like "$(sed -n 3p "$OUT")" '-> error=0 ' "without -t: ... and a client is served after them"
for ((i = 0; i < 300; i++)); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.01; done
wait "$SRV_PID"
tap_is "$?" 0 "without -t: the server exited 0 after that client left"

done_testing
