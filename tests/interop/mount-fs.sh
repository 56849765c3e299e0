#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed mount` under a real file system: a loop device on the mounted file,
# mkfs.ext4, a few hundred MiB of files copied in, some deleted, fstrim;
# e2fsck finds it clean, the trimmed space leaves the image, and a
# read-only remount shows the files intact.
. "$(dirname "$0")/lib.sh"
. "$_lib_dir/mount-common.bash"
require_qed
require_cmd qemu-img python3 losetup mkfs.ext4 e2fsck fstrim md5sum mount umount
require_fuse
[ "$(id -u)" -eq 0 ] || skip_all "loop devices and mount need root"
[ -e /dev/loop-control ] || skip_all "no loop devices here (/dev/loop-control)"

SEEK="python3 $_lib_dir/mount-seek.py"

qemu-img create -q -f qed -o cluster_size=64k fs.qed 1G
mkdir m
start_mount rw fs.qed m
ok $? "the image is mounted"
dev=$(loop_attach m/fs) || skip_all "losetup cannot attach the mounted file here"
pass "losetup attaches the mounted file ($dev)"
tap_cmd "mkfs.ext4 on the loop device" mkfs.ext4 -q -E nodiscard "$dev"
mkdir fs
tap_cmd "mount the ext4 file system" mount "$dev" fs
_sys_mounts+=("$T/fs")

# 160 files of 2 MiB (320 MiB) with distinct content, from one random pool.
head -c $((4 * MiB)) /dev/urandom >pool
python3 - <<'EOF'
import hashlib
pool = open("pool", "rb").read()
for i in range(160):
    start = (i * 24593) % (len(pool) // 2)
    data = hashlib.sha256(str(i).encode()).digest() + pool[start:start + 2 * 1024 * 1024 - 32]
    with open("src%03d" % i, "wb") as f:
        f.write(data)
EOF
mkdir fs/files
run cp src* fs/files/
ok "$RC" "320 MiB of files copied into the file system" "$(cat "$ERR")"
(cd fs/files && md5sum src* | sort -k2) >all.md5
sync
before=$($SEEK blocks m/fs)
rm fs/files/src0[0-7]*
sync  # ext4 frees the blocks at the journal commit; fstrim skips busy ones
run fstrim -v fs
tap_like "$RC $(cat "$OUT")" '^0 .*trimmed' "fstrim trims through the loop device ($(cat "$OUT"))"
sync
(cd fs/files && md5sum src* | sort -k2) >kept.md5
tap_cmd "umount the file system" umount fs
tap_cmd "detach the loop device" losetup -d "$dev"
_loop_devs=()
sleep 1.1  # attributes are cached for 1 s
after=$($SEEK blocks m/fs)
ok $(( before - after >= 100 * MiB ? 0 : 1 )) "deleting 160 MiB and fstrim releases >= 100 MiB of the image file ($((before / MiB)) -> $((after / MiB)) MiB)"
tap_cmd "e2fsck -fn on the mounted file: clean" e2fsck -fn m/fs
stop_mount "$MNT_PID" m
tap_is "$MNT_RC" 0 "the mount ends with status 0"
qemu_check "qemu-img check finds the image clean" fs.qed
tap_is "$(header_dirty fs.qed)" 0 "NEED_CHECK is cleared"
actual=$(qemu-img info --output=json fs.qed | sed -n 's/.*"actual-size": \([0-9]*\).*/\1/p')
ok $(( actual - after < MiB && after - actual < MiB ? 0 : 1 )) "qemu-img info's actual size is what st_blocks showed ($actual, $after)"
run "$QED" map --output=json fs.qed
data=$(perl -ne '$s += $1 if /"length": (\d+), [^}]*"zero": false/; END { print $s + 0 }' "$OUT")
ok $(( data <= 400 * MiB ? 0 : 1 )) "qed map: $((data / MiB)) MiB of data, none of it beyond what was written"

start_mount ro -r fs.qed m
ok $? "the image is mounted read-only"
dev=$(loop_attach -r m/fs)
ok $? "losetup -r attaches it"
tap_cmd "mount -o ro the file system" mount -o ro "$dev" fs
_sys_mounts+=("$T/fs")
(cd fs/files && md5sum src* | sort -k2) >ro.md5
tap_is "$(wc -l <ro.md5)" 80 "80 files are left"
run diff kept.md5 ro.md5
ok "$RC" "every file left reads back intact" "$(head -5 "$OUT")"
run diff <(grep -v ' src0[0-7]' all.md5) ro.md5
ok "$RC" "and matches what was copied in"
umount fs
losetup -d "$dev"
_loop_devs=()
stop_mount "$MNT_PID" m
tap_is "$MNT_RC" 0 "the read-only mount ends with status 0"

done_testing
