#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
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

# ---- whole images (small clusters keep them small); "\0BACKING\0" then
# the backing file for chains, as fuzz-image.c reads them
img_seed() { # NAME CREATE-ARGS... -- QEMU-IO-COMMANDS...
    local name=$1; shift
    local create=() io=()
    while [ "$1" != -- ]; do create+=("$1"); shift; done; shift
    for c in "$@"; do io+=(-c "$c"); done
    (cd "$tmp" && rm -f img.qed && qemu-img create -q -f qed "${create[@]}" &&
     { [ ${#io[@]} -eq 0 ] || "$QED" io "${io[@]}" img.qed >/dev/null; })
    if [ -f "$tmp/base" ] && [[ " ${create[*]} " == *" -b base "* ]]; then
        { cat "$tmp/img.qed"; printf '\0BACKING\0'; cat "$tmp/base"; } > "$here/corpus/fuzz-image/$name"
    else
        cp "$tmp/img.qed" "$here/corpus/fuzz-image/$name"
    fi
}
truncate -s 16k "$tmp/base"
printf 'base data' | dd of="$tmp/base" conv=notrunc status=none
img_seed empty -o cluster_size=4k,table_size=1 img.qed 1M --
img_seed data -o cluster_size=4k,table_size=1 img.qed 1M -- 'write -P 1 0 8k' 'write -P 2 300k 4k'
img_seed zero-clusters -o cluster_size=4k,table_size=1 img.qed 1M -- 'write -P 3 0 12k' 'write -z 4k 4k'
img_seed two-tables -o cluster_size=4k,table_size=1 img.qed 4M -- 'write -P 4 0 4k' 'write -P 5 3M 4k'
img_seed raw-backing -o cluster_size=4k,table_size=1 -b base -F raw img.qed 1M -- 'write -P 6 5000 100'
img_seed probed-backing -o cluster_size=4k,table_size=2 -b base -F raw img.qed 512k -- 'write -z 0 4k'

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

# ---- NBD before and around TLS (the fuzz target offers TLS with a PSK):
# STARTTLS with plaintext behind it, garbage or a ClientHello after it,
# STARTTLS with data, twice, and after plaintext negotiation.
python3 - "$here/corpus/fuzz-nbd" <<'PY'
import os, ssl, struct, sys
out = sys.argv[1]
def opt(n, data=b""):
    return struct.pack(">QII", 0x49484156454F5054, n, len(data)) + data
def hello():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, outg)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outg.read()
flags = struct.pack(">I", 3)
seeds = {
    "tls-inject-list": flags + opt(5) + opt(3),
    "tls-inject-go": flags + opt(5) + opt(8) + opt(7, struct.pack(">IH", 0, 0)),
    "tls-garbage": flags + opt(5) + b"\x16\x03\x01\xff\xff" + b"A" * 64,
    "tls-clienthello": flags + opt(5) + hello(),
    "tls-with-data": flags + opt(5, b"x") + opt(3),
    "tls-twice": flags + opt(5) + opt(5),
    "tls-after-sr": flags + opt(8) + opt(10, struct.pack(">II", 0, 1) +
                                      struct.pack(">I", 15) + b"base:allocation") + opt(5) + hello(),
    "tls-exportname": flags + opt(1) + opt(5),
}
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
PY
echo "seeds: $(ls "$here/corpus/fuzz-header" | wc -l) headers, $(ls "$here/corpus/fuzz-nbd" | wc -l) NBD sessions"
