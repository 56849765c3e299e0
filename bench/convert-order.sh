#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# What `qed convert -W` (out-of-order writes) changes: `qed convert -O qed`
# with and without -W, and qemu-img convert with and without -W, on the
# convert benchmark's source (1 GiB raw, half random data and half holes in
# 1 MiB stripes).  The four alternate their order from round to round; the
# output is removed and the file system synced before every run.  Prints
# the median and best wall time and the median CPU time of each, and the
# fragmented clusters `qed check` finds in each output.  Wall times on a
# shared machine are noisy (page cache write-back of other work): the best
# run says more than the median there.
#
#   bench/convert-order.sh [ROUNDS]     (default 5, at least 3; needs build/qed)
#   BENCH_DIR=/path bench/convert-order.sh   where the files go (default /var/tmp)
#   BENCH_REQUESTS=16 bench/convert-order.sh requests in flight (-m, default 8)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/common.bash
. "$here/bench/common.bash"
qed=${QED:-$here/build/qed}
rounds=${1:-5}
m=${BENCH_REQUESTS:-8}
bench_prepare convert-order qemu-img

src=$dir/src.raw
make_striped_source "$src"
sync

names=("qed" "qed -W" "qemu-img" "qemu-img -W")
cmds=(
    "$qed convert -m $m -O qed $src $dir/out0.qed"
    "$qed convert -W -m $m -O qed $src $dir/out1.qed"
    "qemu-img convert -m $m -O qed $src $dir/out2.qed"
    "qemu-img convert -W -m $m -O qed $src $dir/out3.qed"
)

# timed I -> "WALL CPU" in seconds of command I (its output removed first)
timed() {
    local TIMEFORMAT='%3R %3U %3S'
    rm -f "$dir/out$1.qed"
    sync
    # shellcheck disable=SC2086
    { time ${cmds[$1]} 2>&3; } 3>&2 2>"$dir/time"
    awk '{ printf "%.3f %.3f\n", $1, $2 + $3 }' "$dir/time"
}

echo "convert order benchmark: 1 GiB raw source, 512 MiB random data in 1 MiB"
echo "stripes; -m $m; $rounds rounds, order rotating; $(nproc) cores; files in $dir"
echo "qed: $("$qed" --version); $(qemu-img --version | head -1)"
echo "  load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

declare -a wall cpu
for ((r = 0; r < rounds; r++)); do
    for ((j = 0; j < 4; j++)); do
        i=$(((j + r) % 4))
        read -r t c < <(timed "$i")
        wall[$i]+="$t "
        cpu[$i]+="$c "
    done
done

echo "  load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
for i in 0 1 2 3; do
    qemu-img compare -q -f raw -F qed "$src" "$dir/out$i.qed" ||
        { echo "bench: output of ${names[$i]} differs from the source" >&2; exit 1; }
    frag=$("$qed" check "$dir/out$i.qed" | grep -o '[0-9.]*% fragmented')
    # shellcheck disable=SC2086
    printf '%-12s wall median %.3fs best %.3fs  CPU median %.3fs  %s  (runs: %s)\n' \
        "${names[$i]}" "$(printf '%s\n' ${wall[$i]} | median)" \
        "$(printf '%s\n' ${wall[$i]} | sort -g | head -1)" \
        "$(printf '%s\n' ${cpu[$i]} | median)" "$frag" "${wall[$i]% }"
done
