#!/bin/bash
# SPDX-License-Identifier: MIT
# Size arguments mean what they mean to qemu-img: `qed create` and
# `qemu-img create -f qed` give the same virtual size for every accepted
# spelling (fractions, "b", hexadecimal, either case), and both refuse the
# same malformed ones.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io
require_qed

# virtual_size FILE — qemu-img's reading of the image's virtual size.
virtual_size() {
    qemu-img info --output=json "$1" 2>/dev/null |
        sed -n 's/^ *"virtual-size": \([0-9]*\),*$/\1/p'
}

for size in 1 512 64k 64K 1M 1m 1.5G 1.5k 1.k 1.0 1. 0.3k 12.345M 10b 10B \
            0x1000 0X10 0x1E 0x10k 08 +5 " 5" 1g 1t 1.5t 0.00146484375k; do
    rm -f qemu.qed qed.qed
    if ! qemu-img create -q -f qed qemu.qed "$size" >/dev/null 2>&1; then
        fail "size '$size': qemu-img accepts it (test premise)"
        continue
    fi
    tap_cmd "size '$size': qed create accepts it" "$QED" create -q qed.qed "$size" || continue
    tap_is "$(virtual_size qed.qed)" "$(virtual_size qemu.qed)" \
        "size '$size': the same virtual size as qemu-img's"
done

for size in 1.5 0.5 1.5b .5k 1.5.5 1e3 1.k5 0x 0xk 0x1.8 00x10 10kB "5 " \
            "1.5 k" -1 -0 1Z 1KiB; do
    rm -f qemu.qed qed.qed
    if qemu-img create -q -f qed qemu.qed -- "$size" >/dev/null 2>&1; then
        fail "size '$size': qemu-img refuses it (test premise)"
        continue
    fi
    run "$QED" create -q qed.qed -- "$size"
    tap_like "$RC $(cat "$ERR")" "^1 qed: .*invalid size '$size'" \
        "size '$size': qed create refuses it, quoting it"
    [ ! -e qed.qed ]; ok $? "size '$size': no file is left behind"
done

# qed io offsets and lengths take the same spellings as qemu-io's.
qemu-img create -q -f qed io.qed 1M
tap_cmd "qed io: write at 1.5k, 0x200 bytes" \
    "$QED" io -c 'write -P 0x5c 1.5k 0x200' io.qed
tap_cmd "qemu-io reads the pattern at 1536 (qemu-io's own spelling)" \
    qemu-io -f qed -c 'read -P 0x5c 1536 512' io.qed
tap_cmd "qed io: read back with hexadecimal and fraction sizes" \
    "$QED" io -c 'read -P 0x5c 0x600 0.5k' io.qed

done_testing
