/* SPDX-License-Identifier: MIT */
/* Admission: which connections the server spends its slots on.
 *
 * A connection first negotiates (greeting, options, TLS handshake).  That
 * costs a descriptor and a few hundred bytes, and proves nothing about the
 * peer: a socket that connects and never speaks looks the same.  So
 * negotiating connections do not take client slots (-e): they sit in their
 * own queue, oldest first, capped by max_negotiating and by the handshake
 * limit.  When the cap is reached, or descriptors run out, the connection
 * negotiating longest is dropped for the newcomer: an attacker holding
 * silent sockets, even reconnecting each one dropped, can delay an honest
 * client only by as many connections as the cap while the client
 * negotiates, which takes it milliseconds.
 *
 * A client slot is claimed when a connection asks to start transmission
 * (NBD_OPT_GO or NBD_OPT_EXPORT_NAME).  When all are taken it waits, as it
 * would in the listen backlog of a server that stops accepting, but still
 * counted among the negotiating connections so waiting clients cannot
 * exhaust descriptors either.  Both queues are ordered by arrival, so the
 * handshake limit needs one timer for the whole server. */
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "nbd.h"

/* Time between two notices; the ones in between are counted. */
#define NOTICE_INTERVAL_MS 10000u

static void list_push(struct nbd_conn_list *l, struct nbd_conn *c)
{
    c->queue_next = NULL;
    c->queue_prev = l->tail;
    if (l->tail)
        l->tail->queue_next = c;
    else
        l->head = c;
    l->tail = c;
    l->count++;
}

static void list_remove(struct nbd_conn_list *l, struct nbd_conn *c)
{
    if (c->queue_prev)
        c->queue_prev->queue_next = c->queue_next;
    else
        l->head = c->queue_next;
    if (c->queue_next)
        c->queue_next->queue_prev = c->queue_prev;
    else
        l->tail = c->queue_prev;
    c->queue_prev = c->queue_next = NULL;
    l->count--;
}

static struct nbd_conn_list *list_of(struct nbd_conn *c)
{
    switch (c->queue) {
    case QUEUE_NEGOTIATING:
        return &c->srv->negotiating;
    case QUEUE_WAITING:
        return &c->srv->waiting;
    default:
        return NULL;
    }
}

static void leave_queue(struct nbd_conn *c)
{
    struct nbd_conn_list *l = list_of(c);

    if (l)
        list_remove(l, c);
    c->queue = QUEUE_NONE;
}

uint64_t qedi_nbd_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- the handshake limit ------------------------------------------------------ */

static void handshake_expired(void *opaque);

static void arm_handshake_timer(struct nbd_server *srv)
{
    const struct nbd_conn *oldest = srv->negotiating.head;
    uint64_t now = qedi_nbd_now_ms(), due;

    if (srv->handshake_timer || !oldest || !srv->opts.handshake_limit_ms)
        return;
    due = oldest->started_ms + srv->opts.handshake_limit_ms;
    srv->handshake_timer = qed_loop_add_timer(srv->loop,
                                              due > now ? due - now : 0,
                                              handshake_expired, srv);
}

/* Drops every connection that has negotiated for longer than the limit;
 * they are the oldest, so they are at the head. */
static void handshake_expired(void *opaque)
{
    struct nbd_server *srv = opaque;
    uint64_t now = qedi_nbd_now_ms();
    struct nbd_conn *c;

    srv->handshake_timer = 0;
    while ((c = srv->negotiating.head) &&
           c->started_ms + srv->opts.handshake_limit_ms <= now)
        qedi_conn_close(c, true);
    arm_handshake_timer(srv);
}

/* ---- joining and leaving ------------------------------------------------------ */

void qedi_admission_joined(struct nbd_conn *c)
{
    c->started_ms = qedi_nbd_now_ms();
    c->queue = QUEUE_NEGOTIATING;
    list_push(&c->srv->negotiating, c);
    arm_handshake_timer(c->srv);
}

static void resume_waiting(void *opaque);

static void schedule_resume(struct nbd_server *srv)
{
    if (srv->waiting.head && !srv->resume_timer)
        srv->resume_timer = qed_loop_add_timer(srv->loop, 0, resume_waiting, srv);
}

/* Slots freed: the clients waiting longest get them, from the loop (never
 * from inside the close that freed the slot; a timer, unlike a deferred
 * call, is cancelled when the server goes first). */
static void resume_waiting(void *opaque)
{
    struct nbd_server *srv = opaque;
    struct nbd_conn *c;

    srv->resume_timer = 0;
    while ((c = srv->waiting.head) && !srv->shutting_down &&
           srv->nclients < srv->opts.max_connections) {
        leave_queue(c);
        c->has_slot = true;
        srv->nclients++;
        srv->had_client = true;
        qedi_handshake_resume(c);
    }
}

static void last_client_left(void *opaque)
{
    struct nbd_server *srv = opaque;

    srv->last_client_timer = 0;
    if (srv->nclients == 0 && !srv->waiting.head)
        qedi_nbd_server_shutdown(srv);
}

void qedi_admission_left(struct nbd_conn *c)
{
    struct nbd_server *srv = c->srv;

    leave_queue(c);
    if (!c->has_slot)
        return;
    c->has_slot = false;
    srv->nclients--;
    schedule_resume(srv);
    /* Without -t the server ends with its last client: connections still
     * negotiating are not clients and do not keep it alive. */
    if (!srv->opts.persistent && srv->nclients == 0 && !srv->waiting.head &&
        !srv->last_client_timer)
        srv->last_client_timer = qed_loop_add_timer(srv->loop, 0,
                                                    last_client_left, srv);
}

bool qedi_admission_claim_slot(struct nbd_conn *c)
{
    struct nbd_server *srv = c->srv;

    if (c->has_slot)
        return true;
    leave_queue(c);
    if (srv->nclients < srv->opts.max_connections && !srv->waiting.head) {
        c->has_slot = true;
        srv->nclients++;
        srv->had_client = true;
        return true;
    }
    c->queue = QUEUE_WAITING;
    list_push(&srv->waiting, c);
    return false;
}

/* ---- making room ------------------------------------------------------------------ */

static struct nbd_conn *longest_negotiating(struct nbd_server *srv)
{
    struct nbd_conn *a = srv->negotiating.head, *b = srv->waiting.head;

    if (!a || !b)
        return a ? a : b;
    return b->started_ms < a->started_ms ? b : a;
}

bool qedi_admission_make_room(struct nbd_server *srv, bool out_of_descriptors)
{
    struct nbd_conn *victim;

    if (!out_of_descriptors &&
        srv->negotiating.count + srv->waiting.count < srv->opts.max_negotiating)
        return true;
    victim = longest_negotiating(srv);
    if (!victim)
        return false;
    qedi_conn_close(victim, true);
    return true;
}

static void cancel_timer(struct nbd_server *srv, uint64_t *id)
{
    if (*id)
        qed_loop_cancel_timer(srv->loop, *id);
    *id = 0;
}

void qedi_admission_free(struct nbd_server *srv)
{
    cancel_timer(srv, &srv->handshake_timer);
    cancel_timer(srv, &srv->resume_timer);
    cancel_timer(srv, &srv->last_client_timer);
}

/* ---- notices --------------------------------------------------------------------- */

void qedi_server_notice(struct nbd_server *srv, const char *fmt, ...)
{
    uint64_t now = qedi_nbd_now_ms();
    char line[512];
    size_t len;
    va_list ap;

    if (!srv->opts.notice)
        return;
    if (srv->last_notice_ms && now - srv->last_notice_ms < NOTICE_INTERVAL_MS) {
        srv->notices_held++;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    len = strlen(line);
    if (srv->notices_held && len < sizeof(line))
        snprintf(line + len, sizeof(line) - len,
                 " (%u more times since the last notice)", srv->notices_held);
    srv->notices_held = 0;
    srv->last_notice_ms = now;
    srv->opts.notice(srv->opts.notice_opaque, line);
}
