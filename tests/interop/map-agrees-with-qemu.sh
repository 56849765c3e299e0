#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed map --output=json` prints what `qemu-img map --output=json` prints (parsed
# and compared entry by entry) for images written by QEMU and by qed: every
# geometry, zero clusters, raw and QED backing chains, backing files shorter than
# the image, raw files with holes.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io perl truncate
require_qed

# ---- What QEMU prints, checked literally (the facts qed must reproduce) ------
qemu-img create -q -f qed -o cluster_size=4k fresh.qed 1M
qemu-img map --output=json fresh.qed >fresh.json
tap_is "$(json_maplines fresh.json)" \
    "start=0 length=1048576 depth=0 present=false zero=true data=false" \
    "QEMU: an unallocated image without backing is one entry, present=false zero=true, no offset"
map_agrees "map of a fresh image" fresh.qed

qemu-io -c "write -P 1 0 4k" -c "write -z 8k 8k" fresh.qed >/dev/null
qemu-img map --output=json fresh.qed >fresh.json
tap_is "$(json_maplines fresh.json)" \
    "$(printf '%s\n' \
        "start=0 length=4096 depth=0 present=true zero=false data=true offset=20480" \
        "start=4096 length=4096 depth=0 present=false zero=true data=false" \
        "start=8192 length=8192 depth=0 present=true zero=true data=false" \
        "start=16384 length=1032192 depth=0 present=false zero=true data=false")" \
    "QEMU: data clusters have an offset, zero clusters are present=true zero=true without offset"
map_agrees "map of data and zero clusters" fresh.qed

qemu-img create -q -f qed empty.qed 0
map_agrees "map of a zero-length image (qemu-img prints one entry of length 0)" empty.qed

# ---- Every geometry, written by qemu-io ---------------------------------------
for geo in $QEMU_GEOMETRIES; do
    cs=${geo%:*} ts=${geo#*:}
    img=img-$cs-$ts.qed
    build_std_image "$img" "$cs" "$ts" || continue
    map_agrees "map of $img" "$img"
    rm -f "$img"
done

# A virtual size that is not a multiple of the cluster size, data in the last
# (partial) cluster.
qemu-img create -q -f qed -o cluster_size=64k odd.qed 100000
qemu-io -c "write -P 1 64k 34304" odd.qed >/dev/null
map_agrees "map of an image whose last cluster is partial" odd.qed

# ---- The same geometries, written by qed ---------------------------------------
for geo in 4096:2 4096:16 65536:4 1048576:2; do
    cs=${geo%:*} ts=${geo#*:}
    img=qed-$cs-$ts.qed
    size=$(geometry_size "$cs" "$ts")
    mapfile -t cmds < <(std_writes "$cs" "$size" "$ts")
    args=()
    for c in "${cmds[@]}"; do args+=(-c "$c"); done
    if tap_cmd "qed create + qed io write $img" "$QED" create -q -o "cluster_size=$cs,table_size=$ts" "$img" "$size" &&
        tap_cmd "qed io writes the standard pattern set into $img" "$QED" io "${args[@]}" "$img"; then
        map_agrees "map of $img (written by qed)" "$img"
    fi
    rm -f "$img"
done

# ---- Raw files ---------------------------------------------------------------------
truncate -s 4M holes.raw
qemu-io -f raw -c "write -P 1 64k 64k" -c "write -P 2 1M 4k" holes.raw >/dev/null
map_agrees "map of a raw file with holes (-f raw)" holes.raw -f raw
map_agrees "map of a raw file with holes (probed)" holes.raw
qemu-img map --output=json -f raw holes.raw >holes.json
tap_is "$(json_maplines holes.json | head -2)" \
    "$(printf '%s\n' \
        "start=0 length=65536 depth=0 present=true zero=true data=false offset=0" \
        "start=65536 length=65536 depth=0 present=true zero=false data=true offset=65536")" \
    "QEMU: holes in a raw file are present=true zero=true data=false and keep their offset"
truncate -s 0 empty.raw
map_agrees "map of an empty raw file" empty.raw -f raw

# ---- Backing chains ----------------------------------------------------------------
if build_raw_backed rb; then
    map_agrees "map of a QED image over a shorter raw backing file" rb/top.qed
    qemu-img map --output=json rb/top.qed >rb.json
    json_maplines rb.json | grep -Fxq \
        "start=4198400 length=1044480 depth=0 present=false zero=true data=false"
    ok $? "QEMU: past the end of the backing file: depth 0, present=false, zero=true, no offset"
    json_maplines rb.json | grep -Fxq \
        "start=1056768 length=3137536 depth=1 present=true zero=true data=false offset=1056768"
    ok $? "QEMU: a hole in a raw backing file: depth 1, present=true, zero=true, with offset"
fi
if build_qed_chain qc; then
    map_agrees "map of a 3-deep QED chain (top)" qc/top.qed
    map_agrees "map of a 3-deep QED chain (middle)" qc/mid.qed
    qemu-img map --output=json qc/top.qed >qc.json
    for line in "start=196608 length=327680 depth=2 present=false zero=true data=false" \
        "start=2101248 length=1044480 depth=1 present=false zero=true data=false" \
        "start=3178496 length=1015808 depth=0 present=false zero=true data=false"; do
        json_maplines qc.json | grep -Fxq "$line"
        ok $? "QEMU: unallocated everywhere is reported at the deepest layer covering the range: $line"
    done
    json_maplines qc.json | grep -Fxq \
        "start=16384 length=45056 depth=2 present=true zero=false data=true offset=344064"
    ok $? "QEMU: the offset of data in a backing layer is that layer's host offset"
fi
build_qed_pair qp && map_agrees "map of a 2-deep QED chain" qp/top.qed
if build_relative rel; then
    map_agrees "map through relative backing names" rel/images/top.qed
    map_agrees "map through an absolute backing name" rel/images/abs.qed
    cd rel/images/sub && map_agrees "map of ../top.qed from a subdirectory" ../top.qed
    cd "$T" || bail_out "cd $T"
fi
build_probed_raw_backing pr && map_agrees "map over a probed raw backing file" pr/top.qed

done_testing
