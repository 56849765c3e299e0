/* SPDX-License-Identifier: MIT */
/* The file's data: each read, write, fsync, fallocate and lseek becomes one
 * asynchronous engine request, answered from its completion callback. */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "export.h"

struct io_op {
    struct qedi_mount *m;
    fuse_req_t req;
    void *buffer;            /* read: the data; write: the buffer that
                                holds it (returned to the session) */
    bool buffer_is_rx;
    bool buffer_is_read;     /* from qedi_mount_buffer_get */
    size_t length;
    uint64_t pos;            /* lseek: where the search stands */
    int whence;
    struct qed_block_status status;
};

static struct qedi_mount *mount_of(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

static struct io_op *op_new(fuse_req_t req)
{
    struct io_op *op = calloc(1, sizeof(*op));

    if (!op) {
        fuse_reply_err(req, ENOMEM);
        return NULL;
    }
    op->m = mount_of(req);
    op->req = req;
    return op;
}

/* Submitted: counted in flight until op_end.  Refused at once: answered
 * here. */
static void op_submitted(struct io_op *op, int ret);

static void op_free(struct io_op *op)
{
    if (op->buffer_is_rx)
        qedi_mount_return_buffer(op->m, op->buffer);
    else if (op->buffer_is_read)
        qedi_mount_buffer_put(op->m, op->buffer, op->length);
    else
        free(op->buffer);
    free(op);
}

static void op_submitted(struct io_op *op, int ret)
{
    if (ret < 0) {
        fuse_reply_err(op->req, qedi_mount_errno(ret));
        op_free(op);
        return;
    }
    qedi_mount_request_begin(op->m);
}

static void op_end(struct io_op *op)
{
    qedi_mount_request_end(op->m);
    op_free(op);
}

/* ---- read ----------------------------------------------------------------- */

static void read_done(void *opaque, int ret, const qed_error *err)
{
    struct io_op *op = opaque;
    (void)err;

    if (ret < 0)
        fuse_reply_err(op->req, qedi_mount_errno(ret));
    else
        fuse_reply_buf(op->req, op->buffer, op->length);
    op_end(op);
}

/* Past the end the file reads as EOF, as any file does. */
static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    struct qedi_mount *m = mount_of(req);
    uint64_t end = qed_size(m->img);
    struct iovec iov;
    struct io_op *op;
    (void)ino;
    (void)fi;

    if (off < 0 || (uint64_t)off >= end || size == 0) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    if (!(op = op_new(req)))
        return;
    op->length = (uint64_t)size < end - (uint64_t)off ? size
                                                       : end - (uint64_t)off;
    op->buffer = qedi_mount_buffer_get(m, op->length);
    if (!op->buffer) {
        op_submitted(op, -ENOMEM);
        return;
    }
    op->buffer_is_read = true;
    iov = (struct iovec){ op->buffer, op->length };
    op_submitted(op, qed_aio_readv(m->img, &iov, 1, (uint64_t)off, read_done,
                                   op));
}

/* ---- write ----------------------------------------------------------------- */

static void write_done(void *opaque, int ret, const qed_error *err)
{
    struct io_op *op = opaque;
    (void)err;

    if (ret < 0) {
        fuse_reply_err(op->req, qedi_mount_errno(ret));
    } else {
        qedi_mount_touch(&op->m->mtime);
        op->m->ctime = op->m->mtime;
        fuse_reply_write(op->req, op->length);
    }
    op_end(op);
}

/* The data stays in the buffer it arrived in (taken from the session) or,
 * should it not be there, in a copy. */
static int keep_write_data(struct io_op *op, const char *data, size_t size,
                           const char **kept)
{
    op->buffer = qedi_mount_take_buffer(op->m, data, size);
    if (op->buffer) {
        op->buffer_is_rx = true;
        *kept = data;
        return 0;
    }
    op->buffer = malloc(size ? size : 1);
    if (!op->buffer)
        return -ENOMEM;
    memcpy(op->buffer, data, size);
    *kept = op->buffer;
    return 0;
}

/* The file cannot grow by writing, as a disk cannot: a write at or past the
 * end fails with ENOSPC, one that crosses it is cut short there. */
static void op_write(fuse_req_t req, fuse_ino_t ino, const char *data,
                     size_t size, off_t off, struct fuse_file_info *fi)
{
    struct qedi_mount *m = mount_of(req);
    uint64_t end = qed_size(m->img);
    const char *kept;
    struct iovec iov;
    struct io_op *op;
    int r;
    (void)ino;
    (void)fi;

    if (m->read_only) {
        fuse_reply_err(req, EROFS);
        return;
    }
    if (size == 0) {
        fuse_reply_write(req, 0);
        return;
    }
    if (off < 0 || (uint64_t)off >= end) {
        fuse_reply_err(req, ENOSPC);
        return;
    }
    if (!(op = op_new(req)))
        return;
    op->length = (uint64_t)size < end - (uint64_t)off ? size
                                                       : end - (uint64_t)off;
    r = keep_write_data(op, data, op->length, &kept);
    if (r == 0) {
        iov = (struct iovec){ (void *)kept, op->length };
        r = qed_aio_writev(m->img, &iov, 1, (uint64_t)off, write_done, op);
    }
    op_submitted(op, r);
}

/* ---- fsync, flush ------------------------------------------------------------ */

static void status_done(void *opaque, int ret, const qed_error *err)
{
    struct io_op *op = opaque;
    (void)err;

    fuse_reply_err(op->req, ret < 0 ? qedi_mount_errno(ret) : 0);
    op_end(op);
}

/* fsync and fdatasync make every write answered before them durable. */
static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
                     struct fuse_file_info *fi)
{
    struct qedi_mount *m = mount_of(req);
    struct io_op *op;
    (void)ino;
    (void)datasync;
    (void)fi;

    if (m->read_only) {
        fuse_reply_err(req, 0);
        return;
    }
    if (!(op = op_new(req)))
        return;
    op_submitted(op, qed_aio_flush(m->img, status_done, op));
}

/* close(): every write was answered only once the engine had it. */
static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    (void)fi;
    fuse_reply_err(req, 0);
}

/* ---- fallocate --------------------------------------------------------------- */

/* PUNCH_HOLE releases the range (whole clusters become zero clusters or
 * are punched on the host; partial ones get zeros); ZERO_RANGE zeroes it.
 * Plain allocation is not offered (posix_fallocate then writes zeros where
 * there are zeros, which allocates); neither is growing the file. */
static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode,
                         off_t offset, off_t length, struct fuse_file_info *fi)
{
    struct qedi_mount *m = mount_of(req);
    uint64_t size = qed_size(m->img), start, end;
    bool punch = mode & FALLOC_FL_PUNCH_HOLE;
    bool zero = mode & FALLOC_FL_ZERO_RANGE;
    struct io_op *op;
    (void)ino;
    (void)fi;

    if (m->read_only) {
        fuse_reply_err(req, EROFS);
        return;
    }
    if (offset < 0 || length <= 0 || offset > INT64_MAX - length) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    if ((mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE |
                  FALLOC_FL_ZERO_RANGE)) || (!punch && !zero) ||
        (punch && zero)) {
        fuse_reply_err(req, EOPNOTSUPP);
        return;
    }
    start = (uint64_t)offset;
    end = start + (uint64_t)length;
    if (end > size && !(mode & FALLOC_FL_KEEP_SIZE)) {
        fuse_reply_err(req, EOPNOTSUPP);
        return;
    }
    if (start >= size) {
        fuse_reply_err(req, 0);
        return;
    }
    if (end > size)
        end = size;
    if (!(op = op_new(req)))
        return;
    op_submitted(op, qed_aio_write_zeroes(m->img, start, end - start,
                                          punch ? QED_ZERO_MAY_UNMAP : 0,
                                          status_done, op));
}

/* ---- lseek: SEEK_DATA, SEEK_HOLE -------------------------------------------- */

/* A hole is whatever reads as zeros without data behind it (unallocated
 * without a backing file, zero clusters), as `qed map` shows. */
static void seek_step(struct io_op *op);

static void seek_status_done(void *opaque, int ret, const qed_error *err)
{
    struct io_op *op = opaque;
    uint64_t size = qed_size(op->m->img);
    bool hole = op->status.zero;
    (void)err;

    if (ret < 0 || op->status.length == 0) {
        fuse_reply_err(op->req, ret < 0 ? qedi_mount_errno(ret) : EIO);
    } else if (hole == (op->whence == SEEK_HOLE)) {
        fuse_reply_lseek(op->req, (off_t)op->pos);
    } else if (op->pos + op->status.length >= size) {
        /* No data after pos: ENXIO; no hole: the end is one. */
        if (op->whence == SEEK_DATA)
            fuse_reply_err(op->req, ENXIO);
        else
            fuse_reply_lseek(op->req, (off_t)size);
    } else {
        op->pos += op->status.length;
        seek_step(op);
        return;
    }
    op_end(op);
}

static void seek_step(struct io_op *op)
{
    uint64_t size = qed_size(op->m->img);
    int r;

    qed_block_status_init(&op->status);
    r = qed_aio_block_status(op->m->img, op->pos, size - op->pos, &op->status,
                             seek_status_done, op);
    if (r < 0) {
        fuse_reply_err(op->req, qedi_mount_errno(r));
        op_end(op);
    }
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
                     struct fuse_file_info *fi)
{
    struct qedi_mount *m = mount_of(req);
    struct io_op *op;
    (void)ino;
    (void)fi;

    if (whence != SEEK_DATA && whence != SEEK_HOLE) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    if (off < 0 || (uint64_t)off >= qed_size(m->img)) {
        fuse_reply_err(req, ENXIO);
        return;
    }
    if (!(op = op_new(req)))
        return;
    op->pos = (uint64_t)off;
    op->whence = whence;
    qedi_mount_request_begin(m);
    seek_step(op);
}

void qedi_mount_set_io_ops(struct fuse_lowlevel_ops *ops)
{
    ops->read = op_read;
    ops->write = op_write;
    ops->fsync = op_fsync;
    ops->flush = op_flush;
    ops->fallocate = op_fallocate;
    ops->lseek = op_lseek;
}
