/* SPDX-License-Identifier: MIT */
/* The NBD storage driver: an image that lives inside an NBD export, named
 * by an NBD URI (nbd://, nbds://, nbd+unix://, nbds+unix://, with the TLS
 * query parameters libnbd documents).  libnbd does the protocol; its
 * asynchronous calls run on the image's loop: the connection's socket is
 * watched there and libnbd is told when it is ready, so any number of
 * requests are in flight without a thread.
 *
 * libnbd calls a completion callback with its handle locked, where no
 * libnbd call may be made; the engine's callback would make some (its next
 * request).  So completions are queued and their callbacks run once libnbd
 * has returned.
 *
 * A lost connection is made again: the commands it took (reads, writes,
 * zeroing, flushes, which may all be repeated) wait and are sent again on
 * the new one, after 0.1, 0.2, 0.4 ... 3.2 s (NBD_RECONNECT_ATTEMPTS
 * attempts, about 13 s in all).  Only when every attempt failed do they
 * fail, with EIO; the next request tries again.  A connection on which
 * no command has been answered for NBD_STALL_MS while some wait is cut, and
 * the commands it held fail with ETIMEDOUT (a server that stalls would
 * stall them again).
 *
 * An export has a fixed size: the storage cannot grow, so an image that
 * needs a new cluster past the export's end gets ENOSPC. */
#include <errno.h>
#include <fcntl.h>
#include <libnbd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "storage.h"

/* The largest request sent when the server names no maximum (the NBD
 * protocol's recommended limit). */
#define NBD_DEFAULT_MAX_REQUEST (32u * 1024 * 1024)
#define NBD_RECONNECT_ATTEMPTS 8
#define NBD_RECONNECT_FIRST_MS 100u
#define NBD_RECONNECT_MAX_MS 3200u
#define NBD_STALL_MS 30000u
#define NBD_WATCHDOG_MS 1000u

struct nbd_storage;

/* One engine request: one or more NBD commands (a large one is split, a
 * vectored one goes through a bounce buffer). */
struct nbd_request {
    struct nbd_storage *st;
    io_callback *cb;
    void *opaque;
    unsigned parts;          /* commands not yet completed */
    int ret;
    /* reads into a bounce buffer, scattered into iov when done: a copy of
     * the caller's vector, whose array lives only during the call */
    char *bounce;
    struct iovec *iov;
    int iovcnt;
    struct nbd_request *next_done;
};

enum part_kind { PART_READ, PART_WRITE, PART_ZERO, PART_FLUSH };

/* One NBD command of a request, kept until it is answered so that it can
 * be sent again on a new connection. */
struct nbd_part {
    struct nbd_part *next;   /* in a queue of the storage */
    struct nbd_request *r;
    enum part_kind kind;
    char *buf;
    uint64_t len, offset;
};

struct part_queue {
    struct nbd_part *head, **tail;
};

enum conn_state {
    CONN_READY,              /* commands go out */
    CONN_CONNECTING,         /* a new connection is being negotiated */
    CONN_WAITING,            /* the next attempt is on a timer */
    CONN_FAILED,             /* every attempt failed; the next request
                                starts again */
};

struct nbd_storage {
    struct io_file base;
    char *uri;
    struct nbd_handle *h;
    uint64_t size;
    uint64_t max_request;
    bool can_flush, can_zero;
    int fd;
    unsigned watched;            /* QED_LOOP_* events watched now */
    enum conn_state state;
    unsigned attempt;            /* reconnection attempts made */
    uint64_t timer;
    unsigned in_flight;          /* commands libnbd holds */
    uint64_t progress_ms;        /* last answer, or first command sent */
    uint64_t watchdog;           /* timer while commands are in flight */
    bool stalled;                /* cut for not answering */
    struct part_queue waiting;   /* for a connection */
    struct part_queue lost;      /* taken by a connection that died */
    struct nbd_request *done;    /* completed, callbacks not yet run */
    struct nbd_request **done_tail;
};

static struct nbd_storage *storage_of(struct io_file *file)
{
    return (struct nbd_storage *)file;
}

static void queue_init(struct part_queue *q)
{
    q->head = NULL;
    q->tail = &q->head;
}

static void queue_push(struct part_queue *q, struct nbd_part *p)
{
    p->next = NULL;
    *q->tail = p;
    q->tail = &p->next;
}

static struct nbd_part *queue_take_all(struct part_queue *q)
{
    struct nbd_part *all = q->head;
    queue_init(q);
    return all;
}

/* ---- the socket on the loop -------------------------------------------------- */

static void on_socket(void *opaque, int fd, unsigned events);

static void unwatch(struct nbd_storage *st)
{
    if (st->watched)
        qed_loop_unwatch_fd(st->base.loop, st->fd);
    st->watched = 0;
}

/* libnbd says which way it wants the socket; the watch follows. */
static void update_watch(struct nbd_storage *st)
{
    unsigned dir = nbd_aio_get_direction(st->h), want = 0;

    if (dir & LIBNBD_AIO_DIRECTION_READ)
        want |= QED_LOOP_READ;
    if (dir & LIBNBD_AIO_DIRECTION_WRITE)
        want |= QED_LOOP_WRITE;
    if (want == st->watched)
        return;
    if (want == 0)
        unwatch(st);
    else if (qed_loop_watch_fd(st->base.loop, st->fd, want, on_socket, st) == 0)
        st->watched = want;
}

/* Scatters a bounced read and reports: now (from the loop, libnbd done),
 * or later when still inside the call that submitted the request. */
static void finish_request(struct nbd_request *r, bool now)
{
    if (r->bounce && r->iov && r->ret == 0)
        qedi_iov_from_buf(r->iov, r->iovcnt, r->bounce,
                          qedi_iov_size(r->iov, r->iovcnt));
    free(r->bounce);
    free(r->iov);
    if (now)
        r->cb(r->opaque, r->ret);
    else
        qedi_storage_complete_later(&r->st->base, r->cb, r->opaque, r->ret);
    free(r);
}

static void run_completions(struct nbd_storage *st, bool now)
{
    struct nbd_request *r;

    while ((r = st->done) != NULL) {
        st->done = r->next_done;
        if (!st->done)
            st->done_tail = &st->done;
        finish_request(r, now);
    }
}

/* One of the request's parts ended (error: a positive errno or 0); with
 * the last, the request is done. */
static void request_part_done(struct nbd_request *r, int error)
{
    struct nbd_storage *st = r->st;

    if (error && r->ret == 0)
        r->ret = -error;
    if (--r->parts == 0) {
        r->next_done = NULL;
        *st->done_tail = r;
        st->done_tail = &r->next_done;
    }
}

static void part_finished(struct nbd_part *p, int error)
{
    struct nbd_request *r = p->r;

    free(p);
    request_part_done(r, error);
}

/* ---- connections ------------------------------------------------------------------ */

static void submit_part(struct nbd_storage *st, struct nbd_part *p);
static void start_connecting(void *opaque);

static bool connection_lost_errno(int e)
{
    return e == ENOTCONN || e == ECONNRESET || e == EPIPE || e == ESHUTDOWN ||
           e == ECONNABORTED || e == ECONNREFUSED;
}

static void fail_waiting(struct nbd_storage *st, int error)
{
    struct nbd_part *p = queue_take_all(&st->waiting), *next;

    for (; p; p = next) {
        next = p->next;
        part_finished(p, error);
    }
}

/* The next attempt after a growing pause, or the end of the attempts. */
static void retry_later(struct nbd_storage *st)
{
    unsigned ms = NBD_RECONNECT_FIRST_MS << (st->attempt < 6 ? st->attempt : 6);

    if (ms > NBD_RECONNECT_MAX_MS)
        ms = NBD_RECONNECT_MAX_MS;
    if (st->attempt >= NBD_RECONNECT_ATTEMPTS) {
        st->state = CONN_FAILED;
        fail_waiting(st, EIO);
        return;
    }
    st->attempt++;
    st->state = CONN_WAITING;
    st->timer = qed_loop_add_timer(st->base.loop, ms, start_connecting, st);
    if (!st->timer) {
        st->state = CONN_FAILED;
        fail_waiting(st, ENOMEM);
    }
}

static void connection_died(struct nbd_storage *st)
{
    struct nbd_part *p = queue_take_all(&st->lost), *next;

    unwatch(st);
    for (; p; p = next) {
        next = p->next;
        queue_push(&st->waiting, p);
    }
    st->stalled = false;
    st->in_flight = 0;
    st->attempt = 0;
    retry_later(st);
}

/* The new connection must lead to the same export. */
static void connection_ready(struct nbd_storage *st)
{
    struct nbd_part *p, *next;

    if (nbd_get_size(st->h) != (int64_t)st->size) {
        st->state = CONN_FAILED;
        fail_waiting(st, EIO);
        return;
    }
    st->state = CONN_READY;
    st->attempt = 0;
    for (p = queue_take_all(&st->waiting); p; p = next) {
        next = p->next;
        submit_part(st, p);
    }
}

static void start_connecting(void *opaque)
{
    struct nbd_storage *st = opaque;

    st->timer = 0;
    unwatch(st);
    if (st->h)
        nbd_close(st->h);
    st->h = nbd_create();
    if (!st->h) {
        retry_later(st);
        return;
    }
    nbd_set_request_structured_replies(st->h, false);
    if (nbd_aio_connect_uri(st->h, st->uri) < 0 ||
        (st->fd = nbd_aio_get_fd(st->h)) < 0) {
        retry_later(st);
        return;
    }
    st->state = CONN_CONNECTING;
    update_watch(st);
}

/* After libnbd ran: what the connection's state asks for. */
static void after_notify(struct nbd_storage *st)
{
    if (nbd_aio_is_dead(st->h) == 1 || nbd_aio_is_closed(st->h) == 1) {
        if (st->state == CONN_CONNECTING) {
            unwatch(st);
            retry_later(st);
        } else {
            connection_died(st);
        }
        return;
    }
    if (st->state == CONN_CONNECTING && nbd_aio_is_ready(st->h) == 1)
        connection_ready(st);
    update_watch(st);
}

static void on_socket(void *opaque, int fd, unsigned events)
{
    struct nbd_storage *st = opaque;
    (void)fd;

    if (events & (QED_LOOP_READ | QED_LOOP_HANGUP))
        nbd_aio_notify_read(st->h);
    if ((events & QED_LOOP_WRITE) && nbd_aio_is_dead(st->h) != 1)
        nbd_aio_notify_write(st->h);
    after_notify(st);
    run_completions(st, true);
}

/* ---- requests ----------------------------------------------------------------------- */

/* libnbd's completion callback, with the handle locked: only bookkeeping.
 * A command the connection took down with it waits for the next one. */
static int part_done(void *user_data, int *error)
{
    struct nbd_part *p = user_data;
    struct nbd_storage *st = p->r->st;

    st->in_flight--;
    st->progress_ms = qedi_loop_now_ms();
    if (*error && connection_lost_errno(*error) && st->stalled)
        part_finished(p, ETIMEDOUT);
    else if (*error && connection_lost_errno(*error))
        queue_push(&st->lost, p);
    else
        part_finished(p, *error);
    return 1; /* retire the command */
}

static int64_t issue(struct nbd_storage *st, struct nbd_part *p)
{
    nbd_completion_callback cb = { .callback = part_done, .user_data = p };

    switch (p->kind) {
    case PART_READ:
        return nbd_aio_pread(st->h, p->buf, p->len, p->offset, cb, 0);
    case PART_WRITE:
        return nbd_aio_pwrite(st->h, p->buf, p->len, p->offset, cb, 0);
    case PART_ZERO:
        return nbd_aio_zero(st->h, p->len, p->offset, cb, 0);
    case PART_FLUSH:
        return nbd_aio_flush(st->h, cb, 0);
    }
    return -1;
}

/* While commands are in flight, a look every second: a connection that
 * answered nothing for NBD_STALL_MS is cut (libnbd then sees it closed). */
static void watchdog(void *opaque)
{
    struct nbd_storage *st = opaque;

    st->watchdog = 0;
    if (st->in_flight == 0 || st->state != CONN_READY)
        return;
    if (qedi_loop_now_ms() - st->progress_ms >= NBD_STALL_MS && !st->stalled) {
        st->stalled = true;
        shutdown(st->fd, SHUT_RDWR);
    }
    st->watchdog = qed_loop_add_timer(st->base.loop, NBD_WATCHDOG_MS,
                                      watchdog, st);
}

static void command_sent(struct nbd_storage *st)
{
    if (st->in_flight++ == 0)
        st->progress_ms = qedi_loop_now_ms();
    if (!st->watchdog)
        st->watchdog = qed_loop_add_timer(st->base.loop, NBD_WATCHDOG_MS,
                                          watchdog, st);
}

static void submit_part(struct nbd_storage *st, struct nbd_part *p)
{
    int e;

    switch (st->state) {
    case CONN_FAILED:
        st->attempt = 0;
        queue_push(&st->waiting, p);
        start_connecting(st);
        return;
    case CONN_CONNECTING:
    case CONN_WAITING:
        queue_push(&st->waiting, p);
        return;
    case CONN_READY:
        break;
    }
    if (issue(st, p) >= 0) {
        command_sent(st);
        return;
    }
    e = nbd_get_errno();
    if (nbd_aio_is_dead(st->h) == 1 || nbd_aio_is_closed(st->h) == 1) {
        queue_push(&st->waiting, p);
        connection_died(st);
        return;
    }
    /* Refused at once: libnbd runs no callback for it. */
    part_finished(p, e > 0 ? e : EIO);
}

static struct nbd_request *request_new(struct nbd_storage *st, io_callback *cb,
                                       void *opaque)
{
    struct nbd_request *r = calloc(1, sizeof(*r));

    if (!r) {
        qedi_storage_complete_later(&st->base, cb, opaque, -ENOMEM);
        return NULL;
    }
    r->st = st;
    r->cb = cb;
    r->opaque = opaque;
    r->parts = 1; /* held while parts are submitted */
    return r;
}

static bool add_part(struct nbd_request *r, enum part_kind kind, char *buf,
                     uint64_t len, uint64_t offset)
{
    struct nbd_part *p = calloc(1, sizeof(*p));

    if (!p) {
        if (r->ret == 0)
            r->ret = -ENOMEM;
        return false;
    }
    *p = (struct nbd_part){ .r = r, .kind = kind, .buf = buf, .len = len,
                            .offset = offset };
    r->parts++;
    submit_part(r->st, p);
    return true;
}

/* Drops the hold request_new took.  A request whose parts are all done
 * already (refused) reports from the loop, never from here. */
static void request_submitted(struct nbd_request *r)
{
    struct nbd_storage *st = r->st;

    if (st->state == CONN_READY)
        update_watch(st);
    request_part_done(r, 0);
    run_completions(st, false);
}

/* Splits [offset, offset + len) into commands the server accepts. */
static void submit_parts(struct nbd_request *r, enum part_kind kind,
                         char *buf, uint64_t len, uint64_t offset)
{
    struct nbd_storage *st = r->st;

    while (len > 0 && r->ret == 0) {
        uint64_t n = len < st->max_request ? len : st->max_request;
        if (!add_part(r, kind, buf, n, offset))
            break;
        if (buf)
            buf += n;
        offset += n;
        len -= n;
    }
    request_submitted(r);
}

/* Bytes past the export's end read as zeros. */
static void export_readv(struct io_file *file, const struct iovec *iov,
                         int iovcnt, uint64_t offset, io_callback *cb,
                         void *opaque)
{
    struct nbd_storage *st = storage_of(file);
    struct nbd_request *r = request_new(st, cb, opaque);
    size_t total = qedi_iov_size(iov, iovcnt);
    uint64_t inside;
    char *buf;

    if (!r)
        return;
    if (iovcnt == 1) {
        buf = iov[0].iov_base;
    } else {
        r->bounce = malloc(total);
        r->iov = malloc((size_t)iovcnt * sizeof(*iov));
        if (!r->bounce || !r->iov) {
            r->ret = -ENOMEM;
            request_submitted(r);
            return;
        }
        memcpy(r->iov, iov, (size_t)iovcnt * sizeof(*iov));
        r->iovcnt = iovcnt;
        buf = r->bounce;
    }
    inside = offset >= st->size ? 0 : st->size - offset;
    if (inside < total)
        memset(buf + inside, 0, total - inside);
    submit_parts(r, PART_READ, buf, inside < total ? inside : total, offset);
}

static void export_writev(struct io_file *file, const struct iovec *iov,
                          int iovcnt, uint64_t offset, io_callback *cb,
                          void *opaque)
{
    struct nbd_storage *st = storage_of(file);
    size_t total = qedi_iov_size(iov, iovcnt);
    struct nbd_request *r;
    char *buf;

    if (!file->writable) {
        qedi_storage_complete_later(file, cb, opaque, -EBADF);
        return;
    }
    if (offset > st->size || total > st->size - offset) {
        qedi_storage_complete_later(file, cb, opaque, -ENOSPC);
        return;
    }
    if (!(r = request_new(st, cb, opaque)))
        return;
    if (iovcnt == 1) {
        buf = iov[0].iov_base;
    } else {
        /* Gathered: the data must stay put until the server has it. */
        r->bounce = malloc(total);
        if (!r->bounce) {
            r->ret = -ENOMEM;
            request_submitted(r);
            return;
        }
        qedi_iov_to_buf(iov, iovcnt, 0, r->bounce, total);
        buf = r->bounce;
    }
    submit_parts(r, PART_WRITE, buf, total, offset);
}

/* Without NBD_FLAG_SEND_FLUSH the server writes through: nothing to do. */
static void export_flush(struct io_file *file, io_callback *cb, void *opaque)
{
    struct nbd_storage *st = storage_of(file);
    struct nbd_request *r;

    if (!st->can_flush) {
        qedi_storage_complete_later(file, cb, opaque, 0);
        return;
    }
    if (!(r = request_new(st, cb, opaque)))
        return;
    add_part(r, PART_FLUSH, NULL, 0, 0);
    request_submitted(r);
}

/* Zeroing is NBD_CMD_WRITE_ZEROES (which may punch); allocating inside the
 * export needs nothing; the export cannot grow. */
static void export_fallocate(struct io_file *file, int mode, uint64_t offset,
                             uint64_t length, io_callback *cb, void *opaque)
{
    struct nbd_storage *st = storage_of(file);
    bool zero = mode & (FALLOC_FL_ZERO_RANGE | FALLOC_FL_PUNCH_HOLE);
    uint64_t end = offset + length;
    struct nbd_request *r;

    if (!file->writable) {
        qedi_storage_complete_later(file, cb, opaque, -EBADF);
        return;
    }
    if (end < offset || end > st->size) {
        qedi_storage_complete_later(file, cb, opaque,
                                    zero && (mode & FALLOC_FL_KEEP_SIZE)
                                        ? -EOPNOTSUPP : -ENOSPC);
        return;
    }
    if (!zero) {
        qedi_storage_complete_later(file, cb, opaque, 0);
        return;
    }
    if (!st->can_zero) {
        qedi_storage_complete_later(file, cb, opaque, -EOPNOTSUPP);
        return;
    }
    if (!(r = request_new(st, cb, opaque)))
        return;
    submit_parts(r, PART_ZERO, NULL, length, offset);
}

static int export_get_size(struct io_file *file, uint64_t *size)
{
    *size = storage_of(file)->size;
    return 0;
}

static int export_truncate(struct io_file *file, uint64_t size)
{
    return size <= storage_of(file)->size ? 0 : -ENOSPC;
}

static void export_close(struct io_file *file)
{
    struct nbd_storage *st = storage_of(file);

    unwatch(st);
    if (st->timer)
        qed_loop_cancel_timer(file->loop, st->timer);
    if (st->watchdog)
        qed_loop_cancel_timer(file->loop, st->watchdog);
    /* Nothing is in flight (the engine's promise): a clean disconnect. */
    if (st->h) {
        if (st->state == CONN_READY)
            nbd_shutdown(st->h, 0);
        nbd_close(st->h);
    }
    free(st->uri);
    free(st);
}

static const struct storage_ops export_ops = {
    .name = "nbd",
    .readv = export_readv,
    .writev = export_writev,
    .flush = export_flush,
    .fallocate = export_fallocate,
    .get_size = export_get_size,
    .truncate = export_truncate,
    /* The server does not say how much of the export holds data. */
    .allocated_bytes = qedi_storage_unknown_allocation,
    .seek = qedi_storage_cannot_seek,
    .close = export_close,
};

/* ---- opening ----------------------------------------------------------------------- */

/* libnbd's message, without the URI's password should it quote it. */
static int export_fail(qed_error *err, const char *uri, int fallback)
{
    int e = nbd_get_errno();
    const char *msg = nbd_get_error();

    return qedi_fail(err, e > 0 ? e : fallback, "%s",
                     qedi_storage_scrub(uri, msg && msg[0]
                                                 ? msg : "NBD connection failed"));
}

static int connect_export(struct nbd_storage *st, const char *uri,
                          qed_error *err)
{
    int64_t size, max;

    /* Simple replies: a read's data comes in one piece after a 16-byte
     * header, one receive fewer per read than structured replies (the
     * driver asks for no block status). */
    nbd_set_request_structured_replies(st->h, false);
    if (nbd_connect_uri(st->h, uri) < 0)
        return export_fail(err, uri, EIO);
    size = nbd_get_size(st->h);
    if (size < 0)
        return export_fail(err, uri, EIO);
    st->size = (uint64_t)size;
    max = nbd_get_block_size(st->h, LIBNBD_SIZE_MAXIMUM);
    st->max_request = max > 0 && (uint64_t)max < NBD_DEFAULT_MAX_REQUEST
                          ? (uint64_t)max : NBD_DEFAULT_MAX_REQUEST;
    st->can_flush = nbd_can_flush(st->h) == 1;
    st->can_zero = nbd_can_zero(st->h) == 1;
    st->fd = nbd_aio_get_fd(st->h);
    if (st->fd < 0)
        return export_fail(err, uri, EIO);
    return 0;
}

static int export_open(const struct storage_driver *driver, qed_loop *loop,
                    const char *uri, unsigned flags, struct io_file **out,
                    qed_error *err)
{
    struct nbd_storage *st = calloc(1, sizeof(*st));
    int ret;
    (void)driver;

    *out = NULL;
    if (!st)
        return qedi_fail(err, ENOMEM, "out of memory");
    if (flags & IO_OPEN_CREATE) {
        free(st);
        return qedi_fail(err, EOPNOTSUPP, "an image cannot be created in an "
                         "NBD export (create it locally and copy it in)");
    }
    st->base.ops = &export_ops;
    st->base.loop = loop;
    st->base.align = 1;
    st->done_tail = &st->done;
    queue_init(&st->waiting);
    queue_init(&st->lost);
    st->uri = strdup(uri);
    st->h = st->uri ? nbd_create() : NULL;
    if (!st->h) {
        ret = st->uri ? export_fail(err, uri, ENOMEM)
                      : qedi_fail(err, ENOMEM, "out of memory");
        free(st->uri);
        free(st);
        return ret;
    }
    ret = connect_export(st, uri, err);
    if (ret == 0 && (flags & IO_OPEN_WRITE)) {
        if (nbd_is_read_only(st->h) == 1)
            ret = qedi_fail(err, EROFS, "the NBD export is read-only: open "
                            "the image read-only");
        st->base.writable = true;
    }
    if (ret < 0) {
        nbd_close(st->h);
        free(st->uri);
        free(st);
        return ret;
    }
    update_watch(st);
    *out = &st->base;
    return 0;
}

const struct storage_driver qedi_storage_nbd_driver = {
    .name = "nbd",
    .open = export_open,
};
