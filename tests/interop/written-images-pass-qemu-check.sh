#!/bin/bash
# SPDX-License-Identifier: MIT
# Images `qed create` makes and `qed io` writes pass `qemu-img check` (exit 0:
# no corruption, no leaks) and read, through QEMU, exactly like a raw file that
# qemu-io -f raw gave the same commands: big single writes, writes across L2
# tables, write -z on whole and partial clusters, partial writes into zero
# clusters of an image with a backing file, overwrites, discard.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io perl truncate
require_qed

# scenario NAME IMG REF -- COMMANDS...
# IMG must exist (made by qed create); REF is the raw reference as it was before
# the commands (same virtual size).  Applies the commands to IMG with qed io and
# to REF with qemu-io -f raw, then checks IMG with QEMU.
scenario() {
    local name=$1 img=$2 ref=$3
    shift 4
    local args=() c
    for c in "$@"; do args+=(-c "$c"); done
    if ! qemu_io -f raw "$ref" -- "$@"; then
        fail "$name: QEMU writes the raw reference" "$(cat "$OUT" "$ERR")"
        return
    fi
    tap_cmd "$name: qed io" "$QED" io "${args[@]}" "$img" || return
    qemu_check "$name: qemu-img check" "$img"
    run qed_walk "$img"
    ok "$RC" "$name: every cluster is referenced exactly once" "$(cat "$OUT" "$ERR")"
    tap_cmd "$name: qemu-img compare with the raw reference" qemu-img compare -F raw "$img" "$ref"
    tap_is "$(($(peek_le "$img" "$HDR_FEATURES" 8) & 2))" 0 "$name: NEED_CHECK is clear after qed io exits"
}

# new_image NAME IMG SIZE [CREATE-ARGS...] — qed create + a sparse raw reference
# IMG.ref of the same size.
new_image() {
    local name=$1 img=$2 size=$3
    shift 3
    rm -f "$img" "$img.ref"
    truncate -s "$size" "$img.ref"
    tap_cmd "$name: qed create" "$QED" create -q "$@" "$img" "$size"
}

# QEMU 7.2's own arithmetic: a consistent 4k-cluster file over 16 MiB is
# reported with false leaks (qemu_check allows exactly those).
qemu-img create -q -f qed -o cluster_size=4k,table_size=16 fl.qed 64M
qemu_io -f qed fl.qed -- "write -P 1 0 $((4062 * 4096))"
run qemu-img check --output=json fl.qed
cp "$OUT" fl.json
tap_is "$RC/$(json_get fl.json leaks)/$(qemu_false_leaks fl.qed)" "3/1/1" \
    "QEMU: qemu-img check reports 1 false leak for a consistent 4095-cluster file"
run qed_walk fl.qed
ok "$RC" "QEMU: the independent walk finds that file consistent" "$(cat "$OUT" "$ERR")"
rm -f fl.qed

if new_image "16 MiB writes, 4k clusters, table_size=16" big.qed 48M -o cluster_size=4k,table_size=16; then
    scenario "16 MiB writes, 4k clusters, table_size=16" big.qed big.qed.ref -- \
        "write -P 0x5a 0 16M" "write -P 0x5b $((16 * MiB + 1000)) 16M"
fi
rm -f big.qed big.qed.ref

if new_image "writes across L2 tables" l2.qed 20M -o cluster_size=4k,table_size=2; then
    scenario "writes across L2 tables" l2.qed l2.qed.ref -- \
        "write -P 1 $((4 * MiB - 6000)) 12000" "write -P 2 7M 9M" "write -P 3 $((12 * MiB - 1)) 2"
fi

if new_image "write -z on unallocated clusters" zero.qed 4M; then
    scenario "write -z on unallocated clusters" zero.qed zero.qed.ref -- \
        "write -z 2M 256k" \
        "write -z $((3 * MiB + 100)) 1000" \
        "write -P 2 $((2 * MiB + 4096)) 512" \
        "write -z $((3 * MiB + 64 * KiB - 10)) $((64 * KiB + 20))"
    qemu-img map --output=json zero.qed >zero.json 2>&1
    json_maplines zero.json | grep -Fxq 'start=2162688 length=196608 depth=0 present=true zero=true data=false'
    ok $? "write -z of whole unallocated clusters makes zero clusters (qemu-img map)" \
        "qemu-img map: $(cat zero.json)"
fi

# QEMU writes zeros in place over allocated clusters; making them zero clusters
# instead would leak the data clusters (qemu-img check exit 3).
if new_image "write -z over allocated clusters" zalloc.qed 4M; then
    scenario "write -z over allocated clusters" zalloc.qed zalloc.qed.ref -- \
        "write -P 1 0 1M" \
        "write -z 64k 128k" \
        "write -z 1000 3000" \
        "write -z $((MiB - 512)) $((64 * KiB + 1024))"
fi

if new_image "overwrites" over.qed 1M; then
    scenario "overwrites" over.qed over.qed.ref -- \
        "write -P 1 0 256k" "write -P 2 1000 5000" "write -P 3 64k 64k" \
        "write -P 4 $((128 * KiB - 1)) 2" "write -P 5 0 200k" "write -P 6 100k 1"
fi

# The standard pattern set on several geometries.
for geo in 4096:4 65536:2 1048576:2 2097152:4; do
    cs=${geo%:*} ts=${geo#*:}
    size=$(geometry_size "$cs" "$ts")
    mapfile -t cmds < <(std_writes "$cs" "$size" "$ts")
    if new_image "standard writes, cluster_size=$cs table_size=$ts" std.qed "$size" \
        -o "cluster_size=$cs,table_size=$ts"; then
        scenario "standard writes, cluster_size=$cs table_size=$ts" std.qed std.qed.ref -- "${cmds[@]}"
    fi
    rm -f std.qed std.qed.ref
done

# ---- An image with a backing file ------------------------------------------------
# Partial writes into zero clusters must leave the rest of the cluster zero
# (not backing data); partial writes into unallocated clusters copy the rest
# from the backing file.  (QEMU 7.2 itself gets the first case wrong when it
# writes, so only the reading is left to QEMU here.)
backing_cmds=(
    "write -z 0 8k"
    "write -P 0x11 100 100"
    "write -z 64k 64k"
    "write -P 0x12 $((64 * KiB + 4000)) 200"
    "write -P 0x13 $((200 * KiB + 10)) 10"
    "write -z $((300 * KiB + 100)) 200"
    "write -z 400k 4k"
    "write -P 0x14 $((400 * KiB + 4095)) 1"
    "write -P 0x15 $((MiB - 10)) 20"
)
truncate -s 1M braw.raw
qemu_io -f raw braw.raw -- "write -P 0xaa 0 1M" || fail "QEMU fills braw.raw" "$(cat "$ERR")"
rm -f btop.qed
if tap_cmd "raw backing: qed create -b braw.raw -F raw" \
    "$QED" create -q -o cluster_size=4k -b braw.raw -F raw btop.qed 2M; then
    cp braw.raw btop.ref && truncate -s 2M btop.ref
    scenario "raw backing, partial writes into zero clusters" btop.qed btop.ref -- "${backing_cmds[@]}"
    tap_cmd "raw backing: qemu-io reads zeros after the partial write into a zero cluster" \
        qemu-io -r -c "read -P 0 0 100" -c "read -P 0 200 $((4096 - 200))" -c "read -P 0 4k 4k" btop.qed
fi

qemu-img create -q -f qed -o cluster_size=64k bqed.qed 1M
qemu_io -f qed bqed.qed -- "write -P 0xbb 0 1M" || fail "QEMU fills bqed.qed" "$(cat "$ERR")"
rm -f bqtop.qed
if tap_cmd "qed backing: qed create -b bqed.qed (format probed)" \
    "$QED" create -q -o cluster_size=4k -b bqed.qed bqtop.qed 1536k; then
    qemu-img convert -O raw bqed.qed bqtop.ref && truncate -s 1536k bqtop.ref
    scenario "qed backing with 64k clusters under 4k clusters" bqtop.qed bqtop.ref -- "${backing_cmds[@]}"
fi

# ---- discard -------------------------------------------------------------------------
# What a discarded range reads as is not defined (QEMU's qed driver ignores
# discard); it must read as either the old data or zeros, and the image must
# stay consistent.
rm -f disc.qed
if tap_cmd "discard: qed create" "$QED" create -q disc.qed 2M; then
    tap_cmd "discard: qed io write + discard" "$QED" io -c "write -P 1 0 1M" -c "discard 128k 256k" \
        -c "discard 1000 100" -c "discard 1536k 64k" disc.qed
    qemu_check "discard: qemu-img check" disc.qed
    qemu_io -f qed -r disc.qed -- "read -P 1 0 1000" "read -P 1 1100 $((128 * KiB - 1100))" \
        "read -P 1 $((384 * KiB)) $((640 * KiB))" "read -P 0 1M 1M"
    ok $? "discard: data outside the discarded ranges is unchanged" "$(cat "$OUT" "$ERR")"
    qemu_io -f qed -r disc.qed -- "read -P 0 128k 256k" || qemu_io -f qed -r disc.qed -- "read -P 1 128k 256k"
    ok $? "discard: a discarded range of whole clusters reads as zeros or as the old data"
    qemu_io -f qed -r disc.qed -- "read -P 0 1000 100" || qemu_io -f qed -r disc.qed -- "read -P 1 1000 100"
    ok $? "discard: a discarded part of a cluster reads as zeros or as the old data"
fi

done_testing
