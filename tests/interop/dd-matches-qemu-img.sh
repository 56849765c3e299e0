#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed dd` does what `qemu-img dd` does, for QED and raw inputs (a chain
# too) and outputs: the same exit status and messages, raw outputs byte for
# byte the same (fully allocated, as qemu-img writes them), QED outputs
# with the same content, size, file length and allocation (every cluster
# data); bs/count/skip with suffixes and qemu-img's quirks (count counts
# from the start of the input; a skip past the end makes an empty output
# and a warning; sizes rounded up to 512); qemu-img's errors for missing
# if/of, unknown operands and bad values; an output that is the input (or
# one of its backing files) is refused before anything is truncated.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io perl truncate cmp du
require_qed

# flat_map IMG — the allocation of IMG: start+length:present,zero,data,depth
# with adjacent equal ranges merged (host offsets left out).
flat_map() {
    qemu-img map --output=json "$1" | perl -MJSON::PP -e '
        local $/;
        my $m = decode_json(<STDIN>);
        my @o;
        for my $e (@$m) {
            my $k = join(",", map { $e->{$_} ? 1 : 0 } qw(present zero data)) . ",$e->{depth}";
            if (@o && $o[-1][0] eq $k) { $o[-1][2] += $e->{length} }
            else { push @o, [$k, $e->{start}, $e->{length}] }
        }
        print join(" ", map { "$_->[1]+$_->[2]:$_->[0]" } @o), "\n"'
}

# same_output FMT QEMU-OUT QED-OUT — prints what differs.
same_output() {
    local fmt=$1 q=$2 m=$3
    if [ "$fmt" = raw ]; then
        cmp -s "$q" "$m" || echo "the raw outputs differ: $(cmp "$q" "$m" 2>&1)"
        [ "$(du -k "$q" | cut -f1)" = "$(du -k "$m" | cut -f1)" ] ||
            echo "allocated: qemu-img $(du -k "$q" | cut -f1) KiB, qed $(du -k "$m" | cut -f1) KiB"
        return
    fi
    qemu-img convert -O raw "$q" "$q.view" && qemu-img convert -O raw "$m" "$m.view"
    cmp -s "$q.view" "$m.view" || echo "the QED outputs read differently (or have other sizes)"
    [ "$(flat_map "$q")" = "$(flat_map "$m")" ] ||
        echo "allocation: qemu-img '$(flat_map "$q")', qed '$(flat_map "$m")'"
    [ "$(file_size "$q")" = "$(file_size "$m")" ] ||
        echo "file length: qemu-img $(file_size "$q"), qed $(file_size "$m")"
    run perl "$_lib_dir/../qemu-check-clean" "$m"
    [ "$RC" -eq 0 ] || echo "qemu-img check: $(cat "$OUT" "$ERR")"
}

# agrees FMT INPUT OPERANDS... — qemu-img dd -O FMT and qed dd -O FMT with
# the same operands: same status and messages, same output.
agrees() {
    local fmt=$1 in=$2 qres mres problems
    shift 2
    rm -f q.out m.out ./*.view
    run qemu-img dd -O "$fmt" "$@" if="$in" of=q.out
    qres="$RC:$(sed 's/^qemu-img: /qed: /' "$ERR")"
    run "$QED" dd -O "$fmt" "$@" if="$in" of=m.out
    mres="$RC:$(cat "$ERR")"
    if [ "$qres" != "$mres" ]; then
        fail "dd -O $fmt $* if=$in" "qemu-img: $qres" "qed:      $mres"
        return
    fi
    problems=$(same_output "$fmt" q.out m.out)
    if [ -z "$problems" ]; then
        pass "dd -O $fmt $* if=$in"
    else
        fail "dd -O $fmt $* if=$in" "$problems"
    fi
}

build_std_image std.qed 65536 4
qemu-img convert -O raw std.qed std.raw
build_qed_chain chain
_build_begin
b truncate -s 1000000 odd.raw
bio raw odd.raw "write -P 0x66 999000 1000" "write -P 0x67 0 3000"
b qemu-img create -q -f qed -o cluster_size=4k,table_size=2 l2.qed 10M
bio qed l2.qed "write -P 0x44 3M 2M" "write -z 6M 64k" "write -P 0x45 $((10 * MiB - 3000)) 3000"
_build_end "odd.raw (1000000 bytes) and l2.qed (4k clusters, several L2 tables)"

operand_sets=(
    ""
    "bs=4k"
    "bs=4k skip=2 count=3"
    "bs=4k skip=2 count=30"
    "bs=4k count=300"
    "bs=64k skip=3"
    "bs=1000 count=3"
    "bs=3000 skip=100"
    "skip=1k"
    "bs=1M skip=1"
    "bs=7 skip=3 count=10000"
    "count=1 bs=1G"
    "count=0"
    "bs=1000 skip=1 count=1"
)
for in in std.qed std.raw chain/top.qed odd.raw l2.qed; do
    for fmt in raw qed; do
        for ops in "${operand_sets[@]}"; do
            # shellcheck disable=SC2086 # zero or more operands
            agrees "$fmt" "$in" $ops
        done
    done
done
# -f for the input.
agrees raw std.raw -f raw bs=64k skip=2
agrees qed std.qed -f qed bs=64k count=5

# A skip past the end: qemu-img's warning, exit 0, an empty output.
run "$QED" dd bs=4k skip=100000 if=std.qed of=empty.out
tap_is "$RC:$(cat "$ERR"):$(file_size empty.out)" \
    "0:qed: std.qed: cannot skip to specified offset:0" "a skip past the end: warning, exit 0, empty output"

# Errors, in qemu-img's words (one line where qemu-img prints two), and no
# output is created.
error_is() {
    local name=$1 want=$2
    shift 2
    rm -f x.out
    run "$QED" dd "$@"
    [ ! -e x.out ] || echo "(x.out was created)" >>"$ERR"
    tap_is "$RC:$(cat "$ERR")" "1:qed: $want" "$name"
}
error_is "no of=: qemu-img's message" "Must specify both input and output files" if=std.qed
error_is "no if=: qemu-img's message" "Must specify both input and output files" of=x.out
error_is "an operand without =" "unrecognized operand foo" foo if=std.qed of=x.out
error_is "an unknown operand" "unrecognized operand bar" bar=1 if=std.qed of=x.out
error_is "bs=0" "Invalid bs specified. Must be between 1 and 2147483647." bs=0 if=std.qed of=x.out
error_is "bs=2G" "Invalid bs specified. Must be between 1 and 2147483647." bs=2G if=std.qed of=x.out
error_is "count=-1" "Invalid count specified: invalid size '-1'" count=-1 if=std.qed of=x.out
error_is "skip=8E" "Invalid skip specified. Must be between 0 and 9223372036854775807." \
    skip=8E if=std.qed of=x.out
run qemu-img dd bs=0 if=std.qed of=x.out
tap_is "$RC:$(cat "$ERR")" "1:qemu-img: Invalid bs specified. Must be between 1 and 2147483647." \
    "QEMU: bs=0 is refused the same way"

# The output must not be a file the copy reads: refused before anything is
# truncated.
cp std.raw same.raw
run "$QED" dd if=same.raw of=same.raw
cmp -s same.raw std.raw || echo "(same.raw changed)" >>"$ERR"
tap_is "$RC:$(cat "$ERR")" "1:qed: same.raw: error while creating output image: it is the input image" \
    "of= the input: refused, the input intact"
cp chain/base.qed base.before
run "$QED" dd -O qed if=chain/top.qed of=chain/base.qed
cmp -s chain/base.qed base.before || echo "(chain/base.qed changed)" >>"$ERR"
tap_is "$RC:$(cat "$ERR")" \
    "1:qed: chain/base.qed: error while creating output image: it is a backing file of the input ('chain/base.qed')" \
    "of= a backing file of the input: refused, the file intact"

run "$QED" --help
tap_like "$(cat "$OUT")" '^  dd +Copy part of an image' "qed --help lists dd"

done_testing
