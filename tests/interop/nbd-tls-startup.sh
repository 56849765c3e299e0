#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed serve` TLS settings and credentials are checked at start-up: a
# missing or unreadable file, a private key or PSK file open to other users,
# a bad PSK line, a bad priority string, or settings that cannot work stop
# the server with one line on stderr and exit status 1 before it listens.
# Serving a non-loopback address without --tls=require prints a warning.
. "$(dirname "$0")/lib.sh"
require_cmd python3
require_qed
. "$_lib_dir/nbd-tls-common.bash"
tls_setup

TAP_TIMEOUT=10
SOCK=$T/s.sock
"$QED" create -f qed img.qed 1M >/dev/null || bail_out "qed create failed"

# refuses NAME REGEX ARGS... — `qed serve -k SOCK ARGS... img.qed` exits 1
# at once with one stderr line matching REGEX, and never listens.
refuses() {
    local name=$1 re=$2
    shift 2
    rm -f "$SOCK"
    run "$QED" serve -k "$SOCK" "$@" img.qed
    local lines
    lines=$(wc -l <"$ERR")
    if [ "$RC" -eq 1 ] && [ "$lines" -eq 1 ] && grep -Eq -- "$re" "$ERR" && [ ! -e "$SOCK" ]; then
        pass "$name"
    else
        fail "$name" "exit $RC, $lines stderr lines, socket $([ -e "$SOCK" ] && echo exists || echo absent)" \
            "stderr: $(cat "$ERR")" "expected one line matching /$re/"
    fi
}

cp -r "$PKI/server" srv
refuses "--tls=require without credentials is a usage error" \
    "needs --tls-certificates=DIR or --tls-psk=FILE" --tls=require
refuses "--tls=on without credentials is a usage error" \
    "needs --tls-certificates=DIR or --tls-psk=FILE" --tls=on
refuses "--tls=maybe is refused" "invalid --tls 'maybe'" --tls=maybe
refuses "--tls=off with credentials is refused" "--tls=off cannot be used" \
    --tls=off --tls-certificates=srv
refuses "--tls-verify-peer without certificates is refused" \
    "--tls-verify-peer needs --tls-certificates" --tls-psk="$PKI/keys.psk" --tls-verify-peer
refuses "a missing certificate directory names the certificate file" \
    "^qed: $T/nowhere/server-cert.pem: No such file or directory$" --tls-certificates="$T/nowhere"
mkdir nokey && cp srv/server-cert.pem srv/ca-cert.pem nokey/
refuses "a missing server-key.pem is named" \
    "^qed: nokey/server-key.pem: No such file or directory$" --tls-certificates=nokey
cp -r srv openkey && chmod 644 openkey/server-key.pem
refuses "a private key readable by other users is refused" \
    "^qed: openkey/server-key.pem: private key is accessible to other users \(mode 0644; chmod o-rwx it\)$" \
    --tls-certificates=openkey
cp -r srv groupkey && chmod 640 groupkey/server-key.pem
start_server g "$SOCK" --tls-certificates=groupkey img.qed
ok $? "a private key readable by its group (0640) is accepted" "$(cat "$T/g.err")"
stop_server "$SRV_PID"
cp -r srv badkey && echo garbage >badkey/server-key.pem
refuses "a private key that is not a key is refused at start-up" \
    "^qed: badkey/server-cert.pem: cannot load the certificate with .*server-key.pem: " \
    --tls-certificates=badkey
cp -r srv otherkey && certtool --generate-privkey --outfile otherkey/server-key.pem 2>/dev/null &&
    chmod 600 otherkey/server-key.pem
refuses "a private key that does not match the certificate is refused" \
    "cannot load the certificate with .*: .*(match|key)" --tls-certificates=otherkey
if [ "$(id -u)" -ne 0 ]; then
    cp -r srv unreadable && chmod 000 unreadable/server-key.pem
    refuses "an unreadable private key is refused" "server-key.pem: Permission denied" \
        --tls-certificates=unreadable
else
    skip "an unreadable private key is refused" "running as root: every file is readable"
fi
cp -r srv noca && rm noca/ca-cert.pem
refuses "--tls-verify-peer without ca-cert.pem names it" \
    "^qed: noca/ca-cert.pem: No such file or directory$" --tls-certificates=noca --tls-verify-peer
start_server n "$SOCK" --tls-certificates=noca img.qed
ok $? "without --tls-verify-peer, ca-cert.pem is optional" "$(cat "$T/n.err")"
stop_server "$SRV_PID"
cp -r srv badcrl && echo junk >badcrl/ca-crl.pem
refuses "a ca-crl.pem that is not a CRL is refused" \
    "^qed: badcrl/ca-crl.pem: cannot load the revocation list: " --tls-certificates=badcrl

mkdir expired && cp srv/ca-cert.pem expired/ &&
    make_cert "$PKI/ca" expired/server localhost server \
        $'activation_date = "2019-01-01 00:00:00"\nexpiration_date = "2020-01-01 00:00:00"' ||
    bail_out "certtool failed"
start_server x "$SOCK" --tls-certificates=expired img.qed
ok $? "a server certificate that expired still starts (clients decide)" "$(cat "$T/x.err")"
stop_server "$SRV_PID"
tap_is "$(cat "$T/x.err")" "qed: warning: expired/server-cert.pem: the server certificate expired on 2020-01-01 00:00:00 UTC; clients will refuse it" \
    "an expired server certificate is warned about at start-up"
tap_is "$(cat "$T/g.err")" "" "a valid server certificate gets no warning"

# ---- PSK files ------------------------------------------------------------------------
psk() { printf "$1" >"$2"; chmod 600 "$2"; }
psk 'alice:00112233\nbob\n' bad1.psk
refuses "a PSK line without a colon is refused with its line number" \
    "^qed: bad1.psk: line 2: expected username:hexkey$" --tls-psk=bad1.psk
psk 'alice:0011zz33\n' bad2.psk
refuses "a PSK key that is not hex is refused" "^qed: bad2.psk: line 1: the key is not hexadecimal$" \
    --tls-psk=bad2.psk
psk 'alice:001\n' bad3.psk
refuses "a PSK key with an odd number of digits is refused" "^qed: bad3.psk: line 1: the key must be" \
    --tls-psk=bad3.psk
psk ':0011\n' bad4.psk
refuses "an empty PSK username is refused" "^qed: bad4.psk: line 1: the username must" --tls-psk=bad4.psk
psk 'alice:0011\nalice:2233\n' bad5.psk
refuses "a PSK username given twice is refused" "^qed: bad5.psk: line 2: username 'alice' appears twice$" \
    --tls-psk=bad5.psk
psk '' bad6.psk
refuses "an empty PSK file is refused" "^qed: bad6.psk: no keys" --tls-psk=bad6.psk
cp "$PKI/keys.psk" open.psk && chmod 604 open.psk
refuses "a PSK file readable by other users is refused" \
    "^qed: open.psk: PSK file is accessible to other users" --tls-psk=open.psk
refuses "a missing PSK file is named" "^qed: missing.psk: No such file or directory$" --tls-psk=missing.psk

# ---- priority ---------------------------------------------------------------------------
refuses "a bad --tls-priority is refused at start-up" "^qed: invalid TLS priority 'NORMAL:\+BOGUS'" \
    --tls-certificates=srv --tls-priority=NORMAL:+BOGUS

# ---- credentials imply require; exposure warning -------------------------------------------
start_server i "$SOCK" --tls-certificates=srv img.qed
run python3 "$RAW" -t 5 -k "$SOCK" hello list abort
check_like 2 "^ERR_TLS_REQD$" "credentials without --tls mean --tls=require"
stop_server "$SRV_PID"
PORT=$(free_port)
start_server w "" -b 0.0.0.0 -p "$PORT" img.qed
wait_port "$PORT"
stop_server "$SRV_PID"
tap_like "$(cat "$T/w.err")" "^qed: warning: serving on 0\.0\.0\.0 without --tls=require: anyone who can reach it can read and write the image$" \
    "serving 0.0.0.0 in plaintext prints a warning"
PORT=$(free_port)
start_server w2 "" -b 0.0.0.0 -p "$PORT" --tls=on --tls-certificates=srv -r img.qed
wait_port "$PORT"
stop_server "$SRV_PID"
tap_like "$(cat "$T/w2.err")" "^qed: warning: serving on 0\.0\.0\.0 without --tls=require: anyone who can reach it can read the image$" \
    "serving 0.0.0.0 with --tls=on (optional) prints the warning too"
PORT=$(free_port)
start_server w3 "" -b 0.0.0.0 -p "$PORT" --tls=require --tls-certificates=srv img.qed
wait_port "$PORT"
stop_server "$SRV_PID"
tap_is "$(cat "$T/w3.err")" "" "serving 0.0.0.0 with --tls=require prints no warning"
PORT=$(free_port)
start_server w4 "" -p "$PORT" img.qed
wait_port "$PORT"
stop_server "$SRV_PID"
tap_is "$(cat "$T/w4.err")" "" "serving 127.0.0.1 in plaintext prints no warning"
done_testing
