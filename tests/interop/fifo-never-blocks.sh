#!/bin/bash
# SPDX-License-Identifier: MIT
# No subcommand blocks on opening a file: a FIFO (as the image, as a backing
# file named on the command line or stored in a header, as an output) and
# other non-files are refused at once with an error naming what the file is.
. "$(dirname "$0")/lib.sh"
require_cmd mkfifo timeout truncate
require_qed

# Opening a FIFO blocks until the other end opens: a few seconds are plenty
# for a refusal and make a hang show up as exit status 124.
LIMIT=5
mkfifo fifo
"$QED" create -q src.qed 1M

# refused NAME PATTERN CMD... — CMD fails within LIMIT seconds, exit status
# 1 (or 2 for compare), with PATTERN in its one-line error.
refused() {
    local name=$1 pattern=$2
    shift 2
    timeout -k 2 "$LIMIT" "$@" >"$T/.out" 2>"$T/.err" </dev/null
    local rc=$?
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        fail "$name: refused without blocking" "timed out after $LIMIT s"
        return
    fi
    tap_like "$rc $(head -n1 "$T/.err")" "^[12] qed: .*$pattern" "$name: refused at once: $pattern"
}

F='fifo: a FIFO; images are only'
refused "info FIFO" "$F" "$QED" info fifo
refused "info -f raw FIFO" "$F" "$QED" info -f raw fifo
refused "map FIFO" "$F" "$QED" map fifo
refused "check FIFO" "$F" "$QED" check fifo
refused "io FIFO" "$F" "$QED" io -c 'read 0 512' fifo
refused "io -r FIFO" "$F" "$QED" io -r -c 'read 0 512' fifo
refused "create FIFO" "$F regular files\$" "$QED" create fifo 1M
refused "create -b FIFO (size from it)" "backing file 'fifo': a FIFO" "$QED" create -b fifo x.qed
refused "create -b FIFO -F raw" "backing file 'fifo': a FIFO" "$QED" create -b fifo -F raw y.qed 1M
refused "convert from FIFO" "$F" "$QED" convert -O raw fifo out.raw
refused "convert to FIFO (raw)" "$F" "$QED" convert -O raw src.qed fifo
refused "convert to FIFO (qed)" "$F" "$QED" convert -O qed src.qed fifo
refused "compare with FIFO" "$F" "$QED" compare src.qed fifo
refused "commit FIFO" "$F" "$QED" commit fifo
refused "rebase onto FIFO" "backing file 'fifo': a FIFO" "$QED" rebase -b fifo src.qed
refused "resize FIFO" "$F" "$QED" resize fifo 2M
refused "compact FIFO" "$F" "$QED" compact fifo
refused "bench FIFO" "$F" "$QED" bench -c 1 fifo
refused "serve FIFO" "$F" "$QED" serve -k sock fifo
[ ! -e x.qed ] && [ ! -e y.qed ]; ok $? "create -b FIFO leaves no image behind"

# A backing file that turned into a FIFO after the overlay was made.
truncate -s 1M base.raw
"$QED" create -q -b base.raw -F raw overlay.qed
rm base.raw
mkfifo base.raw
B="backing file 'base.raw': a FIFO"
refused "io on an overlay whose backing file is a FIFO" "$B" "$QED" io -c 'read 0 512' overlay.qed
refused "map on an overlay whose backing file is a FIFO" "$B" "$QED" map overlay.qed
refused "info --backing-chain, backing FIFO" "$B" "$QED" info --backing-chain overlay.qed
refused "convert of an overlay whose backing file is a FIFO" "$B" "$QED" convert -O raw overlay.qed o.raw
timeout -k 2 "$LIMIT" "$QED" info overlay.qed >/dev/null 2>"$T/.err"
tap_is "$?" 0 "info (no chain) on an overlay whose backing file is a FIFO still works"

# Other kinds of non-files are named too.
mkdir adir
refused "info on a directory" "adir: a directory" "$QED" info adir
refused "info on a character device" "/dev/zero: a character device" "$QED" info /dev/zero

done_testing
