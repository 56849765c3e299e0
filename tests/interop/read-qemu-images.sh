#!/bin/bash
# SPDX-License-Identifier: MIT
# Images QEMU writes read identically through qed: `qed convert -O raw` makes
# the same bytes as `qemu-img convert -O raw`, for every cluster size and table
# size QEMU can open, with data written at aligned, unaligned and
# cluster-straddling offsets, zero clusters, partial writes into zero clusters
# and writes across L2 tables.  table_size=1 images (which QEMU cannot open) are
# made and written by qed and checked against a raw reference.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io perl truncate cmp
require_qed

for geo in $QEMU_GEOMETRIES; do
    cs=${geo%:*} ts=${geo#*:}
    img=img-$cs-$ts.qed
    build_std_image "$img" "$cs" "$ts" || continue
    size=$(cat "$img.size")

    # The QEMU side: what qemu-io wrote equals the same writes on a raw file.
    make_raw_ref "ref-$cs-$ts.raw" "$size" "$img.cmds" ||
        fail "QEMU writes the raw reference for $img" "$(cat "$ERR")"
    tap_cmd "qemu-img compare: $img equals its raw reference" \
        qemu-img compare -f qed -F raw "$img" "ref-$cs-$ts.raw"
    run qemu-img convert -f qed -O raw "$img" "qemu-$cs-$ts.raw"

    rm -f "qed-$cs-$ts.raw"
    tap_cmd "qed convert -O raw $img" "$QED" convert -O raw "$img" "qed-$cs-$ts.raw" &&
        same_raw "qed convert of $img equals qemu-img convert" "qemu-$cs-$ts.raw" "qed-$cs-$ts.raw"
    if [ -f "qed-$cs-$ts.raw" ] && [ -f "qemu-$cs-$ts.raw" ]; then
        qa=$(($(stat -c %b "qemu-$cs-$ts.raw") * 512)) ma=$(($(stat -c %b "qed-$cs-$ts.raw") * 512))
        [ "$ma" -le $((qa + MiB)) ]
        ok $? "qed convert of $img keeps the output sparse" \
            "allocated bytes: qed's output $ma, qemu-img's $qa (virtual size $size)"
    fi
    tap_cmd "qed convert -f qed $img" \
        "$QED" convert -f qed -O raw "$img" "qed2-$cs-$ts.raw"
    rm -f "qemu-$cs-$ts.raw" "qed-$cs-$ts.raw" "qed2-$cs-$ts.raw" "ref-$cs-$ts.raw"
done

# convert -O qed: QEMU reads the copy like the original and finds it consistent.
for geo in 4096:2 65536:16 2097152:4; do
    cs=${geo%:*} ts=${geo#*:}
    img=img-$cs-$ts.qed
    [ -f "$img" ] || continue
    rm -f "copy-$cs-$ts.qed"
    if tap_cmd "qed convert -O qed $img" "$QED" convert -O qed "$img" "copy-$cs-$ts.qed"; then
        tap_cmd "qemu-img compare: the -O qed copy of $img equals the original" \
            qemu-img compare "$img" "copy-$cs-$ts.qed"
        qemu_check "qemu-img check of the -O qed copy of $img" "copy-$cs-$ts.qed"
    fi
    rm -f "copy-$cs-$ts.qed"
done
rm -f img-*.qed

# One image read back command by command with qed io -r (the patterns as
# qemu-io wrote them, no later write overlapping).
build_std_image single.qed 4096 4
tap_cmd "qed io -r reads back the patterns qemu-io wrote" \
    "$QED" io -r -c "read -P 0x11 0 512" -c "read -P 0 512 $((4096 - 100 - 512))" \
    -c "read -P 0x22 $((4096 - 100)) 300" -c "read -P 0x33 $((3 * 4096 + 7)) $((4096 + 13))" \
    -c "read -P 0x44 $((6 * 4096)) 10" -c "read -P 0 $((6 * 4096 + 10)) 20" \
    -c "read -P 0x44 $((6 * 4096 + 30)) $((2 * 4096 - 30))" \
    -c "read -P 0 $((9 * 4096)) 1000" -c "read -P 0x55 $((9 * 4096 + 1000)) 100" \
    -c "read -P 0 $((9 * 4096 + 1100)) $((2 * 4096 - 1100))" \
    -c "read -P 0x77 $((8 * MiB - 1000)) 3000" single.qed

# table_size=1: made by qed, checked by qed against a raw reference.
for cs in 4096 65536; do
    img=ts1-$cs.qed
    size=$((2 * cs * (cs / 8) + cs / 2))
    [ "$size" -le $((2 * GiB)) ] || size=$((16 * cs + cs / 2))
    std_writes "$cs" "$size" 1 >"$img.cmds"
    mapfile -t cmds <"$img.cmds"
    tap_cmd "qed create -o cluster_size=$cs,table_size=1" \
        "$QED" create -o "cluster_size=$cs,table_size=1" "$img" "$size" || continue
    tap_is "$(peek_le "$img" "$HDR_TABLE_SIZE" 4)" 1 "table_size=1 is stored in the header of $img"
    args=()
    for c in "${cmds[@]}"; do args+=(-c "$c"); done
    tap_cmd "qed io writes the standard pattern set into $img" "$QED" io "${args[@]}" "$img"
    make_raw_ref "ts1-$cs.ref.raw" "$size" "$img.cmds" ||
        fail "QEMU writes the raw reference for $img" "$(cat "$ERR")"
    rm -f "ts1-$cs.raw"
    tap_cmd "qed convert -O raw $img" "$QED" convert -O raw "$img" "ts1-$cs.raw" &&
        same_raw "$img reads back as the raw reference" "ts1-$cs.ref.raw" "ts1-$cs.raw"
    tap_cmd "qed io -r reads the L2-crossing write back from $img" \
        "$QED" io -r -c "read -P 0x77 $((cs * (cs / 8) - 1000)) 3000" "$img"
    run "$QED" map --output=json "$img"
    cp "$OUT" "ts1-$cs.map.json"
    res=$(map_covers "ts1-$cs.map.json" "$size" 2>&1)
    ok $? "qed map of $img covers the image" "$res" "$(head -c 1000 "ts1-$cs.map.json")"
    rm -f "ts1-$cs.raw" "ts1-$cs.ref.raw"
done

done_testing
