/* SPDX-License-Identifier: MIT */
/* The aligning layer.  O_DIRECT wants buffers, offsets and lengths aligned
 * to the device block, and so may any storage (its align).  This layer over
 * such a storage passes aligned reads straight down; other reads go through
 * a bounce buffer covering whole blocks; writes that do not cover whole
 * blocks read, modify and write those blocks back.  A read-modify-write
 * must not interleave with another write to the same blocks (it would write
 * back stale bytes), so every write is tracked while in flight and the two
 * kinds wait for each other where they overlap. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "io-direct.h"
#include "storage.h"

struct direct_file {
    struct storage_layer layer; /* first: closing frees the whole */
    unsigned align;             /* the lower storage's */
    struct direct_write *writes; /* in flight, oldest first */
    struct direct_write *writes_tail;
    unsigned rmw_count;
};

struct direct_write {
    struct direct_file *file;
    uint64_t lo, hi;            /* block-aligned range written */
    bool rmw;                   /* excludes every overlapping write */
    bool fallocate;             /* a zeroing or punching fallocate */
    int mode;
    bool started;
    /* the caller's request */
    struct iovec *iov;
    int iovcnt;
    uint64_t offset;
    uint64_t length;
    io_callback *cb;
    void *opaque;
    uint8_t *bounce;            /* [lo, hi) */
    struct direct_write *prev, *next; /* file->writes */
};

static struct direct_file *direct_of(struct io_file *file)
{
    return (struct direct_file *)file;
}

static struct io_file *lower_of(struct direct_file *d)
{
    return d->layer.lower;
}

static bool aligned(const struct direct_file *d, const struct iovec *iov,
                    int iovcnt, uint64_t offset)
{
    uint64_t mask = d->align - 1;

    if (offset & mask)
        return false;
    for (int i = 0; i < iovcnt; i++)
        if (((uintptr_t)iov[i].iov_base & mask) || (iov[i].iov_len & mask))
            return false;
    return true;
}

static uint64_t total_length(const struct iovec *iov, int iovcnt)
{
    uint64_t n = 0;
    for (int i = 0; i < iovcnt; i++)
        n += iov[i].iov_len;
    return n;
}

static void copy_from_iov(uint8_t *dst, const struct iovec *iov, int iovcnt)
{
    for (int i = 0; i < iovcnt; i++) {
        memcpy(dst, iov[i].iov_base, iov[i].iov_len);
        dst += iov[i].iov_len;
    }
}

static void copy_to_iov(const struct iovec *iov, int iovcnt, const uint8_t *src)
{
    for (int i = 0; i < iovcnt; i++) {
        memcpy(iov[i].iov_base, src, iov[i].iov_len);
        src += iov[i].iov_len;
    }
}

/* ---- reads ------------------------------------------------------------------ */

struct direct_read {
    struct iovec *iov;
    int iovcnt;
    uint64_t skip;     /* bytes of the bounce before the caller's data */
    uint8_t *bounce;
    io_callback *cb;
    void *opaque;
};

static void read_done(void *opaque, int ret)
{
    struct direct_read *r = opaque;
    if (ret == 0)
        copy_to_iov(r->iov, r->iovcnt, r->bounce + r->skip);
    r->cb(r->opaque, ret);
    free(r->bounce);
    free(r->iov);
    free(r);
}

static void direct_readv(struct io_file *file, const struct iovec *iov,
                         int iovcnt, uint64_t offset, io_callback *cb,
                         void *opaque)
{
    struct direct_file *d = direct_of(file);
    uint64_t align = d->align;
    uint64_t lo = round_down_u64(offset, align);
    uint64_t hi = round_up_u64(offset + total_length(iov, iovcnt), align);
    struct direct_read *r;

    if (aligned(d, iov, iovcnt, offset)) {
        qedi_io_readv(lower_of(d), iov, iovcnt, offset, cb, opaque);
        return;
    }
    r = calloc(1, sizeof(*r));
    if (r) {
        r->bounce = qedi_aligned_alloc(hi - lo);
        r->iov = malloc(sizeof(*iov) * (size_t)(iovcnt ? iovcnt : 1));
    }
    if (!r || !r->bounce || !r->iov) {
        if (r) {
            free(r->bounce);
            free(r->iov);
        }
        free(r);
        qedi_storage_complete_later(file, cb, opaque, -ENOMEM);
        return;
    }
    memcpy(r->iov, iov, sizeof(*iov) * (size_t)iovcnt);
    r->iovcnt = iovcnt;
    r->skip = offset - lo;
    r->cb = cb;
    r->opaque = opaque;
    qedi_io_pread(lower_of(d), r->bounce, hi - lo, lo, read_done, r);
}

/* ---- writes ------------------------------------------------------------------ */

static bool overlaps(const struct direct_write *a, const struct direct_write *b)
{
    return a->lo < b->hi && b->lo < a->hi;
}

/* A write waits for every overlapping write queued before it when either of
 * the two is a read-modify-write; plain writes never wait for each other. */
static bool must_wait(const struct direct_write *w)
{
    if (!w->rmw && w->file->rmw_count == 0)
        return false;
    for (struct direct_write *o = w->file->writes; o && o != w;
         o = o->next)
        if ((o->rmw || w->rmw) && overlaps(o, w))
            return true;
    return false;
}

static void start_write(struct direct_write *w);

static void untrack(struct direct_write *w)
{
    struct direct_file *d = w->file;

    if (w->prev)
        w->prev->next = w->next;
    else
        d->writes = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        d->writes_tail = w->prev;
    if (w->rmw)
        d->rmw_count--;
    if (!w->rmw && d->rmw_count == 0)
        return;
    /* Start whatever this one held up. */
    for (struct direct_write *o = d->writes; o; o = o->next)
        if (!o->started && !must_wait(o))
            start_write(o);
}

static void write_done(void *opaque, int ret)
{
    struct direct_write *w = opaque;
    io_callback *cb = w->cb;
    void *cb_opaque = w->opaque;

    untrack(w);
    free(w->bounce);
    free(w->iov);
    free(w);
    cb(cb_opaque, ret);
}

static void rmw_read_done(void *opaque, int ret)
{
    struct direct_write *w = opaque;

    if (ret < 0) {
        write_done(w, ret);
        return;
    }
    copy_from_iov(w->bounce + (w->offset - w->lo), w->iov, w->iovcnt);
    qedi_io_pwrite(lower_of(w->file), w->bounce, w->hi - w->lo, w->lo, write_done,
              w);
}

static void start_write(struct direct_write *w)
{
    struct io_file *lower = lower_of(w->file);

    w->started = true;
    if (w->fallocate) {
        qedi_io_fallocate(lower, w->mode, w->offset, w->length, write_done, w);
    } else if (w->rmw) {
        /* Reading the whole range keeps this simple; it is the rare case. */
        qedi_io_pread(lower, w->bounce, w->hi - w->lo, w->lo, rmw_read_done, w);
    } else if (w->bounce) {
        /* Aligned range, unaligned memory: copy into the bounce buffer. */
        copy_from_iov(w->bounce, w->iov, w->iovcnt);
        qedi_io_pwrite(lower, w->bounce, w->hi - w->lo, w->lo, write_done, w);
    } else {
        qedi_io_writev(lower, w->iov, w->iovcnt, w->offset, write_done, w);
    }
}

static void track(struct direct_write *w)
{
    struct direct_file *d = w->file;

    w->prev = d->writes_tail;
    if (d->writes_tail)
        d->writes_tail->next = w;
    else
        d->writes = w;
    d->writes_tail = w;
    if (w->rmw)
        d->rmw_count++;
}

static struct direct_write *new_write(struct direct_file *d,
                                      const struct iovec *iov, int iovcnt,
                                      uint64_t offset, io_callback *cb,
                                      void *opaque)
{
    uint64_t align = d->align;
    struct direct_write *w = calloc(1, sizeof(*w));

    if (!w)
        return NULL;
    w->file = d;
    w->offset = offset;
    w->length = total_length(iov, iovcnt);
    w->lo = round_down_u64(offset, align);
    w->hi = round_up_u64(offset + w->length, align);
    w->rmw = w->lo != offset || w->hi != offset + w->length;
    w->cb = cb;
    w->opaque = opaque;
    w->iov = malloc(sizeof(*iov) * (size_t)(iovcnt ? iovcnt : 1));
    if (w->iov && !aligned(d, iov, iovcnt, offset))
        w->bounce = qedi_aligned_alloc(w->hi - w->lo);
    if (!w->iov || (!w->bounce && !aligned(d, iov, iovcnt, offset))) {
        free(w->iov);
        free(w->bounce);
        free(w);
        return NULL;
    }
    memcpy(w->iov, iov, sizeof(*iov) * (size_t)iovcnt);
    w->iovcnt = iovcnt;
    return w;
}

/* Every write goes through here. */
static void direct_writev(struct io_file *file, const struct iovec *iov,
                          int iovcnt, uint64_t offset, io_callback *cb,
                          void *opaque)
{
    struct direct_write *w = new_write(direct_of(file), iov, iovcnt, offset,
                                       cb, opaque);

    if (!w) {
        qedi_storage_complete_later(file, cb, opaque, -ENOMEM);
        return;
    }
    track(w);
    if (!must_wait(w))
        start_write(w);
}

/* Zeroing or punching changes the blocks it touches like a write does; a
 * read-modify-write of a neighbouring part of one of those blocks must not
 * run across it, so it is tracked as exclusive on the blocks it covers.
 * Extending the file (mode 0) touches no data and passes straight down. */
static void direct_fallocate(struct io_file *file, int mode, uint64_t offset,
                             uint64_t length, io_callback *cb, void *opaque)
{
    struct direct_file *d = direct_of(file);
    uint64_t align = d->align;
    struct direct_write *w;

    if (mode == 0) {
        qedi_io_fallocate(lower_of(d), mode, offset, length, cb, opaque);
        return;
    }
    w = calloc(1, sizeof(*w));
    if (!w) {
        qedi_storage_complete_later(file, cb, opaque, -ENOMEM);
        return;
    }
    w->file = d;
    w->fallocate = true;
    w->rmw = true;
    w->mode = mode;
    w->offset = offset;
    w->length = length;
    w->lo = round_down_u64(offset, align);
    w->hi = round_up_u64(offset + length, align);
    w->cb = cb;
    w->opaque = opaque;
    track(w);
    if (!must_wait(w))
        start_write(w);
}

static const struct storage_ops direct_ops = {
    .name = "direct",
    .readv = direct_readv,
    .writev = direct_writev,
    .flush = qedi_storage_layer_flush,
    .fallocate = direct_fallocate,
    .get_size = qedi_storage_layer_get_size,
    .truncate = qedi_storage_layer_truncate,
    .allocated_bytes = qedi_storage_layer_allocated_bytes,
    .seek = qedi_storage_layer_seek,
    .close = qedi_storage_layer_close,
};

int qedi_io_direct_stack(struct io_file *lower, struct io_file **out,
                    qed_error *err)
{
    struct direct_file *d = calloc(1, sizeof(*d));

    *out = NULL;
    if (!d)
        return qedi_fail(err, ENOMEM, "out of memory");
    qedi_storage_layer_init(&d->layer, &direct_ops, lower);
    d->align = lower->align;
    *out = &d->layer.base;
    return 0;
}
