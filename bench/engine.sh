#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Times `qed bench` against `qemu-img bench` with identical arguments on fresh
# images, alternating which goes first, and prints the median time of each,
# their ratio, and `qemu-img bench -f raw` on a raw file as the physical limit.
# Peak RSS of each tool is reported too.
#
#   bench/engine.sh [ROUNDS]        (default 5; needs build/qed: run `make`)
#   BENCH_DIR=/path bench/engine.sh  where the images go (default /var/tmp)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/common.bash
. "$here/bench/common.bash"
qed=${QED:-$here/build/qed}
rounds=${1:-5}
dir=$(mktemp -d "${BENCH_DIR:-/var/tmp}/qed-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT

for tool in qemu-img /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing" >&2; exit 1; }
done
[ -x "$qed" ] || { echo "bench: $qed is missing (run make)" >&2; exit 1; }

# run TOOL ARGS... -> prints "SECONDS RSS_KB"
run() {
    local out
    out=$(/usr/bin/time -f 'RSS %M' "$@" 2>&1) || { echo "$out" >&2; return 1; }
    local secs rss
    secs=$(sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p' <<<"$out")
    rss=$(sed -n 's/^RSS \([0-9]*\)$/\1/p' <<<"$out")
    echo "$secs $rss"
}


# workload NAME SIZE PREPARE(fresh|filled) BENCH-ARGS...
workload() {
    local name=$1 size=$2 prep=$3; shift 3
    local qed_times=() qemu_times=() raw_times=() qed_rss=0 qemu_rss=0
    local img="$dir/img.qed" raw="$dir/img.raw"

    prepare() { # FORMAT FILE
        rm -f "$2"
        if [ "$1" = raw ]; then
            qemu-img create -q -f raw "$2" "$size"
        else
            "$qed" create -q "$2" "$size"
        fi
        if [ "$prep" = filled ]; then
            # Fill sequentially (page cache) so the read finds every cluster
            # allocated and laid out in order, the same for both tools.
            if [ "$1" = raw ]; then
                qemu-img bench -f raw -w -c $((size_bytes / 65536)) -d 16 -s 64k "$2" >/dev/null
            else
                "$qed" bench -w -c $((size_bytes / 65536)) -d 16 -s 64k "$2" >/dev/null
            fi
            sync
        fi
    }
    size_bytes=$(numfmt --from=iec "$size")

    for ((r = 1; r <= rounds; r++)); do
        local order=(qed qemu)
        ((r % 2 == 0)) && order=(qemu qed)
        for who in "${order[@]}"; do
            prepare qed "$img"
            if [ "$who" = qed ]; then
                read -r t m < <(run "$qed" bench -f qed "$@" "$img")
                qed_times+=("$t"); ((m > qed_rss)) && qed_rss=$m
            else
                read -r t m < <(run qemu-img bench -f qed "$@" "$img")
                qemu_times+=("$t"); ((m > qemu_rss)) && qemu_rss=$m
            fi
        done
        prepare raw "$raw"
        read -r t m < <(run qemu-img bench -f raw "$@" "$raw")
        raw_times+=("$t")
        rm -f "$raw"
    done
    local mq mi mr
    mq=$(printf '%s\n' "${qed_times[@]}" | median)
    mi=$(printf '%s\n' "${qemu_times[@]}" | median)
    mr=$(printf '%s\n' "${raw_times[@]}" | median)
    printf '%-14s qed %6.3fs  qemu-img %6.3fs  ratio %.2fx  | raw file %6.3fs (qed/raw %.2fx) | peak RSS qed %d MiB, qemu-img %d MiB\n' \
        "$name" "$mq" "$mi" "$(awk -v a="$mq" -v b="$mi" 'BEGIN{print a/b}')" \
        "$mr" "$(awk -v a="$mq" -v b="$mr" 'BEGIN{print a/b}')" \
        $((qed_rss / 1024)) $((qemu_rss / 1024))
    echo "    qed: ${qed_times[*]}   qemu-img: ${qemu_times[*]}   raw: ${raw_times[*]}"
}

echo "libqed engine benchmark: $rounds rounds, median times; $(nproc) cores; images in $dir"
echo "qed: $("$qed" --version); $(qemu-img --version | head -1)"
workload "seq-write"   2G  fresh  -w -t none -c 16384 -d 32 -s 64k
workload "sparse-write" 64G fresh -w -t none -c 16384 -d 32 -s 4k -S 1M
workload "seq-read"    1G  filled -t none -c 16384 -d 32 -s 64k
