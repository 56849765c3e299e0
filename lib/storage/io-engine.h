/* SPDX-License-Identifier: MIT */
/* The engines that run a local file's operations: io_uring (io-uring.c) or
 * a thread pool (io-threads.c).  One engine serves every file of a loop; it
 * lives in a slot of the loop and reaches it only through a descriptor
 * watch (completions) and a before-wait hook (submissions), so the loop
 * knows nothing of it. */
#ifndef QED_LIB_IO_ENGINE_H
#define QED_LIB_IO_ENGINE_H

#include "io-op.h"

struct io_engine;

struct io_engine_ops {
    const char *name;
    /* Accepts op; the completion comes later. */
    void (*submit)(struct io_engine *engine, struct io_op *op);
    /* Pushes accepted ops to the kernel; called before the loop sleeps. */
    void (*flush)(struct io_engine *engine);
    /* Reaps completions; called when the engine's event fd is readable. */
    void (*reap)(struct io_engine *engine);
    void (*destroy)(struct io_engine *engine);
};

struct io_engine {
    const struct io_engine_ops *ops;
    qed_loop *loop;
    int event_fd;       /* readable when completions wait */
    unsigned in_flight; /* ops accepted and not yet completed */
};

int qedi_io_engine_uring_new(qed_loop *loop, struct io_engine **out, qed_error *err);
int qedi_io_engine_threads_new(qed_loop *loop, struct io_engine **out,
                          qed_error *err);
/* Used by engines: hands a finished op back on the loop thread. */
void qedi_io_engine_completed(struct io_engine *engine, struct io_op *op);

/* The loop's engine, started on first use when qed_loop_new did not start
 * it (a loop made by qedi_loop_new): the choice is then AUTO.  Returns 0 or a
 * negative errno with err filled. */
int qedi_io_engine_of(qed_loop *loop, struct io_engine **out, qed_error *err);

#endif
