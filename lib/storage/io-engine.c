/* SPDX-License-Identifier: MIT */
/* The loop's I/O engine for local files.  qed_loop_new makes a bare loop
 * (loop.c) and starts the engine asked for (AUTO: io_uring where the
 * kernel allows it, else threads) in a slot of it; the engine's completions come
 * through a descriptor watch and its submissions leave from a before-wait
 * hook, so the loop never calls into storage. */
#include <errno.h>
#include <stdlib.h>

#include "io-engine.h"

/* What the loop keeps for the engine.  The hook is added once and stays
 * (the loop has no way to remove one): it does nothing without an engine. */
struct engine_slot {
    struct io_engine *engine;
    bool hooked;
};

/* Its address finds the slot. */
static const char engine_key;

void qedi_io_engine_completed(struct io_engine *engine, struct io_op *op)
{
    engine->in_flight--;
    op->complete(op);
}

static int make_engine(qed_loop *loop, enum qed_engine engine,
                       struct io_engine **out, qed_error *err)
{
    int ret;

    if (engine == QED_ENGINE_THREADS)
        return qedi_io_engine_threads_new(loop, out, err);
    ret = qedi_io_engine_uring_new(loop, out, err);
    if (ret == 0 || engine == QED_ENGINE_URING)
        return ret;
    /* Containers often forbid io_uring: fall back quietly. */
    return qedi_io_engine_threads_new(loop, out, err);
}

static void engine_ready(void *opaque, int fd, unsigned events)
{
    struct engine_slot *s = opaque;
    (void)fd;
    (void)events;
    s->engine->ops->reap(s->engine);
}

static void engine_flush(void *opaque)
{
    struct engine_slot *s = opaque;
    if (s->engine)
        s->engine->ops->flush(s->engine);
}

static void slot_destroy(void *opaque)
{
    struct engine_slot *s = opaque;
    if (s->engine) {
        qed_loop_unwatch_fd(s->engine->loop, s->engine->event_fd);
        s->engine->ops->destroy(s->engine);
    }
    free(s);
}

static struct engine_slot *slot_of(qed_loop *loop, qed_error *err)
{
    struct engine_slot *s = qedi_loop_slot(loop, &engine_key);

    if (s)
        return s;
    s = calloc(1, sizeof(*s));
    if (!s || qedi_loop_slot_fill(loop, &engine_key, s, slot_destroy) < 0) {
        free(s);
        qedi_fail(err, ENOMEM, "out of memory creating the I/O engine");
        return NULL;
    }
    return s;
}

static int start(qed_loop *loop, enum qed_engine choice,
                 struct io_engine **out, qed_error *err)
{
    struct engine_slot *s = slot_of(loop, err);
    struct io_engine *engine;
    int ret;

    if (!s)
        return -ENOMEM;
    if (!s->hooked) {
        if (qedi_loop_add_before_wait(loop, engine_flush, s) < 0)
            return qedi_fail(err, ENOMEM, "out of memory creating the I/O "
                            "engine");
        s->hooked = true;
    }
    ret = make_engine(loop, choice, &engine, err);
    if (ret < 0)
        return ret;
    ret = qed_loop_watch_fd(loop, engine->event_fd, QED_LOOP_READ,
                            engine_ready, s);
    if (ret < 0) {
        engine->ops->destroy(engine);
        return qedi_fail(err, -ret, "epoll_ctl: %s", strerror(-ret));
    }
    s->engine = engine;
    *out = engine;
    return 0;
}

int qedi_io_engine_of(qed_loop *loop, struct io_engine **out, qed_error *err)
{
    struct engine_slot *s = qedi_loop_slot(loop, &engine_key);

    if (s && s->engine) {
        *out = s->engine;
        return 0;
    }
    return start(loop, QED_ENGINE_AUTO, out, err);
}

int qed_loop_new(enum qed_engine engine, qed_loop **out, qed_error *err)
{
    struct io_engine *started;
    qed_loop *loop;
    int ret = qedi_loop_new(&loop, err);

    *out = NULL;
    if (ret < 0)
        return ret;
    ret = start(loop, engine, &started, err);
    if (ret < 0) {
        qed_loop_free(loop);
        return ret;
    }
    *out = loop;
    return 0;
}

const char *qed_loop_engine_name(const qed_loop *loop)
{
    const struct engine_slot *s = qedi_loop_slot(loop, &engine_key);
    return s && s->engine ? s->engine->ops->name : "none";
}
