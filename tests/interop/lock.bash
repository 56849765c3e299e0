# SPDX-License-Identifier: MIT
# Sourced by the locking tests (after lib.sh and nbd-server.bash): hold an
# image with qemu-io or `qed serve`, release it, and expect a refusal with
# QEMU's lock message.  HOLD_MS: how long qemu-io holds (default 60 s).
HOLD_MS=${HOLD_MS:-60000}

# hold_qemu ARGS... FILE — qemu-io ARGS FILE in the background, holding the
# image (its own sleep command) until release; waits for its locks.
QEMU_PID=
hold_qemu() {
    local file=${*: -1} i
    qemu-io -c "sleep $HOLD_MS" "$@" </dev/null >"$T/qemu-hold.out" 2>&1 &
    QEMU_PID=$!
    _bg_pids+=("$QEMU_PID")
    for ((i = 0; i < 500; i++)); do
        [ -n "$(lock_bytes "$file")" ] && return 0
        kill -0 "$QEMU_PID" 2>/dev/null || return 1
        sleep 0.01
    done
    return 1
}

# release PID FILE... — stops a holder and waits until FILE... are free.
release() {
    local pid=$1 f
    shift
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    for f in "$@"; do
        wait_unlocked "$f"
    done
}

# hold_qed NAME ARGS... FILE — `qed serve ARGS FILE` on a socket.
hold_qed() {
    local name=$1
    shift
    start_server "$name" "$T/$name.sock" "$@"
}

# refused NAME FILE WORDS CMD... — CMD fails (exit 1) with the lock message
# naming WORDS ("write", shared "write", ...) and FILE.
refused() {
    local name=$1 file=$2 words=$3
    shift 3
    run "$@"
    if [ "$RC" -eq 1 ] && grep -qF "Failed to get $words lock" "$ERR" &&
        grep -qF "Is another process using the image [$file]?" "$ERR"; then
        pass "$name"
        return 0
    fi
    fail "$name" "expected exit status 1 and the lock message for $words"
    _run_diag "$@"
    return 1
}

sum() { md5sum <"$1" | cut -d' ' -f1; }
