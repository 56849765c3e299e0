#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed create` lays out images exactly as `qemu-img create -f qed` does (the
# two files are byte for byte equal) for a range of options, and `qemu-img info`
# on what qed created agrees with `qed info` on every field.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io perl truncate cmp
require_qed

truncate -s 3M base.raw
qemu-img create -q -f qed -o cluster_size=4k base.qed 2M
mkdir -p qed-sub qemu-sub b
truncate -s 1M b/rel.raw

# same_create NAME "QED ARGS" "QEMU-IMG ARGS" FILE — both create FILE (in
# directories qed/ and qemu/ under the same relative name) with the given
# arguments; the files must be equal.
same_create() {
    local name=$1 qargs=$2 margs=$3 file=$4
    local -a qa ma
    read -r -a qa <<<"$qargs"
    read -r -a ma <<<"$margs"
    rm -f "qed-$file" "qemu-$file"
    if ! qemu-img create -q -f qed "${ma[@]}" "qemu-$file" "${SIZE[@]}" >"$T/.c.out" 2>&1; then
        fail "$name: QEMU creates the reference" "$(cat "$T/.c.out")"
        return 1
    fi
    tap_cmd "$name: qed create" "$QED" create "${qa[@]}" "qed-$file" "${SIZE[@]}" || return 1
    run cmp "qemu-$file" "qed-$file"
    if [ "$RC" -eq 0 ]; then
        pass "$name: the file equals qemu-img create's"
    else
        fail "$name: the file equals qemu-img create's" "$(cat "$OUT" "$ERR")" \
            "sizes: qemu $(file_size "qemu-$file"), qed $(file_size "qed-$file")" \
            "first differing bytes (offset, qemu, qed in octal): $(cmp -l "qemu-$file" "qed-$file" 2>&1 | head -8 | tr '\n' ';')"
    fi
    if [[ "$file" != */* && "$file" != ts1* ]]; then
        info_agrees "$name: qemu-img info and qed info agree on the qed-created file" "qed-$file"
    fi
}

SIZE=(10M)
same_create "defaults" "" "" def.qed
SIZE=(64M)
same_create "cluster_size=4k,table_size=16" "-o cluster_size=4k,table_size=16" \
    "-o cluster_size=4k,table_size=16" c4k.qed
SIZE=(1G)
same_create "cluster_size=2M,table_size=2" "-o cluster_size=2M,table_size=2" \
    "-o cluster_size=2M,table_size=2" c2m.qed
SIZE=(100G)
same_create "cluster_size=1M,table_size=8, 100G" "-o cluster_size=1M,table_size=8" \
    "-o cluster_size=1M,table_size=8" c1m.qed
SIZE=(1M)
same_create "table_size=1 (QEMU creates what it cannot open)" "-o cluster_size=4k,table_size=1" \
    "-o cluster_size=4k,table_size=1" ts1.qed
run "$QED" info --output=json qed-ts1.qed
cp "$OUT" ts1.json
tap_is "$RC/$(json_get ts1.json virtual-size 2>&1)/$(json_get ts1.json cluster-size 2>&1)" "0/1048576/4096" \
    "qed info reads the table_size=1 image it created"
SIZE=(1000000)
same_create "a size that is not a multiple of 512 is rounded up" "" "" odd.qed
tap_is "$(peek_le qemu-odd.qed "$HDR_IMAGE_SIZE" 8)" 1000448 "QEMU: 1000000 is stored as 1000448"
SIZE=(0)
same_create "size 0" "" "" zero.qed
SIZE=(5G)
same_create "size with a suffix (5G)" "" "" fiveg.qed

# Backing files.
SIZE=()
same_create "-b base.raw -F raw, size from the backing file" "-b base.raw -F raw" "-b base.raw -F raw" braw.qed
tap_is "$(peek_le qemu-braw.qed "$HDR_FEATURES" 8)" 5 "QEMU: -F raw sets BACKING_FILE|NO_PROBE (0x5)"
same_create "-b base.qed -F qed, size from the backing file" "-b base.qed -F qed" "-b base.qed -F qed" bqed.qed
same_create "-b base.qed with the format probed" "-b base.qed" "-b base.qed -F qed" bprobe.qed
tap_is "$(peek_le qemu-bprobe.qed "$HDR_FEATURES" 8)" 1 "QEMU: -F qed sets only BACKING_FILE (0x1)"
SIZE=(20M)
same_create "-b base.raw -F raw with a size" "-b base.raw -F raw" "-b base.raw -F raw" braw20.qed
same_create "-o backing_file=base.raw,backing_fmt=raw" "-o backing_file=base.raw,backing_fmt=raw" \
    "-o backing_file=base.raw,backing_fmt=raw" bopt.qed
same_create "backing file and cluster_size=4k,table_size=2" "-b base.qed -F qed -o cluster_size=4k,table_size=2" \
    "-b base.qed -F qed -o cluster_size=4k,table_size=2" b4k.qed
same_create "an absolute backing name" "-b $T/base.raw -F raw" "-b $T/base.raw -F raw" babs.qed
SIZE=()
same_create "a backing name relative to the image's directory" "-b ../b/rel.raw -F raw" \
    "-b ../b/rel.raw -F raw" sub/rel.qed
tap_is "$(file_size qed-sub/rel.qed 2>/dev/null)/$(json_get <(qemu-img info --output=json qed-sub/rel.qed) virtual-size 2>&1)" \
    "$(file_size qemu-sub/rel.qed)/1048576" "the relative backing file is found from the image's directory"

done_testing
