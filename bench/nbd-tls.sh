#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# NBD over TLS: `qed serve --tls=require` against `qemu-nbd --tls-creds`
# (tls-creds-x509 with verify-peer=off like qed's default, --aio=io_uring),
# same certificates, same priority string
# (so the same protocol version and cipher), alternating which goes first,
# median of several rounds:
#   - sequential read of a 1 GiB allocated image with nbdcopy (to null:)
#   - 4 KiB random reads, depth 16, with fio's nbd engine (libnbd; it finds
#     the client certificates in $HOME/.pki/libnbd)
# Reported: throughput, the ratio, and the server's CPU time (user+system)
# per GiB moved.
#
#   bench/nbd-tls.sh [ROUNDS]          (default 5; needs build/qed: run `make`)
#   BENCH_DIR=/path bench/nbd-tls.sh   where the image goes (default /var/tmp)
#   BENCH_PRIORITY=STRING              GnuTLS priority for both servers
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/common.bash
. "$here/bench/common.bash"
# shellcheck source=tests/interop/nbd-tls-certs.bash
. "$here/tests/interop/nbd-tls-certs.bash"
qed=${QED:-$here/build/qed}
rounds=${1:-5}
runtime=${BENCH_RUNTIME:-5}
prio=${BENCH_PRIORITY:-NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-256-GCM}
dir=$(mktemp -d "${BENCH_DIR:-/var/tmp}/qed-nbd-tls-bench.XXXXXX")
sock="$dir/nbd.sock"
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT

for tool in qemu-nbd nbdcopy fio certtool; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing" >&2; exit 1; }
done
[ -x "$qed" ] || { echo "bench: $qed is missing (run make)" >&2; exit 1; }

make_tls_dirs "$dir/pki" || { echo "bench: certtool failed" >&2; exit 1; }
mkdir -p "$dir/home/.pki" && cp -r "$dir/pki/client" "$dir/home/.pki/libnbd"
uri="nbds+unix:///?socket=$sock&tls-certificates=$dir/pki/client"

start_server() { # KIND
    rm -f "$sock"
    case $1 in
    qed) "$qed" serve -t -k "$sock" --tls=require --tls-certificates="$dir/pki/server" \
             --tls-priority="$prio" "$dir/img.qed" & ;;
    qemu) qemu-nbd -t --aio=io_uring -f qed -k "$sock" \
              --object "tls-creds-x509,id=tls0,endpoint=server,dir=$dir/pki/server,verify-peer=off,priority=$prio" \
              --tls-creds tls0 "$dir/img.qed" & ;;
    esac
    server_pid=$!
    for _ in $(seq 100); do [ -S "$sock" ] && return 0; sleep 0.05; done
    echo "bench: $1 did not start" >&2
    return 1
}
stop_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}
cpu_seconds() { # PID: user+system so far
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f\n", ($14 + $15) / hz }' "/proc/$1/stat"
}

# seqread -> "MiB/s cpu-s-per-GiB"
seqread() {
    local c0 c1 t0 t1
    c0=$(cpu_seconds "$server_pid")
    t0=$(date +%s.%N)
    nbdcopy --request-size=262144 "$uri" null:
    t1=$(date +%s.%N)
    c1=$(cpu_seconds "$server_pid")
    awk -v t="$(echo "$t1 - $t0" | bc)" -v c="$(echo "$c1 - $c0" | bc)" \
        'BEGIN { printf "%.1f %.3f\n", 1024 / t, c }'
}
# randread -> "IOPS cpu-s-per-GiB"
randread() {
    local c0 c1 iops
    c0=$(cpu_seconds "$server_pid")
    iops=$(HOME="$dir/home" fio --name=bench --ioengine=nbd --uri="nbds+unix:///?socket=$sock" \
        --rw=randread --bs=4k --iodepth=16 --size=1G --randrepeat=1 --norandommap \
        --runtime="$runtime" --time_based --output-format=json 2>/dev/null |
        sed -n '/^{/,$p' | perl -MJSON::PP -0777 -ne '$j=decode_json($_);
            printf "%.0f\n", $j->{jobs}[0]{read}{iops}')
    c1=$(cpu_seconds "$server_pid")
    awk -v i="$iops" -v c="$(echo "$c1 - $c0" | bc)" -v s="$runtime" \
        'BEGIN { printf "%d %.3f\n", i, c / (i * s * 4096 / 1073741824) }'
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
"$qed" create -q "$dir/img.qed" 1G
"$qed" bench -w -c 16384 -d 16 -s 64k "$dir/img.qed" >/dev/null

sq=() sm=() cq=() cm=() rq=() rm=() kq=() km=()
for ((r = 1; r <= rounds; r++)); do
    order=(qed qemu)
    ((r % 2 == 0)) && order=(qemu qed)
    for who in "${order[@]}"; do
        start_server "$who"
        read -r s c <<<"$(seqread)"
        read -r i k <<<"$(randread)"
        stop_server
        if [ "$who" = qed ]; then sq+=("$s"); cq+=("$c"); rq+=("$i"); kq+=("$k")
        else sm+=("$s"); cm+=("$c"); rm+=("$i"); km+=("$k"); fi
    done
done
med() { printf '%s\n' "$@" | median; }
echo "NBD over TLS: $rounds rounds, median; $(nproc) cores; load before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "priority $prio"
echo "qed: $("$qed" --version); $(qemu-nbd --version | head -1); $(nbdcopy --version | head -1); $(fio --version)"
printf '%-40s %12s %12s %7s   %s\n' "" "qed serve" "qemu-nbd" "ratio" "server CPU s/GiB (qed / qemu-nbd)"
printf '%-40s %8.0f MiB/s %6.0f MiB/s %6.2fx   %.2f / %.2f\n' "sequential read, nbdcopy, 1 GiB" \
    "$(med "${sq[@]}")" "$(med "${sm[@]}")" "$(awk -v a="$(med "${sq[@]}")" -v b="$(med "${sm[@]}")" 'BEGIN{print a/b}')" \
    "$(med "${cq[@]}")" "$(med "${cm[@]}")"
printf '%-40s %9.0f IOPS %7.0f IOPS %6.2fx   %.2f / %.2f\n' "4 KiB random read, fio nbd, depth 16" \
    "$(med "${rq[@]}")" "$(med "${rm[@]}")" "$(awk -v a="$(med "${rq[@]}")" -v b="$(med "${rm[@]}")" 'BEGIN{print a/b}')" \
    "$(med "${kq[@]}")" "$(med "${km[@]}")"
echo "    seq MiB/s  qed: ${sq[*]}   qemu-nbd: ${sm[*]}"
echo "    rand IOPS  qed: ${rq[*]}   qemu-nbd: ${rm[*]}"
