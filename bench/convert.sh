#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Times `qed convert -O qed` against `qemu-img convert -O qed` on the same
# raw source: 1 GiB, half random data and half holes in 1 MiB stripes.  The
# two alternate which goes first in each round; the output is removed and
# the file system synced before every run, so no run pays for the previous
# one's write-back.  Prints the median time of each and the ratio.
#
#   bench/convert.sh [ROUNDS]           (default 5, at least 3; needs build/qed)
#   BENCH_DIR=/path bench/convert.sh    where the files go (default /var/tmp)
#   BENCH_NICE=-10 bench/convert.sh     run both tools at that nice level (a
#                                       busy machine skews wall times less)
#
# Both tools run with their default cache mode for the output (unsafe: no
# flush at the end), so both measure the same work.  Besides wall time, the
# CPU time (user + system, io_uring and thread-pool workers included) of
# each run is reported: it is what a loaded machine disturbs least.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/common.bash
. "$here/bench/common.bash"
qed=${QED:-$here/build/qed}
rounds=${1:-5}
bench_prepare convert-bench qemu-img

src=$dir/src.raw
make_striped_source "$src"
sync

qed_cmd=("$qed" convert -O qed "$src" "$dir/out-qed.qed")
qemu_cmd=(qemu-img convert -O qed "$src" "$dir/out-qemu.qed")
prefix=()
[ -n "${BENCH_NICE:-}" ] && prefix=(nice -n "$BENCH_NICE")

# timed OUTPUT CMD... -> "WALL CPU" in seconds (bash's time: milliseconds)
timed() {
    local out=$1 TIMEFORMAT='%3R %3U %3S'
    shift
    rm -f "$out"
    sync
    { time "${prefix[@]}" "$@" 2>&3; } 3>&2 2>"$dir/time"
    awk '{ printf "%.3f %.3f\n", $1, $2 + $3 }' "$dir/time"
}

echo "convert benchmark: 1 GiB raw source, 512 MiB random data in 1 MiB stripes"
echo "between 1 MiB holes; $rounds rounds, alternating; $(nproc) cores; files in $dir"
echo "qed: $("$qed" --version); $(qemu-img --version | head -1)"
echo "  qed:      ${prefix[*]} ${qed_cmd[*]}"
echo "  qemu-img: ${prefix[*]} ${qemu_cmd[*]}"
echo "  load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

qed_times=() qemu_times=() qed_cpu=() qemu_cpu=()
run_qed() {
    read -r t c < <(timed "$dir/out-qed.qed" "${qed_cmd[@]}")
    qed_times+=("$t")
    qed_cpu+=("$c")
}
run_qemu() {
    read -r t c < <(timed "$dir/out-qemu.qed" "${qemu_cmd[@]}")
    qemu_times+=("$t")
    qemu_cpu+=("$c")
}
for ((r = 1; r <= rounds; r++)); do
    if ((r % 2)); then
        run_qed
        run_qemu
    else
        run_qemu
        run_qed
    fi
done

# Both outputs must hold the source, and qed's must pass qemu-img check.
qemu-img compare -q -f raw -F qed "$src" "$dir/out-qed.qed" ||
    { echo "bench: qed's output differs from the source" >&2; exit 1; }
qemu-img compare -q -f raw -F qed "$src" "$dir/out-qemu.qed" ||
    { echo "bench: qemu-img's output differs from the source" >&2; exit 1; }
"$here/tests/qemu-check-clean" "$dir/out-qed.qed" ||
    { echo "bench: qed's output does not pass qemu-img check" >&2; exit 1; }

mq=$(printf '%s\n' "${qed_times[@]}" | median)
mi=$(printf '%s\n' "${qemu_times[@]}" | median)
cq=$(printf '%s\n' "${qed_cpu[@]}" | median)
ci=$(printf '%s\n' "${qemu_cpu[@]}" | median)
echo "  qed runs (s):      ${qed_times[*]}"
echo "  qemu-img runs (s): ${qemu_times[*]}"
echo "  load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
printf 'median wall time: qed %.3fs  qemu-img %.3fs  ratio qed/qemu-img %.2fx (target <= 0.70x)\n' \
    "$mq" "$mi" "$(awk -v a="$mq" -v b="$mi" 'BEGIN { print a / b }')"
printf 'median CPU time:  qed %.3fs  qemu-img %.3fs  ratio qed/qemu-img %.2fx\n' \
    "$cq" "$ci" "$(awk -v a="$cq" -v b="$ci" 'BEGIN { print a / b }')"
echo "output sizes: qed $(du -k "$dir/out-qed.qed" | cut -f1) KiB, qemu-img $(du -k "$dir/out-qemu.qed" | cut -f1) KiB allocated"
