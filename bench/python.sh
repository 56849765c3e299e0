#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A Python program copying a QED image to a raw file: through the qed module
# (shutil.copyfileobj from qed.open, 1 MiB at a time) against what it does
# without the module — qemu-img convert -O raw into a temporary file that
# Python then copies to the destination (qemu-img cannot write raw into a
# pipe: "Could not resize file") — and against qemu-img convert -O raw
# straight to the destination, run from Python.  1 GiB image, 1 MiB stripes
# of random data and holes alternating; alternating rounds, median.
#
#   bench/python.sh [ROUNDS]   (default 5; needs build/ with the qed tool and
#                               libqed.a; BENCH_DIR as the others)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/common.bash
. "$here/bench/common.bash"
qed=${QED:-$here/build/qed}
build=$(dirname "$qed")
rounds=${1:-5}
py=/usr/bin/python3
bench_prepare python qemu-img "$py"

(cd "$here/python" && QED_BUILD="$build" "$py" setup.py -q build \
    --build-base "$dir/pybuild" --build-lib "$dir/pylib") >/dev/null
make_striped_source "$dir/src.raw"
"$qed" convert -O qed "$dir/src.raw" "$dir/img.qed"
rm "$dir/src.raw"

with_module() {
    PYTHONPATH="$dir/pylib" "$py" -c 'import qed, shutil, sys
with qed.open(sys.argv[1]) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)' "$dir/img.qed" "$dir/out.raw"
}
through_temp() {
    "$py" -c 'import shutil, subprocess, sys
subprocess.run(["qemu-img", "convert", "-O", "raw", sys.argv[1], sys.argv[3]], check=True)
with open(sys.argv[3], "rb") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)' "$dir/img.qed" "$dir/out.raw" "$dir/tmp.raw"
    rm -f "$dir/tmp.raw"
}
qemu_direct() {
    "$py" -c 'import subprocess, sys
subprocess.run(["qemu-img", "convert", "-O", "raw", sys.argv[1], sys.argv[2]], check=True)' \
        "$dir/img.qed" "$dir/out.raw"
}

with_module
cmp "$dir/out.raw" <(qemu-img convert -O raw "$dir/img.qed" "$dir/check.raw" && cat "$dir/check.raw") ||
    { echo "bench: the copy differs" >&2; exit 1; }
rm -f "$dir/check.raw" "$dir/out.raw"
sync
a=() b=() c=()
for ((r = 1; r <= rounds; r++)); do
    order=(a b c)
    ((r % 2 == 0)) && order=(c b a)
    for who in "${order[@]}"; do
        rm -f "$dir/out.raw"
        case $who in
        a) a+=("$(seconds with_module)") ;;
        b) b+=("$(seconds through_temp)") ;;
        c) c+=("$(seconds qemu_direct)") ;;
        esac
    done
done
ma=$(printf '%s\n' "${a[@]}" | median)
mb=$(printf '%s\n' "${b[@]}" | median)
mc=$(printf '%s\n' "${c[@]}" | median)
echo "Python: copy of a 1 GiB QED image (512 MiB data) to raw, $rounds rounds, median; $(nproc) cores"
echo "qed: $("$qed" --version); $(qemu-img --version | head -1); $("$py" --version)"
printf 'qed module + shutil.copyfileobj %.3f s\n' "$ma"
printf 'qemu-img convert to a temporary file + shutil.copyfileobj %.3f s  (qed module: %.2fx its time)\n' \
    "$mb" "$(awk -v a="$ma" -v b="$mb" 'BEGIN{print a/b}')"
printf 'qemu-img convert straight to the destination %.3f s  (qed module: %.2fx its time)\n' \
    "$mc" "$(awk -v a="$ma" -v b="$mc" 'BEGIN{print a/b}')"
echo "    module: ${a[*]}   temp: ${b[*]}   qemu-img: ${c[*]}"
