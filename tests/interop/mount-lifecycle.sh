#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed mount`: --daemon returns once the file is usable; signals detach
# the mount and the process ends when the last open file closes (a second
# signal cuts them off); unmounting under a running fio loses nothing; a
# SIGKILLed mount leaves an image that opens with every fsync'd write.
. "$(dirname "$0")/lib.sh"
. "$_lib_dir/mount-common.bash"
require_qed
require_cmd qemu-img qemu-io python3 cmp
require_fuse

# ---- --daemon -------------------------------------------------------------------
qemu-img create -q -f qed d.qed 4M
qemu-io -f qed -c "write -P 0x3c 0 1M" d.qed >/dev/null
: >d
start=$(date +%s%N)
out=$(timeout 20 "$QED" mount --daemon d.qed d 2>&1)
rc=$?
tap_is "$rc:$out" "0:" "qed mount --daemon returns 0, printing nothing, and releases the caller's pipe"
ok "$(mounted d && echo 0 || echo 1)" "the file is mounted when it returns"
_mnt_points+=("$T/d")
cmp -s <(head -c 1M d) <(head -c 1M /dev/zero | tr '\0' '\074')
ok $? "the file reads the image's data at once"
fusermount3 -u d
wait_unlocked d.qed 10
ok $? "after fusermount3 -u the detached process ends (the image's locks are gone)"
tap_is "$(header_dirty d.qed)" 0 "and the image is closed clean"
run timeout 20 "$QED" mount --daemon d.qed nowhere
tap_like "$RC $(cat "$ERR")" '^1 .*nowhere: No such file' "a --daemon mount that fails says why and exits 1"

# ---- SIGTERM with no file open -------------------------------------------------------
: >t
start_mount term d.qed t
kill -TERM "$MNT_PID"
wait_mount_exit "$MNT_PID" 10
tap_is "$MNT_RC" 0 "SIGTERM with no file open: exit status 0"
ok "$(mounted t && echo 1 || echo 0)" "and the mount point is free"
tap_is "$(header_dirty d.qed)" 0 "and the image is clean"

# ---- SIGTERM with a file open; a second signal --------------------------------------
# holder.py FILE: opens FILE, then reads 4 KiB each time the file "go" gets
# a line, printing "read N" or the error.
cat >holder.py <<'EOF'
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
print("open", flush=True)
seen = 0
while seen < 2:
    try:
        lines = open("go").read().count("\n")
    except FileNotFoundError:
        lines = 0
    if lines > seen:
        seen += 1
        try:
            # A new offset each time: not in the page cache.
            print("read", len(os.pread(fd, 4096, seen << 20)), flush=True)
            os.pwrite(fd, b"\x42" * 4096, 8192)
            os.fsync(fd)
            print("wrote", flush=True)
        except OSError as e:
            print("error", e.strerror, flush=True)
    time.sleep(0.02)
EOF
: >h
start_mount hold d.qed h
python3 holder.py h >holder.out 2>&1 &
holder=$!
_mnt_pids+=("$holder")
for ((i = 0; i < 500; i++)); do grep -q open holder.out && break; sleep 0.01; done
kill -TERM "$MNT_PID"
for ((i = 0; i < 500; i++)); do grep -q 'open file' "$T/hold.err" && break; sleep 0.01; done
tap_like "$(cat "$T/hold.err")" 'warning: unmounted; serving 1 open file until closed' "SIGTERM with a file open says it keeps serving it"
ok "$(mounted h && echo 1 || echo 0)" "the mount point is detached at once"
ok "$(kill -0 "$MNT_PID" 2>/dev/null && echo 0 || echo 1)" "the process keeps running for the open file"
echo >>go
for ((i = 0; i < 500; i++)); do grep -Eq 'wrote|error' holder.out && break; sleep 0.01; done
tap_is "$(sed -n 2,3p holder.out | paste -sd' ')" "read 4096 wrote" "the open file still reads, writes and fsyncs"
kill -TERM "$MNT_PID"
wait_mount_exit "$MNT_PID" 10
tap_is "$MNT_RC" 0 "a second signal ends it at once with status 0"
echo >>go
wait "$holder" 2>/dev/null
tap_like "$(sed -n '4,$p' holder.out | paste -sd' ')" '^error (Transport endpoint is not connected|No such device)' "the file still open then fails (ENOTCONN)"
tap_is "$(header_dirty d.qed)" 0 "the image is clean"
qemu_io -f qed d.qed -- "read -P 0x42 8192 4096"
ok $? "the write made while detached is in the image"

# ---- unmounting under fio --------------------------------------------------------------
if command -v fio >/dev/null; then
    qemu-img create -q -f qed f.qed 64M
    : >f
    start_mount fio f.qed f
    # The write phase only: fio reopens the file for a verify phase, and
    # after the detach its name no longer leads to the mount.  The writes
    # are verified afterwards on a raw copy of the image.
    fio_job=(--name=w --rw=randwrite --bs=4k --size=64M --io_size=24M
        --ioengine=libaio --iodepth=16 --direct=1 --verify=crc32c
        --randrepeat=1)
    fio "${fio_job[@]}" --filename=f --do_verify=0 --output=fio.out >/dev/null 2>fio.err &
    fio_pid=$!
    _mnt_pids+=("$fio_pid")
    # Under way once the image file grows.
    size0=$(stat -c %s f.qed)
    for ((i = 0; i < 1000; i++)); do [ "$(stat -c %s f.qed)" -gt "$size0" ] && break; sleep 0.01; done
    run fusermount3 -u f
    tap_like "$RC $(cat "$ERR")" '^1 .*(busy|Device or resource busy)' "fusermount3 -u while fio has the file open: busy, the mount stays"
    kill -TERM "$MNT_PID"
    wait "$fio_pid"
    fio_rc=$?
    tap_is "$fio_rc" 0 "SIGTERM during fio: fio finishes its writes without an error"
    wait_mount_exit "$MNT_PID" 20
    tap_is "$MNT_RC" 0 "the mount exits 0 once fio closed the file"
    tap_is "$(header_dirty f.qed)" 0 "the image is clean"
    qemu_check "qemu-img check after fio" f.qed
    qemu-img convert -O raw f.qed f.raw
    run fio "${fio_job[@]}" --filename=f.raw --verify_only --output=verify.out
    tap_is "$RC $(grep -c 'verify:' "$ERR")" "0 0" "every block fio wrote is in the image (fio --verify_only, crc32c)"
else
    skip "fusermount3 -u under fio" "fio is not installed"
fi

# ---- SIGKILL: what fsync acknowledged survives ----------------------------------------
# writer.py FILE: writes 64 KiB blocks (each filled with its number) in
# order, fsyncs after every 8th and records the last fsync'd block in
# synced.txt, until a write fails.
cat >writer.py <<'EOF'
import os, struct, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
B = 65536
n = os.fstat(fd).st_size // B
for i in range(n):
    try:
        os.pwrite(fd, struct.pack("<Q", i + 1) * (B // 8), i * B)
        if i % 8 == 7:
            os.fsync(fd)
            with open("synced.txt", "w") as f:
                f.write(str(i))
    except OSError as e:
        print("stopped at", i, e.strerror)
        break
EOF
qemu-img create -q -f qed k.qed 256M
: >k
start_mount kill k.qed k
python3 writer.py k >writer.out 2>&1 &
writer=$!
_mnt_pids+=("$writer")
for ((i = 0; i < 1000; i++)); do [ -s synced.txt ] && [ "$(cat synced.txt)" -ge 300 ] && break; sleep 0.01; done
kill -KILL "$MNT_PID"
wait "$MNT_PID" 2>/dev/null
wait "$writer"
synced=$(cat synced.txt)
tap_like "$(cat writer.out)" '^stopped at [0-9]+ ' "the writer's next write fails once the mount is killed"
fusermount3 -u -z k 2>/dev/null || umount -l k 2>/dev/null
wait_unlocked k.qed 10
ok $? "the killed mount's locks are gone"
run "$QED" check -r all k.qed
tap_like "$RC" '^0$' "qed check -r all repairs what the kill left" "$(cat "$OUT" "$ERR")"
qemu_check "qemu-img check then finds the image clean" k.qed
qemu-img convert -O raw k.qed k.raw
python3 - "$synced" <<'EOF' >verify.out
import struct, sys
last = int(sys.argv[1])
B = 65536
with open("k.raw", "rb") as f:
    for i in range(last + 1):
        f.seek(i * B)
        if f.read(B) != struct.pack("<Q", i + 1) * (B // 8):
            print("block", i, "lost")
            sys.exit(1)
print("ok", last + 1)
EOF
tap_is "$(cat verify.out)" "ok $((synced + 1))" "every block fsync acknowledged before the kill is in the image ($((synced + 1)) blocks)"

done_testing
