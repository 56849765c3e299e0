#!/bin/bash
# SPDX-License-Identifier: MIT
# `qed convert` options as qemu-img 7.2 has them, each checked against
# qemu-img convert run with the same option on the same files: -n (existing
# output), -S (sparseness), -W (out-of-order writes; without it a QED output
# is laid out in guest order), -T/-t (cache modes), -r (rate limit),
# --salvage (unreadable source ranges), --image-opts/--target-image-opts,
# and -c/-l refused with qemu-img's messages.
. "$(dirname "$0")/lib.sh"
require_cmd qemu-img qemu-io perl cmp
require_qed

# same_content NAME A B — qemu-img compare says A and B read the same.
same_content() {
    tap_cmd "$1" qemu-img compare "$2" "$3"
}

# map_of IMG — qemu-img's JSON map without host offsets, neighbours with the
# same allocation merged: one "start length depth present zero data" line
# each.
map_of() {
    qemu-img map --output=json "$1" | perl -MJSON::PP -e '
        local $/; my @m = @{decode_json(<STDIN>)}; my @out;
        for my $e (@m) {
            my $k = join " ", map { $e->{$_} ? 1 : 0 } qw(present zero data);
            $k = "$e->{depth} $k";
            if (@out && $out[-1][2] eq $k && $out[-1][0] + $out[-1][1] == $e->{start}) {
                $out[-1][1] += $e->{length};
            } else {
                push @out, [$e->{start}, $e->{length}, $k];
            }
        }
        print "@$_\n" for @out;'
}

# same_map NAME A B — A and B have the same allocation (qemu-img map).
same_map() {
    local a b
    a=$(map_of "$2")
    b=$(map_of "$3")
    if [ "$a" = "$b" ]; then
        pass "$1"
    else
        fail "$1" "map of $2:" "$a" "map of $3:" "$b"
    fi
}

# err_like NAME REGEX — the last run exited 1 with stderr matching REGEX.
err_like() {
    tap_like "$RC/$(head -c 2000 "$ERR")" "^1/$2" "$1"
}

# ---- sources ---------------------------------------------------------------------

# A raw file, fully allocated, with data separated by zero runs of 8k, 64k,
# 1k and 20k, and an allocated zero MiB; a 64k-cluster QED copy of it.
_build_begin
rm -f src.raw src.qed
b perl -e '
    open(my $f, ">", "src.raw") or die; print $f "\0" x (4 << 20);
    for ([0, 4096], [12288, 4096], [81920, 4096], [87040, 1024],
         [108544, 512], [1310720, 4096], [3 << 20, 65536]) {
        seek($f, $_->[0], 0); print $f chr(0x41 + $_->[0] % 23) x $_->[1];
    }
    close($f) or die;'
b qemu-img convert -f raw -O qed src.raw src.qed
_build_end "a raw source with short and long zero runs inside its data"

# ---- -n ------------------------------------------------------------------------------

# Targets full of 0xee, so every range the source reads as zeros must be
# written over.
fill_raw() {
    perl -e 'open(my $f, ">", $ARGV[0]) or die; print $f "\xee" x $ARGV[1]' "$1" "$2"
}
fill_qed() {
    rm -f "$1"
    qemu-img create -q -f qed "$1" "$2" && qemu_io -f qed "$1" -- "write -P 0xee 0 $2"
}
_build_begin
b fill_raw n-q.raw $((6 * MiB))
b fill_raw n-m.raw $((6 * MiB))
b fill_qed n-q.qed $((4 * MiB))
b fill_qed n-m.qed $((4 * MiB))
b fill_raw small.raw $((1 * MiB))
b qemu-img convert -n -O raw src.qed n-q.raw
b qemu-img convert -n -O qed src.qed n-q.qed
_build_end "existing raw and QED outputs full of 0xee, and qemu-img convert -n into them"

if tap_cmd "-n into an existing raw file" "$QED" convert -n src.qed n-m.raw; then
    run cmp n-q.raw n-m.raw
    tap_is "$RC" 0 "-n raw: the whole file equals qemu-img convert -n's (zeros written, the tail kept)"
fi
if tap_cmd "-n -O qed into an existing QED image" "$QED" convert -n -O qed src.qed n-m.qed; then
    same_content "-n qed: reads like the source" src.qed n-m.qed
    same_content "-n qed: reads like qemu-img convert -n's output" n-q.qed n-m.qed
    tap_cmd "-n qed: qemu-img check finds the image clean" qemu-img check n-m.qed
fi
run "$QED" convert -n src.qed small.raw
err_like "-n into a smaller output fails as qemu-img does" "qed: small.raw: output file is smaller than input file"
run qemu-img convert -n src.qed small.raw
tap_like "$RC/$(cat "$ERR")" "^1/qemu-img: output file is smaller than input file" "QEMU: the same message"
run "$QED" convert -n src.qed missing.raw
tap_like "$RC/$(cat "$ERR")/$([ -e missing.raw ] && echo created)" "^1/qed: missing.raw: No such file or directory/$" \
    "-n with a missing output fails and creates nothing"
run "$QED" convert -n -O qed -o cluster_size=4k src.qed n-m.qed
err_like "-n with -o fails as qemu-img does" "qed: convert: -o has no effect when skipping image creation"

# ---- -S ------------------------------------------------------------------------------

for s in 512 4k 8k 64k 256k 0; do
    run qemu-img convert -S "$s" -O raw src.raw "q-S$s.raw"
    if tap_cmd "-S $s" "$QED" convert -S "$s" -O raw src.raw "m-S$s.raw"; then
        run cmp "q-S$s.raw" "m-S$s.raw"
        tap_is "$RC" 0 "-S $s: the raw output equals qemu-img's"
        same_map "-S $s: allocated where qemu-img's output is" "q-S$s.raw" "m-S$s.raw"
    fi
done
q=$(du -k q-S8k.raw | cut -f1)
m=$(du -k m-S4k.raw | cut -f1)
[ "$q" -gt "$m" ]
ok $? "-S 8k writes the 4k zero runs between data that -S 4k leaves out ($q KiB vs $m KiB)"
run qemu-img convert -S 0 -O qed src.raw q-S0.qed
if tap_cmd "-S 0 -O qed" "$QED" convert -S 0 -O qed src.raw m-S0.qed; then
    same_content "-S 0 -O qed: reads like the source" src.raw m-S0.qed
    same_map "-S 0 -O qed: every cluster allocated, as qemu-img's" q-S0.qed m-S0.qed
fi
run "$QED" convert -S 1000 -O raw src.raw bad.raw
err_like "-S 1000 (not a multiple of 512) fails with qemu-img's message" \
    "qed: convert: Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216. Select 0 to disable sparse detection \(fully allocates output\)."
run qemu-img convert -S 1000 -O raw src.raw bad.raw
tap_like "$RC/$(cat "$ERR")" "^1/qemu-img: Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216" \
    "QEMU: the same message for -S 1000"
run "$QED" convert -S 32M -O raw src.raw bad.raw
err_like "-S 32M (over 16 MiB) fails" "qed: convert: Invalid buffer size for sparse output specified. Valid sizes"
run "$QED" convert -S 4x -O raw src.raw bad.raw
err_like "-S 4x (not a size) fails" "qed: convert: Invalid buffer size for sparse output specified. You may use k, M, G, T, P or E suffixes"

# ---- -W --------------------------------------------------------------------------

_build_begin
b dd if=/dev/urandom of=rand.raw bs=1M count=64 status=none
_build_end "64 MiB of random data"
run "$QED" convert -m 16 -O qed rand.raw io.qed
if [ "$RC" -eq 0 ] && qemu-img compare -q rand.raw io.qed; then
    run "$QED" check io.qed
    tap_like "$(cat "$OUT")" "1024/1024 = 100.00% allocated, 0.00% fragmented" \
        "without -W (16 requests): the copy has no fragmented cluster (clusters in guest order)"
    run qemu-img check io.qed
    tap_like "$(cat "$OUT")" "0.00% fragmented" "QEMU: qemu-img check finds no fragmentation either"
else
    fail "without -W (16 requests): the copy has no fragmented cluster (clusters in guest order)" \
        "convert exit status $RC, or the copy differs" "$(cat "$ERR")"
fi
if tap_cmd "-W (out-of-order writes), 16 requests" "$QED" convert -W -m 16 -O qed rand.raw oo.qed; then
    same_content "-W: reads like the source" rand.raw oo.qed
    tap_cmd "-W: qemu-img check finds the image clean" qemu-img check oo.qed
fi
run qemu-img convert -W -O raw src.qed q-W.raw
if tap_cmd "-W -O raw" "$QED" convert -W -O raw src.qed m-W.raw; then
    run cmp q-W.raw m-W.raw
    tap_is "$RC" 0 "-W -O raw equals qemu-img convert -W"
fi

# ---- -T, -t ------------------------------------------------------------------------

run qemu-img convert -O raw src.qed q.raw
for c in none off directsync writeback writethrough unsafe; do
    if tap_cmd "-T $c" "$QED" convert -T "$c" -O raw src.qed "m-T$c.raw"; then
        run cmp q.raw "m-T$c.raw"
        tap_is "$RC" 0 "-T $c: equals qemu-img convert"
    fi
done
for c in directsync writethrough off; do
    if tap_cmd "-t $c" "$QED" convert -t "$c" -O qed src.raw "m-t$c.qed"; then
        same_content "-t $c: reads like the source" src.raw "m-t$c.qed"
    fi
done
if command -v strace >/dev/null; then
    run strace -f -e trace=openat -o trace.txt "$QED" convert -T none -O raw src.qed m-direct.raw
    run strace -f -e trace=openat -o trace2.txt "$QED" convert -O raw src.qed m-nodirect.raw
    opens=$(grep -c 'src.qed' trace.txt)
    direct=$(grep 'src.qed' trace.txt | grep -c O_DIRECT)
    plain=$(grep 'src.qed' trace2.txt | grep -c O_DIRECT)
    [ "$opens" -gt 0 ] && [ "$direct" = "$opens" ] && [ "$plain" = 0 ]
    ok $? "-T none opens the source with O_DIRECT, and only -T none does ($direct of $opens opens; $plain without -T)"
else
    skip "-T none opens the source with O_DIRECT" "strace is not installed"
fi
run "$QED" convert -T bogus -O raw src.qed bad.raw
err_like "-T bogus fails with qemu-img's message" "qed: convert: Invalid source cache option: bogus"
run qemu-img convert -T bogus -O raw src.qed bad.raw
tap_like "$RC/$(cat "$ERR")" "^1/qemu-img: Invalid source cache option: bogus" "QEMU: the same message for -T bogus"

# ---- -r --------------------------------------------------------------------------------

_build_begin
rm -f rate.qed
b qemu-img create -q -f qed rate.qed 8M
bio qed rate.qed "write -P 0x5a 0 4M"
_build_end "a QED image with 4 MiB of data and 4 MiB unallocated"
start=$(date +%s%N)
run "$QED" convert -r 2M -O raw rate.qed m-rate.raw
ms=$(( ($(date +%s%N) - start) / 1000000 ))
if [ "$RC" -eq 0 ] && [ "$ms" -ge 1500 ] && [ "$ms" -lt 20000 ]; then
    pass "-r 2M: 4 MiB of data take at least 1.5 s ($ms ms)"
else
    fail "-r 2M: 4 MiB of data take at least 1.5 s ($ms ms)" "exit status $RC" "$(cat "$ERR")"
fi
run qemu-img convert -O raw rate.qed q-rate.raw
run cmp q-rate.raw m-rate.raw
tap_is "$RC" 0 "-r 2M: the output equals qemu-img convert's"
run qemu-img create -q -f qed empty.qed 8M
start=$(date +%s%N)
run "$QED" convert -r 1k -O raw empty.qed m-empty.raw
ms=$(( ($(date +%s%N) - start) / 1000000 ))
if [ "$RC" -eq 0 ] && [ "$ms" -lt 1000 ]; then
    pass "-r 1k: unallocated ranges are not data and are not slowed ($ms ms)"
else
    fail "-r 1k: unallocated ranges are not data and are not slowed ($ms ms)" "exit status $RC" "$(cat "$ERR")"
fi
run "$QED" convert -r 0 -O raw rate.qed m-rate0.raw
tap_is "$RC" 0 "-r 0: no limit"
run "$QED" convert -r -5 -O raw rate.qed bad.raw
err_like "-r -5 fails with qemu-img's message" "qed: convert: Invalid rate limit specified. You may use k, M, G, T, P or E suffixes"
run qemu-img convert -r -5 -O raw rate.qed bad.raw
tap_like "$RC/$(cat "$ERR")" "^1/qemu-img: Invalid rate limit specified" "QEMU: the same message for -r -5"

# ---- --salvage -------------------------------------------------------------------------

# 64k clusters; data at [0, 1M) and [3M, 3M+64k); the L2 entry of the third
# cluster ([128k, 192k)) made to point past the end of the file.
_build_begin
rm -f bad.qed
b qemu-img create -q -f qed bad.qed 4M
bio qed bad.qed "write -P 0x33 0 1M" "write -P 0x44 3M 64k"
_build_end "a QED image with data"
l1=$(peek_le bad.qed $HDR_L1_OFFSET 8)
l2=$(peek_le bad.qed "$l1" 8)
poke_le bad.qed $((l2 + 2 * 8)) 8 $((0x40000000))
run qemu-img convert --salvage -O raw bad.qed q-salvage.raw
tap_is "$RC" 0 "QEMU: qemu-img convert --salvage exits 0"
run "$QED" convert -O raw bad.qed m-nosalvage.raw
plain="$RC/$(head -c 300 "$ERR")"
run "$QED" convert --salvage -O raw bad.qed m-salvage.raw
tap_like "$RC $plain" "^0 1/qed: m-nosalvage.raw: .*131072" \
    "--salvage exits 0 where a plain convert stops at the unreadable range with an error"
run cmp q-salvage.raw m-salvage.raw
tap_is "$RC" 0 "--salvage: the output equals qemu-img convert --salvage's (zeros for the unreadable cluster)"
run "$QED" convert --salvage -O raw bad.qed m-salvage.raw
tap_is "$(grep -c 'warning: error while reading offset 131072: .*65536 bytes written as zeros' "$ERR")" 1 \
    "--salvage: one warning names the unreadable range"
tap_is "$(grep -c 'warning: error while reading offset' "$ERR")" 1 "--salvage: no warning for what could be read"
run "$QED" convert -q --salvage -O raw bad.qed m-quiet.raw
tap_is "$RC/$(cat "$ERR")" "0/" "--salvage -q: no warnings"
run qemu-img convert --salvage -O qed bad.qed q-salvage.qed
if tap_cmd "--salvage -O qed" "$QED" convert --salvage -O qed bad.qed m-salvage.qed; then
    same_content "--salvage -O qed reads like qemu-img's salvaged output" q-salvage.qed m-salvage.qed
fi

run "$QED" convert --salvage -O qed -B src.qed -F qed bad.qed sb.qed
tap_like "$RC/$(head -c 300 "$ERR")/$([ -e sb.qed ] && echo created)" \
    "^1/qed: sb.qed: salvage needs an output without a backing file.*/$" \
    "--salvage with -B is refused before anything is written"

# ---- --image-opts, --target-image-opts ---------------------------------------------

run qemu-img convert --image-opts -O raw driver=qed,file.filename=src.qed q-io.raw
for opts in driver=qed,file.filename=src.qed \
    driver=qed,file.driver=file,file.filename=src.qed \
    file.filename=src.qed \
    driver=qed,file.filename=src.qed,cache.direct=on,read-only=on; do
    if tap_cmd "--image-opts $opts" "$QED" convert --image-opts -O raw "$opts" m-io.raw; then
        run cmp q-io.raw m-io.raw
        tap_is "$RC" 0 "--image-opts $opts: equals qemu-img's output"
    fi
done
if tap_cmd "--image-opts driver=raw,file.driver=file,file.filename=src.raw" \
    "$QED" convert --image-opts -O qed driver=raw,file.driver=file,file.filename=src.raw m-io.qed; then
    same_content "--image-opts raw: reads like the source" src.raw m-io.qed
fi
run "$QED" convert --image-opts -O raw driver=qed,file.filename=src.qed,bogus=1 bad.raw
err_like "--image-opts with an unknown key names the key" \
    "qed: driver=qed,file.filename=src.qed,bogus=1: Block format 'qed' does not support the option 'bogus'"
run qemu-img convert --image-opts -O raw driver=qed,file.filename=src.qed,bogus=1 bad.raw
tap_like "$RC/$(cat "$ERR")" "^1/.*Block format 'qed' does not support the option 'bogus'" "QEMU: the same words"
run "$QED" convert --image-opts -O raw driver=qed bad.raw
err_like "--image-opts without a file name fails" "qed: driver=qed: A block device must be specified"
run "$QED" convert --target-image-opts src.qed driver=raw,file.filename=x.raw
err_like "--target-image-opts without -n fails as qemu-img does" \
    "qed: convert: --target-image-opts requires use of -n flag"
run qemu-img convert --target-image-opts src.qed driver=raw,file.filename=x.raw
tap_like "$RC/$(cat "$ERR")" "^1/qemu-img: --target-image-opts requires use of -n flag" "QEMU: the same message"
_build_begin
b fill_qed t-q.qed $((4 * MiB))
b fill_qed t-m.qed $((4 * MiB))
b qemu-img convert -n --target-image-opts src.raw driver=qed,file.filename=t-q.qed
_build_end "qemu-img convert -n --target-image-opts into a QED image"
if tap_cmd "-n --target-image-opts driver=qed,file.filename=..." \
    "$QED" convert -n --target-image-opts src.raw driver=qed,file.filename=t-m.qed; then
    same_content "--target-image-opts: reads like qemu-img's output" t-q.qed t-m.qed
fi
fill_raw t-m.raw $((4 * MiB))
if tap_cmd "-n --target-image-opts file.filename=... (probed: raw)" \
    "$QED" convert -n --target-image-opts src.qed file.filename=t-m.raw; then
    run cmp src.raw t-m.raw
    tap_is "$RC" 0 "--target-image-opts raw: the file equals the source's content"
fi
run "$QED" convert -n --target-image-opts src.qed driver=raw,file.filename=t-m.raw,read-only=on
err_like "a read-only target is refused" "qed: driver=raw,file.filename=t-m.raw,read-only=on: Block node is read-only"

# ---- -c, -l ------------------------------------------------------------------------------

run "$QED" convert -c -O qed src.qed c.qed
tap_like "$RC/$(cat "$ERR")/$([ -e c.qed ] && echo created)" \
    "^1/qed: c.qed: Compression not supported for this file format/$" "-c fails as qemu-img does, creating nothing"
run qemu-img convert -c -O qed src.qed c.qed
tap_like "$RC/$(cat "$ERR")" "^1/qemu-img: Compression not supported for this file format" "QEMU: the same message"
run "$QED" convert -l snap -O qed src.qed l.qed
tap_like "$RC/$(cat "$ERR")/$([ -e l.qed ] && echo created)" \
    "^1/qed: src.qed: Failed to load snapshot: Block format 'qed' does not support temporarily loading internal snapshots" \
    "-l fails as qemu-img does, creating nothing"

# ---- documentation -----------------------------------------------------------------------

run "$QED" convert --help
missing=
for o in ' -n ' ' -S SIZE' ' -W ' ' -T CACHE' ' -t CACHE' ' -r RATE' '--salvage' '--image-opts' '--target-image-opts'; do
    grep -qe "$o" "$OUT" || missing+="'$o' "
done
tap_is "$missing" "" "convert --help documents every option"
man=$_lib_dir/../../man/qed.1
missing=
for o in 'salvage' 'image\\-opts' 'target\\-image\\-opts' '^\.BI? \\-S' '^\.BI? \\-W' '^\.BI? \\-T' '^\.BI? \\-r' '^\.BI? \\-n'; do
    sed -n '/^\.SS convert/,/^\.SS /p' "$man" | grep -qE "$o" || missing+="$o "
done
tap_is "$missing" "" "the man page's convert section documents every option"

done_testing
