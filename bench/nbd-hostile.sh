#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# NBD servers under load and hostile clients: `qed serve`, `qemu-nbd` and
# `nbdkit file` side by side, one 1 GiB image each (QED for the first two, a
# raw file for nbdkit), Unix socket, servers alternating, median of the
# rounds.  Four cases, the many sockets coming from one process
# (tests/interop/nbd_swarm.py):
#   1. 1000 clients at once, each writing, flushing and verifying its own
#      4 x 64 KiB (-e 1000): errors, seconds, the server's peak RSS;
#   2. 1000 sockets that connect and never speak, each one dropped
#      reconnected at once, then `nbdinfo --size` (default -e): how long it
#      takes to be served;
#   3. a 64-descriptor limit (prlimit) and 100 silent sockets (-e 200): the
#      server's CPU time per second, and how long nbdinfo takes;
#   4. 16 clients that queue 8 READs of 32 MiB and never read (-e 32): the
#      server's peak RSS after 5 s, and how long another client takes to
#      read 4 MiB.
# "not served" means not within BENCH_CAP seconds (default 20).
#
#   bench/nbd-hostile.sh [ROUNDS]           (default 3; needs build/qed)
#   BENCH_DIR=/path bench/nbd-hostile.sh    where the images go (/var/tmp)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/common.bash
. "$here/bench/common.bash"
qed=${QED:-$here/build/qed}
rounds=${1:-3}
cap=${BENCH_CAP:-20}
swarm=$here/tests/interop/nbd_swarm.py
servers=(qed qemu-nbd nbdkit)
bench_prepare nbd-hostile qemu-nbd qemu-img qemu-io nbdkit nbdinfo prlimit python3
sock=$dir/s.sock
server_pid=
swarm_pid=
cleanup() {
    [ -n "$swarm_pid" ] && kill "$swarm_pid" 2>/dev/null
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT

"$qed" create -q "$dir/img.qed" 1G
"$qed" io -c "write -P 0x5a 0 64M" "$dir/img.qed" >/dev/null
qemu-img convert -f qed -O raw "$dir/img.qed" "$dir/img.raw"
cp "$dir/img.qed" "$dir/pristine.qed"
cp --sparse=always "$dir/img.raw" "$dir/pristine.raw"

# start KIND [PRLIMIT-NOFILE] SERVER-ARGS... — the server in the background
# on $sock; sets server_pid (the server itself, not a wrapper).
start() {
    local kind=$1 limit=$2 i
    shift 2
    local pre=()
    [ "$limit" != - ] && pre=(prlimit --nofile="$limit")
    rm -f "$sock"
    cp "$dir/pristine.qed" "$dir/img.qed"
    cp --sparse=always "$dir/pristine.raw" "$dir/img.raw"
    case $kind in
    qed) "${pre[@]}" "$qed" serve -t -k "$sock" "$@" "$dir/img.qed" 2>/dev/null & ;;
    qemu-nbd) "${pre[@]}" qemu-nbd -t --aio=io_uring -f qed -k "$sock" "$@" "$dir/img.qed" 2>/dev/null & ;;
    nbdkit) "${pre[@]}" nbdkit -f -U "$sock" file "$dir/img.raw" 2>/dev/null & ;;
    esac
    server_pid=$!
    for ((i = 0; i < 200; i++)); do [ -S "$sock" ] && return 0; sleep 0.05; done
    echo "bench: $kind did not start" >&2
    exit 1
}
stop() { # CASE-KEY
    [ -n "$swarm_pid" ] && { kill "$swarm_pid" 2>/dev/null; wait "$swarm_pid" 2>/dev/null || true; }
    swarm_pid=
    local st=0
    # A server that died on its own, or crashed when told to stop, is noted
    # in the table.
    kill -0 "$server_pid" 2>/dev/null || record "$1" died 1
    kill "$server_pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || st=$?
    # 128 + SIGABRT, SIGSEGV, SIGBUS
    case $st in 134 | 139 | 135) record "$1" crashed "$st" ;; esac
    server_pid=
}
hwm_mib() { awk '/^VmHWM:/ { printf "%d", $2 / 1024 }' "/proc/$server_pid/status" 2>/dev/null || echo 0; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$server_pid/stat" 2>/dev/null || echo 0; }
# swarm_bg ARGS... — the swarm in the background, until it prints "ready".
swarm_bg() {
    python3 "$swarm" --unix "$sock" "$@" >"$dir/swarm.out" 2>/dev/null &
    swarm_pid=$!
    for ((i = 0; i < 600; i++)); do
        grep -q '^ready' "$dir/swarm.out" 2>/dev/null && return 0
        kill -0 "$swarm_pid" 2>/dev/null || return 0
        sleep 0.05
    done
}
# served CMD... — milliseconds CMD took, or "x" if it failed or took longer
# than the cap.
served() {
    local t0 t1
    t0=$(date +%s%N)
    if timeout "$cap" "$@" >/dev/null 2>&1; then
        t1=$(date +%s%N)
        echo $(((t1 - t0) / 1000000))
    else
        echo x
    fi
}
nbdinfo_served() { served nbdinfo --size "nbd+unix:///?socket=$sock"; }

# Each case prints "KEY VALUE" lines into $dir/results.
record() { echo "$1 $2 $3" >>"$dir/results"; } # CASE.SERVER METRIC VALUE

case_clients() { # SERVER
    local out
    start "$1" - -e 1000
    out=$(python3 "$swarm" --unix "$sock" clients 1000 2>/dev/null || true)
    record "1.$1" errors "$(sed -n 's/.* errors=\([0-9]*\).*/\1/p' <<<"$out")"
    record "1.$1" seconds "$(sed -n 's/.* seconds=\([0-9.]*\).*/\1/p' <<<"$out")"
    record "1.$1" rss "$(hwm_mib)"
    stop "1.$1"
}
case_silent() {
    start "$1" -
    swarm_bg silent 1000 --reconnect --hold 600
    record "2.$1" ms "$(nbdinfo_served)"
    stop "2.$1"
}
case_descriptors() {
    local c0 c1
    start "$1" 64 -e 200
    swarm_bg silent 100 --hold 600
    sleep 0.5
    c0=$(cpu_ticks)
    sleep 3
    c1=$(cpu_ticks)
    record "3.$1" cpu "$(awk -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz / 3 }')"
    record "3.$1" ms "$(nbdinfo_served)"
    stop "3.$1"
}
case_slow() {
    start "$1" - -e 32
    swarm_bg slow 16 --reads 8 --length $((32 << 20)) --hold 600
    sleep 5
    record "4.$1" rss "$(hwm_mib)"
    record "4.$1" ms "$(served qemu-io -f raw -c "read 0 4M" "nbd+unix:///?socket=$sock")"
    stop "4.$1"
}

for ((r = 0; r < rounds; r++)); do
    # Rotate which server goes first.
    order=("${servers[@]:r%3}" "${servers[@]:0:r%3}")
    for c in case_clients case_silent case_descriptors case_slow; do
        for s in "${order[@]}"; do
            "$c" "$s"
        done
    done
    echo "round $((r + 1)) of $rounds done" >&2
done

# med CASE.SERVER METRIC — the median over the rounds; "not served" when
# most rounds were not.
med() {
    local vals
    vals=$(awk -v k="$1" -v m="$2" '$1 == k && $2 == m { print $3 }' "$dir/results")
    if [ "$(grep -c '^x$' <<<"$vals")" -gt $((rounds / 2)) ]; then
        echo "not served in ${cap} s"
        return
    fi
    grep -v '^x$' <<<"$vals" | median
}
# died CASE.SERVER — a note when the server died, or crashed when stopped.
died() {
    local k
    k=$(awk -v k="$1" '$1 == k && $2 == "died"' "$dir/results" | wc -l)
    [ "$k" -gt 0 ] && printf "; **server died** in %s of %s rounds" "$k" "$rounds"
    k=$(awk -v k="$1" '$1 == k && $2 == "crashed"' "$dir/results" | wc -l)
    [ "$k" -gt 0 ] && printf "; **crashed when stopped** (signal %s) in %s of %s rounds" "$(($(awk -v k="$1" '$1 == k && $2 == "crashed" { print $3; exit }' "$dir/results") - 128))" "$k" "$rounds"
    return 0
}
cell1() { echo "$(med "1.$1" errors) errors, $(med "1.$1" seconds) s, peak RSS $(med "1.$1" rss) MiB$(died "1.$1")"; }
cell2() { local v; v=$(med "2.$1" ms); echo "$([[ $v == not* ]] && echo "$v" || echo "served in $v ms")$(died "2.$1")"; }
cell3() { local v; v=$(med "3.$1" ms); echo "$(med "3.$1" cpu) CPU-s/s; $([[ $v == not* ]] && echo "$v" || echo "served in $v ms")$(died "3.$1")"; }
cell4() { local v; v=$(med "4.$1" ms); echo "peak RSS $(med "4.$1" rss) MiB; $([[ $v == not* ]] && echo "another client $v" || echo "another client served in $v ms")$(died "4.$1")"; }

echo "| case (median of $rounds rounds) | qed serve | qemu-nbd | nbdkit file |"
echo "|---|---|---|---|"
echo "| 1000 clients at once, each writing, flushing, verifying 4 x 64 KiB | $(cell1 qed) | $(cell1 qemu-nbd) | $(cell1 nbdkit) |"
echo "| 1000 silent sockets, reconnected when dropped, then nbdinfo | $(cell2 qed) | $(cell2 qemu-nbd) | $(cell2 nbdkit) |"
echo "| 64-descriptor limit, 100 silent sockets, then nbdinfo | $(cell3 qed) | $(cell3 qemu-nbd) | $(cell3 nbdkit) |"
echo "| 16 clients queue 8 x 32 MiB READs, never read (5 s) | $(cell4 qed) | $(cell4 qemu-nbd) | $(cell4 nbdkit) |"
