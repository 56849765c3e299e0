#!/bin/bash
# SPDX-License-Identifier: MIT
# The installed public header on its own: it compiles as strict C (C99, C11,
# C17; gcc and clang; -pedantic -Wall -Wextra -Werror) without feature-test
# macros, twice in one file, and as C++ (g++ -std=c++17, clang++ -std=c++11),
# where a program calling the library through extern "C" links and runs.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/tests/interop/lib.sh"
require_cmd make cc flock pkg-config

B=${BUILD:-$ROOT/build}
D=$T/dest
P=/usr/local
mkdir -p "$B"
tap_cmd "make install into a temporary DESTDIR" flock "$B/.install.lock" \
    env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
    make -C "$ROOT" ${BUILD:+BUILD="$BUILD"} LDCONFIG= install DESTDIR="$D" PREFIX="$P" ||
    done_testing # nothing else can be tested
export PKG_CONFIG_PATH=$D$P/lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$D
INC=$D$P/include

# ---- C ------------------------------------------------------------------------------
printf '#include <qed.h>\n' >only.c
printf '#include <qed.h>\n#include <qed.h>\nint main(void) { return QED_MIN_TABLE_SIZE - 1; }\n' >twice.c
# Every type and macro of the header used once, so that its definitions are
# compiled too, not only parsed.
cat >use.c <<'EOF'
#include <qed.h>

static void on_done(void *opaque, int ret, const qed_error *err)
{
    (void)opaque; (void)ret; (void)err;
}

int main(void)
{
    qed_error err = { 0, "" };
    struct qed_open_options oo = { sizeof(struct qed_open_options),
                                   QED_OPEN_RDWR | QED_OPEN_NO_BACKING, QED_FORMAT_QED,
                                   QED_CACHE_NONE, QED_ENGINE_THREADS, NULL, 0,
                                   QED_LOCK_ON, NULL, false, NULL, NULL, NULL,
                                   NULL, NULL, QED_REMOTE_CACHE_OFF };
    struct qed_create_options co = { sizeof(struct qed_create_options), 1u << 20, false,
                                     QED_DEFAULT_CLUSTER_SIZE,
                                     QED_DEFAULT_TABLE_SIZE, NULL, QED_FORMAT_RAW,
                                     QED_PREALLOC_METADATA, QED_LOCK_OFF, NULL };
    struct qed_block_status bs = { sizeof(struct qed_block_status), 0, 0, false, false,
                                   false, false, 0 };
    struct qed_check_result cr = { sizeof(struct qed_check_result), 0, 0, 0, 0, 0, 0, 0,
                                   0, 0 };
    struct qed_image_info info;
    struct qed_op_options op;
    struct qed_convert_options cv;
    struct qed_compare_result cmp;
    struct qed_commit_options cm;
    struct qed_compact_result cp;
    qed_callback *cb = on_done;
    unsigned long long f = QED_FEATURE_MASK | QED_MAGIC;
    /* The init functions are static inline: compiled here, with -Wconversion. */
    qed_open_options_init(&oo);
    qed_create_options_init(&co);
    qed_block_status_init(&bs);
    qed_check_result_init(&cr);
    qed_image_info_init(&info);
    qed_op_options_init(&op);
    qed_convert_options_init(&cv);
    qed_compare_result_init(&cmp);
    qed_commit_options_init(&cm);
    qed_compact_result_init(&cp);
    (void)oo; (void)co; (void)bs; (void)cr; (void)cb; (void)f;
    (void)QED_VERSION_STRING; (void)QED_CHECK_REPAIR_ALL; (void)QED_ZERO_MAY_UNMAP;
    (void)QED_LOOP_HANGUP; (void)QED_MAX_BACKING_NAME; (void)QED_MAX_CHAIN_DEPTH;
    return err.code;
}
EOF

for cc in gcc clang; do
    command -v "$cc" >/dev/null || { skip "$cc: qed.h compiles" "$cc is not installed"; continue; }
    for std in c99 c11 c17; do
        tap_cmd "$cc -std=$std -pedantic -Wall -Wextra -Werror: qed.h alone" \
            "$cc" -std=$std -pedantic -Wall -Wextra -Werror -I"$INC" -c only.c -o only.o
    done
    tap_cmd "$cc -std=c11 -pedantic: qed.h twice (include guard)" \
        "$cc" -std=c11 -pedantic -Wall -Wextra -Werror -I"$INC" -c twice.c -o twice.o
    tap_cmd "$cc -std=c11 -pedantic -Wall -Wextra -Wshadow -Wstrict-prototypes -Wconversion -Werror: every type and macro used" \
        "$cc" -std=c11 -pedantic -Wall -Wextra -Wshadow -Wstrict-prototypes \
        -Wmissing-prototypes -Wconversion -Werror -I"$INC" -c use.c -o use.o
done

# ---- C++ ----------------------------------------------------------------------------
cat >prog.cc <<'EOF'
#include <qed.h>
#include <cerrno>
#include <cstdio>

int main()
{
    qed_error err{};
    uint64_t size = 0;

    if (qed_parse_size("64k", &size, &err) != 0 || size != 65536)
        return 1;
    if (qed_parse_size("12x", &size, &err) != -EINVAL || err.code == 0)
        return 2;
    std::printf("%s|%s\n", qed_format_name(QED_FORMAT_QED), err.message);
    return 0;
}
EOF
for cxx in "c++ -std=c++17" "g++ -std=c++17" "clang++ -std=c++11"; do
    set -- $cxx
    command -v "$1" >/dev/null || { skip "$cxx: qed.h compiles as C++" "$1 is not installed"; continue; }
    tap_cmd "$cxx -Wall -Werror -x c++: qed.h alone" "$@" -Wall -Wextra -Werror -x c++ -I"$INC" -c only.c -o only.o
    tap_cmd "$cxx -Wall -Werror -x c++: every type and macro used" \
        "$@" -Wall -Werror -x c++ -I"$INC" -c use.c -o use.o
    # shellcheck disable=SC2046
    tap_cmd "$cxx: a C++ program links with pkg-config" \
        "$@" -Wall -Werror -o prog prog.cc $(pkg-config --cflags --libs libqed)
    run env LD_LIBRARY_PATH="$D$P/lib" ./prog
    tap_like "$RC $(cat "$OUT")" "^0 qed\\|.*12x" "$cxx: it calls the library through extern \"C\""
done

done_testing
