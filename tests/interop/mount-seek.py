#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Helpers for the `qed mount` tests.

  mount-seek.py extents FILE   data extents by SEEK_DATA/SEEK_HOLE, one
                               "START LENGTH" per line
  mount-seek.py map JSON       data extents (zero: false) of `qed map
                               --output=json`, adjacent ones merged
  mount-seek.py blocks FILE    st_blocks * 512 of FILE
"""
import errno
import json
import os
import sys


def seek_extents(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break
                raise
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            yield data, hole - data
            pos = hole
    finally:
        os.close(fd)


def map_extents(path):
    with open(path) as f:
        entries = json.load(f)
    merged = []
    for e in entries:
        if e["zero"]:
            continue
        if merged and merged[-1][0] + merged[-1][1] == e["start"]:
            merged[-1][1] += e["length"]
        else:
            merged.append([e["start"], e["length"]])
    return merged


def main():
    what, path = sys.argv[1], sys.argv[2]
    if what == "extents":
        for start, length in seek_extents(path):
            print(start, length)
    elif what == "map":
        for start, length in map_extents(path):
            print(start, length)
    elif what == "blocks":
        print(os.stat(path).st_blocks * 512)
    else:
        sys.exit("unknown command " + what)


if __name__ == "__main__":
    main()
