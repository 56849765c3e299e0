#!/bin/bash
# SPDX-License-Identifier: MIT
# pkg-config finds the libqed installed into a temporary DESTDIR (through
# PKG_CONFIG_PATH, with PKG_CONFIG_SYSROOT_DIR or --define-prefix to map
# PREFIX into the DESTDIR), and its flags build and run a program outside the
# source tree, linked dynamically and statically.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/tests/interop/lib.sh"
require_cmd make pkg-config cc flock readelf

B=${BUILD:-$ROOT/build}
D=$T/dest
P=/usr/local
mkdir -p "$B"
tap_cmd "make install into a temporary DESTDIR" flock "$B/.install.lock" \
    env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
    make -C "$ROOT" ${BUILD:+BUILD="$BUILD"} LDCONFIG= install DESTDIR="$D" PREFIX="$P" ||
    done_testing # nothing else can be tested

export PKG_CONFIG_PATH=$D$P/lib/pkgconfig
unset PKG_CONFIG_LIBDIR PKG_CONFIG_SYSROOT_DIR
version=$(sed -n 's/.*define QED_VERSION_STRING "\(.*\)".*/\1/p' "$ROOT/include/qed.h")

tap_cmd "pkg-config --exists libqed" pkg-config --print-errors --exists libqed
run pkg-config --modversion libqed
tap_is "$(cat "$OUT")" "$version" "pkg-config --modversion libqed"
if pkg-config --help 2>&1 | grep -q -- --validate; then
    tap_cmd "pkg-config --validate libqed" pkg-config --validate libqed
else
    skip "pkg-config --validate libqed" "this pkg-config has no --validate"
fi
run pkg-config --cflags --libs libqed
tap_is "$(echo $(cat "$OUT"))" "-I$P/include -L$P/lib -lqed" \
    "pkg-config --cflags --libs libqed (as installed under PREFIX)"
run pkg-config --static --libs libqed
tap_is "$(echo $(cat "$OUT"))" "-L$P/lib -lqed -luring -lpthread -lcurl -lnbd" \
    "pkg-config --static --libs libqed adds Libs.private (libcurl among them: its .pc file names libraries that are not installed) and libnbd (Requires.private)"
run env PKG_CONFIG_SYSROOT_DIR="$D" pkg-config --cflags --libs libqed
tap_is "$(echo $(cat "$OUT"))" "-I$D$P/include -L$D$P/lib -lqed" \
    "pkg-config --cflags --libs libqed with PKG_CONFIG_SYSROOT_DIR=DESTDIR"
run pkg-config --define-prefix --cflags --libs libqed
tap_is "$(echo $(cat "$OUT"))" "-I$D$P/include -L$D$P/lib -lqed" \
    "pkg-config --define-prefix --cflags --libs libqed"

# ---- a program outside the tree --------------------------------------------------
mkdir prog
cat >prog/prog.c <<'EOF'
#include <stdio.h>
#include <qed.h>

int main(int argc, char **argv)
{
    qed_image *img;
    struct qed_image_info info;
    qed_error err;

    if (argc != 2)
        return 2;
    qed_image_info_init(&info);
    if (qed_open(argv[1], NULL, &img, &err) < 0 ||
        qed_get_info(img, &info, &err) < 0) {
        fprintf(stderr, "%s: %s\n", argv[1], err.message);
        return 1;
    }
    printf("%s %llu %u %s\n", qed_format_name(info.format),
           (unsigned long long)info.virtual_size, info.cluster_size,
           qed_loop_engine_name(qed_image_loop(img)));
    return qed_close(img, &err) < 0;
}
EOF
cd prog || exit 1
export PKG_CONFIG_SYSROOT_DIR=$D
# shellcheck disable=SC2046
run cc -std=c11 -Wall -Wextra -Werror -o prog prog.c $(pkg-config --cflags --libs libqed)
ok "$RC" "cc prog.c \$(pkg-config --cflags --libs libqed) builds outside the tree" "$(head -c 2000 "$ERR")"
tap_like "$(readelf -d prog 2>&1)" 'NEEDED.*\[libqed\.so\.2\]' "prog is linked against libqed.so.2"
"$D$P/bin/qed" create -q -o cluster_size=4k img.qed 3M
run env -u QED_IO_ENGINE LD_LIBRARY_PATH="$D$P/lib" ./prog img.qed
tap_like "$RC $(cat "$OUT")" '^0 qed 3145728 4096 (io_uring|threads)$' "prog runs with LD_LIBRARY_PATH into the DESTDIR"
plain="$RC $(cat "$OUT")"
# The environment is the qed tool's to read, not the library's: a program
# gets the engine it asks for (here the default) whatever QED_IO_ENGINE says.
other=threads
case $plain in *threads) other=uring ;; esac
run env LD_LIBRARY_PATH="$D$P/lib" QED_IO_ENGINE=$other ./prog img.qed
tap_is "$RC $(cat "$OUT")" "$plain" "QED_IO_ENGINE=$other does not change what the library does"
# Unless one is installed system-wide, the program finds no libqed.so.2 on
# its own: the one it ran with above is the staged copy.
if [ -e "$P/lib/libqed.so.2" ] || ldconfig -p 2>/dev/null | grep -q 'libqed\.so\.2 '; then
    skip "without LD_LIBRARY_PATH, libqed.so.2 is not found" "a libqed.so.2 is installed on this system"
else
    run ./prog img.qed
    tap_like "$RC $(cat "$ERR")" '^127 .*libqed\.so\.2' "without LD_LIBRARY_PATH, libqed.so.2 is not found"
fi
run env LD_LIBRARY_PATH="$D$P/lib" ./prog missing.qed
tap_like "$RC $(cat "$ERR")" '^1 missing.qed: .*No such file' "errors come back through qed_error"

# libqed.a itself; the libraries it needs as the system has them (libnbd's
# own dependencies are not in its .pc file, so it cannot be linked
# statically from pkg-config alone).
# shellcheck disable=SC2046
run cc -std=c11 -Wall -Wextra -Werror -o prog-static prog.c $(pkg-config --cflags libqed) \
    $(pkg-config --static --libs libqed | sed 's/-lqed/-l:libqed.a/')
ok "$RC" "links statically with pkg-config --static --libs" "$(head -c 2000 "$ERR")"
if readelf -d prog-static 2>/dev/null | grep -q 'NEEDED.*libqed'; then
    fail "the static link does not need libqed.so"
else
    pass "the static link does not need libqed.so"
fi
run ./prog-static img.qed
tap_like "$RC $(cat "$OUT")" '^0 qed 3145728 4096 ' "the statically linked prog runs"

done_testing
