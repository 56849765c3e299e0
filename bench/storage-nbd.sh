#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# An image inside an NBD export (nbdkit's file plugin, Unix socket): `qed
# bench` against `qemu-img bench` through QEMU's NBD driver, same URI,
# alternating which goes first, median wall time of several rounds and
# their ratio.  4 KiB reads, depth 16, of an allocated 1 GiB image: in
# order, and scattered (qemu-img bench has no random mode; a step of 40503
# blocks, odd, wraps around the image and visits every 4 KiB block in an
# order with no two neighbours close, the same for both programs).
#
#   bench/storage-nbd.sh [ROUNDS]          (default 5; needs build/qed)
#   BENCH_DIR=/path bench/storage-nbd.sh   where the image goes (default /var/tmp)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/common.bash
. "$here/bench/common.bash"
qed=${QED:-$here/build/qed}
rounds=${1:-5}
count=${BENCH_COUNT:-400000}
bench_prepare storage-nbd nbdkit qemu-img
sock="$dir/nbd.sock"
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$dir"' EXIT

"$qed" create -q "$dir/img.qed" 1G
"$qed" bench -w -c 16384 -d 16 -s 64k "$dir/img.qed" >/dev/null
nbdkit -f -U "$sock" file "$dir/img.qed" &
server=$!
for _ in $(seq 500); do [ -S "$sock" ] && break; sleep 0.01; done
uri="nbd+unix:///?socket=$sock"


# run_pattern NAME BENCH-OPTIONS... — the rounds of one access pattern.
run_pattern() {
    local name=$1 q=() m=() mq mm order who r
    shift
    for ((r = 1; r <= rounds; r++)); do
        order=(qed qemu)
        ((r % 2 == 0)) && order=(qemu qed)
        for who in "${order[@]}"; do
            if [ "$who" = qed ]; then
                q+=("$(seconds "$qed" bench -c "$count" -d 16 -s 4k "$@" "$uri")")
            else
                m+=("$(seconds qemu-img bench -f qed -c "$count" -d 16 -s 4k "$@" "$uri")")
            fi
        done
    done
    mq=$(printf '%s\n' "${q[@]}" | median)
    mm=$(printf '%s\n' "${m[@]}" | median)
    printf '%s: qed bench %.3f s (%.0f reads/s)  qemu-img bench %.3f s (%.0f reads/s)  ratio %.2fx\n' \
        "$name" "$mq" "$(awk -v c="$count" -v t="$mq" 'BEGIN{print c/t}')" \
        "$mm" "$(awk -v c="$count" -v t="$mm" 'BEGIN{print c/t}')" \
        "$(awk -v a="$mm" -v b="$mq" 'BEGIN{print a/b}')"
    echo "    qed: ${q[*]}   qemu-img: ${m[*]}"
}

echo "NBD storage: $count 4 KiB reads, depth 16, nbdkit file over a Unix socket, $rounds rounds, median; $(nproc) cores"
echo "qed: $("$qed" --version); $(qemu-img --version | head -1); nbdkit $(nbdkit --version | awk '{print $2}')"
run_pattern "in order" -S 4k
run_pattern "scattered (step 40503 blocks)" -S $((40503 * 4096))
