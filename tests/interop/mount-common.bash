# SPDX-License-Identifier: MIT
# Sourced by the `qed mount` tests (after lib.sh): start and stop mounts in
# the background, and on exit unmount and kill whatever is left before the
# temporary directory goes.
_mnt_pids=()
_mnt_points=()
_loop_devs=()
_sys_mounts=()
MNT_PID=
MNT_RC=

# mounted PATH — PATH is a mount point now (a FUSE one: listed in
# /proc/self/mountinfo; works for file mount points too).
mounted() {
    local p
    p=$(realpath -s "$1")
    awk -v p="$p" '$5 == p { found = 1 } END { exit !found }' /proc/self/mountinfo
}

# require_fuse — skips the whole script unless FUSE mounts work here.
require_fuse() {
    require_cmd fusermount3
    [ -e /dev/fuse ] || skip_all "no /dev/fuse on this machine"
    [ -r /dev/fuse ] && [ -w /dev/fuse ] || skip_all "/dev/fuse is not usable by this user"
    local probe=$T/.fuse-probe
    "$QED" create -f qed "$probe.qed" 1M >/dev/null 2>&1 || skip_all "qed create failed"
    : >"$probe"
    start_mount probe "$probe.qed" "$probe" ||
        skip_all "FUSE mounts fail here: $(head -c 300 "$T/probe.err")"
    stop_mount "$MNT_PID" "$probe"
    rm -f "$probe" "$probe.qed"
}

# start_mount NAME ARGS... IMAGE MOUNTPOINT — `qed mount ARGS...` in the
# background (output in $T/NAME.out and .err); waits until MOUNTPOINT is
# mounted.  Sets MNT_PID; fails (with the process waited for) when it exits
# first.
start_mount() {
    local name=$1 mp=${!#} i
    shift
    "$QED" mount "$@" </dev/null >"$T/$name.out" 2>"$T/$name.err" &
    MNT_PID=$!
    _mnt_pids+=("$MNT_PID")
    _mnt_points+=("$mp")
    for ((i = 0; i < 1000; i++)); do
        mounted "$mp" && return 0
        if ! kill -0 "$MNT_PID" 2>/dev/null; then
            wait "$MNT_PID" 2>/dev/null
            MNT_RC=$?
            return 1
        fi
        sleep 0.01
    done
    return 1
}

# wait_mount_exit PID SECONDS — MNT_RC is its exit status, or "running".
wait_mount_exit() {
    local pid=$1 n=$(($2 * 100)) i
    for ((i = 0; i < n; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.01
    done
    if kill -0 "$pid" 2>/dev/null; then
        MNT_RC=running
        return 1
    fi
    wait "$pid" 2>/dev/null
    MNT_RC=$?
    return 0
}

# stop_mount PID MOUNTPOINT — fusermount3 -u, then waits up to 20 s for the
# process to exit (MNT_RC is its status).
stop_mount() {
    fusermount3 -u "$2" 2>/dev/null || umount "$2" 2>/dev/null
    if ! wait_mount_exit "$1" 20; then
        kill -KILL "$1" 2>/dev/null
        wait "$1" 2>/dev/null
        MNT_RC="hung (killed after 20 s)"
    fi
}

# loop_attach FILE [ARGS...] — prints the loop device attached to FILE.
loop_attach() {
    local dev
    dev=$(losetup --find --show "$@" 2>/dev/null) || return 1
    _loop_devs+=("$dev")
    printf '%s\n' "$dev"
}

_mount_cleanup() {
    local m p d
    for m in "${_sys_mounts[@]}"; do
        umount -l "$m" 2>/dev/null
    done
    for d in "${_loop_devs[@]}"; do
        losetup -d "$d" 2>/dev/null
    done
    for p in "${_mnt_points[@]}"; do
        mounted "$p" 2>/dev/null && { fusermount3 -u -z "$p" 2>/dev/null || umount -l "$p" 2>/dev/null; }
    done
    for p in "${_mnt_pids[@]}"; do
        kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
    done
    _cleanup
}
trap _mount_cleanup EXIT

# header_dirty IMG — prints 1 when NEED_CHECK (features bit 1) is set.
header_dirty() {
    echo $((($(peek_le "$1" "$HDR_FEATURES" 8) >> 1) & 1))
}
