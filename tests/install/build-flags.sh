#!/bin/bash
# SPDX-License-Identifier: MIT
# A packager's flags (CFLAGS=, CPPFLAGS=, LDFLAGS=, LDLIBS= on make's command
# line, as Debian's build passes them) add to the build's flags instead of
# replacing them: -std=c17, -fPIC, -MMD, -D_GNU_SOURCE and the warnings stay,
# the packager's optimisation wins (it comes last), and the default build
# keeps -Werror.  Checked on make's dry run (make -n), so nothing is built.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/tests/interop/lib.sh"
require_cmd make

# dry_run ARGS... — the commands make would run for a fresh $T/b/qed.
dry_run() {
    env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u CFLAGS -u CPPFLAGS -u LDFLAGS \
        make -n -C "$ROOT" BUILD="$T/b" "$@" "$T/b/qed" 2>&1
}

dry_run CFLAGS="-g -O0 -fstack-protector-strong" CPPFLAGS="-DPACKAGER_CPP -D_FORTIFY_SOURCE=2" \
    LDFLAGS="-Wl,-z,relro" LDLIBS="-lpackager" >"$T/pkg.txt"
compile=$(grep -m1 -- '-c lib/base/size.c' "$T/pkg.txt")
link=$(grep -m1 -- "-o $T/b/qed " "$T/pkg.txt")
for flag in -std=c17 -fPIC -MMD -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow \
            -DPACKAGER_CPP -D_FORTIFY_SOURCE=2 -fstack-protector-strong; do
    [[ " $compile " == *" $flag "* ]]; ok $? "with a packager's CFLAGS/CPPFLAGS the compile line has $flag"
done
[[ $compile == *" -O0 "* && $compile != *" -O0 "*" -O2 "* ]]
ok $? "the packager's -O0 comes after the build's flags (no -O2 after it)" "$compile"
[[ " $link " == *" -Wl,-z,relro "* && " $link " == *" -lpackager "* && " $link " == *" -luring "* ]]
ok $? "the link line has the packager's LDFLAGS and LDLIBS and the build's libraries" "$link"

dry_run >"$T/default.txt"
compile=$(grep -m1 -- '-c lib/base/size.c' "$T/default.txt")
for flag in -O2 -g -Werror -std=c17 -fPIC; do
    [[ " $compile " == *" $flag "* ]]; ok $? "the default compile line has $flag"
done
dry_run WERROR= >"$T/nowerror.txt"
compile=$(grep -m1 -- '-c lib/base/size.c' "$T/nowerror.txt")
[[ " $compile " != *" -Werror "* && " $compile " == *" -Wall "* ]]
ok $? "WERROR= drops -Werror and keeps the warnings" "$compile"

done_testing
