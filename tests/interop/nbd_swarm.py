#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Many NBD connections from one process, for the server's load and hostile
client tests and bench/nbd-hostile.sh.

  nbd_swarm.py (--unix PATH | --tcp HOST:PORT) MODE [options]

Modes:
  silent N        open N connections that never send a byte; with
                  --reconnect, open a new one for each the server drops.
                  Prints "ready open=N" once all are connected, then holds
                  them for --hold seconds (or until SIGTERM) and prints
                  "done open=N dropped=D reconnects=R".
  clients N       N clients negotiate (NBD_OPT_GO), and each writes
                  --blocks blocks of --block bytes at its own offset
                  (--depth at a time), flushes, reads them back and
                  compares.  With --idle M, M more clients negotiate first
                  and stay idle (with --wait-for FILE: print "ready" and
                  wait for FILE to exist); at the end each reads 512 bytes
                  to show it is still served.  Prints
                  "done clients=N idle=M errors=E seconds=S" (E counts every
                  failed connection, request or comparison).
  slow N          N clients negotiate, then pipeline --reads READs of
                  --length bytes and never read a reply.  Prints "ready"
                  when every client has sent what the socket took, then
                  holds for --hold seconds.

The data a client writes identifies it (its number and the block's), so a
reply meant for another client or another offset does not compare equal.
Connections are opened --rate at a time; the descriptor limit is raised to
the hard limit first.  Whatever the server does, the run ends after
--timeout seconds ("timeout after S s", exit status 2).
"""
import argparse
import asyncio
import os
import resource
import signal
import struct
import sys
import time

NBD_MAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REP_MAGIC = 0x3E889045565A9
REQ_MAGIC = 0x25609513
SIMPLE_MAGIC = 0x67446698
OPT_GO = 7
REP_ACK = 1
REP_INFO = 3
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH = 0, 1, 2, 3


class Failure(Exception):
    pass


async def connect(args):
    if args.unix:
        return await asyncio.open_unix_connection(args.unix, limit=1 << 26)
    host, port = args.tcp.rsplit(":", 1)
    return await asyncio.open_connection(host, int(port), limit=1 << 26)


async def negotiate(reader, writer):
    greeting = await reader.readexactly(18)
    magic, opt_magic, _ = struct.unpack(">QQH", greeting)
    if magic != NBD_MAGIC or opt_magic != IHAVEOPT:
        raise Failure("bad greeting")
    writer.write(struct.pack(">I", 3))  # fixed newstyle, no zeroes
    data = struct.pack(">IH", 0, 0)     # empty export name, no info requests
    writer.write(struct.pack(">QII", IHAVEOPT, OPT_GO, len(data)) + data)
    await writer.drain()
    while True:
        head = await reader.readexactly(20)
        magic, opt, rtype, length = struct.unpack(">QIII", head)
        if magic != REP_MAGIC or opt != OPT_GO:
            raise Failure("bad option reply")
        body = await reader.readexactly(length)
        if rtype == REP_ACK:
            return
        if rtype != REP_INFO:
            raise Failure("GO refused: 0x%x %r" % (rtype, body))


def request(cookie, cmd, offset, length):
    return struct.pack(">IHHQQI", REQ_MAGIC, 0, cmd, cookie, offset, length)


async def reply(reader, cookie, length=0):
    head = await reader.readexactly(16)
    magic, error, got = struct.unpack(">IIQ", head)
    if magic != SIMPLE_MAGIC or got != cookie:
        raise Failure("bad reply")
    if error:
        raise Failure("error %d" % error)
    return await reader.readexactly(length) if length else b""


async def replies(reader, lengths):
    """Reads one simple reply per cookie in lengths (cookie -> data length),
    in whatever order the server sends them; returns cookie -> data."""
    got = {}
    while len(got) < len(lengths):
        head = await reader.readexactly(16)
        magic, error, cookie = struct.unpack(">IIQ", head)
        if magic != SIMPLE_MAGIC or cookie not in lengths or cookie in got:
            raise Failure("bad reply")
        if error:
            raise Failure("error %d" % error)
        n = lengths[cookie]
        got[cookie] = await reader.readexactly(n) if n else b""
    return got


def pattern(client, block, size):
    stamp = struct.pack(">II", client, block)
    return (stamp * (size // 8 + 1))[:size]


class Gate:
    """At most `rate` connections being opened at once."""

    def __init__(self, rate):
        self.sem = asyncio.Semaphore(rate)


async def open_client(args, gate):
    async with gate.sem:
        reader, writer = await connect(args)
        await negotiate(reader, writer)
    return reader, writer


async def close(writer, polite=True):
    try:
        if polite:
            writer.write(request(0, CMD_DISC, 0, 0))
        writer.close()
        await writer.wait_closed()
    except (OSError, ConnectionError):
        pass


# ---- silent -------------------------------------------------------------------


async def mode_silent(args):
    stats = {"dropped": 0, "reconnects": 0, "open": 0}
    stop = asyncio.Event()
    gate = Gate(args.rate)

    async def hold_one(first):
        while not stop.is_set():
            try:
                async with gate.sem:
                    reader, writer = await connect(args)
            except OSError:
                await asyncio.sleep(0.01)
                continue
            stats["open"] += 1
            if first is not None:
                first.set_result(None)
                first = None
            else:
                stats["reconnects"] += 1
            eof = asyncio.ensure_future(reader.read())
            while not eof.done() and not stop.is_set():
                await asyncio.wait([eof], timeout=0.2)
            stats["open"] -= 1
            if not eof.done():
                eof.cancel()
                writer.close()
                return
            try:
                eof.result()
            except (OSError, ConnectionError):
                pass
            stats["dropped"] += 1
            writer.close()
            if not args.reconnect:
                return

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    firsts = [loop.create_future() for _ in range(args.count)]
    tasks = [asyncio.ensure_future(hold_one(f)) for f in firsts]
    # Every socket connected, or told to stop (a server that never accepts
    # them all must not hang the caller).
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([asyncio.ensure_future(asyncio.wait(firsts)), stopping],
                       return_when=asyncio.FIRST_COMPLETED)
    if not stop.is_set():
        print("ready open=%d" % stats["open"], flush=True)
    try:
        await asyncio.wait_for(stop.wait(), args.hold)
    except asyncio.TimeoutError:
        pass
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    print("done open=%d dropped=%d reconnects=%d"
          % (args.count, stats["dropped"], stats["reconnects"]), flush=True)
    return 0


# ---- clients ------------------------------------------------------------------


async def mode_clients(args):
    gate = Gate(args.rate)
    errors = []
    span = args.block * args.blocks

    async def idle_client(i):
        try:
            return await open_client(args, gate)
        except (OSError, ConnectionError, asyncio.IncompleteReadError, Failure) as e:
            errors.append("idle %d: %s" % (i, e))
            return None

    async def active_client(i):
        base = (args.first + i) * span
        offsets = [base + b * args.block for b in range(args.blocks)]
        windows = [range(b, min(b + args.depth, args.blocks))
                   for b in range(0, args.blocks, args.depth)]
        try:
            reader, writer = await open_client(args, gate)
            for w in windows:
                for b in w:
                    writer.write(request(b + 1, CMD_WRITE, offsets[b], args.block)
                                 + pattern(args.first + i, b, args.block))
                await replies(reader, {b + 1: 0 for b in w})
            writer.write(request(100, CMD_FLUSH, 0, 0))
            await reply(reader, 100)
            for w in windows:
                for b in w:
                    writer.write(request(200 + b, CMD_READ, offsets[b], args.block))
                got = await replies(reader, {200 + b: args.block for b in w})
                for b in w:
                    if got[200 + b] != pattern(args.first + i, b, args.block):
                        errors.append("client %d block %d: data differs" % (i, b))
            await close(writer)
        except (OSError, ConnectionError, asyncio.IncompleteReadError, Failure) as e:
            errors.append("client %d: %s" % (i, e))

    t0 = time.monotonic()
    idle = await asyncio.gather(*[idle_client(i) for i in range(args.idle)])
    t1 = time.monotonic()
    if args.wait_for:
        print("ready idle=%d" % sum(1 for c in idle if c), flush=True)
        while not os.path.exists(args.wait_for):
            await asyncio.sleep(0.05)
        t1 = time.monotonic()
    await asyncio.gather(*[active_client(i) for i in range(args.count)])
    t2 = time.monotonic()
    for i, conn in enumerate(idle):
        if conn is None:
            continue
        reader, writer = conn
        try:
            writer.write(request(7, CMD_READ, 0, 512))
            await asyncio.wait_for(reply(reader, 7, 512), 30)
        except (OSError, ConnectionError, asyncio.IncompleteReadError, Failure,
                asyncio.TimeoutError) as e:
            errors.append("idle %d at the end: %s" % (i, e or "timeout"))
        await close(writer)
    for e in errors[:10]:
        print(e, file=sys.stderr)
    print("done clients=%d idle=%d errors=%d seconds=%.2f idle_seconds=%.2f"
          % (args.count, args.idle, len(errors), t2 - t1, t1 - t0), flush=True)
    return 0 if not errors else 1


# ---- slow readers -------------------------------------------------------------


async def mode_slow(args):
    gate = Gate(args.rate)
    conns = []

    async def one(i):
        reader, writer = await open_client(args, gate)
        sock = writer.get_extra_info("socket")
        # Requests go out as far as the socket takes them; none is retried.
        data = b"".join(request(i * 1000 + k, CMD_READ, 0, args.length)
                        for k in range(args.reads))
        writer.write(data)
        conns.append((reader, writer, sock))

    await asyncio.gather(*[one(i) for i in range(args.count)])
    await asyncio.sleep(0.2)
    print("ready clients=%d" % len(conns), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), args.hold)
    except asyncio.TimeoutError:
        pass
    for _, writer, _ in conns:
        writer.transport.abort()
    print("done", flush=True)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--unix")
    where.add_argument("--tcp")
    p.add_argument("mode", choices=["silent", "clients", "slow"])
    p.add_argument("count", type=int)
    p.add_argument("--reconnect", action="store_true")
    p.add_argument("--hold", type=float, default=3600)
    p.add_argument("--idle", type=int, default=0)
    p.add_argument("--first", type=int, default=0,
                   help="clients: number of the first client (its offset)")
    p.add_argument("--block", type=int, default=65536)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--depth", type=int, default=1,
                   help="clients: requests in flight per client")
    p.add_argument("--wait-for", metavar="FILE",
                   help="clients: once the idle clients are connected, print "
                        "'ready' and wait until FILE exists")
    p.add_argument("--reads", type=int, default=1)
    p.add_argument("--length", type=int, default=32 << 20)
    p.add_argument("--timeout", type=float, default=3600,
                   help="give up (exit 2) after this many seconds")
    p.add_argument("--rate", type=int, default=256,
                   help="connections being opened at once")
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    mode = {"silent": mode_silent, "clients": mode_clients, "slow": mode_slow}

    async def bounded():
        try:
            return await asyncio.wait_for(mode[args.mode](args), args.timeout)
        except asyncio.TimeoutError:
            print("timeout after %g s" % args.timeout, flush=True)
            return 2
    return asyncio.run(bounded())


if __name__ == "__main__":
    sys.exit(main())
