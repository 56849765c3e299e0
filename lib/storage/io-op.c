/* SPDX-License-Identifier: MIT */
/* Whole-buffer requests over system-call-shaped operations; see io-op.h. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>

#include "io-op.h"

#define INLINE_IOVS 4

struct io_req {
    struct io_op op;
    struct io_file *file;
    io_op_submit_fn *submit;
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

static int req_submit(struct io_req *req)
{
    req->op.iov = req->iov;
    req->op.iovcnt = (int)QED_MIN(req->iovcnt, IOV_MAX);
    return req->submit(req->file, &req->op);
}

/* From a completion, on the loop: a refusal finishes the request at once. */
static void req_resubmit(struct io_req *req)
{
    int ret = req_submit(req);
    if (ret < 0)
        req_finish(req, ret);
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
    if (op->kind == IO_READ && req->file->align > 1 && req->remaining > 0) {
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

static struct io_req *req_new(struct io_file *file, io_op_submit_fn *submit,
                              enum io_kind kind, const struct iovec *iov,
                              int iovcnt, uint64_t offset, io_callback *cb,
                              void *opaque)
{
    struct io_req *req = qedi_io_calloc(1, sizeof(*req));
    if (!req)
        return NULL;
    req->file = file;
    req->submit = submit;
    req->cb = cb;
    req->opaque = opaque;
    req->op.kind = kind;
    req->op.offset = offset;
    req->op.complete = req_complete;
    req->op.fd = -1;
    if (iovcnt > INLINE_IOVS) {
        req->heap_iov = qedi_io_calloc((size_t)iovcnt, sizeof(*iov));
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

/* The first submission happens inside the caller's call: whatever goes
 * wrong there is reported from the loop. */
static void start(struct io_req *req, io_callback *cb, void *opaque,
                  struct io_file *file)
{
    int ret;

    if (!req) {
        qedi_storage_complete_later(file, cb, opaque, -ENOMEM);
        return;
    }
    ret = req_submit(req);
    if (ret < 0) {
        req_free(req);
        qedi_storage_complete_later(file, cb, opaque, ret);
    }
}

static void start_transfer(struct io_file *file, io_op_submit_fn *submit,
                           enum io_kind kind, const struct iovec *iov,
                           int iovcnt, uint64_t offset, io_callback *cb,
                           void *opaque)
{
    struct io_req *req = req_new(file, submit, kind, iov, iovcnt, offset, cb,
                                 opaque);
    if (req && req->remaining == 0) {
        req_free(req);
        qedi_storage_complete_later(file, cb, opaque, 0);
        return;
    }
    start(req, cb, opaque, file);
}

void qedi_io_op_readv(struct io_file *file, io_op_submit_fn *submit,
                 const struct iovec *iov, int iovcnt, uint64_t offset,
                 io_callback *cb, void *opaque)
{
    start_transfer(file, submit, IO_READ, iov, iovcnt, offset, cb, opaque);
}

void qedi_io_op_writev(struct io_file *file, io_op_submit_fn *submit,
                  const struct iovec *iov, int iovcnt, uint64_t offset,
                  io_callback *cb, void *opaque)
{
    start_transfer(file, submit, IO_WRITE, iov, iovcnt, offset, cb, opaque);
}

void qedi_io_op_flush(struct io_file *file, io_op_submit_fn *submit,
                 io_callback *cb, void *opaque)
{
    start(req_new(file, submit, IO_SYNC, NULL, 0, 0, cb, opaque), cb, opaque,
          file);
}

void qedi_io_op_fallocate(struct io_file *file, io_op_submit_fn *submit, int mode,
                     uint64_t offset, uint64_t length, io_callback *cb,
                     void *opaque)
{
    struct io_req *req = req_new(file, submit, IO_FALLOCATE, NULL, 0, offset,
                                 cb, opaque);
    if (req) {
        req->op.mode = mode;
        req->op.length = length;
    }
    start(req, cb, opaque, file);
}
