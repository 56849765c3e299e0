#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# What preallocation buys: for each `qed create -o preallocation=MODE`
# (off, metadata, falloc, full) of a 1 GiB image with 64 KiB clusters, the
# create time, the space it takes (actual size), and the time of the first
# writes over the fresh image with `qed bench -w -t none` (O_DIRECT):
#   seq:     65536 sequential 4 KiB writes (the first 256 MiB)
#   sparse:  16384 4 KiB writes 64 KiB apart, one into every cluster
# Rounds alternate the order of the modes; the median of each is printed.
#
#   bench/prealloc.sh [ROUNDS]          (default 5, at least 3; needs build/qed)
#   BENCH_DIR=/path bench/prealloc.sh   where the image goes (default /var/tmp)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/common.bash
. "$here/bench/common.bash"
qed=${QED:-$here/build/qed}
rounds=${1:-5}
bench_prepare prealloc-bench
cd "$dir"

modes=(off metadata falloc full)
size=1G

# seconds CMD... -> wall seconds of one run (the command must succeed)

# fresh MODE: a new image, synced; prints the create time.
fresh() {
    rm -f img.qed
    sync
    seconds "$qed" create -q -o "preallocation=$1" img.qed "$size"
    sync
}

# bench_time ARGS...: the time qed bench reports for the fresh image.
bench_time() {
    "$qed" bench -q -w -t none -P 171 "$@" img.qed | awk '{ print $4 }'
}

declare -A create seq sparse actual
for ((r = 0; r < rounds; r++)); do
    # Rotate the order so that no mode always runs first.
    for ((i = 0; i < ${#modes[@]}; i++)); do
        m=${modes[$(((i + r) % ${#modes[@]}))]}
        create[$m]+="$(fresh "$m") "
        actual[$m]=$("$qed" info --output=json img.qed |
            awk -F'[:,]' '/"actual-size"/ { print $2 + 0 }')
        seq[$m]+="$(bench_time -c 65536 -s 4k) "
        fresh "$m" >/dev/null
        sparse[$m]+="$(bench_time -c 16384 -s 4k -S 64k) "
    done
done

med() { printf '%s\n' $1 | median; }
echo "preallocation benchmark: $rounds rounds, median; 1 GiB image, 64 KiB clusters; $(nproc) cores"
echo "qed: $("$qed" --version); files in $dir ($(df -T "$dir" | awk 'NR == 2 { print $2 }'))"
printf '%-10s %10s %14s %12s %12s\n' mode create actual-size "seq 4k" "sparse 4k"
for m in "${modes[@]}"; do
    printf '%-10s %9.3fs %10.1f MiB %11.3fs %11.3fs\n' "$m" "$(med "${create[$m]}")" \
        "$(awk -v b="${actual[$m]}" 'BEGIN { print b / 1048576 }')" \
        "$(med "${seq[$m]}")" "$(med "${sparse[$m]}")"
done
for m in "${modes[@]}"; do
    echo "    $m: create ${create[$m]}  seq ${seq[$m]}  sparse ${sparse[$m]}"
done
