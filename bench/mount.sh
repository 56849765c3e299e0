#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# FUSE export benchmark: fio (libaio, O_DIRECT, and psync with 16 jobs) on
# the file `qed mount` shows against the same on qemu-storage-daemon's
# FUSE export of the same image, alternating which goes first, median of
# several rounds and their ratio.
#   - 4 KiB random reads, depth 16, of a filled 1 GiB image (libaio; psync)
#   - 4 KiB random writes, depth 16, into a fresh 16 GiB image (allocating)
#   - 1 MiB sequential reads, depth 16, of the filled image
#
#   bench/mount.sh [ROUNDS]          (default 5; needs build/qed: run `make`)
#   BENCH_DIR=/path bench/mount.sh   where the images go (default /var/tmp)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/common.bash
. "$here/bench/common.bash"
qed=${QED:-$here/build/qed}
rounds=${1:-5}
runtime=${BENCH_RUNTIME:-4}
bench_prepare mount qemu-storage-daemon qemu-img fio fusermount3
mnt="$dir/mnt"
pid=
stop_export() {
    [ -n "$pid" ] || return 0
    if [ "$who" = qed ]; then fusermount3 -u "$mnt"; else kill "$pid"; fi
    wait "$pid" 2>/dev/null || true
    pid=
}
trap 'stop_export; rm -rf "$dir"' EXIT

mounted() { awk -v p="$mnt" '$5 == p { f = 1 } END { exit !f }' /proc/self/mountinfo; }

start_export() { # WHO IMAGE
    who=$1
    : >"$mnt"
    case $who in
    qed) "$qed" mount "$2" "$mnt" & ;;
    qsd) qemu-storage-daemon \
            --blockdev "driver=file,node-name=f,filename=$2,aio=io_uring" \
            --blockdev driver=qed,node-name=q,file=f \
            --export "type=fuse,id=e,node-name=q,mountpoint=$mnt,writable=on" & ;;
    esac
    pid=$!
    for _ in $(seq 500); do mounted && return 0; sleep 0.01; done
    echo "bench: $who did not mount" >&2
    return 1
}

# fio RW BS [fio options...] -> IOPS and MiB/s
run_fio() {
    local rw=$1 bs=$2
    shift 2
    fio --name=bench --filename="$mnt" --rw="$rw" --bs="$bs" --direct=1 \
        --randrepeat=1 --norandommap --group_reporting --output-format=json \
        "$@" 2>/dev/null |
        sed -n '/^{/,$p' | perl -MJSON::PP -0777 -ne '$j=decode_json($_); $t=$j->{jobs}[0];
            printf "%.0f %.1f\n", $t->{read}{iops} + $t->{write}{iops},
                ($t->{read}{bw} + $t->{write}{bw}) / 1024'
}

prepare() { # fresh|filled FILE SIZE
    rm -f "$2"
    "$qed" create -q "$2" "$3"
    if [ "$1" = filled ]; then
        "$qed" bench -w -c $(( $(numfmt --from=iec "$3") / 65536 )) -d 16 -s 64k "$2" >/dev/null
    fi
}

workload() { # NAME UNIT(IOPS|MiB/s) PREP SIZE RW BS [fio options...]
    local name=$1 unit=$2 prep=$3 wsize=$4 rw=$5 bs=$6 q=() m=() r col
    shift 6
    col=$([ "$unit" = IOPS ] && echo 1 || echo 2)
    [ "$prep" = filled ] && prepare filled "$dir/filled.qed" 1G
    for ((r = 1; r <= rounds; r++)); do
        local order=(qed qsd)
        ((r % 2 == 0)) && order=(qsd qed)
        for w in "${order[@]}"; do
            img="$dir/filled.qed"
            if [ "$prep" = fresh ]; then img="$dir/fresh.qed"; prepare fresh "$img" "$wsize"; fi
            start_export "$w" "$img"
            v=$(run_fio "$rw" "$bs" "$@" | cut -d' ' -f"$col")
            stop_export
            if [ "$w" = qed ]; then q+=("$v"); else m+=("$v"); fi
        done
    done
    local mq mm
    mq=$(printf '%s\n' "${q[@]}" | median)
    mm=$(printf '%s\n' "${m[@]}" | median)
    printf '%-40s qed %8.0f %-5s qemu-storage-daemon %8.0f %-5s ratio %.2fx\n' \
        "$name" "$mq" "$unit" "$mm" "$unit" "$(awk -v a="$mq" -v b="$mm" 'BEGIN{print a/b}')"
    echo "    qed: ${q[*]}   qemu-storage-daemon: ${m[*]}"
}

echo "FUSE export benchmark: fio on the mounted file, O_DIRECT, ${runtime}s per timed run, $rounds rounds, median; $(nproc) cores"
echo "qed: $("$qed" --version); $(qemu-storage-daemon --version | head -1); $(fio --version)"
timed=(--runtime="$runtime" --time_based)
workload "4k randread, libaio depth 16" IOPS filled 1G randread 4k \
    --ioengine=libaio --iodepth=16 "${timed[@]}"
workload "4k randread, psync 16 jobs" IOPS filled 1G randread 4k \
    --ioengine=psync --numjobs=16 "${timed[@]}"
workload "4k randwrite (allocating), libaio depth 16" IOPS fresh 16G randwrite 4k \
    --ioengine=libaio --iodepth=16 --number_ios=20000
workload "1M sequential read, libaio depth 16" MiB/s filled 1G read 1M \
    --ioengine=libaio --iodepth=16 "${timed[@]}"
