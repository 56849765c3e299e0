#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A QED image behind https:// (nginx on loopback, TLS with a throwaway CA):
# `qed convert -O raw URL out.raw` against `qemu-img convert` through QEMU's
# curl driver on the same URL, alternating which goes first, median wall
# time of several rounds and their ratio.  The image: 1 GiB, 1 MiB stripes
# of random data and holes alternating (512 MiB of data).
#
#   bench/storage-http.sh [ROUNDS]          (default 5; needs build/qed)
#   BENCH_DIR=/path bench/storage-http.sh   where the files go (default /var/tmp)
#
# QEMU 7.2's curl driver stops making progress in qemu-img convert with
# several requests in flight, so qemu-img runs with -m 1 (QEMU_CONVERT_OPTS
# overrides).  Certificates are not verified by either side (qed:
# QED_TLS_NO_VERIFY=1, qemu: sslverify=off): both do the same TLS work.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/common.bash
. "$here/bench/common.bash"
# shellcheck source=tests/interop/nbd-tls-certs.bash
. "$here/tests/interop/nbd-tls-certs.bash"
qed=${QED:-$here/build/qed}
rounds=${1:-5}
qemu_opts=${QEMU_CONVERT_OPTS:--m 1}
bench_prepare storage-http nginx qemu-img certtool python3
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$dir"' EXIT

mkdir "$dir/www" "$dir/tmp"
make_striped_source "$dir/src.raw"
"$qed" convert -O qed "$dir/src.raw" "$dir/www/img.qed"
rm "$dir/src.raw"
make_ca "$dir/pki" "bench CA"
make_cert "$dir/pki" "$dir/pki/server" localhost server
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
user=""
[ "$(id -u)" -eq 0 ] && user="user root;"
cat >"$dir/nginx.conf" <<CONF
$user
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/nginx.err;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $dir/tmp;
    proxy_temp_path $dir/tmp;
    fastcgi_temp_path $dir/tmp;
    uwsgi_temp_path $dir/tmp;
    scgi_temp_path $dir/tmp;
    server {
        listen 127.0.0.1:$port ssl;
        root $dir/www;
        ssl_certificate $dir/pki/server-cert.pem;
        ssl_certificate_key $dir/pki/server-key.pem;
    }
}
CONF
nginx -c "$dir/nginx.conf" </dev/null >/dev/null 2>&1 &
server=$!
for _ in $(seq 500); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.01
done
url="https://localhost:$port/img.qed"
qemu_src="json:{\"driver\":\"qed\",\"file\":{\"driver\":\"https\",\"url\":\"$url\",\"sslverify\":false}}"


# One of each first, so both outputs can be compared.
QED_TLS_NO_VERIFY=1 "$qed" convert -O raw "$url" "$dir/qed.raw" 2>/dev/null
# shellcheck disable=SC2086
timeout 300 qemu-img convert $qemu_opts -O raw "$qemu_src" "$dir/qemu.raw"
cmp "$dir/qed.raw" "$dir/qemu.raw" || { echo "bench: the outputs differ" >&2; exit 1; }
# Nothing left for the kernel to write back during the rounds (each
# round's output is removed before it would be).
rm -f "$dir/qed.raw" "$dir/qemu.raw"
sync
q=() m=()
for ((r = 1; r <= rounds; r++)); do
    order=(qed qemu)
    ((r % 2 == 0)) && order=(qemu qed)
    for who in "${order[@]}"; do
        rm -f "$dir/out.raw"
        if [ "$who" = qed ]; then
            q+=("$(seconds env QED_TLS_NO_VERIFY=1 "$qed" convert -O raw "$url" "$dir/out.raw")")
        else
            # shellcheck disable=SC2086
            m+=("$(seconds timeout 300 qemu-img convert $qemu_opts -O raw "$qemu_src" "$dir/out.raw")")
        fi
    done
done
mq=$(printf '%s\n' "${q[@]}" | median)
mm=$(printf '%s\n' "${m[@]}" | median)
echo "HTTPS storage: convert -O raw of a 1 GiB half-sparse image (512 MiB data), nginx over TLS on loopback, $rounds rounds, median; $(nproc) cores"
echo "qed: $("$qed" --version); $(qemu-img --version | head -1) (qemu-img convert $qemu_opts); $(nginx -v 2>&1)"
printf 'qed convert %.3f s  qemu-img convert %.3f s  ratio %.2fx\n' "$mq" "$mm" \
    "$(awk -v a="$mq" -v b="$mm" 'BEGIN{print a/b}')"
echo "    qed: ${q[*]}   qemu-img: ${m[*]}"
