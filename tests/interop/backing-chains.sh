#!/bin/bash
# SPDX-License-Identifier: MIT
# Backing chains: qed reads raw and QED backing files 2-3 deep exactly as QEMU
# does (convert -O raw compared byte for byte), reads zeros past the end of a
# shorter backing file, follows backing names relative to the image's
# directory, and its copy-on-write keeps the visible content right (QEMU reads
# the result and compares it with a raw reference).
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io perl truncate cmp
require_qed

# reads_like_qemu NAME IMG — qed convert -O raw IMG equals qemu-img convert.
reads_like_qemu() {
    local name=$1 img=$2
    rm -f "$T/.q.raw" "$T/.m.raw"
    if ! qemu-img convert -O raw "$img" "$T/.q.raw" 2>"$T/.qc.err"; then
        fail "$name" "qemu-img convert failed: $(cat "$T/.qc.err")"
        return 1
    fi
    run "$QED" convert -O raw "$img" "$T/.m.raw"
    if [ "$RC" -ne 0 ]; then
        fail "$name"
        _run_diag "$QED" convert -O raw "$img" "$T/.m.raw"
        return 1
    fi
    same_raw "$name" "$T/.q.raw" "$T/.m.raw"
}

# cow_writes NAME IMG CMD... — applies the commands with qed io to IMG and to
# a raw copy of IMG's content (made by qemu-img convert before) with qemu-io;
# QEMU then compares the two and checks IMG.
cow_writes() {
    local name=$1 img=$2
    shift 2
    local args=() c
    rm -f "$T/.ref.raw"
    qemu-img convert -O raw "$img" "$T/.ref.raw"
    if ! qemu_io -f raw "$T/.ref.raw" -- "$@"; then
        fail "$name: QEMU writes the raw reference" "$(cat "$OUT" "$ERR")"
        return 1
    fi
    for c in "$@"; do args+=(-c "$c"); done
    tap_cmd "$name: qed io" "$QED" io "${args[@]}" "$img" || return 1
    tap_cmd "$name: QEMU reads what qed wrote through the chain" qemu-img compare -F raw "$img" "$T/.ref.raw"
    qemu_check "$name: qemu-img check" "$img"
    reads_like_qemu "$name: qed reads it back like QEMU" "$img"
    map_agrees "$name: qed map agrees with qemu-img map" "$img"
}

# ---- A raw backing file shorter than the image -------------------------------------
if build_raw_backed rb; then
    reads_like_qemu "raw backing file shorter than the image" rb/top.qed
    tap_cmd "reads past the end of the raw backing file are zeros" \
        "$QED" io -r -c "read -P 0xa3 $((4 * MiB + 300)) $((1536 - 300))" \
        -c "read -P 0 $((4 * MiB + 1536)) $((4096 - 1536))" \
        -c "read -P 0 $((4 * MiB + 8 * KiB)) $((MiB - 8 * KiB))" -c "read -P 0xa1 4k 60k" rb/top.qed
    cp -r rb rbw
    cow_writes "COW over a raw backing file" rbw/top.qed \
        "write -P 0x21 $((20 * KiB + 100)) 50" \
        "write -P 0x22 $((MiB + 4000)) 200" \
        "write -P 0x23 $((4 * MiB - 100)) 2000" \
        "write -P 0x24 $((4 * MiB + 4096 + 10)) 10" \
        "write -P 0x25 $((128 * KiB + 500)) 100" \
        "write -z $((MiB + 8 * KiB + 7)) 100" \
        "write -P 0x26 $((3 * MiB)) 1M"
fi

# ---- QED chains ------------------------------------------------------------------------
if build_qed_chain qc; then
    reads_like_qemu "3-deep QED chain with different cluster sizes" qc/top.qed
    reads_like_qemu "2-deep part of that chain" qc/mid.qed
    tap_cmd "reads past the ends of shorter backing files are zeros" \
        "$QED" io -r -c "read -P 0 $((2 * MiB + 1024)) 4k" -c "read -P 0 $((3 * MiB + 64 * KiB)) 64k" \
        -c "read -P 0xc3 $((2 * MiB + 512)) 512" -c "read -P 0xb1 20k 40k" qc/top.qed
    cp -r qc qcw
    cow_writes "COW over a 3-deep QED chain" qcw/top.qed \
        "write -P 0x31 $((32 * KiB + 1)) 3" \
        "write -P 0x32 $((64 * KiB - 50)) 100" \
        "write -P 0x33 $((MiB + 4 * KiB - 8)) 16" \
        "write -P 0x34 $((2 * MiB - 10)) 20" \
        "write -P 0x35 $((3 * MiB - 10)) 20" \
        "write -z $((512 * KiB + 100)) 100" \
        "write -z 1M 64k"
fi
if build_qed_pair qp; then
    reads_like_qemu "2-deep QED chain" qp/top.qed
    rm -f qp/new.qed
    if tap_cmd "qed create over the chain (format probed)" "$QED" create -q -b top.qed qp/new.qed; then
        reads_like_qemu "a new empty image over a 2-deep chain reads like its backing" qp/new.qed
        cow_writes "COW into a new image over a 2-deep chain" qp/new.qed \
            "write -P 0x41 100 100" "write -P 0x42 $((512 * KiB + 1990)) 20" "write -z 8k 4k"
    fi
fi

# ---- Backing names ---------------------------------------------------------------------
if build_relative rel; then
    reads_like_qemu "relative backing names (../base/disk.raw, mid.qed)" rel/images/top.qed
    reads_like_qemu "absolute backing name" rel/images/abs.qed
    reads_like_qemu "absolute image path" "$T/rel/images/top.qed"
    cd rel/images/sub || bail_out "cd"
    reads_like_qemu "relative names resolved from the image's directory, not the cwd" ../top.qed
    cd "$T" || bail_out "cd"
    mv rel moved
    reads_like_qemu "a chain with relative names still reads after moving its directory" moved/images/top.qed
fi
build_probed_raw_backing pr && reads_like_qemu "raw backing file with the format probed" pr/top.qed

done_testing
