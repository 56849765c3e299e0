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
 * An export has a fixed size: the storage cannot grow, so an image that
 * needs a new cluster past the export's end gets ENOSPC. */
#include <errno.h>
#include <fcntl.h>
#include <libnbd.h>
#include <stdlib.h>
#include <string.h>

#include "storage.h"

/* The largest request sent when the server names no maximum (the NBD
 * protocol's recommended limit). */
#define NBD_DEFAULT_MAX_REQUEST (32u * 1024 * 1024)

struct nbd_storage;

/* One engine request: one or more NBD commands (a large one is split, a
 * vectored one goes through a bounce buffer). */
struct nbd_request {
    struct nbd_storage *st;
    io_callback *cb;
    void *opaque;
    unsigned parts;          /* commands not yet completed */
    int ret;
    /* reads into a bounce buffer, scattered into iov when done */
    char *bounce;
    const struct iovec *iov; /* the caller's, valid until cb */
    int iovcnt;
    struct nbd_request *next_done;
};

struct nbd_storage {
    struct io_file base;
    struct nbd_handle *h;
    uint64_t size;
    uint64_t max_request;
    bool can_flush, can_zero;
    int fd;
    unsigned watched;            /* QED_LOOP_* events watched now */
    struct nbd_request *done;    /* completed, callbacks not yet run */
    struct nbd_request **done_tail;
};

static struct nbd_storage *storage_of(struct io_file *file)
{
    return (struct nbd_storage *)file;
}

/* ---- the socket on the loop -------------------------------------------------- */

static void on_socket(void *opaque, int fd, unsigned events);

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
    if (want == 0) {
        qed_loop_unwatch_fd(st->base.loop, st->fd);
    } else if (qed_loop_watch_fd(st->base.loop, st->fd, want, on_socket, st) < 0) {
        return;
    }
    st->watched = want;
}

/* Scatters a bounced read and reports: now (from the loop, libnbd done),
 * or later when still inside the call that submitted the request. */
static void finish_request(struct nbd_request *r, bool now)
{
    if (r->bounce && r->iov && r->ret == 0) {
        size_t off = 0;
        for (int i = 0; i < r->iovcnt; i++) {
            memcpy(r->iov[i].iov_base, r->bounce + off, r->iov[i].iov_len);
            off += r->iov[i].iov_len;
        }
    }
    free(r->bounce);
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

static void on_socket(void *opaque, int fd, unsigned events)
{
    struct nbd_storage *st = opaque;
    (void)fd;

    if (events & (QED_LOOP_READ | QED_LOOP_HANGUP))
        nbd_aio_notify_read(st->h);
    if (events & QED_LOOP_WRITE)
        nbd_aio_notify_write(st->h);
    update_watch(st);
    run_completions(st, true);
}

/* ---- requests ----------------------------------------------------------------------- */

/* libnbd's completion callback, with the handle locked: only bookkeeping. */
static int part_done(void *user_data, int *error)
{
    struct nbd_request *r = user_data;

    if (*error && r->ret == 0)
        r->ret = -*error;
    if (--r->parts == 0) {
        r->next_done = NULL;
        *r->st->done_tail = r;
        r->st->done_tail = &r->next_done;
    }
    return 1; /* retire the command */
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

/* A command libnbd refused at once: its callback never runs. */
static void part_refused(struct nbd_request *r)
{
    int e = nbd_get_errno();

    if (r->ret == 0)
        r->ret = e > 0 ? -e : -EIO;
}

/* Drops the hold request_new took.  A request whose parts are all done
 * already (refused) reports from the loop, never from here. */
static void request_submitted(struct nbd_request *r)
{
    struct nbd_storage *st = r->st;
    int error = 0;

    update_watch(st);
    part_done(r, &error);
    run_completions(st, false);
}

typedef int64_t part_fn(struct nbd_storage *st, char *buf, uint64_t len,
                        uint64_t offset, struct nbd_request *r);

static int64_t pread_part(struct nbd_storage *st, char *buf, uint64_t len,
                          uint64_t offset, struct nbd_request *r)
{
    nbd_completion_callback cb = { .callback = part_done, .user_data = r };
    return nbd_aio_pread(st->h, buf, len, offset, cb, 0);
}

static int64_t pwrite_part(struct nbd_storage *st, char *buf, uint64_t len,
                           uint64_t offset, struct nbd_request *r)
{
    nbd_completion_callback cb = { .callback = part_done, .user_data = r };
    return nbd_aio_pwrite(st->h, buf, len, offset, cb, 0);
}

static int64_t zero_part(struct nbd_storage *st, char *buf, uint64_t len,
                         uint64_t offset, struct nbd_request *r)
{
    nbd_completion_callback cb = { .callback = part_done, .user_data = r };
    (void)buf;
    return nbd_aio_zero(st->h, len, offset, cb, 0);
}

/* Splits [offset, offset + len) into commands the server accepts. */
static void submit_parts(struct nbd_request *r, part_fn *fn, char *buf,
                         uint64_t len, uint64_t offset)
{
    struct nbd_storage *st = r->st;

    while (len > 0 && r->ret == 0) {
        uint64_t n = len < st->max_request ? len : st->max_request;
        r->parts++;
        if (fn(st, buf, n, offset, r) < 0) {
            r->parts--;
            part_refused(r);
            break;
        }
        if (buf)
            buf += n;
        offset += n;
        len -= n;
    }
    request_submitted(r);
}

static size_t iov_total(const struct iovec *iov, int iovcnt)
{
    size_t n = 0;
    for (int i = 0; i < iovcnt; i++)
        n += iov[i].iov_len;
    return n;
}

/* Bytes past the export's end read as zeros. */
static void export_readv(struct io_file *file, const struct iovec *iov,
                      int iovcnt, uint64_t offset, io_callback *cb,
                      void *opaque)
{
    struct nbd_storage *st = storage_of(file);
    struct nbd_request *r = request_new(st, cb, opaque);
    size_t total = iov_total(iov, iovcnt);
    uint64_t inside;
    char *buf;

    if (!r)
        return;
    if (iovcnt == 1) {
        buf = iov[0].iov_base;
    } else {
        r->bounce = malloc(total);
        if (!r->bounce) {
            r->ret = -ENOMEM;
            request_submitted(r);
            return;
        }
        r->iov = iov;
        r->iovcnt = iovcnt;
        buf = r->bounce;
    }
    inside = offset >= st->size ? 0 : st->size - offset;
    if (inside < total)
        memset(buf + inside, 0, total - inside);
    submit_parts(r, pread_part, buf, inside < total ? inside : total, offset);
}

static void export_writev(struct io_file *file, const struct iovec *iov,
                       int iovcnt, uint64_t offset, io_callback *cb,
                       void *opaque)
{
    struct nbd_storage *st = storage_of(file);
    size_t total = iov_total(iov, iovcnt), off = 0;
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
        for (int i = 0; i < iovcnt; i++) {
            memcpy(r->bounce + off, iov[i].iov_base, iov[i].iov_len);
            off += iov[i].iov_len;
        }
        buf = r->bounce;
    }
    submit_parts(r, pwrite_part, buf, total, offset);
}

/* Without NBD_FLAG_SEND_FLUSH the server writes through: nothing to do. */
static void export_flush(struct io_file *file, io_callback *cb, void *opaque)
{
    struct nbd_storage *st = storage_of(file);
    nbd_completion_callback done;
    struct nbd_request *r;

    if (!st->can_flush) {
        qedi_storage_complete_later(file, cb, opaque, 0);
        return;
    }
    if (!(r = request_new(st, cb, opaque)))
        return;
    done = (nbd_completion_callback){ .callback = part_done, .user_data = r };
    r->parts++;
    if (nbd_aio_flush(st->h, done, 0) < 0) {
        r->parts--;
        part_refused(r);
    }
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
    submit_parts(r, zero_part, NULL, length, offset);
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

/* The server does not say how much of the export holds data. */
static int export_allocated_bytes(struct io_file *file, uint64_t *bytes)
{
    (void)file;
    *bytes = 0;
    return -ENOTSUP;
}

static int export_seek(struct io_file *file, uint64_t offset, bool data,
                    uint64_t *out)
{
    (void)file;
    (void)offset;
    (void)data;
    (void)out;
    return -ENOTSUP;
}

static void export_close(struct io_file *file)
{
    struct nbd_storage *st = storage_of(file);

    if (st->watched)
        qed_loop_unwatch_fd(file->loop, st->fd);
    /* Nothing is in flight (the engine's promise): a clean disconnect. */
    nbd_shutdown(st->h, 0);
    nbd_close(st->h);
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
    .allocated_bytes = export_allocated_bytes,
    .seek = export_seek,
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
    st->h = nbd_create();
    if (!st->h) {
        ret = export_fail(err, uri, ENOMEM);
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
