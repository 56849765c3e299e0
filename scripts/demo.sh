#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# `make demo`: a short walk through the qed tool on a QED image with a raw
# backing file, checking every result.  QED is the path of the qed binary.
set -euo pipefail

QED=${QED:-build/qed}
QED=$(cd "$(dirname "$QED")" && pwd)/$(basename "$QED")
work=$(mktemp -d)
trap 'status=$?; rm -rf "$work"; [ $status -eq 0 ] || echo "demo: FAILED" >&2' EXIT
cd "$work"

step() { printf '\n== %s\n' "$*"; }
# Shows a command the way one would type it, then runs it.
run() {
    local shown=() arg
    for arg in "$@"; do
        [[ $arg == "$QED" ]] && arg=qed
        [[ $arg == *[[:space:]]* ]] && arg="'$arg'"
        shown+=("$arg")
    done
    printf '$ %s\n' "${shown[*]}"
    "$@"
}
# N bytes of one byte value (octal escape for tr), to build the expected image.
bytes() { head -c "$2" /dev/zero | tr '\0' "\\$1"; }

step "A 4 MiB raw backing file full of 0x11"
truncate -s 4M base.raw
run "$QED" io -f raw -c 'write -P 0x11 0 4M' base.raw

step "A QED image on top of it, the size taken from the backing file"
run "$QED" create -b base.raw -F raw sample.qed

step "Write 64 KiB of 0x5a at 1 MiB and 128 KiB of zeroes at 2 MiB"
run "$QED" io -c 'write -P 0x5a 1M 64k' -c 'write -z 2M 128k' sample.qed

step "Look at it"
run "$QED" info sample.qed
run "$QED" info --output=json sample.qed
run "$QED" map --output=json sample.qed

step "Read back what was written and what shows through from base.raw"
run "$QED" io -r -c 'read -q -P 0x5a 1M 64k' -c 'read -q -P 0 2M 128k' \
    -c 'read -q -P 0x11 0 1M' -c 'read -q -P 0x11 1088k 960k' \
    -c 'read -q -P 0x11 2176k 1920k' sample.qed
echo "all ranges verified"

step "A wrong pattern is caught (exit status 1 expected)"
if run "$QED" io -r -c 'read -q -P 0x11 1M 4k' sample.qed; then
    echo "demo: a pattern mismatch went unnoticed" >&2
    exit 1
fi

step "Convert to raw and compare with the bytes expected"
run "$QED" convert -O raw sample.qed out.raw
cp base.raw expected.raw
bytes 132 65536 | dd of=expected.raw bs=64k seek=16 conv=notrunc status=none
bytes 0 131072 | dd of=expected.raw bs=64k seek=32 conv=notrunc status=none
run cmp expected.raw out.raw
echo "out.raw matches"

step "Convert to a standalone QED image and back"
run "$QED" convert -O qed sample.qed flat.qed
run "$QED" convert -O raw flat.qed flat.raw
run cmp expected.raw flat.raw
echo "flat.qed matches"

if command -v qemu-img >/dev/null; then
    step "QEMU agrees"
    run qemu-img check sample.qed
    run qemu-img compare -f qed -F raw sample.qed expected.raw
fi

step "Serve it over NBD and read it back with a real client"
echo "\$ qed serve -r -t -k $PWD/nbd.sock sample.qed &"
"$QED" serve -r -t -k "$PWD/nbd.sock" sample.qed &
server=$!
trap 'status=$?; kill "$server" 2>/dev/null; rm -rf "$work"; [ $status -eq 0 ] || echo "demo: FAILED" >&2' EXIT
for _ in $(seq 100); do [ -S nbd.sock ] && break; sleep 0.05; done
run nbdinfo "nbd+unix:///?socket=$PWD/nbd.sock"
run nbdcopy "nbd+unix:///?socket=$PWD/nbd.sock" served.raw
echo "\$ kill -TERM \$server   # clean shutdown: flush, close, exit 0"
kill -TERM "$server"
wait "$server"
trap 'status=$?; rm -rf "$work"; [ $status -eq 0 ] || echo "demo: FAILED" >&2' EXIT
run cmp expected.raw served.raw
echo "the export matches"

printf '\ndemo: OK\n'
