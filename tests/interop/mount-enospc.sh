#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed mount` on a full host file system: the writer gets ENOSPC, every
# write answered before stays in the image, and the image is consistent.
. "$(dirname "$0")/lib.sh"
. "$_lib_dir/mount-common.bash"
require_qed
require_cmd qemu-img python3 mount umount
require_fuse
[ "$(id -u)" -eq 0 ] || skip_all "mounting a small tmpfs needs root"

mkdir small
mount -t tmpfs -o size=24m tmpfs small 2>/dev/null || skip_all "cannot mount a tmpfs here"
_sys_mounts+=("$T/small")
qemu-img create -q -f qed -o cluster_size=64k small/full.qed 256M
: >f
start_mount full small/full.qed f
ok $? "an image on a 24 MiB tmpfs is mounted"

# writer.py FILE: writes 256 KiB blocks in order (block i filled with i+1)
# until one fails; prints "acked N" (blocks fully written) and the error.
cat >writer.py <<'EOF'
import os, struct, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
B = 256 * 1024
acked = 0
err = "none"
for i in range(os.fstat(fd).st_size // B):
    try:
        n = os.pwrite(fd, struct.pack("<Q", i + 1) * (B // 8), i * B)
    except OSError as e:
        err = e.strerror
        break
    if n != B:
        err = "short write %d" % n
        break
    acked += 1
print("acked", acked)
print("error", err)
try:
    os.fsync(fd)
    print("fsync ok")
except OSError as e:
    print("fsync", e.strerror)
EOF
run python3 writer.py f
acked=$(sed -n 's/^acked //p' "$OUT")
tap_like "$(sed -n 2p "$OUT")" '^error No space left on device$' "the writer gets ENOSPC when the host file system is full"
ok $(( acked * 256 >= 12 * 1024 ? 0 : 1 )) "after writing most of the free space ($((acked / 4)) MiB)"
stop_mount "$MNT_PID" f
tap_is "$MNT_RC" 0 "the mount still ends with status 0"
run "$QED" check small/full.qed
tap_is "$RC" 0 "qed check finds the image consistent" "$(cat "$OUT" "$ERR")"
qemu_check "qemu-img check finds no corruption" small/full.qed
qemu-img convert -O raw small/full.qed full.raw
python3 - "$acked" <<'EOF' >verify.out
import struct, sys
acked = int(sys.argv[1])
B = 256 * 1024
with open("full.raw", "rb") as f:
    for i in range(acked):
        f.seek(i * B)
        if f.read(B) != struct.pack("<Q", i + 1) * (B // 8):
            print("block", i, "lost")
            sys.exit(1)
print("ok", acked)
EOF
tap_is "$(cat verify.out)" "ok $acked" "every write answered before the failure is in the image"

done_testing
