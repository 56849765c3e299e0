#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed info --output=json` prints the fields qemu-img info prints, named and
# valued the same (plus "format-specific" for QED details); --backing-chain is
# an array, top first; an image with NEED_CHECK set reports "dirty-flag": true
# and is not modified by a read-only look.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io perl truncate cmp
require_qed

# ---- Single images -----------------------------------------------------------------
qemu-img create -q -f qed plain.qed 10M
qemu-io -c "write -P 1 0 128k" plain.qed >/dev/null
info_agrees "plain QED image" plain.qed
run "$QED" info --output=json plain.qed
cp "$OUT" plain.json
tap_json_field plain.json format qed "format is \"qed\""
tap_json_field plain.json virtual-size 10485760 "virtual-size in bytes"
tap_json_field plain.json cluster-size 65536 "cluster-size"
tap_json_field plain.json dirty-flag false "dirty-flag false for a clean image"
tap_json_field plain.json filename plain.qed "filename as given"
tap_json_field plain.json backing-filename "<absent>" "no backing-filename without a backing file"
tap_json_field plain.json format-specific/type qed "format-specific type is qed"
tap_is "$(json_get plain.json format-specific/data >/dev/null 2>&1 && json_canon <(json_get plain.json format-specific/data) | cut -c1)" \
    "{" "format-specific data is an object"

qemu-img create -q -f qed -o cluster_size=4k,table_size=2 small.qed 3G
info_agrees "cluster_size=4k,table_size=2, 3G" small.qed
qemu-img create -q -f qed -o cluster_size=2M,table_size=16 huge.qed 1T 2>/dev/null ||
    qemu-img create -q -f qed -o cluster_size=2M,table_size=8 huge.qed 1T
info_agrees "2M clusters, 1T" huge.qed
qemu-img create -q -f qed empty.qed 0
info_agrees "zero-length image" empty.qed
mkdir -p d
qemu-img create -q -f qed -o cluster_size=4k d/in-dir.qed 1M
info_agrees "image in a subdirectory" d/in-dir.qed
info_agrees "image by absolute path" "$T/d/in-dir.qed"

truncate -s 3M r.raw
qemu-io -f raw -c "write -P 1 0 64k" r.raw >/dev/null
info_agrees "raw file (probed)" r.raw
info_agrees "raw file (-f raw)" r.raw -f raw
run "$QED" info --output=json r.raw
cp "$OUT" raw.json
tap_json_field raw.json format raw "a raw file is reported as raw"
tap_json_field raw.json cluster-size "<absent>" "no cluster-size for raw (as qemu-img)"

run "$QED" info plain.qed
ok "$RC" "human output exits 0" "$(cat "$ERR")"
[ -s "$OUT" ]
ok $? "human output is not empty"
run "$QED" info --output=human plain.qed
ok "$RC" "--output=human exits 0" "$(cat "$ERR")"

# ---- Backing files -------------------------------------------------------------------
if build_raw_backed rb; then
    info_agrees "image with a raw backing file (-F raw)" rb/top.qed
    info_agrees "--backing-chain over a raw backing file" rb/top.qed --backing-chain
    run "$QED" info --output=json rb/top.qed
    cp "$OUT" rb.json
    tap_json_field rb.json backing-filename base.raw "backing-filename as stored"
    tap_json_field rb.json full-backing-filename rb/base.raw "full-backing-filename relative to the image's directory"
    tap_json_field rb.json backing-filename-format raw "backing-filename-format raw with NO_PROBE"
fi
if build_qed_chain qc; then
    info_agrees "image with a QED backing file" qc/top.qed
    info_agrees "--backing-chain of a 3-deep chain" qc/top.qed --backing-chain
    run "$QED" info --output=json --backing-chain qc/top.qed
    cp "$OUT" chain.json
    tap_is "$(json_type chain.json 2>&1)" array "--backing-chain prints an array"
    tap_is "$(json_get chain.json 0/filename)|$(json_get chain.json 1/filename)|$(json_get chain.json 2/filename)|$(json_get chain.json 3 2>/dev/null || echo end)" \
        "qc/top.qed|qc/mid.qed|qc/base.qed|end" "--backing-chain lists the chain top first"
    tap_is "$(json_get chain.json 0/virtual-size)/$(json_get chain.json 1/virtual-size)/$(json_get chain.json 2/virtual-size)" \
        "4194304/3145728/2097152" "--backing-chain: each layer's own virtual size"
    tap_json_field chain.json 0/backing-filename-format "<absent>" \
        "no backing-filename-format for a probed QED backing file (as qemu-img)"
fi
if build_relative rel; then
    info_agrees "relative backing names, --backing-chain" rel/images/top.qed --backing-chain
    info_agrees "absolute backing name, --backing-chain" rel/images/abs.qed --backing-chain
    cd rel/images/sub || bail_out "cd"
    info_agrees "relative names from another directory (../top.qed)" ../top.qed --backing-chain
    cd "$T" || bail_out "cd"
fi
build_probed_raw_backing pr && info_agrees "probed raw backing file, --backing-chain" pr/top.qed --backing-chain

qemu-img create -q -f qed -u -b nothere.qed -F qed missing.qed 1M
info_agrees "missing backing file: info without --backing-chain still works (as qemu-img)" missing.qed

# ---- The dirty flag ------------------------------------------------------------------
cp plain.qed dirty.qed
poke_le dirty.qed "$HDR_FEATURES" 8 $(($(peek_le dirty.qed "$HDR_FEATURES" 8) | 2))
cp dirty.qed dirty.before
run qemu-img info --output=json dirty.qed
cp "$OUT" qdirty.json
tap_json_field qdirty.json dirty-flag false "QEMU: qemu-img 7.2 info reports dirty-flag false even with NEED_CHECK set"
run "$QED" info --output=json dirty.qed
cp "$OUT" dirty.json
ok "$RC" "qed info on a dirty image exits 0" "$(cat "$ERR")"
tap_json_field dirty.json dirty-flag true "a dirty image reports \"dirty-flag\": true"
cmp -s dirty.qed dirty.before
ok $? "qed info leaves the dirty image unchanged"
"$QED" info dirty.qed >/dev/null 2>&1
"$QED" info --backing-chain --output=json dirty.qed >/dev/null 2>&1
"$QED" map --output=json dirty.qed >/dev/null 2>&1
"$QED" io -r -c "read -P 1 0 128k" dirty.qed >/dev/null 2>&1
ok $? "qed io -r reads a dirty image"
cmp -s dirty.qed dirty.before
ok $? "human info, --backing-chain, map and io -r leave the dirty image unchanged"

done_testing
