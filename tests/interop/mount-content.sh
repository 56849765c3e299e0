#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed mount`: the mounted file is the image's content as raw (backing
# chains, zero clusters), writes through it reach the image as qemu-io and
# qed io read them, and the image is clean after the unmount.
. "$(dirname "$0")/lib.sh"
. "$_lib_dir/mount-common.bash"
require_qed
require_cmd qemu-img qemu-io python3 cmp
require_fuse

SEEK="python3 $_lib_dir/mount-seek.py"

# ---- content, read-only, over a file and over a directory -------------------
build_qed_chain chain
qemu-img convert -O raw chain/top.qed chain.raw
: >over
start_mount chain -r chain/top.qed over
ok $? "qed mount -r over a regular file mounts" "$(cat "$T/chain.err")"
tap_is "$(stat -c %s over)" "$(stat -c %s chain.raw)" "the mounted file's size is the virtual size"
same_raw "a 3-deep chain reads as qemu-img convert -O raw shows it" over chain.raw
run dd if=/dev/zero of=over bs=512 count=1 conv=notrunc
tap_like "$RC $(cat "$ERR")" '^[1-9].*Read-only file system' "a read-only mount refuses writes with EROFS"
stop_mount "$MNT_PID" over
tap_is "$MNT_RC" 0 "fusermount3 -u ends it with status 0"
ok "$(mounted over && echo 1 || echo 0)" "the mount point is free again"

build_raw_backed rawb
qemu-img convert -O raw rawb/top.qed rawb.raw
: >rawb.mnt
start_mount rawb -r rawb/top.qed rawb.mnt
same_raw "an image over a shorter raw backing file (COW, zero clusters over backing data) reads as QEMU shows it" rawb.mnt rawb.raw
stop_mount "$MNT_PID" rawb.mnt

build_std_image std.qed 4096 4
qemu-img convert -O raw std.qed std.raw
mkdir dir
start_mount std std.qed dir
ok $? "qed mount over a directory mounts"
tap_is "$(ls -A dir)" "std" "the directory holds one file named after the image, without .qed"
same_raw "zero clusters, unaligned and cluster-straddling data read as qemu-img shows them" dir/std std.raw
run touch dir/other
tap_like "$(cat "$ERR")" 'Operation not permitted' "creating another file in the directory is refused"

# ---- SEEK_DATA / SEEK_HOLE, cp --sparse ----------------------------------------
qed_map_json() { "$QED" map -U --output=json "$1" >"$T/map.json" && $SEEK map "$T/map.json"; }
run $SEEK extents dir/std
cp "$OUT" seek.std
run qed_map_json std.qed
tap_is "$(cat seek.std)" "$(cat "$OUT")" "SEEK_DATA/SEEK_HOLE give the data extents qed map gives (zero clusters are holes)"
tap_like "$(wc -l <seek.std)" '^[2-9]|[1-9][0-9]+' "there are several data extents ($(wc -l <seek.std))"
cp --sparse=always dir/std sparse.copy
same_raw "cp --sparse=always of the mounted file has the same content" sparse.copy std.raw
tap_is "$($SEEK extents sparse.copy | awk '{s += $2} END {print s + 0}')" \
    "$(awk '{s += $2} END {print s + 0}' seek.std)" "the copy has exactly the data extents as data (its holes are kept)"

# ---- writes through the file ---------------------------------------------------
size=$(stat -c %s dir/std)
python3 - dir/std <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
os.pwrite(fd, b"\x5a" * 4096, 0)              # over data
os.pwrite(fd, b"\x6b" * 3000, 9 * 4096 + 100)  # into a zero cluster, unaligned
os.pwrite(fd, b"\x7c" * 65536, 20 * 4096)      # unallocated clusters
os.fsync(fd)
os.close(fd)
EOF
ok $? "writes and fsync through the mounted file succeed"
run stat -c %b dir/std
stop_mount "$MNT_PID" dir
tap_is "$MNT_RC" 0 "the read-write mount ends with status 0"
tap_is "$(header_dirty std.qed)" 0 "the image is closed clean (NEED_CHECK cleared)"
qemu_check "qemu-img check finds the image clean after the unmount" std.qed
qemu_io -f qed std.qed -- "read -P 0x5a 0 4096" "read -P 0x6b $((9 * 4096 + 100)) 3000" \
    "read -P 0x7c $((20 * 4096)) 65536"
ok $? "qemu-io reads back what was written through the file" "$(cat "$OUT" "$ERR")"
run "$QED" io -c "read -P 0x7c $((20 * 4096)) 65536" -c "read -P 0x6b $((9 * 4096 + 100)) 3000" std.qed
tap_like "$RC $(tr "\n" " " <"$OUT")" '^0 .*read 3000/3000' "qed io reads them back too"
qemu_io -f qed std.qed -- "read -P 0 $((9 * 4096)) 100"
ok $? "the rest of the zero cluster still reads as zeros"

# ---- the file as a disk: end, O_TRUNC, ftruncate, fallocate ---------------------
qemu-img create -q -f qed -o cluster_size=64k disk.qed 8M
: >disk
start_mount disk disk.qed disk
run dd if=/dev/zero of=disk bs=4096 seek=$((8 * MiB / 4096)) count=1 conv=notrunc
tap_like "$RC $(cat "$ERR")" '^1 .*No space left on device' "a write at the end fails with ENOSPC"
python3 -c '
import os, sys
fd = os.open("disk", os.O_WRONLY)
print(os.pwrite(fd, b"\x11" * 8192, 8 * 1024 * 1024 - 4096))' >short.out 2>&1
tap_is "$(cat short.out)" 4096 "a write crossing the end is cut short there"
echo hello >disk
tap_is "$(stat -c %s disk)" $((8 * MiB)) "a shell redirection (O_TRUNC) does not empty the disk"
tap_is "$(head -c 6 disk)" "hello" "... and writes at its start"
run truncate -s 12M disk
tap_is "$RC $(stat -c %s disk)" "0 $((12 * MiB))" "ftruncate to a larger size grows the image"
run truncate -s 6M disk
tap_is "$RC $(stat -c %s disk)" "0 $((6 * MiB))" "ftruncate to a smaller size shrinks it"
run truncate -s 1000 disk
tap_like "$RC $(cat "$ERR")" '^1 .*Invalid argument' "a size QED cannot hold (not a multiple of 512) is refused"
tap_like "$(cat "$T/disk.err")" 'warning: truncate to 1000 bytes: .*512' "... and the mount says why on stderr"
dd if=/dev/urandom of=rand bs=64k count=16 status=none
dd if=rand of=disk bs=64k seek=16 conv=notrunc status=none
before=$($SEEK blocks disk)
run fallocate -p -o $((16 * 65536)) -l $((8 * 65536)) disk
ok "$RC" "fallocate --punch-hole succeeds" "$(cat "$ERR")"
run fallocate -z -o $((24 * 65536 + 1000)) -l 5000 disk
ok "$RC" "fallocate --zero-range succeeds" "$(cat "$ERR")"
run fallocate -o 0 -l 65536 disk
tap_like "$RC $(cat "$ERR")" '^1 .*(not supported|Operation not supported)' "plain fallocate (allocation) is refused with EOPNOTSUPP"
sleep 1.1  # attributes are cached for 1 s
after=$($SEEK blocks disk)
ok $(( after + 8 * 65536 <= before ? 0 : 1 )) "punched clusters release host space (st_blocks $before -> $after)"
cmp -s <(head -c $((24 * 65536)) disk | tail -c $((8 * 65536))) <(head -c $((8 * 65536)) /dev/zero)
ok $? "the punched range reads as zeros"
cmp -s <(dd if=disk bs=1 skip=$((24 * 65536 + 1000)) count=5000 status=none) <(head -c 5000 /dev/zero)
ok $? "the zeroed range reads as zeros"
cmp -s <(dd if=disk bs=1 skip=$((24 * 65536)) count=1000 status=none) <(dd if=rand bs=1 skip=$((8 * 65536)) count=1000 status=none)
ok $? "the bytes before the zeroed range are kept"
run python3 -c 'import os; fd = os.open("disk", os.O_RDWR); os.fsync(fd); os.fdatasync(fd)'
ok "$RC" "fsync and fdatasync succeed"

# ---- locking ------------------------------------------------------------------
run qemu-io -f qed -c "write 0 512" disk.qed
tap_like "$(cat "$ERR")" 'Failed to get "write" lock' "qemu-io cannot write the image while it is mounted"
mkdir second
run "$QED" mount disk.qed second
tap_like "$RC $(cat "$ERR")" '^1 .*Is another process using the image' "a second writable mount of the image is refused"
ok "$(mounted second && echo 1 || echo 0)" "... and mounts nothing"
stop_mount "$MNT_PID" disk
tap_is "$MNT_RC" 0 "the mount ends with status 0"
qemu_check "qemu-img check: clean after resizes, punches and zeroing" disk.qed
tap_is "$(qemu-img info --output=json disk.qed | grep -o '"virtual-size": [0-9]*')" \
    "\"virtual-size\": $((6 * MiB))" "QEMU sees the size ftruncate set"

# ---- usage --------------------------------------------------------------------
run "$QED" mount std.qed
tap_like "$RC $(cat "$ERR")" '^1 .*expected an image and a mount point' "one argument is a usage error"
run "$QED" mount -U std.qed dir
tap_like "$RC $(cat "$ERR")" '^1 .*needs -r' "-U without -r is refused"
run "$QED" mount std.qed nowhere
tap_like "$RC $(cat "$ERR")" '^1 .*nowhere: No such file' "a missing mount point is named"
mkfifo fifo
run "$QED" mount std.qed fifo
tap_like "$RC $(cat "$ERR")" '^1 .*not a directory or a regular file' "a FIFO mount point is refused"
run "$QED" mount -o no_such_option std.qed dir
tap_like "$RC $(cat "$ERR")" '^1 .*no_such_option' "an unknown FUSE option is refused, naming it"
tap_is "$(header_dirty std.qed)" 0 "failed mounts leave the image clean"

done_testing
