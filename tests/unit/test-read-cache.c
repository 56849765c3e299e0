/* SPDX-License-Identifier: MIT */
/* The read cache over remote storage (lib/storage/io-cache.c), on a remote
 * object simulated in memory whose reads take a loop timer to answer and
 * are counted: every byte read equals the object's, for reads of every
 * size and place; a block read once is not read again; reads submitted
 * together that touch become one remote read; a sequential reader is
 * served from read-ahead (few remote reads, the windows growing); the
 * cache holds no more than its size; a failed remote read fails the reads
 * waiting for it only, and a changed object (ESTALE) every later read;
 * big reads of blocks it does not hold bypass it; closing with read-ahead
 * in flight is clean (ASan). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "iov.h"
#include "qed.h"
#include "storage.h"
#include "../tap.h"

#define OBJECT_SIZE (8u * 1024 * 1024 + 12345) /* not a whole block */
#define BLOCK 65536u

/* ---- a remote object in memory -------------------------------------------------- */

struct remote_read;

struct remote {
    struct io_file base;
    unsigned reads;            /* reads answered or in flight */
    uint64_t bytes;            /* bytes asked for */
    unsigned in_flight, max_in_flight;
    int fail_next;             /* the next read's result, once */
    bool stale;                /* every read from now on: -ESTALE */
    struct remote_read *pending;
};

struct remote_read {
    struct remote *r;
    struct remote_read *next;
    uint64_t timer;
    io_callback *cb;
    void *opaque;
    int ret;
};

static uint8_t object_byte(uint64_t offset)
{
    return (uint8_t)((offset * 2654435761u) >> 13) ^ (uint8_t)(offset >> 16);
}

static void remote_answer(void *opaque)
{
    struct remote_read *rr = opaque;
    struct remote *r = rr->r;
    struct remote_read **p = &r->pending;

    while (*p != rr)
        p = &(*p)->next;
    *p = rr->next;
    r->in_flight--;
    rr->cb(rr->opaque, rr->ret);
    free(rr);
}

static void remote_readv(struct io_file *file, const struct iovec *iov,
                         int iovcnt, uint64_t offset, io_callback *cb,
                         void *opaque)
{
    struct remote *r = (struct remote *)file;
    struct remote_read *rr = calloc(1, sizeof(*rr));

    r->reads++;
    r->bytes += qedi_iov_size(iov, iovcnt);
    for (int i = 0; i < iovcnt; i++) {
        uint8_t *dst = iov[i].iov_base;
        for (size_t j = 0; j < iov[i].iov_len; j++, offset++)
            dst[j] = offset < OBJECT_SIZE ? object_byte(offset) : 0;
    }
    rr->r = r;
    rr->cb = cb;
    rr->opaque = opaque;
    rr->ret = r->stale ? -ESTALE : r->fail_next;
    r->fail_next = 0;
    rr->next = r->pending;
    r->pending = rr;
    if (++r->in_flight > r->max_in_flight)
        r->max_in_flight = r->in_flight;
    rr->timer = qed_loop_add_timer(file->loop, 1, remote_answer, rr);
}

static int remote_get_size(struct io_file *file, uint64_t *size)
{
    (void)file;
    *size = OBJECT_SIZE;
    return 0;
}

/* As the http driver: reads still out at close are dropped, unanswered. */
static void remote_close(struct io_file *file)
{
    struct remote *r = (struct remote *)file;

    while (r->pending) {
        struct remote_read *rr = r->pending;
        r->pending = rr->next;
        qed_loop_cancel_timer(file->loop, rr->timer);
        free(rr);
    }
}

static const struct storage_ops remote_ops = {
    .name = "remote in memory",
    .readv = remote_readv,
    .get_size = remote_get_size,
    .allocated_bytes = qedi_storage_unknown_allocation,
    .seek = qedi_storage_cannot_seek,
    .close = remote_close,
};

/* ---- reading through the cache --------------------------------------------------- */

struct reader {
    unsigned done;
    int ret[64];
};

struct one_read {
    struct reader *rd;
    unsigned slot;
};

static void read_done(void *opaque, int ret)
{
    struct one_read *o = opaque;

    o->rd->ret[o->slot] = ret;
    o->rd->done++;
}

static bool run_until(qed_loop *loop, const struct reader *rd, unsigned n)
{
    for (int spins = 0; rd->done < n && spins < 100000; spins++)
        if (qed_loop_run(loop, 1000) < 0)
            return false;
    return rd->done == n;
}

static bool matches(const uint8_t *buf, uint64_t offset, uint64_t len)
{
    for (uint64_t i = 0; i < len; i++)
        if (buf[i] != (offset + i < OBJECT_SIZE ? object_byte(offset + i) : 0))
            return false;
    return true;
}

/* Reads len bytes at offset and waits; true when they are the object's. */
static bool read_one(qed_loop *loop, struct io_file *c, uint64_t offset,
                     uint64_t len, int *ret)
{
    struct reader rd = { 0 };
    struct one_read o = { &rd, 0 };
    uint8_t *buf = malloc(len);
    bool good;

    qedi_io_pread(c, buf, len, offset, read_done, &o);
    good = run_until(loop, &rd, 1) && rd.ret[0] == 0 && matches(buf, offset, len);
    *ret = rd.ret[0];
    free(buf);
    return good;
}

struct fixture {
    struct remote remote;
    struct io_file *cache;
};

static bool open_cache(qed_loop *loop, struct fixture *fx, uint64_t bytes)
{
    qed_error err = { 0 };

    memset(fx, 0, sizeof(*fx));
    fx->remote.base.ops = &remote_ops;
    fx->remote.base.loop = loop;
    fx->remote.base.align = 1;
    if (qedi_storage_cache_open(&fx->remote.base, bytes, &fx->cache, &err) < 0) {
        tap_diag("qedi_storage_cache_open: %s", err.message);
        return false;
    }
    return true;
}

static void test_random_reads_match(qed_loop *loop)
{
    struct fixture fx;
    unsigned bad = 0;
    int ret = 0;

    if (!ok(open_cache(loop, &fx, 4u << 20), "a 4 MiB cache opens"))
        return;
    srand(7);
    for (int i = 0; i < 400; i++) {
        uint64_t len = 1 + (uint64_t)rand() % (300 * 1024);
        uint64_t offset = (uint64_t)rand() % (OBJECT_SIZE + 100000);
        if (!read_one(loop, fx.cache, offset, len, &ret))
            bad++;
    }
    ok(bad == 0, "400 reads of 1 byte to 300 KiB anywhere (past the end too) "
       "read the object's bytes (%u wrong)", bad);
    qedi_io_file_close(fx.cache);
}

static void test_held_blocks_not_read_again(qed_loop *loop)
{
    struct fixture fx;
    unsigned before;
    int ret = 0;

    if (!open_cache(loop, &fx, 4u << 20))
        return;
    read_one(loop, fx.cache, 5 * BLOCK + 100, 4096, &ret);
    is_u64(fx.remote.reads, 1, "a 4 KiB read in the middle: one remote read");
    is_u64(fx.remote.bytes, BLOCK, "of the one block it is in");
    before = fx.remote.reads;
    ok(read_one(loop, fx.cache, 5 * BLOCK, BLOCK, &ret) &&
       fx.remote.reads == before, "the whole block again: from the cache");
    qedi_io_file_close(fx.cache);
}

static void test_adjacent_reads_coalesce(qed_loop *loop)
{
    struct fixture fx;
    struct reader rd = { 0 };
    struct one_read o[16];
    uint8_t *buf = malloc(16 * BLOCK);
    bool good;

    if (!open_cache(loop, &fx, 4u << 20)) {
        free(buf);
        return;
    }
    /* Blocks 40..55, submitted one by one in the same iteration. */
    for (unsigned i = 0; i < 16; i++) {
        o[i] = (struct one_read){ &rd, i };
        qedi_io_pread(fx.cache, buf + i * BLOCK, BLOCK, (40 + i) * BLOCK,
                      read_done, &o[i]);
    }
    good = run_until(loop, &rd, 16) && matches(buf, 40 * BLOCK, 16 * BLOCK);
    ok(good, "16 adjacent 64 KiB reads submitted together read right");
    is_u64(fx.remote.reads, 1, "and become one remote read");
    free(buf);
    qedi_io_file_close(fx.cache);
}

static void test_sequential_reads_ahead(qed_loop *loop)
{
    struct fixture fx;
    unsigned bad = 0;
    int ret = 0;

    if (!open_cache(loop, &fx, 16u << 20))
        return;
    /* 4 MiB in 4 KiB reads, one at a time, as a guest reading a file. */
    for (uint64_t off = 0; off < (4u << 20); off += 4096)
        if (!read_one(loop, fx.cache, off, 4096, &ret))
            bad++;
    ok(bad == 0, "1024 sequential 4 KiB reads read right");
    ok(fx.remote.reads <= 8, "and take few remote reads: %u (read-ahead "
       "windows growing to 2 MiB)", fx.remote.reads);
    ok(fx.remote.bytes <= (4u << 20) + (3u << 20),
       "fetching at most one and a half windows past what was read: %llu bytes",
       (unsigned long long)fx.remote.bytes);
    qedi_io_file_close(fx.cache);
}

static void test_bounded(qed_loop *loop)
{
    struct fixture fx;
    unsigned bad = 0, before;
    int ret = 0;

    if (!open_cache(loop, &fx, 1u << 20))
        return;
    for (uint64_t b = 0; b < 64; b += 2)
        if (!read_one(loop, fx.cache, b * BLOCK, 4096, &ret))
            bad++;
    ok(bad == 0, "32 scattered reads through a 1 MiB (16-block) cache");
    before = fx.remote.reads;
    read_one(loop, fx.cache, 0, 4096, &ret);
    ok(fx.remote.reads == before + 1,
       "the first block was evicted (read again: %u -> %u)", before,
       fx.remote.reads);
    before = fx.remote.reads;
    read_one(loop, fx.cache, 62 * BLOCK, 4096, &ret);
    ok(fx.remote.reads == before, "the last one was not");
    qedi_io_file_close(fx.cache);
}

static void test_failures(qed_loop *loop)
{
    struct fixture fx;
    int ret = 0;

    if (!open_cache(loop, &fx, 4u << 20))
        return;
    fx.remote.fail_next = -EIO;
    read_one(loop, fx.cache, 3 * BLOCK, 4096, &ret);
    is_u64((uint64_t)-ret, EIO, "a failed remote read fails the read with EIO");
    ok(read_one(loop, fx.cache, 3 * BLOCK, 4096, &ret),
       "and is not kept: the same read then succeeds");
    fx.remote.stale = true;
    read_one(loop, fx.cache, 100 * BLOCK, 4096, &ret);
    is_u64((uint64_t)-ret, ESTALE, "a changed object: ESTALE");
    fx.remote.stale = false;
    read_one(loop, fx.cache, 3 * BLOCK, 4096, &ret);
    is_u64((uint64_t)-ret, ESTALE, "and every later read fails with it, "
           "cached blocks too");
    qedi_io_file_close(fx.cache);
}

static void test_big_reads_bypass(qed_loop *loop)
{
    struct fixture fx;
    int ret = 0;
    bool good;

    if (!open_cache(loop, &fx, 4u << 20))
        return;
    good = read_one(loop, fx.cache, 1u << 20, 2u << 20, &ret);
    ok(good, "a 2 MiB read reads right");
    ok(fx.remote.reads == 1 && fx.remote.bytes == (2u << 20),
       "straight from the remote object, nothing more (%u reads, %llu bytes)",
       fx.remote.reads, (unsigned long long)fx.remote.bytes);
    read_one(loop, fx.cache, 1u << 20, 4096, &ret);
    ok(fx.remote.reads == 2, "and not kept (a 4 KiB read there is remote)");
    qedi_io_file_close(fx.cache);
}

static void test_close_with_read_ahead(qed_loop *loop)
{
    struct fixture fx;
    int ret = 0;

    if (!open_cache(loop, &fx, 16u << 20))
        return;
    read_one(loop, fx.cache, 0, 4096, &ret);
    read_one(loop, fx.cache, BLOCK, 4096, &ret); /* sequential: a window */
    /* Blocks 2-5 came as its window; the middle one, 4, has the mark. */
    read_one(loop, fx.cache, 4 * BLOCK, 4096, &ret);
    ok(fx.remote.in_flight > 0, "reaching a window's mark starts the next "
       "one (%u remote reads, %u in flight)", fx.remote.reads,
       fx.remote.in_flight);
    qedi_io_file_close(fx.cache); /* with it queued or in flight */
    ok(1, "closing with read-ahead on its way");
}

int main(void)
{
    qed_loop *loop = NULL;
    qed_error err = { 0 };

    if (qed_loop_new(QED_ENGINE_AUTO, &loop, &err) < 0) {
        ok(0, "a loop: %s", err.message);
        return tap_done();
    }
    test_random_reads_match(loop);
    test_held_blocks_not_read_again(loop);
    test_adjacent_reads_coalesce(loop);
    test_sequential_reads_ahead(loop);
    test_bounded(loop);
    test_failures(loop);
    test_big_reads_bypass(loop);
    test_close_with_read_ahead(loop);
    qed_loop_free(loop);
    return tap_done();
}
