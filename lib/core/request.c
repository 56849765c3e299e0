/* SPDX-License-Identifier: MIT */
/* Requests: the public asynchronous calls and their synchronous wrappers,
 * and every request's life cycle whatever the image's format.  The front
 * checks the caller's arguments, hands the request to the format driver
 * (driver.h), and completes it: the caller's callback always runs from the
 * loop, never from inside the call that submitted the request. */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "core.h"

/* ---- life cycle ------------------------------------------------------------ */

static void run_completion(struct loop_task *task)
{
    struct request *req = (struct request *)((char *)task -
                                              offsetof(struct request, task));
    qed_image *img = req->img;
    int ret = req->err.code ? -req->err.code : 0;

    assert(img->in_flight > 0);
    img->in_flight--;
    QEDI_TRACE("request %p done: %s", (void *)req,
               ret ? req->err.message : "ok");
    req->cb(req->opaque, ret, ret ? &req->err : NULL);
    free(req->iov);
    free(req);
}

/* Ends the request: its callback runs from the loop, never from inside the
 * call that submitted it. */
static void complete(struct request *req, int ret)
{
    if (req->img->driver->finish && req->img->driver->finish(req, ret))
        return;
    if (ret < 0 && req->err.code == 0)
        qedi_fail(&req->err, -ret, "%s", strerror(-ret));
    if (ret == 0)
        qedi_error_clear(&req->err);
    req->task.run = run_completion;
    qedi_loop_defer(req->img->loop, &req->task);
}

static int fail_now(qed_error *err, int code, const char *what)
{
    return qedi_fail(err, code, "%s", what);
}

static struct request *request_new(qed_image *img, enum request_kind kind,
                                   uint64_t offset, uint64_t length,
                                   qed_callback *cb, void *opaque)
{
    /* The driver's request, its struct request first (freed as one). */
    struct request *req = calloc(1, img->driver->request_size);
    if (!req)
        return NULL;
    req->img = img;
    req->kind = kind;
    req->offset = offset;
    req->length = length;
    req->cb = cb;
    req->opaque = opaque;
    return req;
}

static int check_range(const qed_image *img, uint64_t offset, uint64_t length)
{
    uint64_t end;
    if (add_overflows(offset, length, &end) || end > img->size)
        return -EINVAL;
    return 0;
}

static const char *kind_name(enum request_kind kind)
{
    static const char *const names[] = {
        [REQ_READ] = "read",       [REQ_WRITE] = "write",
        [REQ_ZEROES] = "write-zeroes", [REQ_DISCARD] = "discard",
        [REQ_FLUSH] = "flush",     [REQ_STATUS] = "block-status",
    };
    return (unsigned)kind < QED_ARRAY_SIZE(names) ? names[kind] : "?";
}

static void dispatch(struct request *req)
{
    QEDI_TRACE("request %p: %s %" PRIu64 "+%" PRIu64 " on '%s'", (void *)req,
               kind_name(req->kind), req->offset, req->length,
               req->img->filename);
    req->img->in_flight++;
    req->img->driver->start(req);
}

static int submit_vector(qed_image *img, enum request_kind kind,
                         unsigned flags, const struct iovec *iov, int iovcnt,
                         uint64_t offset, qed_callback *cb, void *opaque)
{
    uint64_t length = qedi_iov_size(iov, iovcnt);
    struct request *req;

    if (iovcnt < 0 || check_range(img, offset, length) < 0)
        return -EINVAL;
    if (kind == REQ_WRITE && !img->writable)
        return -EPERM;
    req = request_new(img, kind, offset, length, cb, opaque);
    if (!req)
        return -ENOMEM;
    req->iov = malloc(sizeof(*iov) * (size_t)(iovcnt ? iovcnt : 1));
    if (!req->iov) {
        free(req);
        return -ENOMEM;
    }
    memcpy(req->iov, iov, sizeof(*iov) * (size_t)iovcnt);
    req->iovcnt = iovcnt;
    req->flags = flags;
    dispatch(req);
    return 0;
}

int qed_aio_readv(qed_image *img, const struct iovec *iov, int iovcnt,
                  uint64_t offset, qed_callback *cb, void *opaque)
{
    return submit_vector(img, REQ_READ, 0, iov, iovcnt, offset, cb, opaque);
}

int qed_aio_writev(qed_image *img, const struct iovec *iov, int iovcnt,
                   uint64_t offset, qed_callback *cb, void *opaque)
{
    return submit_vector(img, REQ_WRITE, 0, iov, iovcnt, offset, cb, opaque);
}

/* Copy-on-read's writes (front_ops.aio_fill). */
static int aio_fill(qed_image *img, const struct iovec *iov, int iovcnt,
                    uint64_t offset, qed_callback *cb, void *opaque)
{
    return submit_vector(img, REQ_WRITE, REQ_FLAG_FILL, iov, iovcnt, offset,
                         cb, opaque);
}

static int submit_range(qed_image *img, enum request_kind kind,
                        uint64_t offset, uint64_t length, unsigned flags,
                        struct qed_block_status *status, qed_callback *cb,
                        void *opaque);

static int aio_fill_zeroes(qed_image *img, uint64_t offset, uint64_t length,
                           qed_callback *cb, void *opaque)
{
    return submit_range(img, REQ_ZEROES, offset, length, REQ_FLAG_FILL, NULL,
                        cb, opaque);
}

static int submit_range(qed_image *img, enum request_kind kind,
                        uint64_t offset, uint64_t length, unsigned flags,
                        struct qed_block_status *status, qed_callback *cb,
                        void *opaque)
{
    struct request *req;

    if (check_range(img, offset, length) < 0)
        return -EINVAL;
    if ((kind == REQ_ZEROES || kind == REQ_DISCARD) && !img->writable)
        return -EPERM;
    req = request_new(img, kind, offset, length, cb, opaque);
    if (!req)
        return -ENOMEM;
    req->flags = flags;
    req->status = status;
    dispatch(req);
    return 0;
}

int qed_aio_write_zeroes(qed_image *img, uint64_t offset, uint64_t length,
                         unsigned flags, qed_callback *cb, void *opaque)
{
    return submit_range(img, REQ_ZEROES, offset, length, flags, NULL, cb,
                        opaque);
}

int qed_aio_discard(qed_image *img, uint64_t offset, uint64_t length,
                    qed_callback *cb, void *opaque)
{
    return submit_range(img, REQ_DISCARD, offset, length, 0, NULL, cb, opaque);
}

int qed_aio_flush(qed_image *img, qed_callback *cb, void *opaque)
{
    return submit_range(img, REQ_FLUSH, 0, 0, 0, NULL, cb, opaque);
}

int qed_aio_block_status(qed_image *img, uint64_t offset, uint64_t length,
                         struct qed_block_status *status, qed_callback *cb,
                         void *opaque)
{
    if (offset >= img->size || length == 0 ||
        qedi_abi_check_out(&qedi_abi_block_status, status, NULL) < 0)
        return -EINVAL;
    /* Fields of a later release than this library's read as zero. */
    qedi_abi_give(&qedi_abi_block_status, status,
                  &(struct qed_block_status){ 0 });
    length = QED_MIN(length, img->size - offset);
    return submit_range(img, REQ_STATUS, offset, length, 0, status, cb,
                        opaque);
}

/* ---- synchronous wrappers ------------------------------------------------- */

struct sync_call {
    bool done;
    int ret;
    qed_error *err;
};

static void sync_done(void *opaque, int ret, const qed_error *err)
{
    struct sync_call *c = opaque;
    c->done = true;
    c->ret = ret;
    if (ret < 0 && c->err && err)
        qedi_error_copy(c->err, err);
}

int qedi_image_refuse_nested(const qed_image *img, const char *what,
                        qed_error *err)
{
    if (!qedi_loop_running(img->loop))
        return 0;
    return qedi_fail(err, EDEADLK, "%s called from a callback running on the "
                    "image's loop: it would wait for itself; use the "
                    "asynchronous call there", what);
}

static int sync_wait(qed_image *img, int submitted, struct sync_call *c,
                     const char *what)
{
    if (submitted < 0) {
        if (submitted == -EINVAL)
            return qedi_fail(c->err, EINVAL, "%s: range outside the image "
                            "(size %" PRIu64 ")", what, img->size);
        if (submitted == -EPERM)
            return qedi_fail(c->err, EPERM, "%s: image is read-only", what);
        return fail_now(c->err, -submitted, strerror(-submitted));
    }
    while (!c->done) {
        int r = qed_loop_run(img->loop, -1);
        if (r < 0)
            return qedi_fail(c->err, -r, "event loop: %s", strerror(-r));
    }
    return c->ret;
}

int qed_pread(qed_image *img, void *buf, size_t length, uint64_t offset,
              qed_error *err)
{
    struct sync_call c = { .err = err };
    struct iovec v = { buf, length };

    if (qedi_image_refuse_nested(img, "qed_pread", err) < 0)
        return -EDEADLK;
    return sync_wait(img, qed_aio_readv(img, &v, 1, offset, sync_done, &c),
                     &c, "read");
}

int qed_pwrite(qed_image *img, const void *buf, size_t length,
               uint64_t offset, qed_error *err)
{
    struct sync_call c = { .err = err };
    struct iovec v = { (void *)buf, length };

    if (qedi_image_refuse_nested(img, "qed_pwrite", err) < 0)
        return -EDEADLK;
    return sync_wait(img, qed_aio_writev(img, &v, 1, offset, sync_done, &c),
                     &c, "write");
}

int qed_write_zeroes(qed_image *img, uint64_t offset, uint64_t length,
                     unsigned flags, qed_error *err)
{
    struct sync_call c = { .err = err };

    if (qedi_image_refuse_nested(img, "qed_write_zeroes", err) < 0)
        return -EDEADLK;
    return sync_wait(img, qed_aio_write_zeroes(img, offset, length, flags,
                                               sync_done, &c),
                     &c, "write zeroes");
}

int qed_discard(qed_image *img, uint64_t offset, uint64_t length,
                qed_error *err)
{
    struct sync_call c = { .err = err };

    if (qedi_image_refuse_nested(img, "qed_discard", err) < 0)
        return -EDEADLK;
    return sync_wait(img, qed_aio_discard(img, offset, length, sync_done, &c),
                     &c, "discard");
}

int qed_flush(qed_image *img, qed_error *err)
{
    struct sync_call c = { .err = err };

    if (qedi_image_refuse_nested(img, "qed_flush", err) < 0)
        return -EDEADLK;
    return sync_wait(img, qed_aio_flush(img, sync_done, &c), &c, "flush");
}

int qed_block_status(qed_image *img, uint64_t offset, uint64_t length,
                     struct qed_block_status *status, qed_error *err)
{
    struct sync_call c = { .err = err };

    if (qedi_image_refuse_nested(img, "qed_block_status", err) < 0)
        return -EDEADLK;
    /* Said here: the asynchronous call has no message for it. */
    if (qedi_abi_check_out(&qedi_abi_block_status, status, err) < 0)
        return -EINVAL;
    return sync_wait(img, qed_aio_block_status(img, offset, length, status,
                                               sync_done, &c),
                     &c, "block status");
}

const struct front_ops qedi_image_front = {
    .complete = complete,
    .aio_readv = qed_aio_readv,
    .aio_fill = aio_fill,
    .aio_fill_zeroes = aio_fill_zeroes,
    .aio_block_status = qed_aio_block_status,
    .block_status = qed_block_status,
    .write_zeroes = qed_write_zeroes,
    .flush = qed_flush,
};
