#!/bin/bash
# SPDX-License-Identifier: MIT
# The Python bindings (python/): the extension built against this tree's
# libqed.a (-Werror), then the pytest suite of tests/python against it, each
# pytest test one TAP point.  Debian's /usr/bin/python3 (3.11) with
# python3-dev, python3-setuptools and python3-pytest.
. "$(dirname "$0")/../interop/lib.sh"
require_qed
require_cmd qemu-img qemu-io
PY=/usr/bin/python3
repo=$(cd "$_lib_dir/../.." && pwd)
[ -x "$PY" ] || skip_all "no /usr/bin/python3"
"$PY" -c 'import pytest, setuptools, sysconfig, os, sys
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null ||
    skip_all "python3-dev, python3-setuptools or python3-pytest is missing"

run env -C "$repo/python" QED_BUILD="$BUILD" CFLAGS=-Werror "$PY" setup.py -q build \
    --build-base "$T/pybuild" --build-lib "$T/pylib"
ok "$RC" "the extension builds against $BUILD/libqed.a with -Werror" "$(tail -20 "$ERR")"
[ "$RC" -eq 0 ] || { done_testing; exit 1; }

# pip installs it (with Debian's setuptools; --no-index: nothing fetched),
# from a copy: pip builds in the directory it is given.
cp -r "$repo/python" "$T/pysrc"
run env QED_BUILD="$BUILD" QED_INCLUDEDIR="$repo/include" "$PY" -m pip install -q --no-index \
    --target "$T/pip" "$T/pysrc"
ok "$RC" "pip install ./python" "$(tail -5 "$ERR")"
"$QED" create -q -f qed "$T/pip.qed" 1M && "$QED" io -c "write -P 0x61 0 3" "$T/pip.qed" >/dev/null
run env PYTHONPATH="$T/pip" "$PY" -c 'import qed, sys
with qed.open(sys.argv[1]) as f: print(f.read(4))' "$T/pip.qed"
tap_is "$(cat "$OUT")" "b'aaa\x00'" "the installed module reads an image"

# Each test case as "status<TAB>name<TAB>message", from pytest's JUnit XML.
QED="$QED" PATH="$(dirname "$QED"):$PATH" PYTHONPATH="$T/pylib:$_lib_dir/../python" \
    "$PY" -m pytest -p no:cacheprovider -q --junitxml="$T/junit.xml" "$_lib_dir/../python" \
    >"$T/pytest.out" 2>&1
"$PY" - "$T/junit.xml" >"$T/results" <<'PYEOF'
import sys
import xml.etree.ElementTree as ET
for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    status, message = "pass", ""
    for kind in ("failure", "error", "skipped"):
        node = case.find(kind)
        if node is not None:
            status = "skip" if kind == "skipped" else "fail"
            message = (node.get("message") or "") + " " + (node.text or "")
    message = " ".join(message.split())[:2000]
    print(f"{status}\t{case.get('name')}\t{message}")
PYEOF
[ -s "$T/results" ] || fail "pytest ran" "$(tail -30 "$T/pytest.out")"
while IFS=$'\t' read -r status name message; do
    case $status in
    pass) ok 0 "python: $name" ;;
    skip) skip "python: $name" "$message" ;;
    *) ok 1 "python: $name" "$message" ;;
    esac
done <"$T/results"
done_testing
