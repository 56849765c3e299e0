#!/bin/bash
# SPDX-License-Identifier: MIT
# The man pages: qed(1) and libqed(3) render without a warning (man -l, with
# and without groff's warnings, and groff -man -ww -z), are found where make
# install puts them, carry the library's version, and are complete: every
# subcommand `qed --help` lists has a section in qed.1 that names each option
# its `qed SUBCOMMAND --help` shows (and no section documents a subcommand
# that does not exist); every function qed.h declares is in libqed.3.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/tests/interop/lib.sh"
require_cmd man groff perl make flock
require_qed

MAN1=$ROOT/man/qed.1
MAN3=$ROOT/man/libqed.3
export LC_ALL=C.UTF-8 MANWIDTH=80 MAN_DISABLE_SECCOMP=1
unset MANPATH MANOPT

# ---- rendering --------------------------------------------------------------------
for page in "$MAN1" "$MAN3"; do
    name=man/$(basename "$page")
    warnings=$(man -l "$page" 2>&1 >/dev/null)
    tap_is "$warnings" "" "man -l $name: no warnings"
    warnings=$(man --warnings=w -l "$page" 2>&1 >/dev/null)
    tap_is "$warnings" "" "man --warnings=w -l $name: no warnings (all of groff's)"
    warnings=$(groff -man -ww -z "$page" 2>&1)
    tap_is "$?/$warnings" "0/" "groff -man -ww -z $name: clean"
    long=$(man -l "$page" 2>/dev/null | perl -CS -ne 'print if length($_) > 81')
    tap_is "$long" "" "$name: no line wider than MANWIDTH=80"
done
version=$(sed -n 's/.*define QED_VERSION_STRING "\(.*\)".*/\1/p' "$ROOT/include/qed.h")
tap_like "$(grep '^\.TH' "$MAN1")" "\"libqed $version\"" "qed.1 carries version $version"
tap_like "$(grep '^\.TH' "$MAN3")" "\"libqed $version\"" "libqed.3 carries version $version"

# Installed, `man -M MANDIR qed` and `man -M MANDIR 3 libqed` find them.
B=${BUILD:-$ROOT/build}
D=$T/dest
mkdir -p "$B"
if tap_cmd "make install into a temporary DESTDIR" flock "$B/.install.lock" \
    env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
    make -C "$ROOT" ${BUILD:+BUILD="$BUILD"} LDCONFIG= install DESTDIR="$D" PREFIX=/usr/local; then
    run man -M "$D/usr/local/share/man" qed
    tap_like "$RC $(head -1 "$OUT")" '^0 QED\(1\)' "man -M DESTDIR/usr/local/share/man qed"
    run man -M "$D/usr/local/share/man" 3 libqed
    tap_like "$RC $(head -1 "$OUT")" '^0 LIBQED\(3\)' "man -M DESTDIR/usr/local/share/man 3 libqed"
fi

# ---- qed.1 is complete -------------------------------------------------------------
# Checked on the rendered text (plain ASCII, no line wrapping): section
# headings start in column 0, subsection headings are indented 3 spaces.
LC_ALL=C MANWIDTH=1000 man -l "$MAN1" >qed1.txt 2>/dev/null
# section HEADING — the text under a .SH heading.
section() { awk -v h="$1" '/^[^ ]/ {on = ($0 == h); next} on' qed1.txt; }
# subsection NAME — the text of the SUBCOMMANDS subsection NAME.
subsection() {
    section SUBCOMMANDS | awk -v h="$1" '/^   [^ ]/ {s = $0; sub(/^ +/, "", s); on = (s == h); next} on'
}

run "$QED" --help
subcommands=$(awk '/^Subcommands:/ {on = 1; next} on && /^$/ {exit} on {print $1}' "$OUT")
tap_like "$(echo $subcommands)" '^create ' "qed --help lists the subcommands"
sections=$(section SUBCOMMANDS | awk '/^   [^ ]/ {print $1}')

for sub in $subcommands; do
    text=$(subsection "$sub")
    if [ -z "$text" ]; then
        fail "qed.1 documents qed $sub" "no '.SS $sub' section under SUBCOMMANDS"
        continue
    fi
    pass "qed.1 documents qed $sub"
    # Every option the subcommand's --help shows, short and long: tokens
    # such as -q, -o, --output, --backing-chain after a space, '[', '(',
    # ',' or '|' in the usage line and the option list.
    run "$QED" "$sub" --help
    opts=$(perl -ne 'print "$1\n" while /(?:^|[\s\[(|,])(--?[A-Za-z][A-Za-z-]*)/g' "$OUT" |
        grep -v -e '^--help$' | sort -u)
    missing=()
    for o in $opts; do
        printf '%s\n' "$text" | grep -Eq -- "(^|[^A-Za-z0-9-])$o([^A-Za-z0-9-]|\$)" || missing+=("$o")
    done
    tap_is "${missing[*]}" "" "qed.1, qed $sub: every option of 'qed $sub --help' ($(echo $opts))"
done
for s in $sections; do
    if printf '%s\n' $subcommands | grep -qx -- "$s"; then
        pass "qed.1 section '$s' is a subcommand of qed --help"
    else
        fail "qed.1 section '$s' is a subcommand of qed --help" "qed --help lists: $(echo $subcommands)"
    fi
done
for h in NAME SYNOPSIS DESCRIPTION SUBCOMMANDS "EXIT STATUS" ENVIRONMENT EXAMPLES "SEE ALSO"; do
    grep -qx "$h" qed1.txt
    ok $? "qed.1 has a $h section"
done
tap_like "$(section ENVIRONMENT)" QED_IO_ENGINE "qed.1 ENVIRONMENT documents QED_IO_ENGINE"
exit_text=$(section "EXIT STATUS")
tap_like "$(echo $exit_text)" 'qed check 0 no problem remains, 1 .*, 2 corruptions remain, 3 only leaked' \
    "qed.1 EXIT STATUS: check's 0-3"
tap_like "$(echo $exit_text)" 'qed compare 0 same content, 1 different, 2 error' "qed.1 EXIT STATUS: compare's 0-2"

# ---- libqed.3 is complete ------------------------------------------------------------
perl -0777 -ne '
    s{/\*.*?\*/}{}gs; s{//[^\n]*}{}g; s{\btypedef\b[^;]*;}{}gs;
    print "$1\n" while /\b(qed_\w+)\s*\(/g;
' "$ROOT/include/qed.h" | sort -u >declared
LC_ALL=C MANWIDTH=1000 man -l "$MAN3" >libqed3.txt 2>/dev/null
synopsis=$(awk '/^[^ ]/ {on = ($0 == "SYNOPSIS"); next} on' libqed3.txt)
missing=()
while read -r f; do
    printf '%s\n' "$synopsis" | grep -Eq "[ *]$f\(" || missing+=("$f")
done <declared
tap_is "${missing[*]}" "" "libqed.3 SYNOPSIS declares every function of qed.h ($(wc -l <declared))"
for h in NAME SYNOPSIS DESCRIPTION "RETURN VALUE" ERRORS "THREAD SAFETY" EXAMPLES "SEE ALSO"; do
    grep -qx "$h" libqed3.txt
    ok $? "libqed.3 has a $h section"
done
for topic in "The event loop" "Asynchronous I/O" "Synchronous I/O"; do
    grep -qx "   $topic" libqed3.txt
    ok $? "libqed.3 has a subsection '$topic'"
done
tap_like "$(grep -c 'qed_error' "$MAN3")" '^[3-9]|^[1-9][0-9]' "libqed.3 describes qed_error"

done_testing
