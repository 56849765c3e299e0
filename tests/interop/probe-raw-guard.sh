#!/bin/bash
# SPDX-License-Identifier: MIT
# A raw image opened writable with a probed format (serve, io, commit into a
# probed raw base) refuses writes that would make its first sector probe as
# another format, as QEMU does: a guest cannot turn its disk into a QED (or
# qcow2, VMDK...) image whose backing file is a host file.  The open warns
# and names -f raw as the way out; with -f raw every write is allowed.
# Files that carry another format's signature are not read as raw by
# probing either.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io nbdcopy nbdinfo truncate dd cmp od
require_qed
. "$_lib_dir/nbd-server.bash"
TAP_TIMEOUT=20

# sig FILE PRINTF-BYTES [OFFSET] — a 1 MiB file of zeros carrying the bytes.
sig() {
    truncate -s 1M "$1"
    printf "$2" | dd of="$1" bs=1 seek="${3:-0}" conv=notrunc status=none
}
first_sector() { od -An -tx1 -N512 -v "$1" | tr -d ' \n'; }
ZEROS=$(first_sector /dev/zero)

# The host file a guest would like to read.
printf 'host secret\n' > secret.txt
"$QED" create -q -b "$PWD/secret.txt" -F raw evil.qed 1M
sig evil.sector ''
dd if=evil.qed of=evil.sector bs=512 count=1 conv=notrunc status=none

# ---- the signatures: QEMU probes each as a format other than raw ---------------
sig s-qed.img 'QED\x00'
sig s-qcow2.img 'QFI\xfb\x00\x00\x00\x03'
sig s-qcow.img 'QFI\xfb\x00\x00\x00\x01'
sig s-vmdk.img 'KDMV'
sig s-vmdk3.img 'COWD'
sig s-vmdk-text.img '# Disk DescriptorFile\nversion=1\n'
sig s-vpc.img 'conectix'
sig s-vhdx.img 'vhdxfile'
sig s-luks.img 'LUKS\xba\xbe\x00\x01'
sig s-parallels.img 'WithoutFreeSpace\x02'
sig s-vdi.img '\x7f\x10\xda\xbe' 64
sig s-cloop.img '#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n'
for f in s-*.img; do
    name=${f#s-}
    name=${name%.img}
    run qemu-img info "$f"
    if grep -q '^file format: raw' "$OUT"; then
        fail "premise: qemu-img probes $f as something other than raw"
        continue
    fi
    pass "premise: qemu-img probes $f as something other than raw"
    if [ "$name" != qed ]; then
        run "$QED" info "$f"
        fmt=${name%-text}
        fmt=${fmt%3}
        tap_like "$RC $(cat "$ERR")" "^1 qed: $f: the file looks like a $fmt image.*-f raw" \
            "qed info refuses to read $f as raw by probing"
        tap_cmd "qed info -f raw reads $f as raw" "$QED" info -f raw "$f"
    fi
done

# ---- writes through NBD, format probed -----------------------------------------
truncate -s 1M guest.raw
SOCK=$T/g.sock
URI="nbd+unix:///?socket=$SOCK"
start_server probed "$SOCK" -t guest.raw
ok $? "serve guest.raw (format probed) starts"
tap_like "$(cat "$T/probed.err")" "guest.raw: warning: .*probing guessed raw.*-f raw" \
    "serve warns that the format was probed, naming -f raw"
for f in evil.sector s-*.img; do
    run nbdcopy "$f" "$URI"
    tap_is "$RC" 1 "the client's copy of $f into sector 0 fails"
    tap_is "$(first_sector guest.raw)" "$ZEROS" "sector 0 of guest.raw is unchanged after $f"
done
run nbdcopy s-vdi.img "$URI"
tap_like "$(cat "$ERR")" "Operation not permitted" "the client sees EPERM"
stop_server "$SRV_PID"
tap_is "$SRV_RC" 0 "the server stops cleanly"
run qemu-img info guest.raw
tap_like "$(cat "$OUT")" "file format: raw" "guest.raw still probes as raw for QEMU"
start_server again "$SOCK" -r guest.raw
tap_cmd "the next probing open still serves raw: sector 0 reads as zeros" \
    qemu-io -r -f raw -c 'read -P 0 0 512' "$URI"
stop_server "$SRV_PID"

# Ordinary data in sector 0 (a partition table) is written as before.
sig mbr.img '\xeb\x63\x90' 0
sig mbr.img '\x55\xaa' 510
start_server mbr "$SOCK" -t guest.raw
tap_cmd "a boot sector is written into a probed raw image" nbdcopy mbr.img "$URI"
stop_server "$SRV_PID"
cmp -s mbr.img guest.raw; ok $? "guest.raw holds the boot sector"

# With -f raw the user said what it is: everything may be written.
truncate -s 0 guest.raw
truncate -s 1M guest.raw
start_server explicit "$SOCK" -f raw -t guest.raw
tap_is "$(cat "$T/explicit.err")" "" "serve -f raw gives no warning"
tap_cmd "with -f raw the QED header is written" nbdcopy evil.sector "$URI"
stop_server "$SRV_PID"
cmp -s evil.sector guest.raw; ok $? "guest.raw holds exactly what was written"

# ---- qed io: a magic built from pieces, and zeroes completing one --------------
truncate -s 1M zeros.raw
run "$QED" io -c 'write -P 0x51 0 1' -c 'write -P 0x45 1 1' -c 'write -P 0x44 2 1' zeros.raw
tap_like "$RC $(tail -n1 "$ERR")" "^1 .*refused: .*would make it probe as qed" \
    "io: Q, E, then D before a zero byte (QED\\0) is refused"
tap_is "$(od -An -tx1 -N4 zeros.raw | tr -d ' ')" 51450000 "only Q and E were written"
truncate -s 1M pieces.raw
run "$QED" io -c 'write -P 0x01 3 1' -c 'write -P 0x51 0 1' -c 'write -P 0x45 1 1' \
    -c 'write -P 0x44 2 1' pieces.raw
tap_is "$RC" 0 "io: the bytes QED\\1 one at a time are allowed"
tap_is "$(grep -c 'warning: .*probing guessed raw' "$ERR")" 1 "io warns once"
tap_like "$(cat "$ERR")" "^qed: pieces.raw: warning: " "the warning names the file"
run "$QED" io -c 'write -P 0x00 3 1' pieces.raw
tap_like "$RC $(tail -n1 "$ERR")" "^1 .*refused: .*would make it probe as qed.*-f raw" \
    "io: the byte completing the QED magic is refused with a reason"
tap_is "$(od -An -tx1 -N4 pieces.raw | tr -d ' ')" 51454401 "the first four bytes are QED\\x01"
run "$QED" io -c 'write -z 3 1' pieces.raw
tap_like "$RC $(tail -n1 "$ERR")" "^1 .*would make it probe as qed" \
    "io: write-zeroes completing the magic is refused too"
run "$QED" io -c 'discard 3 1' pieces.raw
tap_like "$RC $(tail -n1 "$ERR")" "^1 .*would make it probe as qed" \
    "io: a discard that could leave the magic is refused"
tap_cmd "io: with -f raw the byte is written" "$QED" io -f raw -c 'write -P 0 3 1' pieces.raw
run qemu-img info pieces.raw
tap_like "$(cat "$OUT")$(cat "$ERR")" "QED" "premise: QEMU now probes it as QED"
run "$QED" io -r -c 'read 0 512' pieces.raw
tap_is "$RC" 1 "a probing open now takes it as QED (and finds it invalid)"

# ---- commit into a probed raw base ---------------------------------------------
truncate -s 1M base.raw
"$QED" create -q -b base.raw top.qed
SOCK2=$T/t.sock
start_server top "$SOCK2" -t top.qed
tap_cmd "the overlay takes the QED header as data" nbdcopy evil.sector "nbd+unix:///?socket=$SOCK2"
stop_server "$SRV_PID"
cp top.qed top2.qed
run qemu-img commit top2.qed
tap_is "$RC" 1 "premise: qemu-img commit into the probed raw base is refused"
run "$QED" commit top.qed
tap_like "$RC $(tail -n1 "$ERR")" "^1 qed: .*would make it probe as qed" \
    "qed commit into the probed raw base is refused"
tap_is "$(first_sector base.raw)" "$ZEROS" "the base's first sector is unchanged"

done_testing
