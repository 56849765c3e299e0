#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed serve` against hostile clients while a well-behaved one keeps working:
# garbage, bad client flags, huge option lengths, bad request magic, requests
# past the end, oversized payloads, clients that disconnect mid-request,
# clients that say nothing (dropped after the 10 s handshake timeout), and a
# client that pipelines reads without reading replies (memory stays bounded).
# Afterwards the good client's data is intact, the server still runs, exits 0
# on SIGTERM, and the image passes qemu-img check.
. "$(dirname "$0")/lib.sh"
require_cmd python3 qemu-io qemu-img
require_qed

TAP_TIMEOUT=20
RAW=$_lib_dir/nbd_raw_client.py
CHECK_CLEAN=${TESTS_DIR:-$_lib_dir/..}/qemu-check-clean

# ---- server management ------------------------------------------------------

. "$_lib_dir/nbd-server.bash"

SOCK=$T/h.sock
URI="nbd+unix:///?socket=$SOCK"
rawc() { run python3 "$RAW" -t 10 -k "$SOCK" "$@"; }
# check_dropped N NAME — the server hung up by step N: it printed "eof t=S"
# with S < 3, or an earlier step already saw the end ("closed").
check_dropped() {
    check_like "$1" "^(eof t=[0-2]\.|data [0-9]+ bytes then eof t=[0-2]\.|closed$)" "$2"
}
# bg NAME STEP... — a raw client in the background, transcript in $T/NAME.out.
bg() {
    local name=$1
    shift
    python3 "$RAW" -t 30 -k "$SOCK" "$@" >"$T/$name.out" 2>&1 &
    _bg_pids+=($!)
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
nfds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
TICKS=$(getconf CLK_TCK)
# AddressSanitizer keeps freed memory in quarantine: RSS bounds mean nothing.
ASAN=0
grep -q __asan_init "$QED" 2>/dev/null && ASAN=1
# rss_below NAME MAX-KB GOT-KB [DIAG...]
rss_below() {
    local name=$1 max=$2 got=$3
    shift 3
    if [ "$ASAN" = 1 ]; then
        skip "$name" "qed is built with AddressSanitizer (RSS ${got} kB)"
        return 0
    fi
    [ "$got" -lt "$max" ]
    ok $? "$name" "$@"
}
# hex8 N / hex4 N / hex2 N — big-endian hex of N.
hex8() { printf '%016x' "$1"; }
hex4() { printf '%08x' "$1"; }
hex2() { printf '%04x' "$1"; }
# request_hex TYPE FLAGS OFFSET LENGTH — an NBD request header.
request_hex() { printf '25609513%s%s%s%s%s' "$(hex2 "$2")" "$(hex2 "$1")" "$(hex8 77)" "$(hex8 "$3")" "$(hex4 "$4")"; }

# ---- the image and the server -------------------------------------------------------

SIZE=$((128 * MiB))
tap_cmd "qed create h.qed (128 MiB, 64k clusters)" "$QED" create -q -o cluster_size=64k h.qed 128M || done_testing
tap_cmd "qed io writes a reference pattern at 32 MiB" "$QED" io -c "write -P 0x5a 32M 8M" h.qed
start_server h "$SOCK" -t h.qed
ok $? "qed serve -t starts" "$(cat "$T/h.err")"
PID=$SRV_PID

# The well-behaved client: writes and reads back patterns in [0, 8 MiB) until
# told to stop, then checks the whole range.
bg good hello go: "worker:60:0:8M:$T/stop-good"
GOOD=${_bg_pids[-1]}

# Clients that say nothing, at every stage of the handshake, and one that
# goes quiet in the transmission phase (no timeout applies there).
IDLE_T0=$(now_ms)
bg idle-connect eof:20
bg idle-greeted greeting eof:20
bg idle-options hello eof:20
bg idle-transmission hello go: sleep:11 read:0:16
sleep 0.3

# ---- garbage in the handshake ---------------------------------------------------------

rawc sendn:1000:0xff eof:3
check_dropped 2 "1000 bytes of 0xff instead of client flags: dropped"
rawc greeting sendn:4096:0 eof:3
check_dropped 3 "zero client flags and garbage: dropped at once"
rawc greeting cflags:0xfffffffe eof:3
check_dropped 3 "bad client flags (unknown bits): dropped at once"
rawc hello send:0123456789abcdeffedcba9876543210 eof:3
check_dropped 3 "an option header without IHAVEOPT: dropped at once"
rawc hello optlen:7:0xffffffff eof:3
check_like 3 "^eof t=0\." "an option claiming 4 GiB of data: dropped at once"
rawc hello optlen:99:0x7fffffff eof:3
check_dropped 3 "an unknown option claiming 2 GiB of data: dropped at once"
rawc hello opt:7:ffffffff eof:1
check_like 2 "^ERR_INVALID$" "GO with a name length of 4 GiB -> NBD_REP_ERR_INVALID"
check_like 3 "^open$" "... and the connection stays open"
rawc hello sendn:65536:0x49 eof:3
check_dropped 3 "64 KiB of 'I' in the option phase: dropped"

# ---- garbage in the transmission phase ------------------------------------------------

rawc hello go: send:deadbeef000000000000000000000000000000000000000000000000 eof:3
check_dropped 4 "a request with bad magic: dropped at once"
rawc hello go: sendn:100000:0x25 eof:3
check_dropped 4 "100000 bytes of garbage as requests: dropped"
rawc hello go: read:$SIZE:4096 write:$((SIZE - 1)):2:1 read:0xfffffffffffffe00:512 \
    trim:$SIZE:64k zero:$((SIZE - 512)):1024 cache:0xffffffffffffffff:1 read:0:0xffffffff \
    bs:0:4096 read:32M:16
check_like 3 "^error=EINVAL" "READ past the end -> EINVAL"
check_like 4 "^error=ENOSPC" "WRITE across the end -> ENOSPC"
check_like 5 "^error=EINVAL" "READ at an offset near 2^64 -> EINVAL"
check_like 6 "^error=(EINVAL|ENOSPC)" "TRIM past the end -> error"
check_like 7 "^error=(EINVAL|ENOSPC)" "WRITE_ZEROES across the end -> error"
check_like 8 "^error=EINVAL" "CACHE at 2^64-1 -> EINVAL"
check_like 9 "^error=EINVAL" "READ of 4 GiB -> EINVAL"
check_like 10 "^error=EINVAL" "BLOCK_STATUS without contexts -> EINVAL"
check_like 11 "^error=0 data=0x5a\*16$" "the connection works after all of that"

# The server's CPU use with only the good client at work, as a baseline.
c0=$(cpu_ticks "$PID")
sleep 1
c1=$(cpu_ticks "$PID")
busy0=$(((c1 - c0) * 100 / TICKS))

# A WRITE header claiming 4 GiB, then 64 MiB of junk: the payload is skipped
# without being buffered.
rss0=$(rss_kb "$PID")
fds0=$(nfds "$PID")
python3 "$RAW" -t 10 -k "$SOCK" hello go: "send:$(request_hex 1 0 0 0xffffffff)" sendn:64M:0xab sleep:0.5 \
    >"$T/oversized.out" 2>&1 &
O=$!
_bg_pids+=("$O")
maxrss=0
while kill -0 "$O" 2>/dev/null; do
    r=$(rss_kb "$PID")
    [ "$r" -gt "$maxrss" ] && maxrss=$r
    sleep 0.05
done
wait "$O"
tap_like "$(sed -n 4p "$T/oversized.out")" '-> sent$' "a 4 GiB WRITE header and 64 MiB of payload are accepted by the socket"
rss_below "oversized WRITE payload: the server does not buffer it (RSS ${rss0} -> max ${maxrss} kB)" \
    $((rss0 + 32 * 1024)) "$maxrss"

# That client went away in the middle of its payload; so does this one, in
# the middle of a valid 1 MiB WRITE.
rawc hello go: "send:$(request_hex 1 0 0 $MiB)" sendn:4096:0xcd
sleep 0.5
c0=$(cpu_ticks "$PID")
sleep 1
c1=$(cpu_ticks "$PID")
busy=$(((c1 - c0) * 100 / TICKS))
[ "$busy" -lt $((busy0 + 50)) ]
ok $? "after clients hang up mid-WRITE-payload the server does not spin (CPU ${busy}%, ${busy0}% before)" \
    "a connection left in PHASE_CLOSING with its WRITE waiting for data gets EPOLLHUP forever"
# The server notices the hang-ups on its next loop rounds: on a loaded
# machine that can take a moment.
for ((i = 0; i < 50; i++)); do
    fds1=$(nfds "$PID")
    [ "$fds1" = "$fds0" ] && break
    sleep 0.1
done
tap_is "$fds1" "$fds0" "after clients hang up mid-WRITE-payload their sockets are closed (open descriptors)"

# ---- connections that come and go --------------------------------------------------

python3 -c '
import socket, sys
for i in range(50):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    if i % 2:
        s.recv(18)
    s.close()' "$SOCK" 2>/dev/null
sleep 0.2
kill -0 "$PID" 2>/dev/null
ok $? "50 clients that connect and hang up at once: the server still runs"
rawc hello go: read:32M:16 read:0:0x2000001
check_like 3 "^error=0 data=0x5a\*16$" "a new client is served after them"
check_like 4 "^error=EINVAL$" "a READ over 32 MiB -> EINVAL"

# A client that disconnects with requests in flight and replies unread.
rawc hello go: "send:$(request_hex 0 0 0 $((32 * MiB)))$(request_hex 0 0 0 $((32 * MiB)))$(request_hex 2 0 0 0)"
sleep 0.3
kill -0 "$PID" 2>/dev/null
ok $? "a client that sends two 32 MiB READs and DISC without reading: the server still runs"

# ---- clients that never read their replies ---------------------------------------------

# flood_rss NAME STEP... — runs a raw client with STEPs (which pipeline
# requests and never read the replies) while sampling the server's RSS;
# passes when it stays below 200 MiB.
flood_rss() {
    local name=$1 f maxrss=0 r
    shift
    python3 "$RAW" -t 10 -k "$SOCK" "$@" >"$T/flood.out" 2>&1 &
    f=$!
    _bg_pids+=("$f")
    while kill -0 "$f" 2>/dev/null; do
        r=$(rss_kb "$PID")
        [ "$r" -gt "$maxrss" ] && maxrss=$r
        sleep 0.05
    done
    wait "$f"
    rss_below "$name: the server's RSS stays below 200 MiB (max ${maxrss} kB)" $((200 * 1024)) "$maxrss" \
        "$(cat "$T/flood.out")"
}

python3 "$RAW" -t 10 -k "$SOCK" hello go: flood:32M:2000:3:32M >"$T/flood1.out" 2>&1 &
F=$!
_bg_pids+=("$F")
sleep 0.5
run qemu-io -f raw -c "write -P 0x6b 9M 1M" -c "read -P 0x6b 9M 1M" "$URI"
ok "$RC" "qemu-io works while a client floods the server with unread READs" "$(cat "$OUT" "$ERR")"
maxrss=0
while kill -0 "$F" 2>/dev/null; do
    r=$(rss_kb "$PID")
    [ "$r" -gt "$maxrss" ] && maxrss=$r
    sleep 0.05
done
wait "$F"
tap_like "$(sed -n 3p "$T/flood1.out")" '-> sent=[0-9]+$' "the flooding client stops being read (back-pressure)"
rss_below "32 MiB READs of data pipelined, replies unread: the server's RSS stays below 200 MiB (max ${maxrss} kB)" \
    $((200 * 1024)) "$maxrss" "$(cat "$T/flood1.out")"
flood_rss "4 KiB READs pipelined, replies unread" hello go: flood:4k:200000:0.5
# With structured replies a READ of a hole is answered by a 32-byte chunk; the
# 32 MiB read buffer must not be kept for every such chunk queued behind
# unread data.
flood_rss "structured replies: a 1 MiB data READ, then 24 32-MiB READs of a hole, replies unread" \
    hello sr go: flood:1M:1:0:32M flood:32M:24:2:64M

# ---- the idle clients ----------------------------------------------------------------

sleep 0.5
run qemu-io -f raw -c "write -P 0x6c 10M 64k" -c "read -P 0x6c 10M 64k" "$URI"
ok "$RC" "qemu-io works while the idle clients wait" "$(cat "$OUT" "$ERR")"
for n in 1 2 3 4; do
    wait "${_bg_pids[$n]}" 2>/dev/null
done
idle_ms=$(($(now_ms) - IDLE_T0))
t_connect=$(sed -n 's/.* -> .*eof t=\([0-9.]*\)$/\1/p' "$T/idle-connect.out")
t_greeted=$(sed -n 's/^eof:20 -> eof t=\([0-9.]*\)$/\1/p' "$T/idle-greeted.out")
t_options=$(sed -n 's/^eof:20 -> eof t=\([0-9.]*\)$/\1/p' "$T/idle-options.out")
in_window() { awk -v t="$1" 'BEGIN { exit !(t != "" && t >= 9 && t <= 12.5) }'; }
in_window "$t_connect"
ok $? "a client that connects and says nothing is dropped after ~10 s (t=$t_connect)" "$(cat "$T/idle-connect.out")"
in_window "$t_greeted"
ok $? "a client that reads the greeting and says nothing is dropped after ~10 s (t=$t_greeted)" \
    "$(cat "$T/idle-greeted.out")"
in_window "$t_options"
ok $? "a client that goes quiet in option haggling is dropped after ~10 s (t=$t_options)" \
    "$(cat "$T/idle-options.out")"
tap_like "$(cat "$T/idle-transmission.out")" 'read:0:16 -> error=0 ' \
    "a client idle for 11 s in the transmission phase is not dropped"

# ---- the good client, the data, the server ---------------------------------------------

kill -0 "$GOOD" 2>/dev/null
ok $? "the good client is still running after ${idle_ms} ms of hostile clients"
touch "$T/stop-good"
wait "$GOOD"
good=$(sed -n 's/^worker:[^ ]* -> //p' "$T/good.out")
tap_like "$good" '^iterations=[1-9][0-9]* errors=0 final=ok ' "the good client saw no error and its data is intact ($good)" \
    "$(cat "$T/good.out")"
maxlat=$(sed -n 's/.*maxlat=\([0-9.]*\).*/\1/p' <<<"$good")
awk -v t="$maxlat" 'BEGIN { exit !(t != "" && t < 2) }'
ok $? "the good client never waited 2 s for a write/read round trip (max ${maxlat} s)"
run qemu-io -f raw -r -c "read -P 0x5a 32M 8M" -c "read -P 0x6b 9M 1M" -c "read -P 0x6c 10M 64k" "$URI"
ok "$RC" "the reference pattern and the qemu-io writes read back through the export" "$(cat "$OUT" "$ERR")"
kill -0 "$PID" 2>/dev/null
ok $? "the server is still running"

stop_server "$PID"
tap_is "$SRV_RC" 0 "SIGTERM: the server exits 0"
tap_is "$(cat "$T/h.err")" "" "the server printed nothing on stderr"
f=$(peek_le h.qed "$HDR_FEATURES" 8)
tap_is "$((f & 2))" 0 "the image is closed clean (NEED_CHECK clear)"
tap_cmd "qemu-img check: the image is clean" "$CHECK_CLEAN" h.qed
run qemu-io -f qed -r -c "read -P 0x5a 32M 8M" -c "read -P 0x6b 9M 1M" h.qed
ok "$RC" "qemu-io reads the data from the file" "$(cat "$OUT" "$ERR")"

done_testing
