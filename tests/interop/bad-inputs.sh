#!/bin/bash
# SPDX-License-Identifier: MIT
# Malformed input, class by class: what `qed info`, `qed io -r -c read`,
# `qed map`, `qed check` and `qed io -c write` do with it (exit status and
# the exact message), that nothing hangs, crashes or allocates out of
# proportion, that `qed check -r all` repairs what it reports, and that
# images at the size limits work and stay fast.  docs/bad-inputs.md is the
# table of these results; each of its rows names the test points here.
#
# Files are crafted byte by byte by bad-inputs-make.pl (next to this file).
# Cases already covered by cli-errors.sh (feature bit 0x100 and 1<<40,
# cluster size 3000 and 128M, table size 3 and 32, compat/autoclear bits,
# a self and a two-image backing loop with map/io/info --backing-chain, a
# missing backing file with io/map/convert) are not repeated here.
. "$(dirname "$0")/lib.sh"
require_cmd perl truncate timeout cmp
require_qed

TAP_TIMEOUT=10
MAKE_PL=$_lib_dir/bad-inputs-make.pl
CHECK_CLEAN=$_lib_dir/../qemu-check-clean
RSS_LIMIT_KIB=$((64 * 1024))
# AddressSanitizer's shadow memory and quarantine are not ours to count.
grep -q __asan_init "$QED" 2>/dev/null && RSS_LIMIT_KIB=$((512 * 1024))
TIME_BIN=
[ -x /usr/bin/time ] && TIME_BIN=/usr/bin/time
HAVE_QEMU=0
command -v qemu-img >/dev/null 2>&1 && HAVE_QEMU=1

mkimg() { perl "$MAKE_PL" "$@"; }

# q ARGS... — runs qed ARGS (like run: $OUT, $ERR, $RC) and records its peak
# RSS in $RSS (KiB; 0 without /usr/bin/time), the largest since the last
# peak_reset in $PEAK, and the wall time in $MS (milliseconds).
PEAK=0 RSS=0 MS=0
peak_reset() { PEAK=0; }
q() {
    local t0 t1
    t0=$(date +%s%N)
    if [ -n "$TIME_BIN" ]; then
        run "$TIME_BIN" -o "$T/.rss" -f %M "$QED" "$@"
        RSS=$(tail -n 1 "$T/.rss" 2>/dev/null)
        [[ $RSS =~ ^[0-9]+$ ]] || RSS=0
    else
        run "$QED" "$@"
        RSS=0
    fi
    t1=$(date +%s%N)
    MS=$(((t1 - t0) / 1000000))
    [ "$RSS" -gt "$PEAK" ] && PEAK=$RSS
    return 0
}

# err_is NAME WANT-RC FILE REGEX — the last q exited WANT-RC with exactly one
# line on stderr, "qed: FILE: ...", matching REGEX (extended).
err_is() {
    local name=$1 want=$2 file=$3 re=$4 msg lines
    msg=$(cat "$ERR")
    lines=$(wc -l <"$ERR")
    note "$name: exit $RC: $msg"
    if [ "$RC" -eq "$want" ] && [ "$lines" -eq 1 ] && [[ $msg == "qed: $file: "* ]] &&
        printf '%s\n' "$msg" | grep -Eq -- "$re"; then
        pass "$name"
        return 0
    fi
    fail "$name" "expected exit status $want and one line 'qed: $file: ...' matching /$re/" \
        "exit status: $RC$([ "$RC" -eq 124 ] && echo ' (timed out)')" "stderr: $(head -c 1500 "$ERR")" \
        "stdout: $(head -c 300 "$OUT")"
    return 1
}

# rc_is NAME WANT-RC — the last q exited WANT-RC.
rc_is() {
    note "$1: exit $RC$([ -s "$ERR" ] && echo ": $(head -c 600 "$ERR")")"
    if [ "$RC" -eq "$2" ]; then
        pass "$1"
        return 0
    fi
    fail "$1" "expected exit status $2, got $RC$([ "$RC" -eq 124 ] && echo ' (timed out)')" \
        "stderr: $(head -c 1500 "$ERR")" "stdout: $(head -c 600 "$OUT")"
    return 1
}

# peak_small NAME — no qed run since peak_reset went over RSS_LIMIT_KIB.
peak_small() {
    if [ -z "$TIME_BIN" ]; then
        skip "$1" "/usr/bin/time is not installed"
        return 0
    fi
    if [ "$PEAK" -lt "$RSS_LIMIT_KIB" ]; then
        pass "$1 (peak RSS $PEAK KiB)"
    else
        fail "$1" "peak RSS $PEAK KiB, limit $RSS_LIMIT_KIB KiB"
    fi
}

# under_ms NAME LIMIT — the last q took less than LIMIT ms.
under_ms() {
    if [ "$MS" -lt "$2" ]; then
        pass "$1 (${MS} ms)"
    else
        fail "$1" "took $MS ms, limit $2 ms"
    fi
}

# check_json NAME FILE [ARGS...] — qed check --output=json ARGS FILE; the
# counters land in CORR, LEAKS, CFIXED, LFIXED.
check_json() {
    local f=$1
    shift
    q check --output=json "$@" "$f"
    cp "$OUT" "$T/.check.json"
    CORR=$(json_get "$T/.check.json" corruptions 2>/dev/null || echo '?')
    LEAKS=$(json_get "$T/.check.json" leaks 2>/dev/null || echo '?')
    CFIXED=$(json_get "$T/.check.json" corruptions-fixed 2>/dev/null || echo '?')
    LFIXED=$(json_get "$T/.check.json" leaks-fixed 2>/dev/null || echo '?')
}

# qemu_clean NAME FILE — tests/qemu-check-clean passes (QEMU finds nothing).
qemu_clean() {
    if [ "$HAVE_QEMU" -eq 0 ]; then
        skip "$1" "qemu-img is not installed"
        return 0
    fi
    tap_cmd "$1" perl "$CHECK_CLEAN" "$2"
}

# refused NAME FILE REGEX [OPTS...] — an image every subcommand must refuse
# at open: info, io -r read, map, check and io write (on FILE itself) each
# exit 1 with one line naming FILE and matching REGEX; FILE is unchanged
# afterwards; peak RSS stays small.  OPTS go before FILE (e.g. -f qed).
refused() {
    local name=$1 f=$2 re=$3
    shift 3
    cp "$f" "$T/.pristine"
    peak_reset
    q info "$@" "$f"
    err_is "$name: qed info" 1 "$f" "$re"
    q io -r -c "read 0 512" "$@" "$f"
    err_is "$name: qed io -r read" 1 "$f" "$re"
    q map "$@" "$f"
    err_is "$name: qed map" 1 "$f" "$re"
    q check "$@" "$f"
    err_is "$name: qed check" 1 "$f" "$re"
    q io -c "write 0 512" "$@" "$f"
    err_is "$name: qed io write" 1 "$f" "$re"
    cmp -s "$f" "$T/.pristine"
    ok $? "$name: the file is left as it was"
    peak_small "$name: memory stays small"
}

# ---- the image the table-entry cases start from ------------------------------
# 4 KiB clusters, header_size 2 (so an aligned offset can point into the
# header), table_size 2, 8 MiB; written by qed io:
#   0x0000 header (2 clusters)   0x2000 L1 (2 clusters)
#   0x4000 L2 #0 (virtual 0-4M)  0x6000 data, virtual 0 (0x01)
#   0x7000 data, virtual 4k (0x02)  0x8000 L2 #1 (4M-8M)
#   0xa000 data, virtual 4M (0x03)  file end 0xb000 (45056)
mkimg new base.qed header_size=2 table_size=2 image_size=8M
"$QED" io -c "write -P 1 0 4k" -c "write -P 2 4k 4k" -c "write -P 3 4M 4k" base.qed >/dev/null
layout="$(mkimg get base.qed l1 0) $(mkimg get base.qed l1 1) $(mkimg get base.qed l2 0 0) $(mkimg get base.qed l2 0 1) $(mkimg get base.qed l2 1 0) $(file_size base.qed)"
tap_is "$layout" "16384 32768 24576 28672 40960 45056" "the base image has the layout the cases assume" ||
    bail_out "unexpected layout of base.qed"
q check base.qed
rc_is "the base image checks clean" 0
qemu_clean "QEMU: the base image checks clean" base.qed

# Reads of the ranges a case does not touch, as qed io arguments.
GOOD_L1=(-c "read -P 3 4M 4k")                       # L1 entry 0 broken
GOOD_L2=(-c "read -P 2 4k 4k" -c "read -P 3 4M 4k")  # L2 entry 0/0 broken

# ==== 1. Empty, truncated and raw-probed files ====================================

: >empty.qed
q info --output=json empty.qed
tap_is "$RC/$(json_get "$OUT" format 2>/dev/null)/$(json_get "$OUT" virtual-size 2>/dev/null)" \
    "0/raw/0" "empty file: qed info probes it as a raw image of 0 bytes"
q io -r -c "read 0 512" empty.qed
err_is "empty file: qed io -r read is past the end" 1 empty.qed \
    'read: range 0\+512 is past the end of the image \(0 bytes\)'
q map --output=json empty.qed
rc_is "empty file: qed map exits 0" 0
q check empty.qed
err_is "empty file: qed check says raw does not support checks (63)" 63 empty.qed \
    'This image format does not support checks'
refused "empty file with -f qed" empty.qed 'file is too short for a QED header \(0 bytes\)' -f qed

head -c 40 base.qed >h40.qed
refused "40 bytes (inside the header fields)" h40.qed 'file is too short for a QED header \(40 bytes\)'
head -c 2000 base.qed >h2000.qed
refused "2000 bytes (inside the header cluster)" h2000.qed \
    'L1 table at offset 8192 \(8192 bytes\) extends past the end of the file \(2000 bytes\)'
head -c 12288 base.qed >l1cut.qed
refused "truncated inside the L1 table" l1cut.qed \
    'L1 table at offset 8192 \(8192 bytes\) extends past the end of the file \(12288 bytes\)'

# Inside an L2 table: the header is fine, the table is not.
head -c 20480 base.qed >l2cut.qed
q info l2cut.qed
rc_is "truncated inside an L2 table: qed info exits 0" 0
q io -r -c "read 0 4k" l2cut.qed
err_is "truncated inside an L2 table: read fails naming the L1 entry" 1 l2cut.qed \
    'read failed: corrupt image: L1 entry 0 points at invalid L2 table offset 0x4000 \(file end 0x5000\)'
q map l2cut.qed
err_is "truncated inside an L2 table: map fails naming the L1 entry" 1 l2cut.qed \
    'L1 entry 0 points at invalid L2 table offset 0x4000'
cp l2cut.qed l2cut-w.qed
q io -c "write 0 4k" l2cut-w.qed
err_is "truncated inside an L2 table: write fails naming the L1 entry" 1 l2cut-w.qed \
    'write failed: corrupt image: L1 entry 0 points at invalid L2 table offset 0x4000'
check_json l2cut.qed
tap_is "$RC/$CORR" "2/2" "truncated inside an L2 table: qed check exits 2, 2 corruptions (both L2 tables)"
check_json l2cut.qed -r all
tap_is "$RC/$CFIXED" "0/2" "truncated inside an L2 table: qed check -r all exits 0, 2 fixed"
q check l2cut.qed
rc_is "truncated inside an L2 table: checks clean after the repair" 0
qemu_clean "truncated inside an L2 table: QEMU finds it clean after the repair" l2cut.qed
q io -r -c "read -P 0 0 8M" l2cut.qed
rc_is "truncated inside an L2 table: the repaired image reads as zeros" 0

# Truncated at the start of a data cluster: the cluster is gone.
head -c 24576 base.qed >dcut.qed
q io -r -c "read 0 4k" dcut.qed
err_is "truncated at a data cluster: read fails naming the entry" 1 dcut.qed \
    'read failed: corrupt image: L2 table 0 maps offset 0 to invalid cluster offset 0x6000 \(file end 0x6000\)'
check_json dcut.qed
tap_is "$RC/$CORR" "2/3" "truncated at a data cluster: qed check exits 2, 3 corruptions (2 data clusters, 1 L2 table)"
check_json dcut.qed -r all
tap_is "$RC/$CFIXED" "0/3" "truncated at a data cluster: qed check -r all exits 0, 3 fixed"
qemu_clean "truncated at a data cluster: QEMU finds it clean after the repair" dcut.qed

# Truncated inside the last data cluster (virtual 4M, at 0xa000): its second
# half is gone.  QEMU fails the read (EINVAL) and `qemu-img check` reports a
# corruption.
head -c 43008 base.qed >dhalf.qed
q io -r -c "read -P 3 4M 4k" dhalf.qed
err_is "truncated inside a data cluster: read fails instead of returning zeros for the lost half" 1 \
    dhalf.qed 'corrupt image|past the end|truncated'
q check dhalf.qed
rc_is "truncated inside a data cluster: qed check reports the cut cluster (exit 2, as qemu-img check)" 2

# No magic: the file is raw, whatever else it holds.
perl -e 'print pack("V", 0x00444552), "x" x 1020, "\x5a" x (1048576 - 1024)' >nomagic.img
q info --output=json nomagic.img
tap_is "$RC/$(json_get "$OUT" format 2>/dev/null)/$(json_get "$OUT" virtual-size 2>/dev/null)" \
    "0/raw/1048576" "no magic: probed as raw, the file's size"
q io -r -c "read -P 0x5a 1024 1047552" nomagic.img
rc_is "no magic: read returns the file's bytes" 0
q map nomagic.img
rc_is "no magic: qed map exits 0" 0
q check nomagic.img
err_is "no magic: qed check refuses it (raw, 63)" 63 nomagic.img 'This image format does not support checks'
refused "no magic, opened with -f qed" nomagic.img 'not a QED image \(magic 0x00444552\)' -f qed

# ==== 2. Header fields ==============================================================
# Each field set to a bad value in an otherwise good 4 KiB-cluster image
# (1 MiB, header 0-4k, L1 4k-20k, file 20 KiB).
mkimg new good.qed
hdr_case() { # NAME FIELD=VALUE... -- REGEX
    local name=$1 sets=()
    shift
    while [ "$1" != -- ]; do
        sets+=("$1")
        shift
    done
    shift
    cp good.qed h.qed
    mkimg set h.qed "${sets[@]}"
    refused "$name" h.qed "$1"
}
cp good.qed h.qed
mkimg set h.qed magic=0x00444552
refused "magic 0x00444552 with -f qed" h.qed 'not a QED image \(magic 0x00444552\)' -f qed
hdr_case "features 0x3f (known bits 0x7 and unknown 0x38)" features=0x3f -- \
    'Unsupported QED features: 0x38$'
hdr_case "features bit 63" features=0x8000000000000000 -- 'Unsupported QED features: 0x8000000000000000$'
for v in 0 2048 3000 134217728 2147483648; do
    hdr_case "cluster_size $v" cluster_size=$v -- \
        "cluster size $v is not a power of two in \\[4096, 67108864\\]"
done
for v in 0 3 32 2147483648; do
    hdr_case "table_size $v" table_size=$v -- "table size $v is not a power of two in \\[1, 16\\]"
done
hdr_case "header_size 0" header_size=0 -- \
    'header size 0 is invalid \(at least 1 cluster holds the header fields\)'
hdr_case "header_size 2^20 (header_size * cluster_size = 2^32 wraps a 32-bit product to 0)" \
    header_size=1048576 -- 'header size 1048576 \(4294967296 bytes\) overlaps the L1 table at offset 4096'
hdr_case "header_size 0xffffffff" header_size=4294967295 -- \
    'header size 4294967295 \(17592186040320 bytes\) overlaps the L1 table at offset 4096'
hdr_case "header_size 16 (64 KiB, bigger than the 20 KiB file), L1 after it" \
    header_size=16 l1_table_offset=65536 -- \
    'L1 table at offset 65536 \(16384 bytes\) extends past the end of the file \(20480 bytes\)'
hdr_case "l1_table_offset 4097 (misaligned)" l1_table_offset=4097 -- \
    'L1 table offset 4097 is not a multiple of the cluster size 4096'
hdr_case "l1_table_offset 0 (inside the header)" l1_table_offset=0 -- \
    'header size 1 \(4096 bytes\) overlaps the L1 table at offset 0'
hdr_case "l1_table_offset 2048 (inside the header, misaligned)" l1_table_offset=2048 -- \
    'header size 1 \(4096 bytes\) overlaps the L1 table at offset 2048'
hdr_case "l1_table_offset 20480 (at the end of the file)" l1_table_offset=20480 -- \
    'L1 table at offset 20480 \(16384 bytes\) extends past the end of the file \(20480 bytes\)'
hdr_case "l1_table_offset 8192 (table runs past the end)" l1_table_offset=8192 -- \
    'L1 table at offset 8192 \(16384 bytes\) extends past the end of the file \(20480 bytes\)'
hdr_case "l1_table_offset 2^64-4096 (offset + table overflows 64 bits)" \
    l1_table_offset=0xfffffffffffff000 -- \
    'L1 table at offset 18446744073709547520 \(16384 bytes\) extends past the end of the file \(20480 bytes\)'
hdr_case "image_size 1000 (not a multiple of 512)" image_size=1000 -- \
    'image size 1000 is not a multiple of 512'
hdr_case "image_size 16G+512 (above the 16 GiB 4k/4 tables address)" image_size=17179869696 -- \
    'image size 17179869696 exceeds the maximum 17179869184 for cluster size 4096 and table size 4'
hdr_case "image_size UINT64_MAX" image_size=0xffffffffffffffff -- \
    'image size 18446744073709551615 is not a multiple of 512'
hdr_case "image_size UINT64_MAX-511" image_size=0xfffffffffffffe00 -- \
    'image size 18446744073709551104 exceeds the maximum 17179869184'

# 64 MiB clusters, table_size 16: the tables address more than 2^64 bytes.
mkimg new big-hdr.qed cluster_size=64M table_size=16 image_size=0xfffffffffffffe00 file_size=4096
refused "64M/16 with image_size 2^64-512 (above the largest supported size)" big-hdr.qed \
    'image size 18446744073709551104 exceeds the largest supported size 9223372036854775296'
# A 4 KiB file whose header claims 64 MiB clusters and a 1 GiB L1 table: refused
# before the table is allocated (`refused` checks the peak RSS).
mkimg new big-l1.qed cluster_size=64M table_size=16 image_size=1G file_size=4096
refused "64M clusters, table_size 16, 4 KiB file (1 GiB L1 claimed)" big-l1.qed \
    'L1 table at offset 67108864 \(1073741824 bytes\) extends past the end of the file \(4096 bytes\)'

# Backing file name fields (QED_F_BACKING_FILE set).
truncate -s 1M base.raw
mkimg new named.qed backing=base.raw features=5
q io -r -c "read -P 0 0 4k" named.qed
rc_is "backing name fields: the unmodified image opens" 0
name_case() { # NAME FIELD=VALUE... -- REGEX
    local name=$1 sets=()
    shift
    while [ "$1" != -- ]; do
        sets+=("$1")
        shift
    done
    shift
    cp named.qed n.qed
    mkimg set n.qed "${sets[@]}"
    refused "$name" n.qed "$1"
}
name_case "backing name at 4000, 200 bytes (outside the header)" \
    backing_filename_offset=4000 backing_filename_size=200 -- \
    'backing file name at offset 4000 \(200 bytes\) extends past the header \(4096 bytes\)'
name_case "backing name offset 40 (overlaps the fixed fields)" backing_filename_offset=40 -- \
    'backing file name offset 40 overlaps the header fields \(first 64 bytes\)'
name_case "backing name size 0" backing_filename_size=0 -- 'backing file name size is 0$'
name_case "backing name size 4096" backing_filename_size=4096 -- \
    'backing file name size 4096 exceeds the limit of 4095 bytes'
name_case "backing name offset 0xfffffff0 + size 32 (wraps 32 bits)" \
    backing_filename_offset=0xfffffff0 backing_filename_size=32 -- \
    'backing file name at offset 4294967280 \(32 bytes\) extends past the header \(4096 bytes\)'
cp named.qed n.qed
printf 'ba\0e.raw' | dd of=n.qed bs=1 seek=64 conv=notrunc 2>/dev/null
refused "backing name with a NUL byte" n.qed 'backing file name contains a NUL byte at position 2 of 8'

# Not malformed, only unusual: accepted.
mkimg new hdr4g.qed header_size=1048576
peak_reset
q io -c "write -P 4 0 4k" -c "read -P 4 0 4k" hdr4g.qed
rc_is "header_size 2^20 with the L1 table at 4 GiB (sparse 4 GiB header): reads and writes" 0
q check hdr4g.qed
rc_is "header_size 2^20 with the L1 table at 4 GiB: checks clean" 0
peak_small "header_size 2^20 with the L1 table at 4 GiB: memory stays small"
mkimg new name5000.qed header_size=2 backing=base.raw backing_filename_offset=5000 features=5
q io -c "write -P 6 0 512" -c "read -P 6 0 512" -c "read -P 0 512 3584" name5000.qed
rc_is "backing name stored past the first 4 KiB of a 2-cluster header: read and written" 0

# ==== 3. Table entries ================================================================
# entry_bad NAME FILE VOFF REGEX GOOD... — an entry the I/O path must refuse,
# covering virtual offset VOFF: info is fine; read, map and write fail with one
# line matching REGEX (the write changes nothing); the other data still reads;
# check exits 2; check -r all exits 0 and leaves nothing for qed or QEMU to
# find, the range reading as zeros and the rest as before.
entry_bad() {
    local name=$1 f=$2 voff=$3 re=$4
    shift 4
    peak_reset
    q info "$f"
    rc_is "$name: qed info exits 0" 0
    q io -r -c "read $voff 4k" "$f"
    err_is "$name: qed io -r read fails" 1 "$f" "read failed: $re"
    q map "$f"
    err_is "$name: qed map fails" 1 "$f" "$re"
    cp "$f" "$T/.pristine"
    q io -c "write -P 9 $voff 4k" "$f"
    err_is "$name: qed io write fails" 1 "$f" "write failed: $re"
    cmp -s "$f" "$T/.pristine"
    ok $? "$name: the failed write changed nothing"
    q io -r "$@" "$f"
    rc_is "$name: the rest of the image reads as written" 0
    check_json "$f"
    tap_is "$RC/$CORR" "2/1" "$name: qed check exits 2 with 1 corruption"
    check_json "$f" -r all
    tap_is "$RC/$CFIXED" "0/1" "$name: qed check -r all exits 0, 1 corruption fixed"
    q check "$f"
    rc_is "$name: qed check is clean after the repair" 0
    qemu_clean "$name: QEMU finds nothing after the repair" "$f"
    q io -r -c "read -P 0 $voff 4k" "$@" "$f"
    rc_is "$name: after the repair the range reads as zeros, the rest as before" 0
    peak_small "$name: memory stays small"
}

l1_case() { # NAME VALUE REGEX
    cp base.qed e.qed
    mkimg l1 e.qed 0 "$2"
    entry_bad "L1 entry $1" e.qed 0 "$3" "${GOOD_L1[@]}"
}
l2_case() { # NAME VALUE REGEX
    cp base.qed e.qed
    mkimg l2 e.qed 0 0 "$2"
    entry_bad "L2 entry $1" e.qed 0 "$3" "${GOOD_L2[@]}"
}
L1MSG='corrupt image: L1 entry 0 points at invalid L2 table offset'
L2MSG='corrupt image: L2 table 0 maps offset 0 to invalid cluster offset'
l1_case "into the header (0x1000)" 4096 "$L1MSG 0x1000 \\(file end 0xb000\\)"
l1_case "at the L1 table itself (0x2000)" 8192 "$L1MSG 0x2000 \\(file end 0xb000\\)"
l1_case "overlapping the end of the L1 table (0x3000)" 12288 "$L1MSG 0x3000 \\(file end 0xb000\\)"
l1_case "past the end of the file (0xc000)" 49152 "$L1MSG 0xc000 \\(file end 0xb000\\)"
l1_case "whose table runs past the end (0xa000)" 40960 "$L1MSG 0xa000 \\(file end 0xb000\\)"
l1_case "misaligned (0x4200)" 16896 "$L1MSG 0x4200 \\(file end 0xb000\\)"
l1_case "2^64-4096 (offset + table overflows)" 0xfffffffffffff000 "$L1MSG 0xfffffffffffff000 \\(file end 0xb000\\)"
l2_case "into the header (0x1000)" 4096 "$L2MSG 0x1000 \\(file end 0xb000\\)"
l2_case "into the L1 table (0x2000)" 8192 "$L2MSG 0x2000 \\(file end 0xb000\\)"
l2_case "past the end of the file (0xc000)" 49152 "$L2MSG 0xc000 \\(file end 0xb000\\)"
l2_case "at the end of the file (0xb000)" 45056 "$L2MSG 0xb000 \\(file end 0xb000\\)"
l2_case "2^64-4096" 0xfffffffffffff000 "$L2MSG 0xfffffffffffff000 \\(file end 0xb000\\)"
# The message must name the entry's value, 0x6200, not the cluster it rounds to.
l2_case "misaligned (0x6200)" 25088 "$L2MSG 0x6200 "

# An L1 entry naming a data cluster: its bytes (0x01...) are read as a table
# whose entries are all invalid; the message must name the value found there.
cp base.qed e.qed
mkimg l1 e.qed 0 24576
peak_reset
q io -r -c "read 0 4k" e.qed
err_is "L1 entry at a data cluster: read fails naming the bad entry of the pseudo-table" 1 e.qed \
    "read failed: $L2MSG 0x101010101010101 "
q map e.qed
err_is "L1 entry at a data cluster: map fails" 1 e.qed "$L2MSG"
check_json e.qed
tap_is "$RC" 2 "L1 entry at a data cluster: qed check exits 2 ($CORR corruptions)"
check_json e.qed -r all
tap_is "$RC" 0 "L1 entry at a data cluster: qed check -r all exits 0"
qemu_clean "L1 entry at a data cluster: QEMU finds nothing after the repair" e.qed
q io -r "${GOOD_L1[@]}" e.qed
rc_is "L1 entry at a data cluster: the rest reads as written after the repair" 0
peak_small "L1 entry at a data cluster: memory stays small"

# A data entry naming an L2 table (its own, or another): reads return the
# table's bytes (as QEMU does), but a write through it is refused, so the
# table is never overwritten; check reports it and -r all gives the data
# its own copy.
for which in own:16384 other:32768; do
    label=${which%%:*} value=${which#*:}
    name="L2 entry at an L2 table ($label, $(printf 0x%x "$value"))"
    cp base.qed e.qed
    mkimg l2 e.qed 0 0 "$value"
    q io -r -c "read 0 4k" e.qed
    rc_is "$name: a read returns the bytes there, as QEMU does" 0
    cp e.qed ew.qed
    q io -c "write -P 9 0 4k" ew.qed
    err_is "$name: write is refused instead of overwriting the table" 1 ew.qed "write failed: .*0x$(printf %x "$value")"
    q io -r "${GOOD_L2[@]}" ew.qed
    rc_is "$name: after that write the other clusters still read as written" 0
    check_json e.qed
    tap_is "$RC/$CORR" "2/1" "$name: qed check exits 2 with 1 corruption"
    check_json e.qed -r all
    tap_is "$RC/$CFIXED" "0/1" "$name: qed check -r all exits 0"
    qemu_clean "$name: QEMU finds nothing after the repair" e.qed
    q io -r "${GOOD_L2[@]}" e.qed
    rc_is "$name: the rest reads as written after the repair" 0
done

# Two entries naming one cluster: nothing at I/O time can tell; both ranges
# read (and write) the same cluster, as in QEMU.  check finds it, -r all gives
# each entry its own copy (the content stays).
cp base.qed d1.qed
mkimg l1 d1.qed 1 16384
q io -r -c "read -P 1 4M 4k" -c "read -P 1 0 4k" d1.qed
rc_is "two L1 entries at one L2 table: both ranges read the shared table's data" 0
check_json d1.qed
tap_is "$RC/$CORR" "2/3" "two L1 entries at one L2 table: qed check exits 2, 3 corruptions (the table and its 2 data clusters)"
check_json d1.qed -r all
tap_is "$RC/$CFIXED" "0/3" "two L1 entries at one L2 table: qed check -r all exits 0, 3 fixed"
qemu_clean "two L1 entries at one L2 table: QEMU finds nothing after the repair" d1.qed
q io -c "write -P 8 4M 4k" -c "read -P 1 0 4k" -c "read -P 2 4k 4k" -c "read -P 8 4M 4k" d1.qed
rc_is "two L1 entries at one L2 table: after the repair the two ranges are independent" 0

cp base.qed d2.qed
mkimg l2 d2.qed 0 1 24576
q io -r -c "read -P 1 4k 4k" d2.qed
rc_is "two L2 entries at one cluster: both read the shared cluster" 0
cp d2.qed d2w.qed
q io -c "write -P 7 4k 4k" -c "read -P 7 0 4k" d2w.qed
rc_is "two L2 entries at one cluster: a write through one shows through the other (as in QEMU)" 0
check_json d2.qed
tap_is "$RC/$CORR/$LEAKS" "2/1/1" "two L2 entries at one cluster: qed check exits 2, 1 corruption, 1 leak"
check_json d2.qed -r all
tap_is "$RC/$CFIXED/$LFIXED" "0/1/1" "two L2 entries at one cluster: qed check -r all exits 0"
qemu_clean "two L2 entries at one cluster: QEMU finds nothing after the repair" d2.qed
q io -c "write -P 7 4k 4k" -c "read -P 1 0 4k" -c "read -P 7 4k 4k" -c "read -P 3 4M 4k" d2.qed
rc_is "two L2 entries at one cluster: after the repair the two clusters are independent" 0

# A dirty image (NEED_CHECK) with a bad entry: a read-only open leaves it (the
# read fails like any other); a read-write open repairs it first.
cp base.qed dirty.qed
mkimg l2 dirty.qed 0 0 49152
mkimg set dirty.qed features=2
q io -r -c "read 0 4k" dirty.qed
err_is "dirty image with an entry past the end: a read-only read fails" 1 dirty.qed "read failed: $L2MSG 0xc000"
q io -c "write -P 9 0 4k" "${GOOD_L2[@]}" dirty.qed
rc_is "dirty image with an entry past the end: a read-write open repairs it, then writes" 0
q check dirty.qed
rc_is "dirty image with an entry past the end: clean afterwards" 0
qemu_clean "dirty image with an entry past the end: QEMU finds nothing afterwards" dirty.qed

# Every entry of an L2 table naming one cluster.
"$QED" create -q -o cluster_size=4k,table_size=16 all4k.qed 1G
"$QED" io -c "write -P 5 0 4k" all4k.qed >/dev/null
fill_l2() { # FILE COUNT VALUE
    perl -e 'my ($f, $n, $v) = @ARGV; open(my $fh, "+<:raw", $f) or die;
        seek($fh, 40, 0); read($fh, my $b, 8); my $l1 = unpack("Q<", $b);
        seek($fh, $l1, 0); read($fh, $b, 8); my $l2 = unpack("Q<", $b);
        seek($fh, $l2, 0); print $fh pack("Q<", $v) x $n; close($fh) or die' "$@"
}
fill_l2 all4k.qed 8192 "$(mkimg get all4k.qed l2 0 0)"
peak_reset
check_json all4k.qed
tap_is "$RC/$CORR" "2/8191" "8192 L2 entries at one cluster (4k/16): qed check exits 2, 8191 corruptions"
check_json all4k.qed -r all
tap_is "$RC/$CFIXED" "0/8191" "8192 L2 entries at one cluster: qed check -r all gives each a copy"
under_ms "8192 L2 entries at one cluster: the repair takes under 5 s" 5000
q io -r -c "read -P 5 0 32M" all4k.qed
rc_is "8192 L2 entries at one cluster: every copy reads as the shared cluster did" 0
peak_small "8192 L2 entries at one cluster: memory stays small"
"$QED" create -q all64k.qed 1G
"$QED" io -c "write -P 5 0 64k" all64k.qed >/dev/null
fill_l2 all64k.qed 32768 "$(mkimg get all64k.qed l2 0 0)"
peak_reset
q check -r all all64k.qed
err_is "32768 L2 entries at one 64k cluster: -r all refuses to write 2 GiB of copies" 1 all64k.qed \
    'repairing 32767 clusters referenced more than once needs 2147418112 bytes of copies, more than the file.s size and 1 GiB; refusing'
peak_small "32768 L2 entries at one 64k cluster: memory stays small"

# A file with a 1 TiB sparse tail (leaks only).
cp base.qed tail.qed
truncate -s 1T tail.qed
peak_reset
q check tail.qed
rc_is "1 TiB sparse tail: qed check exits 3 (leaks)" 3
under_ms "1 TiB sparse tail: qed check takes under 3 s" 3000
peak_small "1 TiB sparse tail: qed check memory stays small"
truncate -s 256G tail.qed
peak_reset
q check -r leaks tail.qed
rc_is "256 GiB sparse tail: qed check -r leaks exits 0" 0
note "256 GiB sparse tail: -r leaks peak RSS $RSS KiB, $MS ms"
tap_is "$(file_size tail.qed)" 45056 "256 GiB sparse tail: the file is truncated to its last cluster"
peak_small "256 GiB sparse tail: qed check -r leaks memory stays small"

# ==== 4. Backing files ==================================================================
mkdir bk && cd bk || bail_out "cd bk"
truncate -s 1M base.raw
# backing_case NAME FILE REGEX — info (human) warns and exits 0; info
# --backing-chain, read, map and write fail with REGEX at once; check looks at
# the image alone and exits 0.
backing_case() {
    local name=$1 f=$2 re=$3
    peak_reset
    q info "$f"
    rc_is "$name: qed info exits 0" 0
    tap_like "$(cat "$ERR")" "^qed: $f: warning: backing chain not opened: .*$re" \
        "$name: qed info warns that the chain is not opened, and why"
    q info --backing-chain "$f"
    err_is "$name: qed info --backing-chain fails" 1 "$f" "$re"
    q io -r -c "read 0 512" "$f"
    err_is "$name: qed io -r read fails" 1 "$f" "$re"
    under_ms "$name: ... within a second" 1000
    q map "$f"
    err_is "$name: qed map fails" 1 "$f" "$re"
    q check "$f"
    rc_is "$name: qed check checks the image alone (exit 0)" 0
    cp "$f" "$T/.pristine"
    q io -c "write 0 512" "$f"
    err_is "$name: qed io write fails" 1 "$f" "$re"
    cmp -s "$f" "$T/.pristine"
    ok $? "$name: the failed write changed nothing"
    peak_small "$name: memory stays small"
}
mkimg new self.qed backing=self.qed
backing_case "its own backing file" self.qed "backing chain loop: 'self.qed' is already in the chain"
mkimg new a.qed backing=b.qed
mkimg new b.qed backing=a.qed
backing_case "a 2-image loop" a.qed "backing file 'a.qed': backing chain loop: 'a.qed' is already in the chain"
mkimg new x.qed backing=y.qed
mkimg new y.qed backing=z.qed
mkimg new z.qed backing=x.qed
backing_case "a 3-image loop" x.qed "backing file 'x.qed': backing chain loop: 'x.qed' is already in the chain"
mkimg new miss.qed backing=nothere.qed
backing_case "a missing backing file" miss.qed "backing file 'nothere.qed': No such file or directory"
# A long name (611 bytes): the cause must survive the prefixes.
long=$(printf 'x/../%.0s' $(seq 1 120))nothere.raw
mkimg new misslong.qed backing="$long"
q io -r -c "read 0 512" misslong.qed
err_is "a missing backing file with a 611-byte name: the message still ends with the cause" 1 misslong.qed \
    'No such file or directory$'

# A chain of 66 files: c1.qed over c0.raw, c(i).qed over c(i-1).qed.  65 files
# (the top and 64 backing files) open; 66 do not.
mkimg new c1.qed backing=c0.raw features=5
truncate -s 1M c0.raw
for i in $(seq 2 66); do
    mkimg new "c$i.qed" backing="c$((i - 1)).qed"
done
peak_reset
q io -r -c "read -P 0 0 4k" c64.qed
rc_is "a chain of 65 files (64 backing files) opens and reads" 0
q io -r -c "read 0 4k" c65.qed
err_is "a chain of 66 files: read fails, the message says the chain is too deep" 1 c65.qed \
    'backing chain deeper than 64'
under_ms "a chain of 66 files: fails within a second" 1000
q map c66.qed
err_is "a chain of 67 files: map fails, the message says the chain is too deep" 1 c66.qed \
    'backing chain deeper than 64'
q info --backing-chain c66.qed
err_is "a chain of 67 files: info --backing-chain fails, saying why" 1 c66.qed 'backing chain deeper than 64'
q create -b c65.qed over.qed 1M
err_is "create over a chain of 66 files fails, saying why" 1 over.qed 'backing chain deeper than 64'
tap_is "$([ -e over.qed ] && echo exists)" "" "create over a too-deep chain leaves no file"
peak_small "deep chains: memory stays small"

# Names too long for the header at create time.
long=$(printf './%.0s' $(seq 1 2021))base.raw # 4050 bytes; 4032 fit in a 4 KiB cluster
q create -q -o cluster_size=4k -b "$long" -F raw toolong.qed 1M
err_is "create with a 4050-byte backing name and 4 KiB clusters fails" 1 toolong.qed \
    'backing file name is 4050 bytes; at most 4032 fit in the header \(cluster size 4096\)'
tap_is "$([ -e toolong.qed ] && echo exists)" "" "... and leaves no file"
"$QED" create -q -o cluster_size=4k keep.qed 1M
"$QED" io -c "write -P 0x44 0 4k" keep.qed >/dev/null
cp keep.qed keep.orig
q create -q -o cluster_size=4k -b "$long" -F raw keep.qed 1M
err_is "the same over an existing image fails" 1 keep.qed 'backing file name is 4050 bytes'
cmp -s keep.qed keep.orig
ok $? "... and leaves the existing image as it was"
long=$(printf './%.0s' $(seq 1 2043))base1.raw # 4095 bytes: the most a reader accepts
cp base.raw base1.raw
q create -q -o cluster_size=64k -b "$long" -F raw name4095.qed 1M
rc_is "create with a 4095-byte backing name and 64 KiB clusters works" 0
q io -c "write -P 3 0 512" -c "read -P 3 0 512" -c "read -P 0 512 $((MiB - 512))" name4095.qed
rc_is "... and the image opens through it" 0
long=$(printf './%.0s' $(seq 1 2500))base.raw # 5008 bytes: longer than PATH_MAX
q create -q -o cluster_size=64k -b "$long" -F raw name5008.qed 1M
err_is "create with a 5008-byte backing name fails, saying why" 1 name5008.qed \
    'too long|exceeds|at most'
tap_is "$([ -e name5008.qed ] && echo exists)" "" "... and leaves no file"
cd "$T" || bail_out "cd $T"

# ==== 5. Virtual sizes at the limit =====================================================
# 64 KiB clusters, table_size 4 (the defaults): 32768 entries per table,
# 32768^2 * 64 KiB = 64 TiB exactly.
T64=$((64 << 40))
q create -q big.qed 64T
rc_is "64 TiB with the default geometry: create" 0
under_ms "64 TiB: create under 1 s" 1000
q info --output=json big.qed
tap_is "$RC/$(json_get "$OUT" virtual-size 2>/dev/null)" "0/$T64" "64 TiB: info reports 70368744177664 bytes"
under_ms "64 TiB: info under 1 s" 1000
q io -c "write -P 1 $((T64 - 65536)) 65536" big.qed
rc_is "64 TiB: a write of the last 64 KiB ($((T64 - 65536)))" 0
under_ms "64 TiB: the write under 1 s" 1000
q io -r -c "read -P 1 $((T64 - 65536)) 65536" -c "read -P 0 $((T64 - 131072)) 65536" big.qed
rc_is "64 TiB: reads it back (and zeros before it)" 0
under_ms "64 TiB: the read under 1 s" 1000
q io -r -c "read $T64 512" big.qed
err_is "64 TiB: a read at the end is refused" 1 big.qed 'past the end of the image \(70368744177664 bytes\)'
q check big.qed
rc_is "64 TiB: qed check exits 0" 0
under_ms "64 TiB: qed check under 1 s" 1000
q map --output=json big.qed
rc_is "64 TiB: qed map" 0
under_ms "64 TiB: qed map under 1 s" 1000
qemu_clean "64 TiB: QEMU finds nothing wrong" big.qed
q create -q big1.qed $((T64 + 512))
err_is "64 TiB + 512: create refuses it, naming the maximum" 1 big1.qed \
    'image size 70368744178176 exceeds the maximum 70368744177664 for cluster size 65536 and table size 4'

# The largest size of other geometries; the cluster at the very end.
for g in 4096:1:$((1 << 30)) 4096:16:$((1 << 38)) 65536:16:$((1 << 50)) 2097152:1:$((1 << 57)); do
    IFS=: read -r cs ts max <<<"$g"
    f=max-$cs-$ts.qed
    peak_reset
    q create -q -o "cluster_size=$cs,table_size=$ts" "$f" "$max"
    rc_is "$cs/$ts: create at the maximum, $max bytes" 0
    q create -q -o "cluster_size=$cs,table_size=$ts" "$f.x" $((max + 512))
    err_is "$cs/$ts: create at the maximum + 512 is refused, naming the maximum" 1 "$f.x" \
        "exceeds the maximum $max for cluster size $cs and table size $ts"
    q io -c "write -P 7 $((max - cs)) $cs" -c "read -P 7 $((max - cs)) $cs" "$f"
    rc_is "$cs/$ts: write and read the last cluster" 0
    under_ms "$cs/$ts: ... under 1 s" 1000
    q check "$f"
    rc_is "$cs/$ts: qed check exits 0" 0
    under_ms "$cs/$ts: qed check under 1 s" 1000
    peak_small "$cs/$ts: memory stays small"
done
# 2 MiB clusters, table_size 16: the tables address 2^65 bytes; the size
# stops at the largest supported, 2^63 - 512.
MAXV=9223372036854775296
q create -q -o cluster_size=2M,table_size=16 cap.qed $MAXV
rc_is "2M/16: create at 2^63-512" 0
q create -q -o cluster_size=2M,table_size=16 cap1.qed 9223372036854775808
err_is "2M/16: 2^63 is refused" 1 cap1.qed 'image size 9223372036854775808 exceeds the largest supported size 9223372036854775296'
q io -c "write -P 7 $((MAXV - 512)) 512" -c "read -P 7 $((MAXV - 512)) 512" -c "read -P 0 $((MAXV - 4096)) 3584" cap.qed
rc_is "2M/16: write and read the last sector at 2^63-1024" 0
under_ms "2M/16: ... under 1 s" 1000
q io -r -c "read $((MAXV - 512)) 1024" cap.qed
err_is "2M/16: a read across the end is refused" 1 cap.qed 'past the end of the image'
q check cap.qed
rc_is "2M/16: qed check exits 0" 0
under_ms "2M/16: qed check under 1 s" 1000

done_testing
