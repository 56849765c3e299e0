#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed convert` between every pair of formats (raw, qed, QED chains over raw
# and QED backing files), checked with QEMU: the output reads like the
# source (`qemu-img compare`, and byte for byte against `qemu-img convert`
# for raw), QED outputs pass `qemu-img check` with no leaks, the output stays
# sparse, -o sets the geometry, -B writes only what differs from the new
# backing file (zero clusters where the source reads zeros and the backing
# file does not), and the error cases fail cleanly.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io perl truncate
require_qed

CHECK_CLEAN=$_lib_dir/../qemu-check-clean

# clean NAME IMG — qemu-img check finds nothing (tests/qemu-check-clean) and
# the independent walk finds every cluster referenced once.
clean() {
    run perl "$CHECK_CLEAN" "$2"
    ok "$RC" "$1: qemu-img check is clean" "$(cat "$OUT" "$ERR")"
    run qed_walk "$2"
    ok "$RC" "$1: every cluster is referenced exactly once" "$(cat "$OUT" "$ERR")"
}

# same_content NAME A B — qemu-img compare says A and B read the same.
same_content() {
    tap_cmd "$1" qemu-img compare "$2" "$3"
}

# data_bytes IMG — bytes qemu-img map reports as data (allocated host data).
data_bytes() {
    qemu-img map --output=json "$1" | perl -MJSON::PP -e '
        local $/; my $m = decode_json(<STDIN>); my $n = 0;
        for (@$m) { $n += $_->{length} if $_->{data} && $_->{depth} == 0 }
        print "$n\n";'
}

# ---- sources ------------------------------------------------------------------

# A raw file: data, holes, an allocated all-zero MiB, a partial last sector.
_build_begin
rm -f src.raw
b truncate -s $((6 * MiB + 700)) src.raw
bio raw src.raw "write -P 0x11 0 64k" "write -P 0x12 $((MiB + 5000)) 3000" \
    "write -z 2M 1M" "write -P 0x13 $((4 * MiB - 512)) 1024" "write -P 0x14 $((6 * MiB)) 700"
# write -z may punch; make that MiB really allocated zeros.
b dd if=/dev/zero of=src.raw bs=1M seek=2 count=1 conv=notrunc status=none
_build_end "a raw source with data, holes and an allocated zero MiB"

build_std_image std.qed 65536 4
build_std_image std4k.qed 4096 2
build_qed_chain chain
build_raw_backed rawb

for src in src.raw std.qed std4k.qed chain/top.qed rawb/top.qed; do
    tag=${src//\//-}
    # raw output: byte for byte what qemu-img convert makes.
    run qemu-img convert -O raw "$src" "q-$tag.raw"
    if tap_cmd "$src -> raw" "$QED" convert -O raw "$src" "m-$tag.raw"; then
        same_raw "$src -> raw equals qemu-img convert -O raw" "q-$tag.raw" "m-$tag.raw"
        q=$(du -k "q-$tag.raw" | cut -f1)
        m=$(du -k "m-$tag.raw" | cut -f1)
        [ "$m" -le $((q + 64)) ]
        ok $? "$src -> raw is as sparse as qemu-img's ($m KiB allocated, qemu-img $q KiB)"
    fi
    # qed output.
    if tap_cmd "$src -> qed" "$QED" convert -O qed "$src" "m-$tag.qed"; then
        same_content "$src -> qed reads like the source" "$src" "m-$tag.qed"
        clean "$src -> qed" "m-$tag.qed"
        run qemu-img convert -O qed "$src" "q-$tag.qed"
        q=$(data_bytes "q-$tag.qed")
        m=$(data_bytes "m-$tag.qed")
        [ "$m" -le "$q" ]
        ok $? "$src -> qed stores no more data than qemu-img's output ($m vs $q bytes)"
        # and back to raw through QEMU
        run qemu-img convert -O raw "m-$tag.qed" "back-$tag.raw"
        same_raw "$src -> qed -> raw (qemu-img) equals the source" "q-$tag.raw" "back-$tag.raw"
    fi
done

# ---- sparseness -------------------------------------------------------------------

run qemu-img map --output=json -f qed m-src.raw.qed
cp "$OUT" sparse.json
tap_is "$(perl -MJSON::PP -e 'local $/; my $m = decode_json(<STDIN>);
    print join(",", map { $_->{start} } grep { $_->{data} && $_->{start} < 3 * 1048576 && $_->{start} + $_->{length} > 2 * 1048576 } @$m)' <sparse.json)" "" \
    "the all-zero MiB of the raw source is not written to the qed output"
tap_is "$(qemu-img map --output=json -f raw m-src.raw.raw | perl -MJSON::PP -e 'local $/; my $m = decode_json(<STDIN>);
    print join(",", map { $_->{start} } grep { $_->{data} && $_->{start} < 3 * 1048576 && $_->{start} + $_->{length} > 2 * 1048576 } @$m)')" "" \
    "the all-zero MiB of the raw source is a hole in the raw output"

# A fully allocated MiB whose 4 KiB blocks alternate data and zeros: a raw
# output allocates space under the data blocks only (it preallocates exactly
# what it is about to write).
perl -e 'print((("\x5a" x 4096) . ("\0" x 4096)) x 128)' >alternate.raw
if tap_cmd "alternating data and zero blocks -> raw" "$QED" convert -O raw alternate.raw m-alternate.raw; then
    same_raw "alternating blocks -> raw equals the source" alternate.raw m-alternate.raw
    kib=$(du -k m-alternate.raw | cut -f1)
    [ "$kib" -ge 512 ] && [ "$kib" -le 520 ]
    ok $? "only the data blocks take space in the raw output ($kib KiB of 1024)"
fi

# ---- creation options ----------------------------------------------------------

if tap_cmd "-o cluster_size=4k,table_size=2" "$QED" convert -O qed -o cluster_size=4k,table_size=2 std.qed geo.qed; then
    tap_is "$(peek_le geo.qed "$HDR_CLUSTER_SIZE" 4)/$(peek_le geo.qed "$HDR_TABLE_SIZE" 4)" "4096/2" \
        "-o sets cluster size and table size"
    same_content "-o output reads like the source" std.qed geo.qed
    clean "-o output" geo.qed
fi

# ---- -B: only what differs from the new backing file --------------------------

# Shared chain: top.qed over mid.qed over base.qed -> new image over mid.qed.
if tap_cmd "-B chain/mid.qed (the source's own backing file)" \
    "$QED" convert -O qed -o cluster_size=16k,table_size=2 -B mid.qed -F qed chain/top.qed chain/new.qed; then
    same_content "-B over the shared backing file reads like the source" chain/top.qed chain/new.qed
    clean "-B over the shared backing file" chain/new.qed
    q=$(data_bytes chain/new.qed)
    t=$(data_bytes chain/top.qed)
    [ "$q" -le "$t" ]
    ok $? "-B over the shared backing file stores no more than the source's top layer ($q vs $t bytes)"
    run qemu-img convert -O qed -o cluster_size=16k,table_size=2 -B mid.qed -F qed chain/top.qed chain/qnew.qed
    t=$(data_bytes chain/qnew.qed)
    [ "$q" -le "$t" ]
    ok $? "-B over the shared backing file stores no more than qemu-img convert -B ($q vs $t bytes)"
    tap_is "$(qemu-img info --output=json chain/new.qed | perl -MJSON::PP -e 'local $/; print decode_json(<STDIN>)->{"backing-filename"}')" \
        "mid.qed" "-B records the backing file name"
fi

# A backing file with different content: zero clusters where the source
# reads zeros and the backing file does not, data where they differ.
_build_begin
rm -f other.qed
b qemu-img create -q -f qed -o cluster_size=64k other.qed "$(cat std.qed.size)"
bio qed other.qed "write -P 0x99 0 $(( $(cat std.qed.size) / 2 ))" "write -P 0x11 0 512"
_build_end "a backing file with other content"
if tap_cmd "-B other.qed (different content)" "$QED" convert -O qed -B other.qed -F qed std.qed over-other.qed; then
    same_content "-B over a different backing file reads like the source" std.qed over-other.qed
    clean "-B over a different backing file" over-other.qed
    run qemu-img map --output=json over-other.qed
    cp "$OUT" oo.json
    tap_like "$(json_maplines oo.json | grep -c 'depth=0 present=true zero=true')" '^[1-9]' \
        "-B writes zero clusters where the source reads zeros over backing data"
fi
# Over a raw backing file.
if tap_cmd "-B over a raw backing file" "$QED" convert -O qed -B src.raw -F raw std.qed over-raw.qed; then
    same_content "-B over a raw backing file reads like the source" std.qed over-raw.qed
    clean "-B over a raw backing file" over-raw.qed
    tap_is "$(($(peek_le over-raw.qed "$HDR_FEATURES" 8) & 5))" 5 "-F raw sets BACKING_FILE and NO_PROBE"
fi

# ---- requests in flight ------------------------------------------------------------

_build_begin
rm -f many.raw
b truncate -s 40M many.raw
for i in $(seq 0 3 39); do
    bio raw many.raw "write -P $((i + 1)) $((i * MiB + 4096)) $((MiB - 8192))"
done
_build_end "a 40 MiB raw file with data in many places"
for m in 1 4 64; do
    if tap_cmd "-m $m" "$QED" convert -m "$m" -O qed -o cluster_size=4k many.raw "many-$m.qed"; then
        same_content "-m $m output reads like the source" many.raw "many-$m.qed"
        clean "-m $m output" "many-$m.qed"
    fi
done
tap_cmd "-t writeback" "$QED" convert -t writeback -O qed many.raw many-wb.qed &&
    same_content "-t writeback output reads like the source" many.raw many-wb.qed
tap_cmd "-t none (O_DIRECT)" "$QED" convert -t none -O raw std.qed direct.raw &&
    same_raw "-t none output equals qemu-img convert" q-std.qed.raw direct.raw

# ---- progress and errors ---------------------------------------------------------------

run "$QED" convert -p -O raw std.qed p.raw
tap_is "$RC/$(cat "$ERR")" "0/" "-p prints nothing when stderr is not a terminal"
if command -v script >/dev/null; then
    script -qec "$(cmdline "$QED" convert -p -O qed many.raw tty.qed)" /dev/null >tty.out 2>&1
    tap_like "$(tr '\r' '\n' <tty.out | grep -c '(100.00/100%)')" '^[1-9]' "-p on a terminal ends at 100%"
else
    skip "-p on a terminal" "script is not installed"
fi

run "$QED" convert -O raw std.qed std.qed
tap_like "$RC/$(cat "$ERR")" '^1/qed: std.qed: .*same file' "converting onto the source fails"
same_content "the source is untouched" std.qed m-std.qed.qed
run "$QED" convert -O raw chain/top.qed chain/base.qed
tap_like "$RC/$(cat "$ERR")" '^1/qed: .*base.qed.*backing file' "converting onto a backing file of the source fails"
run "$QED" convert -O raw -B x.qed std.qed x.raw
tap_like "$RC/$(cat "$ERR")" '^1/qed: .*need a qed output' "-B with raw output fails"
run "$QED" convert -O qed nothere.raw x.qed
tap_like "$RC/$(cat "$ERR")" '^1/qed: nothere.raw: No such file' "a missing source fails"
run "$QED" convert -O qed -B nothere.qed std.qed x.qed
tap_like "$RC/$(cat "$ERR")" '^1/qed: x.qed: .*nothere.qed' "a missing -B backing file fails"
run "$QED" convert -t bogus -O qed std.qed x.qed
tap_like "$RC/$(cat "$ERR")" "^1/qed: convert: unknown cache mode 'bogus'" "an unknown cache mode fails"

done_testing
