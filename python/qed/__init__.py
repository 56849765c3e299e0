# SPDX-License-Identifier: MIT
"""QED (QEMU Enhanced Disk) images from Python, through libqed.

    import qed, shutil
    with qed.open("disk.qed") as img:          # a file object (io.RawIOBase)
        first_sector = img.read(512)
        for extent in img.map():                # what is allocated where
            print(extent)
    with qed.open("disk.qed") as src, open("disk.raw", "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)

Errors are qed.Error, a subclass of OSError carrying errno and libqed's
message (qed.FileNotFoundError and friends subclass both).  Blocking calls
release the GIL: threads working on different images run in parallel.
"""
import asyncio
import io
import os
from typing import Callable, Iterator, NamedTuple, Optional

from . import _qed
from ._qed import Error  # noqa: F401  (re-exported)
from ._qed import (BlockingIOError, ConnectionRefusedError,  # noqa: F401
                   FileExistsError, FileNotFoundError, IsADirectoryError,
                   NotADirectoryError, PermissionError, TimeoutError)

__all__ = ["open", "create", "convert", "Image", "Extent", "Error",
           "version"]


def version() -> str:
    """libqed's version."""
    return _qed.version()


class Extent(NamedTuple):
    """A run of the virtual disk with one status, as `qemu-img map` shows it:
    depth is the layer of the backing chain that holds it (0: the image),
    present whether any layer has it, zero whether it reads as zeros, data
    whether host data backs it, offset where that data is in the file of
    layer `depth` (None when not known)."""
    start: int
    length: int
    depth: int
    present: bool
    zero: bool
    data: bool
    offset: Optional[int]


_REPAIR = {None: 0, "leaks": _qed.CHECK_REPAIR_LEAKS,
           "all": _qed.CHECK_REPAIR_ALL}


class Image(io.RawIOBase):
    """An open image as a file object of its virtual disk.

    It has a fixed size: reads stop at the end (returning b"" there); writes
    past it fail with qed.Error (ENOSPC).  Use qed.open() to make one."""

    def __init__(self, handle, mode: str):
        super().__init__()
        self._h = handle
        self._mode = mode
        self._pos = 0
        self._aio = None  # (asyncio loop, timer handle) once aread is used
        self._pending = set()  # futures of areads in flight

    # ---- io.RawIOBase ---------------------------------------------------------
    @property
    def name(self) -> str:
        return self.info()["filename"]

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def size(self) -> int:
        """The virtual disk's size in bytes."""
        return self._h.size

    def readable(self) -> bool:
        self._check_open()
        return True

    def writable(self) -> bool:
        self._check_open()
        return self._mode == "r+"

    def seekable(self) -> bool:
        self._check_open()
        return True

    def _check_open(self):
        if self._h.closed:
            raise ValueError("I/O operation on a closed image")

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._check_open()
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            pos = self._h.size + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def readinto(self, buffer) -> int:
        self._check_open()
        view = memoryview(buffer).cast("B")
        n = max(0, min(len(view), self._h.size - self._pos))
        if n == 0:
            return 0
        done = self._h.preadinto(view[:n], self._pos)
        self._pos += done
        return done

    def read(self, size: int = -1) -> bytes:
        self._check_open()
        if size is None or size < 0:
            return self.readall()
        n = max(0, min(size, self._h.size - self._pos))
        if n == 0:
            return b""
        data = self._h.pread(n, self._pos)
        self._pos += n
        return data

    def readall(self) -> bytes:
        return self.read(max(0, self._h.size - self._pos))

    def write(self, data) -> int:
        self._check_open()
        if self._mode != "r+":
            raise io.UnsupportedOperation("image opened read-only (mode 'r')")
        view = memoryview(data).cast("B")
        room = self._h.size - self._pos
        if len(view) > room:
            if room <= 0:
                raise Error(28, "write past the end of the virtual disk "
                            f"({self._h.size} bytes)")
            view = view[:room]  # a short write, as a block device gives
        done = self._h.pwrite(view, self._pos)
        self._pos += done
        return done

    def truncate(self, size=None):
        raise io.UnsupportedOperation("a virtual disk has a fixed size")

    def flush(self) -> None:
        if not self._h.closed and self._mode == "r+":
            self._h.flush()

    def close(self) -> None:
        if not self._h.closed:
            try:
                if self._aio is not None:
                    self._stop_aio()
                self._h.close()
            finally:
                # Reads in flight were waited for and dropped by close.
                for fut in self._pending:
                    if not fut.done():
                        fut.set_exception(ValueError(
                            "the image was closed during the read"))
                self._pending.clear()
                super().close()

    @property
    def closed(self) -> bool:
        return self._h.closed

    def fileno(self) -> int:
        raise io.UnsupportedOperation("an image is not one file descriptor")

    # ---- the image ------------------------------------------------------------
    def info(self) -> dict:
        """What `qed info` shows, as a dict."""
        return self._h.info()

    def map(self, start: int = 0, length: Optional[int] = None) -> Iterator[Extent]:
        """The extents of [start, start + length), in order."""
        self._check_open()
        end = self._h.size if length is None else min(self._h.size, start + length)
        pos = start
        while pos < end:
            n, depth, present, zero, data, off = self._h.block_status(pos, end - pos)
            yield Extent(pos, n, depth, present, zero, data, off)
            pos += n

    def check(self, repair: Optional[str] = None) -> dict:
        """qed_check: repair None, "leaks" or "all"."""
        if repair not in _REPAIR:
            raise ValueError(f"repair must be None, 'leaks' or 'all', not {repair!r}")
        return self._h.check(_REPAIR[repair])

    def write_zeroes(self, offset: int, length: int, unmap: bool = True) -> None:
        self._h.write_zeroes(offset, length, unmap)

    def discard(self, offset: int, length: int) -> None:
        self._h.discard(offset, length)

    # ---- asyncio --------------------------------------------------------------
    async def aread(self, size: int, offset: Optional[int] = None) -> bytes:
        """Reads size bytes at offset (default: the current position, which
        then advances) without blocking the event loop: the request runs on
        the image's own loop, whose descriptor the event loop watches."""
        self._check_open()
        if offset is None:
            offset = self._pos
            self._pos += max(0, min(size, self._h.size - offset))
        n = max(0, min(size, self._h.size - offset))
        if n == 0:
            return b""
        loop = asyncio.get_running_loop()
        self._start_aio(loop)
        fut = loop.create_future()

        def done(exc, data):
            self._pending.discard(fut)
            if fut.cancelled():
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(data)

        self._h.aio_read(n, offset, done)
        self._pending.add(fut)
        self._service()
        return await fut

    def _start_aio(self, loop):
        if self._aio is None:
            loop.add_reader(self._h.loop_fd(), self._service)
            self._aio = [loop, None]
        elif self._aio[0] is not loop:
            raise RuntimeError("an image serves one asyncio event loop")

    def _stop_aio(self):
        loop, timer = self._aio
        if timer is not None:
            timer.cancel()
        loop.remove_reader(self._h.loop_fd())
        self._aio = None

    def _service(self):
        if self._aio is None or self._h.closed:
            return
        timeout = self._h.dispatch()
        loop, timer = self._aio[0], self._aio[1]
        if timer is not None:
            timer.cancel()
        self._aio[1] = None
        if timeout == 0:
            self._aio[1] = loop.call_soon(self._service)
        elif timeout > 0:
            self._aio[1] = loop.call_later(timeout / 1000, self._service)


def open(path, mode: str = "r", format: Optional[str] = None,
         force_share: bool = False, copy_on_read: bool = False,
         direct: bool = False) -> Image:
    """Opens an image (a path, or an nbd://, http(s):// or s3:// name) and
    its backing chain.  mode "r" (read-only) or "r+" (read-write); format
    "qed", "raw" or None (probed); force_share reads an image another
    program writes (mode "r" only); copy_on_read fills the image from its
    backing chain as it is read (mode "r+" only); direct opens with
    O_DIRECT."""
    if mode not in ("r", "r+", "rb", "r+b", "rb+"):
        raise ValueError(f"mode must be 'r' or 'r+', not {mode!r}")
    writable = "+" in mode
    handle = _qed.open(os.fspath(path), writable, format, force_share,
                       copy_on_read, direct)
    return Image(handle, "r+" if writable else "r")


def create(path, size: int = 0, *, cluster_size: int = 0, table_size: int = 0,
           backing_file: Optional[str] = None,
           backing_format: Optional[str] = None,
           preallocation: str = "off") -> None:
    """Creates a QED image (size 0 with a backing file: the backing file's
    size)."""
    _qed.create(os.fspath(path), size, cluster_size, table_size,
                backing_file, backing_format, preallocation)


def convert(src, dst, format: str = "raw", *,
            progress: Optional[Callable[[int, int], None]] = None,
            cluster_size: int = 0, backing_file: Optional[str] = None,
            backing_format: Optional[str] = None) -> None:
    """Copies an image (an open Image, or a path opened read-only) into a new
    raw or QED image at dst, sparse; progress(done, total) is called as it
    goes (from the thread running convert)."""
    if isinstance(src, Image):
        _qed.convert(src._h, os.fspath(dst), format, progress, cluster_size,
                     backing_file, backing_format)
        return
    with open(src) as img:
        _qed.convert(img._h, os.fspath(dst), format, progress, cluster_size,
                     backing_file, backing_format)
