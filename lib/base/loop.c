/* SPDX-License-Identifier: MIT */
/* The event loop behind every image: epoll for descriptors (the I/O engine's
 * completion fd and any server sockets), deferred tasks and timers.  What a
 * layer above keeps per loop (the I/O engine) sits in slots the loop only
 * destroys. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"

struct fd_watch {
    int fd;
    unsigned events;
    qed_fd_callback *cb;
    void *opaque;
};

struct timer {
    uint64_t id;
    uint64_t due_ms;
    qed_timer_callback *cb;
    void *opaque;
    struct timer *next;
};

struct deferred_call {
    struct loop_task task;
    void (*fn)(void *);
    void *arg;
};

struct slot {
    const void *key;
    void *data;
    void (*destroy)(void *data);
    struct slot *next;
};

struct wait_hook {
    void (*fn)(void *opaque);
    void *opaque;
    struct wait_hook *next;
};

struct qed_loop {
    int epoll_fd;
    struct slot *slots;           /* last filled first */
    struct wait_hook *wait_hooks; /* in the order they were added */
    struct loop_task *tasks_head, *tasks_tail;
    /* Indexed by descriptor: a server with thousands of sockets finds the
     * watch of each event without a search. */
    struct fd_watch **watches;
    size_t nwatches;      /* slots in watches[] */
    struct timer *timers; /* sorted by due time */
    uint64_t next_timer_id;
    unsigned depth;       /* qed_loop_run calls in progress */
};

uint64_t qedi_loop_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int qedi_loop_new(qed_loop **out, qed_error *err)
{
    qed_loop *loop = calloc(1, sizeof(*loop));
    int ret;

    *out = NULL;
    if (!loop)
        return qedi_fail(err, ENOMEM, "out of memory creating the event loop");
    loop->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epoll_fd < 0) {
        ret = qedi_fail(err, errno, "epoll_create1: %s", strerror(errno));
        free(loop);
        return ret;
    }
    loop->next_timer_id = 1;
    *out = loop;
    return 0;
}

static void destroy_slots(qed_loop *loop)
{
    while (loop->slots) {
        struct slot *s = loop->slots;
        loop->slots = s->next;
        s->destroy(s->data);
        free(s);
    }
}

void qed_loop_free(qed_loop *loop)
{
    if (!loop)
        return;
    /* Deferred calls still queued belong to nobody now. */
    while (loop->tasks_head) {
        struct loop_task *t = loop->tasks_head;
        loop->tasks_head = t->next;
        t->queued = false;
        t->run(t);
    }
    destroy_slots(loop);
    while (loop->wait_hooks) {
        struct wait_hook *h = loop->wait_hooks;
        loop->wait_hooks = h->next;
        free(h);
    }
    for (size_t i = 0; i < loop->nwatches; i++)
        free(loop->watches[i]);
    free(loop->watches);
    while (loop->timers) {
        struct timer *t = loop->timers;
        loop->timers = t->next;
        free(t);
    }
    close(loop->epoll_fd);
    free(loop);
}

void *qedi_loop_slot(const qed_loop *loop, const void *key)
{
    for (const struct slot *s = loop->slots; s; s = s->next)
        if (s->key == key)
            return s->data;
    return NULL;
}

int qedi_loop_slot_fill(qed_loop *loop, const void *key, void *data,
                   void (*destroy)(void *data))
{
    struct slot *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->key = key;
    s->data = data;
    s->destroy = destroy;
    s->next = loop->slots;
    loop->slots = s;
    return 0;
}

int qedi_loop_add_before_wait(qed_loop *loop, void (*fn)(void *opaque),
                         void *opaque)
{
    struct wait_hook *h = calloc(1, sizeof(*h)), **tail;
    if (!h)
        return -ENOMEM;
    h->fn = fn;
    h->opaque = opaque;
    for (tail = &loop->wait_hooks; *tail; tail = &(*tail)->next)
        ;
    *tail = h;
    return 0;
}

static void run_wait_hooks(qed_loop *loop)
{
    for (struct wait_hook *h = loop->wait_hooks; h; h = h->next)
        h->fn(h->opaque);
}

void qedi_loop_defer(qed_loop *loop, struct loop_task *task)
{
    if (task->queued)
        return;
    task->queued = true;
    task->next = NULL;
    if (loop->tasks_tail)
        loop->tasks_tail->next = task;
    else
        loop->tasks_head = task;
    loop->tasks_tail = task;
}

static void run_deferred_call(struct loop_task *task)
{
    struct deferred_call *call = (struct deferred_call *)task;
    call->fn(call->arg);
    free(call);
}

int qedi_loop_defer_call(qed_loop *loop, void (*fn)(void *), void *arg)
{
    struct deferred_call *call = calloc(1, sizeof(*call));
    if (!call)
        return -ENOMEM;
    call->task.run = run_deferred_call;
    call->fn = fn;
    call->arg = arg;
    qedi_loop_defer(loop, &call->task);
    return 0;
}

int qed_loop_call_soon(qed_loop *loop, qed_timer_callback *cb, void *opaque)
{
    return qedi_loop_defer_call(loop, cb, opaque);
}

/* Runs the tasks queued before this call; tasks they queue wait for the next
 * round so a chain of deferrals cannot starve descriptors. */
static int run_tasks(qed_loop *loop)
{
    struct loop_task *last = loop->tasks_tail;
    int n = 0;

    while (loop->tasks_head) {
        struct loop_task *t = loop->tasks_head;
        loop->tasks_head = t->next;
        if (!loop->tasks_head)
            loop->tasks_tail = NULL;
        t->queued = false;
        t->run(t);
        n++;
        if (t == last)
            break;
    }
    return n;
}

static struct fd_watch *find_watch(qed_loop *loop, int fd)
{
    if (fd < 0 || (size_t)fd >= loop->nwatches)
        return NULL;
    return loop->watches[fd];
}

/* Makes room in the table for descriptor fd. */
static int grow_watches(qed_loop *loop, int fd)
{
    size_t want = loop->nwatches ? loop->nwatches : 64;
    struct fd_watch **table;

    while (want <= (size_t)fd)
        want *= 2;
    if (want == loop->nwatches)
        return 0;
    table = realloc(loop->watches, want * sizeof(*table));
    if (!table)
        return -ENOMEM;
    memset(table + loop->nwatches, 0,
           (want - loop->nwatches) * sizeof(*table));
    loop->watches = table;
    loop->nwatches = want;
    return 0;
}

static uint32_t epoll_events_of(unsigned events)
{
    return ((events & QED_LOOP_READ) ? EPOLLIN : 0u) |
           ((events & QED_LOOP_WRITE) ? EPOLLOUT : 0u);
}

int qed_loop_watch_fd(qed_loop *loop, int fd, unsigned events,
                      qed_fd_callback *cb, void *opaque)
{
    struct fd_watch *w = find_watch(loop, fd);
    struct epoll_event ev = { .events = epoll_events_of(events) };
    int op = w ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;

    if (fd < 0)
        return -EBADF;
    if (!w) {
        if (grow_watches(loop, fd) < 0)
            return -ENOMEM;
        w = calloc(1, sizeof(*w));
        if (!w)
            return -ENOMEM;
    }
    ev.data.u64 = (uint64_t)fd;
    if (epoll_ctl(loop->epoll_fd, op, fd, &ev) < 0) {
        int ret = -errno;
        if (op == EPOLL_CTL_ADD)
            free(w);
        return ret;
    }
    w->fd = fd;
    w->events = events;
    w->cb = cb;
    w->opaque = opaque;
    loop->watches[fd] = w;
    return 0;
}

int qed_loop_unwatch_fd(qed_loop *loop, int fd)
{
    struct fd_watch *w = find_watch(loop, fd);

    if (!w)
        return -ENOENT;
    loop->watches[fd] = NULL;
    free(w);
    epoll_ctl(loop->epoll_fd, EPOLL_CTL_DEL, fd, NULL);
    return 0;
}

uint64_t qed_loop_add_timer(qed_loop *loop, uint64_t delay_ms,
                            qed_timer_callback *cb, void *opaque)
{
    struct timer *t = calloc(1, sizeof(*t));
    struct timer **p;

    if (!t)
        return 0;
    t->id = loop->next_timer_id++;
    t->due_ms = qedi_loop_now_ms() + delay_ms;
    t->cb = cb;
    t->opaque = opaque;
    for (p = &loop->timers; *p && (*p)->due_ms <= t->due_ms; p = &(*p)->next)
        ;
    t->next = *p;
    *p = t;
    return t->id;
}

void qed_loop_cancel_timer(qed_loop *loop, uint64_t id)
{
    for (struct timer **p = &loop->timers; *p; p = &(*p)->next) {
        if ((*p)->id == id) {
            struct timer *t = *p;
            *p = t->next;
            free(t);
            return;
        }
    }
}

static int fire_timers(qed_loop *loop)
{
    uint64_t now = qedi_loop_now_ms();
    int n = 0;

    while (loop->timers && loop->timers->due_ms <= now) {
        struct timer *t = loop->timers;
        loop->timers = t->next;
        t->cb(t->opaque);
        free(t);
        n++;
    }
    return n;
}

static int wait_timeout(qed_loop *loop, int timeout_ms)
{
    if (loop->tasks_head)
        return 0;
    if (loop->timers) {
        uint64_t now = qedi_loop_now_ms();
        uint64_t due = loop->timers->due_ms;
        int until = due <= now ? 0 : (int)QED_MIN(due - now, (uint64_t)INT32_MAX);
        if (timeout_ms < 0 || until < timeout_ms)
            return until;
    }
    return timeout_ms;
}

static int dispatch_events(qed_loop *loop, struct epoll_event *events, int n)
{
    for (int i = 0; i < n; i++) {
        struct fd_watch *w = find_watch(loop, (int)events[i].data.u64);
        if (!w)
            continue;
        unsigned ev = 0;
        if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
            ev |= QED_LOOP_READ;
        if (events[i].events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
            ev |= QED_LOOP_WRITE;
        if (events[i].events & (EPOLLHUP | EPOLLERR))
            ev |= QED_LOOP_HANGUP;
        w->cb(w->opaque, w->fd, ev);
    }
    return n;
}

bool qedi_loop_running(const qed_loop *loop)
{
    return loop->depth > 0;
}

static int run_once(qed_loop *loop, int timeout_ms)
{
    struct epoll_event events[64];
    int n = run_tasks(loop);
    int got;

    run_wait_hooks(loop);
    got = epoll_wait(loop->epoll_fd, events, (int)QED_ARRAY_SIZE(events),
                     n > 0 ? 0 : wait_timeout(loop, timeout_ms));
    if (got < 0 && errno != EINTR)
        return -errno;
    if (got > 0)
        n += dispatch_events(loop, events, got);
    n += fire_timers(loop);
    n += run_tasks(loop);
    run_wait_hooks(loop);
    return n;
}

int qed_loop_get_fd(const qed_loop *loop)
{
    return loop->epoll_fd;
}

int qed_loop_get_timeout(qed_loop *loop)
{
    /* What the layers above queued (io_uring submissions) goes out before
     * the caller sleeps, as it does before qed_loop_run's wait. */
    run_wait_hooks(loop);
    return wait_timeout(loop, -1);
}

int qed_loop_dispatch(qed_loop *loop)
{
    return qed_loop_run(loop, 0);
}

/* The depth tells callbacks apart from the code that runs the loop: a
 * synchronous call made from a callback would run the loop inside itself
 * and wait for work queued behind the callback (sync wrappers refuse it). */
int qed_loop_run(qed_loop *loop, int timeout_ms)
{
    int n;

    loop->depth++;
    n = run_once(loop, timeout_ms);
    loop->depth--;
    return n;
}
