/* SPDX-License-Identifier: MIT */
/* The event loop: epoll for file descriptors, deferred tasks and timers.  It
 * knows nothing of what runs on it: the storage layer keeps its I/O engine
 * in a slot of the loop and hooks it in through a descriptor watch and a
 * before-wait hook. */
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

/* Queues task to run from the loop (never from inside this call). */
void qedi_loop_defer(qed_loop *loop, struct loop_task *task);
/* Defers a plain function call; allocates a small node.  Returns -ENOMEM. */
int qedi_loop_defer_call(qed_loop *loop, void (*fn)(void *), void *arg);

/* A bare loop: no slot is filled and no hook is set.  qed_loop_new (the
 * storage layer's) makes one and puts its I/O engine into it. */
int qedi_loop_new(qed_loop **out, qed_error *err);

/* Per-loop state of a layer above, found by key (the address of an object
 * of that layer): NULL until qedi_loop_slot_fill.  Slots are destroyed, the last
 * filled first, when the loop is freed, after its queued tasks ran and
 * before its watches go.  Returns 0 or -ENOMEM. */
void *qedi_loop_slot(const qed_loop *loop, const void *key);
int qedi_loop_slot_fill(qed_loop *loop, const void *key, void *data,
                   void (*destroy)(void *data));

/* Calls fn(opaque) whenever the loop is about to wait for events and before
 * qed_loop_run returns, so work queued meanwhile (an engine's submissions)
 * reaches the kernel.  Hooks live as long as the loop.  Returns 0 or
 * -ENOMEM. */
int qedi_loop_add_before_wait(qed_loop *loop, void (*fn)(void *opaque),
                         void *opaque);

/* Milliseconds on a monotonic clock. */
uint64_t qedi_loop_now_ms(void);
/* True while qed_loop_run runs, that is inside a callback of the loop. */
bool qedi_loop_running(const qed_loop *loop);

#endif
