#!/bin/bash
# SPDX-License-Identifier: MIT
# Read-only images in an S3-compatible store, s3://BUCKET/KEY, signed with
# AWS Signature V4 from the standard AWS variables.  The store is
# tests/interop/http_faulty.py --s3: path-style, on loopback, and it
# verifies every signature itself (its own SigV4 code, not libcurl's), so
# a wrong secret, a wrong region or no keys at all are refused.
. "$(dirname "$0")/lib.sh"
. "$_lib_dir/nbd-tls-common.bash"
require_qed
require_cmd qemu-img python3
_s3_pids=()
_s3_cleanup() {
    local p
    for p in "${_s3_pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    _cleanup
}
trap _s3_cleanup EXIT

mkdir -p store/images/golden
port=$(free_port)
python3 "$_lib_dir/http_faulty.py" store "$port" --s3 AKIDQEDTEST:s3cr3t-k3y \
    --region eu-west-1 >s3.out 2>s3.err &
_s3_pids+=($!)
wait_port "$port" || bail_out "the S3 test server does not start: $(cat s3.err)"
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=eu-west-1
export AWS_ACCESS_KEY_ID=AKIDQEDTEST AWS_SECRET_ACCESS_KEY=s3cr3t-k3y
unset AWS_SESSION_TOKEN AWS_DEFAULT_REGION

build_std_image store/images/golden/std.qed 65536 4
qemu-img convert -O raw store/images/golden/std.qed std.raw
obj=s3://images/golden/std.qed

run "$QED" info "$obj"
tap_like "$RC $(tr '\n' ' ' <"$OUT")" '^0 image: s3://images/golden/std.qed file format: qed .*disk size: unavailable' "qed info of an s3:// object (signed requests)"
run "$QED" convert -O raw "$obj" std.s3.raw
ok "$RC" "qed convert -O raw of an s3:// object" "$(cat "$ERR")"
same_raw "it equals qemu-img convert of the local file" std.s3.raw std.raw
run env AWS_SECRET_ACCESS_KEY=wrong-secret "$QED" info "$obj"
tap_like "$RC $(cat "$ERR")" '^1 .*403' "a wrong secret is refused by the store (403)"
run env AWS_REGION=us-east-1 "$QED" info "$obj"
tap_like "$RC $(cat "$ERR")" '^1 .*403' "so is a signature for another region"
run env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY "$QED" info "$obj"
tap_like "$RC $(cat "$ERR")" '^1 .*403' "and an unsigned request"
tap_is "$(grep -c 's3cr3t-k3y' "$OUT" "$ERR" | awk -F: '{s += $NF} END {print s}')" 0 "the secret appears in no output or message"
run "$QED" io -c "write 0 512" "$obj"
tap_like "$RC $(cat "$ERR")" '^1 .*read-only' "a read-write open of an s3:// object fails at once"
run "$QED" info s3://images/golden/missing.qed
tap_like "$RC $(cat "$ERR")" '^1 .*No such file or directory' "a missing key: ENOENT"
run "$QED" info s3://UPPER/key
tap_like "$RC $(cat "$ERR")" '^1 .*s3://BUCKET/KEY' "a name that is not a valid bucket/key says what one looks like"

# A local overlay on an object, and a remote layer naming its base
# relatively.
build_qed_chain local
cp local/base.qed local/mid.qed store/images/golden/
qemu-img convert -O raw local/top.qed chain.raw
cp local/top.qed top.qed
"$QED" rebase -u -b s3://images/golden/mid.qed -F qed top.qed
run "$QED" info --backing-chain top.qed
tap_like "$(tr '\n' ' ' <"$OUT")" 'image: s3://images/golden/mid.qed .*image: s3://images/golden/base.qed' "mid.qed's relative name base.qed is the key next to it"
run "$QED" convert -O raw top.qed chain.s3.raw
ok "$RC" "a local top over two layers in the store converts" "$(cat "$ERR")"
same_raw "and reads as qemu-img reads the local chain" chain.s3.raw chain.raw

run "$QED" create -f qed -b "$obj" -F qed over.qed
ok "$RC" "qed create -b s3://... reads the object's size with the credentials" "$(cat "$ERR")"
tap_is "$(qemu-img info --output=json over.qed | grep -o '"virtual-size": [0-9]*')" \
    "\"virtual-size\": $(stat -c %s std.raw)" "the overlay takes the object's size"
run env AWS_SECRET_ACCESS_KEY=wrong-secret "$QED" create -f qed -b "$obj" -F qed over2.qed
tap_like "$RC $(cat "$ERR")" "^1 .*backing file 's3://images/golden/std.qed': .*403" "with a wrong secret it fails, naming the backing file"

cp local/top.qed local/top3.qed
run "$QED" rebase -b s3://images/golden/mid.qed -F qed local/top3.qed
ok "$RC" "qed rebase (safe) onto an s3:// backing file opens it with the credentials" "$(cat "$ERR")"
run "$QED" convert -O raw local/top3.qed chain.rebased.raw
same_raw "the rebased image reads as the local chain" chain.rebased.raw chain.raw

done_testing
