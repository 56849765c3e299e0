/* SPDX-License-Identifier: MIT */
/* The file side of the I/O interface: whole-buffer reads (zeros past the end
 * of the file) and writes on top of whichever engine the loop runs, plus the
 * plain-file back end of io_file. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io-direct.h"

#define INLINE_IOVS 4

struct io_req {
    struct io_op op;
    struct io_file *file;
    io_callback *cb;
    void *opaque;
    struct iovec *iov; /* remaining part; points into inline_iov or heap */
    int iovcnt;
    size_t remaining;
    struct iovec inline_iov[INLINE_IOVS];
    struct iovec *heap_iov;
};

static void req_free(struct io_req *req)
{
    free(req->heap_iov);
    free(req);
}

static void req_finish(struct io_req *req, int ret)
{
    io_callback *cb = req->cb;
    void *opaque = req->opaque;
    req_free(req);
    cb(opaque, ret);
}

/* Drops the first n bytes of the request's vector. */
static void req_advance(struct io_req *req, size_t n)
{
    req->remaining -= n;
    req->op.offset += n;
    while (n > 0 && req->iovcnt > 0) {
        if (n < req->iov->iov_len) {
            req->iov->iov_base = (char *)req->iov->iov_base + n;
            req->iov->iov_len -= n;
            return;
        }
        n -= req->iov->iov_len;
        req->iov++;
        req->iovcnt--;
    }
}

static void zero_rest(struct io_req *req)
{
    for (int i = 0; i < req->iovcnt; i++)
        memset(req->iov[i].iov_base, 0, req->iov[i].iov_len);
}

static void req_resubmit(struct io_req *req)
{
    req->op.iov = req->iov;
    req->op.iovcnt = (int)QED_MIN(req->iovcnt, IOV_MAX);
    req->file->ops->submit(req->file, &req->op);
}

static void req_complete(struct io_op *op)
{
    struct io_req *req = (struct io_req *)op;
    ssize_t r = op->result;

    if (r == -EINTR || r == -EAGAIN) {
        req_resubmit(req);
        return;
    }
    if (r < 0) {
        req_finish(req, (int)r);
        return;
    }
    if (op->kind == IO_SYNC || op->kind == IO_FALLOCATE) {
        req_finish(req, 0);
        return;
    }
    if (r == 0) {
        /* A read at the end of the file: the rest reads as zeros.  A write
         * that makes no progress would spin: report it. */
        if (op->kind == IO_READ) {
            zero_rest(req);
            req_finish(req, 0);
        } else {
            req_finish(req, -EIO);
        }
        return;
    }
    req_advance(req, (size_t)r);
    if (op->kind == IO_READ && req->file->direct && req->remaining > 0) {
        /* A short direct read ends at the end of the file, which need not
         * be block aligned; asking again from there would fail. */
        zero_rest(req);
        req_finish(req, 0);
        return;
    }
    if (req->remaining == 0)
        req_finish(req, 0);
    else
        req_resubmit(req);
}

static struct io_req *req_new(struct io_file *file, enum io_kind kind,
                              const struct iovec *iov, int iovcnt,
                              uint64_t offset, io_callback *cb, void *opaque)
{
    struct io_req *req = calloc(1, sizeof(*req));
    if (!req)
        return NULL;
    req->file = file;
    req->cb = cb;
    req->opaque = opaque;
    req->op.kind = kind;
    req->op.offset = offset;
    req->op.complete = req_complete;
    req->op.fd = file->fd;
    if (iovcnt > INLINE_IOVS) {
        req->heap_iov = malloc(sizeof(*iov) * (size_t)iovcnt);
        if (!req->heap_iov) {
            free(req);
            return NULL;
        }
        req->iov = req->heap_iov;
    } else {
        req->iov = req->inline_iov;
    }
    for (int i = 0; i < iovcnt; i++) {
        req->iov[i] = iov[i];
        req->remaining += iov[i].iov_len;
    }
    req->iovcnt = iovcnt;
    return req;
}

struct later_call {
    io_callback *cb;
    void *opaque;
    int ret;
};

static void run_later_call(void *arg)
{
    struct later_call *c = arg;
    io_callback *cb = c->cb;
    void *opaque = c->opaque;
    int ret = c->ret;
    free(c);
    cb(opaque, ret);
}

/* Results known before submission (empty transfers, allocation failure)
 * still arrive through the callback, from the loop, so callers have exactly
 * one completion path. */
static void complete_later(struct io_file *file, io_callback *cb, void *opaque,
                           int ret)
{
    struct later_call *c = malloc(sizeof(*c));
    if (c) {
        c->cb = cb;
        c->opaque = opaque;
        c->ret = ret;
        if (loop_defer_call(file->loop, run_later_call, c) == 0)
            return;
        free(c);
    }
    /* Not even a few bytes to report the failure with. */
    abort();
}

static void start(struct io_file *file, enum io_kind kind,
                  const struct iovec *iov, int iovcnt, uint64_t offset,
                  io_callback *cb, void *opaque)
{
    struct io_req *req = req_new(file, kind, iov, iovcnt, offset, cb, opaque);
    if (!req) {
        complete_later(file, cb, opaque, -ENOMEM);
        return;
    }
    if ((kind == IO_READ || kind == IO_WRITE) && req->remaining == 0) {
        req_free(req);
        complete_later(file, cb, opaque, 0);
        return;
    }
    req_resubmit(req);
}

void io_readv(struct io_file *file, const struct iovec *iov, int iovcnt,
              uint64_t offset, io_callback *cb, void *opaque)
{
    if (file->direct && !io_direct_aligned(file, iov, iovcnt, offset))
        io_direct_readv(file, iov, iovcnt, offset, cb, opaque);
    else
        start(file, IO_READ, iov, iovcnt, offset, cb, opaque);
}

void io_writev(struct io_file *file, const struct iovec *iov, int iovcnt,
               uint64_t offset, io_callback *cb, void *opaque)
{
    if (file->direct)
        io_direct_writev(file, iov, iovcnt, offset, cb, opaque);
    else
        start(file, IO_WRITE, iov, iovcnt, offset, cb, opaque);
}

void io_plain_writev(struct io_file *file, const struct iovec *iov, int iovcnt,
                     uint64_t offset, io_callback *cb, void *opaque)
{
    start(file, IO_WRITE, iov, iovcnt, offset, cb, opaque);
}

void io_plain_pread(struct io_file *file, void *buf, size_t len,
                    uint64_t offset, io_callback *cb, void *opaque)
{
    struct iovec v = { buf, len };
    start(file, IO_READ, &v, 1, offset, cb, opaque);
}

void io_plain_pwrite(struct io_file *file, const void *buf, size_t len,
                     uint64_t offset, io_callback *cb, void *opaque)
{
    struct iovec v = { (void *)buf, len };
    start(file, IO_WRITE, &v, 1, offset, cb, opaque);
}

void io_pread(struct io_file *file, void *buf, size_t len, uint64_t offset,
              io_callback *cb, void *opaque)
{
    struct iovec v = { buf, len };
    io_readv(file, &v, 1, offset, cb, opaque);
}

void io_pwrite(struct io_file *file, const void *buf, size_t len,
               uint64_t offset, io_callback *cb, void *opaque)
{
    struct iovec v = { (void *)buf, len };
    io_writev(file, &v, 1, offset, cb, opaque);
}

void io_sync(struct io_file *file, io_callback *cb, void *opaque)
{
    start(file, IO_SYNC, NULL, 0, 0, cb, opaque);
}

void io_fallocate(struct io_file *file, int mode, uint64_t offset,
                  uint64_t length, io_callback *cb, void *opaque)
{
    /* Extending the file (mode 0) touches no data; zeroing does. */
    if (file->direct && mode != 0)
        io_direct_fallocate(file, mode, offset, length, cb, opaque);
    else
        io_plain_fallocate(file, mode, offset, length, cb, opaque);
}

void io_plain_fallocate(struct io_file *file, int mode, uint64_t offset,
                        uint64_t length, io_callback *cb, void *opaque)
{
    struct io_req *req = req_new(file, IO_FALLOCATE, NULL, 0, offset, cb,
                                 opaque);
    if (!req) {
        complete_later(file, cb, opaque, -ENOMEM);
        return;
    }
    req->op.mode = mode;
    req->op.length = length;
    req_resubmit(req);
}

/* ---- synchronous helpers for start-up paths ------------------------------ */

struct sync_wait {
    bool done;
    int ret;
};

static void sync_done(void *opaque, int ret)
{
    struct sync_wait *w = opaque;
    w->done = true;
    w->ret = ret;
}

static int wait_for(qed_loop *loop, struct sync_wait *w)
{
    while (!w->done) {
        int r = qed_loop_run(loop, -1);
        if (r < 0)
            return r;
    }
    return w->ret;
}

int io_pread_sync(struct io_file *file, void *buf, size_t len, uint64_t offset)
{
    struct sync_wait w = { 0 };
    io_pread(file, buf, len, offset, sync_done, &w);
    return wait_for(file->loop, &w);
}

int io_pwrite_sync(struct io_file *file, const void *buf, size_t len,
                   uint64_t offset)
{
    struct sync_wait w = { 0 };
    io_pwrite(file, buf, len, offset, sync_done, &w);
    return wait_for(file->loop, &w);
}

int io_sync_sync(struct io_file *file)
{
    struct sync_wait w = { 0 };
    io_sync(file, sync_done, &w);
    return wait_for(file->loop, &w);
}

/* ---- plain files ----------------------------------------------------------- */

static void fd_submit(struct io_file *file, struct io_op *op)
{
    struct io_engine *engine = loop_io_engine(file->loop);
    op->fd = file->fd;
    engine->ops->submit(engine, op);
}

static int fd_get_size(struct io_file *file, uint64_t *size)
{
    struct stat st;
    if (fstat(file->fd, &st) < 0)
        return -errno;
    if (S_ISBLK(st.st_mode))
        return ioctl(file->fd, BLKGETSIZE64, size) < 0 ? -errno : 0;
    *size = (uint64_t)st.st_size;
    return 0;
}

static int fd_truncate(struct io_file *file, uint64_t size)
{
    return ftruncate(file->fd, (off_t)size) < 0 ? -errno : 0;
}

static int fd_allocated_bytes(struct io_file *file, uint64_t *bytes)
{
    struct stat st;
    if (fstat(file->fd, &st) < 0)
        return -errno;
    *bytes = (uint64_t)st.st_blocks * 512u;
    return 0;
}

static int fd_seek(struct io_file *file, uint64_t offset, bool data,
                   uint64_t *out)
{
    off_t r = lseek(file->fd, (off_t)offset, data ? SEEK_DATA : SEEK_HOLE);
    if (r < 0)
        return errno == EINVAL ? -ENOTSUP : -errno;
    *out = (uint64_t)r;
    return 0;
}

static void fd_close(struct io_file *file)
{
    close(file->fd);
    free(file);
}

static const struct io_file_ops fd_file_ops = {
    .submit = fd_submit,
    .get_size = fd_get_size,
    .truncate = fd_truncate,
    .allocated_bytes = fd_allocated_bytes,
    .seek = fd_seek,
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
    return qed_fail(err, EINVAL, "%s; images are only %s",
                    file_kind_name(mode), want);
}

/* Opening a FIFO blocks until its other end is opened (read-only) or fails
 * with ENXIO (write-only), and a device's open may wait for the device:
 * O_NONBLOCK makes either return at once so the kind can be checked.  A
 * path's kind is looked at first too, so that O_CREAT or O_TRUNC never
 * reach a file that would be refused. */
int io_open_fd(const char *path, int oflags, mode_t mode, unsigned kinds,
               qed_error *err)
{
    struct stat st;
    int fd, fl, code;

    if (stat(path, &st) == 0 && !file_kind_allowed(st.st_mode, kinds))
        return refuse_kind(st.st_mode, kinds, err);
    fd = open(path, oflags | O_NONBLOCK | O_CLOEXEC, mode);
    if (fd < 0) {
        code = errno;
        return qed_fail(err, code, "%s", strerror(code));
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
    return qed_fail(err, code, "%s", strerror(code));
}

int io_file_open(qed_loop *loop, const char *path, unsigned flags,
                 struct io_file **out, qed_error *err)
{
    int oflags = (flags & IO_OPEN_WRITE) ? O_RDWR : O_RDONLY;
    struct io_lock want;
    struct io_file *file;
    int fd, ret;

    *out = NULL;
    if (flags & IO_OPEN_DIRECT)
        oflags |= O_DIRECT;
    if (flags & IO_OPEN_CREATE)
        oflags |= O_CREAT;
    /* Images live in regular files; a block device may hold one too (a raw
     * disk, or a QED image on a logical volume), but nothing else can. */
    fd = io_open_fd(path, oflags, 0644, IO_KIND_REGULAR | IO_KIND_BLOCK, err);
    if (fd < 0)
        return fd;
    file = calloc(1, sizeof(*file));
    if (!file) {
        close(fd);
        return qed_fail(err, ENOMEM, "out of memory");
    }
    /* Before anything reads or writes the file: a conflict leaves it
     * untouched, and closing the descriptor drops whatever was taken. */
    io_lock_role((flags & IO_OPEN_WRITE) != 0,
                 (flags & IO_OPEN_SHARE_ALL) != 0, &want);
    ret = io_lock_open_fd(fd, path, flags, &want, &file->lock,
                          &file->lock_unsupported, err);
    if (ret < 0) {
        close(fd);
        free(file);
        return ret;
    }
    file->ops = &fd_file_ops;
    file->loop = loop;
    file->fd = fd;
    file->direct = (flags & IO_OPEN_DIRECT) != 0;
    file->writable = (flags & IO_OPEN_WRITE) != 0;
    if (file->direct)
        io_direct_probe(file);
    *out = file;
    return 0;
}

void io_file_close(struct io_file *file)
{
    if (file)
        file->ops->close(file);
}
