#!/bin/bash
# SPDX-License-Identifier: MIT
# The licence: LICENSE holds the MIT licence, and every source file (C,
# headers, scripts, man pages, the build files) names it in an SPDX line
# among its first three lines.  Fuzz corpora (data) and Markdown are not
# source; debian/changelog and debian/source/format are formats without
# comments (debian/copyright gives their licence).  Files are those git
# tracks, or every file when the tree is not a git checkout.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/tests/interop/lib.sh"

tap_like "$(head -n1 "$ROOT/LICENSE")" "^MIT License$" "LICENSE is the MIT licence"
tap_like "$(cat "$ROOT/LICENSE")" "Permission is hereby granted, free of charge" \
    "LICENSE holds the licence text"

# source_files — one path a line, relative to ROOT.
source_files() {
    if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git -C "$ROOT" ls-files
    else
        (cd "$ROOT" && find . -type f -not -path './build*' -not -path './.git/*' | sed 's|^\./||')
    fi | grep -v -E '^fuzz/(corpus|regressions)/|\.md$|^LICENSE$|^\.gitignore$|^debian/(changelog|source/format)$'
}

missing=()
count=0
while IFS= read -r f; do
    [ -f "$ROOT/$f" ] || continue
    count=$((count + 1))
    head -n3 "$ROOT/$f" | grep -q 'SPDX-License-Identifier: MIT' || missing+=("$f")
done < <(source_files)
[ "$count" -gt 100 ]; ok $? "the source files were found ($count)"
tap_is "${missing[*]}" "" "every source file has an SPDX-License-Identifier: MIT line"

done_testing
