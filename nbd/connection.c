/* SPDX-License-Identifier: MIT */
/* One client connection: non-blocking socket input split into fixed-size
 * headers and payloads, and an output queue flushed as the socket allows.
 * A connection stops reading while it holds too many requests or its
 * budget of bytes (data in flight plus replies not taken), so a client that
 * sends faster than it reads replies holds at most that much memory, and
 * the server at most clients times budget. */
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nbd.h"
#include "proto.h"

#define OUT_INLINE 64

struct nbd_out {
    struct nbd_out *next;
    uint8_t head[OUT_INLINE];
    uint8_t *head_heap;       /* heads longer than OUT_INLINE */
    struct iovec iov[2];
    int iovcnt;
    void *owned;
    size_t owned_extra;       /* owned bytes beyond those sent from it */
};

static void on_socket(void *opaque, int fd, unsigned events);
static void schedule_pending_read(struct nbd_conn *c);

static void free_out(struct nbd_conn *c, struct nbd_out *o)
{
    /* The queue entry itself counts: a flood of small replies is memory
     * too. */
    c->out_bytes -= o->owned_extra + sizeof(*o);
    free(o->head_heap);
    free(o->owned);
    free(o);
}

/* Replies queued, or encrypted bytes the TLS session still holds. */
static bool output_pending(const struct nbd_conn *c)
{
    return c->out_head ||
           (c->tls_state == TLS_ACTIVE && qedi_nbd_tls_unsent(c->tls));
}

static bool wants_input(const struct nbd_conn *c)
{
    if (c->closed || c->phase == PHASE_CLOSING || c->srv->shutting_down)
        return false;
    /* Waiting for a client slot: its GO is answered first. */
    if (c->queue == QUEUE_WAITING)
        return false;
    /* Between STARTTLS and the end of the TLS handshake no byte is read as
     * NBD: what a client (or someone in the middle) sent in plaintext after
     * STARTTLS goes to the TLS handshake, which rejects it. */
    if (c->tls_state == TLS_STARTING || c->tls_state == TLS_HANDSHAKING)
        return false;
    if (c->held)
        return false;
    /* The data of a request already admitted is always read. */
    if (c->payload_need > c->payload_have)
        return true;
    if (c->in_flight >= NBD_MAX_REQUESTS)
        return false;
    return c->buffered + c->out_bytes < c->srv->opts.conn_budget;
}

bool qedi_conn_fits(const struct nbd_conn *c, size_t cost)
{
    size_t holding = c->buffered + c->out_bytes;

    return holding == 0 || (holding < c->srv->opts.conn_budget &&
                            cost <= c->srv->opts.conn_budget - holding);
}

void qedi_conn_update_watch(struct nbd_conn *c)
{
    unsigned events = 0;

    if (c->closed)
        return;
    if (wants_input(c))
        events |= QED_LOOP_READ;
    if (output_pending(c))
        events |= QED_LOOP_WRITE;
    if (c->tls_state == TLS_HANDSHAKING)
        events = qedi_nbd_tls_wants_write(c->tls) ? QED_LOOP_WRITE : QED_LOOP_READ;
    schedule_pending_read(c);
    if (events == c->watched)
        return;
    /* Nothing to wait for: the close logic runs from conn_maybe_finish. */
    if (qed_loop_watch_fd(c->srv->loop, c->fd, events, on_socket, c) == 0)
        c->watched = events;
}

static void destroy(void *opaque)
{
    struct nbd_conn *c = opaque;

    c->srv->live_conns--;
    while (c->out_head) {
        struct nbd_out *o = c->out_head;
        c->out_head = o->next;
        free_out(c, o);
    }
    free(c->payload);
    free(c);
}

/* The connection goes once nothing refers to it: no request in flight, and
 * no callback of its own still running (so the memory is freed from the
 * loop, never under a caller's feet). */
static void maybe_destroy(struct nbd_conn *c)
{
    if (!c->closed || c->in_flight > 0 || c->destroy_scheduled ||
        c->pending_read_scheduled)
        return;
    c->destroy_scheduled = true;
    if (qed_loop_call_soon(c->srv->loop, destroy, c) < 0)
        c->destroy_scheduled = false; /* leaked rather than freed early */
}

void qedi_conn_close(struct nbd_conn *c, bool hard)
{
    if (c->closed)
        return;
    if (!hard && (c->in_flight > 0 || output_pending(c))) {
        /* Answer what is in flight, then close (qedi_conn_request_done and the
         * output path come back here). */
        c->phase = PHASE_CLOSING;
        qedi_conn_update_watch(c);
        return;
    }
    c->closed = true;
    qedi_commands_abandon_payload(c);
    qed_loop_unwatch_fd(c->srv->loop, c->fd);
    if (c->tls) {
        if (c->tls_state == TLS_ACTIVE && !hard)
            qedi_nbd_tls_bye(c->tls);
        qedi_nbd_tls_session_free(c->tls);
        c->tls = NULL;
    }
    close(c->fd);
    c->fd = -1;
    qedi_server_connection_gone(c->srv, c);
    maybe_destroy(c);
}

static void close_if_drained(struct nbd_conn *c)
{
    if (c->phase == PHASE_CLOSING && c->in_flight == 0 && !output_pending(c))
        qedi_conn_close(c, true);
}

void qedi_conn_request_done(struct nbd_conn *c, size_t buffered)
{
    c->in_flight--;
    c->buffered -= buffered;
    if (c->closed) {
        maybe_destroy(c);
        return;
    }
    if (c->srv->shutting_down && c->phase == PHASE_TRANSMISSION)
        c->phase = PHASE_CLOSING;
    close_if_drained(c);
    qedi_conn_update_watch(c);
}

/* ---- output ------------------------------------------------------------------ */

static void begin_tls(struct nbd_conn *c);

/* Sends part of o: plaintext with one sendmsg, or under TLS records
 * encrypted straight from the first buffer into the session's stage.
 * Returns the bytes sent, 0 when the socket is full, -1 when the
 * connection is broken. */
static ssize_t send_some(struct nbd_conn *c, struct nbd_out *o)
{
    ssize_t n;

    if (c->tls_state == TLS_ACTIVE) {
        n = qedi_nbd_tls_send(c->tls, o->iov[0].iov_base, o->iov[0].iov_len);
        if (n == NBD_TLS_AGAIN)
            return 0;
        return n < 0 ? -1 : n;
    }
    struct msghdr msg = { .msg_iov = o->iov, .msg_iovlen = (size_t)o->iovcnt };
    n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0
                                                                         : -1;
    return n;
}

static void flush_output(struct nbd_conn *c)
{
    while (c->out_head) {
        struct nbd_out *o = c->out_head;
        ssize_t n = send_some(c, o);

        if (n == 0)
            break;
        if (n < 0) {
            qedi_conn_close(c, true);
            return;
        }
        c->out_bytes -= (size_t)n;
        c->sent_bytes += (uint64_t)n;
        while (n > 0 && o->iovcnt > 0) {
            size_t take = (size_t)n < o->iov[0].iov_len ? (size_t)n
                                                        : o->iov[0].iov_len;
            o->iov[0].iov_base = (char *)o->iov[0].iov_base + take;
            o->iov[0].iov_len -= take;
            n -= (ssize_t)take;
            if (o->iov[0].iov_len == 0) {
                o->iov[0] = o->iov[1];
                o->iovcnt--;
            }
        }
        if (o->iovcnt > 0)
            continue;
        c->out_head = o->next;
        if (!c->out_head)
            c->out_tail = NULL;
        free_out(c, o);
    }
    /* What the session gathered goes out now (or when writable). */
    if (c->tls_state == TLS_ACTIVE && qedi_nbd_tls_flush(c->tls) == NBD_TLS_FAILED) {
        qedi_conn_close(c, true);
        return;
    }
    /* The STARTTLS reply is out in plaintext: the handshake comes next. */
    if (!c->out_head && c->tls_state == TLS_STARTING) {
        begin_tls(c);
        if (c->closed)
            return;
    }
    close_if_drained(c);
    if (!c->closed)
        qedi_conn_update_watch(c);
}

void qedi_conn_send(struct nbd_conn *c, const void *head, size_t head_len,
               const void *data, size_t data_len, void *owned,
               size_t owned_size)
{
    struct nbd_out *o;

    if (c->closed) {
        free(owned);
        return;
    }
    o = calloc(1, sizeof(*o));
    if (!o) {
        free(owned);
        qedi_conn_close(c, true);
        return;
    }
    if (head_len > OUT_INLINE) {
        o->head_heap = malloc(head_len);
        if (!o->head_heap) {
            free(o);
            free(owned);
            qedi_conn_close(c, true);
            return;
        }
    }
    uint8_t *h = o->head_heap ? o->head_heap : o->head;
    if (head_len) {
        memcpy(h, head, head_len);
        o->iov[o->iovcnt++] = (struct iovec){ h, head_len };
    }
    if (data_len)
        o->iov[o->iovcnt++] = (struct iovec){ (void *)data, data_len };
    if (o->iovcnt == 0) { /* nothing to send */
        free(o->head_heap);
        free(o);
        free(owned);
        return;
    }
    o->owned = owned;
    /* A buffer held until this is sent counts against the output limit,
     * whatever part of it goes out. */
    o->owned_extra = owned && owned_size > data_len ? owned_size - data_len : 0;
    c->out_bytes += head_len + data_len + o->owned_extra + sizeof(*o);
    if (c->out_tail)
        c->out_tail->next = o;
    else
        c->out_head = o;
    c->out_tail = o;
    /* Try at once: most replies go out without waiting for the loop. */
    if (c->out_head == o)
        flush_output(c);
    else
        qedi_conn_update_watch(c);
}

/* ---- input ------------------------------------------------------------------- */

void qedi_conn_expect_header(struct nbd_conn *c, size_t len)
{
    c->header_have = 0;
    c->header_need = len;
}

int qedi_conn_expect_payload(struct nbd_conn *c, size_t len, bool discard)
{
    free(c->payload);
    c->payload = NULL;
    c->payload_have = 0;
    c->payload_need = len;
    c->payload_len = len;
    c->discard_payload = discard;
    if (discard || len == 0)
        return 0;
    c->payload = malloc(len);
    return c->payload ? 0 : -ENOMEM;
}

static void dispatch_header(struct nbd_conn *c)
{
    if (c->phase == PHASE_TRANSMISSION)
        qedi_commands_header(c);
    else
        qedi_handshake_header(c);
}

static void dispatch_payload(struct nbd_conn *c)
{
    if (c->phase == PHASE_TRANSMISSION)
        qedi_commands_payload(c);
    else
        qedi_handshake_payload(c);
}

/* Reads what the socket has; returns false when the connection went. */
static bool read_some(struct nbd_conn *c)
{
    static uint8_t sink[65536];
    void *dst;
    size_t want;
    ssize_t n;

    if (c->payload_need > c->payload_have) {
        want = c->payload_need - c->payload_have;
        if (c->discard_payload) {
            dst = sink;
            want = want < sizeof(sink) ? want : sizeof(sink);
        } else {
            dst = c->payload + c->payload_have;
        }
    } else {
        want = c->header_need - c->header_have;
        dst = c->header + c->header_have;
    }
    if (c->tls_state == TLS_ACTIVE) {
        n = qedi_nbd_tls_recv(c->tls, dst, want);
        if (n == NBD_TLS_AGAIN) {
            errno = EAGAIN;
            n = -1;
        } else if (n < 0) {
            errno = EPROTO;
            n = -1;
        }
    } else {
        n = recv(c->fd, dst, want, MSG_DONTWAIT);
    }
    if (n == 0) {
        /* A WRITE whose data will never come is dropped unanswered. */
        qedi_commands_abandon_payload(c);
        qedi_conn_close(c, false);
        return false;
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return false;
        qedi_commands_abandon_payload(c);
        qedi_conn_close(c, true);
        return false;
    }
    if (c->payload_need > c->payload_have) {
        c->payload_have += (size_t)n;
        if (c->payload_have == c->payload_need) {
            c->payload_need = c->payload_have = 0;
            dispatch_payload(c);
        }
    } else {
        c->header_have += (size_t)n;
        if (c->header_have == c->header_need)
            dispatch_header(c);
    }
    return !c->closed;
}

/* The request held back by the budget fits now (or never will: the
 * connection is closing). */
static bool held_may_go(const struct nbd_conn *c)
{
    return c->held && !c->closed && c->phase == PHASE_TRANSMISSION &&
           !c->srv->shutting_down && qedi_conn_fits(c, c->held_cost);
}

static void read_input(struct nbd_conn *c)
{
    if (held_may_go(c)) {
        qedi_commands_release_held(c);
        if (c->closed)
            return;
    }
    /* A bounded number of reads per wake-up keeps one busy client from
     * starving the others. */
    for (int i = 0; i < 64 && wants_input(c); i++)
        if (!read_some(c))
            break;
    if (!c->closed)
        qedi_conn_update_watch(c);
}

/* ---- TLS ------------------------------------------------------------------------ */

static void drive_handshake(struct nbd_conn *c)
{
    int r = qedi_nbd_tls_handshake(c->tls);

    if (r == NBD_TLS_AGAIN) {
        qedi_conn_update_watch(c);
        return;
    }
    if (r < 0) {
        /* A failed handshake or a client that may not connect: it learns
         * nothing more, not even the export's name. */
        qedi_conn_close(c, true);
        return;
    }
    c->tls_state = TLS_ACTIVE;
    /* The client may have sent its next option with its last handshake
     * message: it may already sit decrypted in the session. */
    read_input(c);
}

/* A Unix socket reports itself writable again only once three quarters of
 * its send buffer have drained: with the default (about 200 KiB) the client
 * is left some 50 KiB to decrypt while the server wakes up and encrypts
 * more, and it waits.  A larger buffer keeps it busy.  (TCP sockets keep
 * the kernel's own tuning.) */
#define TLS_UNIX_SNDBUF (1 << 20)

static void widen_unix_send_buffer(int fd)
{
    struct sockaddr_storage addr;
    socklen_t len = sizeof(addr);
    int size = TLS_UNIX_SNDBUF;

    if (getsockname(fd, (struct sockaddr *)&addr, &len) == 0 &&
        addr.ss_family == AF_UNIX)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
}

static void begin_tls(struct nbd_conn *c)
{
    widen_unix_send_buffer(c->fd);
    c->tls = c->srv->opts.tls ? qedi_nbd_tls_session_new(c->srv->opts.tls, c->fd)
                              : NULL;
    if (!c->tls) {
        qedi_conn_close(c, true);
        return;
    }
    c->tls_state = TLS_HANDSHAKING;
    drive_handshake(c);
}

static void pending_read(void *opaque)
{
    struct nbd_conn *c = opaque;

    c->pending_read_scheduled = false;
    if (c->closed) {
        maybe_destroy(c);
        return;
    }
    read_input(c);
}

/* Readiness of the socket says nothing about records GnuTLS has already
 * decrypted, nor about a held request that fits now that replies went out:
 * either is handled from the loop (never inside the send that freed the
 * room, which may be a command's completion). */
static void schedule_pending_read(struct nbd_conn *c)
{
    bool tls_data = c->tls_state == TLS_ACTIVE && wants_input(c) &&
                    qedi_nbd_tls_pending(c->tls) > 0;

    if (c->pending_read_scheduled || (!tls_data && !held_may_go(c)))
        return;
    if (qed_loop_call_soon(c->srv->loop, pending_read, c) == 0)
        c->pending_read_scheduled = true;
}

static void on_socket(void *opaque, int fd, unsigned events)
{
    struct nbd_conn *c = opaque;
    (void)fd;

    if (c->tls_state == TLS_HANDSHAKING) {
        drive_handshake(c);
        return;
    }
    if (events & QED_LOOP_WRITE) {
        flush_output(c);
        if (c->closed)
            return;
    }
    if ((events & QED_LOOP_HANGUP) && !wants_input(c)) {
        /* The peer is gone and nothing more will be read: epoll would
         * report the hang-up again and again. */
        qedi_commands_abandon_payload(c);
        qedi_conn_close(c, true);
        return;
    }
    if (events & QED_LOOP_READ)
        read_input(c);
}

void qedi_conn_start(struct nbd_server *srv, int fd)
{
    struct nbd_conn *c = calloc(1, sizeof(*c));

    if (!c) {
        close(fd);
        return;
    }
    c->srv = srv;
    c->fd = fd;
    srv->live_conns++;
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    qedi_admission_joined(c);
    qedi_handshake_start(c);
    qedi_conn_update_watch(c);
}
