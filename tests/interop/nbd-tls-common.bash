# SPDX-License-Identifier: MIT
# Sourced by the nbd-tls*.sh scripts, after lib.sh: certificates and PSK
# keys made at test time in $T/pki (never committed), a free TCP port, and
# the raw client.
. "$_lib_dir/nbd-server.bash"
. "$_lib_dir/nbd-tls-certs.bash"
RAW=$_lib_dir/nbd_raw_client.py
PKI=$T/pki

# tls_setup — $PKI/{ca,server,client} (X.509, CA "libqed test CA"),
# $PKI/keys.psk (users alice and bob), or skips everything.
tls_setup() {
    command -v certtool >/dev/null && command -v psktool >/dev/null ||
        skip_all "certtool/psktool (gnutls-bin) are not installed"
    make_tls_dirs "$PKI" || bail_out "certtool could not make test certificates"
    make_psk "$PKI/keys.psk" alice bob || bail_out "psktool could not make keys"
}
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# wait_port PORT — up to 5 s for something to listen on 127.0.0.1:PORT.
wait_port() {
    python3 - "$1" <<'PY'
import socket, sys, time
for _ in range(500):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.01)
sys.exit(1)
PY
}
