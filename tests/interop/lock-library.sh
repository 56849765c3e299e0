#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Image locks against QEMU, both ways, through today's CLI: while qemu-io
# holds an image, qed's writers and readers are refused with QEMU's
# message (and change nothing); while `qed serve` holds one, qemu-io,
# qemu-img resize, commit and info are refused as if QEMU held it, and
# `qemu-img info -U` still reads it.  The lock bytes qed holds in each role
# (/proc/locks) are those qemu-io holds in the same role, backing files
# included, and nothing is left locked once the holder is gone.
. "$(dirname "$0")/lib.sh"
. "$_lib_dir/nbd-server.bash"
. "$_lib_dir/lock.bash"

require_cmd qemu-img qemu-io
[ -r /proc/locks ] || skip_all "/proc/locks is not readable"

HOLD_MS=60000

"$QED" create -q base.qed 4M
"$QED" io -c 'write -P 0x11 0 64k' base.qed >/dev/null
"$QED" create -q -b base.qed -F qed top.qed 4M
"$QED" io -c 'write -P 0x22 64k 64k' top.qed >/dev/null
"$QED" create -q plain.qed 4M
"$QED" io -c 'write -P 0x33 0 64k' plain.qed >/dev/null


# ---- the bytes: qed holds what qemu-io holds in the same role -----------------------

# role_bytes HOLDER FILE WATCHED... — lock bytes on each WATCHED file while
# HOLDER (qemu-rw, qemu-ro, qemu-share (-r -U), or the same of qed serve)
# holds FILE, as "a | b".
role_bytes() {
    local holder=$1 file=$2 out="" f
    shift 2
    case $holder in
    qemu-rw) hold_qemu "$file" || return 1 ;;
    qemu-ro) hold_qemu -r "$file" || return 1 ;;
    qed-rw) hold_qed role "$file" || return 1 ;;
    qed-ro) hold_qed role -r "$file" || return 1 ;;
    qemu-share) hold_qemu -r -U "$file" || return 1 ;;
    qed-share) hold_qed role -r -U "$file" || return 1 ;;
    esac
    for f in "$@"; do
        out+="${out:+ | }$(lock_bytes "$f")"
    done
    case $holder in
    qemu-*) release "$QEMU_PID" "$@" ;;
    qed-*) stop_server "$SRV_PID"; for f in "$@"; do wait_unlocked "$f"; done ;;
    esac
    printf '%s\n' "$out"
}

want_rw=$(role_bytes qemu-rw top.qed top.qed base.qed)
tap_is "$want_rw" "100 101 103 201 203 | 100 201 203" \
    "QEMU: qemu-io read-write holds 100 101 103 201 203, its backing file 100 201 203"
tap_is "$(role_bytes qed-rw top.qed top.qed base.qed)" "$want_rw" \
    "qed serve holds the same bytes on the image and its backing file"
want_ro=$(role_bytes qemu-ro top.qed top.qed base.qed)
tap_is "$want_ro" "100 201 203 | 100 201 203" \
    "QEMU: qemu-io -r holds 100 201 203 on both"
tap_is "$(role_bytes qed-ro top.qed top.qed base.qed)" "$want_ro" \
    "qed serve -r holds the same bytes"
want_share=$(role_bytes qemu-share top.qed top.qed base.qed)
tap_is "$want_share" "100 | 100" "QEMU: qemu-io -r -U holds 100 on both"
tap_is "$(role_bytes qed-share top.qed top.qed base.qed)" "$want_share" \
    "qed serve -r -U holds the same bytes"

# ---- QEMU holds, qed is refused ----------------------------------------------------

cp plain.qed plain.orig
if hold_qemu plain.qed; then
    pass "qemu-io holds plain.qed read-write"
    refused "qed io -c write is refused" plain.qed '"write"' \
        "$QED" io -c 'write -P 0x44 0 4k' plain.qed
    refused "qed io -r is refused (the writer shares no write)" plain.qed \
        'shared "write"' "$QED" io -r -c 'read 0 4k' plain.qed
    refused "qed check -r all is refused" plain.qed '"write"' \
        "$QED" check -r all plain.qed
    refused "qed compact is refused" plain.qed '"write"' "$QED" compact plain.qed
    refused "qed resize is refused" plain.qed '"write"' "$QED" resize plain.qed 8M
    refused "qed rebase -u is refused" plain.qed '"write"' \
        "$QED" rebase -u -b base.qed -F qed plain.qed
    refused "qed create over it is refused" plain.qed '"write"' \
        "$QED" create -q plain.qed 1M
    refused "qed info is refused, like qemu-img info" plain.qed \
        'shared "write"' "$QED" info plain.qed
    refused "QEMU: qemu-img info is refused the same way" plain.qed \
        'shared "write"' qemu-img info plain.qed
    tap_is "$(lock_bytes plain.qed)" "100 101 103 201 203" \
        "the refused commands left no lock behind"
    release "$QEMU_PID" plain.qed
    tap_is "$(sum plain.qed)" "$(sum plain.orig)" \
        "plain.qed is byte-identical after every refusal"
else
    fail "qemu-io holds plain.qed read-write" "$(cat "$T/qemu-hold.out")"
fi
tap_cmd "once qemu-io is gone, qed io writes" \
    "$QED" io -c 'write -P 0x44 0 4k' plain.qed

if hold_qemu top.qed; then
    pass "qemu-io holds top.qed (over base.qed) read-write"
    tap_cmd "qed reads the backing file of QEMU's writer" \
        "$QED" io -r -c 'read -P 0x11 0 64k' base.qed
    refused "qed does not write the backing file of QEMU's writer" base.qed \
        '"write"' "$QED" io -c 'write 0 4k' base.qed
    refused "qed commit of QEMU's image is refused" top.qed 'shared "write"' \
        "$QED" commit top.qed
    release "$QEMU_PID" top.qed base.qed
else
    fail "qemu-io holds top.qed read-write" "$(cat "$T/qemu-hold.out")"
fi

if hold_qemu -r -U plain.qed; then
    pass "qemu-io -r -U holds plain.qed, sharing everything"
    tap_is "$(lock_bytes plain.qed)" "100" "QEMU: it holds byte 100 only"
    tap_cmd "qed io writes next to a force-sharing reader" \
        "$QED" io -c 'write -P 0x55 0 4k' plain.qed
    release "$QEMU_PID" plain.qed
else
    fail "qemu-io -r -U holds plain.qed" "$(cat "$T/qemu-hold.out")"
fi

# ---- qed holds, QEMU is refused ------------------------------------------------------

if hold_qed srv plain.qed; then
    pass "qed serve holds plain.qed read-write"
    refused "QEMU: qemu-io is refused" plain.qed '"write"' \
        qemu-io -c 'read 0 4k' plain.qed
    refused "QEMU: qemu-io -r is refused" plain.qed 'shared "write"' \
        qemu-io -r -c 'read 0 4k' plain.qed
    refused "QEMU: qemu-img resize is refused" plain.qed '"write"' \
        qemu-img resize -f qed plain.qed 8M
    refused "QEMU: qemu-img info is refused" plain.qed 'shared "write"' \
        qemu-img info plain.qed
    tap_cmd "QEMU: qemu-img info -U reads it" qemu-img info -U plain.qed
    tap_like "$(cat "$OUT")" "virtual size: 4 MiB" "... and shows its size"
    stop_server "$SRV_PID"
    wait_unlocked plain.qed
else
    fail "qed serve holds plain.qed read-write" "$(cat "$T/srv.err")"
fi
tap_cmd "QEMU: once qed serve is gone, qemu-io writes" \
    qemu-io -c 'write -P 0x66 0 4k' plain.qed

if hold_qed top top.qed; then
    pass "qed serve holds top.qed (over base.qed) read-write"
    refused "QEMU: qemu-img commit of it is refused" top.qed '"write"' \
        qemu-img commit top.qed
    tap_cmd "QEMU: qemu-io -r reads the backing file of qed's writer" \
        qemu-io -r -c 'read -P 0x11 0 64k' base.qed
    refused "QEMU: qemu-io does not write the backing file of qed's writer" \
        base.qed '"write"' qemu-io -c 'write 0 4k' base.qed
    stop_server "$SRV_PID"
    wait_unlocked top.qed && wait_unlocked base.qed
else
    fail "qed serve holds top.qed read-write" "$(cat "$T/top.err")"
fi

truncate -s 1M out.raw
"$QED" io -f raw -c 'write -P 0x77 0 1M' out.raw >/dev/null
cp out.raw out.orig
if hold_qed raw -f raw out.raw; then
    pass "qed serve holds the raw image out.raw read-write"
    refused "qed convert -O raw onto it is refused" out.raw '"write"' \
        "$QED" convert -O raw top.qed out.raw
    refused "qed create over it is refused" out.raw '"write"' \
        "$QED" create -q out.raw 1M
    stop_server "$SRV_PID"
    wait_unlocked out.raw
    tap_is "$(sum out.raw)" "$(sum out.orig)" \
        "... and out.raw is byte-identical (not truncated first)"
else
    fail "qed serve holds out.raw" "$(cat "$T/raw.err")"
fi

if hold_qed ro -r plain.qed; then
    pass "qed serve -r holds plain.qed read-only"
    tap_cmd "QEMU: qemu-io -r reads next to qed's reader" \
        qemu-io -r -c 'read 0 4k' plain.qed
    refused "QEMU: qemu-io read-write is refused" plain.qed '"write"' \
        qemu-io -c 'read 0 4k' plain.qed
    stop_server "$SRV_PID"
    wait_unlocked plain.qed
else
    fail "qed serve -r holds plain.qed" "$(cat "$T/ro.err")"
fi

tap_is "$(lock_bytes plain.qed) | $(lock_bytes top.qed) | $(lock_bytes base.qed)" \
    " |  | " "nothing is left locked"
tap_cmd "QEMU: qemu-img check finds top.qed clean after it all" \
    "${TESTS_DIR:-$_lib_dir/..}/qemu-check-clean" top.qed

done_testing
