#!/bin/bash
# SPDX-License-Identifier: MIT
# The layers (docs/architecture.md), bottom up: lib/base, lib/storage,
# lib/driver, the two format drivers lib/qed and lib/raw, the front
# lib/core, the image operations lib/ops; the NBD server nbd/, the FUSE
# export fuse/ and the CLI tools/ on the public header.  Two checks, both on what the code does
# rather than on what it says:
#   includes: every `#include "..."` of a layer resolves in its own folder
#     or in one of the layers below it, and into another layer only through
#     that layer's face header (base.h, storage.h, driver.h, core.h, ops.h,
#     nbd.h, mount.h, qed.h); the layers' include edges form no cycle (depth-first
#     search).  The Makefile gives each layer only these include paths, so
#     an upward include does not even compile there;
#   calls: every symbol an object of lib/L uses that the library defines is
#     defined in L or a layer below it (nm), so nothing calls up except
#     through a callback it was given; the front and the operations name a
#     format driver only by its table (qedi_qed_format_driver, qedi_raw_format_driver).
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/tests/interop/lib.sh"
require_cmd make nm perl flock

B=${BUILD:-$ROOT/build}
mkdir -p "$B"
tap_cmd "make shared" flock "$B/.install.lock" env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
    make -C "$ROOT" ${BUILD:+BUILD="$BUILD"} shared || done_testing

cd "$ROOT" || bail_out "no $ROOT"

# ---- includes -----------------------------------------------------------------
run perl "$ROOT/tests/install/layers-includes.pl"
ok "$RC" "every include goes to its own layer or to the face of one below, without cycles" "$(cat "$OUT")"
tap_like "$(tail -1 "$OUT")" 'files: [1-9][0-9]+' "the layers hold the sources ($(tail -1 "$OUT"))"

# ---- calls --------------------------------------------------------------------
layers="base storage driver qed raw core ops"
run perl "$ROOT/tests/install/layers-calls.pl" "$B" $layers
tap_is "$RC" 0 "nm read every layer's objects"
for l in $layers; do
    tap_is "$(grep "^$l: " "$OUT")" "" "lib/$l calls only itself and the layers below it"
done
tap_like "$(tail -1 "$OUT")" 'base=[1-9].*ops=[1-9]' "every layer has objects ($(tail -1 "$OUT"))"

# ---- who completes requests ------------------------------------------------
# request_complete is the front's callback (driver.h): the QED driver's
# request layer calls it; lookup and allocation hand results back through
# the continuations they were given.
for below in lib/qed/lookup.c lib/qed/alloc.c; do
    tap_is "$(grep -n 'request_complete' "$below")" "" "$below completes no request"
done

done_testing
