#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Records what an NBD client sends: listens on a Unix socket, forwards every
connection to a server's socket, and writes the client's bytes of each
connection to OUTDIR/PREFIX-N.  Used to make the fuzz-nbd seed corpus from
real clients (nbdinfo, qemu-io, qemu-img, nbdcopy)."""
import os
import selectors
import socket
import sys

listen_path, server_path, outdir, prefix = sys.argv[1:5]
if os.path.exists(listen_path):
    os.unlink(listen_path)
lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
lsock.bind(listen_path)
lsock.listen(16)
sel = selectors.DefaultSelector()
sel.register(lsock, selectors.EVENT_READ)
count = 0
peers = {}   # sock -> (other, logfile or None)

while True:
    for key, _ in sel.select():
        s = key.fileobj
        if s is lsock:
            c, _ = lsock.accept()
            up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            up.connect(server_path)
            count += 1
            log = open(os.path.join(outdir, "%s-%d" % (prefix, count)), "wb")
            peers[c] = (up, log)
            peers[up] = (c, None)
            sel.register(c, selectors.EVENT_READ)
            sel.register(up, selectors.EVENT_READ)
            continue
        if s not in peers:
            continue  # closed earlier in this round
        other, log = peers[s]
        data = s.recv(1 << 20)
        if not data:
            for x in (s, other):
                if x in peers:
                    sel.unregister(x)
                    if peers[x][1]:
                        peers[x][1].close()
                    del peers[x]
                    x.close()
            continue
        if log:
            log.write(data)
            log.flush()
        other.sendall(data)
