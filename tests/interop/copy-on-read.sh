#!/bin/bash
# SPDX-License-Identifier: MIT
# Copy-on-read (QED_OPEN_COPY_ON_READ; qed io -C, qed convert / serve /
# mount --copy-on-read): after a full read through the overlay it holds
# everything itself — with its backing file removed (rebase -u -b "") it
# reads exactly as before, qemu-img check finds nothing — zeros of the
# backing chain became zero clusters, not data; a base behind http:// is
# copied the same way; a read-only open refuses the mode.
. "$(dirname "$0")/lib.sh"
. "$_lib_dir/nbd-tls-common.bash"
. "$_lib_dir/http-server.bash"
. "$_lib_dir/nbd-server.bash"
. "$_lib_dir/mount-common.bash"
# nginx, qed serve and qed mount all stopped on exit.
trap '_http_stop; _kill_all; _mount_cleanup' EXIT
require_qed
require_cmd qemu-img qemu-io nginx python3

# base.qed: 8 MiB of 64 KiB clusters — data, a zero cluster, a hole, data
# past a partial cluster; top.qed over it with one cluster of its own.
make_chain() { # DIR [BACKING-NAME]
    local d=$1
    mkdir -p "$d"
    "$QED" create -q -f qed "$d/base.qed" 8M
    "$QED" io -c "write -P 0x11 0 3M" -c "write -P 0x22 $((5 * MiB + 1000)) 100k" \
        -c "write -z 6M 64k" -c "write -P 0x44 7M 64k" "$d/base.qed" >/dev/null
    "$QED" create -q -f qed -b "${2:-base.qed}" -F qed "$d/top.qed"
    "$QED" io -c "write -P 0x33 1M 4k" "$d/top.qed" >/dev/null
}

# independent NAME TOP REF — TOP, its backing file dropped, reads as REF.
independent() {
    local name=$1 top=$2 ref=$3
    run "$QED" rebase -u -b "" "$top"
    ok "$RC" "$name: the backing file dropped (rebase -u -b '')" "$(cat "$ERR")"
    run qemu-img convert -O raw "$top" "$top.alone.raw"
    ok "$RC" "$name: qemu-img reads it alone" "$(cat "$ERR")"
    same_raw "$name: it reads as the chain did" "$top.alone.raw" "$ref"
    qemu_check "$name: qemu-img check finds nothing" "$top"
}

# ---- qed io -C, local chain ------------------------------------------------------
make_chain io
qemu-img convert -O raw io/top.qed io.ref.raw
run "$QED" io -C -c "read 0 8M" io/top.qed
ok "$RC" "qed io -C: a full read" "$(cat "$ERR")"
tap_is "$(qemu-img map --output=json io/top.qed | grep -c '"depth": 1')" 0 \
    "afterwards nothing is read from the backing file (qemu-img map: no depth 1)"
tap_like "$(qemu-img map --output=json io/top.qed | tr -d '\n')" \
    '"start": 3145728, "length": 2097152, "depth": 0, "present": true, "zero": true, "data": false' \
    "the backing chain's hole became zero clusters, not data"
tap_is "$(( $(file_size io/top.qed) < 4 * MiB ))" 1 "the overlay holds only the data ($(file_size io/top.qed) bytes)"
independent "io -C" io/top.qed io.ref.raw

# Partial reads: whole clusters are copied (the rest of each from the backing
# file); a part-cluster of zeros is left for later.
make_chain part
qemu-img convert -O raw part/top.qed part.ref.raw
run "$QED" io -C -c "read 4096 512" -c "read $((7 * MiB + 100)) 10" part/top.qed
ok "$RC" "qed io -C: two small reads" "$(cat "$ERR")"
tap_like "$(qemu-img map --output=json part/top.qed | tr -d '\n')" \
    '"start": 0, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true.*"start": 7340032, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true' \
    "each copied its whole cluster"
run qemu-img convert -O raw part/top.qed part.raw
same_raw "and the image reads as before" part.raw part.ref.raw

run "$QED" io -r -C -c "read 0 512" io/top.qed
tap_like "$RC $(cat "$ERR")" '^1 .*-C .*-r' "qed io -C -r is refused"

# ---- qed convert --copy-on-read, base behind http:// --------------------------------
start_nginx
make_chain "$T/www"
make_chain http "$HTTP_URL/base.qed"
qemu-img convert -O raw "$T/www/top.qed" http.ref.raw
run "$QED" convert --copy-on-read -O raw http/top.qed http.raw
ok "$RC" "qed convert --copy-on-read of an overlay on an http:// base" "$(cat "$ERR")"
same_raw "the copy is right" http.raw http.ref.raw
rm "$T/www/base.qed"
run "$QED" convert -O raw http/top.qed http.again.raw
tap_like "$RC $(cat "$ERR")" '^1 .*base.qed' "the base is gone from the server (opening the chain fails)"
independent "convert --copy-on-read, http base" http/top.qed http.ref.raw
run "$QED" convert -U --copy-on-read -O raw io/top.qed x.raw
tap_like "$RC $(cat "$ERR")" '^1 .*--copy-on-read .*-U' "convert --copy-on-read -U is refused"

# ---- qed serve --copy-on-read ----------------------------------------------------
make_chain serve
qemu-img convert -O raw serve/top.qed serve.ref.raw
if start_server srv "$T/srv.sock" --copy-on-read serve/top.qed; then
    run qemu-img convert -f raw -O raw "nbd+unix:///?socket=$T/srv.sock" serve.raw
    ok "$RC" "a client reads the whole export of qed serve --copy-on-read" "$(cat "$ERR")"
    same_raw "it reads right" serve.raw serve.ref.raw
    stop_server "$SRV_PID"
    tap_is "$SRV_RC" 0 "qed serve exits 0"
    independent "serve --copy-on-read" serve/top.qed serve.ref.raw
else
    fail "qed serve --copy-on-read starts" "$(cat "$T/srv.err")"
fi
run "$QED" serve -r --copy-on-read -k "$T/x.sock" io/top.qed
tap_like "$RC $(cat "$ERR")" '^1 .*--copy-on-read .*-r' "qed serve --copy-on-read -r is refused"

# ---- qed mount --copy-on-read ----------------------------------------------------
make_chain mnt
qemu-img convert -O raw mnt/top.qed mnt.ref.raw
: >mnt.file
if ! command -v fusermount3 >/dev/null || [ ! -w /dev/fuse ]; then
    skip "qed mount --copy-on-read" "no usable FUSE here (fusermount3, /dev/fuse)"
elif start_mount mnt --copy-on-read mnt/top.qed "$T/mnt.file"; then
    run cp mnt.file mnt.raw
    ok "$RC" "a full read of the file qed mount --copy-on-read shows" "$(cat "$ERR")"
    stop_mount "$MNT_PID" "$T/mnt.file"
    tap_is "$MNT_RC" 0 "qed mount exits 0"
    same_raw "it reads right" mnt.raw mnt.ref.raw
    independent "mount --copy-on-read" mnt/top.qed mnt.ref.raw
else
    skip "qed mount --copy-on-read" "FUSE mounts fail here: $(head -c 200 "$T/mnt.err")"
fi

# ---- refusals ------------------------------------------------------------------------
run "$QED" mount -r --copy-on-read io/top.qed "$T/nowhere"
tap_like "$RC $(cat "$ERR")" '^1 .*--copy-on-read .*-r' "qed mount --copy-on-read -r is refused"

done_testing
