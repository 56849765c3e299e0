#!/bin/bash
# SPDX-License-Identifier: MIT
# Who `qed serve` over TLS turns away, and how: plaintext clients against
# --tls=require (every option but STARTTLS and ABORT gets ERR_TLS_REQD,
# EXPORT_NAME hangs up), STARTTLS when TLS is off or already on, a wrong PSK,
# an unknown PSK user, a client certificate from another CA or revoked, no
# client certificate with --tls-verify-peer, identities not on --tls-authz,
# TLS 1.0 and 1.1 (by default), and an expired server certificate (the
# client refuses it).  A client turned away learns no export name.
. "$(dirname "$0")/lib.sh"
require_cmd python3 nbdinfo qemu-img
require_qed
. "$_lib_dir/nbd-tls-common.bash"
tls_setup

TAP_TIMEOUT=20
SOCK=$T/r.sock
rawc() { run python3 "$RAW" -t 10 -k "$SOCK" "$@"; }
x509uri() { printf 'nbds+unix:///disk0?socket=%s&tls-certificates=%s' "$SOCK" "$1"; }
pskuri() { printf 'nbds+unix://%s@/disk0?socket=%s&tls-psk-file=%s' "$1" "$SOCK" "$2"; }
# serve ARGS... — a persistent server on $SOCK exporting img.qed.
serve() {
    [ -n "${SRV_PID:-}" ] && stop_server "$SRV_PID"
    start_server r "$SOCK" -t -x disk0 "$@" img.qed ||
        bail_out "qed serve $* did not start: $(cat "$T/r.err")"
}
# refused NAME URI — nbdinfo cannot connect, and says nothing of the export.
refused() {
    run nbdinfo --list "$2"
    if [ "$RC" -ne 0 ] && ! grep -q disk0 "$OUT"; then
        pass "$1"
    else
        fail "$1" "nbdinfo exit $RC" "$(cat "$OUT" "$ERR")"
    fi
}
served() {
    run nbdinfo --size "$2"
    tap_is "$RC:$(cat "$OUT")" "0:$((16 * MiB))" "$1"
}

"$QED" create -f qed img.qed 16M >/dev/null || bail_out "qed create failed"

# More PKI: another CA, a revoked client, an expired server certificate,
# keys that do not match.
make_ca "$PKI/other" "another CA" && mkdir -p "$PKI/stranger" &&
    make_cert "$PKI/other" "$PKI/stranger/client" client client &&
    cp "$PKI/client/ca-cert.pem" "$PKI/stranger/" || bail_out "certtool failed"
mkdir -p "$PKI/revoked" "$PKI/crl" "$PKI/nocert" "$PKI/expired"
make_cert "$PKI/ca" "$PKI/revoked/client" revoked client &&
    cp "$PKI/client/ca-cert.pem" "$PKI/revoked/" && cp "$PKI/client/ca-cert.pem" "$PKI/nocert/" &&
    cp "$PKI/server/"*.pem "$PKI/crl/" &&
    printf 'crl_next_update = 30\ncrl_number = 1\n' >"$PKI/crl.info" &&
    certtool --generate-crl --load-ca-privkey "$PKI/ca/ca-key.pem" \
        --load-ca-certificate "$PKI/ca/ca-cert.pem" \
        --load-certificate "$PKI/revoked/client-cert.pem" \
        --template "$PKI/crl.info" --outfile "$PKI/crl/ca-crl.pem" >/dev/null 2>&1 &&
    make_cert "$PKI/ca" "$PKI/expired/server" localhost server \
        $'activation_date = "2019-01-01 00:00:00"\nexpiration_date = "2020-01-01 00:00:00"' &&
    cp "$PKI/ca/ca-cert.pem" "$PKI/expired/" || bail_out "certtool failed"
sed 's/:.*/:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff/' \
    "$PKI/keys.psk" >"$PKI/wrong.psk"
psktool -u carol -p "$PKI/carol.psk" >/dev/null 2>&1
chmod 600 "$PKI/wrong.psk" "$PKI/carol.psk"

# ---- plaintext against --tls=require --------------------------------------------
serve --tls=require --tls-certificates="$PKI/server" --tls-psk="$PKI/keys.psk"
refused "plaintext nbdinfo against --tls=require is refused" "nbd+unix:///disk0?socket=$SOCK"
run nbdinfo --size "nbd+unix:///disk0?socket=$SOCK"
tap_like "$RC:$(cat "$ERR")" "^1:.*requires TLS" "nbdinfo is told that TLS is required"
rawc hello list info:disk0 go:disk0 sr listmeta:disk0 opt:99 abort
check_like 2 "^ERR_TLS_REQD$" "require: LIST before TLS gets ERR_TLS_REQD (no export names)"
check_like 3 "^ERR_TLS_REQD$" "require: INFO before TLS gets ERR_TLS_REQD"
check_like 4 "^ERR_TLS_REQD$" "require: GO before TLS gets ERR_TLS_REQD"
check_like 5 "^ERR_TLS_REQD$" "require: STRUCTURED_REPLY before TLS gets ERR_TLS_REQD"
check_like 6 "^ERR_TLS_REQD$" "require: LIST_META_CONTEXT before TLS gets ERR_TLS_REQD"
check_like 7 "^ERR_TLS_REQD$" "require: an unknown option before TLS gets ERR_TLS_REQD"
check_like 8 "^ACK (closed|eof)$" "require: ABORT before TLS is still answered"
rawc hello exportname:disk0
check_like 2 "^eof$" "require: EXPORT_NAME before TLS closes the connection"
rawc hello starttls tls:"$PKI/client" list starttls
check_like 3 "^ok TLSv1\.[23]$" "STARTTLS, then the TLS handshake with python's ssl module"
check_like 4 "^SERVER\(disk0\) ACK$" "after TLS, LIST names the export"
check_like 5 "^ERR_INVALID$" "a second STARTTLS gets ERR_INVALID"
rawc hello opt:5:00 list
check_like 2 "^ERR_INVALID$" "STARTTLS with data gets ERR_INVALID"
check_like 3 "^ERR_TLS_REQD$" "and TLS is still required after it"

# ---- PSK ------------------------------------------------------------------------------
served "PSK user alice with the right key is served" "$(pskuri alice "$PKI/keys.psk")"
refused "a wrong PSK is refused" "$(pskuri alice "$PKI/wrong.psk")"
refused "an unknown PSK user is refused" "$(pskuri carol "$PKI/carol.psk")"

# ---- X.509: versions, client certificates -------------------------------------------
rawc hello starttls tls:"$PKI/client":1.1
check_like 3 "^failed" "TLS 1.1 is refused by default"
rawc hello starttls tls:"$PKI/client":1.0
check_like 3 "^failed" "TLS 1.0 is refused by default"
rawc hello starttls tls:"$PKI/client":1.2 list
check_like 3 "^ok TLSv1\.2$" "TLS 1.2 is accepted"
serve --tls=require --tls-certificates="$PKI/server" --tls-priority=NORMAL:+VERS-TLS1.1
rawc hello starttls tls:"$PKI/client":1.1 list
check_like 3 "^ok TLSv1\.1$" "with --tls-priority allowing it, the same TLS 1.1 client is served (control)"

serve --tls=require --tls-certificates="$PKI/server" --tls-verify-peer
served "--tls-verify-peer: a client certificate from the CA is accepted" "$(x509uri "$PKI/client")"
refused "--tls-verify-peer: a client certificate from another CA is refused" "$(x509uri "$PKI/stranger")"
refused "--tls-verify-peer: a client without a certificate is refused" "$(x509uri "$PKI/nocert")"
rawc hello starttls tls:"$PKI/stranger" list
check_like 4 "^(eof|closed|protocol error.*)$" "a client refused after the handshake learns no export name"
serve --tls=require --tls-certificates="$PKI/crl" --tls-verify-peer
served "with ca-crl.pem: a client that is not revoked is accepted" "$(x509uri "$PKI/client")"
refused "with ca-crl.pem: a revoked client certificate is refused" "$(x509uri "$PKI/revoked")"

# ---- allow-list ------------------------------------------------------------------------
serve --tls=require --tls-certificates="$PKI/server" --tls-psk="$PKI/keys.psk" \
    --tls-authz="CN=client,O=libqed tests" --tls-authz=alice
served "--tls-authz: the listed certificate DN is served" "$(x509uri "$PKI/client")"
served "--tls-authz: the listed PSK user is served" "$(pskuri alice "$PKI/keys.psk")"
refused "--tls-authz: a PSK user not on the list is refused" "$(pskuri bob "$PKI/keys.psk")"
refused "--tls-authz: a certificate from the CA but not on the list is refused" "$(x509uri "$PKI/revoked")"
refused "--tls-authz: a client without a certificate is refused" "$(x509uri "$PKI/nocert")"
rawc hello starttls tls:"$PKI/revoked" list
check_like 4 "^(eof|closed|protocol error.*)$" "a client not on the list learns no export name"

# ---- the client's side: an expired server certificate -------------------------------
# (over TCP: libnbd checks the server's certificate only against a host name)
stop_server "$SRV_PID"
PORT=$(free_port)
start_server e "" -t -x disk0 --tls=require --tls-certificates="$PKI/expired" -p "$PORT" img.qed
SRV_PID=$(jobs -p | tail -1)
wait_port "$PORT" || bail_out "qed serve -p $PORT did not listen: $(cat "$T/e.err")"
refused "nbdinfo refuses a server whose certificate expired" \
    "nbds://localhost:$PORT/disk0?tls-certificates=$PKI/client"
tap_like "$(cat "$ERR")" "certificate verification" "nbdinfo says the certificate did not verify"
rawc_tcp() { run python3 "$RAW" -t 10 -p "127.0.0.1:$PORT" "$@"; }
rawc_tcp hello starttls tls:"$PKI/client"
check_like 3 "^failed: CERTIFICATE_VERIFY_FAILED$" "python's ssl refuses the expired server certificate"
stop_server "$SRV_PID"
serve --tls=require --tls-certificates="$PKI/expired"
run qemu-img info --object "tls-creds-x509,id=t0,endpoint=client,dir=$PKI/client" \
    --image-opts "driver=nbd,path=$SOCK,export=disk0,tls-creds=t0,tls-hostname=localhost"
tap_like "$RC:$(cat "$ERR")" "^1:.*(expired|verif|certificate)" "qemu-img refuses a server whose certificate expired"

# ---- --tls=on and --tls=off -------------------------------------------------------------
serve --tls=on --tls-certificates="$PKI/server"
run nbdinfo --size "nbd+unix:///disk0?socket=$SOCK"
tap_is "$RC:$(cat "$OUT")" "0:$((16 * MiB))" "--tls=on: a plaintext client is served"
run nbdinfo --size "nbds+unix:///disk0?socket=$SOCK&tls-certificates=$PKI/client"
tap_is "$RC:$(cat "$OUT")" "0:$((16 * MiB))" "--tls=on: a TLS client is served"
serve
rawc hello starttls list
check_like 2 "^ERR_UNSUP$" "without TLS, STARTTLS gets ERR_UNSUP"
check_like 3 "^SERVER\(disk0\) ACK$" "and negotiation goes on in plaintext"
stop_server "$SRV_PID"
tap_is "$SRV_RC" 0 "the server exits 0 on SIGTERM"
SRV_PID=
done_testing
