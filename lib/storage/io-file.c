/* SPDX-License-Identifier: MIT */
/* The local file driver: a file or block device behind a descriptor, its
 * operations run by the loop's engine (io_uring or a thread pool), its
 * images locked as QEMU locks them.  Opened with O_DIRECT it asks for
 * aligned requests, and qedi_storage_open stacks the aligning layer over it. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io-engine.h"
#include "storage.h"

struct fd_file {
    struct io_file base;
    int fd;
    struct io_engine *engine; /* the loop's */
    struct io_lock lock;      /* OFD locks held on fd */
};

static struct fd_file *fd_file_of(struct io_file *file)
{
    return (struct fd_file *)file;
}

static int fd_submit(struct io_file *file, struct io_op *op)
{
    struct fd_file *f = fd_file_of(file);
    op->fd = f->fd;
    f->engine->ops->submit(f->engine, op);
    return 0;
}

static void fd_readv(struct io_file *file, const struct iovec *iov,
                     int iovcnt, uint64_t offset, io_callback *cb,
                     void *opaque)
{
    qedi_io_op_readv(file, fd_submit, iov, iovcnt, offset, cb, opaque);
}

static void fd_writev(struct io_file *file, const struct iovec *iov,
                      int iovcnt, uint64_t offset, io_callback *cb,
                      void *opaque)
{
    qedi_io_op_writev(file, fd_submit, iov, iovcnt, offset, cb, opaque);
}

static void fd_flush(struct io_file *file, io_callback *cb, void *opaque)
{
    qedi_io_op_flush(file, fd_submit, cb, opaque);
}

static void fd_fallocate(struct io_file *file, int mode, uint64_t offset,
                         uint64_t length, io_callback *cb, void *opaque)
{
    qedi_io_op_fallocate(file, fd_submit, mode, offset, length, cb, opaque);
}

static int fd_get_size(struct io_file *file, uint64_t *size)
{
    int fd = fd_file_of(file)->fd;
    struct stat st;

    if (fstat(fd, &st) < 0)
        return -errno;
    if (S_ISBLK(st.st_mode))
        return ioctl(fd, BLKGETSIZE64, size) < 0 ? -errno : 0;
    *size = (uint64_t)st.st_size;
    return 0;
}

static int fd_truncate(struct io_file *file, uint64_t size)
{
    return ftruncate(fd_file_of(file)->fd, (off_t)size) < 0 ? -errno : 0;
}

static int fd_allocated_bytes(struct io_file *file, uint64_t *bytes)
{
    struct stat st;
    if (fstat(fd_file_of(file)->fd, &st) < 0)
        return -errno;
    *bytes = (uint64_t)st.st_blocks * 512u;
    return 0;
}

static int fd_seek(struct io_file *file, uint64_t offset, bool data,
                   uint64_t *out)
{
    off_t r = lseek(fd_file_of(file)->fd, (off_t)offset,
                    data ? SEEK_DATA : SEEK_HOLE);
    if (r < 0)
        return errno == EINVAL ? -ENOTSUP : -errno;
    *out = (uint64_t)r;
    return 0;
}

/* Runs before anything reads or writes the file through the engine: a
 * conflict leaves it untouched, and closing the descriptor drops whatever
 * was taken. */
static int fd_lock(struct io_file *file, const char *path, unsigned flags,
                   qed_error *err)
{
    struct fd_file *f = fd_file_of(file);
    struct io_lock want;

    qedi_io_lock_role(file->writable, (flags & IO_OPEN_SHARE_ALL) != 0, &want);
    return qedi_io_lock_open_fd(f->fd, path, flags, &want, &f->lock,
                           &file->lock_unsupported, err);
}

static void fd_close(struct io_file *file)
{
    close(fd_file_of(file)->fd);
    free(file);
}

static const struct storage_ops fd_ops = {
    .name = "file",
    .readv = fd_readv,
    .writev = fd_writev,
    .flush = fd_flush,
    .fallocate = fd_fallocate,
    .get_size = fd_get_size,
    .truncate = fd_truncate,
    .allocated_bytes = fd_allocated_bytes,
    .seek = fd_seek,
    .lock = fd_lock,
    .close = fd_close,
};

static const char *file_kind_name(mode_t mode)
{
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISSOCK(mode))
        return "a socket";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    return "not a regular file";
}

static bool file_kind_allowed(mode_t mode, unsigned kinds)
{
    return (S_ISREG(mode) && (kinds & IO_KIND_REGULAR)) ||
           (S_ISBLK(mode) && (kinds & IO_KIND_BLOCK));
}

static int refuse_kind(mode_t mode, unsigned kinds, qed_error *err)
{
    const char *want = (kinds & IO_KIND_BLOCK)
                           ? "regular files and block devices"
                           : "regular files";
    return qedi_fail(err, EINVAL, "%s; images are only %s",
                    file_kind_name(mode), want);
}

/* Opening a FIFO blocks until its other end is opened (read-only) or fails
 * with ENXIO (write-only), and a device's open may wait for the device:
 * O_NONBLOCK makes either return at once so the kind can be checked.  A
 * path's kind is looked at first too, so that O_CREAT or O_TRUNC never
 * reach a file that would be refused. */
int qedi_io_open_fd(const char *path, int oflags, mode_t mode, unsigned kinds,
               qed_error *err)
{
    struct stat st;
    int fd, fl, code;

    if (stat(path, &st) == 0 && !file_kind_allowed(st.st_mode, kinds))
        return refuse_kind(st.st_mode, kinds, err);
    fd = open(path, oflags | O_NONBLOCK | O_CLOEXEC, mode);
    if (fd < 0) {
        code = errno;
        return qedi_fail(err, code, "%s", strerror(code));
    }
    if (fstat(fd, &st) < 0)
        goto fail_errno;
    if (!file_kind_allowed(st.st_mode, kinds)) {
        close(fd);
        return refuse_kind(st.st_mode, kinds, err);
    }
    fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
        goto fail_errno;
    return fd;

fail_errno:
    code = errno;
    close(fd);
    return qedi_fail(err, code, "%s", strerror(code));
}

/* The alignment O_DIRECT accepts on fd: a sector where the device allows
 * it, else QED_BUFFER_ALIGN (what every device accepts). */
static unsigned direct_align(int fd)
{
    unsigned align = QED_BUFFER_ALIGN;
    void *buf = NULL;

    if (posix_memalign(&buf, QED_BUFFER_ALIGN, 2 * QED_BUFFER_ALIGN) != 0)
        return align;
    if (pread(fd, (char *)buf + QED_SECTOR_SIZE, QED_SECTOR_SIZE,
              QED_SECTOR_SIZE) >= 0)
        align = QED_SECTOR_SIZE;
    free(buf);
    return align;
}

static int fd_open(const struct storage_driver *driver, qed_loop *loop,
                   const char *path, unsigned flags, struct io_file **out,
                   qed_error *err)
{
    int oflags = (flags & IO_OPEN_WRITE) ? O_RDWR : O_RDONLY;
    struct io_engine *engine;
    struct fd_file *f;
    int fd, ret;

    (void)driver;
    *out = NULL;
    ret = qedi_io_engine_of(loop, &engine, err);
    if (ret < 0)
        return ret;
    if (flags & IO_OPEN_DIRECT)
        oflags |= O_DIRECT;
    if (flags & IO_OPEN_CREATE)
        oflags |= O_CREAT;
    /* Images live in regular files; a block device may hold one too (a raw
     * disk, or a QED image on a logical volume), but nothing else can. */
    fd = qedi_io_open_fd(path, oflags, 0644, IO_KIND_REGULAR | IO_KIND_BLOCK, err);
    if (fd < 0)
        return fd;
    f = calloc(1, sizeof(*f));
    if (!f) {
        close(fd);
        return qedi_fail(err, ENOMEM, "out of memory");
    }
    f->base.ops = &fd_ops;
    f->base.loop = loop;
    f->base.writable = (flags & IO_OPEN_WRITE) != 0;
    f->base.align = (flags & IO_OPEN_DIRECT) ? direct_align(fd) : 1;
    f->fd = fd;
    f->engine = engine;
    *out = &f->base;
    return 0;
}

const struct storage_driver qedi_storage_file_driver = {
    .name = "file",
    .open = fd_open,
};
