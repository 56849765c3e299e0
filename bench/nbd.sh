#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# NBD server benchmark: fio's nbd engine against `qed serve` and against
# `qemu-nbd --aio=io_uring` (its fastest setting here), alternating which goes
# first, median IOPS of several rounds and their ratio; `nbdkit file` on a
# raw file is the ceiling.
#   - 4 KiB random reads, depth 16, of an allocated image
#   - 4 KiB random writes, depth 32, into a fresh image (allocating)
#
#   bench/nbd.sh [ROUNDS]          (default 5; needs build/qed: run `make`)
#   BENCH_DIR=/path bench/nbd.sh   where the images go (default /var/tmp)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/common.bash
. "$here/bench/common.bash"
qed=${QED:-$here/build/qed}
rounds=${1:-5}
size=${BENCH_SIZE:-1G}
runtime=${BENCH_RUNTIME:-5}
dir=$(mktemp -d "${BENCH_DIR:-/var/tmp}/qed-nbd-bench.XXXXXX")
sock="$dir/nbd.sock"
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT

for tool in qemu-nbd qemu-img fio nbdkit; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing" >&2; exit 1; }
done
[ -x "$qed" ] || { echo "bench: $qed is missing (run make)" >&2; exit 1; }

wait_for_socket() {
    for _ in $(seq 100); do [ -S "$sock" ] && return 0; sleep 0.05; done
    echo "bench: server did not start" >&2; return 1
}

start_server() { # KIND FILE
    rm -f "$sock"
    case $1 in
    qed) "$qed" serve -t -k "$sock" "$2" & ;;
    qemu) qemu-nbd -t --aio=io_uring -f qed -k "$sock" "$2" & ;;
    nbdkit) nbdkit -f -U "$sock" file "$2" & ;;
    esac
    server_pid=$!
    wait_for_socket
}

stop_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}

# fio RW DEPTH SIZE [fio options...] -> IOPS
run_fio() {
    local rw=$1 depth=$2 fsize=$3; shift 3
    fio --name=bench --ioengine=nbd --uri="nbd+unix:///?socket=$sock" \
        --rw="$rw" --bs=4k --iodepth="$depth" --size="$fsize" \
        --randrepeat=1 --norandommap --output-format=json "$@" 2>/dev/null |
        sed -n '/^{/,$p' | perl -MJSON::PP -0777 -ne '$j=decode_json($_); $t=$j->{jobs}[0];
            printf "%.0f\n", $t->{read}{iops} + $t->{write}{iops}'
}

prepare() { # KIND(fresh|filled) FORMAT FILE SIZE
    rm -f "$3"
    if [ "$2" = raw ]; then
        qemu-img create -q -f raw "$3" "$4"
    else
        "$qed" create -q "$3" "$4"
    fi
    if [ "$1" = filled ]; then
        "$qed" bench -f "$2" -w -c $(( $(numfmt --from=iec "$4") / 65536 )) -d 16 -s 64k "$3" >/dev/null
    fi
}


workload() { # NAME PREP SIZE RW DEPTH [fio options...]
    local name=$1 prep=$2 wsize=$3 rw=$4 depth=$5 q=() m=() k=()
    shift 5
    for ((r = 1; r <= rounds; r++)); do
        local order=(qed qemu)
        ((r % 2 == 0)) && order=(qemu qed)
        for who in "${order[@]}"; do
            prepare "$prep" qed "$dir/img.qed" "$wsize"
            start_server "$who" "$dir/img.qed"
            iops=$(run_fio "$rw" "$depth" "$wsize" "$@")
            stop_server
            if [ "$who" = qed ]; then q+=("$iops"); else m+=("$iops"); fi
        done
        prepare "$prep" raw "$dir/img.raw" "$wsize"
        start_server nbdkit "$dir/img.raw"
        k+=("$(run_fio "$rw" "$depth" "$wsize" "$@")")
        stop_server
    done
    local mq mm mk
    mq=$(printf '%s\n' "${q[@]}" | median)
    mm=$(printf '%s\n' "${m[@]}" | median)
    mk=$(printf '%s\n' "${k[@]}" | median)
    printf '%-34s qed %7.0f IOPS  qemu-nbd %7.0f IOPS  ratio %.2fx  | nbdkit file (raw) %7.0f IOPS\n' \
        "$name" "$mq" "$mm" "$(awk -v a="$mq" -v b="$mm" 'BEGIN{print a/b}')" "$mk"
    echo "    qed: ${q[*]}   qemu-nbd: ${m[*]}   nbdkit: ${k[*]}"
}

echo "NBD benchmark: fio nbd engine, 4 KiB, ${runtime}s per run, $rounds rounds, median; $(nproc) cores"
echo "qed: $("$qed" --version); $(qemu-nbd --version | head -1); $(fio --version)"
# Reads: a filled 1 GiB image, time based.  Writes: a fresh 16 GiB image and
# a fixed number of writes, so nearly every write allocates a cluster.
workload "randread, depth 16" filled "$size" randread 16 --runtime="$runtime" --time_based
workload "randwrite (allocating), depth 32" fresh 16G randwrite 32 --number_ios=20000
