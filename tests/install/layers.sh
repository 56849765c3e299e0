#!/bin/bash
# SPDX-License-Identifier: MIT
# Lower layers never call up: the event loop (lib/loop.o) refers to no
# symbol of the storage layer above it (io_*, storage_*: the I/O engines,
# files, drivers), and reaches them only through the slots and hooks that
# layer gives it.  The front (image.o, request.o) knows no format: it
# reaches the QED and raw drivers only through their driver tables.  Only
# the request layer completes requests: lookup and allocation hand results
# back through the continuation they were given.  The image operations
# (lib/ops) reach a format's metadata only through its driver's hooks.
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

# calls OBJECT PATTERN -> the undefined symbols of OBJECT that match
calls() {
    nm -u "$B/$1" | awk '{print $NF}' | grep -E "$2" | sort -u | tr '\n' ' '
}
qed_internals='^(alloc|lookup|table|l2cache|check|header|qed_request|qed_offset)_'
for front in lib/image.o lib/request.o; do
    tap_is "$(calls "$front" "$qed_internals")" "" \
        "$front calls nothing inside the QED driver"
done
tap_like "$(calls lib/image.o '_format_driver$')" 'qed_format_driver' \
    "image.o reaches the QED driver through its table"
tap_is "$(calls lib/raw.o "$qed_internals")" "" \
    "the raw driver calls nothing of the QED driver"
for src in "$ROOT"/lib/ops/*.c; do
    op=lib/ops/$(basename "$src" .c).o
    tap_is "$(calls "$op" "$qed_internals")" "" \
        "$op reaches formats only through their drivers"
done
for below in lib/lookup.o lib/alloc.o; do
    tap_is "$(calls "$below" '^request_complete$')" "" \
        "$below completes no request"
done

done_testing
