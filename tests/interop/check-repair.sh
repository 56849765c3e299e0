#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed check`: exit statuses 0 (clean), 1 (could not check), 2 (corruptions
# remain), 3 (only leaks remain); the JSON fields (qemu-img's names, all of
# them always there); qemu-img's wording in human output; `-r leaks` fixing
# leaks only and `-r all` everything, after which qemu-img check agrees and
# QEMU reads the same content as before; images QEMU wrote found clean (or
# with exactly the leaks an independent walk finds), with qemu-img's counts.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io perl truncate cmp
require_qed

CHECK_FIELDS="filename format check-errors corruptions leaks corruptions-fixed
leaks-fixed total-clusters allocated-clusters fragmented-clusters image-end-offset"

# qed_json NAME IMG [ARGS...] — runs qed check --output=json ARGS IMG; the
# output lands in $T/.qed-check.json, the exit status in $RC.
qed_json() {
    local img=$2
    shift 2
    run "$QED" check --output=json "$@" "$img"
    cp "$OUT" "$T/.qed-check.json"
}

# field NAME — a field of the last qed_json output.
field() { json_get "$T/.qed-check.json" "$1" 2>/dev/null || echo "<absent>"; }

# all_fields NAME — every field is there, numbers where numbers belong.
all_fields() {
    local name=$1 f v bad=()
    for f in $CHECK_FIELDS; do
        v=$(field "$f")
        case $f in
        filename | format) [ "$v" != "<absent>" ] || bad+=("$f absent") ;;
        *) [[ $v =~ ^[0-9]+$ ]] || bad+=("$f: '$v'") ;;
        esac
    done
    if [ ${#bad[@]} -eq 0 ]; then
        pass "$name"
    else
        fail "$name" "${bad[@]}" "output: $(head -c 2000 "$T/.qed-check.json")"
    fi
}

# counts NAME EXPECTED — "corruptions/leaks/corruptions-fixed/leaks-fixed"
counts() {
    tap_is "$(field corruptions)/$(field leaks)/$(field corruptions-fixed)/$(field leaks-fixed)" \
        "$2" "$1"
}

# l2_entry_offset IMG VCLUSTER — file offset of the L2 entry of a virtual
# cluster (cluster size and table size from the header); get_host/set_host
# read and write that entry.
l2_entry_offset() {
    local img=$1 vc=$2 cs ts entries l1 l2
    cs=$(peek_le "$img" "$HDR_CLUSTER_SIZE" 4)
    ts=$(peek_le "$img" "$HDR_TABLE_SIZE" 4)
    entries=$((ts * cs / 8))
    l1=$(peek_le "$img" "$HDR_L1_OFFSET" 8)
    l2=$(peek_le "$img" $((l1 + 8 * (vc / entries))) 8)
    echo $((l2 + 8 * (vc % entries)))
}
get_host() { peek_le "$1" "$(l2_entry_offset "$1" "$2")" 8; }
set_host() { poke_le "$1" "$(l2_entry_offset "$1" "$2")" 8 "$3"; }

# qemu_ref IMG REF — what QEMU reads from IMG, as a raw file.
qemu_ref() { qemu-img convert -f qed -O raw "$1" "$2"; }

# same_as_ref NAME IMG REF — QEMU reads IMG exactly like the raw REF.
same_as_ref() {
    tap_cmd "$1" qemu-img compare -f qed -F raw "$2" "$3"
}

# A 4k-cluster image with 6 clusters written by qed: header, L1 (4), L2 (4)
# and data clusters 0-5 in order.
new_img() {
    rm -f "$1"
    "$QED" create -q -o cluster_size=4k "$1" 8M &&
        "$QED" io -c "write -P 0x31 0 4k" -c "write -P 0x32 4k 4k" -c "write -P 0x33 8k 4k" \
            -c "write -P 0x34 12k 4k" -c "write -P 0x35 16k 4k" -c "write -P 0x36 20k 4k" \
            "$1" >/dev/null
}

# ---- a clean image -------------------------------------------------------------
new_img clean.qed
tap_cmd_rc 0 "clean: exit status 0" "$QED" check clean.qed
tap_is "$(head -n 1 "$OUT")" "No errors were found on the image." "clean: human output says so"
run qemu-img check clean.qed
qemu_lines=$(head -n 2 "$OUT")
run "$QED" check clean.qed
tap_is "$(head -n 2 "$OUT")" "$qemu_lines" "clean: the first lines are qemu-img check's"
tap_like "$(cat "$OUT")" "^Image end offset: $(file_size clean.qed)\$" "clean: image end offset is the file size"
qed_json "" clean.qed
tap_is "$RC" 0 "clean: --output=json exits 0"
all_fields "clean: every JSON field is there"
tap_is "$(field filename)/$(field format)" "clean.qed/qed" "clean: filename and format"
counts "clean: nothing found or fixed" "0/0/0/0"
tap_is "$(field total-clusters)/$(field allocated-clusters)/$(field check-errors)" "2048/6/0" \
    "clean: total and allocated clusters"
run qemu-img check --output=json clean.qed
cp "$OUT" q.json
tap_is "$(field allocated-clusters)/$(field total-clusters)" \
    "$(json_get q.json allocated-clusters)/$(json_get q.json total-clusters)" \
    "clean: qemu-img check counts the same clusters"
tap_cmd_rc 0 "clean: -q prints nothing" "$QED" check -q clean.qed
tap_is "$(cat "$OUT")" "" "clean: -q output is empty"
tap_cmd_rc 0 "clean: -p is accepted" "$QED" check -p clean.qed
tap_cmd_rc 0 "clean: -f qed is accepted" "$QED" check -f qed clean.qed
cp clean.qed clean.copy
tap_cmd_rc 0 "clean: -r all on a clean image" "$QED" check -r all clean.qed
tap_cmd "clean: -r all on a clean image changes nothing" cmp clean.qed clean.copy

# ---- cannot check ---------------------------------------------------------------
truncate -s 1M disk.raw
tap_cmd_rc 63 "raw: exit status 63" "$QED" check disk.raw
tap_like "$(cat "$ERR")" "This image format does not support checks" "raw: the error says the format does not support checks"
tap_cmd_rc 63 "-f raw on a qed image: exit status 63" "$QED" check -f raw clean.qed
tap_cmd_rc 1 "missing file: exit status 1" "$QED" check nosuch.qed
tap_like "$(cat "$ERR")" "^qed: nosuch.qed: " "missing file: one error line naming the file"
tap_cmd_rc 1 "-r with a bad argument: exit status 1" "$QED" check -r some clean.qed
printf 'QED\0garbage' >bad.qed
truncate -s 8k bad.qed
tap_cmd_rc 1 "a broken header: exit status 1" "$QED" check bad.qed

# ---- leaks -------------------------------------------------------------------------
new_img trail.qed
size=$(file_size trail.qed)
truncate -s $((size + 3 * 4096)) trail.qed
tap_cmd_rc 3 "trailing leaks: exit status 3" "$QED" check trail.qed
tap_like "$(cat "$OUT")" "^3 leaked clusters were found on the image\.\$" "trailing leaks: human output counts them"
tap_like "$(cat "$OUT")" "^This means waste of disk space, but no harm to data\.\$" "trailing leaks: qemu-img's explanation"
run qemu-img check --output=json trail.qed
tap_is "$RC/$(json_get "$OUT" leaks)" "3/3" "trailing leaks: qemu-img check counts the same three"
qemu_ref trail.qed trail.ref
qed_json "" trail.qed -r leaks
tap_is "$RC" 0 "trailing leaks: -r leaks exits 0"
all_fields "trailing leaks: every JSON field is there after a repair"
counts "trailing leaks: JSON says 3 fixed, none left" "0/0/0/3"
tap_is "$(file_size trail.qed)" "$size" "trailing leaks: the file is truncated back"
qemu_check "trailing leaks: qemu-img check agrees afterwards" trail.qed
same_as_ref "trailing leaks: QEMU reads the same content" trail.qed trail.ref

new_img hole.qed
size=$(file_size hole.qed)
set_host hole.qed 0 0
set_host hole.qed 2 0
qemu_ref hole.qed hole.ref
tap_cmd_rc 3 "interior leaks: exit status 3" "$QED" check hole.qed
run "$QED" check -r leaks hole.qed
tap_is "$RC" 0 "interior leaks: -r leaks exits 0"
tap_like "$(cat "$OUT")" "^The following inconsistencies were found and repaired:\$" \
    "interior leaks: human output says what was repaired"
tap_like "$(cat "$OUT")" "^    2 leaked clusters\$" "interior leaks: 2 leaked clusters repaired"
tap_like "$(cat "$OUT")" "^    0 corruptions\$" "interior leaks: 0 corruptions repaired"
tap_like "$(cat "$OUT")" "^Double checking the fixed image now\.\.\.\$" "interior leaks: then double checking"
tap_like "$(cat "$OUT")" "^No errors were found on the image\.\$" "interior leaks: and finds no errors"
tap_is "$(file_size hole.qed)" $((size - 2 * 4096)) "interior leaks: the file shrank by two clusters"
run qed_walk hole.qed
ok "$RC" "interior leaks: every cluster is referenced exactly once" "$(cat "$OUT" "$ERR")"
qemu_check "interior leaks: qemu-img check agrees afterwards" hole.qed
same_as_ref "interior leaks: QEMU reads the same content" hole.qed hole.ref

# ---- corruptions ---------------------------------------------------------------------
# Two L2 entries name one cluster: a corruption; the second entry's own cluster
# is leaked.
new_img twice.qed
set_host twice.qed 3 "$(get_host twice.qed 1)"
qemu_ref twice.qed twice.ref
tap_cmd_rc 2 "double reference: exit status 2" "$QED" check twice.qed
tap_like "$(cat "$OUT")" "^1 errors were found on the image\.\$" "double reference: human output counts it"
tap_like "$(cat "$OUT")" "^Data may be corrupted, or further writes to the image may corrupt it\.\$" \
    "double reference: qemu-img's warning"
run qemu-img check --output=json twice.qed
tap_is "$RC/$(json_get "$OUT" corruptions)/$(json_get "$OUT" leaks)" "2/1/1" \
    "double reference: qemu-img check finds the corruption and the leak too"
qed_json "" twice.qed
counts "double reference: JSON counts 1 corruption, 1 leak" "1/1/0/0"
cp twice.qed twice.copy
qed_json "" twice.qed -r leaks
tap_is "$RC" 2 "double reference: -r leaks leaves the corruption (exit 2)"
counts "double reference: -r leaks fixed the leak only" "1/0/0/1"
same_as_ref "double reference: QEMU reads the same after -r leaks" twice.qed twice.ref
qed_json "" twice.qed -r all
tap_is "$RC" 0 "double reference: -r all exits 0"
counts "double reference: -r all fixed the corruption" "0/0/1/0"
qemu_check "double reference: qemu-img check agrees afterwards" twice.qed
same_as_ref "double reference: QEMU reads the same content" twice.qed twice.ref
tap_cmd "double reference: writing one cluster" qemu-io -f qed -c "write -P 0x99 4k 4k" twice.qed
tap_cmd "double reference: leaves the other alone" qemu-io -f qed -r -c "read -P 0x32 12k 4k" twice.qed
cp twice.copy twice2.qed
qed_json "" twice2.qed -r all
tap_is "$RC" 0 "double reference: -r all at once exits 0"
counts "double reference: -r all at once fixed both, nothing remains" "0/0/1/1"

# An entry past the end of the file, a misaligned one, an L1 entry into the L1 table.
new_img bad.qed
l1=$(peek_le bad.qed "$HDR_L1_OFFSET" 8)
set_host bad.qed 4 $(($(file_size bad.qed) + 40960))
set_host bad.qed 5 $(($(get_host bad.qed 5) + 512))
poke_le bad.qed $((l1 + 8)) 8 "$l1"
tap_cmd_rc 2 "invalid entries: exit status 2" "$QED" check bad.qed
qed_json "" bad.qed
counts "invalid entries: 3 corruptions and the 2 clusters they left" "3/2/0/0"
# (qemu-img counts the L1 entry once per cluster of the L1 table it overlaps.)
run qemu-img check --output=json bad.qed
tap_is "$RC" 2 "invalid entries: qemu-img check finds corruptions too"
qed_json "" bad.qed -r all
tap_is "$RC" 0 "invalid entries: -r all exits 0"
counts "invalid entries: all fixed" "0/0/3/2"
qemu_check "invalid entries: qemu-img check agrees afterwards" bad.qed
tap_cmd "invalid entries: the repaired clusters read as zeros, the rest as before" \
    qemu-io -f qed -r -c "read -P 0 16k 8k" -c "read -P 0x31 0 4k" -c "read -P 0x34 12k 4k" bad.qed

# A data entry pointing into the L2 table, and a second L1 entry naming it.
new_img share.qed
l1=$(peek_le share.qed "$HDR_L1_OFFSET" 8)
l2=$(peek_le share.qed "$l1" 8)
set_host share.qed 2 "$l2"
poke_le share.qed $((l1 + 8)) 8 "$l2"
qemu_ref share.qed share.ref
tap_cmd_rc 2 "shared table: exit status 2" "$QED" check share.qed
qed_json "" share.qed -r all
tap_is "$RC" 0 "shared table: -r all exits 0"
qemu_check "shared table: qemu-img check agrees afterwards" share.qed
run qed_walk share.qed
ok "$RC" "shared table: every cluster is referenced exactly once" "$(cat "$OUT" "$ERR")"
same_as_ref "shared table: QEMU reads the same content" share.qed share.ref

# ---- dirty images ---------------------------------------------------------------------
new_img dirty.qed
set_host dirty.qed 1 0
truncate -s $(($(file_size dirty.qed) + 8192)) dirty.qed
poke_le dirty.qed "$HDR_FEATURES" 8 2
cp dirty.qed dirty.copy
tap_cmd_rc 3 "dirty image: a check finds its leaks" "$QED" check dirty.qed
tap_cmd "dirty image: a check without -r leaves the file alone" cmp dirty.qed dirty.copy
qed_json "" dirty.qed -r leaks
tap_is "$RC" 0 "dirty image: -r leaks examines it as it is and repairs it"
counts "dirty image: three leaks fixed, none left" "0/0/0/3"
tap_is "$(($(peek_le dirty.qed "$HDR_FEATURES" 8) & 2))" 0 "dirty image: NEED_CHECK is clear afterwards"
qemu_check "dirty image: qemu-img check agrees afterwards" dirty.qed

# ---- images QEMU wrote ------------------------------------------------------------------
# qed check must find exactly what an independent walk finds: nothing, or the
# clusters QEMU's own writer leaked.
for geo in $QEMU_GEOMETRIES; do
    cs=${geo%:*} ts=${geo#*:}
    img=q-$cs-$ts.qed
    build_std_image "$img" "$cs" "$ts" || continue
    walk=$(qed_walk "$img" | head -n 1)
    wleaks=$(sed -n 's/.*leaks=\([0-9]*\).*/\1/p' <<<"$walk")
    want=0
    [ "${wleaks:-0}" -gt 0 ] && want=3
    qed_json "" "$img"
    tap_is "$RC/$(field corruptions)/$(field leaks)" "$want/0/${wleaks:-0}" \
        "QEMU's image ($cs/$ts): qed check finds what an independent walk finds"
    run qemu-img check --output=json "$img"
    cp "$OUT" q.json
    tap_is "$(field allocated-clusters)/$(field total-clusters)/$(field fragmented-clusters)" \
        "$(json_get q.json allocated-clusters)/$(json_get q.json total-clusters)/$(json_get q.json fragmented-clusters 2>/dev/null || echo 0)" \
        "QEMU's image ($cs/$ts): the same allocated, total and fragmented counts as qemu-img check"
    rm -f "$img"
done

mkdir -p chain
if build_qed_chain chain; then
    for layer in top mid base; do
        tap_cmd_rc 0 "QEMU's chain: $layer.qed checks clean" "$QED" check "chain/$layer.qed"
    done
    qemu_ref chain/top.qed chain.ref
    tap_cmd_rc 0 "QEMU's chain: -r all on the top image" "$QED" check -r all chain/top.qed
    same_as_ref "QEMU's chain: the content is unchanged" chain/top.qed chain.ref
fi

# An image over a backing file that is gone can still be checked.
mkdir -p gone
if build_qed_pair gone; then
    rm gone/base.qed
    tap_cmd_rc 0 "missing backing file: the image is checked anyway" "$QED" check gone/top.qed
fi

done_testing
