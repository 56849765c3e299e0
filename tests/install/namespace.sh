#!/bin/bash
# SPDX-License-Identifier: MIT
# The archives' namespace: every global symbol libqed.a and libqednbd.a
# define is either public (qed_, and then declared in include/qed.h) or
# internal (qedi_), so a program linking the static libraries never meets a
# name of ours that could collide with its own (iov_size, io_readv, ...).
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/tests/interop/lib.sh"
require_cmd make nm perl flock

B=${BUILD:-$ROOT/build}
mkdir -p "$B"
tap_cmd "make the archives" flock "$B/.install.lock" env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
    make -C "$ROOT" ${BUILD:+BUILD="$BUILD"} "${BUILD:-build}/libqed.a" "${BUILD:-build}/libqednbd.a" \
    "${BUILD:-build}/libqedfuse.a" || done_testing

perl -0777 -ne '
    s{/\*.*?\*/}{}gs; s{//[^\n]*}{}g; s{\btypedef\b[^;]*;}{}gs;
    print "$1\n" while /\b(qed_\w+)\s*\(/g;
' "$ROOT/include/qed.h" | sort -u >declared
tap_like "$(wc -l <declared)" '^[1-9][0-9]+$' "qed.h declares functions ($(wc -l <declared))"

# Global definitions: code, data, read-only data, common and weak symbols.
globals() {
    nm -g --defined-only "$1" 2>/dev/null | awk 'NF == 3 && $2 ~ /^[TDBRCVWG]$/ {print $3}' | sort -u
}

for a in libqed.a libqednbd.a libqedfuse.a; do
    globals "$B/$a" >"$a.globals"
    tap_like "$(wc -l <"$a.globals")" '^[1-9][0-9]*$' "$a defines global symbols ($(wc -l <"$a.globals"))"
    stray=$(grep -Ev '^(qed_|qedi_)' "$a.globals")
    tap_is "$stray" "" "every global symbol of $a starts with qed_ or qedi_"
    undeclared=$(grep '^qed_' "$a.globals" | comm -23 - declared)
    tap_is "$undeclared" "" "every qed_ symbol of $a is declared in qed.h (internal ones are qedi_)"
done

# The NBD server's library is internal to the tool: it adds no public name.
tap_is "$(grep '^qed_' libqednbd.a.globals)" "" "libqednbd.a defines no public (qed_) symbol"
tap_is "$(grep '^qed_' libqedfuse.a.globals)" "" "libqedfuse.a defines no public (qed_) symbol"

done_testing
