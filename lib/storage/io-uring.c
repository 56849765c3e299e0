/* SPDX-License-Identifier: MIT */
/* io_uring back end: operations become SQEs, submitted in one batch per loop
 * iteration; completions are announced on an eventfd the loop polls. */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "io-engine.h"

#define RING_ENTRIES 512u

struct uring_engine {
    struct io_engine base;
    struct io_uring ring;
    unsigned unsubmitted;
    /* Ops that found the submission queue full wait here. */
    struct io_op *backlog_head, *backlog_tail;
};

static bool prepare_sqe(struct uring_engine *u, struct io_op *op)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (!sqe)
        return false;
    switch (op->kind) {
    case IO_READ:
        io_uring_prep_readv(sqe, op->fd, op->iov, (unsigned)op->iovcnt,
                            op->offset);
        break;
    case IO_WRITE:
        io_uring_prep_writev(sqe, op->fd, op->iov, (unsigned)op->iovcnt,
                             op->offset);
        break;
    case IO_SYNC:
        io_uring_prep_fsync(sqe, op->fd, IORING_FSYNC_DATASYNC);
        break;
    case IO_FALLOCATE:
        io_uring_prep_fallocate(sqe, op->fd, op->mode, (off_t)op->offset,
                                (off_t)op->length);
        break;
    }
    io_uring_sqe_set_data(sqe, op);
    u->unsubmitted++;
    return true;
}

static void uring_flush(struct io_engine *engine)
{
    struct uring_engine *u = (struct uring_engine *)engine;
    if (u->unsubmitted) {
        int ret = io_uring_submit(&u->ring);
        if (ret >= 0)
            u->unsubmitted -= QED_MIN(u->unsubmitted, (unsigned)ret);
    }
}

static void uring_submit(struct io_engine *engine, struct io_op *op)
{
    struct uring_engine *u = (struct uring_engine *)engine;

    engine->in_flight++;
    op->next = NULL;
    if (!u->backlog_head && prepare_sqe(u, op))
        return;
    /* Queue full: push what we have and keep the rest in order. */
    uring_flush(engine);
    if (!u->backlog_head && prepare_sqe(u, op))
        return;
    if (u->backlog_tail)
        u->backlog_tail->next = op;
    else
        u->backlog_head = op;
    u->backlog_tail = op;
}

static void drain_backlog(struct uring_engine *u)
{
    while (u->backlog_head && prepare_sqe(u, u->backlog_head)) {
        u->backlog_head = u->backlog_head->next;
        if (!u->backlog_head)
            u->backlog_tail = NULL;
    }
}

static void uring_reap(struct io_engine *engine)
{
    struct uring_engine *u = (struct uring_engine *)engine;
    struct io_uring_cqe *cqe;
    eventfd_t ignored;

    eventfd_read(engine->event_fd, &ignored);
    while (io_uring_peek_cqe(&u->ring, &cqe) == 0) {
        struct io_op *op = io_uring_cqe_get_data(cqe);
        op->result = cqe->res;
        io_uring_cqe_seen(&u->ring, cqe);
        qedi_io_engine_completed(engine, op);
    }
    drain_backlog(u);
    uring_flush(engine);
}

static void uring_destroy(struct io_engine *engine)
{
    struct uring_engine *u = (struct uring_engine *)engine;
    io_uring_queue_exit(&u->ring);
    close(engine->event_fd);
    free(u);
}

static const struct io_engine_ops uring_ops = {
    .name = "io_uring",
    .submit = uring_submit,
    .flush = uring_flush,
    .reap = uring_reap,
    .destroy = uring_destroy,
};

int qedi_io_engine_uring_new(qed_loop *loop, struct io_engine **out, qed_error *err)
{
    struct uring_engine *u = calloc(1, sizeof(*u));
    int ret;

    if (!u)
        return qedi_fail(err, ENOMEM, "out of memory creating io_uring");
    ret = io_uring_queue_init(RING_ENTRIES, &u->ring, 0);
    if (ret < 0) {
        free(u);
        return qedi_fail(err, -ret, "io_uring unavailable: %s", strerror(-ret));
    }
    u->base.event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (u->base.event_fd < 0 ||
        (ret = io_uring_register_eventfd(&u->ring, u->base.event_fd)) < 0) {
        int code = u->base.event_fd < 0 ? errno : -ret;
        if (u->base.event_fd >= 0)
            close(u->base.event_fd);
        io_uring_queue_exit(&u->ring);
        free(u);
        return qedi_fail(err, code, "io_uring eventfd: %s", strerror(code));
    }
    u->base.ops = &uring_ops;
    u->base.loop = loop;
    *out = &u->base;
    return 0;
}
