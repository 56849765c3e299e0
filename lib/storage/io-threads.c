/* SPDX-License-Identifier: MIT */
/* Thread-pool back end, for kernels or containers without io_uring: worker
 * threads run the blocking system calls and hand results back through an
 * eventfd, so the loop thread itself never blocks on the file. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "io-engine.h"

#define WORKERS 8

struct threads_engine {
    struct io_engine base;
    pthread_mutex_t lock;
    pthread_cond_t work_ready;
    struct io_op *todo_head, *todo_tail;
    struct io_op *done_head, *done_tail;
    bool stopping;
    pthread_t workers[WORKERS];
    int nworkers;
};

static void push(struct io_op **head, struct io_op **tail, struct io_op *op)
{
    op->next = NULL;
    if (*tail)
        (*tail)->next = op;
    else
        *head = op;
    *tail = op;
}

static ssize_t run_op(struct io_op *op)
{
    ssize_t r = 0;
    switch (op->kind) {
    case IO_READ:
        r = preadv(op->fd, op->iov, op->iovcnt, (off_t)op->offset);
        break;
    case IO_WRITE:
        r = pwritev(op->fd, op->iov, op->iovcnt, (off_t)op->offset);
        break;
    case IO_SYNC:
        r = fdatasync(op->fd);
        break;
    case IO_FALLOCATE:
        r = fallocate(op->fd, op->mode, (off_t)op->offset, (off_t)op->length);
        break;
    }
    return r < 0 ? -errno : r;
}

static void *worker_main(void *arg)
{
    struct threads_engine *t = arg;

    pthread_mutex_lock(&t->lock);
    for (;;) {
        while (!t->todo_head && !t->stopping)
            pthread_cond_wait(&t->work_ready, &t->lock);
        if (!t->todo_head)
            break;
        struct io_op *op = t->todo_head;
        t->todo_head = op->next;
        if (!t->todo_head)
            t->todo_tail = NULL;
        pthread_mutex_unlock(&t->lock);

        op->result = run_op(op);

        pthread_mutex_lock(&t->lock);
        push(&t->done_head, &t->done_tail, op);
        eventfd_write(t->base.event_fd, 1);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

static void threads_submit(struct io_engine *engine, struct io_op *op)
{
    struct threads_engine *t = (struct threads_engine *)engine;
    engine->in_flight++;
    pthread_mutex_lock(&t->lock);
    push(&t->todo_head, &t->todo_tail, op);
    pthread_cond_signal(&t->work_ready);
    pthread_mutex_unlock(&t->lock);
}

static void threads_flush(struct io_engine *engine)
{
    (void)engine;
}

static void threads_reap(struct io_engine *engine)
{
    struct threads_engine *t = (struct threads_engine *)engine;
    struct io_op *done;
    eventfd_t ignored;

    eventfd_read(engine->event_fd, &ignored);
    pthread_mutex_lock(&t->lock);
    done = t->done_head;
    t->done_head = t->done_tail = NULL;
    pthread_mutex_unlock(&t->lock);
    while (done) {
        struct io_op *next = done->next;
        qedi_io_engine_completed(engine, done);
        done = next;
    }
}

static void threads_destroy(struct io_engine *engine)
{
    struct threads_engine *t = (struct threads_engine *)engine;
    pthread_mutex_lock(&t->lock);
    t->stopping = true;
    pthread_cond_broadcast(&t->work_ready);
    pthread_mutex_unlock(&t->lock);
    for (int i = 0; i < t->nworkers; i++)
        pthread_join(t->workers[i], NULL);
    pthread_cond_destroy(&t->work_ready);
    pthread_mutex_destroy(&t->lock);
    close(engine->event_fd);
    free(t);
}

static const struct io_engine_ops threads_ops = {
    .name = "threads",
    .submit = threads_submit,
    .flush = threads_flush,
    .reap = threads_reap,
    .destroy = threads_destroy,
};

int qedi_io_engine_threads_new(qed_loop *loop, struct io_engine **out,
                          qed_error *err)
{
    struct threads_engine *t = calloc(1, sizeof(*t));

    if (!t)
        return qedi_fail(err, ENOMEM, "out of memory creating thread pool");
    t->base.event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (t->base.event_fd < 0) {
        int code = errno;
        free(t);
        return qedi_fail(err, code, "eventfd: %s", strerror(code));
    }
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->work_ready, NULL);
    t->base.ops = &threads_ops;
    t->base.loop = loop;
    for (int i = 0; i < WORKERS; i++) {
        if (pthread_create(&t->workers[i], NULL, worker_main, t) != 0)
            break;
        t->nworkers++;
    }
    if (t->nworkers == 0) {
        threads_destroy(&t->base);
        return qedi_fail(err, EAGAIN, "cannot start I/O threads");
    }
    *out = &t->base;
    return 0;
}
