/* SPDX-License-Identifier: MIT */
/* O_DIRECT wants buffers, offsets and lengths aligned to the device block.
 * Requests that are not aligned come through here: reads go through a
 * bounce buffer covering whole blocks; writes that do not cover whole blocks
 * read, modify and write those blocks back.  A read-modify-write must not
 * interleave with another write to the same blocks (it would write back
 * stale bytes), so every write to a direct file is tracked while in flight
 * and the two kinds wait for each other where they overlap. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "io-direct.h"

struct direct_write {
    struct io_file *file;
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
    struct direct_write *prev, *next; /* file->direct_writes */
};

/* Probes the alignment O_DIRECT accepts: a sector where the device allows
 * it, else QED_BUFFER_ALIGN (what every device accepts). */
void io_direct_probe(struct io_file *file)
{
    void *buf = NULL;

    file->dio_align = QED_BUFFER_ALIGN;
    if (posix_memalign(&buf, QED_BUFFER_ALIGN, 2 * QED_BUFFER_ALIGN) != 0)
        return;
    if (pread(file->fd, (char *)buf + QED_SECTOR_SIZE, QED_SECTOR_SIZE,
              QED_SECTOR_SIZE) >= 0)
        file->dio_align = QED_SECTOR_SIZE;
    free(buf);
}

bool io_direct_aligned(const struct io_file *file, const struct iovec *iov,
                       int iovcnt, uint64_t offset)
{
    uint64_t mask = file->dio_align - 1;

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

void io_direct_readv(struct io_file *file, const struct iovec *iov, int iovcnt,
                     uint64_t offset, io_callback *cb, void *opaque)
{
    uint64_t align = file->dio_align;
    uint64_t lo = round_down_u64(offset, align);
    uint64_t hi = round_up_u64(offset + total_length(iov, iovcnt), align);
    struct direct_read *r = calloc(1, sizeof(*r));

    if (r) {
        r->bounce = qed_aligned_alloc(hi - lo);
        r->iov = malloc(sizeof(*iov) * (size_t)(iovcnt ? iovcnt : 1));
    }
    if (!r || !r->bounce || !r->iov) {
        if (r) {
            free(r->bounce);
            free(r->iov);
        }
        free(r);
        cb(opaque, -ENOMEM);
        return;
    }
    memcpy(r->iov, iov, sizeof(*iov) * (size_t)iovcnt);
    r->iovcnt = iovcnt;
    r->skip = offset - lo;
    r->cb = cb;
    r->opaque = opaque;
    io_plain_pread(file, r->bounce, hi - lo, lo, read_done, r);
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
    if (!w->rmw && w->file->direct_rmw_count == 0)
        return false;
    for (struct direct_write *o = w->file->direct_writes; o && o != w;
         o = o->next)
        if ((o->rmw || w->rmw) && overlaps(o, w))
            return true;
    return false;
}

static void start_write(struct direct_write *w);

static void untrack(struct direct_write *w)
{
    struct io_file *file = w->file;

    if (w->prev)
        w->prev->next = w->next;
    else
        file->direct_writes = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        file->direct_writes_tail = w->prev;
    if (w->rmw)
        file->direct_rmw_count--;
    if (!w->rmw && file->direct_rmw_count == 0)
        return;
    /* Start whatever this one held up. */
    for (struct direct_write *o = file->direct_writes; o; o = o->next)
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
    io_plain_pwrite(w->file, w->bounce, w->hi - w->lo, w->lo, write_done, w);
}

static void start_write(struct direct_write *w)
{
    w->started = true;
    if (w->fallocate) {
        io_plain_fallocate(w->file, w->mode, w->offset, w->length, write_done,
                           w);
    } else if (w->rmw) {
        /* Reading the whole range keeps this simple; it is the rare case. */
        io_plain_pread(w->file, w->bounce, w->hi - w->lo, w->lo, rmw_read_done,
                       w);
    } else if (w->bounce) {
        /* Aligned range, unaligned memory: copy into the bounce buffer. */
        copy_from_iov(w->bounce, w->iov, w->iovcnt);
        io_plain_pwrite(w->file, w->bounce, w->hi - w->lo, w->lo, write_done,
                        w);
    } else {
        io_plain_writev(w->file, w->iov, w->iovcnt, w->offset, write_done, w);
    }
}

static void track(struct direct_write *w)
{
    struct io_file *file = w->file;

    w->prev = file->direct_writes_tail;
    if (file->direct_writes_tail)
        file->direct_writes_tail->next = w;
    else
        file->direct_writes = w;
    file->direct_writes_tail = w;
    if (w->rmw)
        file->direct_rmw_count++;
}

static struct direct_write *new_write(struct io_file *file,
                                      const struct iovec *iov, int iovcnt,
                                      uint64_t offset, io_callback *cb,
                                      void *opaque)
{
    uint64_t align = file->dio_align;
    struct direct_write *w = calloc(1, sizeof(*w));

    if (!w)
        return NULL;
    w->file = file;
    w->offset = offset;
    w->length = total_length(iov, iovcnt);
    w->lo = round_down_u64(offset, align);
    w->hi = round_up_u64(offset + w->length, align);
    w->rmw = w->lo != offset || w->hi != offset + w->length;
    w->cb = cb;
    w->opaque = opaque;
    w->iov = malloc(sizeof(*iov) * (size_t)(iovcnt ? iovcnt : 1));
    if (w->iov && !io_direct_aligned(file, iov, iovcnt, offset))
        w->bounce = qed_aligned_alloc(w->hi - w->lo);
    if (!w->iov || (!w->bounce && !io_direct_aligned(file, iov, iovcnt,
                                                     offset))) {
        free(w->iov);
        free(w->bounce);
        free(w);
        return NULL;
    }
    memcpy(w->iov, iov, sizeof(*iov) * (size_t)iovcnt);
    w->iovcnt = iovcnt;
    return w;
}

void io_direct_writev(struct io_file *file, const struct iovec *iov,
                      int iovcnt, uint64_t offset, io_callback *cb,
                      void *opaque)
{
    struct direct_write *w = new_write(file, iov, iovcnt, offset, cb, opaque);

    if (!w) {
        cb(opaque, -ENOMEM);
        return;
    }
    track(w);
    if (!must_wait(w))
        start_write(w);
}

/* Zeroing or punching changes the blocks it touches like a write does; a
 * read-modify-write of a neighbouring part of one of those blocks must not
 * run across it, so it is tracked as exclusive on the blocks it covers. */
void io_direct_fallocate(struct io_file *file, int mode, uint64_t offset,
                         uint64_t length, io_callback *cb, void *opaque)
{
    uint64_t align = file->dio_align;
    struct direct_write *w = calloc(1, sizeof(*w));

    if (!w) {
        cb(opaque, -ENOMEM);
        return;
    }
    w->file = file;
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
