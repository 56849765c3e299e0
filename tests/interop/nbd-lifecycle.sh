#!/bin/bash
# SPDX-License-Identifier: MIT
# The life of a `qed serve` process: SIGTERM and SIGINT with clients
# connected and requests in flight (exit 0, answers sent, socket file removed,
# image closed clean and passing qemu-img check); without -t it exits after
# the last client leaves, with -t it keeps running; TCP with -p (and -b);
# usage errors (-k with -p, neither) and a missing image (one line on
# stderr, exit 1).
. "$(dirname "$0")/lib.sh"
require_cmd python3 qemu-io qemu-img nbdinfo fio
require_qed

TAP_TIMEOUT=20
RAW=$_lib_dir/nbd_raw_client.py
CHECK_CLEAN=${TESTS_DIR:-$_lib_dir/..}/qemu-check-clean

# ---- server management ------------------------------------------------------

. "$_lib_dir/nbd-server.bash"

SOCK=$T/l.sock
URI="nbd+unix:///?socket=$SOCK"
# bg NAME STEP... — a raw client in the background, transcript in $T/NAME.out.
bg() {
    local name=$1
    shift
    python3 "$RAW" -t 15 -k "$SOCK" "$@" >"$T/$name.out" 2>&1 &
    BG=$!
    _bg_pids+=("$BG")
}
# wait_line FILE REGEX — waits (up to 10 s) for a line matching REGEX.
wait_line() {
    local i
    for ((i = 0; i < 1000; i++)); do
        grep -Eq -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.01
    done
    return 1
}
need_check_clear() {
    local f
    f=$(peek_le "$2" "$HDR_FEATURES" 8)
    tap_is "$((f & 2))" 0 "$1"
}
socket_gone() {
    tap_is "$([ -e "$2" ] && echo exists || echo removed)" removed "$1"
}

tap_cmd "qed create l.qed (64 MiB, 64k clusters)" "$QED" create -q -o cluster_size=64k l.qed 64M || done_testing

# ---- SIGTERM / SIGINT with requests in flight ---------------------------------------

for sig in TERM INT; do
    start_server "$sig" "$SOCK" -t l.qed
    ok $? "SIG$sig: qed serve -t starts" "$(cat "$T/$sig.err")"
    pid=$SRV_PID
    # 40 MiB of writes go into the socket before the signal; the server
    # takes at least its per-connection budget (32 MiB) of them, the rest
    # may still sit in the socket buffer; then 40 reads.
    byte=$([ "$sig" = TERM ] && echo 0x33 || echo 0x44)
    bg "$sig-client" hello go: "sendwrites:40:1M:$byte" sendreads:40:1M replies:8
    client=$BG
    wait_line "$T/$sig-client.out" '^sendwrites'
    # The server reads its budget within milliseconds, but on a loaded
    # machine (the other tests run beside this one) it had taken only 26
    # MiB when the signal came: give it the time to take what it may.
    sleep 0.5
    kill -"$sig" "$pid"
    wait_exit "$pid" 10
    tap_is "$SRV_RC" 0 "SIG$sig with 80 requests pipelined: the server exits 0"
    wait "$client"
    r=$(sed -n 's/^replies:8 -> //p' "$T/$sig-client.out")
    tap_like "$r" '^replies=(3[1-9]|[4-7][0-9]|80)/80 errors=(none|ESHUTDOWN) then eof$' \
        "SIG$sig: every request the server took is answered (no error or ESHUTDOWN), then the connection closes"
    # The writes taken are the first ones sent, and all are answered before
    # any read is (the reads come after them on the socket); one held back
    # by the budget is answered ESHUTDOWN.
    n=$(sed -n 's/^replies=\([0-9]*\).*/\1/p' <<<"$r")
    n=${n:-0}
    [ "$n" -gt 40 ] && n=40
    [[ $r == *ESHUTDOWN* ]] && [ "$n" -lt 40 ] && n=$((n - 1))
    socket_gone "SIG$sig: the socket file is removed" "$SOCK"
    need_check_clear "SIG$sig: NEED_CHECK clear in the image" l.qed
    tap_cmd "SIG$sig: qemu-img check finds the image clean" "$CHECK_CLEAN" l.qed
    run qemu-io -f qed -r -c "read -P $byte 0 ${n}M" l.qed
    ok "$RC" "SIG$sig: the $n answered writes are in the image" "$(cat "$OUT" "$ERR")"
done

# fio keeping 16 writes in flight on 4 connections when SIGTERM comes.
start_server fio "$SOCK" -t l.qed
pid=$SRV_PID
fio --name=inflight --ioengine=nbd --uri="$URI" --rw=randwrite --bs=64k --size=16M --offset_increment=16M \
    --numjobs=4 --iodepth=16 --time_based --runtime=20 >"$T/fio.out" 2>&1 &
FIO=$!
_bg_pids+=("$FIO")
sleep 0.8
kill -TERM "$pid"
wait_exit "$pid" 4
tap_is "$SRV_RC" 0 "SIGTERM while fio keeps 4x16 writes in flight: the server exits 0 within 4 s"
if [ "$SRV_RC" = running ]; then
    # A second signal finds the connections in PHASE_CLOSING and drops them.
    stop_server "$pid"
    note "after a second SIGTERM: $SRV_RC"
fi
wait_exit "$FIO" 10 >/dev/null || kill -KILL "$FIO" 2>/dev/null
socket_gone "SIGTERM under fio: the socket file is removed" "$SOCK"
need_check_clear "SIGTERM under fio: NEED_CHECK clear" l.qed
tap_cmd "SIGTERM under fio: qemu-img check finds the image clean" "$CHECK_CLEAN" l.qed

# The same, deterministically: a client stops in the middle of a WRITE's
# payload (and stays connected) when SIGTERM comes.
start_server halfwrite "$SOCK" -t l.qed
pid=$SRV_PID
bg halfwrite hello go: "send:25609513000000010000000000000077000000000000000000100000" sendn:4096:0xcd sleep:8
half=$BG
wait_line "$T/halfwrite.out" '^sendn'
kill -TERM "$pid"
wait_exit "$pid" 2
tap_is "$SRV_RC" 0 "SIGTERM while a client is in the middle of a WRITE payload: exit 0 within 2 s"
kill "$half" 2>/dev/null
wait "$half" 2>/dev/null
if [ "$SRV_RC" = running ]; then
    wait_exit "$pid" 1
    tap_is "$SRV_RC" 0 "... or at least once that client has gone"
    if [ "$SRV_RC" = running ]; then
        stop_server "$pid"
        note "after a second SIGTERM: $SRV_RC"
    fi
fi
need_check_clear "... and the image is clean" l.qed

# Clients at every stage: mid-handshake, idle in transmission.
start_server stages "$SOCK" -t l.qed
pid=$SRV_PID
bg greeted greeting eof:15
c1=$BG
bg options hello eof:15
c2=$BG
bg idle hello go: eof:15
c3=$BG
wait_line "$T/idle.out" '^go:'
sleep 0.2
t0=$(date +%s%N)
kill -TERM "$pid"
wait_exit "$pid" 10
t1=$(date +%s%N)
tap_is "$SRV_RC" 0 "SIGTERM with clients mid-handshake and idle: exit 0"
ms=$(((t1 - t0) / 1000000))
[ "$ms" -lt 2000 ]
ok $? "... within 2 s (${ms} ms)"
wait "$c1" "$c2" "$c3"
tap_like "$(tail -1 "$T/greeted.out")" '-> eof' "a client that only read the greeting sees the connection closed"
tap_like "$(tail -1 "$T/options.out")" '-> eof' "a client in option haggling sees the connection closed"
tap_like "$(tail -1 "$T/idle.out")" '-> eof' "an idle client in transmission sees the connection closed"
socket_gone "the socket file is removed" "$SOCK"

# A client that never reads its replies must not keep the server from exiting.
start_server stuck "$SOCK" -t l.qed
pid=$SRV_PID
bg stuck hello go: flood:4M:1000:0 sleep:15
stuck=$BG
wait_line "$T/stuck.out" '^flood'
kill -TERM "$pid"
wait_exit "$pid" 2
tap_is "$SRV_RC" 0 "SIGTERM with a client that never reads its replies: exit 0 within 2 s"
kill "$stuck" 2>/dev/null
wait "$stuck" 2>/dev/null
if [ "$SRV_RC" = running ]; then
    stop_server "$pid"
    note "after the client went: $SRV_RC"
fi
need_check_clear "... and the image is clean" l.qed

# ---- without -t / with -t ------------------------------------------------------------

start_server once "$SOCK" l.qed
pid=$SRV_PID
sleep 0.5
kill -0 "$pid" 2>/dev/null
ok $? "without -t: the server waits for its first client"
bg first hello go: sleep:2 read:0:512
first=$BG
wait_line "$T/first.out" '^go:'
run python3 "$RAW" -k "$SOCK" hello go: read:0:512
tap_like "$(sed -n 3p "$OUT")" '-> error=0 ' "without -t: a second client is served"
sleep 0.2
kill -0 "$pid" 2>/dev/null
ok $? "without -t: the server keeps running while a client is still connected"
wait "$first"
tap_like "$(cat "$T/first.out")" 'read:0:512 -> error=0 ' "without -t: the first client was served to the end"
wait_exit "$pid" 5
tap_is "$SRV_RC" 0 "without -t: the server exits 0 once the last client leaves"
socket_gone "without -t: the socket file is removed" "$SOCK"
need_check_clear "without -t: NEED_CHECK clear" l.qed

start_server once2 "$SOCK" l.qed
pid=$SRV_PID
run nbdinfo --size "$URI"
tap_is "$(cat "$OUT")" $((64 * MiB)) "without -t: nbdinfo --size"
wait_exit "$pid" 5
tap_is "$SRV_RC" 0 "without -t: exit 0 after nbdinfo"

# A client that hangs up in the middle of a WRITE's payload is a client that
# left: the server must still exit.
start_server midwrite "$SOCK" l.qed
pid=$SRV_PID
run python3 "$RAW" -k "$SOCK" hello go: "send:25609513000000010000000000000077000000000000000000100000" sendn:4096:0xcd
wait_exit "$pid" 3
tap_is "$SRV_RC" 0 "without -t: a client that hangs up mid-WRITE-payload leaves, the server exits 0"
if [ "$SRV_RC" = running ]; then
    stop_server "$pid"
    note "after SIGTERM: $SRV_RC"
fi

start_server persist "$SOCK" -t l.qed
pid=$SRV_PID
tap_cmd "with -t: first client" nbdinfo --size "$URI"
tap_cmd "with -t: second client after the first left" qemu-io -f raw -c "write -P 0x55 1M 64k" "$URI"
sleep 0.3
kill -0 "$pid" 2>/dev/null
ok $? "with -t: the server keeps running after its clients left"
tap_cmd "with -t: a third client reads what the second wrote" qemu-io -f raw -r -c "read -P 0x55 1M 64k" "$URI"
stop_server "$pid" INT
tap_is "$SRV_RC" 0 "with -t: SIGINT, exit 0"
socket_gone "with -t: the socket file is removed" "$SOCK"

# ---- TCP ----------------------------------------------------------------------------

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
PORT=$(free_port)
start_server tcp "" -t -p "$PORT" l.qed
pid=$SRV_PID
for ((i = 0; i < 200; i++)); do
    python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$PORT" \
        2>/dev/null && break
    sleep 0.02
done
tap_cmd "TCP: nbdinfo --size nbd://127.0.0.1:PORT" nbdinfo --size "nbd://127.0.0.1:$PORT"
tap_is "$(cat "$OUT")" $((64 * MiB)) "TCP: the size"
tap_cmd "TCP: qemu-io reads and writes over nbd://127.0.0.1:PORT" \
    qemu-io -f raw -c "write -P 0x66 2M 64k" -c "read -P 0x66 2M 64k" -c "read -P 0x55 1M 64k" "nbd://127.0.0.1:$PORT"
run python3 "$RAW" -p "127.0.0.1:$PORT" hello sr "setmeta::base:allocation" go: bs:0:4M read:2M:16
tap_like "$(sed -n 6p "$OUT")" '-> error=0 .*data=0x66\*16$' "TCP: the raw client does structured reads"
run nbdinfo --list "nbd://127.0.0.1:$PORT"
ok "$RC" "TCP: nbdinfo --list" "$(cat "$ERR")"
tap_like "$(ss -ltn 2>/dev/null | grep ":$PORT " | awk '{print $4}' | sort -u | tr '\n' ' ')" \
    "^127\.0\.0\.1:$PORT $" "TCP: listens on 127.0.0.1 only by default"
stop_server "$pid"
tap_is "$SRV_RC" 0 "TCP: SIGTERM, exit 0"

PORT=$(free_port)
start_server tcpb "" -t -b 127.0.0.1 -p "$PORT" -r l.qed
pid=$SRV_PID
for ((i = 0; i < 200; i++)); do
    python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$PORT" \
        2>/dev/null && break
    sleep 0.02
done
run qemu-io -f raw -r -c "read -P 0x66 2M 64k" "nbd://127.0.0.1:$PORT"
ok "$RC" "TCP with -b 127.0.0.1 -r: qemu-io reads" "$(cat "$OUT" "$ERR")"
stop_server "$pid"
tap_is "$SRV_RC" 0 "TCP with -b: SIGTERM, exit 0"

PORT=$(free_port)
python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1)
print("listening", flush=True); time.sleep(10)' "$PORT" >"$T/hold.out" &
HOLD=$!
_bg_pids+=("$HOLD")
wait_line "$T/hold.out" '^listening'
run timeout 5 "$QED" serve -p "$PORT" l.qed
tap_is "$RC" 1 "TCP: a port already in use: exit 1"
tap_is "$(wc -l <"$ERR")" 1 "TCP: a port already in use: one line on stderr"
kill "$HOLD" 2>/dev/null
wait "$HOLD" 2>/dev/null

# ---- usage errors ---------------------------------------------------------------------

run "$QED" serve -k "$T/x.sock" -p 10809 l.qed
tap_is "$RC" 1 "-k and -p together: exit 1"
tap_like "$(cat "$ERR")" '^qed: .*-k.*-p' "-k and -p together: the message says so"
tap_is "$([ -e "$T/x.sock" ] && echo exists || echo none)" none "-k and -p together: no socket file made"
run env -u LISTEN_FDS -u LISTEN_PID "$QED" serve l.qed
tap_is "$RC" 1 "neither -k nor -p: exit 1"
tap_is "$(wc -l <"$ERR")" 1 "neither -k nor -p: one line on stderr"
run "$QED" serve -k "$T/x.sock" -p 0 l.qed
tap_is "$RC" 1 "-p 0: exit 1"
run "$QED" serve -k "$T/x.sock" -e 0 l.qed
tap_is "$RC" 1 "-e 0: exit 1"
run "$QED" serve -k "$T/x.sock"
tap_is "$RC" 1 "no image: exit 1"

run "$QED" serve -k "$T/n.sock" "$T/nothere.qed"
tap_is "$RC" 1 "serving a missing file: exit 1"
tap_is "$(wc -l <"$ERR")" 1 "serving a missing file: one line on stderr"
tap_like "$(cat "$ERR")" '^qed: .*nothere\.qed' "serving a missing file: the message names the file"
tap_is "$([ -e "$T/n.sock" ] && echo exists || echo none)" none "serving a missing file: no socket file left"

# A socket path that exists already (a regular file): refused, file untouched.
echo keep >"$T/busy.sock"
run "$QED" serve -k "$T/busy.sock" l.qed
tap_is "$RC" 1 "a socket path that is an existing file: exit 1"
tap_is "$(wc -l <"$ERR")" 1 "a socket path that is an existing file: one line on stderr"
tap_is "$(cat "$T/busy.sock")" keep "the existing file is left alone"

tap_cmd "qemu-img check: the image is clean at the end" "$CHECK_CLEAN" l.qed
need_check_clear "NEED_CHECK clear at the end" l.qed

done_testing
