#!/bin/bash
# SPDX-License-Identifier: MIT
# Error handling of the qed CLI: --help/--version, unknown subcommands and
# options, unsupported feature bits, invalid cluster/table sizes, missing and
# looping backing files (an error, never a hang), non-regular files for create,
# truncated files.  Errors are one line on stderr, "qed: FILE: ...", exit 1.
# QEMU's verdict is checked on the same files where it has one.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io perl truncate timeout
require_qed

TAP_TIMEOUT=10

# error_is NAME WANT-REGEX CMD... — CMD exits 1 with one line on stderr that
# starts with "qed: " and matches WANT-REGEX.
error_is() {
    local name=$1 want=$2
    shift 2
    run "$@"
    local lines
    lines=$(wc -l <"$ERR")
    if [ "$RC" -eq 1 ] && [ "$lines" -eq 1 ] && grep -q '^qed: ' "$ERR" && grep -Eiq -- "$want" "$ERR"; then
        pass "$name"
        return 0
    fi
    fail "$name" "expected exit status 1 and one line on stderr starting with 'qed: ' matching /$want/"
    _run_diag "$@"
    return 1
}

# ---- --help, --version ----------------------------------------------------------------
tap_cmd "qed --help exits 0" "$QED" --help
[ -s "$OUT" ]
ok $? "qed --help prints the usage on stdout"
tap_cmd "qed --version exits 0" "$QED" --version
tap_like "$(cat "$OUT")" '[0-9]+\.[0-9]+' "qed --version prints a version number"
for sub in create info map io convert; do
    tap_cmd "qed $sub --help exits 0" "$QED" "$sub" --help
    [ -s "$OUT" ]
    ok $? "qed $sub --help prints something on stdout"
done
tap_cmd_rc 1 "qed without a subcommand exits 1" "$QED"
tap_cmd_rc 1 "an unknown subcommand exits 1" "$QED" frobnicate
tap_cmd_rc 1 "an unknown option exits 1" "$QED" info --frobnicate x.qed
tap_cmd_rc 1 "a missing argument exits 1" "$QED" info
error_is "a file that does not exist" 'nothere\.qed' "$QED" info nothere.qed

# ---- Header fields -----------------------------------------------------------------------
qemu-img create -q -f qed -o cluster_size=4k good.qed 1M
qemu-io -c "write -P 1 0 4k" good.qed >/dev/null

cp good.qed feat.qed
poke_le feat.qed "$HDR_FEATURES" 8 0x100
tap_cmd_rc 1 "QEMU: refuses an unknown feature bit" qemu-img info feat.qed
error_is "unknown feature bit 0x100: qed info" 'Unsupported QED features: 0x100' "$QED" info feat.qed
tap_like "$(cat "$ERR")" '^qed: feat\.qed: ' "the message names the file: qed: FILE: ..."
error_is "unknown feature bit 0x100: qed io" 'Unsupported QED features: 0x100' \
    "$QED" io -r -c "read 0 512" feat.qed
error_is "unknown feature bit 0x100: qed map" 'Unsupported QED features: 0x100' "$QED" map feat.qed
error_is "unknown feature bit 0x100: qed convert" 'Unsupported QED features: 0x100' \
    "$QED" convert -O raw feat.qed feat.raw
cp good.qed feat2.qed
poke_le feat2.qed "$HDR_FEATURES" 8 0x10000000000
error_is "unknown feature bit 1<<40" '0x10000000000' "$QED" info feat2.qed

cp good.qed compat.qed
poke_le compat.qed "$HDR_COMPAT_FEATURES" 8 0x100
tap_cmd "QEMU: accepts unknown compat features" qemu-img info compat.qed
tap_cmd "qed accepts unknown compat features" "$QED" io -r -c "read -P 1 0 4k" compat.qed

cp good.qed ac.qed
poke_le ac.qed "$HDR_AUTOCLEAR" 8 0x100
tap_cmd "QEMU: accepts unknown autoclear features" qemu-img info ac.qed
tap_cmd "qed accepts unknown autoclear features" "$QED" io -r -c "read -P 1 0 4k" ac.qed

cp good.qed cs.qed
poke_le cs.qed "$HDR_CLUSTER_SIZE" 4 3000
tap_cmd_rc 1 "QEMU: refuses cluster size 3000" qemu-img info cs.qed
error_is "cluster size 3000: the message names the value" '3000' "$QED" info cs.qed
cp good.qed cs2.qed
poke_le cs2.qed "$HDR_CLUSTER_SIZE" 4 $((128 * MiB))
error_is "cluster size 128M: the message names the value" '134217728|128 ?M' "$QED" info cs2.qed

cp good.qed ts.qed
poke_le ts.qed "$HDR_TABLE_SIZE" 4 3
tap_cmd_rc 1 "QEMU: refuses table size 3" qemu-img info ts.qed
error_is "table size 3: the message names the value" 'table.*3|3.*table' "$QED" info ts.qed
cp good.qed ts32.qed
poke_le ts32.qed "$HDR_TABLE_SIZE" 4 32
error_is "table size 32: the message names the value" '32' "$QED" info ts32.qed

# ---- Truncated files ---------------------------------------------------------------------
head -c 100 good.qed >short.qed
tap_cmd_rc 1 "QEMU: refuses a 100-byte QED file" qemu-img info short.qed
error_is "a file truncated inside the header" 'short\.qed' "$QED" info short.qed
head -c 8192 good.qed >nol1.qed
tap_cmd_rc 1 "QEMU: refuses a file that ends inside the L1 table" qemu-img info nol1.qed
error_is "a file that ends inside the L1 table" 'nol1\.qed' "$QED" info nol1.qed
cp good.qed nodata.qed
truncate -s $((5 * 4096)) nodata.qed
tap_cmd_rc 1 "QEMU: reading a cluster past the end of the file fails" qemu-io -c "read 0 4k" nodata.qed
error_is "reading through an L2 table past the end of the file fails" 'nodata\.qed' \
    "$QED" io -r -c "read 0 4k" nodata.qed

# ---- Backing files -----------------------------------------------------------------------
qemu-img create -q -f qed -u -b nothere.qed -F qed missing.qed 1M
tap_cmd_rc 1 "QEMU: a missing backing file fails to open" qemu-io -c "read 0 512" missing.qed
error_is "missing backing file: qed io names it" 'nothere\.qed' "$QED" io -r -c "read 0 512" missing.qed
error_is "missing backing file: qed map" 'nothere\.qed' "$QED" map missing.qed
error_is "missing backing file: qed convert" 'nothere\.qed' "$QED" convert -O raw missing.qed missing.raw
error_is "missing backing file: qed info --backing-chain" 'nothere\.qed' \
    "$QED" info --backing-chain missing.qed

# A loop: loop.qed -> loop.qed (qemu-img create refuses to make it; rename one).
qemu-img create -q -f qed -u -b loop.qed -F qed tmp.qed 1M && mv tmp.qed loop.qed
tap_cmd_rc 1 "QEMU: a backing file that is the image itself is refused" qemu-img info --backing-chain loop.qed
error_is "backing loop (self): qed info --backing-chain fails" 'loop\.qed' \
    "$QED" info --backing-chain loop.qed
error_is "backing loop (self): qed map fails without hanging" 'loop\.qed' "$QED" map loop.qed
error_is "backing loop (self): qed io fails without hanging" 'loop\.qed' \
    "$QED" io -r -c "read 0 512" loop.qed
error_is "backing loop (self): qed convert fails without hanging" 'loop\.qed' \
    "$QED" convert -O raw loop.qed loop.raw
# x.qed -> y.qed -> x.qed (qemu-img map hangs on this one).
qemu-img create -q -f qed -u -b y.qed -F qed x.qed 1M
qemu-img create -q -f qed -u -b x.qed -F qed y.qed 1M
error_is "backing loop (x -> y -> x): qed map fails without hanging" '[xy]\.qed' "$QED" map x.qed
error_is "backing loop (x -> y -> x): qed io fails without hanging" '[xy]\.qed' \
    "$QED" io -r -c "read 0 512" x.qed
error_is "backing loop (x -> y -> x): qed info --backing-chain fails" '[xy]\.qed' \
    "$QED" info --backing-chain x.qed

# ---- create -------------------------------------------------------------------------------
ln -s /dev/null devnull.qed
run "$QED" create devnull.qed 1M
tap_is "$RC/$([ -L devnull.qed ] && echo link)/$([ -c /dev/null ] && echo chardev)" "1/link/chardev" \
    "create through a symlink to /dev/null is refused and changes nothing"
if [ "$RC" -eq 1 ] && [ -L devnull.qed ]; then
    error_is "create on /dev/null is refused" '/dev/null|not a regular file|regular' \
        "$QED" create /dev/null 1M
    tap_is "$([ -c /dev/null ] && echo chardev)" chardev "/dev/null is still a character device"
else
    skip "create on /dev/null is refused" "not tried: the symlink test failed"
fi
mkdir adir
error_is "create on a directory is refused" 'adir' "$QED" create adir 1M
mkfifo fifo.qed
error_is "create on a FIFO is refused (without blocking)" 'fifo\.qed' "$QED" create fifo.qed 1M
error_is "create with cluster_size=3000" '3000' "$QED" create -o cluster_size=3000 bad.qed 1M
error_is "create with table_size=3" '3' "$QED" create -o table_size=3 bad.qed 1M
tap_cmd_rc 1 "QEMU: refuses 5G with 4k clusters and table_size=2" \
    qemu-img create -f qed -o cluster_size=4k,table_size=2 bad.qed 5G
error_is "create too big for the geometry (5G, 4k clusters, table_size=2)" 'bad\.qed' \
    "$QED" create -o cluster_size=4k,table_size=2 bad.qed 5G
error_is "create with a size that does not parse" '12Q|size' "$QED" create bad.qed 12Q
error_is "create without a size or backing file" 'size' "$QED" create bad.qed
error_is "create with an unknown option" 'frob' "$QED" create -o frob=1 bad.qed 1M
error_is "create with a missing backing file and no size" 'nothere\.raw' \
    "$QED" create -b nothere.raw -F raw bad.qed

done_testing
