#!/bin/bash
# SPDX-License-Identifier: MIT
# Allocating writes on a full file system: a 20 MiB tmpfs with 4 MiB left.
# A write that fails with ENOSPC must leave no leaked cluster behind an image
# marked clean: `qed check` (read-only) and `qemu-img check` find nothing,
# or the image is marked dirty and the next read-write open repairs it.  The
# open image keeps working after the failure (writes that fit succeed, data
# written before reads back), and once space is freed the failed write
# succeeds.  Without and with a backing file, with both I/O engines.
#
# Mounting the tmpfs needs root; the script is skipped otherwise.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img mount umount df head tr
require_qed

CHECK_CLEAN=${TESTS_DIR:-$_lib_dir/..}/qemu-check-clean
MNT=$T/mnt
LEFT=$((4 * MiB))

[ "$(id -u)" -eq 0 ] || skip_all "mounting a tmpfs needs root"
mkdir -p "$MNT" || bail_out "cannot create $MNT"
mount -t tmpfs -o size=20m tmpfs "$MNT" 2>"$T/.mount-err" ||
    skip_all "cannot mount a tmpfs here: $(head -c 200 "$T/.mount-err")"
trap 'umount "$MNT" 2>/dev/null; _cleanup' EXIT

# A raw backing file outside the tmpfs: 4 MiB of 0x5a.
head -c $((4 * MiB)) /dev/zero | tr '\0' 'Z' >"$T/base.raw" ||
    bail_out "cannot write the backing file"

# new_image BACKING — a fresh 64 MiB image in the tmpfs, and a filler file
# leaving LEFT bytes free.
new_image() {
    rm -f "$MNT"/*
    if [ "$1" = yes ]; then
        run "$QED" create -f qed -b "$T/base.raw" -F raw "$MNT/x.qed" 64M
    else
        run "$QED" create -f qed "$MNT/x.qed" 64M
    fi
    [ "$RC" -eq 0 ] || return 1
    local avail
    avail=$(df --output=avail -B1 "$MNT" | tail -n 1)
    [ "$avail" -gt "$LEFT" ] || return 1
    head -c $((avail - LEFT)) /dev/zero >"$MNT/fill" 2>/dev/null
    avail=$(df --output=avail -B1 "$MNT" | tail -n 1)
    [ "$avail" -le "$LEFT" ]
}

# image_settled NAME — the closed image has no leak: `qed check` exits 0
# (or, marked dirty, a read-write open repairs it first), and qemu-img
# check agrees.
image_settled() {
    local name=$1
    run "$QED" info --output=json "$MNT/x.qed"
    if grep -q '"dirty-flag": true' "$OUT"; then
        note "$name: left marked dirty; a read-write open repairs it"
        tap_cmd "$name: a read-write open of the dirty image works" \
            "$QED" io -c 'read 0 512' "$MNT/x.qed"
    fi
    tap_cmd "$name: qed check finds no leak and no corruption" \
        "$QED" check "$MNT/x.qed"
    tap_cmd "$name: QEMU check agrees" "$CHECK_CLEAN" "$MNT/x.qed"
}

# The content of 8M..16M before any write: zeros (the backing file ends at
# 4 MiB), so both variants read the same.
scenario() {
    local engine=$1 backing=$2 what
    what="$engine, $([ "$backing" = yes ] && echo 'raw backing' || echo 'no backing')"
    export QED_IO_ENGINE=$engine

    if ! new_image "$backing"; then
        fail "$what: image and filler on the tmpfs" "$(head -c 500 "$ERR")"
        return
    fi
    tap_cmd_rc 1 "$what: an 8 MiB write fails with 4 MiB left" \
        "$QED" io -c 'write -P 0x22 8M 8M' "$MNT/x.qed"
    tap_like "$(cat "$ERR")" 'No space left on device' \
        "$what: the error says no space is left"
    tap_like "$(cat "$ERR")" '^qed: .*x\.qed: write failed: No space left on device$' \
        "$what: in one line that names the failed request once"
    image_settled "$what, one failed write"

    new_image "$backing" || fail "$what: second image on the tmpfs"
    tap_cmd_rc 1 "$what: writes before and after a failed one in one open" \
        "$QED" io -c 'write -P 0x11 0 1M' -c 'write -P 0x22 8M 8M' \
        -c 'write -P 0x33 16M 1M' "$MNT/x.qed"
    tap_like "$(grep -c '^wrote 1048576/1048576' "$OUT")" '^2$' \
        "$what: the writes that fit succeed around the failed one"
    image_settled "$what, writes around a failed one"
    tap_cmd "$what: what was written reads back, the failed range is old" \
        "$QED" io -r -c 'read -P 0x11 0 1M' -c 'read -P 0x33 16M 1M' \
        -c 'read -P 0 8M 8M' "$MNT/x.qed"

    new_image "$backing" || fail "$what: third image on the tmpfs"
    tap_cmd_rc 1 "$what: 64 writes, 16 in flight, run out of space" \
        "$QED" bench -w -c 64 -d 16 -s 256K -S 512K "$MNT/x.qed"
    image_settled "$what, concurrent writes"

    rm -f "$MNT/fill"
    tap_cmd "$what: with space freed, the write succeeds and reads back" \
        "$QED" io -c 'write -P 0x22 8M 8M' -c 'read -P 0x22 8M 8M' \
        "$MNT/x.qed"
    image_settled "$what, after freeing space"
    unset QED_IO_ENGINE
}

for engine in threads io_uring; do
    if [ "$engine" = io_uring ] &&
        ! QED_IO_ENGINE=io_uring "$QED" info "$T/base.raw" >/dev/null 2>&1; then
        skip "io_uring: allocating writes on a full tmpfs" \
            "io_uring is not available here"
        continue
    fi
    for backing in no yes; do
        scenario "$engine" "$backing"
    done
done

done_testing
