#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Locking through the CLI, qed against qed: while `qed serve` writes an
# image, every subcommand that would write it (or read it without sharing
# write) is refused with QEMU's message and nothing changes; -U/--force-share
# lets every read-only subcommand read it meanwhile, and is refused on a
# read-write open with QEMU's words.  A writer of an overlay does not stop
# readers of its base; a commit into a base another process reads without
# sharing write is refused.  After the holder leaves, everything opens again.
. "$(dirname "$0")/lib.sh"
. "$_lib_dir/nbd-server.bash"
. "$_lib_dir/lock.bash"
require_cmd qemu-img qemu-io nbdinfo md5sum
require_qed
[ -r /proc/locks ] || skip_all "/proc/locks is not readable"
TAP_TIMEOUT=20

"$QED" create -q disk.qed 4M
"$QED" io -c 'write -P 0x5a 0 64k' disk.qed >/dev/null
"$QED" create -q other.qed 4M
truncate -s 4M other.raw
before=$(sum disk.qed)

start_server rw "$T/rw.sock" -t disk.qed
ok $? "qed serve holds disk.qed read-write"
RW_PID=$SRV_PID
W='"write"'
SW='shared "write"'

# ---- writers and non-sharing readers are refused --------------------------------
refused "io write" disk.qed "$W" "$QED" io -c 'write 0 512' disk.qed
refused "io -r (shares no write)" disk.qed "$SW" "$QED" io -r -c 'read 0 512' disk.qed
refused "check -r all" disk.qed "$W" "$QED" check -r all disk.qed
refused "check (shares no write)" disk.qed "$SW" "$QED" check disk.qed
refused "compact" disk.qed "$W" "$QED" compact disk.qed
refused "resize" disk.qed "$W" "$QED" resize disk.qed 8M
refused "rebase -u" disk.qed "$W" "$QED" rebase -u -b other.qed -F qed disk.qed
refused "create over it" disk.qed "$W" "$QED" create disk.qed 1M
refused "convert -n into it" disk.qed "$W" "$QED" convert -n -O qed other.qed disk.qed
refused "convert -O raw over it" disk.qed "$W" "$QED" convert -O raw other.raw disk.qed
refused "dd of=it" disk.qed "$W" "$QED" dd -O qed if=other.qed of=disk.qed
refused "bench -w" disk.qed "$W" "$QED" bench -w -c 1 disk.qed
refused "info (shares no write)" disk.qed "$SW" "$QED" info disk.qed
refused "map (shares no write)" disk.qed "$SW" "$QED" map disk.qed
refused "a second serve" disk.qed "$W" "$QED" serve -k "$T/second.sock" disk.qed
refused "serve -r (shares no write)" disk.qed "$SW" "$QED" serve -r -k "$T/ro.sock" disk.qed
tap_is "$(sum disk.qed)" "$before" "disk.qed is unchanged after every refusal"

# ---- -U reads meanwhile ---------------------------------------------------------
tap_cmd "info -U" "$QED" info -U disk.qed
tap_cmd "info --force-share --output=json" "$QED" info --force-share --output=json disk.qed
tap_cmd "map -U" "$QED" map -U --output=json disk.qed
tap_cmd "check -U" "$QED" check -U disk.qed
tap_cmd "compare -U" "$QED" compare -U disk.qed disk.qed
tap_cmd "convert -U" "$QED" convert -U -O raw disk.qed copy.raw
tap_cmd "the copy holds the data" qemu-io -f raw -r -c 'read -P 0x5a 0 64k' copy.raw
tap_cmd "convert --image-opts force-share=on" \
    "$QED" convert --image-opts -O raw 'driver=qed,file.filename=disk.qed,force-share=on' copy2.raw
tap_cmd "convert --image-opts file.locking=off (no locks taken)" \
    "$QED" convert --image-opts -O raw 'driver=qed,file.filename=disk.qed,file.locking=off' copy3.raw
run "$QED" convert --image-opts -O raw 'driver=qed,file.filename=disk.qed,file.locking=maybe' copy4.raw
tap_like "$RC $(cat "$ERR")" "^1 qed: .*Parameter 'locking' does not accept value 'maybe'" \
    "file.locking=maybe is refused"
run "$QED" convert -n --target-image-opts other.qed 'driver=qed,file.filename=x.qed,file.locking=off'
tap_like "$RC $(cat "$ERR")" "^1 qed: .*file.locking=off is not supported for the target" \
    "file.locking=off for the target is refused"
tap_cmd "io -r -U reads the data" "$QED" io -r -U -c 'read -P 0x5a 0 64k' disk.qed
tap_cmd "dd -U" "$QED" dd -U if=disk.qed of=dd.raw bs=64k count=1
tap_cmd "bench -U" "$QED" bench -U -c 16 disk.qed
tap_cmd "qemu-img info -U (QEMU side)" qemu-img info -U disk.qed
start_server share "$T/share.sock" -r -U -t disk.qed
ok $? "serve -r -U starts next to the writer"
tap_is "$(nbdinfo --size "nbd+unix:///?socket=$T/share.sock" 2>&1)" 4194304 \
    "a client of the force-sharing server reads the size"
stop_server "$SRV_PID"

# ---- -U with a read-write open: QEMU's words ------------------------------------
for c in "check -U -r all disk.qed" "io -U -c flush disk.qed" "bench -U -w -c 1 disk.qed" \
         "serve -U -k $T/u.sock disk.qed"; do
    read -r -a argv <<<"$c"
    run "$QED" "${argv[@]}"
    tap_like "$RC $(cat "$ERR")" "^1 qed: disk.qed: force-share=on can only be used with read-only images" \
        "qed $c: refused, as qemu-img refuses it"
done
run qemu-img check -U -r all disk.qed
tap_like "$(cat "$ERR")" "force-share=on can only be used with read-only images" \
    "QEMU: qemu-img check -U -r all says the same"

# ---- the holder leaves: nothing stays locked -----------------------------------
stop_server "$RW_PID"
wait_unlocked disk.qed
tap_is "$(lock_bytes disk.qed)" "" "no lock bytes are left on disk.qed"
tap_cmd "after the refusals, io writes" "$QED" io -c 'write -P 0x6b 64k 64k' disk.qed
tap_cmd "and info reads it" "$QED" info disk.qed
start_server again "$T/again.sock" disk.qed
ok $? "serve read-write starts again"
stop_server "$SRV_PID"

# ---- QEMU holds: qed info -U reads ----------------------------------------------
if hold_qemu disk.qed; then
    pass "qemu-io holds disk.qed read-write"
    tap_cmd "qed info -U reads what qemu-io holds" "$QED" info -U disk.qed
    tap_cmd "qed io -r -U reads what qemu-io holds" \
        "$QED" io -r -U -c 'read -P 0x6b 64k 64k' disk.qed
    refused "qed info without -U is refused" disk.qed "$SW" "$QED" info disk.qed
    release "$QEMU_PID" disk.qed
else
    fail "qemu-io holds disk.qed read-write" "$(cat "$T/qemu-hold.out")"
fi

# ---- backing files --------------------------------------------------------------
"$QED" create -q base.qed 4M
"$QED" io -c 'write -P 0x11 0 64k' base.qed >/dev/null
"$QED" create -q -b base.qed -F qed top.qed
start_server top "$T/top.sock" -t top.qed
ok $? "qed serve writes the overlay top.qed"
tap_cmd "the base is readable meanwhile (qed io -r)" "$QED" io -r -c 'read -P 0x11 0 64k' base.qed
tap_cmd "qemu-img info on the base works meanwhile" qemu-img info base.qed
refused "writing the base is refused (the overlay's reader shares no write)" base.qed "$W" \
    "$QED" io -c 'write 0 512' base.qed
stop_server "$SRV_PID"
wait_unlocked top.qed
"$QED" io -c 'write -P 0x22 0 64k' top.qed >/dev/null
if hold_qemu -r base.qed; then
    pass "qemu-io -r reads the base without sharing write"
    refused "qed commit into that base is refused" base.qed "$W" "$QED" commit top.qed
    release "$QEMU_PID" base.qed
    tap_cmd "once it is gone, qed commit works" "$QED" commit top.qed
    tap_cmd "and the base holds the overlay's data" "$QED" io -r -c 'read -P 0x22 0 64k' base.qed
else
    fail "qemu-io -r reads the base without sharing write" "$(cat "$T/qemu-hold.out")"
fi

done_testing
