/* SPDX-License-Identifier: MIT */
/* The engine through the public API, once per I/O engine: create/open/close,
 * unaligned and vectored I/O, requests spanning clusters and L2 tables, a
 * random concurrent workload checked against an in-memory model (and by
 * qemu-img check/compare), block status, zero clusters and argument errors. */
#include <errno.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "qed.h"
#include "support-image.h"
#include "support-tap.h"

struct ctx {
    enum qed_engine engine;
    const char *en;    /* engine (and variant), in every test name */
    const char *ename; /* what qed_loop_engine_name says */
    const char *dir;
    enum qed_cache cache;
    size_t l2_cache_bytes; /* 0: default */
};

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN_U64(a, b) ((uint64_t)(a) < (uint64_t)(b) ? (uint64_t)(a) : (uint64_t)(b))
#define MAX_U64(a, b) ((uint64_t)(a) > (uint64_t)(b) ? (uint64_t)(a) : (uint64_t)(b))

/* One asynchronous call: its callback records the result. */
struct call {
    unsigned *counter; /* incremented on completion when set */
    bool done;
    int ret;
    qed_error err;
};

static void call_done(void *opaque, int ret, const qed_error *err)
{
    struct call *cl = opaque;
    cl->done = true;
    cl->ret = ret;
    if (err)
        cl->err = *err;
    if (cl->counter)
        (*cl->counter)++;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Runs the image's loop until the call completes (20 s at most). */
static int wait_call(qed_image *img, struct call *cl)
{
    uint64_t deadline = now_ms() + 20000;

    while (!cl->done) {
        int ret = qed_loop_run(qed_image_loop(img), 100);
        if (ret < 0)
            return ret;
        if (now_ms() > deadline)
            return -ETIMEDOUT;
    }
    return cl->ret;
}

/* Opens with the engine and cache settings under test; one test point (see
 * support-tap.h). */
static bool open_image(const struct ctx *c, const char *path, unsigned flags,
                       qed_image **img, const char *what)
{
    struct qed_open_options o = { .size = sizeof(o),
                                  .flags = flags, .engine = c->engine,
                                  .cache = c->cache,
                                  .l2_cache_bytes = c->l2_cache_bytes };
    return support_tap_open(c->en, path, &o, img, what);
}

/* Reads [offset, offset+len) of the image and compares it with want.
 * Returns true when equal; prints the first difference otherwise. */
static bool image_matches(qed_image *img, const uint8_t *want, uint64_t offset,
                          uint64_t len)
{
    const uint64_t chunk = 4 * MiB;
    uint8_t *buf = malloc(chunk);
    bool same = buf != NULL;

    for (uint64_t done = 0; same && done < len; done += chunk) {
        uint64_t n = MIN_U64(chunk, len - done);
        qed_error err = { 0 };
        int ret = qed_pread(img, buf, n, offset + done, &err);
        if (ret < 0) {
            tap_diag("read at %" PRIu64 " failed: %s", offset + done,
                     err.message);
            same = false;
            break;
        }
        for (uint64_t i = 0; i < n; i++) {
            if (buf[i] != want[done + i]) {
                tap_diag("first difference at %" PRIu64 ": got 0x%02x, "
                         "want 0x%02x", offset + done + i, buf[i],
                         want[done + i]);
                same = false;
                break;
            }
        }
    }
    free(buf);
    return same;
}

/* ---- create, open, info, close ------------------------------------------- */

static void test_round_trip(const struct ctx *c)
{
    const char *path = support_path(c->dir, "roundtrip.qed");
    struct qed_create_options co = { .size = sizeof(co),
                                     .virtual_size = 10 * MiB };
    struct qed_image_info *info = support_image_info_new();
    qed_image *img = NULL;
    qed_error err = { 0 };
    uint8_t buf[4096], back[4096];
    int ret;

    ret = qed_create(path, &co, &err);
    is_u64(ret, 0, "%s: create a 10 MiB image with default options", c->en);
    is_u64(support_file_size(path), 64 * KiB + 4 * 64 * KiB,
           "%s: new file holds the header cluster and the L1 table", c->en);
    is_u64(support_read_le32(path, 0), QED_MAGIC, "%s: magic on disk",
           c->en);
    if (!open_image(c, path, QED_OPEN_RDWR, &img, "the new image"))
        goto out;
    ret = qed_get_info(img, info, &err);
    is_u64(ret, 0, "%s: qed_get_info", c->en);
    is_u64(info->format, QED_FORMAT_QED, "%s: info.format is qed", c->en);
    is_str(info->filename, path, "%s: info.filename", c->en);
    is_u64(info->virtual_size, 10 * MiB, "%s: info.virtual_size", c->en);
    is_u64(info->file_size, 320 * KiB, "%s: info.file_size", c->en);
    ok(!info->dirty, "%s: info.dirty is false on a fresh image", c->en);
    is_u64(info->cluster_size, 64 * KiB, "%s: info.cluster_size", c->en);
    is_u64(info->table_size, 4, "%s: info.table_size", c->en);
    is_u64(info->header_size, 1, "%s: info.header_size", c->en);
    is_u64(info->features, 0, "%s: info.features", c->en);
    is_u64(info->compat_features, 0, "%s: info.compat_features", c->en);
    is_u64(info->autoclear_features, 0, "%s: info.autoclear_features", c->en);
    is_u64(info->l1_table_offset, 64 * KiB, "%s: info.l1_table_offset",
           c->en);
    ok(!info->has_backing, "%s: info.has_backing is false", c->en);
    is_str(info->backing_file, "", "%s: info.backing_file is empty", c->en);
    is_u64(qed_size(img), 10 * MiB, "%s: qed_size", c->en);
    is_u64(qed_format_of(img), QED_FORMAT_QED, "%s: qed_format_of", c->en);
    ok(qed_backing(img) == NULL, "%s: qed_backing is NULL", c->en);
    is_str(qed_loop_engine_name(qed_image_loop(img)), c->ename,
           "%s: the image's loop uses the requested engine", c->en);

    support_fill(buf, sizeof(buf), 7, MiB + 3);
    ret = qed_pwrite(img, buf, sizeof(buf), MiB + 3, &err);
    is_u64(ret, 0, "%s: write 4096 bytes at 1 MiB + 3", c->en);
    is_u64(qed_flush(img, &err), 0, "%s: qed_flush", c->en);
    support_tap_close(c->en, img, "after the write");

    if (!open_image(c, path, 0, &img, "read-only after close"))
        goto out;
    memset(back, 0, sizeof(back));
    ret = qed_pread(img, back, sizeof(back), MiB + 3, &err);
    ok(ret == 0 && memcmp(back, buf, sizeof(buf)) == 0,
       "%s: the data survives close and reopen", c->en);
    qed_get_info(img, info, &err);
    ok(info->file_size > 320 * KiB && info->file_size % (64 * KiB) == 0,
       "%s: the file grew by whole clusters", c->en);
    ok(!info->dirty, "%s: the reopened image is clean", c->en);
    support_tap_close(c->en, img, "read-only");

    /* NULL options: read-only, probed format, automatic engine. */
    ret = qed_open(path, NULL, &img, &err);
    is_u64(ret, 0, "%s: qed_open with NULL options", c->en);
    if (ret == 0) {
        ret = qed_pread(img, back, 16, MiB + 3, &err);
        ok(ret == 0 && memcmp(back, buf, 16) == 0,
           "%s: NULL options: reads work", c->en);
        ret = qed_pwrite(img, buf, 16, 0, &err);
        is_u64(ret, (uint64_t)-EPERM, "%s: NULL options: read-only", c->en);
        qed_close(img, NULL);
    }
out:
    free(info);
}

/* ---- unaligned, vectored and cluster-straddling I/O ------------------------ */

static void test_unaligned(const struct ctx *c)
{
    const char *path = support_path(c->dir, "unaligned.qed");
    const uint64_t size = 4 * MiB, cs = 64 * KiB;
    uint8_t *model = calloc(1, size), *buf = malloc(4 * cs + 10);
    qed_image *img = NULL;
    qed_error err = { 0 };
    static const struct { uint64_t off, len; const char *what; } w[] = {
        { 0, 1, "one byte at 0" },
        { 12345, 1000, "1000 bytes at 12345" },
        { 64 * KiB - 100, 300, "300 bytes straddling a cluster boundary" },
        { 5 * 64 * KiB + 7, 3 * 64 * KiB + 1, "3 clusters + 1 from 5c+7" },
        { 64 * KiB - 1, 2, "2 bytes over the boundary, cluster now data" },
        { 4 * MiB - 513, 513, "the last 513 bytes of the image" },
        { 20 * 64 * KiB, 64 * KiB, "one aligned cluster" },
        { 20 * 64 * KiB + 4000, 10, "10 bytes inside an allocated cluster" },
        { 19 * 64 * KiB + 65000, 2 * 64 * KiB,
          "2 clusters from just before an allocated cluster" },
    };

    is_u64(support_create(path, size, 0, 0, NULL, QED_FORMAT_PROBE, &err), 0,
           "%s: create a 4 MiB image", c->en);
    if (!model || !buf || !open_image(c, path, QED_OPEN_RDWR, &img, "it"))
        goto out;
    for (size_t i = 0; i < ARRAY_SIZE(w); i++) {
        int ret;
        support_fill(buf, w[i].len, 100 + i, w[i].off);
        ret = qed_pwrite(img, buf, w[i].len, w[i].off, &err);
        is_u64(ret, 0, "%s: write %s", c->en, w[i].what);
        memcpy(model + w[i].off, buf, w[i].len);
        memset(buf, 0, w[i].len);
        ret = qed_pread(img, buf, w[i].len, w[i].off, &err);
        ok(ret == 0 && memcmp(buf, model + w[i].off, w[i].len) == 0,
           "%s: read back %s", c->en, w[i].what);
        ok(image_matches(img, model, 0, size),
           "%s: whole image matches after %s", c->en, w[i].what);
    }

    /* A write from many small vector elements across a cluster boundary,
     * read back through a differently split vector. */
    {
        static const size_t wl[] = { 1, 511, 4096, 3, 60000, 7000, 1, 9 };
        static const size_t rl[] = { 5000, 1, 1, 65000, 2, 1617 };
        struct iovec wv[ARRAY_SIZE(wl)], rv[ARRAY_SIZE(rl)];
        uint64_t off = 30 * cs - 33333, total = 0, p = 0;
        uint8_t *wb = malloc(80000), *rb = calloc(1, 80000);
        struct call cl = { 0 };
        int ret;

        for (size_t i = 0; i < ARRAY_SIZE(wl); i++) {
            wv[i].iov_base = wb + total;
            wv[i].iov_len = wl[i];
            total += wl[i];
        }
        support_fill(wb, total, 555, off);
        for (size_t i = 0; i < ARRAY_SIZE(rl); i++) {
            rv[i].iov_base = rb + p;
            rv[i].iov_len = rl[i];
            p += rl[i];
        }
        is_u64(p, total, "%s: the two vectors have the same size", c->en);
        ret = qed_aio_writev(img, wv, (int)ARRAY_SIZE(wl), off, call_done,
                             &cl);
        is_u64(ret, 0, "%s: submit an 8-element vectored write", c->en);
        ok(!cl.done, "%s: its callback did not run inside the submit", c->en);
        is_u64(wait_call(img, &cl), 0, "%s: vectored write completes", c->en);
        memcpy(model + off, wb, total);
        memset(&cl, 0, sizeof(cl));
        ret = qed_aio_readv(img, rv, (int)ARRAY_SIZE(rl), off, call_done, &cl);
        is_u64(ret, 0, "%s: submit a 6-element vectored read", c->en);
        is_u64(wait_call(img, &cl), 0, "%s: vectored read completes", c->en);
        ok(memcmp(rb, wb, total) == 0,
           "%s: vectored read returns the vectored write", c->en);
        ok(image_matches(img, model, 0, size),
           "%s: whole image matches after the vectored write", c->en);
        free(wb);
        free(rb);
    }
    support_tap_close(c->en, img, "after the unaligned writes");
    if (open_image(c, path, 0, &img, "again")) {
        ok(image_matches(img, model, 0, size),
           "%s: whole image matches after reopening", c->en);
        support_tap_close(c->en, img, "again");
    }
out:
    free(model);
    free(buf);
}

/* ---- requests over several L2 tables ---------------------------------------- */

/* 4k clusters and table_size 1: each L2 table maps 2 MiB.  QEMU cannot open
 * such images; libqed must. */
static void test_table_size_1(const struct ctx *c)
{
    const char *path = support_path(c->dir, "ts1.qed");
    const uint64_t size = 8 * MiB, span = 2 * MiB;
    uint8_t *model = calloc(1, size), *buf = malloc(4 * MiB + 8192);
    qed_image *img = NULL;
    qed_error err = { 0 };
    static const struct { uint64_t off, len; const char *what; } w[] = {
        { 2 * MiB - 6000, 12000, "12000 bytes across the first table end" },
        { 4 * MiB - 1, 2, "2 bytes across the second table end" },
        { 1 * MiB + 5, 4 * MiB, "4 MiB over three tables, unaligned" },
        { 6 * MiB, 2 * MiB, "the whole last table" },
        { 2 * MiB - 4096, 8192, "two clusters on both sides of a table end" },
    };

    is_u64(support_create(path, size, 4096, 1, NULL, QED_FORMAT_PROBE, &err),
           0, "%s: create an image with 4k clusters and table_size 1", c->en);
    if (!model || !buf || !open_image(c, path, QED_OPEN_RDWR, &img, "it"))
        goto out;
    for (size_t i = 0; i < ARRAY_SIZE(w); i++) {
        int ret;
        support_fill(buf, w[i].len, 200 + i, w[i].off);
        ret = qed_pwrite(img, buf, w[i].len, w[i].off, &err);
        if (!ok(ret == 0, "%s: table_size 1: write %s", c->en, w[i].what))
            tap_diag("%s", err.message);
        memcpy(model + w[i].off, buf, w[i].len);
        memset(buf, 0, w[i].len);
        ret = qed_pread(img, buf, w[i].len, w[i].off, &err);
        ok(ret == 0 && memcmp(buf, model + w[i].off, w[i].len) == 0,
           "%s: table_size 1: read back %s", c->en, w[i].what);
    }
    ok(image_matches(img, model, 0, size),
       "%s: table_size 1: whole image matches the model", c->en);
    support_tap_close(c->en, img, "the table_size 1 image");

    /* Every L1 entry now points at a distinct table. */
    {
        uint64_t l1 = support_read_le64(path, HDR_L1_TABLE_OFFSET);
        uint64_t e[4];
        for (int i = 0; i < 4; i++)
            e[i] = support_read_le64(path, l1 + 8 * (uint64_t)i);
        ok(e[0] && e[1] && e[2] && e[3], "%s: table_size 1: all four L1 "
           "entries are set", c->en);
        ok(e[0] != e[1] && e[1] != e[2] && e[2] != e[3] && e[0] != e[2],
           "%s: table_size 1: the four tables are distinct", c->en);
        is_u64(support_read_le64(path, l1 + 32), 0,
               "%s: table_size 1: L1 entry 4 (past the image) stays 0", c->en);
    }
    if (open_image(c, path, 0, &img, "the table_size 1 image again")) {
        struct qed_block_status st = { .size = sizeof(st) };
        ok(image_matches(img, model, 0, size),
           "%s: table_size 1: whole image matches after reopening", c->en);
        is_u64(qed_block_status(img, span - 4096, 8192, &st, &err), 0,
               "%s: table_size 1: block status at a table end", c->en);
        ok(st.data && st.present && st.length <= 4096 && st.length > 0,
           "%s: table_size 1: status does not cross the table end", c->en);
        support_tap_close(c->en, img, "the table_size 1 image again");
    }
out:
    free(model);
    free(buf);
}

/* One 16 MiB request on 4k clusters, table_size 16 (32 MiB per table),
 * crossing a table boundary. */
static void test_big_write(const struct ctx *c)
{
    const char *path = support_path(c->dir, "big.qed");
    const uint64_t size = 64 * MiB, off = 24 * MiB + 512, len = 16 * MiB;
    uint8_t *buf = malloc(len + 2 * MiB), *back = malloc(len + 2 * MiB);
    qed_image *img = NULL;
    qed_error err = { 0 };
    int ret;

    is_u64(support_create(path, size, 4096, 16, NULL, QED_FORMAT_PROBE, &err),
           0, "%s: create 64 MiB, 4k clusters, table_size 16", c->en);
    if (!buf || !back || !open_image(c, path, QED_OPEN_RDWR, &img, "it"))
        goto out;
    support_fill(buf, len, 31337, off);
    ret = qed_pwrite(img, buf, len, off, &err);
    if (!ok(ret == 0, "%s: one 16 MiB write across a table boundary", c->en))
        tap_diag("%s", err.message);
    memset(back, 0xee, len);
    ret = qed_pread(img, back, len, off, &err);
    ok(ret == 0 && memcmp(back, buf, len) == 0,
       "%s: one 16 MiB read returns it", c->en);
    support_tap_close(c->en, img, "after the 16 MiB write");
    ok(support_file_size(path) <= 4096 + 64 * KiB + 2 * 64 * KiB +
                                      len + 2 * 4096,
       "%s: the file holds no more than the data and two tables", c->en);
    {
        struct support_check chk;
        support_qemu_check(path, &chk);
        if (!ok(chk.clean, "%s: 16 MiB write: qemu-img check finds nothing "
                "but QEMU's %" PRIu64 " phantom leak(s)", c->en,
                chk.phantom_leaks))
            tap_diag("exit %d: %s", chk.status, chk.output);
    }
    if (open_image(c, path, 0, &img, "it read-only")) {
        memset(back, 0xee, len + 2 * MiB);
        ret = qed_pread(img, back, len + 2 * MiB, off - MiB, &err);
        ok(ret == 0 && support_first_nonzero(back, MiB) == MiB,
           "%s: 1 MiB before the write reads zeros", c->en);
        ok(ret == 0 && memcmp(back + MiB, buf, len) == 0,
           "%s: the 16 MiB survive reopening", c->en);
        ok(ret == 0 && support_first_nonzero(back + MiB + len, MiB) == MiB,
           "%s: 1 MiB after the write reads zeros", c->en);
        support_tap_close(c->en, img, "it read-only");
    }
out:
    free(buf);
    free(back);
}

/* ---- random concurrent workload against a model ----------------------------- */

#define RW_SIZE (24 * MiB)
#define RW_CS 4096u
#define RW_TABLE_SIZE 2u  /* 4 MiB per L2 table: 6 tables */
#define RW_SPAN (4 * MiB)
#define RW_BATCH 64

enum rw_op { OP_WRITE, OP_ZEROES, OP_DISCARD, OP_READ };

struct rw_req {
    enum rw_op op;
    uint64_t offset, length;
    unsigned flags;
    uint8_t *buf;
    struct iovec iov[3];
    int iovcnt;
    struct call call;
};

struct rw_batch {
    struct rw_req req[RW_BATCH + 8];
    int n;
    uint64_t a[RW_BATCH + 8], b[RW_BATCH + 8]; /* byte ranges in use */
    int nranges;
};

static bool batch_free(const struct rw_batch *bt, uint64_t a, uint64_t b)
{
    for (int i = 0; i < bt->nranges; i++)
        if (a < bt->b[i] && bt->a[i] < b)
            return false;
    return true;
}

static void batch_claim(struct rw_batch *bt, uint64_t a, uint64_t b)
{
    bt->a[bt->nranges] = a;
    bt->b[bt->nranges] = b;
    bt->nranges++;
}

static struct rw_req *batch_add(struct rw_batch *bt, enum rw_op op,
                                uint64_t offset, uint64_t length)
{
    struct rw_req *r = &bt->req[bt->n++];
    memset(r, 0, sizeof(*r));
    r->op = op;
    r->offset = offset;
    r->length = length;
    return r;
}

/* Data of a write (pattern seed, at its offset) split into up to three
 * vector elements; reads get a buffer in up to three elements too. */
static void rw_prepare(struct rw_req *r, uint64_t seed, uint64_t *rng)
{
    uint64_t cut1, cut2;

    if (r->op != OP_WRITE && r->op != OP_READ)
        return;
    r->buf = malloc(r->length);
    if (r->op == OP_WRITE)
        support_fill(r->buf, r->length, seed, r->offset);
    else
        memset(r->buf, 0xcc, r->length);
    cut1 = support_rand_below(rng, r->length + 1);
    cut2 = cut1 + support_rand_below(rng, r->length - cut1 + 1);
    r->iovcnt = 0;
    if (cut1)
        r->iov[r->iovcnt++] = (struct iovec){ r->buf, cut1 };
    if (cut2 > cut1)
        r->iov[r->iovcnt++] = (struct iovec){ r->buf + cut1, cut2 - cut1 };
    if (r->length > cut2)
        r->iov[r->iovcnt++] =
            (struct iovec){ r->buf + cut2, r->length - cut2 };
}

static uint64_t rw_random_offset(uint64_t *rng)
{
    if (support_rand_below(rng, 10) < 3) {
        /* Near an L2 table boundary. */
        uint64_t edge = (1 + support_rand_below(rng, RW_SIZE / RW_SPAN - 1)) *
                        RW_SPAN;
        return edge - 3 * RW_CS + support_rand_below(rng, 6 * RW_CS);
    }
    return support_rand_below(rng, RW_SIZE);
}

static uint64_t rw_random_length(uint64_t *rng)
{
    unsigned k = (unsigned)support_rand_below(rng, 10);
    if (k < 2)
        return 1 + support_rand_below(rng, 512);
    if (k < 7)
        return 1 + support_rand_below(rng, 2 * RW_CS);
    return 1 + support_rand_below(rng, 40 * RW_CS);
}

static void rw_generate(struct rw_batch *bt, uint64_t *rng)
{
    memset(bt, 0, sizeof(*bt));

    /* Concurrent writes to disjoint pieces of one cluster. */
    {
        uint64_t cl = support_rand_below(rng, RW_SIZE / RW_CS) * RW_CS;
        uint64_t cuts[5] = { 0, 0, 0, 0, RW_CS };
        for (int i = 1; i < 4; i++)
            cuts[i] = 1 + support_rand_below(rng, RW_CS - 1);
        for (int i = 1; i < 4; i++)
            for (int j = i + 1; j < 4; j++)
                if (cuts[j] < cuts[i]) {
                    uint64_t t = cuts[i];
                    cuts[i] = cuts[j];
                    cuts[j] = t;
                }
        for (int i = 0; i < 4; i++) {
            if (cuts[i + 1] == cuts[i])
                continue;
            batch_add(bt, i == 2 ? OP_ZEROES : OP_WRITE, cl + cuts[i],
                      cuts[i + 1] - cuts[i]);
        }
        batch_claim(bt, cl, cl + RW_CS);
    }
    /* Overlapping writes in flight together, all with the same pattern. */
    {
        uint64_t a = rw_random_offset(rng) % (RW_SIZE - 8 * RW_CS);
        uint64_t n = 1 + support_rand_below(rng, 3 * RW_CS);
        uint64_t k = support_rand_below(rng, n);
        uint64_t m = 1 + support_rand_below(rng, n - k + 300);
        uint64_t end = MAX_U64(a + n, a + k + m);
        if (batch_free(bt, a, end)) {
            batch_add(bt, OP_WRITE, a, n)->flags = 1;       /* shared seed */
            batch_add(bt, OP_WRITE, a + k, m)->flags = 1;
            batch_add(bt, OP_WRITE, a, n)->flags = 1;
            batch_claim(bt, a, end);
        }
    }
    for (int tries = 0; bt->n < RW_BATCH && tries < 1000; tries++) {
        unsigned k = (unsigned)support_rand_below(rng, 20);
        enum rw_op op = k < 9 ? OP_WRITE : k < 13 ? OP_ZEROES
                                         : k < 15 ? OP_DISCARD : OP_READ;
        uint64_t off = rw_random_offset(rng), len = rw_random_length(rng);
        unsigned flags = 0;

        if (op == OP_ZEROES && support_rand_below(rng, 2)) {
            /* Whole clusters. */
            off = off / RW_CS * RW_CS;
            len = (1 + len / RW_CS) * RW_CS;
        }
        if (op == OP_ZEROES && support_rand_below(rng, 2))
            flags = QED_ZERO_MAY_UNMAP;
        if (off >= RW_SIZE)
            off = RW_SIZE - 1;
        if (len > RW_SIZE - off)
            len = RW_SIZE - off;
        if (!batch_free(bt, off, off + len))
            continue;
        batch_add(bt, op, off, len)->flags = flags;
        batch_claim(bt, off, off + len);
    }
}

/* Runs one batch: everything submitted before the loop runs once. */
static void rw_run_batch(const struct ctx *c, qed_image *img, uint8_t *model,
                         struct rw_batch *bt, int nb, uint64_t *rng)
{
    unsigned completed = 0, submitted = 0, failed = 0;
    uint64_t shared_seed = 1000000 + (uint64_t)nb;
    bool reads_ok = true, discards_ok = true, submit_ok = true;
    char first_err[600] = "";
    int ret;

    for (int i = 0; i < bt->n; i++) {
        struct rw_req *r = &bt->req[i];
        uint64_t seed = r->op == OP_WRITE && r->flags == 1
                            ? shared_seed
                            : (uint64_t)nb * 1000 + (uint64_t)i;
        rw_prepare(r, seed, rng);
        r->call.counter = &completed;
        switch (r->op) {
        case OP_WRITE:
            ret = qed_aio_writev(img, r->iov, r->iovcnt, r->offset, call_done,
                                 &r->call);
            break;
        case OP_READ:
            ret = qed_aio_readv(img, r->iov, r->iovcnt, r->offset, call_done,
                                &r->call);
            break;
        case OP_ZEROES:
            ret = qed_aio_write_zeroes(img, r->offset, r->length, r->flags,
                                       call_done, &r->call);
            break;
        default:
            ret = qed_aio_discard(img, r->offset, r->length, call_done,
                                  &r->call);
            break;
        }
        if (ret < 0) {
            submit_ok = false;
            tap_diag("submit op %d at %" PRIu64 "+%" PRIu64 ": %d", r->op,
                     r->offset, r->length, ret);
        } else {
            submitted++;
        }
    }
    ok(submit_ok && completed == 0,
       "%s: batch %d: %u requests submitted, no callback ran yet", c->en, nb,
       submitted);
    ret = support_run_until(qed_image_loop(img), &completed, submitted, 20000);
    if (!ok(ret == 0 && completed == submitted,
            "%s: batch %d: every callback fired", c->en, nb))
        tap_diag("loop %d, %u of %u completed", ret, completed, submitted);

    /* Reads overlap no write of the batch: they see the model. */
    for (int i = 0; i < bt->n; i++) {
        struct rw_req *r = &bt->req[i];
        if (r->call.ret < 0) {
            if (failed++ == 0)
                snprintf(first_err, sizeof(first_err),
                         "op %d at %" PRIu64 "+%" PRIu64 ": %s", r->op,
                         r->offset, r->length, r->call.err.message);
            continue;
        }
        if (r->op == OP_READ && r->call.done &&
            memcmp(r->buf, model + r->offset, r->length) != 0) {
            if (reads_ok)
                tap_diag("read at %" PRIu64 "+%" PRIu64 " differs",
                         r->offset, r->length);
            reads_ok = false;
        }
    }
    if (!ok(failed == 0, "%s: batch %d: no request failed", c->en, nb))
        tap_diag("%u failed; first: %s", failed, first_err);
    ok(reads_ok, "%s: batch %d: reads match the model", c->en, nb);

    for (int i = 0; i < bt->n; i++) {
        struct rw_req *r = &bt->req[i];
        if (r->op == OP_WRITE)
            memcpy(model + r->offset, r->buf, r->length);
        else if (r->op == OP_ZEROES)
            memset(model + r->offset, 0, r->length);
    }
    /* A discarded range may read as its old data or as zeros; adopt it. */
    for (int i = 0; i < bt->n; i++) {
        struct rw_req *r = &bt->req[i];
        uint8_t *now;
        qed_error err = { 0 };
        if (r->op != OP_DISCARD)
            continue;
        now = malloc(r->length);
        if (!now || qed_pread(img, now, r->length, r->offset, &err) < 0) {
            discards_ok = false;
            free(now);
            continue;
        }
        for (uint64_t j = 0; j < r->length; j++) {
            if (now[j] != 0 && now[j] != model[r->offset + j]) {
                if (discards_ok)
                    tap_diag("discarded byte %" PRIu64 " is 0x%02x, neither "
                             "0 nor 0x%02x", r->offset + j, now[j],
                             model[r->offset + j]);
                discards_ok = false;
                break;
            }
        }
        memcpy(model + r->offset, now, r->length);
        free(now);
    }
    ok(discards_ok, "%s: batch %d: discarded ranges read as old data or "
       "zeros", c->en, nb);
    for (int i = 0; i < bt->n; i++)
        free(bt->req[i].buf);
}

static void test_random_workload(const struct ctx *c, int batches,
                                 uint64_t seed)
{
    const char *path = support_path(c->dir, "random.qed");
    const char *raw = support_path(c->dir, "random.raw");
    uint8_t *model = calloc(1, RW_SIZE);
    struct rw_batch *bt = malloc(sizeof(*bt));
    uint64_t rng = seed;
    qed_image *img = NULL;
    qed_error err = { 0 };
    int ret;

    is_u64(support_create(path, RW_SIZE, RW_CS, RW_TABLE_SIZE, NULL,
                          QED_FORMAT_PROBE, &err),
           0, "%s: random: create 24 MiB, 4k clusters, table_size 2", c->en);
    if (!model || !bt || !open_image(c, path, QED_OPEN_RDWR, &img, "it"))
        goto out;
    for (int nb = 0; nb < batches; nb++) {
        rw_generate(bt, &rng);
        rw_run_batch(c, img, model, bt, nb, &rng);
    }
    ok(image_matches(img, model, 0, RW_SIZE),
       "%s: random: the whole image matches the model", c->en);
    support_tap_close(c->en, img, "after the random workload");
    if (open_image(c, path, 0, &img, "it again, read-only")) {
        ok(image_matches(img, model, 0, RW_SIZE),
           "%s: random: the model survives close and reopen", c->en);
        support_tap_close(c->en, img, "the reopened image");
    }
    {
        struct support_check chk;
        support_qemu_check(path, &chk);
        is_u64(chk.phantom_leaks, 0, "%s: random: the file is small enough "
               "for QEMU's cluster count to be exact", c->en);
        if (!ok(chk.status == 0 && chk.clean,
                "%s: random: qemu-img check exits 0", c->en))
            tap_diag("exit %d: %s", chk.status, chk.output);
    }
    ret = support_write_file(raw, model, RW_SIZE);
    is_u64(ret, 0, "%s: random: write the model to a raw file", c->en);
    support_tap_qemu_compare(path, raw, "%s: random: qemu-img compare with "
                             "the model exits 0", c->en);
out:
    free(model);
    free(bt);
}

/* An image whose size is not a multiple of the cluster size: its last
 * cluster is partial. */
static void test_odd_size(const struct ctx *c)
{
    const char *path = support_path(c->dir, "odd.qed");
    const uint64_t size = 100352; /* 1.53 clusters of 64k */
    uint8_t *model = calloc(1, size), *buf = malloc(size);
    qed_image *img = NULL;
    qed_error err = { 0 };
    int ret;

    is_u64(support_create(path, size, 0, 0, NULL, QED_FORMAT_PROBE, &err), 0,
           "%s: odd size: create a 100352-byte image", c->en);
    if (!model || !buf || !open_image(c, path, QED_OPEN_RDWR, &img, "it"))
        goto out;
    support_fill(buf, 512, 70, size - 512);
    ret = qed_pwrite(img, buf, 512, size - 512, &err);
    is_u64(ret, 0, "%s: odd size: write the last 512 bytes", c->en);
    memcpy(model + size - 512, buf, 512);
    support_fill(buf, 1, 71, size - 1);
    ret = qed_pwrite(img, buf, 1, size - 1, &err);
    is_u64(ret, 0, "%s: odd size: write the last byte", c->en);
    memcpy(model + size - 1, buf, 1);
    ret = qed_pwrite(img, buf, 2, size - 1, &err);
    is_u64(ret, (uint64_t)-EINVAL, "%s: odd size: one byte past the end is "
           "refused", c->en);
    ok(image_matches(img, model, 0, size),
       "%s: odd size: the image matches", c->en);
    {
        struct qed_block_status st = { .size = sizeof(st) };
        ret = qed_block_status(img, 64 * KiB, size, &st, &err);
        ok(ret == 0 && st.data && st.length == size - 64 * KiB,
           "%s: odd size: status of the partial last cluster stops at the "
           "image end", c->en);
    }
    support_tap_close(c->en, img, "it");
    if (open_image(c, path, 0, &img, "it again")) {
        ok(image_matches(img, model, 0, size),
           "%s: odd size: the image matches after reopening", c->en);
        support_tap_close(c->en, img, "it again");
    }
    support_tap_qemu_check(path, "%s: odd size: qemu-img check exits 0", c->en);
out:
    free(model);
    free(buf);
}

/* ---- extents across the end the file had at open ------------------------- */

/* A cluster allocated right at the end the file had when it was opened
 * sits next to the last cluster before it: an extent over both must read
 * and write like any other, in the same session and after reopening. */
static void test_across_open_end(const struct ctx *c)
{
    const char *path = support_path(c->dir, "open-end.qed");
    const uint64_t cs = 4 * KiB;
    uint8_t model[2 * 4096], buf[2 * 4096];
    qed_image *img = NULL;
    qed_error err = { 0 };
    int ret;

    is_u64(support_create(path, MiB, (uint32_t)cs, 0, NULL, QED_FORMAT_PROBE,
                          &err), 0, "%s: open end: create", c->en);
    if (!open_image(c, path, QED_OPEN_RDWR, &img, "it"))
        return;
    support_fill(model, cs, 80, 0);
    is_u64(qed_pwrite(img, model, cs, 0, &err), 0,
           "%s: open end: write the first cluster", c->en);
    support_tap_close(c->en, img, "it");
    if (!open_image(c, path, QED_OPEN_RDWR, &img, "it again"))
        return;
    /* Allocated at the old end of the file, contiguous with cluster 0. */
    support_fill(model + cs, cs, 81, cs);
    is_u64(qed_pwrite(img, model + cs, cs, cs, &err), 0,
           "%s: open end: write the second cluster", c->en);
    ret = qed_pread(img, buf, sizeof(buf), 0, &err);
    if (!ok(ret == 0 && memcmp(buf, model, sizeof(buf)) == 0,
            "%s: open end: one read over both clusters", c->en))
        tap_diag("ret %d: %s", ret, err.message);
    support_fill(model, sizeof(model), 82, 0);
    ret = qed_pwrite(img, model, sizeof(model), 0, &err);
    if (!ok(ret == 0, "%s: open end: one write over both clusters", c->en))
        tap_diag("ret %d: %s", ret, err.message);
    ok(image_matches(img, model, 0, sizeof(model)),
       "%s: open end: the image matches", c->en);
    support_tap_close(c->en, img, "it again");
    if (open_image(c, path, 0, &img, "it read-only")) {
        ok(image_matches(img, model, 0, sizeof(model)),
           "%s: open end: the image matches after reopening", c->en);
        support_tap_close(c->en, img, "it read-only");
    }
    support_tap_qemu_check(path, "%s: open end: qemu-img check exits 0",
                           c->en);
}

/* ---- block status ------------------------------------------------------------ */

static void check_status(const struct ctx *c, qed_image *img, uint64_t off,
                         uint64_t len, bool present, bool zero, bool data,
                         uint64_t want_len, const char *what,
                         struct qed_block_status *out)
{
    struct qed_block_status st = { .size = sizeof(st) };
    qed_error err = { 0 };
    int ret;

    memset(&st, 0xa5, sizeof(st));
    st.size = sizeof(st);
    ret = qed_block_status(img, off, len, &st, &err);
    if (!ok(ret == 0, "%s: status of %s succeeds", c->en, what))
        tap_diag("%s", err.message);
    ok(st.present == present && st.zero == zero && st.data == data,
       "%s: status of %s: present %d zero %d data %d", c->en, what, present,
       zero, data);
    if (st.present != present || st.zero != zero || st.data != data)
        tap_diag("got present %d zero %d data %d", st.present, st.zero,
                 st.data);
    is_u64(st.length, want_len, "%s: status of %s: length", c->en, what);
    if (out)
        *out = st;
}

static void test_block_status(const struct ctx *c)
{
    const char *path = support_path(c->dir, "status.qed");
    const uint64_t cs = 64 * KiB, size = 4 * MiB;
    uint8_t *buf = malloc(2 * cs), *back = malloc(2 * cs);
    struct qed_block_status st = { .size = sizeof(st) };
    qed_image *img = NULL;
    qed_error err = { 0 };
    int ret;

    is_u64(support_create(path, size, 0, 0, NULL, QED_FORMAT_PROBE, &err), 0,
           "%s: status: create a 4 MiB image", c->en);
    if (!buf || !back || !open_image(c, path, QED_OPEN_RDWR, &img, "it"))
        goto out;
    check_status(c, img, 0, size, false, true, false, size,
                 "an empty image", &st);
    is_u64(st.depth, 0, "%s: status of an empty image: depth 0", c->en);
    ok(!st.has_offset, "%s: status of an empty image: no offset", c->en);

    support_fill(buf, 2 * cs, 9, cs);
    ret = qed_pwrite(img, buf, 2 * cs, cs, &err);
    is_u64(ret, 0, "%s: status: write clusters 1-2", c->en);
    check_status(c, img, 0, size, false, true, false, cs,
                 "the unallocated head", NULL);
    check_status(c, img, cs, size - cs, true, false, true, 2 * cs,
                 "the written clusters", &st);
    is_u64(st.depth, 0, "%s: status of data: depth 0", c->en);
    ok(st.has_offset, "%s: status of data: has an offset", c->en);
    ok(st.has_offset && support_pread(path, back, 2 * cs, st.offset) == 0 &&
           memcmp(back, buf, 2 * cs) == 0,
       "%s: status of data: the host offset holds the data", c->en);
    {
        uint64_t host = st.offset;
        check_status(c, img, cs + 100, size, true, false, true, 2 * cs - 100,
                     "data from mid-cluster", &st);
        is_u64(st.offset, host + 100,
               "%s: status from mid-cluster: offset moves along", c->en);
    }
    check_status(c, img, cs, 10, true, false, true, 10,
                 "data, length clipped to 10", NULL);
    check_status(c, img, 3 * cs, size - 3 * cs, false, true, false,
                 size - 3 * cs, "the unallocated tail", NULL);
    check_status(c, img, size - 1, 100, false, true, false, 1,
                 "the last byte, length clipped at the image end", NULL);

    ret = qed_block_status(img, size, 1, &st, &err);
    is_u64(ret, (uint64_t)-EINVAL, "%s: status at the image size: EINVAL",
           c->en);
    ret = qed_block_status(img, 0, 0, &st, &err);
    is_u64(ret, (uint64_t)-EINVAL, "%s: status of length 0: EINVAL", c->en);
    {
        struct call cl = { 0 };
        ret = qed_aio_block_status(img, cs, cs, &st, call_done, &cl);
        is_u64(ret, 0, "%s: qed_aio_block_status submits", c->en);
        ok(!cl.done, "%s: its callback did not run inside the submit", c->en);
        is_u64(wait_call(img, &cl), 0, "%s: qed_aio_block_status completes",
               c->en);
        ok(st.data && st.length == cs,
           "%s: qed_aio_block_status fills the status", c->en);
    }
    support_tap_close(c->en, img, "the status image");
out:
    free(buf);
    free(back);
}

/* ---- write zeroes and zero clusters ----------------------------------------- */

/* With a backing file, whole clusters of write-zeroes become zero clusters
 * (they cannot just stay unallocated: the backing data would show). */
static void test_zero_clusters(const struct ctx *c)
{
    const char *base = support_path(c->dir, "zbase.raw");
    const char *path = support_path(c->dir, "zero.qed");
    const uint64_t cs = 64 * KiB, bsize = 1 * MiB, size = 2 * MiB;
    uint8_t *model = malloc(size), *buf = malloc(size);
    struct qed_block_status st = { .size = sizeof(st) };
    qed_image *img = NULL;
    qed_error err = { 0 };
    int ret;

    if (!model || !buf)
        goto out;
    support_fill(model, bsize, 77, 0);
    memset(model + bsize, 0, size - bsize);
    is_u64(support_write_file(base, model, bsize), 0,
           "%s: zero: write a 1 MiB raw backing file", c->en);
    is_u64(support_create(path, size, 0, 0, "zbase.raw", QED_FORMAT_RAW,
                          &err),
           0, "%s: zero: create a 2 MiB image over it", c->en);
    if (!open_image(c, path, QED_OPEN_RDWR, &img, "it"))
        goto out;
    ok(image_matches(img, model, 0, size),
       "%s: zero: the new image reads the backing data", c->en);

    ret = qed_write_zeroes(img, cs, 2 * cs, QED_ZERO_MAY_UNMAP, &err);
    is_u64(ret, 0, "%s: zero: write zeroes over clusters 1-2", c->en);
    memset(model + cs, 0, 2 * cs);
    check_status(c, img, cs, size, true, true, false, 2 * cs,
                 "whole zeroed clusters", &st);
    is_u64(st.depth, 0, "%s: zero cluster answered by the top image", c->en);
    ok(!st.has_offset, "%s: zero cluster has no host offset", c->en);

    ret = qed_write_zeroes(img, 4 * cs, cs, 0, &err);
    is_u64(ret, 0, "%s: zero: write zeroes, no MAY_UNMAP, cluster 4", c->en);
    memset(model + 4 * cs, 0, cs);
    ret = qed_block_status(img, 4 * cs, cs, &st, &err);
    ok(ret == 0 && st.present && st.depth == 0 && st.length == cs,
       "%s: zero: cluster 4 is stored in the top image", c->en);

    ret = qed_write_zeroes(img, 6 * cs + 1000, 3000, QED_ZERO_MAY_UNMAP, &err);
    is_u64(ret, 0, "%s: zero: partial write zeroes in cluster 6", c->en);
    memset(model + 6 * cs + 1000, 0, 3000);

    /* Partial head, two whole clusters, partial tail. */
    ret = qed_write_zeroes(img, 8 * cs + 60000, 2 * cs + 10000,
                           QED_ZERO_MAY_UNMAP, &err);
    is_u64(ret, 0, "%s: zero: write zeroes partial+whole+partial", c->en);
    memset(model + 8 * cs + 60000, 0, 2 * cs + 10000);
    check_status(c, img, 9 * cs, cs * 4, true, true, false, 2 * cs,
                 "the whole clusters inside partial+whole+partial", NULL);
    ok(image_matches(img, model, 0, size),
       "%s: zero: reads match (backing data around partial zeroes)", c->en);

    /* Past the end of the backing file nothing needs storing. */
    ret = qed_write_zeroes(img, bsize + 2 * cs, cs, QED_ZERO_MAY_UNMAP, &err);
    is_u64(ret, 0, "%s: zero: write zeroes past the backing file end", c->en);
    ret = qed_block_status(img, bsize + 2 * cs, cs, &st, &err);
    ok(ret == 0 && st.zero && !st.data && st.length == cs,
       "%s: zero: zeroes past the backing file end read as zeros", c->en);

    /* NO_FALLBACK: zeroing part of an unallocated cluster over backing data
     * needs zero bytes written: refuse rather than write them. */
    ret = qed_write_zeroes(img, 12 * cs + 512, 512,
                           QED_ZERO_MAY_UNMAP | QED_ZERO_NO_FALLBACK, &err);
    is_u64(ret, (uint64_t)-ENOTSUP,
           "%s: zero: NO_FALLBACK partial cluster over backing: ENOTSUP",
           c->en);
    if (ret == 0)
        memset(model + 12 * cs + 512, 0, 512);
    ret = qed_write_zeroes(img, 13 * cs, cs,
                           QED_ZERO_MAY_UNMAP | QED_ZERO_NO_FALLBACK, &err);
    is_u64(ret, 0, "%s: zero: NO_FALLBACK whole cluster succeeds", c->en);
    memset(model + 13 * cs, 0, cs);
    ok(image_matches(img, model, 0, size),
       "%s: zero: reads match the model", c->en);
    support_tap_close(c->en, img, "the zero image");

    /* Zero clusters need no backing file to read. */
    if (open_image(c, path, QED_OPEN_NO_BACKING, &img, "it without backing")) {
        memset(buf, 0xff, 2 * cs);
        ret = qed_pread(img, buf, 2 * cs, cs, &err);
        ok(ret == 0 && support_first_nonzero(buf, 2 * cs) == 2 * cs,
           "%s: zero: zero clusters read as zeros without the backing file",
           c->en);
        support_tap_close(c->en, img, "it without backing");
    }
    if (open_image(c, path, 0, &img, "it read-only")) {
        ok(image_matches(img, model, 0, size),
           "%s: zero: reads match after reopening", c->en);
        support_tap_close(c->en, img, "it read-only");
    }

    /* Zero clusters on both sides of an L2 table boundary (4k clusters,
     * table_size 1: 2 MiB per table), over a 4 MiB backing file. */
    {
        const char *b2 = support_path(c->dir, "zbase2.raw");
        const char *p2 = support_path(c->dir, "zero-ts1.qed");
        const uint64_t s2 = 4 * MiB, edge = 2 * MiB;
        uint8_t *m2 = malloc(s2);

        support_fill(m2, s2, 78, 0);
        support_write_file(b2, m2, s2);
        ret = support_create(p2, 0, 4096, 1, "zbase2.raw", QED_FORMAT_RAW,
                             &err);
        is_u64(ret, 0, "%s: zero ts1: create 4k/table_size 1 over 4 MiB",
               c->en);
        if (m2 && ret == 0 &&
            open_image(c, p2, QED_OPEN_RDWR, &img, "the ts1 image")) {
            ret = qed_write_zeroes(img, edge - 8192, 16384,
                                   QED_ZERO_MAY_UNMAP, &err);
            is_u64(ret, 0, "%s: zero ts1: zeroes over the table boundary",
                   c->en);
            memset(m2 + edge - 8192, 0, 16384);
            check_status(c, img, edge - 8192, 16384, true, true, false, 8192,
                         "zero clusters before the table boundary", NULL);
            check_status(c, img, edge, 8192, true, true, false, 8192,
                         "zero clusters after the table boundary", NULL);
            ret = qed_write_zeroes(img, edge - 100, 200, 0, &err);
            is_u64(ret, 0, "%s: zero ts1: partial zeroes over the boundary "
                   "(both sides already zero)", c->en);
            ret = qed_write_zeroes(img, edge + 8192 - 100, 200, 0, &err);
            is_u64(ret, 0, "%s: zero ts1: partial zeroes from a zero "
                   "cluster into backing data", c->en);
            memset(m2 + edge + 8192 - 100, 0, 200);
            ok(image_matches(img, m2, 0, s2),
               "%s: zero ts1: the image matches the model", c->en);
            support_tap_close(c->en, img, "the ts1 image");
        }
        free(m2);
    }
out:
    free(model);
    free(buf);
}

/* ---- argument errors ---------------------------------------------------------- */

static void test_errors(const struct ctx *c)
{
    const char *path = support_path(c->dir, "errors.qed");
    const uint64_t size = 1 * MiB;
    uint8_t buf[1024] = { 0 };
    uint8_t *before = NULL;
    size_t before_len = 0;
    struct iovec v = { buf, sizeof(buf) };
    struct call cl = { 0 };
    qed_image *img = NULL;
    qed_error err = { 0 };
    int ret;

    is_u64(support_create(path, size, 0, 0, NULL, QED_FORMAT_PROBE, &err), 0,
           "%s: errors: create a 1 MiB image", c->en);
    if (!open_image(c, path, QED_OPEN_RDWR, &img, "it read-write"))
        return;
    memset(&err, 0, sizeof(err));
    ret = qed_pread(img, buf, 20, size - 10, &err);
    is_u64(ret, (uint64_t)-EINVAL, "%s: read across the end: -EINVAL", c->en);
    is_u64(err.code, EINVAL, "%s: read across the end: err.code", c->en);
    ok(err.message[0] != '\0', "%s: read across the end: a message", c->en);
    ret = qed_pread(img, buf, 1, size, &err);
    is_u64(ret, (uint64_t)-EINVAL, "%s: read at the end: -EINVAL", c->en);
    ret = qed_pread(img, buf, 16, UINT64_MAX - 7, &err);
    is_u64(ret, (uint64_t)-EINVAL, "%s: read where offset+length wraps",
           c->en);
    ret = qed_pwrite(img, buf, 20, size - 10, &err);
    is_u64(ret, (uint64_t)-EINVAL, "%s: write across the end: -EINVAL",
           c->en);
    ret = qed_write_zeroes(img, size - 512, 1024, 0, &err);
    is_u64(ret, (uint64_t)-EINVAL, "%s: write zeroes across the end", c->en);
    ret = qed_discard(img, size, 512, &err);
    is_u64(ret, (uint64_t)-EINVAL, "%s: discard past the end", c->en);
    ret = qed_aio_readv(img, &v, 1, size - 1, call_done, &cl);
    is_u64(ret, (uint64_t)-EINVAL, "%s: aio read across the end refused",
           c->en);
    qed_loop_run(qed_image_loop(img), 0);
    ok(!cl.done, "%s: a refused request never calls back", c->en);
    ret = qed_pread(img, buf, 0, size, &err);
    is_u64(ret, 0, "%s: a zero-length read at the end is fine", c->en);
    support_tap_close(c->en, img, "it read-write");

    support_read_file(path, &before, &before_len);
    if (!open_image(c, path, 0, &img, "it read-only"))
        goto out;
    memset(&err, 0, sizeof(err));
    ret = qed_pwrite(img, buf, 10, 0, &err);
    is_u64(ret, (uint64_t)-EPERM, "%s: write on read-only: -EPERM", c->en);
    is_u64(err.code, EPERM, "%s: write on read-only: err.code", c->en);
    ret = qed_write_zeroes(img, 0, 512, 0, &err);
    is_u64(ret, (uint64_t)-EPERM, "%s: write zeroes on read-only: -EPERM",
           c->en);
    ret = qed_discard(img, 0, 512, &err);
    is_u64(ret, (uint64_t)-EPERM, "%s: discard on read-only: -EPERM", c->en);
    ret = qed_aio_writev(img, &v, 1, 0, call_done, &cl);
    is_u64(ret, (uint64_t)-EPERM, "%s: aio write on read-only refused", c->en);
    ret = qed_aio_write_zeroes(img, 0, 512, 0, call_done, &cl);
    is_u64(ret, (uint64_t)-EPERM, "%s: aio write zeroes on read-only refused",
           c->en);
    ret = qed_pread(img, buf, sizeof(buf), 0, &err);
    is_u64(ret, 0, "%s: reads still work read-only", c->en);
    support_tap_close(c->en, img, "it read-only");
    {
        uint8_t *after = NULL;
        size_t after_len = 0;
        support_read_file(path, &after, &after_len);
        ok(before && after && before_len == after_len &&
               memcmp(before, after, before_len) == 0,
           "%s: the read-only session left the file unchanged", c->en);
        free(after);
    }
out:
    free(before);
}

/* ---- several images on one caller-owned loop ----------------------------------- */

static void test_shared_loop(const struct ctx *c)
{
    const char *p1 = support_path(c->dir, "loop1.qed");
    const char *p2 = support_path(c->dir, "loop2.qed");
    qed_loop *loop = NULL;
    qed_image *a = NULL, *b = NULL;
    qed_error err = { 0 };
    struct qed_open_options o = { .size = sizeof(o), .flags = QED_OPEN_RDWR };
    uint8_t *wa = malloc(MiB), *wb = malloc(MiB), *ra = malloc(MiB),
            *rb = malloc(MiB);
    unsigned completed = 0;
    struct call calls[4] = { { &completed }, { &completed }, { &completed },
                             { &completed } };
    struct iovec va = { wa, MiB }, vb = { wb, MiB };
    struct iovec rva = { ra, MiB }, rvb = { rb, MiB };
    int ret;

    ret = qed_loop_new(c->engine, &loop, &err);
    if (!ok(ret == 0, "%s: qed_loop_new", c->en)) {
        tap_diag("%s", err.message);
        goto out;
    }
    is_str(qed_loop_engine_name(loop), c->ename, "%s: loop engine name",
           c->en);
    support_create(p1, 4 * MiB, 4096, 1, NULL, QED_FORMAT_PROBE, &err);
    support_create(p2, 4 * MiB, 0, 0, NULL, QED_FORMAT_PROBE, &err);
    o.loop = loop;
    ret = qed_open(p1, &o, &a, &err);
    is_u64(ret, 0, "%s: open a first image on the shared loop", c->en);
    ret = qed_open(p2, &o, &b, &err);
    is_u64(ret, 0, "%s: open a second image on the shared loop", c->en);
    if (!a || !b)
        goto close;
    ok(qed_image_loop(a) == loop && qed_image_loop(b) == loop,
       "%s: both images report the shared loop", c->en);
    support_fill(wa, MiB, 1, MiB + 100);
    support_fill(wb, MiB, 2, 2 * MiB - 7);
    qed_aio_writev(a, &va, 1, MiB + 100, call_done, &calls[0]);
    qed_aio_writev(b, &vb, 1, 2 * MiB - 7, call_done, &calls[1]);
    ret = support_run_until(loop, &completed, 2, 20000);
    ok(ret == 0 && calls[0].ret == 0 && calls[1].ret == 0,
       "%s: writes to both images complete on the shared loop", c->en);
    qed_aio_readv(a, &rva, 1, MiB + 100, call_done, &calls[2]);
    qed_aio_readv(b, &rvb, 1, 2 * MiB - 7, call_done, &calls[3]);
    ret = support_run_until(loop, &completed, 4, 20000);
    ok(ret == 0 && memcmp(ra, wa, MiB) == 0 && memcmp(rb, wb, MiB) == 0,
       "%s: reads of both images return their data", c->en);
close:
    if (a)
        is_u64(qed_close(a, &err), 0, "%s: close the first image", c->en);
    if (b)
        is_u64(qed_close(b, &err), 0, "%s: close the second image", c->en);
    qed_loop_free(loop);
out:
    free(wa);
    free(wb);
    free(ra);
    free(rb);
}

int main(void)
{
    char dir[256];

    if (support_mkdtemp("engine", dir, sizeof(dir)) < 0) {
        ok(0, "make a temporary directory");
        return tap_done();
    }
    for (int i = 0; i < SUPPORT_ENGINE_COUNT; i++) {
        const char *name = support_engine_name(support_engines[i]);
        struct ctx c = { support_engines[i], name, name, dir,
                         QED_CACHE_WRITEBACK, 0 };
        char label[64];

        test_round_trip(&c);
        test_unaligned(&c);
        test_table_size_1(&c);
        test_big_write(&c);
        test_odd_size(&c);
        test_across_open_end(&c);
        test_block_status(&c);
        test_zero_clusters(&c);
        test_errors(&c);
        test_shared_loop(&c);
        test_random_workload(&c, 40, 0x5eed0001);

        /* The smallest L2 cache: tables leave it while others are used. */
        snprintf(label, sizeof(label), "%s l2-cache=1", name);
        c.en = label;
        c.l2_cache_bytes = 1;
        test_random_workload(&c, 20, 0x5eed0002);

        /* O_DIRECT: unaligned requests go through bounce buffers. */
        snprintf(label, sizeof(label), "%s cache=none", name);
        c.l2_cache_bytes = 0;
        c.cache = QED_CACHE_NONE;
        test_unaligned(&c);
        test_table_size_1(&c);
        test_zero_clusters(&c);
        test_random_workload(&c, 20, 0x5eed0003);
    }
    support_rmtree(dir);
    return tap_done();
}
