# SPDX-License-Identifier: MIT
# Sourced by the TLS test scripts (and bench/nbd-tls.sh): makes throwaway
# X.509 certificates and PSK keys with certtool and psktool (gnutls-bin)
# into a directory the caller owns.  Nothing here is ever committed.

# make_ca DIR NAME — DIR/ca-key.pem and DIR/ca-cert.pem (a CA named NAME).
make_ca() {
    local dir=$1 name=$2
    mkdir -p "$dir"
    printf 'cn = %s\nca\ncert_signing_key\nexpiration_days = 30\n' "$name" >"$dir/ca.info"
    certtool --generate-privkey --key-type=ecdsa --outfile "$dir/ca-key.pem" 2>/dev/null &&
    certtool --generate-self-signed --load-privkey "$dir/ca-key.pem" \
        --template "$dir/ca.info" --outfile "$dir/ca-cert.pem" >/dev/null 2>&1
}
# make_cert CADIR OUT-PREFIX CN server|client [EXTRA-TEMPLATE-LINE] —
# OUT-PREFIX-key.pem and OUT-PREFIX-cert.pem signed by the CA in CADIR.
make_cert() {
    local ca=$1 out=$2 cn=$3 role=$4 extra=${5:-expiration_days = 30}
    {
        printf 'cn = %s\norganization = libqed tests\n' "$cn"
        if [ "$role" = server ]; then
            printf 'dns_name = localhost\nip_address = 127.0.0.1\ntls_www_server\n'
        else
            printf 'tls_www_client\n'
        fi
        printf 'encryption_key\nsigning_key\n%s\n' "$extra"
    } >"$out.info"
    certtool --generate-privkey --key-type=ecdsa --outfile "$out-key.pem" 2>/dev/null &&
    certtool --generate-certificate --load-privkey "$out-key.pem" \
        --load-ca-certificate "$ca/ca-cert.pem" --load-ca-privkey "$ca/ca-key.pem" \
        --template "$out.info" --outfile "$out-cert.pem" >/dev/null 2>&1 &&
    chmod 600 "$out-key.pem"
}
# make_tls_dirs DIR — DIR/ca (the CA), DIR/server (what --tls-certificates
# reads), DIR/client (ca-cert.pem, client-cert.pem, client-key.pem: what
# nbdinfo and qemu read; subject "CN=client,O=libqed tests").
make_tls_dirs() {
    local d=$1
    make_ca "$d/ca" "libqed test CA" &&
    mkdir -p "$d/server" "$d/client" &&
    make_cert "$d/ca" "$d/server/server" localhost server &&
    make_cert "$d/ca" "$d/client/client" client client &&
    cp "$d/ca/ca-cert.pem" "$d/server/ca-cert.pem" &&
    cp "$d/ca/ca-cert.pem" "$d/client/ca-cert.pem"
}
# make_psk FILE USER... — psktool keys for each USER.
make_psk() {
    local file=$1 u
    shift
    for u in "$@"; do
        psktool -u "$u" -p "$file" >/dev/null 2>&1 || return 1
    done
    chmod 600 "$file"
}
