# SPDX-License-Identifier: MIT
# Sourced by the NBD test scripts: start and stop `qed serve` in the
# background, and kill whatever is left (servers and the background clients
# a script adds to _bg_pids) on exit.
_srv_pids=()
_bg_pids=()
SRV_PID=
# start_server NAME SOCK ARGS... — `qed serve -k SOCK ARGS...` in the
# background (output in $T/NAME.out and .err); waits for the socket.  An
# empty SOCK passes no -k (e.g. for -p) and does not wait.  Sets SRV_PID.
start_server() {
    local name=$1 sock=$2 i
    shift 2
    if [ -n "$sock" ]; then
        rm -f "$sock"
        set -- -k "$sock" "$@"
    fi
    "$QED" serve "$@" </dev/null >"$T/$name.out" 2>"$T/$name.err" &
    SRV_PID=$!
    _srv_pids+=("$SRV_PID")
    [ -n "$sock" ] || return 0
    for ((i = 0; i < 500; i++)); do
        [ -S "$sock" ] && return 0
        kill -0 "$SRV_PID" 2>/dev/null || return 1
        sleep 0.01
    done
    return 1
}
# wait_exit PID SECONDS — waits for PID to exit; SRV_RC is its status, or
# "running" if it did not exit in time (it is then left running).
wait_exit() {
    local pid=$1 n=$(($2 * 100)) i
    for ((i = 0; i < n; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.01
    done
    if kill -0 "$pid" 2>/dev/null; then
        SRV_RC=running
        return 1
    fi
    wait "$pid" 2>/dev/null
    SRV_RC=$?
    return 0
}
# stop_server PID [SIGNAL] — sends SIGNAL (TERM), waits up to 10 s, then
# kills; SRV_RC is its exit status.
stop_server() {
    kill -"${2:-TERM}" "$1" 2>/dev/null
    if ! wait_exit "$1" 10; then
        kill -KILL "$1" 2>/dev/null
        wait "$1" 2>/dev/null
        SRV_RC="hung (killed after 10 s)"
    fi
}
_kill_all() {
    local p
    for p in "${_bg_pids[@]}" "${_srv_pids[@]}"; do
        kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
    done
    return 0
}
# resn N — what step N (counting from 1) of the last raw client run printed,
# without "STEP -> ".
resn() {
    local line
    line=$(sed -n "${1}p" "$OUT")
    printf '%s' "${line#* -> }"
}
# check N EXPECTED NAME — step N printed EXPECTED.
check() {
    local got
    got=$(resn "$1")
    if [ "$got" == "$2" ]; then
        pass "$3"
    else
        fail "$3" "step $1: got      '$got'" "step $1: expected '$2'" "transcript:" "$(cat "$OUT" "$ERR")"
    fi
}
# check_like N REGEX NAME — step N printed something matching REGEX.
check_like() {
    local got
    got=$(resn "$1")
    if [[ $got =~ $2 ]]; then
        pass "$3"
    else
        fail "$3" "step $1: got '$got'" "expected to match: /$2/" "transcript:" "$(cat "$OUT" "$ERR")"
    fi
}
trap '_kill_all; _cleanup' EXIT
