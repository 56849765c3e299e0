#!/bin/bash
# SPDX-License-Identifier: MIT
# Read-only images behind http:// URLs: nginx on loopback (started and
# stopped here) serves images and a chain whose layers name each other by
# relative names; reads agree with qemu-img on local copies (QEMU's curl
# driver reads the same overlay); a replaced object fails reads with
# ESTALE, never mixing old and new bytes; a server that drops connections
# and answers 503 is retried through; one that stalls fails with
# ETIMEDOUT after the documented 30 s.
. "$(dirname "$0")/lib.sh"
. "$_lib_dir/nbd-tls-common.bash"
. "$_lib_dir/nbd-tls-certs.bash"
require_qed
require_cmd qemu-img qemu-io nginx python3
. "$_lib_dir/http-server.bash"

sport_tls=$(free_port)
sport_h2=$(free_port)
have_tls=0
if command -v certtool >/dev/null && make_ca "$T/pki" "libqed test CA" &&
    make_cert "$T/pki" "$T/pki/server" localhost server; then
    have_tls=1
    tls_server="server { listen 127.0.0.1:$sport_tls ssl; root $T/www;
        ssl_certificate $T/pki/server-cert.pem;
        ssl_certificate_key $T/pki/server-key.pem; }
    server { listen 127.0.0.1:$sport_h2 ssl http2; root $T/www;
        access_log $T/h2.log proto;
        ssl_certificate $T/pki/server-cert.pem;
        ssl_certificate_key $T/pki/server-key.pem; }"
fi
# Basic authentication (alice, s3cr3t) on another port.
aport=$(free_port)
echo 'alice:{PLAIN}s3cr3t' >"$T/htpasswd"
auth_server="server { listen 127.0.0.1:$aport; root $T/www;
        auth_basic \"test\"; auth_basic_user_file $T/htpasswd; }"
start_nginx "${tls_server:-} $auth_server"
port=$HTTP_PORT
url=$HTTP_URL

# ---- one image ------------------------------------------------------------------
build_std_image www/std.qed 65536 4
qemu-img convert -O raw www/std.qed std.raw
run "$QED" info "$url/std.qed"
tap_like "$RC $(tr '\n' ' ' <"$OUT")" '^0 image: http://.*file format: qed .*disk size: unavailable' "qed info of an http:// image"
run "$QED" convert -O raw "$url/std.qed" std.http.raw
ok "$RC" "qed convert -O raw of an http:// image" "$(cat "$ERR")"
same_raw "it equals qemu-img convert of the local file" std.http.raw std.raw
"$QED" map --output=json "$url/std.qed" >map.http
"$QED" map --output=json www/std.qed >map.local
run diff map.local map.http
ok "$RC" "qed map over http is the local map" "$(cat "$OUT")"
run "$QED" io -c "write 0 512" "$url/std.qed"
tap_like "$RC $(cat "$ERR")" '^1 .*read-only' "a read-write open of an http:// image fails at once, saying why"
run "$QED" info "$url/missing.qed"
tap_like "$RC $(cat "$ERR")" '^1 .*missing.qed: No such file or directory' "a missing object: ENOENT"
run "$QED" info "http://alice:s3cr3t@127.0.0.1:$port/std.qed"
tap_like "$RC $(cat "$OUT")" '^0 image: http://alice:\*\*\*@127' "qed info shows a URL's password as ***"
run "$QED" info "http://alice:s3cr3t@127.0.0.1:1/std.qed"
tap_like "$RC $(cat "$ERR")" '^1 qed: http://alice:\*\*\*@127.0.0.1:1/std.qed: ' "and so do messages"
tap_is "$(grep -c s3cr3t "$OUT" "$ERR" | awk -F: '{s += $NF} END {print s}')" 0 "the password appears nowhere"
aurl="http://alice:s3cr3t@127.0.0.1:$aport/std.qed"
run "$QED" info "http://alice:wrong@127.0.0.1:$aport/std.qed"
tap_like "$RC $(cat "$ERR")" '^1 .*alice:\*\*\*@.*HTTP 401|^1 .*alice:\*\*\*@.*(Permission|denied)' "a server asking for a password refuses a wrong one"
. "$_lib_dir/nbd-server.bash"
trap '_http_stop; _kill_all; _cleanup' EXIT
if start_server pw "$T/pw.sock" -r "$aurl"; then
    tap_like "$(tr '\0' ' ' </proc/$SRV_PID/cmdline)" "serve -k $T/pw.sock -r http://alice:\*\*\*\*\*\*@127" \
        "the process title shows the URL's password starred out (ps, /proc/PID/cmdline)"
    run qemu-img convert -f raw -O raw "nbd+unix:///?socket=$T/pw.sock" pw.raw
    ok "$RC" "while qed serve, given the password, reads the image behind the password" "$(cat "$ERR")"
    same_raw "and serves it right" pw.raw std.raw
    stop_server "$SRV_PID"
else
    fail "qed serve of an http:// image with a password starts" "$(cat "$T/pw.err")"
fi

# ---- https: verified against a CA given, refused without it ----------------------------
if [ "$have_tls" = 1 ]; then
    wait_port "$sport_tls"
    surl="https://localhost:$sport_tls"
    run env -u CURL_CA_BUNDLE -u SSL_CERT_FILE "$QED" info "$surl/std.qed"
    tap_like "$RC $(cat "$ERR")" '^1 .*(certificate|issuer|verif)' "https with a certificate from an unknown CA is refused"
    run env -u SSL_CERT_FILE CURL_CA_BUNDLE="$T/pki/ca-cert.pem" "$QED" convert -O raw "$surl/std.qed" std.https.raw
    ok "$RC" "with the test CA (CURL_CA_BUNDLE) the https image converts" "$(cat "$ERR")"
    same_raw "and reads as the local file" std.https.raw std.raw
    run env -u SSL_CERT_FILE CURL_CA_BUNDLE="$T/pki/ca-cert.pem" "$QED" convert -O raw "https://localhost:$sport_h2/std.qed" std.h2.raw
    ok "$RC" "an https server offering HTTP/2: the image converts" "$(cat "$ERR")"
    same_raw "and reads as the local file" std.h2.raw std.raw
    tap_is "$(grep -c -v '^HTTP/2.0 206' h2.log) $(grep -c '^HTTP/2.0 206' h2.log | awk '{print ($1 > 1)}')" "0 1" \
        "every request went over HTTP/2 (nginx's log: $(sort h2.log | uniq -c | tr -s ' \n' ' '))"
    # convert -B: the output's backing file behind https, read with the
    # same CA as everything else.
    CURL_CA_BUNDLE="$T/pki/ca-cert.pem" "$QED" create -q -f qed -b "$surl/std.qed" -F qed over-https.qed
    CURL_CA_BUNDLE="$T/pki/ca-cert.pem" "$QED" io -c "write -P 0x77 64k 4k" over-https.qed >/dev/null
    run env -u SSL_CERT_FILE CURL_CA_BUNDLE="$T/pki/ca-cert.pem" "$QED" convert -O qed -B "$surl/std.qed" -F qed over-https.qed rebased.qed
    ok "$RC" "convert -O qed -B with an https:// backing file (CA from CURL_CA_BUNDLE)" "$(cat "$ERR")"
    run env -u SSL_CERT_FILE CURL_CA_BUNDLE="$T/pki/ca-cert.pem" "$QED" compare over-https.qed rebased.qed
    tap_like "$RC $(cat "$OUT")" '^0 Images are identical' "the output reads as the source"
    tap_is "$(CURL_CA_BUNDLE="$T/pki/ca-cert.pem" "$QED" map --output=json rebased.qed | grep -c '"depth": 0, "present": true, "zero": false, "data": true')" 1 \
        "and holds only the one cluster that differs from its backing file"
    run env -u CURL_CA_BUNDLE -u SSL_CERT_FILE QED_TLS_NO_VERIFY=1 "$QED" info "$surl/std.qed"
    tap_like "$RC $(tr '\n' ' ' <"$ERR")" '^0 .*warning: QED_TLS_NO_VERIFY=1: .*not verified' "QED_TLS_NO_VERIFY=1 turns verification off, saying so"
else
    skip "https" "certtool (gnutls-bin) cannot make a test CA here"
fi

# ---- a chain across storage -------------------------------------------------------
build_qed_chain local
cp local/base.qed local/mid.qed www/
cp local/top.qed top.qed
qemu-img convert -O raw local/top.qed chain.raw
"$QED" rebase -u -b "$url/mid.qed" -F qed top.qed
run "$QED" info --backing-chain top.qed
tap_like "$(tr '\n' ' ' <"$OUT")" "image: $url/mid.qed .*image: $url/base.qed" "qed info --backing-chain: mid.qed's relative name base.qed is the object next to it"
run "$QED" convert -O raw top.qed chain.http.raw
ok "$RC" "qed convert of a local top over a remote middle and a remote base" "$(cat "$ERR")"
same_raw "it equals qemu-img convert of the local chain" chain.http.raw chain.raw
# QEMU 7.2's curl driver hangs in qemu-img convert with several requests in
# flight; -m 1 keeps one.
run timeout 60 qemu-img convert -m 1 -O raw top.qed chain.qemu.raw
ok "$RC" "qemu-img (QEMU's curl driver) converts the same overlay" "$(cat "$ERR")"
same_raw "and reads it identically" chain.qemu.raw chain.raw
"$QED" create -q -f qed -b "$url/std.qed" -F qed over.qed
run "$QED" io -c "read -P 0x11 0 512" -c "write -P 0x99 0 512" -c "read -P 0x99 0 512" over.qed
tap_like "$RC $(tr '\n' ' ' <"$OUT")" '^0 read .*wrote .*read ' "a local overlay on an http:// base is written locally"

# ---- an object replaced while open -----------------------------------------------
# ---- the read cache and read-ahead ---------------------------------------------------
"$QED" create -q www/seq.qed 16M
"$QED" io -c "write -P 0x5a 0 2M" www/seq.qed >/dev/null
reads=()
for ((i = 0; i < 256; i++)); do reads+=(-c "read -P 0x5a $((i * 4096)) 4096"); done
for cache in 0 64M; do
    : >access.log
    run env QED_REMOTE_CACHE=$cache "$QED" io -r "${reads[@]}" "$url/seq.qed"
    ok "$RC" "QED_REMOTE_CACHE=$cache: 256 sequential 4 KiB reads over http read right" "$(tail -3 "$ERR")"
    requests[${cache%M}]=$(wc -l <access.log)
done
ok "$((!(requests[0] >= 256 && requests[64] <= 12)))" \
    "the read cache serves them from few requests: ${requests[64]} range requests (without it: ${requests[0]})"
run env QED_REMOTE_CACHE=lots "$QED" info "$url/seq.qed"
tap_like "$RC $(cat "$ERR")" "^1 .*QED_REMOTE_CACHE='lots': " "a QED_REMOTE_CACHE that is not a size is refused, naming it"

# Data at 0 and, 2 MiB of the file further, at 32 MiB: the read cache
# holds the first cluster after the first read, not the second.
"$QED" create -q moving.qed 64M
"$QED" io -c "write -P 0x11 0 64k" -c "write -P 0x33 1M 2M" -c "write -P 0x22 32M 64k" moving.qed >/dev/null
for cache in 0 64M; do
    cp moving.qed www/moving.qed
    ( sleep 0.5; cp www/base.qed www/moving.new; mv www/moving.new www/moving.qed ) &
    run env QED_REMOTE_CACHE=$cache "$QED" io -r -c "read -P 0x11 0 512" -c "sleep 1500" \
        -c "read -P 0x22 32M 512" -c "read -P 0x11 0 512" "$url/moving.qed"
    wait $!
    tap_like "$(tr '\n' ' ' <"$OUT")" '^read 512/512 .*read failed: Stale file handle .*read failed: Stale file handle' \
        "QED_REMOTE_CACHE=$cache: after the object is replaced every read fails with ESTALE, cached ones too"
    tap_is "$(grep -c 'Pattern verification' "$OUT")" 0 "no read returns bytes of the new object"
done

# ---- a server that misbehaves ------------------------------------------------------
fport=$(free_port)
python3 "$_lib_dir/http_faulty.py" www "$fport" --drop-every 5 --fail-every 7 >faulty.out 2>faulty.err &
_http_pids+=($!)
wait_port "$fport"
run "$QED" convert -O raw "http://127.0.0.1:$fport/std.qed" std.faulty.raw
ok "$RC" "reads through a server that drops every 5th connection and answers every 7th request 503" "$(cat "$ERR")"
same_raw "and the data is right" std.faulty.raw std.raw
sport=$(free_port)
python3 "$_lib_dir/http_faulty.py" www "$sport" --stall >stall.out 2>stall.err &
_http_pids+=($!)
wait_port "$sport"
start=$(date +%s)
run "$QED" io -r -c "read 0 512" "http://127.0.0.1:$sport/std.qed"
took=$(( $(date +%s) - start ))
tap_like "$RC $(cat "$ERR")" '^1 .*(timed out|too slow)' "a server that never answers: the open fails with a timeout"
ok $(( took >= 29 && took <= 45 ? 0 : 1 )) "after the documented 30 s ($took s)"

done_testing
