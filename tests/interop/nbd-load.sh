#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed serve` under hostile load, one case per section, each bounded to a few
# seconds:
#   - 1000 silent sockets, every one dropped reconnected at once: a real
#     client is served within 1 s (Unix and TCP, plaintext and TLS);
#   - a 64-descriptor limit with 100 silent sockets: the server burns under
#     0.1 CPU-seconds per second, serves a real client within 1 s, and says
#     so in one warning line;
#   - 16 clients that queue 32 MiB READs and never read: RSS stays under
#     600 MiB and another client is served within 1 s; a client trickling a
#     32 MiB WRITE holds nothing but its own connection;
#   - 10,000 connections at once (9,000 negotiated and idle over a Unix
#     socket, 1,000 over TCP writing, flushing and verifying their data):
#     no error, RSS under 256 MiB, qemu-img check clean.
# The many sockets come from one process (nbd_swarm.py); the descriptor
# limit from prlimit.
. "$(dirname "$0")/lib.sh"
require_cmd python3 nbdinfo qemu-io qemu-img prlimit
require_qed

TAP_TIMEOUT=30
. "$_lib_dir/nbd-tls-common.bash"
SWARM=$_lib_dir/nbd_swarm.py
ACTIVATE=$_lib_dir/socket_activate.py
CHECK_CLEAN=${TESTS_DIR:-$_lib_dir/..}/qemu-check-clean
SOCK=$T/s.sock

hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
TICKS=$(getconf CLK_TCK)
ASAN=0
grep -q __asan_init "$QED" 2>/dev/null && ASAN=1
# rss_below NAME MAX-KB GOT-KB — RSS bounds mean nothing under ASan, which
# keeps freed memory in quarantine.
rss_below() {
    if [ "$ASAN" = 1 ]; then
        skip "$1" "qed is built with AddressSanitizer (RSS $3 kB)"
        return 0
    fi
    [ "$3" -lt "$2" ]
    ok $? "$1"
}
# swarm NAME ARGS... — nbd_swarm.py in the background, output in $T/NAME.out.
swarm() {
    local name=$1
    shift
    python3 "$SWARM" --timeout 40 "$@" >"$T/$name.out" 2>"$T/$name.err" &
    _bg_pids+=($!)
    SWARM_PID=$!
}
# wait_ready NAME — until the swarm printed "ready" (up to 20 s).
wait_ready() {
    local i
    for ((i = 0; i < 400; i++)); do
        grep -q '^ready' "$T/$1.out" 2>/dev/null && return 0
        kill -0 "$SWARM_PID" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}
# served_ms URI [NBDINFO-ARGS] — how long nbdinfo --size takes (10 s cap);
# sets SERVED_MS and SERVED (the size printed, or the error).
served_ms() {
    local t0 t1
    t0=$(date +%s%N)
    SERVED=$(timeout 10 nbdinfo --size "$1" 2>&1)
    t1=$(date +%s%N)
    SERVED_MS=$(((t1 - t0) / 1000000))
}
stop_swarm() {
    kill "$SWARM_PID" 2>/dev/null
    wait "$SWARM_PID" 2>/dev/null
}

tap_cmd "qed create img.qed (1 GiB)" "$QED" create -q img.qed 1G || done_testing
tap_cmd "qed io writes a pattern in the first 64 MiB" "$QED" io -c "write -P 0x5a 0 64M" img.qed
SIZE=$((1024 * MiB))

# ---- silent sockets ------------------------------------------------------------------

# silent_case LABEL URI SERVER-ARGS... — 1000 silent sockets, reconnected
# when dropped, then a real client.
silent_case() {
    local label=$1 uri=$2 addr
    shift 2
    addr=(--unix "$SOCK")
    case $uri in
    nbd://* | nbds://*) addr=(--tcp "127.0.0.1:$PORT") ;;
    esac
    if [ "${addr[0]}" = --unix ]; then
        start_server silent "$SOCK" -t "$@" img.qed
    else
        start_server silent "" -t -p "$PORT" "$@" img.qed && wait_port "$PORT"
    fi
    ok $? "$label: qed serve starts" "$(cat "$T/silent.err")" || return
    swarm silent "${addr[@]}" silent 1000 --reconnect --hold 20
    wait_ready silent
    ok $? "$label: 1000 sockets connect and say nothing" "$(cat "$T/silent.out" "$T/silent.err")"
    served_ms "$uri"
    tap_is "$SERVED" "$SIZE" "$label: with 1000 silent sockets open, nbdinfo is served"
    [ "$SERVED" = "$SIZE" ] && [ "$SERVED_MS" -lt 1000 ]
    ok $? "$label: ... within 1 s (${SERVED_MS} ms)"
    stop_swarm
    kill -0 "$SRV_PID" 2>/dev/null
    ok $? "$label: the server still runs"
    stop_server "$SRV_PID"
    tap_is "$SRV_RC" 0 "$label: SIGTERM: exit 0"
}

tls_setup
PORT=$(free_port)
PSKQ="tls-psk-file=$PKI/keys.psk"
silent_case "Unix" "nbd+unix:///?socket=$SOCK"
silent_case "TCP" "nbd://127.0.0.1:$PORT/"
silent_case "Unix, TLS" "nbds+unix://alice@/?socket=$SOCK&$PSKQ" --tls-psk="$PKI/keys.psk"
silent_case "TCP, TLS" "nbds://alice@127.0.0.1:$PORT/?$PSKQ" --tls-psk="$PKI/keys.psk"

# With no handshake limit the silent sockets stay until the cap drops them.
start_server nolimit "$SOCK" -t --handshake-limit=0 img.qed
swarm silent --unix "$SOCK" silent 1100 --hold 20
wait_ready silent
sleep 0.3
served_ms "nbd+unix:///?socket=$SOCK"
tap_is "$SERVED" "$SIZE" "--handshake-limit=0 and 1100 silent sockets (cap 1024): nbdinfo is served"
n=$(ls "/proc/$SRV_PID/fd" 2>/dev/null | wc -l)
[ "$n" -gt 0 ] && [ "$n" -le 1040 ]
ok $? "... and the server holds no more than the cap of negotiating sockets ($n descriptors)"
stop_swarm
stop_server "$SRV_PID"
run "$QED" serve --handshake-limit=-1 -k "$SOCK" img.qed
tap_like "$RC:$(cat "$ERR")" "^1:qed: invalid handshake limit '-1' \(0 to 3600 seconds; 0: none\)" \
    "--handshake-limit=-1: refused"

# ---- descriptor exhaustion ------------------------------------------------------------

rm -f "$SOCK"
# prlimit sets soft and hard limit: the server cannot raise it.
prlimit --nofile=64 "$QED" serve -t -e 200 -k "$SOCK" img.qed </dev/null >"$T/fd.out" 2>"$T/fd.err" &
SRV_PID=$!
_srv_pids+=("$SRV_PID")
for ((i = 0; i < 500; i++)); do [ -S "$SOCK" ] && break; sleep 0.01; done
swarm fdswarm --unix "$SOCK" silent 100 --hold 20
wait_ready fdswarm
ok $? "64-descriptor limit: 100 silent sockets connect" "$(cat "$T/fdswarm.err")"
sleep 0.5
c0=$(cpu_ticks "$SRV_PID")
sleep 2
c1=$(cpu_ticks "$SRV_PID")
cpu_ms=$(((c1 - c0) * 1000 / TICKS / 2))
[ "$cpu_ms" -lt 100 ]
ok $? "64-descriptor limit, 100 silent sockets: under 0.1 CPU-seconds per second (${cpu_ms} ms/s)"
served_ms "nbd+unix:///?socket=$SOCK"
tap_is "$SERVED" "$SIZE" "64-descriptor limit: nbdinfo is served"
[ "$SERVED" = "$SIZE" ] && [ "$SERVED_MS" -lt 1000 ]
ok $? "64-descriptor limit: ... within 1 s (${SERVED_MS} ms)"
stop_swarm
stop_server "$SRV_PID"
tap_is "$SRV_RC" 0 "64-descriptor limit: SIGTERM: exit 0"
tap_like "$(head -1 "$T/fd.err")" "^qed: img.qed: warning: accept: Too many open files with [0-9]+ connections open; dropping the connections negotiating longest$" \
    "64-descriptor limit: the server says it is out of descriptors"
tap_is "$(wc -l <"$T/fd.err")" 1 "64-descriptor limit: ... in one line (rate-limited)" "$(cat "$T/fd.err")"

# ---- slow readers --------------------------------------------------------------------

start_server slow "$SOCK" -t -e 32 img.qed
swarm slow --unix "$SOCK" slow 16 --reads 8 --length $((32 * MiB)) --hold 20
wait_ready slow
ok $? "16 clients queue 8 READs of 32 MiB each and read nothing" "$(cat "$T/slow.err")"
sleep 1
hwm=$(hwm_kb "$SRV_PID")
[ "$hwm" -gt 0 ] || hwm=999999999
rss_below "16 clients that never read 32 MiB READs: server peak RSS under 600 MiB (${hwm} kB)" \
    $((600 * 1024)) "$hwm"
t0=$(date +%s%N)
run qemu-io -f raw -c "read -P 0x5a 0 4M" "nbd+unix:///?socket=$SOCK"
t1=$(date +%s%N)
ok "$RC" "another client reads its data meanwhile" "$(cat "$OUT" "$ERR")"
ms=$(((t1 - t0) / 1000000))
[ "$RC" = 0 ] && [ "$ms" -lt 1000 ]
ok $? "... within 1 s (${ms} ms)"
stop_swarm

# A WRITE of 32 MiB announced, then its data trickled: nothing but that
# connection waits, and the server holds at most that one request for it.
trickle=()
for ((i = 0; i < 10; i++)); do trickle+=(sendn:65536:0x77 sleep:0.3); done
python3 "$RAW" -t 20 -k "$SOCK" hello go: \
    "send:25609513000000010000000000000007$(printf '%016x%08x' 0 $((32 * MiB)))" \
    "${trickle[@]}" >"$T/trickle.out" 2>&1 &
TR=$!
_bg_pids+=("$TR")
sleep 0.5
t0=$(date +%s%N)
run qemu-io -f raw -c "write -P 0x6b 100M 1M" -c "read -P 0x6b 100M 1M" "nbd+unix:///?socket=$SOCK"
t1=$(date +%s%N)
ok "$RC" "a client trickling a 32 MiB WRITE: another client writes and reads" "$(cat "$OUT" "$ERR")"
ms=$(((t1 - t0) / 1000000))
[ "$RC" = 0 ] && [ "$ms" -lt 1000 ]
ok $? "... within 1 s (${ms} ms)"
kill "$TR" 2>/dev/null
wait "$TR" 2>/dev/null
stop_server "$SRV_PID"
tap_is "$SRV_RC" 0 "slow readers: SIGTERM: exit 0"

# ---- 10,000 connections --------------------------------------------------------------

hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt 10300 ]; then
    skip "10,000 connections" "the descriptor hard limit is $hard (10,300 needed)"
else
    "$QED" create -q big.qed 1G
    PORT2=$(free_port)
    python3 "$ACTIVATE" --unix "$SOCK" --tcp "127.0.0.1:$PORT2" -- \
        "$QED" serve -t -e 10000 big.qed </dev/null >"$T/big.out" 2>"$T/big.err" &
    SRV_PID=$!
    _srv_pids+=("$SRV_PID")
    wait_port "$PORT2"
    ok $? "qed serve -e 10000 listens on a Unix socket and a TCP port (socket activation)" "$(cat "$T/big.err")"
    swarm idle --unix "$SOCK" clients 0 --idle 9000 --wait-for "$T/go"
    IDLE=$SWARM_PID
    wait_ready idle
    tap_like "$(head -1 "$T/idle.out")" "^ready idle=9000$" \
        "9,000 clients negotiate over the Unix socket and stay idle" "$(head -20 "$T/idle.err")"
    run python3 "$SWARM" --timeout 25 --tcp "127.0.0.1:$PORT2" clients 1000
    tap_like "$(cat "$OUT")" "^done clients=1000 idle=0 errors=0 " \
        "meanwhile 1,000 clients over TCP write, flush and verify 4 x 64 KiB each" "$(head -20 "$ERR")"
    touch "$T/go"
    wait "$IDLE"
    tap_like "$(cat "$T/idle.out")" "done clients=0 idle=9000 errors=0 " \
        "the 9,000 idle clients are all still served afterwards" "$(head -20 "$T/idle.err")"
    hwm=$(hwm_kb "$SRV_PID")
    [ "$hwm" -gt 0 ] || hwm=999999999 # not running: no figure
    rss_below "10,000 connections: server peak RSS under 256 MiB (${hwm} kB)" $((256 * 1024)) "$hwm"
    stop_server "$SRV_PID"
    tap_is "$SRV_RC" 0 "10,000 connections: SIGTERM: exit 0"
    tap_cmd "qemu-img check: the image is clean" "$CHECK_CLEAN" big.qed
fi

done_testing
