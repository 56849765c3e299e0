#!/bin/bash
# SPDX-License-Identifier: MIT
# The ABI of libqed.so: the version script (lib/libqed.map) exports the
# qed_* symbols, all under the version node LIBQED_2.0, and nothing else;
# every function include/qed.h declares is exported and links; the
# library's internal functions do not.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/tests/interop/lib.sh"
require_cmd make nm readelf cc flock perl

B=${BUILD:-$ROOT/build}
SO=$B/libqed.so.2.0.0
mkdir -p "$B"
tap_cmd "make shared" flock "$B/.install.lock" env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
    make -C "$ROOT" ${BUILD:+BUILD="$BUILD"} shared || done_testing

# Functions declared in qed.h: comments, typedefs (function types such as
# qed_callback) and the static inline functions (the structs' init
# functions, compiled into the program, never exported) removed, then every
# qed_NAME( left.
perl -0777 -ne '
    s{/\*.*?\*/}{}gs; s{//[^\n]*}{}g; s{\btypedef\b[^;]*;}{}gs;
    s#\bstatic\s+inline\b[^{;]*\{.*?\n\}##gs;
    print "$1\n" while /\b(qed_\w+)\s*\(/g;
' "$ROOT/include/qed.h" | sort -u >declared
perl -0777 -ne '
    s{/\*.*?\*/}{}gs;
    print "$1\n" while /\bstatic\s+inline\b[^{;(]*\b(qed_\w+)\s*\(/g;
' "$ROOT/include/qed.h" | sort -u >inline
tap_like "$(wc -l <declared)" '^[1-9][0-9]+$' "qed.h declares functions ($(wc -l <declared))"
tap_like "$(wc -l <inline)" '^[1-9][0-9]*$' "qed.h defines static inline functions ($(echo $(cat inline)))"

# Dynamic symbols the library defines.  The version node itself shows up as
# an absolute symbol named LIBQED_2.0: that is the version definition, not a
# symbol of the API.
nm -D --defined-only "$SO" >dynsyms 2>nm.err
ok $? "nm -D --defined-only $(basename "$SO")" "$(cat nm.err)"
awk '!($2 == "A" && $3 == "LIBQED_2.0") {print $3}' dynsyms >exported
sed 's/@.*//' exported | sort -u >exported-names

others=$(grep -v '^qed_' exported-names)
tap_is "$others" "" "only qed_* symbols are exported"
unversioned=$(grep -v '@@LIBQED_2\.0$' exported)
tap_is "$unversioned" "" "every exported symbol is versioned LIBQED_2.0"
tap_is "$(awk '$2 == "A" {print $3}' dynsyms)" "LIBQED_2.0" "the only version node is LIBQED_2.0"

missing=$(comm -23 declared exported-names)
tap_is "$missing" "" "every function qed.h declares is exported"
tap_is "$(comm -12 inline exported-names)" "" \
    "no static inline function of qed.h is exported (they are the program's)"

# Internal functions are named qedi_* (namespace.sh): none is exported.
extra=$(comm -13 declared exported-names)
tap_is "$extra" "" "every exported qed_* symbol is declared in qed.h"

# Link a program that takes the address of every declared function.
mkdir lib
ln -s "$SO" lib/libqed.so
ln -s "$SO" lib/libqed.so.2
{
    echo '#include <qed.h>'
    echo '#include <stdio.h>'
    echo 'int main(void) {'
    while read -r f; do
        echo "    printf(\"%p\\n\", (void *)$f);"
    done <declared
    echo '    return 0; }'
} >all.c
run cc -std=gnu11 -Wall -Werror -I"$ROOT/include" -o all all.c -Llib -lqed
ok "$RC" "a program using every declared function links against libqed.so" "$(head -c 2000 "$ERR")"
run env LD_LIBRARY_PATH="$PWD/lib" ./all
ok "$RC" "... and runs (LD_LIBRARY_PATH)" "$(head -c 2000 "$ERR")"
tap_like "$(readelf -d all 2>&1)" 'NEEDED.*\[libqed\.so\.2\]' "it records the soname libqed.so.2"

# The tests' simulated file system (tests/unit/io-sim.c) is built into the
# test programs and fuzzers only: neither library carries it.
tap_cmd "make libqed.a" flock "$B/.install.lock" env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
    make -C "$ROOT" ${BUILD:+BUILD="$BUILD"} "${BUILD:-build}/libqed.a"
for lib in "$B/libqed.a" "$SO"; do
    sim=$(nm "$lib" 2>&1 | awk '$NF ~ /^memfs_/ {print $NF}' | sort -u | tr '\n' ' ')
    tap_is "$sim" "" "$(basename "$lib") has no memfs_* symbol (the test simulator)"
done

# Internal symbols (module prefixes, see DESIGN) stay inside the library.
internal=$(nm -g --defined-only "$B/libqed.a" 2>/dev/null | awk 'NF == 3 && $2 == "T" {print $3}' |
    grep -v '^qed_' | head -1)
if [ -z "$internal" ]; then
    skip "an internal function does not link" "libqed.a has no global non-qed_ function"
else
    printf 'extern int %s(void);\nint main(void) { return %s(); }\n' "$internal" "$internal" >internal.c
    run cc -o internal internal.c -Llib -lqed
    if [ "$RC" -ne 0 ] && grep -q "$internal" "$ERR"; then
        pass "an internal function ($internal) does not link against libqed.so"
    else
        fail "an internal function ($internal) does not link against libqed.so" "$(head -c 2000 "$ERR")"
    fi
fi

done_testing
