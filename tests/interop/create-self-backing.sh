#!/bin/bash
# SPDX-License-Identifier: MIT
# An image is never made its own backing file: `qed create -b`, `qed rebase
# -b` (safe and -u) and `qed convert -B` refuse a backing name that resolves
# (relative to the image's directory) to the image itself -- through the same
# name, ./ and ../dir/ spellings, a hard link or a symbolic link -- and the
# file's bytes are unchanged afterwards.  Another file is still accepted.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img cmp
require_qed

mkdir dir
"$QED" create -q dir/x.qed 1M || bail_out "cannot create dir/x.qed"
"$QED" io -c "write -P 0x5a 0 64k" dir/x.qed >/dev/null || bail_out "cannot write"
cp dir/x.qed orig.qed
ln dir/x.qed dir/hard.qed
ln -s x.qed dir/sym.qed
"$QED" create -q src.qed 1M || bail_out "cannot create src.qed"

# unchanged NAME — x.qed still has its original bytes (restored afterwards).
unchanged() {
    run cmp orig.qed dir/x.qed
    ok "$RC" "$1: the image is unchanged" "$(cat "$OUT" "$ERR")"
    cp orig.qed dir/x.qed
}

# refused NAME CMD... — CMD fails with one error line and leaves x.qed alone.
refused() {
    local name=$1
    shift
    tap_cmd_rc 1 "$name: refused" "$@"
    tap_like "$(cat "$ERR")" "^qed: .*(same filename as the backing file|cannot be its own backing file)" \
        "$name: the error says why"
    unchanged "$name"
}

# The message is qemu-img's for the one case qemu-img catches.
# (qemu-img compares the two names as given, so run it in the directory.)
in_dir() { (cd dir && "$@"); }
run in_dir qemu-img create -f qed -b x.qed -F qed x.qed
tap_like "$(cat "$ERR")" "Trying to create an image with the same filename as the backing file" \
    "QEMU: qemu-img create refuses the image's own name as backing file"
unchanged "QEMU: qemu-img create"

refused "create -b x.qed" "$QED" create -b x.qed -F qed dir/x.qed
refused "create -b x.qed (no -F, no size)" "$QED" create -b x.qed dir/x.qed
refused "create -b ./x.qed" "$QED" create -b ./x.qed -F qed dir/x.qed 1M
refused "create -b ../dir/x.qed" "$QED" create -b ../dir/x.qed dir/x.qed 1M
refused "create -b hard link" "$QED" create -b hard.qed dir/x.qed 1M
refused "create -b symbolic link" "$QED" create -b sym.qed dir/x.qed 1M
refused "create -b absolute path" "$QED" create -b "$T/dir/x.qed" dir/x.qed 1M
refused "create -o backing_file=" "$QED" create -o backing_file=x.qed dir/x.qed 1M
refused "create through the hard link" "$QED" create -b x.qed dir/hard.qed 1M
refused "create through the symbolic link" "$QED" create -b x.qed dir/sym.qed 1M

refused "rebase -u -b x.qed" "$QED" rebase -u -b x.qed dir/x.qed
refused "rebase -u -b ../dir/hard.qed" "$QED" rebase -u -b ../dir/hard.qed -F qed dir/x.qed
refused "rebase -u -b sym.qed" "$QED" rebase -u -b sym.qed dir/x.qed
refused "rebase -b ./x.qed" "$QED" rebase -b ./x.qed dir/x.qed
refused "rebase -b hard.qed" "$QED" rebase -b hard.qed -F qed dir/x.qed

refused "convert -B x.qed" "$QED" convert -O qed -B x.qed src.qed dir/x.qed
refused "convert -B ../dir/sym.qed" "$QED" convert -O qed -B ../dir/sym.qed src.qed dir/x.qed

# Another file is fine, named the same ways.
cp orig.qed dir/other.qed
tap_cmd "create -b ./other.qed is accepted" "$QED" create -q -b ./other.qed -F qed dir/new.qed
tap_cmd "rebase -u -b ../dir/other.qed is accepted" \
    "$QED" rebase -u -b ../dir/other.qed -F qed dir/x.qed
run qemu-img info --output=json dir/x.qed
tap_like "$(cat "$OUT")" '"backing-filename": "../dir/other.qed"' \
    "QEMU: the rebased image names the other file"
done_testing
