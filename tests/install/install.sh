#!/bin/bash
# SPDX-License-Identifier: MIT
# `make install` into a temporary DESTDIR: every file in its place with the
# right mode, the shared library's soname and symlinks, the pkg-config file
# naming the PREFIX (never the DESTDIR), the installed qed running, other
# PREFIX/LIBDIR choices, a second install over the first, and `make
# uninstall` leaving nothing behind.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/tests/interop/lib.sh"
require_cmd make readelf flock

# make_in_tree NAME MAKE-ARGS... — one test point: make in the source tree
# (with the BUILD of `make check`), under a lock: test scripts running in
# parallel must not build the same objects at once.
make_in_tree() {
    local name=$1
    shift
    mkdir -p "${BUILD:-$ROOT/build}"
    tap_cmd "$name" flock "${BUILD:-$ROOT/build}/.install.lock" \
        env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
        make -C "$ROOT" ${BUILD:+BUILD="$BUILD"} LDCONFIG= "$@"
}

D=$T/dest
P=/usr/local
make_in_tree "make install DESTDIR=... PREFIX=$P" install DESTDIR="$D" PREFIX="$P" ||
    done_testing # nothing else can be tested

# ---- the files -----------------------------------------------------------------
want_file() { # want_file PATH MODE
    local f=$D$P/$1 mode
    if [ ! -f "$f" ] || [ -L "$f" ]; then
        fail "installs $P/$1" "missing or not a regular file: $f"
        return
    fi
    mode=$(stat -c %a "$f")
    tap_is "$mode" "$2" "installs $P/$1 (mode $2)"
}
want_file bin/qed 755
want_file lib/libqed.so.2.0.0 755
want_file lib/libqed.a 644
want_file include/qed.h 644
want_file lib/pkgconfig/libqed.pc 644
want_file share/man/man1/qed.1 644
want_file share/man/man3/libqed.3 644
tap_is "$(readlink "$D$P/lib/libqed.so.2")" libqed.so.2.0.0 "libqed.so.2 -> libqed.so.2.0.0"
tap_is "$(readlink "$D$P/lib/libqed.so")" libqed.so.2.0.0 "libqed.so (for -lqed) -> libqed.so.2.0.0"
tap_is "$(cd "$D" && find . \( -type f -o -type l \) | sort | tr '\n' ' ')" \
    "./usr/local/bin/qed ./usr/local/include/qed.h ./usr/local/lib/libqed.a ./usr/local/lib/libqed.so ./usr/local/lib/libqed.so.2 ./usr/local/lib/libqed.so.2.0.0 ./usr/local/lib/pkgconfig/libqed.pc ./usr/local/share/man/man1/qed.1 ./usr/local/share/man/man3/libqed.3 " \
    "nothing else is installed"
run cmp "$ROOT/include/qed.h" "$D$P/include/qed.h"
ok "$RC" "the installed qed.h is include/qed.h"

# ---- the shared library --------------------------------------------------------------
dyn=$(readelf -d "$D$P/lib/libqed.so.2.0.0" 2>&1)
tap_like "$dyn" 'SONAME.*\[libqed\.so\.2\]' "soname is libqed.so.2"
tap_like "$dyn" 'NEEDED.*\[liburing\.so' "libqed.so links liburing"
tap_is "$(readelf -h "$D$P/lib/libqed.so.2.0.0" | awk '/Type:/ {print $2}')" DYN \
    "libqed.so.2.0.0 is a shared object"
tap_is "$(readelf -V "$D$P/lib/libqed.so.2.0.0" | grep -c 'Name: LIBQED_2.0')" 1 \
    "symbol version node LIBQED_2.0 is defined"
if readelf -d "$D$P/lib/libqed.so.2.0.0" | grep -q TEXTREL; then
    fail "no text relocations (position-independent code)"
else
    pass "no text relocations (position-independent code)"
fi
# Every object of the static library is in it.
nobj=$(ar t "$D$P/lib/libqed.a" | wc -l)
nsrc=$(cd "$ROOT" && ls lib/*/*.c | wc -l)
tap_is "$nobj" "$nsrc" "libqed.a holds one object per library source"

# ---- the pkg-config file ---------------------------------------------------------
pc=$D$P/lib/pkgconfig/libqed.pc
tap_like "$(grep '^prefix=' "$pc")" "^prefix=$P\$" "libqed.pc: prefix is PREFIX"
if grep -q "$D" "$pc"; then
    fail "libqed.pc does not name the DESTDIR" "$(cat "$pc")"
else
    pass "libqed.pc does not name the DESTDIR"
fi
tap_like "$(grep '^Libs:' "$pc")" '^Libs: -L\$\{libdir\} -lqed$' "libqed.pc: Libs"
tap_like "$(grep '^Libs.private:' "$pc")" '^Libs.private: -luring -lpthread -lcurl$' "libqed.pc: Libs.private"
tap_like "$(grep '^Cflags:' "$pc")" '^Cflags: -I\$\{includedir\}$' "libqed.pc: Cflags"
version=$(sed -n 's/.*define QED_VERSION_STRING "\(.*\)".*/\1/p' "$ROOT/include/qed.h")
tap_like "$(grep '^Version:' "$pc")" "^Version: $version\$" "libqed.pc: Version is QED_VERSION_STRING ($version)"

# ---- the installed qed ------------------------------------------------------------
run "$D$P/bin/qed" --version
tap_like "$RC $(cat "$OUT")" "^0 qed \\(libqed\\) $version\$" "the installed qed runs (--version)"
run "$D$P/bin/qed" create -q "$T/x.qed" 1M
ok "$RC" "the installed qed creates an image"
if readelf -d "$D$P/bin/qed" | grep -q 'NEEDED.*libqed'; then
    fail "bin/qed does not need libqed.so at run time"
else
    pass "bin/qed does not need libqed.so at run time"
fi

# ---- again over the first install; other directories -----------------------------------
make_in_tree "a second make install over the first" install DESTDIR="$D" PREFIX="$P"
tap_is "$(readlink "$D$P/lib/libqed.so")" libqed.so.2.0.0 "the symlinks survive a second install"

D2=$T/dest2
make_in_tree "make install PREFIX=/usr LIBDIR=/usr/lib/x86_64-linux-gnu MANDIR=/usr/share/man" \
    install DESTDIR="$D2" PREFIX=/usr LIBDIR=/usr/lib/x86_64-linux-gnu MANDIR=/usr/share/man
pc2=$D2/usr/lib/x86_64-linux-gnu/pkgconfig/libqed.pc
tap_is "$(grep -E '^(prefix|libdir|includedir)=' "$pc2" 2>&1 | tr '\n' ' ')" \
    'prefix=/usr libdir=${exec_prefix}/lib/x86_64-linux-gnu includedir=${prefix}/include ' \
    "libqed.pc follows PREFIX and LIBDIR"
[ -f "$D2/usr/share/man/man1/qed.1" ] && [ -f "$D2/usr/lib/x86_64-linux-gnu/libqed.so.2.0.0" ] &&
    [ -f "$D2/usr/bin/qed" ] && [ -f "$D2/usr/include/qed.h" ]
ok $? "files go to the LIBDIR and MANDIR given"

D3="$T/dest with spaces"
make_in_tree "make install into a DESTDIR with spaces" install DESTDIR="$D3" PREFIX="$P"
[ -f "$D3$P/lib/libqed.so.2.0.0" ]
ok $? "installs under a DESTDIR with spaces"

# ---- uninstall ------------------------------------------------------------------------
make_in_tree "make uninstall" uninstall DESTDIR="$D" PREFIX="$P"
tap_is "$(cd "$D" && find . \( -type f -o -type l \) | sort | tr '\n' ' ')" "" \
    "uninstall removes every installed file and link"
make_in_tree "make uninstall when nothing is installed" uninstall DESTDIR="$D" PREFIX="$P"
make_in_tree "make uninstall (other directories)" uninstall DESTDIR="$D2" PREFIX=/usr \
    LIBDIR=/usr/lib/x86_64-linux-gnu MANDIR=/usr/share/man
tap_is "$(cd "$D2" && find . \( -type f -o -type l \) | wc -l)" 0 \
    "uninstall with the same directories removes everything"

done_testing
