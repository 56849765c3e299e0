#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A small HTTP/1.1 server for the HTTP and S3 storage tests: serves the
files of a directory with Range requests and a strong ETag, and misbehaves
on purpose.

  http_faulty.py DIR PORT [--drop-every N] [--fail-every N] [--stall]
                          [--s3 ACCESS_KEY:SECRET [--region R]]

--drop-every N  closes every Nth connection without an answer
--fail-every N  answers every Nth request 503 with Retry-After: 0
--stall         accepts, reads the request, never answers
--s3            an S3 endpoint (path-style: /BUCKET/KEY is DIR/BUCKET/KEY)
                that answers only requests carrying a valid AWS Signature
                V4 for these keys (403 SignatureDoesNotMatch otherwise),
                computed here independently of the client's library
Prints "ready" once listening on 127.0.0.1:PORT.
"""
import argparse
import hashlib
import hmac
import os
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler

COUNTS = {"conn": 0, "req": 0}
LOCK = threading.Lock()


def etag_of(path):
    st = os.stat(path)
    h = hashlib.sha1(f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}".encode())
    return '"' + h.hexdigest()[:16] + '"'


def hmac256(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sigv4_valid(handler):
    """The Authorization header checked as S3 checks it (header auth)."""
    auth = handler.headers.get("Authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return False
    fields = dict(p.strip().split("=", 1) for p in auth[17:].split(","))
    akid, date, region, service, term = fields["Credential"].split("/")
    access, secret = ARGS.s3.split(":", 1)
    if akid != access or region != ARGS.region or service != "s3":
        return False
    signed = fields["SignedHeaders"].split(";")
    path, _, query = handler.path.partition("?")
    canonical_query = "&".join(sorted(q if "=" in q else q + "=" for q in query.split("&") if q))
    headers = "".join(f"{h}:{' '.join(handler.headers.get(h, '').split())}\n" for h in signed)
    payload = handler.headers.get("x-amz-content-sha256", "")
    request = "\n".join([handler.command, path, canonical_query, headers,
                         fields["SignedHeaders"], payload])
    scope = f"{date}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", handler.headers.get("x-amz-date", ""),
                         scope, hashlib.sha256(request.encode()).hexdigest()])
    key = hmac256(("AWS4" + secret).encode(), date)
    for part in (region, "s3", "aws4_request"):
        key = hmac256(key, part)
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["Signature"])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        with LOCK:
            COUNTS["conn"] += 1
            n = COUNTS["conn"]
        if ARGS.drop_every and n % ARGS.drop_every == 0:
            self.request.close()
            self.dropped = True
        else:
            self.dropped = False

    def handle(self):
        if not self.dropped:
            super().handle()

    def do_GET(self):
        if ARGS.stall:
            time.sleep(3600)
            return
        with LOCK:
            COUNTS["req"] += 1
            n = COUNTS["req"]
        if ARGS.fail_every and n % ARGS.fail_every == 0:
            self.send_response(503)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if ARGS.s3 and not sigv4_valid(self):
            body = b"<Error><Code>SignatureDoesNotMatch</Code></Error>"
            self.send_response(403)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        path = os.path.join(ARGS.dir, self.path.lstrip("/").split("?")[0])
        if not os.path.isfile(path):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        tag = etag_of(path)
        match = self.headers.get("If-Match")
        if match and match != tag:
            self.send_response(412)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size = os.path.getsize(path)
        rng = self.headers.get("Range", "")
        if not rng.startswith("bytes="):
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.send_header("ETag", tag)
            self.end_headers()
            with open(path, "rb") as f:
                self.wfile.write(f.read())
            return
        first, _, last = rng[6:].partition("-")
        first = int(first)
        last = min(int(last) if last else size - 1, size - 1)
        if first >= size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with open(path, "rb") as f:
            f.seek(first)
            data = f.read(last - first + 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", tag)
        self.end_headers()
        self.wfile.write(data)


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("port", type=int)
    p.add_argument("--drop-every", type=int, default=0)
    p.add_argument("--fail-every", type=int, default=0)
    p.add_argument("--stall", action="store_true")
    p.add_argument("--s3")
    p.add_argument("--region", default="us-east-1")
    ARGS = p.parse_args()
    srv = Server(("127.0.0.1", ARGS.port), Handler)
    print("ready", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
