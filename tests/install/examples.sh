#!/bin/bash
# SPDX-License-Identifier: MIT
# The examples (examples/*.c) and the example of libqed(3), copied out of
# the source tree and built against a libqed installed into a temporary
# DESTDIR with pkg-config (gcc and clang, strict warnings; examples/Makefile
# too), then run: raw2qed copies raw files into QED images that qed and QEMU
# check clean, qed-cat streams images (QED with a backing chain, raw) back
# byte for byte.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/tests/interop/lib.sh"
require_cmd make cc flock pkg-config cmp truncate

B=${BUILD:-$ROOT/build}
D=$T/dest
P=/usr/local
mkdir -p "$B"
tap_cmd "make install into a temporary DESTDIR" flock "$B/.install.lock" \
    env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
    make -C "$ROOT" ${BUILD:+BUILD="$BUILD"} LDCONFIG= install DESTDIR="$D" PREFIX="$P" ||
    done_testing # nothing else can be tested
export PKG_CONFIG_PATH=$D$P/lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$D
QEDI=$D$P/bin/qed
RUNENV=(env LD_LIBRARY_PATH="$D$P/lib")

mkdir ex
cp "$ROOT"/examples/*.c "$ROOT"/examples/Makefile ex/
cd ex || exit 1

# ---- build -------------------------------------------------------------------------
for cc in gcc clang; do
    command -v "$cc" >/dev/null || { skip "$cc builds the examples" "$cc is not installed"; continue; }
    for prog in qed-cat raw2qed qed-poll-sum; do
        # shellcheck disable=SC2046
        tap_cmd "$cc -std=c11 -pedantic -Wall -Wextra -Werror: $prog.c with pkg-config" \
            "$cc" -std=c11 -pedantic -Wall -Wextra -Wshadow -Werror -O2 -o "$prog-$cc" "$prog.c" \
            $(pkg-config --cflags --libs libqed)
    done
done
tap_cmd "examples/Makefile builds them (pkg-config, outside the tree)" \
    env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make CFLAGS="-O2 -Wall -Wextra -Werror"
tap_cmd "examples/Makefile STATIC=1 links libqed.a" \
    env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -B STATIC=1 CFLAGS="-O2 -Wall -Wextra -Werror" \
    qed-cat
if readelf -d qed-cat 2>/dev/null | grep -q 'NEEDED.*libqed'; then
    fail "STATIC=1: qed-cat does not need libqed.so"
else
    pass "STATIC=1: qed-cat does not need libqed.so"
fi
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -B -s CFLAGS="-O2" >/dev/null 2>&1
tap_like "$(readelf -d raw2qed 2>&1)" 'NEEDED.*\[libqed\.so\.2\]' "raw2qed is linked against libqed.so.2"

# ---- run ---------------------------------------------------------------------------------
# A raw file: random data, holes, a run of zeros written out, data straddling
# qed-cat's 1 MiB chunks, and an unaligned tail.
truncate -s $((20 * MiB + 777)) in.raw
head -c 300000 /dev/urandom | dd of=in.raw conv=notrunc status=none
head -c $((3 * MiB)) /dev/zero | dd of=in.raw bs=1M seek=2 conv=notrunc status=none
head -c $((2 * MiB + 5000)) /dev/urandom | dd of=in.raw bs=4096 seek=1500 conv=notrunc status=none
head -c 777 /dev/urandom | dd of=in.raw bs=1 seek=$((20 * MiB)) conv=notrunc status=none

for cc in gcc clang; do
    [ -x raw2qed-$cc ] || continue
    run "${RUNENV[@]}" ./raw2qed-$cc -c 4k in.raw out-$cc.qed
    tap_like "$RC $(cat "$OUT")" "^0 out-$cc.qed: $((20 * MiB + 777)) bytes, " "raw2qed ($cc) copies a raw file"
done
tap_cmd "qed check: the image raw2qed wrote is clean" "$QEDI" check out-gcc.qed
# qed-poll-sum drives the image from its own poll() loop.
for cc in gcc clang; do
    [ -x qed-poll-sum-$cc ] || continue
    run "${RUNENV[@]}" ./qed-poll-sum-$cc in.raw
    want="$RC $(cat "$OUT")"
    run "${RUNENV[@]}" ./qed-poll-sum-$cc out-gcc.qed
    tap_is "$RC $(cat "$OUT")" "$want" "qed-poll-sum ($cc): the QED copy sums like the raw file ($want)"
    tap_like "$want" '^0 [0-9]+ bytes, fnv1a [0-9a-f]{16}$' "qed-poll-sum ($cc) reads the raw file through its poll loop"
done
if command -v qemu-img >/dev/null; then
    tap_cmd "qemu-img check: clean too" qemu-img check out-gcc.qed
    tap_cmd "qemu-img compare: it reads like the raw file" qemu-img compare -f qed -F raw out-gcc.qed in.raw
else
    skip "qemu-img check: clean too" "qemu-img is not installed"
    skip "qemu-img compare: it reads like the raw file" "qemu-img is not installed"
fi
run "$QEDI" info --output=json out-gcc.qed
cp "$OUT" info.json
tap_is "$(json_get info.json cluster-size)/$(json_get info.json virtual-size)" \
    "4096/$((20 * MiB + 1024))" "raw2qed -c 4k: cluster size, size rounded up to 512"
# Zero clusters are left out: the 3 MiB of written zeros and the holes are
# not allocated (300000 + 2 MiB + 5000 + 777 bytes of data, in 4k clusters).
run "$QEDI" check --output=json out-gcc.qed
cp "$OUT" check.json
tap_is "$(json_get check.json allocated-clusters)" $(((303104 + 2 * MiB + 8192 + 4096) / 4096)) \
    "raw2qed leaves all-zero clusters unallocated"

for cc in gcc clang; do
    [ -x qed-cat-$cc ] || continue
    rm -f cat.raw
    "${RUNENV[@]}" ./qed-cat-$cc out-gcc.qed >cat.raw 2>cat.err
    ok $? "qed-cat ($cc) streams the image" "$(cat cat.err)"
    cp in.raw in-padded.raw && truncate -s $((20 * MiB + 1024)) in-padded.raw
    same_raw "qed-cat ($cc): the raw file's bytes, then zeros to the virtual size" in-padded.raw cat.raw
done

# Through a backing chain, built with the installed qed.
"$QEDI" create -q -b out-gcc.qed -F qed top.qed
"$QEDI" io -c "write -P 0x5a $((MiB - 100)) 300" -c "write -z 0 4k" top.qed >/dev/null
cp in-padded.raw want.raw
printf '\x5a%.0s' $(seq 300) | dd of=want.raw bs=1 seek=$((MiB - 100)) conv=notrunc status=none
dd if=/dev/zero of=want.raw bs=4096 count=1 conv=notrunc status=none
"${RUNENV[@]}" ./qed-cat top.qed >chain.raw 2>cat.err
ok $? "qed-cat reads an image over a backing file" "$(cat cat.err)"
same_raw "qed-cat: what the chain reads" want.raw chain.raw
"${RUNENV[@]}" ./qed-cat in.raw >raw.raw 2>cat.err
ok $? "qed-cat reads a raw image" "$(cat cat.err)"
# A raw image's virtual size is its length rounded up to 512, as in QEMU.
same_raw "qed-cat: a raw image as it is (size rounded up to 512)" in-padded.raw raw.raw
"$QEDI" create -q empty.qed 0
run "${RUNENV[@]}" ./qed-cat empty.qed
tap_is "$RC/$(file_size "$OUT")" "0/0" "qed-cat: an empty image gives no output"

# Errors.
run "${RUNENV[@]}" ./qed-cat missing.qed
tap_like "$RC $(cat "$ERR")" '^1 qed-cat: missing.qed: No such file' "qed-cat: a missing image, exit 1"
run "${RUNENV[@]}" ./qed-cat
tap_like "$RC $(cat "$ERR")" '^2 usage: qed-cat' "qed-cat: no argument, usage and exit 2"
run "${RUNENV[@]}" ./raw2qed -c 3000 in.raw bad.qed
tap_like "$RC $(cat "$ERR")" '^1 raw2qed: bad.qed: cluster size 3000 is not a power of two' \
    "raw2qed: the library's error message for a bad cluster size"
run "${RUNENV[@]}" ./raw2qed -c 12q in.raw bad.qed
tap_like "$RC $(cat "$ERR")" "^2 raw2qed: -c 12q: " "raw2qed: qed_parse_size rejects a bad size"

# The progress line, on a terminal (script(1) provides one).
if command -v script >/dev/null; then
    run script -qec "env LD_LIBRARY_PATH='$D$P/lib' ./raw2qed in.raw tty.qed" /dev/null
    tap_like "$RC $(tr '\r' '\n' <"$OUT" | grep -c '%')" '^0 [1-9]' "raw2qed shows progress on a terminal"
    tap_like "$(tr '\r' '\n' <"$OUT" | grep '%' | tail -1)" '100\.0% \(20 of 20 MiB\)' "... up to 100%"
    run "${RUNENV[@]}" ./raw2qed in.raw notty.qed
    if grep -q '%' "$ERR"; then
        fail "raw2qed shows no progress when stderr is not a terminal" "$(head -c 500 "$ERR")"
    else
        pass "raw2qed shows no progress when stderr is not a terminal"
    fi
else
    skip "raw2qed shows progress on a terminal" "script(1) is not installed"
fi

# ---- the example of libqed(3) ------------------------------------------------------------
# The first .EX block with main(): groff escapes turned back into C.
awk '/^\.EX/ {ex = 1; buf = ""; next}
     /^\.EE/ {if (buf ~ /int main/) {printf "%s", buf; exit} ex = 0; next}
     ex {buf = buf $0 "\n"}' "$ROOT/man/libqed.3" | sed -e 's/\\e/\\/g' -e 's/\\-/-/g' >man-example.c
tap_like "$(grep -c 'qed_open' man-example.c)" '^[1-9]' "libqed(3) has an example program"
# shellcheck disable=SC2046
run cc -std=c11 -Wall -Wextra -Werror -o man-example man-example.c $(pkg-config --cflags --libs libqed)
ok "$RC" "the libqed(3) example builds with pkg-config" "$(head -c 2000 "$ERR")"
run "${RUNENV[@]}" ./man-example out-gcc.qed
tap_is "$RC $(cat "$OUT")" "0 qed image, $((20 * MiB + 1024)) bytes" "the libqed(3) example runs"

done_testing
