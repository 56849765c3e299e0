#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Times the image operations besides raw -> qed convert (bench/convert.sh)
# against their qemu-img counterparts, on the same files, alternating which
# tool goes first, and prints the median wall time of each and the ratio.
#
#   bench/ops.sh [ROUNDS]            (default 9, at least 3; needs build/qed)
#   BENCH_DIR=/path bench/ops.sh     where the files go (default /var/tmp)
#
# The source is a 1 GiB image of 1 MiB stripes, random data and holes
# alternating (512 MiB of data), made by qemu-img as QED.  The commit and
# rebase workloads use an overlay holding 256 MiB of data and a 64 MiB zero
# range over a copy of it.  Every run starts from fresh copies of its input
# files (made before the clock starts, then synced) and writes a fresh
# output.  Caches are warm: the files were just written.  qemu-img commit
# gets -d (keep the overlay) because qed commit leaves it as it is.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/common.bash
. "$here/bench/common.bash"
qed=${QED:-$here/build/qed}
rounds=${1:-9}
bench_prepare ops-bench qemu-img qemu-io
cd "$dir"

make_striped_source src.raw
qemu-img convert -O qed src.raw src.qed
cp --sparse=always src.qed base.orig
cp --sparse=always base.orig base.qed
qemu-img create -q -f qed -b base.qed -F qed top.orig
qemu-io -f qed -c "write -P 0x77 0 256M" -c "write -z 512M 64M" top.orig >/dev/null
sync


# seconds CMD... -> wall seconds of one run (the command must succeed)

fresh_overlay() {
    cp --sparse=always base.orig base.qed
    cp --sparse=always top.orig top.qed
}

# workload NAME PREPARE QED-COMMAND QEMU-COMMAND (commands as strings)
workload() {
    local name=$1 prepare=$2 qed_cmd=$3 qemu_cmd=$4
    local qed_times=() qemu_times=() r which
    for ((r = 1; r <= rounds; r++)); do
        for which in $( ((r % 2)) && echo "qed qemu" || echo "qemu qed"); do
            eval "$prepare"
            sync
            if [ "$which" = qed ]; then
                qed_times+=("$(eval seconds "$qed_cmd")")
            else
                qemu_times+=("$(eval seconds "$qemu_cmd")")
            fi
        done
    done
    local mq mi
    mq=$(printf '%s\n' "${qed_times[@]}" | median)
    mi=$(printf '%s\n' "${qemu_times[@]}" | median)
    printf '%-22s qed %6.3fs  qemu-img %6.3fs  ratio %.2fx\n' "$name" "$mq" "$mi" \
        "$(awk -v a="$mq" -v b="$mi" 'BEGIN { print a / b }')"
    echo "    qed: ${qed_times[*]}   qemu-img: ${qemu_times[*]}"
}

echo "image operations benchmark: $rounds rounds, alternating, median wall time; $(nproc) cores"
echo "qed: $("$qed" --version); $(qemu-img --version | head -1); files in $dir"
echo "  load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

workload "convert qed -> raw" "rm -f out.raw" \
    "$qed convert -O raw src.qed out.raw" "qemu-img convert -O raw src.qed out.raw"
workload "convert qed -> qed" "rm -f out.qed" \
    "$qed convert -O qed src.qed out.qed" "qemu-img convert -O qed src.qed out.qed"
workload "convert raw -> raw" "rm -f out.raw" \
    "$qed convert -O raw src.raw out.raw" "qemu-img convert -O raw src.raw out.raw"
workload "compare raw, qed" ":" \
    "$qed compare src.raw src.qed" "qemu-img compare src.raw src.qed"
workload "commit" fresh_overlay \
    "$qed commit top.qed" "qemu-img commit -d top.qed"
workload "rebase -b ''" fresh_overlay \
    "$qed rebase -b '' top.qed" "qemu-img rebase -b '' top.qed"

# Every output must hold what it should.
qemu-img compare -q src.raw out.raw || { echo "bench: out.raw differs from the source" >&2; exit 1; }
qemu-img compare -q src.raw out.qed || { echo "bench: out.qed differs from the source" >&2; exit 1; }
fresh_overlay
"$qed" commit -q top.qed
qemu-img compare -q top.qed base.qed || { echo "bench: commit lost data" >&2; exit 1; }
fresh_overlay
"$qed" rebase -q -b '' top.qed
cp --sparse=always base.orig base.qed
qemu-img create -q -f qed -b base.qed -F qed want.qed
qemu-io -f qed -c "write -P 0x77 0 256M" -c "write -z 512M 64M" want.qed >/dev/null
qemu-img compare -q want.qed top.qed || { echo "bench: rebase changed the content" >&2; exit 1; }
echo "  load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
