#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed serve` over TLS with real clients: nbdinfo and nbdcopy (libnbd,
# nbds:// and nbds+unix:// URIs with tls-certificates=, tls-psk-file= and
# tls-username=), qemu-img and qemu-io (tls-creds-x509 / tls-creds-psk with
# --image-opts) and fio's nbd engine (libnbd reads its certificates from
# $HOME/.pki/libnbd: fio does not let URIs name local files).  Data written
# over TLS reads back over TLS and from the file once the server stops.
. "$(dirname "$0")/lib.sh"
require_cmd python3 nbdinfo nbdcopy qemu-img qemu-io
require_qed
. "$_lib_dir/nbd-tls-common.bash"
tls_setup

TAP_TIMEOUT=30
X509Q="tls-certificates=$PKI/client"
PSKQ="tls-psk-file=$PKI/keys.psk"

"$QED" create -q -f qed img.qed 64M >/dev/null 2>&1 ||
    "$QED" create -f qed img.qed 64M >/dev/null || bail_out "qed create failed"
head -c $((4 * MiB)) /dev/urandom >data.raw

# ---- X.509 over a Unix socket ------------------------------------------------
SOCK=$T/x.sock
start_server x "$SOCK" -t --tls=require --tls-certificates="$PKI/server" img.qed ||
    bail_out "qed serve --tls=require did not start: $(cat "$T/x.err")"
run nbdinfo --size "nbds+unix:///?socket=$SOCK&$X509Q"
tap_is "$RC:$(cat "$OUT")" "0:$((64 * MiB))" "nbdinfo nbds+unix:// with tls-certificates= sees the export"
run nbdinfo "nbds+unix:///?socket=$SOCK&$X509Q"
tap_like "$(cat "$OUT")" "newstyle-fixed with TLS" "nbdinfo reports the connection as TLS"
tap_cmd "nbdcopy writes 4 MiB at offset 0 over TLS (X.509)" \
    nbdcopy data.raw "nbds+unix:///?socket=$SOCK&$X509Q"
tap_cmd "nbdcopy reads the export back over TLS" \
    nbdcopy "nbds+unix:///?socket=$SOCK&$X509Q" back.raw
run cmp -n $((4 * MiB)) data.raw back.raw
ok $RC "what nbdcopy wrote over TLS reads back the same" "$(cat "$OUT" "$ERR")"
QX=(--object "tls-creds-x509,id=tls0,endpoint=client,dir=$PKI/client" --image-opts)
QOPTS="driver=nbd,path=$SOCK,tls-creds=tls0,tls-hostname=localhost"
run qemu-io "${QX[@]}" "$QOPTS" -c "read -P 0x00 8M 1M" -c "write -P 0x7e 8M 1M" -c "read -P 0x7e 8M 1M"
tap_like "$RC:$(tr '\n' ' ' <"$OUT")" "^0:.*wrote 1048576/1048576.*read 1048576/1048576 bytes at offset 8388608" \
    "qemu-io with tls-creds-x509 writes and reads back 1 MiB"
run qemu-img convert -O raw "${QX[@]}" "$QOPTS" q.raw
ok $RC "qemu-img convert out of the export with tls-creds-x509" "$(cat "$ERR")"
run cmp -n $((4 * MiB)) data.raw q.raw
ok $RC "qemu-img's copy has what nbdcopy wrote" "$(cat "$OUT")"
run cmp -i $((8 * MiB)):0 -n $MiB q.raw <(head -c $MiB /dev/zero | tr '\0' '~')
ok $RC "qemu-img's copy has what qemu-io wrote" "$(cat "$OUT")"
if command -v fio >/dev/null; then
    mkdir -p home/.pki && cp -r "$PKI/client" home/.pki/libnbd
    run env HOME="$T/home" fio --name=tls --ioengine=nbd --uri="nbds+unix:///?socket=$SOCK" \
        --rw=randrw --bs=4k --size=16M --io_size=2M --verify=crc32c --do_verify=1 \
        --offset=16M --output-format=terse
    tap_like "$RC:$(grep '^3;' "$OUT" | cut -d';' -f5)" "^0:0$" "fio's nbd engine over TLS: random writes verify (crc32c)"
else
    skip "fio's nbd engine over TLS" "fio is not installed"
fi
stop_server "$SRV_PID"
tap_is "$SRV_RC" 0 "the TLS server exits 0 on SIGTERM"

# ---- PSK over TCP ---------------------------------------------------------------
PORT=$(free_port)
start_server p "" -t --tls=require --tls-psk="$PKI/keys.psk" -p "$PORT" img.qed
wait_port "$PORT" || bail_out "qed serve -p $PORT --tls-psk did not listen: $(cat "$T/p.err")"
run nbdinfo --size "nbds://alice@127.0.0.1:$PORT/?$PSKQ"
tap_is "$RC:$(cat "$OUT")" "0:$((64 * MiB))" "nbdinfo nbds:// as PSK user alice (user in the URI)"
run nbdinfo --size "nbds://bob@127.0.0.1:$PORT/?$PSKQ"
tap_is "$RC:$(cat "$OUT")" "0:$((64 * MiB))" "nbdinfo nbds:// as PSK user bob"
# libnbd 1.14 looks the login name up (getlogin_r) when the URI names no
# user, even with tls-username=; without a login session that fails.
run nbdinfo --size "nbds://127.0.0.1:$PORT/?$PSKQ&tls-username=bob"
if grep -q getlogin "$ERR"; then
    skip "nbdinfo with tls-username=bob" "libnbd calls getlogin_r first, and there is no login here"
else
    tap_is "$RC:$(cat "$OUT")" "0:$((64 * MiB))" "nbdinfo with tls-username=bob"
fi
run nbdcopy "nbds://alice@127.0.0.1:$PORT/?$PSKQ" psk.raw
run cmp -n $((4 * MiB)) data.raw psk.raw
ok $RC "nbdcopy over PSK reads what was written over X.509" "$(cat "$OUT" "$ERR")"
mkdir -p pskdir && cp "$PKI/keys.psk" pskdir/keys.psk
QP=(--object "tls-creds-psk,id=tls0,endpoint=client,dir=$T/pskdir,username=alice" --image-opts)
run qemu-io "${QP[@]}" "driver=nbd,host=127.0.0.1,port=$PORT,tls-creds=tls0" \
    -c "write -P 0x3c 12M 256k" -c "read -P 0x3c 12M 256k" -c "read -P 0x7e 8M 4k"
tap_like "$RC:$(tr '\n' ' ' <"$OUT")" "^0:.*wrote 262144/262144.*read 262144/262144.*read 4096/4096" \
    "qemu-io with tls-creds-psk over TCP writes, reads back, sees qemu-io's X.509 write"
stop_server "$SRV_PID"
tap_is "$SRV_RC" 0 "the PSK server exits 0 on SIGTERM"

# ---- after the server: the file has it all ---------------------------------------
run qemu-io -f qed -r -c "read -P 0x7e 8M 1M" -c "read -P 0x3c 12M 256k" img.qed
tap_like "$RC:$(tr '\n' ' ' <"$OUT")" "^0:.*read 1048576/1048576.*read 262144/262144" \
    "the image file holds what the TLS clients wrote"
run qemu-img check -f qed img.qed
ok $RC "qemu-img check: the image is clean after the TLS sessions" "$(cat "$OUT" "$ERR")"
done_testing
