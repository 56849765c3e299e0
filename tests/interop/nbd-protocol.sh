#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed serve` at the protocol level, driven by nbd_raw_client.py: the
# greeting, option haggling (unknown options, LIST, INFO, GO, STRUCTURED_REPLY,
# LIST/SET_META_CONTEXT, EXPORT_NAME with and without NO_ZEROES, ABORT) and
# the transmission phase (errors for out-of-range, unknown and malformed
# requests, structured reads with hole and data chunks, DF, BLOCK_STATUS with
# REQ_ONE, WRITE_ZEROES with FAST_ZERO and NO_HOLE, FUA, FLUSH, CACHE, TRIM,
# the 32 MiB payload limit, DISC), against doc/proto.md of the
# NetworkBlockDevice project.
. "$(dirname "$0")/lib.sh"
require_cmd python3 nbdinfo
require_qed

TAP_TIMEOUT=20
RAW=$_lib_dir/nbd_raw_client.py

# ---- server management ------------------------------------------------------

. "$_lib_dir/nbd-server.bash"

# ---- raw client helpers -------------------------------------------------------

SOCK=$T/p.sock
# rawc STEP... — one connection to $SOCK doing the steps (transcript in $OUT).
rawc() { run python3 "$RAW" -t 15 -k "$SOCK" "$@"; }

# A structured session with both meta contexts (4 steps).
SGO=(hello sr "setmeta::base:allocation,qemu:allocation-depth" go:)

# ---- the image ----------------------------------------------------------------
# 64 MiB, 64 KiB clusters: data at 0 (0x11) and 1 MiB (0x22), a zero cluster
# at 128 KiB, the rest unallocated.
SIZE=$((64 * MiB))
tap_cmd "qed create p.qed (64 MiB, 64k clusters)" "$QED" create -q -o cluster_size=64k p.qed 64M ||
    done_testing
tap_cmd "qed io writes data and a zero cluster" "$QED" io -c "write -P 0x11 0 64k" \
    -c "write -z 128k 64k" -c "write -P 0x22 1M 64k" p.qed
# The servers started while the first one runs serve copies: p.qed is
# locked by it.
cp p.qed p-ro.qed && cp p.qed p-named.qed

start_server srv "$SOCK" -t p.qed
ok $? "qed serve -t -k starts" "$(cat "$T/srv.err")"

# ---- greeting and options --------------------------------------------------------

rawc greeting
check 1 "magic=NBDMAGIC opt=IHAVEOPT flags=0x3" \
    "greeting: NBDMAGIC, IHAVEOPT, handshake flags FIXED_NEWSTYLE|NO_ZEROES"

rawc hello opt:99 opt:99:00010203 go: read:0:512
check 2 "ERR_UNSUP" "unknown option -> NBD_REP_ERR_UNSUP"
check 3 "ERR_UNSUP" "unknown option with data -> NBD_REP_ERR_UNSUP (data skipped)"
check_like 4 "^INFO_EXPORT\(size=$SIZE,flags=0x[0-9a-f]+\) ACK$" "negotiation continues: GO after unknown options"
check 5 "error=0 data=0x11*512" "transmission works after unknown options"

rawc hello opt:5 go:
check_like 2 "^ERR_(UNSUP|POLICY)$" "STARTTLS is refused with an error reply"
check_like 3 "ACK$" "GO works after a refused STARTTLS"

rawc hello list opt:3:00 go:
check 2 "SERVER() ACK" "LIST -> NBD_REP_SERVER with the (empty) export name, then ACK"
check 3 "ERR_INVALID" "LIST with data -> NBD_REP_ERR_INVALID"
check_like 4 "ACK$" "GO works after LIST"

rawc hello info:nope info: info::1,3 go:
check 2 "ERR_UNKNOWN" "INFO for an unknown export -> NBD_REP_ERR_UNKNOWN"
check "3" "INFO_EXPORT(size=$SIZE,flags=0xd6d) ACK" \
    "INFO: INFO_EXPORT with size and flags (FLUSH FUA TRIM WRITE_ZEROES MULTI_CONN CACHE FAST_ZERO), ACK"
check 4 "INFO_EXPORT(size=$SIZE,flags=0xd6d) INFO_NAME() INFO_BLOCK_SIZE(min=1,pref=65536,max=33554432) ACK" \
    "INFO with NBD_INFO_NAME and NBD_INFO_BLOCK_SIZE requests (preferred = cluster size)"
check_like 5 "ACK$" "INFO leaves the client in negotiation: GO works"

rawc hello go:nope go:
check 2 "ERR_UNKNOWN" "GO for an unknown export -> NBD_REP_ERR_UNKNOWN"
check_like 3 "ACK$" "GO for the right export after that works"

rawc hello opt:7:0000000a6e616d65 go:
check 2 "ERR_INVALID" "GO whose name length runs past the data -> NBD_REP_ERR_INVALID"
check_like 3 "ACK$" "negotiation continues after a malformed GO"

rawc hello "setmeta::base:allocation" sr opt:8:00 "setmeta::base:allocation"
check 2 "ERR_INVALID" "SET_META_CONTEXT before STRUCTURED_REPLY -> NBD_REP_ERR_INVALID"
check 3 "ACK" "STRUCTURED_REPLY -> ACK"
check 4 "ERR_INVALID" "STRUCTURED_REPLY with data -> NBD_REP_ERR_INVALID"
check 5 "META_CONTEXT(1,base:allocation) ACK" "SET_META_CONTEXT after STRUCTURED_REPLY works"

rawc hello listmeta: "listmeta::base:" "listmeta::qemu:" "listmeta::qemu:allocation-depth" \
    "listmeta::nosuch:thing" "listmeta:nope:base:allocation"
check 2 "META_CONTEXT(0,base:allocation) META_CONTEXT(0,qemu:allocation-depth) ACK" \
    "LIST_META_CONTEXT with no queries lists base:allocation and qemu:allocation-depth"
check 3 "META_CONTEXT(0,base:allocation) ACK" "LIST_META_CONTEXT 'base:' lists base:allocation"
check 4 "META_CONTEXT(0,qemu:allocation-depth) ACK" "LIST_META_CONTEXT 'qemu:' lists qemu:allocation-depth"
check 5 "META_CONTEXT(0,qemu:allocation-depth) ACK" "LIST_META_CONTEXT of one full name"
check 6 "ACK" "LIST_META_CONTEXT of an unknown context: just ACK"
check 7 "ERR_UNKNOWN" "LIST_META_CONTEXT for an unknown export -> NBD_REP_ERR_UNKNOWN"

rawc hello sr "setmeta::nosuch:thing" go: bs:0:64k
check 3 "ACK" "SET_META_CONTEXT of an unknown context selects nothing (just ACK)"
check 5 "error=EINVAL chunks=error(EINVAL)" "BLOCK_STATUS with no context selected -> EINVAL"

rawc hello sr go::3
check 3 "INFO_EXPORT(size=$SIZE,flags=0xded) INFO_BLOCK_SIZE(min=1,pref=65536,max=33554432) ACK" \
    "GO with NBD_INFO_BLOCK_SIZE: min 1, preferred 64 KiB, max 32 MiB; DF offered with structured replies"

# EXPORT_NAME (old clients): 8-byte size, 16-bit flags, 124 zero bytes unless
# both sides said NO_ZEROES.
rawc greeting cflags:1 exportname: read:0:512
check 3 "size=$SIZE flags=0xd6d pad=124 zeros" "EXPORT_NAME without NO_ZEROES: size, flags, 124 zero bytes"
check 4 "error=0 data=0x11*512" "simple-reply READ after EXPORT_NAME"
rawc hello exportname: read:64k:512
check 2 "size=$SIZE flags=0xd6d pad=0 zeros" "EXPORT_NAME with NO_ZEROES: no padding"
check 3 "error=0 data=0x00*512" "READ after EXPORT_NAME with NO_ZEROES"
rawc hello sr exportname: read:0:512 read:0:512:df
check 3 "size=$SIZE flags=0xd6d pad=0 zeros" "EXPORT_NAME after STRUCTURED_REPLY: no DF flag (simple replies)"
check 4 "error=0 data=0x11*512" "EXPORT_NAME after STRUCTURED_REPLY: reads get simple replies"
check 5 "error=EINVAL" "EXPORT_NAME after STRUCTURED_REPLY: DF -> EINVAL"
rawc hello exportname:nope eof:3
check_like 2 "^eof" "EXPORT_NAME with an unknown name: the server hangs up"

rawc hello abort
check 2 "ACK eof" "ABORT -> ACK, then the server closes"

rawc greeting cflags:0x10 eof:3
check_like 3 "^eof" "unknown client flags: the server hangs up"
rawc greeting cflags:0 eof:3
check_like 3 "^eof" "a client without FIXED_NEWSTYLE: the server hangs up"

# ---- transmission ----------------------------------------------------------------

rawc "${SGO[@]}" read:$((SIZE - 512)):512 read:$((SIZE - 256)):512 read:$((SIZE)):1 \
    read:0xffffffffffffff00:512 read:0:512
check 5 "error=0 chunks=hole@$((SIZE - 512))+512 data=0x00*512" "READ of the last 512 bytes works"
check 6 "error=EINVAL chunks=error(EINVAL)" "READ across the end -> EINVAL (structured error chunk)"
check 7 "error=EINVAL chunks=error(EINVAL)" "READ at the end -> EINVAL"
check 8 "error=EINVAL chunks=error(EINVAL)" "READ at an offset that overflows -> EINVAL"
check 9 "error=0 chunks=data@0+512 data=0x11*512" "the connection works after the errors"

rawc hello go: read:$((SIZE - 256)):512 write:$((SIZE - 256)):512:0x99 write:$((SIZE)):4096:0x99 \
    read:$((SIZE - 256)):256 read:0:512
check 3 "error=EINVAL" "simple replies: READ past the end -> EINVAL"
check 4 "error=ENOSPC" "WRITE across the end -> ENOSPC"
check 5 "error=ENOSPC" "WRITE at the end -> ENOSPC"
check 6 "error=0 data=0x00*256" "a refused WRITE's payload is consumed: next request parses; nothing written"
check 7 "error=0 data=0x11*512" "the connection works after refused writes"

rawc "${SGO[@]}" cmd:9:0:512 cmd:200:0:0 cmd:0:0:512:0x80 cmd:1:0:512:0x80:512 cmd:4:0:512:0x4 \
    cmd:3:0:0:0x2 read:0:512
check 5 "error=EINVAL" "unknown command type 9 -> EINVAL"
check 6 "error=EINVAL" "unknown command type 200 -> EINVAL"
check 7 "error=EINVAL chunks=error(EINVAL)" "READ with an unknown flag (0x80) -> EINVAL"
check 8 "error=EINVAL" "WRITE with an unknown flag -> EINVAL, its payload skipped"
check 9 "error=EINVAL" "TRIM with DF (a READ-only flag) -> EINVAL"
check 10 "error=EINVAL" "FLUSH with NO_HOLE -> EINVAL"
check 11 "error=0 chunks=data@0+512 data=0x11*512" "the connection works after the bad requests"

rawc hello go: read:0:512:df read:0:512
check 3 "error=EINVAL" "READ with DF without structured replies -> EINVAL"
check 4 "error=0 data=0x11*512" "the connection works afterwards"

rawc hello sr go: bs:0:64k read:0:16
check 4 "error=EINVAL chunks=error(EINVAL)" "BLOCK_STATUS without SET_META_CONTEXT -> EINVAL"
check 5 "error=0 chunks=data@0+16 data=0x11*16" "the connection works afterwards"
rawc hello go: bs:0:64k read:0:16
check 3 "error=EINVAL" "BLOCK_STATUS without structured replies -> EINVAL"

# Map: 0 data, 64k hole, 128k zero cluster, 192k..1M hole, 1M data, then holes.
rawc "${SGO[@]}" bs:0:2M bs:0:2M:req_one bs:64k:2M:req_one bs:$((SIZE - 64 * KiB)):128k \
    bs:0:2M:fua
check 5 "error=0 chunks=base:allocation=[65536/0,983040/3,65536/0,983040/3],qemu:allocation-depth=[65536/1,65536/0,65536/1,851968/0,65536/1,983040/0]" \
    "BLOCK_STATUS: both contexts, descriptors match the image"
check 6 "error=0 chunks=base:allocation=[65536/0],qemu:allocation-depth=[65536/1]" \
    "BLOCK_STATUS with REQ_ONE: exactly one descriptor per context"
check_like 7 '^error=0 chunks=base:allocation=\[[0-9]+/3\],qemu:allocation-depth=\[65536/0\]$' \
    "BLOCK_STATUS with REQ_ONE from a hole: one descriptor per context, within the request"
check 8 "error=EINVAL chunks=error(EINVAL)" "BLOCK_STATUS past the end -> EINVAL"
check_like 9 "^error=0 " "BLOCK_STATUS with FUA is accepted (FUA is valid on every command)"

rawc "${SGO[@]}" read:64k:64k read:0:64k read:32k:64k read:60k:12k read:60k:12k:df \
    read:64k:64k:df read:1M:4k:fua
check 5 "error=0 chunks=hole@65536+65536 data=0x00*65536" "structured READ of a hole: one OFFSET_HOLE chunk (DONE)"
check 6 "error=0 chunks=data@0+65536 data=0x11*65536" "structured READ of data: one OFFSET_DATA chunk (DONE)"
check 7 "error=0 chunks=data@32768+32768,hole@65536+32768 data=0x11*32768,0x00*32768" \
    "structured READ of data then hole: a data chunk, then a hole chunk with DONE"
check 8 "error=0 chunks=data@61440+4096,hole@65536+8192 data=0x11*4096,0x00*8192" \
    "structured READ over data and a hole: chunks cover the request exactly"
check 9 "error=0 chunks=data@61440+12288 data=0x11*4096,0x00*8192" \
    "READ with DF: one data chunk with the zeros in it"
check 10 "error=0 chunks=data@65536+65536 data=0x00*65536" "READ of a hole with DF: one data chunk"
check 11 "error=0 chunks=data@1048576+4096 data=0x22*4096" "READ with FUA is accepted"

rawc "${SGO[@]}" read:0:33M:df read:0:33M read:0:16
check 5 "error=EOVERFLOW chunks=error(EOVERFLOW)" "READ with DF over 32 MiB -> EOVERFLOW"
check 6 "error=EINVAL chunks=error(EINVAL)" "READ over 32 MiB -> EINVAL"
check 7 "error=0 chunks=data@0+16 data=0x11*16" "the connection works afterwards"

# WRITE_ZEROES on part of the data cluster at 1 MiB.
rawc "${SGO[@]}" zero:$((MiB + 4096)):4096:fast_zero read:$((MiB)):12288 \
    zero:$((MiB + 8192)):4096:no_hole read:$((MiB + 8192)):4096 bs:$((MiB)):64k \
    zero:$((MiB + 16384)):4096:no_hole,fast_zero zero:4M:1M zero:4M:1M:fast_zero \
    read:4M:1M bs:4M:1M zero:8M:64k:no_hole bs:8M:64k read:$((8 * MiB)):64k
r=$(resn 5)
if [ "$r" = "error=0" ]; then
    pass "WRITE_ZEROES FAST_ZERO on part of a data cluster -> success (or ENOTSUP)"
    check 6 "error=0 chunks=data@1048576+12288 data=0x22*4096,0x00*4096,0x22*4096" \
        "WRITE_ZEROES FAST_ZERO succeeded: the range reads zeros, the rest of the cluster is intact"
else
    check 5 "error=ENOTSUP" "WRITE_ZEROES FAST_ZERO on part of a data cluster -> ENOTSUP or success"
    skip "WRITE_ZEROES FAST_ZERO zeros read back" "the server said ENOTSUP"
fi
check 7 "error=0" "WRITE_ZEROES NO_HOLE on part of a data cluster"
check_like 8 "^error=0 .*data=0x00\*4096$" "WRITE_ZEROES NO_HOLE: the range reads zeros"
check 9 "error=0 chunks=base:allocation=[65536/0],qemu:allocation-depth=[65536/1]" \
    "WRITE_ZEROES NO_HOLE inside a data cluster: still data"
check_like 10 "^error=(ENOTSUP|0)$" "WRITE_ZEROES NO_HOLE|FAST_ZERO -> ENOTSUP (or success)"
check 11 "error=0" "WRITE_ZEROES of unallocated whole clusters"
check 12 "error=0" "WRITE_ZEROES FAST_ZERO of whole clusters succeeds"
check 13 "error=0 chunks=hole@4194304+1048576 data=0x00*1048576" "whole-cluster zeroes read back as a hole chunk"
check 14 "error=0 chunks=base:allocation=[1048576/3],qemu:allocation-depth=[1048576/1]" \
    "whole-cluster zeroes: hole+zero, allocated locally (zero clusters)"
check 15 "error=0" "WRITE_ZEROES NO_HOLE of a whole unallocated cluster"
check 16 "error=0 chunks=base:allocation=[65536/0],qemu:allocation-depth=[65536/1]" \
    "WRITE_ZEROES NO_HOLE allocates: BLOCK_STATUS says data"
check 17 "error=0 chunks=data@8388608+65536 data=0x00*65536" "WRITE_ZEROES NO_HOLE range reads zeros (as data)"
run nbdinfo --map "nbd+unix:///?socket=$SOCK"
tap_like "$(grep -E '^ *8388608 ' "$OUT")" '^ *8388608 +65536 +0 +data' \
    "nbdinfo --map shows the NO_HOLE range as data"

rawc "${SGO[@]}" write:2M:4096:0x33:fua read:2M:4096 flush flush:fua cache:0:1M cache:0:1M:fua \
    cache:$((SIZE)):512 trim:2M:64k trim:3M:64k:fua read:2M:4096 trim:$((SIZE)):512
check 5 "error=0" "WRITE with FUA"
check 6 "error=0 chunks=data@2097152+4096 data=0x33*4096" "the FUA write reads back"
check 7 "error=0" "FLUSH"
check 8 "error=0" "FLUSH with FUA is accepted (FUA is valid on every command)"
check 9 "error=0" "CACHE"
check 10 "error=0" "CACHE with FUA is accepted"
check 11 "error=EINVAL" "CACHE past the end -> EINVAL"
check 12 "error=0" "TRIM"
check 13 "error=0" "TRIM with FUA"
check_like 14 "^error=0 " "READ after TRIM works"
check_like 15 "^error=(EINVAL|ENOSPC)$" "TRIM past the end -> EINVAL or ENOSPC"

# The largest payload, and one over it.
rawc "${SGO[@]}" write:16M:32M:0x5a read:16M:32M write:16M:33M:0x66 read:16M:16 read:$((48 * MiB - 16)):16 \
    zero:16M:33M read:16M:16
check 5 "error=0" "a 32 MiB WRITE works"
check 6 "error=0 chunks=data@16777216+33554432 data=0x5a*33554432" "a 32 MiB READ returns it"
check 7 "error=EINVAL" "a 33 MiB WRITE -> EINVAL"
check 8 "error=0 chunks=data@16777216+16 data=0x5a*16" \
    "after the 33 MiB WRITE the connection works (payload skipped, nothing written)"
check 9 "error=0 chunks=data@50331632+16 data=0x5a*16" "the 32 MiB write's last bytes are there"
check 10 "error=0" "WRITE_ZEROES of 33 MiB (no payload) is allowed"
check_like 11 "^error=0 .* data=0x00\*16$" "it reads back as zeros"

# Zero-length requests: every content chunk must describe at least one byte
# (an OFFSET_DATA chunk's length is at least 9), so a 0-byte structured READ
# is answered with a NONE chunk (or an error), never an empty data chunk.
rawc "${SGO[@]}" read:0:0 write:0:0:1 zero:0:0 trim:0:0 cache:0:0 read:0:16
check_like 5 "^error=[A-Z0-9]+ chunks=(none|error\([A-Z]+\))( data=empty)?$" \
    "structured READ of 0 bytes: no empty OFFSET_DATA chunk (NONE or an error)"
check 6 "error=0" "WRITE of 0 bytes succeeds"
check_like 7 "^error=(0|EINVAL)$" "WRITE_ZEROES of 0 bytes: success or EINVAL"
check_like 8 "^error=(0|EINVAL)$" "TRIM of 0 bytes: success or EINVAL"
check_like 9 "^error=(0|EINVAL)$" "CACHE of 0 bytes: success or EINVAL"
check 10 "error=0 chunks=data@0+16 data=0x11*16" "the connection works after zero-length requests"

rawc hello go: pipeline:32:64k read:0:16
check 3 "replies=32 cookies=ok" "32 pipelined READs: 32 replies with the right cookies"
check 4 "error=0 data=0x11*16" "the connection works after the pipeline"

rawc "${SGO[@]}" read:0:16 disc
check 6 "eof" "DISC: the server closes the connection"

# A read-only export.
SOCK=$T/ro.sock
start_server ro "$SOCK" -t -r p-ro.qed
ok $? "qed serve -r starts" "$(cat "$T/ro.err")"
rawc hello sr go: write:0:512:1 trim:0:64k zero:0:64k flush read:0:512 write:$((SIZE)):512:1
check_like 3 "^INFO_EXPORT\(size=$SIZE,flags=0xdef\) ACK$" "read-only export: READ_ONLY in the transmission flags"
check 4 "error=EPERM" "read-only export: WRITE -> EPERM"
check 5 "error=EPERM" "read-only export: TRIM -> EPERM"
check 6 "error=EPERM" "read-only export: WRITE_ZEROES -> EPERM"
check 7 "error=0" "read-only export: FLUSH is fine"
check 8 "error=0 chunks=data@0+512 data=0x11*512" "read-only export: READ works"
check_like 9 "^error=(EPERM|ENOSPC)$" "read-only export: WRITE past the end -> EPERM or ENOSPC"
stop_server "$SRV_PID"
tap_is "$SRV_RC" 0 "read-only server exits 0 on SIGTERM"

# A named export.
SOCK=$T/named.sock
start_server named "$SOCK" -t -x disk1 p-named.qed
ok $? "qed serve -x disk1 starts" "$(cat "$T/named.err")"
rawc hello list info: info:disk1:1 go:disk1
check 2 "SERVER(disk1) ACK" "LIST names the export"
check 3 "ERR_UNKNOWN" "INFO for the empty name on a named export -> ERR_UNKNOWN"
check 4 "INFO_EXPORT(size=$SIZE,flags=0xd6d) INFO_NAME(disk1) ACK" "INFO for disk1 with INFO_NAME"
check_like 5 "ACK$" "GO disk1"
stop_server "$SRV_PID"

SOCK=$T/p.sock
stop_server "${_srv_pids[0]}"
tap_is "$SRV_RC" 0 "the server exits 0 on SIGTERM after all of that"
tap_is "$(( $(peek_le p.qed "$HDR_FEATURES" 8) & 2 ))" 0 "the image is closed clean (NEED_CHECK clear)"
tap_cmd "qemu-img check finds p.qed clean" "${TESTS_DIR:-$_lib_dir/..}/qemu-check-clean" p.qed

done_testing
