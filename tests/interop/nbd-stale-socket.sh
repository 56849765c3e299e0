#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed serve -k PATH` replaces a socket file nobody listens on (left by a
# server that was killed), and refuses, leaving everything as it was, when
# a live server listens on PATH or PATH is not a socket.
. "$(dirname "$0")/lib.sh"
require_cmd python3 nbdinfo qemu-img
require_qed
. "$_lib_dir/nbd-server.bash"

TAP_TIMEOUT=20
"$QED" create -q disk.qed 1M

# serve_at NAME SOCK ARGS... — `qed serve -k SOCK` without removing SOCK
# first (start_server would); waits up to 5 s for a client to get an answer.
serve_at() {
    local name=$1 sock=$2 i
    shift 2
    "$QED" serve -k "$sock" "$@" </dev/null >"$T/$name.out" 2>"$T/$name.err" &
    SRV_PID=$!
    _srv_pids+=("$SRV_PID")
    for ((i = 0; i < 500; i++)); do
        nbdinfo --size "nbd+unix:///?socket=$sock" >/dev/null 2>&1 && return 0
        kill -0 "$SRV_PID" 2>/dev/null || return 1
        sleep 0.01
    done
    return 1
}

# A socket file left behind by a process that bound it and exited.
python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' stale.sock
[ -S stale.sock ]; ok $? "premise: stale.sock is a socket file nobody listens on"
serve_at stale stale.sock -t disk.qed
ok $? "serve replaces a stale socket file and serves on it" "$(cat "$T/stale.err")"
tap_is "$(nbdinfo --size 'nbd+unix:///?socket=stale.sock' 2>&1)" 1048576 "a client reads the size through it"

# A live server on the path: a second one is refused, the first keeps working.
# (It serves another image: disk.qed is locked by the first.)
cp disk.qed other.qed
run "$QED" serve -k stale.sock other.qed
tap_like "$RC $(cat "$ERR")" "^1 qed: .*stale\.sock: another server is listening there" \
    "a second serve on a live socket is refused"
tap_is "$(nbdinfo --size 'nbd+unix:///?socket=stale.sock' 2>&1)" 1048576 \
    "the first server still answers after the refusal"

# The realistic leftover: the server killed with SIGKILL keeps its socket file.
{ kill -KILL "$SRV_PID"; wait "$SRV_PID"; } 2>/dev/null
[ -S stale.sock ]; ok $? "premise: a SIGKILLed server leaves its socket file"
wait_unlocked disk.qed
serve_at restart stale.sock -t disk.qed
ok $? "serve after a SIGKILL starts on the same path" "$(cat "$T/restart.err")"
stop_server "$SRV_PID"
tap_is "$SRV_RC" 0 "that server stops cleanly"
[ ! -e stale.sock ]; ok $? "and removes its socket file"

# Not a socket: never replaced.
printf 'keep me\n' > plain.file
run "$QED" serve -k plain.file disk.qed
tap_like "$RC $(cat "$ERR")" "^1 qed: .*plain\.file exists and is not a socket" \
    "a regular file at the socket path is refused"
tap_is "$(cat plain.file)" "keep me" "the regular file is unchanged"
ln -s plain.file link.sock
run "$QED" serve -k link.sock disk.qed
tap_like "$RC $(cat "$ERR")" "^1 qed: .*link\.sock exists and is not a socket" \
    "a symbolic link at the socket path is refused"
[ -L link.sock ] && [ "$(cat plain.file)" = "keep me" ]
ok $? "the link and its target are unchanged"

done_testing
