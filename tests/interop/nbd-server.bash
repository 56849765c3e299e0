# Sourced by the NBD test scripts: start and stop `qed serve` in the
# background, and kill whatever is left on exit.
_srv_pids=()
SRV_PID=
# start_server NAME SOCK ARGS... — `qed serve -k SOCK ARGS...` in the
# background (stderr in $T/NAME.err); waits for the socket.  Sets SRV_PID.
start_server() {
    local name=$1 sock=$2 i
    shift 2
    rm -f "$sock"
    "$QED" serve -k "$sock" "$@" </dev/null >"$T/$name.out" 2>"$T/$name.err" &
    SRV_PID=$!
    _srv_pids+=("$SRV_PID")
    for ((i = 0; i < 500; i++)); do
        [ -S "$sock" ] && return 0
        kill -0 "$SRV_PID" 2>/dev/null || return 1
        sleep 0.01
    done
    return 1
}
# stop_server PID — SIGTERM, then waits (up to 10 s); SRV_RC is its exit status.
stop_server() {
    local pid=$1 i st hung=0
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 1000; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.01
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null
        hung=1
    fi
    wait "$pid" 2>/dev/null
    st=$?
    if [ "$hung" = 1 ]; then SRV_RC="hung (killed after 10 s)"; else SRV_RC=$st; fi
}
_kill_servers() {
    local p
    for p in "${_srv_pids[@]}"; do
        kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
    done
    return 0
}
trap '_kill_servers; _cleanup' EXIT
