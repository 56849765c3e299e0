#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed serve --tls` against hostile clients: plaintext injected after
# STARTTLS is never read as NBD (the STARTTLS injection class), options
# negotiated in plaintext do not survive STARTTLS (nbdkit's CVE-2021-3716),
# many requests packed in one TLS record (decrypted data waiting inside the
# session is read though the socket is quiet), garbage instead of a
# ClientHello, clients that vanish mid-handshake or never finish it (dropped
# by --handshake-timeout), and 50 concurrent TLS handshakes, some stalled,
# while the others are served.
. "$(dirname "$0")/lib.sh"
require_cmd python3 nbdinfo qemu-img
require_qed
. "$_lib_dir/nbd-tls-common.bash"
tls_setup

TAP_TIMEOUT=30
SOCK=$T/h.sock
URI="nbds+unix:///?socket=$SOCK&tls-certificates=$PKI/client"
rawc() { run python3 "$RAW" -t 10 -k "$SOCK" "$@"; }
still_serves() {
    run nbdinfo --size "$URI"
    tap_is "$RC:$(cat "$OUT")" "0:$((16 * MiB))" "$1"
}
bg() {
    local name=$1
    shift
    python3 "$RAW" -t 30 -k "$SOCK" "$@" >"$T/$name.out" 2>&1 &
    _bg_pids+=($!)
}
# option bytes: IHAVEOPT, option, length 0
opt_hex() { printf '49484156454f5054%08x00000000' "$1"; }

"$QED" create -f qed img.qed 16M >/dev/null || bail_out "qed create failed"
"$QED" io -c "write -P 0x5a 0 64k" img.qed >/dev/null || bail_out "qed io failed"

# --tls=on: a plaintext client may negotiate, so plaintext state exists.
start_server h "$SOCK" -t -e 64 --handshake-timeout=2 --tls=on \
    --tls-certificates="$PKI/server" img.qed ||
    bail_out "qed serve did not start: $(cat "$T/h.err")"

# ---- plaintext after STARTTLS --------------------------------------------------------
# The server hangs up on the bytes it did not read: the peer may see a reset
# before it reads the ACK ("eof" at step 3, "closed" at step 4).  What
# matters: no reply to the plaintext option ever comes.
no_reply() {
    check_like 3 "^(ACK\[opt=5\]|eof)$" "$1: STARTTLS acknowledged (or the connection reset)"
    check_like 4 "^(eof t=|closed$)" "$1: never answered, the connection is dropped"
}
rawc hello send:"$(opt_hex 5)$(opt_hex 3)" opt:0 eof:3
no_reply "plaintext LIST sent behind STARTTLS"
# The ACK queued behind 20000 unread replies: still nothing read after it.
rawc hello burst:3:20000:"$(opt_hex 5)$(opt_hex 3)" drainopts:3
check_like 3 "^replies=40001 last=SERVER\[opt=3\],ACK\[opt=3\],ACK\[opt=5\] then (eof|junk)$" \
    "STARTTLS queued behind unread replies: the plaintext LIST after it is never answered"
rawc hello send:"$(opt_hex 5)$(opt_hex 8)$(opt_hex 7)" opt:0 eof:3
no_reply "plaintext STRUCTURED_REPLY and GO sent behind STARTTLS"
rawc hello send:"$(opt_hex 5)$(opt_hex 2)" opt:0 eof:3
no_reply "plaintext ABORT sent behind STARTTLS"

# ---- plaintext negotiation does not survive STARTTLS ---------------------------------
rawc hello sr setmeta::base:allocation starttls tls:"$PKI/client" go: read:0:512 bs:0:4096
check_like 2 "^ACK$" "plaintext STRUCTURED_REPLY is accepted under --tls=on"
check_like 5 "^ok TLSv1\.[23]$" "then STARTTLS and the TLS handshake"
check_like 6 "flags=0x[0-9a-f]*[0-7][0-9a-f]\)" "after TLS, GO's flags lack DF: structured replies were forgotten"
check_like 7 "^error=0 data=0x5a\*512$" "after TLS, READ gets a simple reply, not a structured one"
check_like 8 "^error=EINVAL$" "after TLS, BLOCK_STATUS is refused: the plaintext meta context was forgotten"

# ---- records holding many requests -----------------------------------------------------
# python's ssl packs a burst of requests into few records: most of them sit
# decrypted inside the session, where the socket's readiness cannot tell.
rawc hello starttls tls:"$PKI/client" go: batchreads:300:4096 replies:10 \
    pipeline:1000:512 write:0:100000:0x11 read:0:100000
check_like 6 "^replies=300/300 errors=none" "300 reads in one TLS record: all answered (past the 64-request limit)"
check_like 7 "^replies=1000 cookies=ok$" "1000 pipelined reads: all answered"
check_like 9 "^error=0 data=0x11\*100000$" "a 100000-byte write over TLS reads back"

# ---- broken handshakes -----------------------------------------------------------------
rawc hello starttls sendn:300:0x41 eof:3
check_like 4 "^(data [0-9]+ bytes then )?eof t=[0-1]\." "garbage instead of a ClientHello: dropped at once"
rawc hello starttls clienthello:"$PKI/client"
check_like 3 "^sent [0-9]+ bytes$" "a client sends its ClientHello and disconnects mid-handshake"
still_serves "the server still serves after the broken handshakes"
rawc hello starttls eof:6
check_like 3 "^eof t=[2-3]\." "a client that never starts the TLS handshake is dropped by the 2 s handshake timeout"
rawc hello starttls clienthello:"$PKI/client" eof:6
check_like 4 "^data [0-9]+ bytes then eof t=[2-3]\." "a client that never finishes the TLS handshake is dropped by the handshake timeout"

# ---- 50 handshakes at once, 5 of them stalled ----------------------------------------
for i in 1 2 3 4 5; do
    bg slow$i hello starttls clienthello:"$PKI/client" sleep:1.5
done
for i in $(seq 1 45); do
    timeout -k 2 25 nbdinfo --size "$URI" >"$T/fast$i.out" 2>&1 &
    _bg_pids+=($!)
done
start=$(date +%s)
wait "${_bg_pids[@]}" 2>/dev/null
good=$(grep -lx $((16 * MiB)) "$T"/fast*.out | wc -l)
tap_is "$good" 45 "45 concurrent TLS clients are all served while 5 handshakes stall"
tap_like "$(($(date +%s) - start))" "^([0-9]|1[0-9])$" "and within 20 s"
still_serves "the server serves after the crowd"
stop_server "$SRV_PID"
tap_is "$SRV_RC" 0 "the server exits 0 on SIGTERM"
run qemu-img check -f qed img.qed
ok $RC "qemu-img check: the image is clean" "$(cat "$OUT" "$ERR")"
done_testing
