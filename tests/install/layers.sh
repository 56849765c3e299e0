#!/bin/bash
# SPDX-License-Identifier: MIT
# Lower layers never call up: the event loop (lib/loop.o) refers to no
# symbol of the storage layer above it (io_*, storage_*: the I/O engines,
# files, drivers), and reaches them only through the slots and hooks that
# layer gives it.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/tests/interop/lib.sh"
require_cmd make nm flock

B=${BUILD:-$ROOT/build}
mkdir -p "$B"
tap_cmd "make shared" flock "$B/.install.lock" env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
    make -C "$ROOT" ${BUILD:+BUILD="$BUILD"} shared || done_testing

undefined=$(nm -u "$B/lib/loop.o" 2>&1)
tap_like "$undefined" 'epoll_wait' "nm -u lists what loop.o calls"
upward=$(awk '{print $NF}' <<<"$undefined" | grep -E '^(io|storage|memfs)_' | tr '\n' ' ')
tap_is "$upward" "" "loop.o calls nothing of the storage layer"

done_testing
