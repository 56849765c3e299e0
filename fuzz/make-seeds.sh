#!/usr/bin/env bash
# Makes the seed corpora under fuzz/corpus: QED headers from images qemu-img
# creates (each prefixed with the 8-byte file size the fuzzer checks them
# against), and the bytes real NBD clients send to `qed serve`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
QED=${QED:-$here/../build/qed}
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT

# ---- headers
n=0
for opts in cluster_size=4k,table_size=1 cluster_size=64k,table_size=4 \
            cluster_size=1M,table_size=16 cluster_size=64M,table_size=2; do
    for backing in "" "-b base.raw -F raw" "-b base.qed -F qed"; do
        (cd "$tmp" && truncate -s 1M base.raw && qemu-img create -q -f qed base.qed 1M &&
         qemu-img create -q -f qed $backing -o "$opts" img.qed 64M 2>/dev/null) || continue
        n=$((n + 1))
        size=$(stat -c %s "$tmp/img.qed")
        { perl -e 'print pack("Q<", $ARGV[0])' "$size"; head -c 4096 "$tmp/img.qed"; } \
            > "$here/corpus/fuzz-header/qemu-img-$n"
    done
done

# ---- NBD sessions
"$QED" create -q "$tmp/s.qed" 8M
"$QED" serve -t -k "$tmp/server.sock" "$tmp/s.qed" &
for _ in $(seq 100); do [ -S "$tmp/server.sock" ] && break; sleep 0.05; done
python3 "$here/record-nbd-session.py" "$tmp/proxy.sock" "$tmp/server.sock" \
    "$here/corpus/fuzz-nbd" session &
for _ in $(seq 100); do [ -S "$tmp/proxy.sock" ] && break; sleep 0.05; done
uri="nbd+unix:///?socket=$tmp/proxy.sock"
nbdinfo "$uri" >/dev/null
nbdinfo --map "$uri" >/dev/null
nbdinfo --map=qemu:allocation-depth "$uri" >/dev/null
nbdinfo --list "$uri" >/dev/null
qemu-io -f raw -c 'write -P 0x5a 0 64k' -c 'read -P 0x5a 0 64k' -c 'write -z 1M 64k' \
    -c 'discard 2M 64k' -c 'flush' -c 'aio_write -P 7 3M 4k' -c 'aio_flush' "$uri" >/dev/null
qemu-img map --output=json -f raw "$uri" >/dev/null
nbdcopy "$uri" "$tmp/out.raw"
truncate -s 64k "$tmp/in.raw"
nbdcopy "$tmp/in.raw" "$uri"
sleep 0.3
echo "seeds: $(ls "$here/corpus/fuzz-header" | wc -l) headers, $(ls "$here/corpus/fuzz-nbd" | wc -l) NBD sessions"
