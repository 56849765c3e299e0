#!/bin/bash
# SPDX-License-Identifier: MIT
# The Debian packages (debian/): dpkg-buildpackage -us -uc -b on a copy of
# the tree builds libqed2, libqed-dev, qed-utils and python3-qed; lintian
# finds no error or warning; each package holds what it should; unpacked
# into a scratch root, the qed tool says its version, the examples build
# against libqed-dev with pkg-config and read an image through libqed2, and
# python3-qed reads one through libqed2 too.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/tests/interop/lib.sh"
require_cmd dpkg-buildpackage dh dh_python3 lintian dpkg-deb pkg-config cc qemu-img
[ -x /usr/bin/python3 ] || skip_all "no /usr/bin/python3"

# The tree as git has it (or as it is, without build directories).
mkdir src
if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$ROOT" && git ls-files -co --exclude-standard -z | xargs -0 tar -cf -) | tar -xf - -C src
else
    (cd "$ROOT" && tar --exclude='./build*' --exclude='./python/build' -cf - .) | tar -xf - -C src
fi
version=$(sed -n '1s/^libqed (\([^)]*\)).*/\1/p' src/debian/changelog)
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)

TAP_TIMEOUT=600 run env -C src -u MAKEFLAGS -u MFLAGS -u MAKELEVEL dpkg-buildpackage -us -uc -b
ok "$RC" "dpkg-buildpackage -us -uc -b builds the packages" "$(tail -n 20 "$OUT" "$ERR")"
[ "$RC" -eq 0 ] || { done_testing; exit 1; }
for p in libqed2 libqed-dev qed-utils python3-qed; do
    [ -f "${p}_${version}_$arch.deb" ]
    ok $? "$p ${version} is built"
done

run lintian --fail-on error,warning "libqed_${version}_$arch.changes"
ok "$RC" "lintian: no errors, no warnings" "$(grep -E '^[EW]:' "$OUT" | head -20)"

contents() { dpkg-deb -c "${1}_${version}_$arch.deb" | awk '{print $6}' | grep -v '/$' | tr '\n' ' '; }
tap_like "$(contents libqed2)" "usr/lib/$multiarch/libqed.so.2.0.0 " "libqed2 holds the shared library"
tap_like "$(contents libqed-dev)" "usr/include/qed.h .*usr/lib/$multiarch/libqed.a .*pkgconfig/libqed.pc .*man3/libqed.3.gz" \
    "libqed-dev holds the header, the static library, libqed.pc and libqed(3)"
tap_like "$(contents qed-utils)" "usr/bin/qed .*man1/qed.1.gz" "qed-utils holds the tool and qed(1)"
tap_like "$(contents python3-qed)" "dist-packages/qed/__init__.py .*dist-packages/qed/_qed.cpython-[^ ]*\.so" \
    "python3-qed holds the module"
tap_like "$(dpkg-deb -f "python3-qed_${version}_$arch.deb" Depends)" "libqed2 \(>= " \
    "python3-qed depends on libqed2 (it links libqed.so.2)"
tap_like "$(dpkg-deb -I "libqed2_${version}_$arch.deb" symbols)" "qed_open@LIBQED_2.0" \
    "libqed2 ships a symbols file"
tap_like "$(dpkg-deb -f "qed-utils_${version}_$arch.deb" Depends)" "libqed2 \(>= " \
    "qed-utils depends on libqed2 (its qed links libqed.so.2)"

# ---- unpacked into a scratch root ---------------------------------------------------
for p in libqed2 libqed-dev qed-utils python3-qed; do
    dpkg-deb -x "${p}_${version}_$arch.deb" root
done
R=$T/root
lib=$R/usr/lib/$multiarch
run env LD_LIBRARY_PATH="$lib" "$R/usr/bin/qed" --version
tap_is "$RC $(cat "$OUT")" "0 qed (libqed) $version" "the packaged qed --version"
tap_like "$(readelf -d "$R/usr/bin/qed" 2>&1)" 'NEEDED.*\[libqed\.so\.2\]' "the packaged qed needs libqed.so.2"

LD_LIBRARY_PATH=$lib "$R/usr/bin/qed" create -q -f qed img.qed 4M
LD_LIBRARY_PATH=$lib "$R/usr/bin/qed" io -c "write -P 0x3c 1M 70000" img.qed >/dev/null
qemu-img convert -O raw img.qed img.raw
export PKG_CONFIG_PATH=$lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$R
# shellcheck disable=SC2046
run cc -std=c11 -Wall -Wextra -Werror -O2 -o qed-cat "$ROOT/examples/qed-cat.c" $(pkg-config --cflags --libs libqed)
ok "$RC" "examples/qed-cat.c builds against libqed-dev (pkg-config)" "$(cat "$ERR")"
tap_like "$(readelf -d qed-cat 2>&1)" 'NEEDED.*\[libqed\.so\.2\]' "it links libqed.so.2"
LD_LIBRARY_PATH=$lib ./qed-cat img.qed >cat.raw 2>cat.err
same_raw "and, run with libqed2, streams the image as qemu-img reads it" cat.raw img.raw

run env LD_LIBRARY_PATH="$lib" PYTHONPATH="$R/usr/lib/python3/dist-packages" /usr/bin/python3 -c '
import qed, sys
with qed.open(sys.argv[1]) as f, open(sys.argv[2], "wb") as out:
    out.write(f.read())
print(qed.__file__)' img.qed py.raw
tap_like "$(cat "$OUT")" "^$R/usr/lib/python3/dist-packages/qed/__init__.py" "python3-qed's module is the one imported" "$(cat "$ERR")"
same_raw "and reads the image through libqed2" py.raw img.raw
done_testing
