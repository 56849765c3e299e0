/* SPDX-License-Identifier: MIT */
/* The event loop: epoll for file descriptors, deferred tasks, timers, and the
 * completion side of the file I/O engine. */
#ifndef QED_LIB_LOOP_H
#define QED_LIB_LOOP_H

#include "util.h"

/* A task the loop runs on its next iteration.  Embedded in the object that
 * needs it, so deferring never allocates. */
struct loop_task {
    struct loop_task *next;
    void (*run)(struct loop_task *task);
    bool queued;
};

struct io_engine;

/* Queues task to run from the loop (never from inside this call). */
void loop_defer(qed_loop *loop, struct loop_task *task);
/* Defers a plain function call; allocates a small node.  Returns -ENOMEM. */
int loop_defer_call(qed_loop *loop, void (*fn)(void *), void *arg);
struct io_engine *loop_io_engine(qed_loop *loop);
/* Milliseconds on a monotonic clock. */
uint64_t loop_now_ms(void);
/* True while qed_loop_run runs, that is inside a callback of the loop. */
bool loop_running(const qed_loop *loop);

#endif
