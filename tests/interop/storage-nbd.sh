#!/bin/bash
# SPDX-License-Identifier: MIT
# Images inside NBD exports (nbdkit's file and memory plugins on Unix sockets): the
# nbd+unix:// URI opens them anywhere a file name goes, reads agree with
# qemu-img on a local copy, writes in place pass qemu-img check on the file
# behind the export, a backing file can be an NBD URI, and what cannot work
# fails at once with a clear message that never shows a password.
. "$(dirname "$0")/lib.sh"
require_qed
require_cmd qemu-img qemu-io nbdkit
_nbdkit_pids=()
_storage_cleanup() {
    local p
    for p in "${_nbdkit_pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    _cleanup
}
trap _storage_cleanup EXIT

# serve NAME ARGS... — nbdkit -U $T/NAME.sock ARGS... in the background;
# sets uri once the socket is there.
serve() {
    local name=$1 i
    shift
    nbdkit -f -U "$T/$name.sock" "$@" </dev/null >"$T/$name.nbdkit" 2>&1 &
    _nbdkit_pids+=($!)
    for ((i = 0; i < 500; i++)); do
        [ -S "$T/$name.sock" ] && break
        sleep 0.01
    done
    uri="nbd+unix:///?socket=$T/$name.sock"
}

# ---- reading ------------------------------------------------------------------
build_std_image std.qed 65536 4
qemu-img convert -O raw std.qed std.raw
cp std.qed served.qed
serve ro -r file served.qed
run "$QED" info "$uri"
tap_like "$RC $(tr '\n' ' ' <"$OUT")" '^0 .*file format: qed .*disk size: unavailable' "qed info over NBD: the format, and no disk size (as qemu-img says)"
run "$QED" convert -O raw "$uri" out.raw
ok "$RC" "qed convert -O raw of an NBD URI" "$(cat "$ERR")"
same_raw "it equals qemu-img convert of the local image" out.raw std.raw
"$QED" map --output=json "$uri" | sed 's/"offset": [0-9]*//' >map.nbd
"$QED" map --output=json std.qed | sed 's/"offset": [0-9]*//' >map.local
run diff map.local map.nbd
ok "$RC" "qed map over NBD is the local image's map" "$(cat "$OUT")"
run "$QED" check "$uri"
tap_is "$RC" 0 "qed check of the image over NBD: clean"
run "$QED" io -c "write 0 512" "$uri"
tap_like "$RC $(cat "$ERR")" '^1 .*read-only' "writing through a read-only export fails at open, saying so"
run "$QED" io -r -f qed -c "read -P 0x11 0 512" "$uri"
tap_like "$RC $(cat "$OUT")" '^0 read 512/512' "qed io -r -f qed reads over NBD"

# ---- writing in place ------------------------------------------------------------
cp std.qed rw.qed
serve rw file rw.qed
run "$QED" io -c "write -P 0x5a 0 4096" -c "write -z 65536 4096" -c "write -P 0x6b 196608 65536" "$uri"
ok "$RC" "qed io writes into allocated clusters through NBD" "$(cat "$ERR")"
run "$QED" io -c "write -P 0x7c 131072 65536" "$uri"
tap_like "$RC $(cat "$OUT" "$ERR")" '^1 .*No space left on device' "a write that needs a cluster past the export's end fails with ENOSPC"
kill "${_nbdkit_pids[-1]}"; wait "${_nbdkit_pids[-1]}" 2>/dev/null
run "$QED" check -r all rw.qed
ok "$RC" "qed check -r all: the failed allocation leaves nothing a check cannot repair" "$(cat "$OUT" "$ERR")"
qemu_check "qemu-img check on the file behind the export" rw.qed
qemu_io -f qed rw.qed -- "read -P 0x5a 0 4096" "read -P 0 65536 4096" "read -P 0x6b 196608 65536"
ok $? "qemu-io reads what was written through NBD" "$(cat "$OUT" "$ERR")"

# ---- an image in nbdkit's memory plugin (a RAM disk export) -----------------------
# The image goes in with nbdcopy; every cluster it will need is allocated
# inside the 8 MiB export, so writes land in place there.
serve mem memory 8M
"$QED" create -q -f qed mem.qed 4M
"$QED" io -c "write -P 0x21 0 4M" mem.qed >/dev/null
run nbdcopy mem.qed "$uri"
ok "$RC" "nbdcopy puts a QED image into an nbdkit memory export" "$(cat "$ERR")"
run "$QED" io -c "write -P 0x42 1M 64k" -c "write -z 2M 4096" -c "read -P 0x42 1M 64k" -c "read -P 0x21 0 4096" "$uri"
ok "$RC" "qed io writes and reads it back through nbd+unix:// (memory plugin)" "$(cat "$ERR")"
"$QED" io -c "write -P 0x42 1M 64k" -c "write -z 2M 4096" mem.qed >/dev/null
qemu-img convert -O raw mem.qed mem.raw
run "$QED" convert -O raw "$uri" mem.nbd.raw
same_raw "it reads as the same writes made to a local copy" mem.nbd.raw mem.raw
# The export is larger than the image: both checkers count the space past
# the image's end as leaked clusters, nothing else.
run qemu-img check -f qed --output=json "$uri"
cp "$OUT" mem.check.json
corr=$(json_get mem.check.json corruptions 2>/dev/null)
tap_is "$RC ${corr:-0} $(json_get mem.check.json leaks)" \
    "3 0 $(( (8 * MiB - $(file_size mem.qed)) / 65536 ))" \
    "qemu-img check of the image in the memory export: no corruption; the export's space past the image shows as leaks"

# ---- a backing file on NBD ------------------------------------------------------
cp std.qed base.qed
serve base -r file base.qed
run "$QED" create -f qed -b "$uri" -F qed top.qed
ok "$RC" "qed create -b NBD-URI: an overlay on a base in an NBD export" "$(cat "$ERR")"
"$QED" io -c "write -P 0x99 4096 4096" top.qed >/dev/null
run "$QED" info top.qed
tap_like "$(cat "$OUT")" "backing file: nbd\+unix:///\?socket=" "qed info shows the backing URI"
run "$QED" convert -O raw top.qed top.raw
ok "$RC" "qed convert reads the overlay through its NBD base"
qemu-img convert -O raw top.qed top.qemu.raw
same_raw "qemu-img reads the same overlay identically" top.raw top.qemu.raw

# ---- a chain inside one server's exports: relative names resolve in the URI ----------
mkdir exports
build_qed_chain localchain
cp localchain/base.qed localchain/mid.qed exports/
qemu-img convert -O raw localchain/top.qed chain.raw
cp localchain/top.qed top2.qed
serve dir -r file dir="$T/exports"
"$QED" rebase -u -b "nbd+unix:///mid.qed?socket=$T/dir.sock" -F qed top2.qed
run "$QED" info --backing-chain top2.qed
tap_like "$(tr '\n' ' ' <"$OUT")" "image: nbd\+unix:///mid.qed\?socket=[^ ]*dir.sock .*image: nbd\+unix:///base.qed\?socket=[^ ]*dir.sock" \
    "mid.qed's relative backing name base.qed resolves to the export base.qed on the same server"
run "$QED" convert -O raw top2.qed chain2.raw
ok "$RC" "a local top over two layers in NBD exports converts" "$(cat "$ERR")"
same_raw "and reads as qemu-img reads the same chain of local files" chain2.raw chain.raw

# ---- a server that fails 10 % of requests (nbdkit's error filter) --------------------
"$QED" create -q -o cluster_size=64k faulty.qed 16M
"$QED" io -c "write -P 0x42 0 8M" faulty.qed >/dev/null
serve faulty --filter=error file faulty.qed error-rate=10%
# io_until_open ARGS... — qed io ARGS, again while the open itself fails
# (the header or a table read may be one of the failed requests).
io_until_open() {
    local i
    for ((i = 0; i < 20; i++)); do
        run "$QED" io "$@"
        grep -q '^qed: nbd' "$ERR" && ! grep -Eq '^(read|wrote) ' "$OUT" || return 0
    done
}
reads=()
for ((i = 0; i < 128; i++)); do reads+=(-c "read -P 0x42 $((i * 65536)) 65536"); done
io_until_open -r "${reads[@]}" "$uri"
good=$(grep -c '^read 65536/65536' "$OUT")
bad=$(grep -c 'read failed: Input/output error' "$OUT")
tap_is "$((good + bad))" 128 "each of 128 reads either succeeds or fails with EIO ($good good, $bad EIO)"
ok $(( good >= 64 && bad >= 1 ? 0 : 1 )) "both happen at a 10 % error rate"
tap_is "$(grep -c 'Pattern verification\|mismatch' "$OUT" "$ERR" | awk -F: '{s += $NF} END {print s}')" 0 "no read returns wrong data"
writes=()
for ((i = 0; i < 128; i++)); do writes+=(-c "write -P 0x43 $((i * 65536)) 65536"); done
io_until_open "${writes[@]}" "$uri"
good=$(grep -c '^wrote 65536/65536' "$OUT")
bad=$(grep -c 'write failed: Input/output error' "$OUT")
tap_is "$((good + bad))" 128 "each of 128 writes either succeeds or fails with EIO ($good good, $bad EIO)"
kill "${_nbdkit_pids[-1]}"; wait "${_nbdkit_pids[-1]}" 2>/dev/null
run "$QED" check faulty.qed
ok "$RC" "the image behind the faulty server is consistent (qed check)" "$(cat "$OUT" "$ERR")"
qemu_check "and qemu-img check finds it clean" faulty.qed

# ---- a server that goes away and comes back; one that stalls --------------------------
"$QED" create -q -o cluster_size=64k back.qed 4M
"$QED" io -c "write -P 0x61 0 1M" back.qed >/dev/null
serve back file back.qed
first=${_nbdkit_pids[-1]}
# qed io reads, sleeps 1.5 s (meanwhile the server is killed and started
# again on the same socket), then reads and writes again.
( sleep 0.5; kill -9 "$first"; rm -f "$T/back.sock"; sleep 0.3
  nbdkit -f -U "$T/back.sock" file back.qed </dev/null >/dev/null 2>&1 &
  echo $! >back.pid ) &
restarter=$!
run "$QED" io -c "read -P 0x61 0 64k" -c "sleep 1500" -c "read -P 0x61 64k 64k" \
    -c "write -P 0x62 128k 64k" -c "read -P 0x62 128k 64k" "$uri"
wait "$restarter"
_nbdkit_pids+=("$(cat back.pid)")
tap_is "$RC $(grep -c '^read 65536/65536\|^wrote 65536/65536' "$OUT")" "0 4" \
    "after the server was killed and started again, reads and writes go on (reconnected)" 
kill "${_nbdkit_pids[-1]}"; wait "${_nbdkit_pids[-1]}" 2>/dev/null
qemu_io -f qed back.qed -- "read -P 0x62 128k 64k"
ok $? "the write made on the new connection is in the image"

serve stall --filter=delay file back.qed delay-read=60
start=$(date +%s)
run "$QED" io -r -c "read 0 4k" "$uri"
took=$(( $(date +%s) - start ))
tap_like "$RC $(cat "$ERR")" '^1 .*Connection timed out' "a server that answers nothing: the request fails with ETIMEDOUT"
ok $(( took >= 29 && took <= 40 ? 0 : 1 )) "after the documented 30 s without an answer ($took s)"

# ---- errors -----------------------------------------------------------------------
run "$QED" info "nbd+unix:///?socket=$T/nobody.sock"
tap_like "$RC $(cat "$ERR")" '^1 qed: nbd\+unix:///\?socket=.*nobody.sock: .*(No such file|connect)' "an export nobody serves: the error names the URI"
run "$QED" info "nbd://alice:s3cr3t@127.0.0.1:1/"
tap_like "$RC $(cat "$ERR")" '^1 qed: nbd://alice:\*\*\*@127.0.0.1:1/: ' "a URI's password is shown as ***"
tap_is "$(grep -c s3cr3t "$ERR")" 0 "and appears nowhere in the message"
run "$QED" create -f qed "nbd+unix:///?socket=$T/x.sock" 1M
tap_like "$RC $(cat "$ERR")" '^1 .*cannot be created in an NBD export' "qed create on an NBD URI is refused, saying why"

done_testing
