#!/bin/bash
# SPDX-License-Identifier: MIT
# Valid QED geometries QEMU 7.2 cannot open are still created, with one
# warning line: over a grid of cluster_size x table_size x size, `qed create`
# warns exactly when `qemu-img info` refuses the image (and names QEMU's
# reason), never when it opens it; the image is made either way and qed opens
# it.  `qed convert -O qed -o ...` warns the same way.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img
require_qed

# reason_of TEXT — QEMU's refusal as a word (size, offset), "ok" or "other".
reason_of() {
    case $1 in
    *"QED image size is invalid"*) echo size ;;
    *"QED table offset is invalid"*) echo offset ;;
    *) echo other ;;
    esac
}

for cs in 4k 64k 1M 2M 4M 8M 16M 64M; do
    for ts in 1 2 4 16; do
        for size in 512 128M 1T; do
            [ "$cs" = 4k ] && [ "$size" = 1T ] && continue
            name="cluster_size=$cs,table_size=$ts size=$size"
            rm -f g.qed
            run "$QED" create -q -o "cluster_size=$cs,table_size=$ts" g.qed "$size"
            if [ "$RC" -ne 0 ]; then
                fail "$name: created" "$(cat "$ERR")"
                continue
            fi
            warning=$(cat "$ERR")
            run qemu-img info g.qed
            if [ "$RC" -eq 0 ]; then
                tap_is "$warning" "" "$name: QEMU opens it, no warning"
            else
                want=$(reason_of "$(cat "$ERR")")
                got=$(reason_of "$warning")
                lines=$(printf '%s\n' "$warning" | grep -c .)
                if [ "$got" = "$want" ] && [ "$lines" -eq 1 ] &&
                    [[ $warning == "qed: g.qed: warning: QEMU 7.2 will not open"* ]]; then
                    pass "$name: QEMU refuses it ($want), one warning line naming why"
                else
                    fail "$name: QEMU refuses it ($want), one warning line naming why" \
                        "qemu-img: $(cat "$ERR")" "qed: $warning"
                fi
            fi
        done
    done
done

rm -f g.qed
tap_cmd "a geometry QEMU refuses is still created" \
    "$QED" create -q -o cluster_size=8M g.qed 1G
tap_cmd "qed opens it" "$QED" io -c "write -P 7 0 1M" -c "read -P 7 0 1M" g.qed

"$QED" create -q src.qed 4M
run "$QED" convert -O qed -o cluster_size=2M,table_size=16 src.qed conv.qed
tap_like "$(cat "$ERR")" "^qed: conv.qed: warning: QEMU 7.2 will not open this image: .*QED image size is invalid" \
    "convert -O qed -o cluster_size=2M,table_size=16 warns"
ok "$RC" "convert with the warning succeeds"
run "$QED" convert -O qed -o cluster_size=1M src.qed conv2.qed
tap_is "$(cat "$ERR")" "" "convert -O qed -o cluster_size=1M does not warn"
done_testing
