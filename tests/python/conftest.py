# SPDX-License-Identifier: MIT
"""Fixtures of the Python binding tests: the qed tool and qemu-img to make
and judge images, a scratch directory per test."""
import json
import os
import shutil
import socket
import subprocess
import time

import pytest

QED = os.environ.get("QED", "qed")


def run(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


@pytest.fixture
def tool():
    return QED


@pytest.fixture
def std_image(tmp_path):
    """An 8 MiB QED image with data, a zero cluster and holes, its raw
    content (by qemu-img) next to it."""
    img = tmp_path / "std.qed"
    run(QED, "create", "-q", "-f", "qed", str(img), "8M")
    run(QED, "io", "-c", "write -P 0x11 0 100k", "-c", "write -P 0x22 1M 64k",
        "-c", "write -z 2M 64k", "-c", "write -P 0x33 5000000 3000", str(img))
    raw = tmp_path / "std.raw"
    run("qemu-img", "convert", "-O", "raw", str(img), str(raw))
    return img, raw


def qemu_map(path):
    return json.loads(run("qemu-img", "map", "--output=json", str(path)).stdout)


def qemu_info(path):
    return json.loads(run("qemu-img", "info", "--output=json", str(path)).stdout)


@pytest.fixture
def slow_nbd(tmp_path):
    """A copy of a small QED image served by nbdkit with every read delayed
    by 1 s (nbdkit's delay filter), as an nbd+unix:// URI."""
    if not shutil.which("nbdkit"):
        pytest.skip("nbdkit is not installed")
    img = tmp_path / "slow.qed"
    run(QED, "create", "-q", "-f", "qed", str(img), "1M")
    run(QED, "io", "-c", "write -P 0x44 0 64k", str(img))
    sock = tmp_path / "slow.sock"
    proc = subprocess.Popen(["nbdkit", "-f", "-U", str(sock), "--filter=delay",
                             "file", str(img), "rdelay=1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(500):
        if sock.exists():
            break
        time.sleep(0.01)
    yield f"nbd+unix:///?socket={sock}"
    proc.terminate()
    proc.wait()
