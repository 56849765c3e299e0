#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# valgrind memcheck over the main paths of the CLI: create, io (writes,
# reads, zeroes, discards), info, map, convert, compare, check with repair,
# bench, and serve with a real client.  The thread-pool engine is used:
# valgrind cannot see what the kernel writes through io_uring.
. "$(dirname "$0")/lib.sh"
require_cmd valgrind
# A sanitizer build cannot run under valgrind (make check-asan).
if grep -q __asan_init "$QED" 2>/dev/null; then
    skip_all "the qed binary is built with AddressSanitizer"
fi

export QED_IO_ENGINE=threads
VG=(valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect
    --track-fds=no)

vg() { # NAME CMD... : runs CMD under memcheck; valgrind's findings fail it
    local name=$1; shift
    run "${VG[@]}" "$@"
    if [ "$RC" -ne 99 ] && ! grep -q '^==[0-9]*==' "$ERR"; then
        pass "memcheck clean: $name"
    else
        fail "memcheck clean: $name" "valgrind reported errors (exit $RC)"
        sed 's/^/# /' "$ERR" | head -20
    fi
}

truncate -s 4M base.raw
"$QED" io -f raw -c 'write -P 0x11 0 4M' base.raw >/dev/null
vg "create over a raw backing file" "$QED" create -q -b base.raw -F raw t.qed 8M
vg "io: writes, partial and whole clusters, zeroes, discard, reads" \
    "$QED" io -c 'write -P 1 1000 3000' -c 'write -P 2 1M 200k' -c 'write -z 2M 128k' \
    -c 'write -z 3M 5000' -c 'discard 1M 64k' -c 'flush' -c 'read -P 1 1000 3000' t.qed
vg "info --output=json --backing-chain" "$QED" info --output=json --backing-chain t.qed
vg "map --output=json" "$QED" map --output=json t.qed
vg "convert -O qed" "$QED" convert -O qed t.qed flat.qed
vg "convert -O raw" "$QED" convert -O raw flat.qed flat.raw
vg "compare" "$QED" compare t.qed flat.raw
"$QED" create -q -o cluster_size=4k leak.qed 1M
"$QED" io -c 'write -P 3 0 64k' leak.qed >/dev/null
truncate -s +16k leak.qed
vg "check -r all" "$QED" check -r all leak.qed
vg "bench -w" "$QED" bench -q -w -c 2000 -d 16 -s 4k -S 64k flat.qed

if command -v nbdinfo >/dev/null; then
    "${VG[@]}" "$QED" serve -k "$PWD/s.sock" t.qed 2>vg-serve.err &
    srv=$!
    for _ in $(seq 200); do [ -S s.sock ] && break; sleep 0.05; done
    run nbdinfo --map "nbd+unix:///?socket=$PWD/s.sock"
    ok $([ "$RC" -eq 0 ]; echo $?) "a client is served under valgrind"
    wait "$srv"
    rc=$?
    if [ "$rc" -ne 99 ] && ! grep -q '^==[0-9]*==' vg-serve.err; then
        pass "memcheck clean: serve"
    else
        fail "memcheck clean: serve" "valgrind reported errors (exit $rc)"
        sed 's/^/# /' vg-serve.err | head -20
    fi
fi
done_testing
