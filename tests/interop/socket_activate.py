#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Runs a program with listening sockets passed as systemd socket
activation does (descriptors 3, 4, ...; LISTEN_FDS, LISTEN_PID), so one
server listens on a Unix socket and a TCP port at once.

  socket_activate.py [--unix PATH]... [--tcp HOST:PORT]... -- PROGRAM ARGS...
"""
import argparse
import os
import socket
import sys


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--unix", action="append", default=[])
    p.add_argument("--tcp", action="append", default=[])
    p.add_argument("program", nargs=argparse.REMAINDER)
    args = p.parse_args()
    if args.program[:1] == ["--"]:
        args.program = args.program[1:]
    if not args.program:
        p.error("no program given")
    socks = []
    for path in args.unix:
        if os.path.exists(path):
            os.unlink(path)
        s = socket.socket(socket.AF_UNIX)
        s.bind(path)
        socks.append(s)
    for hp in args.tcp:
        host, port = hp.rsplit(":", 1)
        s = socket.socket(socket.AF_INET)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
        socks.append(s)
    # Out of the way first, so no socket is overwritten by another.
    high = []
    for s in socks:
        s.listen(socket.SOMAXCONN)
        high.append(os.dup2(s.fileno(), 100 + len(high)))
    for i, fd in enumerate(high):
        os.dup2(fd, 3 + i, inheritable=True)
    os.environ["LISTEN_FDS"] = str(len(socks))
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.execvp(args.program[0], args.program)


if __name__ == "__main__":
    sys.exit(main())
