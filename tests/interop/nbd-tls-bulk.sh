#!/bin/bash
# SPDX-License-Identifier: MIT
# Large reads over TLS arrive whole and in order when the client is slow:
# the server gathers records into its send buffer and must keep what does
# not fit for later (socket full) without losing, reordering or repeating a
# byte.  A 48 MiB image of random data is copied with one connection and
# 32 MiB requests into a reader that starts late and reads slowly, and with
# nbdcopy's default four connections; both copies equal the image.
. "$(dirname "$0")/lib.sh"
require_cmd python3 nbdcopy qemu-img md5sum
require_qed
. "$_lib_dir/nbd-tls-common.bash"
tls_setup

TAP_TIMEOUT=60
X509Q="tls-certificates=$PKI/client"
head -c $((48 * MiB)) /dev/urandom >data.raw
"$QED" convert -O qed data.raw img.qed
want=$(md5sum <data.raw | cut -d' ' -f1)

SOCK=$T/b.sock
start_server bulk "$SOCK" -t -r --tls=require --tls-certificates="$PKI/server" img.qed ||
    bail_out "qed serve --tls=require did not start: $(cat "$T/bulk.err")"
URI="nbds+unix:///?socket=$SOCK&$X509Q"

# A reader that waits 2 s, then takes 64 KiB every few milliseconds: the
# server's socket fills and its gathered records wait in the buffer.
slow_md5() {
    python3 -c '
import hashlib, sys, time
time.sleep(2)
h = hashlib.md5()
while True:
    b = sys.stdin.buffer.read(65536)
    if not b:
        break
    h.update(b)
    time.sleep(0.002)
print(h.hexdigest())'
}
got=$(timeout -k 5 "$TAP_TIMEOUT" nbdcopy --connections=1 --request-size=$((32 * MiB)) \
      "$URI" - 2>"$T/slow.err" | slow_md5)
tap_is "$got" "$want" "one connection, 32 MiB requests, a slow reader: the copy equals the image"
got=$(timeout -k 5 "$TAP_TIMEOUT" nbdcopy "$URI" - 2>"$T/fast.err" | md5sum | cut -d' ' -f1)
tap_is "$got" "$want" "nbdcopy's default four connections: the copy equals the image"
stop_server "$SRV_PID"
tap_is "$SRV_RC" 0 "the server exits 0 on SIGTERM"

done_testing
