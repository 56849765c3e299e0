#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A raw NBD client for protocol-level tests of `qed serve`.

Usage: nbd_raw_client.py (-k SOCKET | -p HOST:PORT) [-t TIMEOUT] STEP...

Each STEP is one argument: a word, then arguments separated by ':'.  Every
step prints one line, "STEP -> RESULT", so a test can pick the line it is
about.  Once the server has closed the connection, the remaining steps print
"closed".  The exit status is 0 unless the arguments are wrong (2), a reply
did not come within TIMEOUT seconds (3) or the connection failed (4).

Handshake (fixed newstyle):
  greeting            read the 18-byte greeting: magic=NBDMAGIC opt=IHAVEOPT flags=0x3
  cflags:N            send the client flags (a number; 3 = FIXED_NEWSTYLE|NO_ZEROES)
  hello               greeting then cflags:3
  opt:NUM[:HEX]       send option NUM with the data in HEX; print the replies up
                      to the final one (ACK or an error)
  optlen:NUM:LEN      send an option header claiming LEN data bytes, no data
  list | sr           NBD_OPT_LIST, NBD_OPT_STRUCTURED_REPLY
  info:NAME[:T,T..]   NBD_OPT_INFO for export NAME, asking for info types T
  go:NAME[:T,T..]     NBD_OPT_GO; on ACK the connection is in transmission
  listmeta:NAME[:Q,Q..] / setmeta:NAME[:Q,Q..]
                      NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT
  exportname:NAME     NBD_OPT_EXPORT_NAME: size, flags and how many zero
                      padding bytes followed (pad=N)
  abort               NBD_OPT_ABORT: the reply, then whether the server closed

Transmission (FLAGS: fua,no_hole,df,req_one,fast_zero joined by ',', or a
number; errors print as names, EINVAL etc.):
  read:OFF:LEN[:FLAGS]          the reply: chunks (structured) and the data as
                                runs "0xBB*N,..."
  write:OFF:LEN:BYTE[:FLAGS]    write LEN bytes of BYTE
  zero|trim|cache:OFF:LEN[:FLAGS]
  flush[:FLAGS]
  bs:OFF:LEN[:FLAGS]            BLOCK_STATUS: per context "name=[len/flags,...]"
  cmd:TYPE:OFF:LEN[:FLAGS[:PAYLOAD]]
                                any request; PAYLOAD bytes of 0xab follow it
  disc                          NBD_CMD_DISC, then whether the server closed
  pipeline:N:LEN                send N reads of LEN bytes, then read the N
                                replies: "replies=N cookies=ok"
  sendreads:N:LEN[:OFF]         send N reads (from OFF on), do not wait: "sent"
  sendwrites:N:LEN:BYTE[:OFF]   send N writes of LEN bytes of BYTE: "sent"
  batchreads:N:LEN[:OFF]        as sendreads, all N in one send (under TLS:
                                one record holds many requests)
  replies[:SECONDS]             read the replies to what send* sent until all
                                came or the server closed (or SECONDS passed):
                                "replies=N/M errors=none|E1,E2 then eof|open"

TLS (python's ssl module, X.509 only):
  starttls            NBD_OPT_STARTTLS; print the reply (ACK or an error)
  tls:DIR[:VERSION]   TLS handshake on the connection as it is now, trusting
                      DIR/ca-cert.pem, with DIR/client-cert.pem and
                      DIR/client-key.pem when present; VERSION (1.0, 1.1,
                      1.2, 1.3) pins the protocol version.  "ok TLSv1.3", or
                      "failed: REASON" (then the connection is closed)
  clienthello:DIR     send only a ClientHello and read nothing: "sent N bytes"
  burst:NUM:COUNT[:HEX]
                      send COUNT options NUM (no data) and then HEX in one go,
                      reading nothing: "sent"
  drainopts[:SECONDS] read option replies until the server closes or stops
                      sending: "replies=N last=R1,R2,R3 then eof|open|junk"

Anything:
  send:HEX            send raw bytes
  sendn:COUNT:BYTE    send COUNT bytes of BYTE
  sleep:SECONDS
  eof[:SECONDS]       wait for the server to close: "eof t=SECONDS", "open"
                      (nothing came) or "data N bytes"
  flood:LEN:MAX[:HOLD[:OFF]]
                      pipeline up to MAX reads of LEN bytes (all at OFF, or
                      spread over the export) without reading any reply
                      (stops when the socket stays full for 1 s), then keep
                      the connection open HOLD seconds: "sent=N"
  worker:SECONDS:OFF:SPAN[:STOPFILE]
                      a well-behaved client: write patterns of varied sizes in
                      [OFF, OFF+SPAN), read each back, flush now and then, for
                      SECONDS (or until STOPFILE exists); at the end read the
                      whole span back against what it wrote:
                      "iterations=N errors=E final=ok maxlat=S"
"""

import os
import warnings
import socket
import ssl
import struct
import sys
import time

NBD_MAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REP_MAGIC = 0x0003E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_MAGIC = 0x67446698
STRUCTURED_MAGIC = 0x668E33EF

OPT_NAMES = {1: "EXPORT_NAME", 2: "ABORT", 3: "LIST", 5: "STARTTLS", 6: "INFO",
             7: "GO", 8: "STRUCTURED_REPLY", 9: "LIST_META_CONTEXT",
             10: "SET_META_CONTEXT"}
REP_NAMES = {1: "ACK", 2: "SERVER", 3: "INFO", 4: "META_CONTEXT",
             0x80000001: "ERR_UNSUP", 0x80000002: "ERR_POLICY",
             0x80000003: "ERR_INVALID", 0x80000004: "ERR_PLATFORM",
             0x80000005: "ERR_TLS_REQD", 0x80000006: "ERR_UNKNOWN",
             0x80000007: "ERR_SHUTDOWN", 0x80000008: "ERR_BLOCK_SIZE_REQD",
             0x80000009: "ERR_TOO_BIG"}
ERRNO_NAMES = {0: "0", 1: "EPERM", 5: "EIO", 12: "ENOMEM", 22: "EINVAL",
               28: "ENOSPC", 75: "EOVERFLOW", 95: "ENOTSUP", 108: "ESHUTDOWN"}
CMD_TYPES = {"read": 0, "write": 1, "disc": 2, "flush": 3, "trim": 4,
             "cache": 5, "zero": 6, "bs": 7}
CMD_FLAGS = {"fua": 1, "no_hole": 2, "df": 4, "req_one": 8, "fast_zero": 16}
CHUNK_NAMES = {0: "none", 1: "data", 2: "hole", 5: "bs", 0x8001: "error",
               0x8002: "error_offset"}


class Closed(Exception):
    """The server closed the connection."""


class Timeout(Exception):
    """No answer in time."""


def num(text):
    text = text.strip()
    mult = 1
    if text and text[-1] in "kKMG":
        mult = {"k": 1024, "K": 1024, "M": 1 << 20, "G": 1 << 30}[text[-1]]
        text = text[:-1]
    return int(text, 0) * mult


def parse_flags(text):
    if not text:
        return 0
    if text[0].isdigit():
        return int(text, 0)
    flags = 0
    for word in text.split(","):
        flags |= CMD_FLAGS[word]
    return flags


def errname(e):
    return ERRNO_NAMES.get(e, str(e))


def runs(data):
    """Summarises bytes as runs of equal values: 0x11*4096,0x00*512."""
    out = []
    i = 0
    n = len(data)
    while i < n:
        b = data[i]
        j = i + 1
        # fast path for long runs
        while j < n:
            step = min(65536, n - j)
            if data[j:j + step] == bytes([b]) * step:
                j += step
            else:
                while j < n and data[j] == b:
                    j += 1
                break
        out.append("0x%02x*%d" % (b, j - i))
        if len(out) > 16:
            out.append("...")
            break
        i = j
    return ",".join(out) if out else "empty"


class Client:
    def __init__(self, sock, timeout):
        self.sock = sock
        self.timeout = timeout
        self.sock.settimeout(timeout)
        self.closed = False
        self.transmission = False
        self.structured = False
        self.no_zeroes = False
        self.contexts = {}
        self.size = None
        self.cookie = 1
        self.pending = {}

    # ---- bytes -----------------------------------------------------------
    def recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            try:
                part = self.sock.recv(min(n - len(buf), 1 << 20))
            except socket.timeout:
                raise Timeout()
            except (ConnectionResetError, ssl.SSLError):
                # under TLS: an alert, or the server closed mid-record
                part = b""
            if not part:
                self.closed = True
                raise Closed()
            buf += part
        return bytes(buf)

    def send(self, data):
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise Timeout()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.closed = True
            raise Closed()

    def wait_eof(self, seconds):
        """eof t=S, open, or data N bytes."""
        start = time.monotonic()
        self.sock.settimeout(seconds)
        got = 0
        try:
            while True:
                try:
                    part = self.sock.recv(65536)
                except ConnectionResetError:
                    part = b""
                if not part:
                    self.closed = True
                    if got:
                        return "data %d bytes then eof t=%.1f" % (got, time.monotonic() - start)
                    return "eof t=%.1f" % (time.monotonic() - start)
                got += len(part)
                left = seconds - (time.monotonic() - start)
                if left <= 0:
                    break
                self.sock.settimeout(left)
        except socket.timeout:
            pass
        finally:
            self.sock.settimeout(self.timeout)
        return "data %d bytes" % got if got else "open"

    # ---- handshake ---------------------------------------------------------
    def greeting(self):
        g = self.recv_exact(18)
        magic, opt, flags = struct.unpack(">QQH", g)
        m = "NBDMAGIC" if magic == NBD_MAGIC else "0x%016x" % magic
        o = "IHAVEOPT" if opt == IHAVEOPT else "0x%016x" % opt
        return "magic=%s opt=%s flags=0x%x" % (m, o, flags)

    def cflags(self, flags):
        self.no_zeroes = bool(flags & 2)
        self.send(struct.pack(">I", flags))
        return "sent"

    def send_option(self, opt, data=b"", claimed=None):
        length = len(data) if claimed is None else claimed
        self.send(struct.pack(">QII", IHAVEOPT, opt, length) + data)

    def read_option_reply(self):
        head = self.recv_exact(20)
        magic, opt, rtype, length = struct.unpack(">QIII", head)
        if magic != REP_MAGIC:
            raise ValueError("bad option reply magic 0x%x" % magic)
        data = self.recv_exact(length) if length else b""
        return opt, rtype, data

    def describe_reply(self, opt, rtype, data, sent_opt):
        name = REP_NAMES.get(rtype, "0x%x" % rtype)
        if opt != sent_opt:
            name += "[opt=%d]" % opt
        if rtype == 2 and len(data) >= 4:  # SERVER
            (nlen,) = struct.unpack(">I", data[:4])
            return "%s(%s)" % (name, data[4:4 + nlen].decode(errors="replace"))
        if rtype == 3 and len(data) >= 2:  # INFO
            (itype,) = struct.unpack(">H", data[:2])
            if itype == 0 and len(data) == 12:
                size, flags = struct.unpack(">QH", data[2:])
                self.size = size
                self.tx_flags = flags
                return "INFO_EXPORT(size=%d,flags=0x%x)" % (size, flags)
            if itype == 1:
                return "INFO_NAME(%s)" % data[2:].decode(errors="replace")
            if itype == 2:
                return "INFO_DESCRIPTION(%s)" % data[2:].decode(errors="replace")
            if itype == 3 and len(data) == 14:
                mn, pref, mx = struct.unpack(">III", data[2:])
                return "INFO_BLOCK_SIZE(min=%d,pref=%d,max=%d)" % (mn, pref, mx)
            return "INFO(type=%d,len=%d)" % (itype, len(data))
        if rtype == 4 and len(data) >= 4:  # META_CONTEXT
            (cid,) = struct.unpack(">I", data[:4])
            cname = data[4:].decode(errors="replace")
            return "META_CONTEXT(%d,%s)" % (cid, cname)
        if rtype & 0x80000000:
            return name  # the message is free text
        if data:
            return "%s(len=%d)" % (name, len(data))
        return name

    def option(self, opt, data=b""):
        self.send_option(opt, data)
        parts = []
        while True:
            ropt, rtype, rdata = self.read_option_reply()
            parts.append(self.describe_reply(ropt, rtype, rdata, opt))
            if rtype == 1 or rtype & 0x80000000:
                return rtype, parts
            if len(parts) > 64:
                parts.append("...")
                return rtype, parts

    def step_opt(self, num_, hexdata=""):
        _, parts = self.option(num_, bytes.fromhex(hexdata))
        return " ".join(parts)

    def info_or_go(self, go, name, types):
        name_b = name.encode()
        tl = [int(t) for t in types.split(",") if t] if types else []
        data = struct.pack(">I", len(name_b)) + name_b + struct.pack(">H", len(tl))
        data += b"".join(struct.pack(">H", t) for t in tl)
        rtype, parts = self.option(7 if go else 6, data)
        if go and rtype == 1:
            self.transmission = True
        return " ".join(parts)

    def meta(self, set_, name, queries):
        name_b = name.encode()
        ql = [q.encode() for q in queries.split(",") if q] if queries else []
        data = struct.pack(">I", len(name_b)) + name_b + struct.pack(">I", len(ql))
        data += b"".join(struct.pack(">I", len(q)) + q for q in ql)
        self.send_option(10 if set_ else 9, data)
        parts = []
        if set_:
            self.contexts = {}
        while True:
            ropt, rtype, rdata = self.read_option_reply()
            parts.append(self.describe_reply(ropt, rtype, rdata, 10 if set_ else 9))
            if set_ and rtype == 4:
                (cid,) = struct.unpack(">I", rdata[:4])
                self.contexts[cid] = rdata[4:].decode(errors="replace")
            if rtype == 1 or rtype & 0x80000000:
                return " ".join(parts)

    def export_name(self, name):
        self.send_option(1, name.encode())
        head = self.recv_exact(10)
        size, flags = struct.unpack(">QH", head)
        self.size = size
        self.tx_flags = flags
        self.transmission = True
        # Count the padding that follows (none is expected after NO_ZEROES).
        pad = b""
        self.sock.settimeout(0.5)
        try:
            while len(pad) < 200:
                part = self.sock.recv(200 - len(pad))
                if not part:
                    break
                pad += part
        except socket.timeout:
            pass
        finally:
            self.sock.settimeout(self.timeout)
        zeros = "zeros" if pad.count(0) == len(pad) else "nonzero"
        return "size=%d flags=0x%x pad=%d %s" % (size, flags, len(pad), zeros)

    def abort(self):
        self.send_option(2)
        try:
            ropt, rtype, rdata = self.read_option_reply()
            rep = self.describe_reply(ropt, rtype, rdata, 2)
        except Closed:
            return "eof (no reply)"
        return rep + " " + self.wait_eof(3).split(" t=")[0]

    # ---- transmission ------------------------------------------------------
    def next_cookie(self):
        self.cookie += 1
        return self.cookie

    def request(self, ctype, flags, offset, length, payload=b"", cookie=None):
        cookie = self.next_cookie() if cookie is None else cookie
        self.send(struct.pack(">IHHQQI", REQUEST_MAGIC, flags, ctype, cookie,
                              offset, length) + payload)
        return cookie

    def read_reply(self, cookie, read_len=None, offset=0):
        """Reads one whole reply.  Returns (error, description, data)."""
        head = self.recv_exact(4)
        (magic,) = struct.unpack(">I", head)
        if magic == SIMPLE_MAGIC:
            rest = self.recv_exact(12)
            error, rcookie = struct.unpack(">IQ", rest)
            desc = "simple"
            if rcookie != cookie:
                desc += " cookie-mismatch"
            data = None
            if error == 0 and read_len is not None:
                data = self.recv_exact(read_len)
            return error, desc, data
        if magic != STRUCTURED_MAGIC:
            raise ValueError("bad reply magic 0x%08x" % magic)
        chunks = []
        error = 0
        data = bytearray(read_len) if read_len is not None else None
        covered = 0
        bad = []
        while True:
            if chunks:
                head = self.recv_exact(4)
                (magic,) = struct.unpack(">I", head)
                if magic != STRUCTURED_MAGIC:
                    raise ValueError("bad chunk magic 0x%08x" % magic)
            rest = self.recv_exact(16)
            cflags, ctype, rcookie, length = struct.unpack(">HHQI", rest)
            payload = self.recv_exact(length) if length else b""
            if rcookie != cookie:
                bad.append("cookie-mismatch")
            name = CHUNK_NAMES.get(ctype, "0x%x" % ctype)
            if ctype == 1:  # OFFSET_DATA
                (off,) = struct.unpack(">Q", payload[:8])
                body = payload[8:]
                chunks.append("data@%d+%d" % (off, len(body)))
                if data is not None and offset <= off and off + len(body) <= offset + read_len:
                    data[off - offset:off - offset + len(body)] = body
                else:
                    bad.append("data-out-of-range")
                if not body:
                    bad.append("empty-data-chunk")
                covered += len(body)
            elif ctype == 2:  # OFFSET_HOLE
                off, hlen = struct.unpack(">QI", payload)
                chunks.append("hole@%d+%d" % (off, hlen))
                if data is not None and offset <= off and off + hlen <= offset + read_len:
                    data[off - offset:off - offset + hlen] = bytes(hlen)
                else:
                    bad.append("hole-out-of-range")
                covered += hlen
            elif ctype == 5:  # BLOCK_STATUS
                (cid,) = struct.unpack(">I", payload[:4])
                descs = []
                for i in range(4, len(payload), 8):
                    dlen, dflags = struct.unpack(">II", payload[i:i + 8])
                    descs.append("%d/%d" % (dlen, dflags))
                cname = self.contexts.get(cid, "id%d" % cid)
                chunks.append("%s=[%s]" % (cname, ",".join(descs)))
            elif ctype & 0x8000:
                err, mlen = struct.unpack(">IH", payload[:6])
                error = error or err
                chunks.append("error(%s)" % errname(err))
            else:
                chunks.append(name)
            if cflags & 1:
                break
            if len(chunks) > 100000:
                raise ValueError("too many chunks")
        desc = "chunks=" + ",".join(chunks[:40]) + (",..." if len(chunks) > 40 else "")
        if bad:
            desc += " " + " ".join(sorted(set(bad)))
        if data is not None and error == 0 and covered != read_len:
            desc += " covered=%d" % covered
        return error, desc, (bytes(data) if data is not None and error == 0 else None)

    def command(self, ctype, offset, length, flags, payload=b""):
        cookie = self.request(ctype, flags, offset, length, payload)
        read_len = length if ctype == 0 else None
        error, desc, data = self.read_reply(cookie, read_len, offset)
        parts = ["error=%s" % errname(error)]
        if desc != "simple":
            parts.append(desc)
        if data is not None:
            parts.append("data=" + runs(data))
        return " ".join(parts)

    def pipeline(self, n, length):
        cookies = [self.request(0, 0, (i * length) % max(1, (self.size or length) - length + 1), length)
                   for i in range(n)]
        seen = 0
        ok = True
        pending = set(cookies)
        for _ in range(n):
            head = self.recv_exact(4)
            (magic,) = struct.unpack(">I", head)
            if magic == SIMPLE_MAGIC:
                error, rcookie = struct.unpack(">IQ", self.recv_exact(12))
                if rcookie not in pending:
                    ok = False
                pending.discard(rcookie)
                if error == 0:
                    self.recv_exact(length)
                seen += 1
            else:
                # structured: read chunks until DONE for some cookie
                done = False
                first = True
                while not done:
                    if not first:
                        self.recv_exact(4)
                    first = False
                    cflags, ctype, rcookie, clen = struct.unpack(">HHQI", self.recv_exact(16))
                    self.recv_exact(clen)
                    done = bool(cflags & 1)
                if rcookie not in pending:
                    ok = False
                pending.discard(rcookie)
                seen += 1
        return "replies=%d cookies=%s" % (seen, "ok" if ok and not pending else "bad")

    def send_batch(self, ctype, n, length, offset):
        parts = []
        real_send = self.send
        self.send = parts.append
        try:
            self.send_many(ctype, n, length, offset)
        finally:
            self.send = real_send
        self.send(b"".join(parts))
        return "sent"

    def send_many(self, ctype, n, length, offset, byte=0):
        size = self.size or (offset + n * length)
        payload = bytes([byte]) * length if ctype == 1 else b""
        for i in range(n):
            off = offset + (i * length) % max(1, size - offset - length + 1)
            cookie = self.request(ctype, 0, off, length, payload)
            self.pending[cookie] = (ctype, length, off)
        return "sent"

    def replies(self, seconds):
        total = len(self.pending)
        got = 0
        errors = []
        end = "open"
        deadline = time.monotonic() + seconds
        try:
            while self.pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.sock.settimeout(left)
                head = self.recv_exact(4)
                (magic,) = struct.unpack(">I", head)
                if magic == SIMPLE_MAGIC:
                    error, cookie = struct.unpack(">IQ", self.recv_exact(12))
                    ctype, length, off = self.pending.pop(cookie, (None, 0, 0))
                    if ctype is None:
                        errors.append("unknown-cookie")
                    elif ctype == 0 and error == 0:
                        self.recv_exact(length)
                else:
                    first = True
                    done = False
                    error = 0
                    while not done:
                        if not first:
                            self.recv_exact(4)
                        first = False
                        cflags, ctype_, cookie, clen = struct.unpack(">HHQI", self.recv_exact(16))
                        payload = self.recv_exact(clen)
                        if ctype_ & 0x8000:
                            error = struct.unpack(">I", payload[:4])[0]
                        done = bool(cflags & 1)
                    if self.pending.pop(cookie, None) is None:
                        errors.append("unknown-cookie")
                got += 1
                if error:
                    errors.append(errname(error))
            if not self.pending:
                end = self.wait_eof(max(0.0, min(1.0, deadline - time.monotonic()))).split(" t=")[0]
        except Closed:
            end = "eof"
        except Timeout:
            end = "open"
        finally:
            self.sock.settimeout(self.timeout)
        errs = ",".join(sorted(set(errors))) if errors else "none"
        return "replies=%d/%d errors=%s then %s" % (got, total, errs, end)

    def flood(self, length, maximum, hold, fixed=None):
        size = self.size or length
        sent = 0
        self.sock.setblocking(False)
        stuck_since = None
        data = b""
        try:
            while sent < maximum:
                if not data:
                    off = (sent * length) % max(1, size - length + 1) if fixed is None else fixed
                    data = struct.pack(">IHHQQI", REQUEST_MAGIC, 0, 0,
                                       sent + 1000, off, length)
                try:
                    n = self.sock.send(data)
                    data = data[n:]
                    if not data:
                        sent += 1
                    stuck_since = None
                except BlockingIOError:
                    now = time.monotonic()
                    if stuck_since is None:
                        stuck_since = now
                    elif now - stuck_since > 1:
                        break
                    time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            self.closed = True
            return "sent=%d then eof" % sent
        finally:
            self.sock.setblocking(True)
            self.sock.settimeout(self.timeout)
        time.sleep(hold)
        return "sent=%d" % sent

    def worker(self, seconds, off, span, stopfile=None):
        """Writes patterns and reads them back; checks everything at the end."""
        # What the span holds before the worker starts.
        shadow = bytearray()
        step = 1 << 20
        for pos in range(0, span, step):
            ln = min(step, span - pos)
            c = self.request(0, 0, off + pos, ln)
            err, _, data = self.read_reply(c, ln, off + pos)
            if err:
                return "initial read error %s" % errname(err)
            shadow += data
        sizes = [512, 4096, 65536, 7 * 512, 131072, 1]
        start = time.monotonic()
        it = errors = 0
        maxlat = 0.0
        first_error = ""
        while time.monotonic() - start < seconds:
            if stopfile and os.path.exists(stopfile):
                break
            ln = min(sizes[it % len(sizes)], span)
            pos = (it * 7919 * 512) % (span - ln + 1)
            pat = (it % 250) + 1
            t0 = time.monotonic()
            c = self.request(1, 0, off + pos, ln, bytes([pat]) * ln)
            err, _, _ = self.read_reply(c)
            if err:
                errors += 1
                first_error = first_error or "write error %s at %d" % (errname(err), off + pos)
            else:
                shadow[pos:pos + ln] = bytes([pat]) * ln
            c = self.request(0, 0, off + pos, ln)
            err, _, data = self.read_reply(c, ln, off + pos)
            if err or data != bytes(shadow[pos:pos + ln]):
                errors += 1
                first_error = first_error or "read-back mismatch at %d" % (off + pos)
            if it % 10 == 9:
                c = self.request(3, 0, 0, 0)
                err, _, _ = self.read_reply(c)
                if err:
                    errors += 1
                    first_error = first_error or "flush error %s" % errname(err)
            maxlat = max(maxlat, time.monotonic() - t0)
            it += 1
        # Final check of the whole span, 1 MiB at a time.
        final = "ok"
        for pos in range(0, span, step):
            ln = min(step, span - pos)
            c = self.request(0, 0, off + pos, ln)
            err, _, data = self.read_reply(c, ln, off + pos)
            if err:
                final = "read error %s" % errname(err)
                break
            if data != bytes(shadow[pos:pos + ln]):
                bad = next(i for i in range(ln) if data[i] != shadow[pos + i])
                final = "mismatch at %d" % (off + pos + bad)
                break
        res = "iterations=%d errors=%d final=%s maxlat=%.3f" % (it, errors, final, maxlat)
        if first_error:
            res += " first_error=" + first_error.replace(" ", "_")
        return res


warnings.filterwarnings("ignore", category=DeprecationWarning)
TLS_VERSIONS = {"1.0": "TLSv1", "1.1": "TLSv1_1", "1.2": "TLSv1_2",
                "1.3": "TLSv1_3"}


def tls_context(cadir, version=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(cadir, "ca-cert.pem"))
    cert = os.path.join(cadir, "client-cert.pem")
    if os.path.exists(cert):
        ctx.load_cert_chain(cert, os.path.join(cadir, "client-key.pem"))
    if version:
        v = getattr(ssl.TLSVersion, TLS_VERSIONS[version])
        # Old versions need OpenSSL's lowest security level to be tried.
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = v
        ctx.maximum_version = v
    return ctx


def step_tls(cl, cadir, version=None):
    try:
        ctx = tls_context(cadir, version)
        cl.sock = ctx.wrap_socket(cl.sock, server_hostname="localhost")
        # TLS 1.3 reports a refused client certificate only once data flows:
        # a zero-byte peek would not do, so the caller's next step sees it.
        return "ok %s" % cl.sock.version()
    except (ssl.SSLError, OSError) as e:
        cl.closed = True
        reason = getattr(e, "reason", None) or str(e) or type(e).__name__
        return "failed: %s" % reason


def step_clienthello(cl, cadir):
    ctx = tls_context(cadir)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    cl.send(hello)
    return "sent %d bytes" % len(hello)


def step_drainopts(cl, seconds):
    names = []
    count = 0
    end = "open"
    cl.sock.settimeout(seconds)
    try:
        while True:
            opt, rtype, _ = cl.read_option_reply()
            count += 1
            names = (names + ["%s[opt=%d]" % (REP_NAMES.get(rtype, hex(rtype)),
                                             opt)])[-3:]
    except Closed:
        end = "eof"
    except Timeout:
        end = "open"
    except ValueError:
        end = "junk"
    finally:
        if not cl.closed:
            cl.sock.settimeout(cl.timeout)
    return "replies=%d last=%s then %s" % (count, ",".join(names), end)


def run_step(cl, step):
    word, _, rest = step.partition(":")
    args = rest.split(":") if rest else []

    def arg(i, default=None):
        return args[i] if len(args) > i and args[i] != "" else default

    if word == "greeting":
        return cl.greeting()
    if word == "cflags":
        return cl.cflags(num(arg(0, "3")))
    if word == "hello":
        g = cl.greeting()
        cl.cflags(3)
        return g
    if word == "opt":
        return cl.step_opt(num(args[0]), arg(1, ""))
    if word == "optlen":
        cl.send_option(num(args[0]), b"", claimed=num(args[1]))
        return "sent"
    if word == "list":
        return cl.step_opt(3)
    if word == "sr":
        rtype, parts = cl.option(8)
        if rtype == 1:
            cl.structured = True
        return " ".join(parts)
    if word in ("info", "go"):
        name, _, types = rest.partition(":")
        return cl.info_or_go(word == "go", name, types)
    if word in ("listmeta", "setmeta"):
        name, _, queries = rest.partition(":")
        return cl.meta(word == "setmeta", name, queries)
    if word == "exportname":
        return cl.export_name(rest)
    if word == "abort":
        return cl.abort()
    if word in ("read", "zero", "trim", "cache", "bs"):
        return cl.command(CMD_TYPES[word], num(args[0]), num(args[1]),
                          parse_flags(arg(2, "")))
    if word == "write":
        ln = num(args[1])
        return cl.command(1, num(args[0]), ln, parse_flags(arg(3, "")),
                          bytes([num(args[2])]) * ln)
    if word == "flush":
        return cl.command(3, 0, 0, parse_flags(arg(0, "")))
    if word == "cmd":
        plen = num(arg(4, "0"))
        return cl.command(num(args[0]), num(args[1]), num(args[2]),
                          parse_flags(arg(3, "")), b"\xab" * plen)
    if word == "disc":
        cl.request(2, 0, 0, 0)
        return cl.wait_eof(3).split(" t=")[0]
    if word == "pipeline":
        return cl.pipeline(num(args[0]), num(args[1]))
    if word == "sendreads":
        return cl.send_many(0, num(args[0]), num(args[1]), num(arg(2, "0")))
    if word == "batchreads":
        return cl.send_batch(0, num(args[0]), num(args[1]), num(arg(2, "0")))
    if word == "sendwrites":
        return cl.send_many(1, num(args[0]), num(args[1]), num(arg(3, "0")),
                            num(args[2]))
    if word == "replies":
        return cl.replies(float(arg(0, "10")))
    if word == "starttls":
        return cl.step_opt(5)
    if word == "tls":
        return step_tls(cl, args[0], arg(1))
    if word == "clienthello":
        return step_clienthello(cl, args[0])
    if word == "burst":
        one = struct.pack(">QII", IHAVEOPT, num(args[0]), 0)
        cl.send(one * num(args[1]) + bytes.fromhex(arg(2, "")))
        return "sent"
    if word == "drainopts":
        return step_drainopts(cl, float(arg(0, "3")))
    if word == "send":
        cl.send(bytes.fromhex(rest))
        return "sent"
    if word == "sendn":
        cl.send(bytes([num(args[1])]) * num(args[0]))
        return "sent"
    if word == "sleep":
        time.sleep(float(rest))
        return "slept"
    if word == "eof":
        return cl.wait_eof(float(arg(0, "3")))
    if word == "flood":
        fixed = arg(3)
        return cl.flood(num(args[0]), num(args[1]), float(arg(2, "0")),
                        None if fixed is None else num(fixed))
    if word == "worker":
        return cl.worker(float(args[0]), num(args[1]), num(args[2]), arg(3))
    raise SystemExit("nbd_raw_client: unknown step %r" % step)


def main(argv):
    path = hostport = None
    timeout = 10.0
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        if argv[i] == "-k":
            path = argv[i + 1]
        elif argv[i] == "-p":
            hostport = argv[i + 1]
        elif argv[i] == "-t":
            timeout = float(argv[i + 1])
        else:
            print(__doc__, file=sys.stderr)
            return 2
        i += 2
    steps = argv[i:]
    if not (path or hostport) or not steps:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        if path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(path)
        else:
            host, _, port = hostport.rpartition(":")
            sock = socket.create_connection((host, int(port)), timeout)
    except OSError as e:
        print("connect -> failed: %s" % e, flush=True)
        return 4
    cl = Client(sock, timeout)
    status = 0
    for step in steps:
        if cl.closed:
            print("%s -> closed" % step, flush=True)
            continue
        try:
            res = run_step(cl, step)
        except Closed:
            res = "eof"
        except Timeout:
            res = "timeout"
            status = 3
        except ValueError as e:
            res = "protocol error: %s" % e
        print("%s -> %s" % (step, res), flush=True)
        if status:
            break
    try:
        sock.close()
    except OSError:
        pass
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
