# SPDX-License-Identifier: MIT
"""The qed Python module: content against qemu-img, the file object, the
image calls, errors, threads and asyncio."""
import asyncio
import errno
import io
import os
import random
import shutil
import subprocess
import threading
import time

import pytest

import qed
from conftest import QED, qemu_info, qemu_map, run


def test_read_whole_image_equals_qemu_img(std_image):
    img, raw = std_image
    with qed.open(img) as f:
        assert f.read() == raw.read_bytes()


def test_random_reads_equal_qemu_img(std_image):
    img, raw = std_image
    want = raw.read_bytes()
    rnd = random.Random(5)
    with qed.open(img) as f:
        for _ in range(300):
            off = rnd.randrange(len(want) + 1000)
            n = rnd.randrange(1, 200000)
            f.seek(off)
            assert f.read(n) == want[off:off + n]
            assert f.tell() == max(off, min(off + n, len(want)))


def test_readinto_and_seek_end(std_image):
    img, raw = std_image
    want = raw.read_bytes()
    with qed.open(img) as f:
        buf = bytearray(4096)
        assert f.seek(-4096, os.SEEK_END) == len(want) - 4096
        assert f.readinto(buf) == 4096 and bytes(buf) == want[-4096:]
        assert f.readinto(buf) == 0 and f.read(10) == b""


def test_copyfileobj_to_raw_equals_qemu_img(std_image, tmp_path):
    img, raw = std_image
    out = tmp_path / "out.raw"
    with qed.open(img) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    assert out.read_bytes() == raw.read_bytes()


def test_buffered_reader(std_image):
    img, raw = std_image
    with qed.open(img) as f:
        r = io.BufferedReader(f)
        assert r.read(100) == raw.read_bytes()[:100]


def test_writes_read_back_by_qemu_and_check_clean(std_image, tmp_path):
    img, _ = std_image
    with qed.open(img, "r+") as f:
        assert f.writable()
        f.seek(3 << 20)
        assert f.write(b"\xab" * 70000) == 70000
        f.write_zeroes(0, 65536)
        f.flush()
    out = subprocess.run(["qemu-io", "-c", "read -P 0xab 3M 70000", "-c",
                          "read -P 0 0 64k", str(img)], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "Pattern verification failed" not in out.stdout
    assert subprocess.run(["qemu-img", "check", str(img)]).returncode == 0


def test_map_equals_qemu_img_map(std_image):
    img, _ = std_image
    want = [(e["start"], e["length"], e["depth"], e["present"], e["zero"],
             e["data"], e.get("offset")) for e in qemu_map(img)]
    with qed.open(img) as f:
        got = [tuple(e) for e in f.map()]
    assert got == want


def test_info_agrees_with_qemu_img(std_image, tmp_path):
    img, _ = std_image
    top = tmp_path / "top.qed"
    qed.create(top, backing_file="std.qed", backing_format="qed")
    q = qemu_info(top)
    with qed.open(top) as f:
        i = f.info()
    assert i["format"] == "qed" and i["virtual_size"] == q["virtual-size"]
    assert i["cluster_size"] == q["cluster-size"]
    assert i["backing_file"] == q["backing-filename"] == "std.qed"
    assert i["dirty"] is False


def test_check_and_repair_argument(std_image):
    img, _ = std_image
    with qed.open(img) as f:
        r = f.check()
        assert r["corruptions"] == 0 and r["leaks"] == 0
        assert r["allocated_clusters"] > 0
        with pytest.raises(ValueError):
            f.check("everything")


def test_discard_reads_zeros(std_image):
    img, _ = std_image
    with qed.open(img, "r+") as f:
        f.discard(1 << 20, 65536)
        f.seek(1 << 20)
        assert f.read(65536) == bytes(65536)


def test_missing_file_is_filenotfound_and_qed_error(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        qed.open(tmp_path / "missing.qed")
    assert isinstance(e.value, qed.Error) and isinstance(e.value, OSError)
    assert e.value.errno == errno.ENOENT
    assert e.value.filename.endswith("missing.qed")


def test_error_carries_libqed_message(tmp_path):
    bad = tmp_path / "bad.qed"
    with pytest.raises(qed.Error) as e:
        qed.create(bad, 1 << 20, cluster_size=1000)
    assert e.value.errno == errno.EINVAL
    assert "1000" in e.value.strerror  # the message names the value


def test_second_writer_is_refused_by_the_lock(std_image):
    img, _ = std_image
    with qed.open(img, "r+"):
        with pytest.raises(qed.Error) as e:
            qed.open(img, "r+")
    assert e.value.errno == errno.EAGAIN
    assert isinstance(e.value, BlockingIOError)
    assert 'Failed to get "write" lock' in e.value.strerror


def test_read_only_image_refuses_writes(std_image):
    img, _ = std_image
    with qed.open(img) as f:
        assert not f.writable()
        with pytest.raises(io.UnsupportedOperation):
            f.write(b"x")


def test_write_past_the_end(std_image):
    img, _ = std_image
    with qed.open(img, "r+") as f:
        f.seek(f.size - 10)
        assert f.write(b"y" * 100) == 10  # short, as a block device
        with pytest.raises(qed.Error) as e:
            f.write(b"z")
        assert e.value.errno == errno.ENOSPC
        with pytest.raises(io.UnsupportedOperation):
            f.truncate(0)


def test_closed_image(std_image):
    img, _ = std_image
    f = qed.open(img)
    f.close()
    f.close()  # twice is fine
    assert f.closed
    with pytest.raises(ValueError):
        f.read(1)


def test_bad_arguments(std_image):
    img, _ = std_image
    with pytest.raises(ValueError):
        qed.open(img, "w")
    with pytest.raises(ValueError):
        qed.open(img, format="qcow2")
    with qed.open(img) as f:
        with pytest.raises(ValueError):
            f._h.pread(10, f.size)  # the C layer checks ranges too
        with pytest.raises(ValueError):
            f.seek(-1)


def test_convert_with_progress(std_image, tmp_path):
    img, raw = std_image
    calls = []
    out = tmp_path / "conv.raw"
    qed.convert(img, out, "raw", progress=lambda d, t: calls.append((d, t)))
    assert out.read_bytes() == raw.read_bytes()
    assert calls and calls[-1][0] == calls[-1][1] == raw.stat().st_size
    out2 = tmp_path / "conv.qed"
    with qed.open(img) as src:
        qed.convert(src, out2, "qed")
    assert run("qemu-img", "compare", str(img), str(out2)).returncode == 0


def test_create_over_backing_takes_its_size_and_copy_on_read(std_image, tmp_path):
    img, raw = std_image
    top = tmp_path / "cor.qed"
    qed.create(top, backing_file=str(img), backing_format="qed")
    with qed.open(top, "r+", copy_on_read=True) as f:
        assert f.size == 8 << 20
        assert f.read() == raw.read_bytes()
    with qed.open(top) as f:
        assert all(e.depth == 0 or not e.present for e in f.map())


def test_threads_release_the_gil(slow_nbd):
    """A read that waits 1 s on the server must not stop other threads."""
    with qed.open(slow_nbd, format="qed") as f:
        result = {}

        def reader():
            result["data"] = f._h.pread(4096, 0)

        t = threading.Thread(target=reader)
        start = time.monotonic()
        t.start()
        spins = 0
        while t.is_alive():
            spins += 1
        elapsed = time.monotonic() - start
    assert result["data"] == b"\x44" * 4096
    assert elapsed >= 0.9
    assert spins > 100000, f"the main thread ran only {spins} times in {elapsed:.2f} s"


def test_threads_on_separate_images(std_image, tmp_path):
    img, raw = std_image
    copies = []
    for i in range(4):
        p = tmp_path / f"t{i}.qed"
        shutil.copy(img, p)
        copies.append(p)
    want = raw.read_bytes()
    errors = []

    def work(p):
        try:
            with qed.open(p) as f:
                for _ in range(5):
                    f.seek(0)
                    assert f.read() == want
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(p,)) for p in copies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_close_while_another_thread_reads(std_image):
    """Closing in one thread while others read: each read returns data or
    raises ValueError; nothing crashes."""
    img, raw = std_image
    want = raw.read_bytes()
    for _ in range(20):
        f = qed.open(img)
        outcomes = []

        def reader():
            try:
                for i in range(200):
                    off = (i * 40960) % (len(want) - 4096)
                    assert f._h.pread(4096, off) == want[off:off + 4096]
                outcomes.append("done")
            except ValueError:
                outcomes.append("closed")

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        f.close()
        for t in threads:
            t.join()
        assert set(outcomes) <= {"closed", "done"} and len(outcomes) == 3


def test_asyncio_reads(std_image):
    img, raw = std_image
    want = raw.read_bytes()

    async def main():
        with qed.open(img) as f:
            parts = await asyncio.gather(
                *(f.aread(65536, off) for off in range(0, 8 << 20, 1 << 20)))
            assert parts == [want[o:o + 65536] for o in range(0, 8 << 20, 1 << 20)]
            f.seek(100)
            assert await f.aread(10) == want[100:110] and f.tell() == 110
            assert await f.aread(10, f.size) == b""

    asyncio.run(main())


def test_asyncio_loop_keeps_running_during_a_slow_read(slow_nbd):
    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        with qed.open(slow_nbd, format="qed") as f:
            t = asyncio.ensure_future(ticker())
            data = await f.aread(4096, 0)
            t.cancel()
        return data, ticks

    data, ticks = asyncio.run(main())
    assert data == b"\x44" * 4096
    assert ticks >= 50, f"the event loop ticked {ticks} times during a 1 s read"


def test_asyncio_read_pending_at_close_fails(slow_nbd):
    async def main():
        f = qed.open(slow_nbd, format="qed")
        task = asyncio.ensure_future(f.aread(4096, 0))
        await asyncio.sleep(0.1)
        f.close()
        with pytest.raises(ValueError):
            await task

    asyncio.run(main())


def test_asyncio_error_becomes_exception(tmp_path):
    if not shutil.which("nbdkit"):
        pytest.skip("nbdkit is not installed")
    img = tmp_path / "e.qed"
    run(QED, "create", "-q", str(img), "1M")
    run(QED, "io", "-c", "write -P 1 0 64k", str(img))
    sock = tmp_path / "e.sock"
    proc = subprocess.Popen(["nbdkit", "-f", "-U", str(sock), "--filter=error",
                             "file", str(img), "error-pread-rate=1",
                             "error-pread=EIO"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(500):
            if sock.exists():
                break
            time.sleep(0.01)
        uri = f"nbd+unix:///?socket={sock}"

        async def main():
            # Opening reads the header: open before the errors start.
            with qed.open(uri, format="raw") as f:
                with pytest.raises(qed.Error) as e:
                    await f.aread(512, 0)
                return e.value

        err = asyncio.run(main())
        assert err.errno == errno.EIO
    finally:
        proc.terminate()
        proc.wait()
