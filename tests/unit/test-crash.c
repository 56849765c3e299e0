/* SPDX-License-Identifier: MIT */
/* Power loss at random moments: thousands of cut points over random
 * workloads (allocating writes, overwrites, write-zeroes, discards, flushes,
 * reads; 16 to 64 requests in flight) on images in the simulated file system
 * of io-sim.c, without a backing file, over a raw one and over a QED one,
 * with and without O_DIRECT and fallocate, and with copy-on-read (reads
 * that fill the image from its backing file must leave it as consistent as
 * writes do, and never cover a client's write with the backing file's
 * data).
 *
 * Each case starts from a fresh image and runs several cycles of: a
 * workload cut by a power loss at a random I/O operation (a few cycles cut
 * the clean close, some also the repair on the next open); close the old
 * image (errors expected); reboot; open read-write, which must succeed;
 * qed_check must find no corruption (and no leak without a backing file,
 * whose open repairs it; with one, leaks are allowed until a check with
 * QED_CHECK_REPAIR_ALL, after which it must be clean); and every 512-byte
 * sector must read as a content it may have:
 *   - a write acknowledged before a flush that completed reads back exactly;
 *   - any other sector reads as its last durable content or as the content of
 *     one of the later writes, write-zeroes (zeros) or discards (zeros) that
 *     were in flight or unflushed at the cut.
 * Every sector ever written holds a self-describing content (write id and
 * sector number, then bytes derived from both), so each sector read names
 * the write it came from.  Requests in flight never overlap each other.
 *
 * Reproduce one case: test-crash CONFIG CASE (printed with every failure);
 * test-crash CONFIG runs one configuration. */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "qed-image.h"
#include "io-sim.h"
#include "qed.h"
#include "support-image.h"
#include "support-sim.h"
#include "support-tap.h"

enum backing_kind { BK_NONE, BK_RAW, BK_QED };

struct config {
    const char *name;
    uint32_t cluster_size, table_size;
    uint64_t size;
    enum backing_kind backing;
    uint64_t backing_size;
    enum qed_cache cache;
    bool fallocate;
    unsigned cases, cycles; /* cuts = cases * cycles */
    unsigned requests;      /* per cycle */
    bool copy_on_read;      /* opened with QED_OPEN_COPY_ON_READ */
};

static const struct config configs[] = {
    { "4k clusters, table_size 1, no backing", 4096, 1, 8 * MiB, BK_NONE, 0,
      QED_CACHE_WRITEBACK, true, 100, 5, 160 },
    { "64k clusters, table_size 1, no backing", 65536, 1, 16 * MiB, BK_NONE,
      0, QED_CACHE_WRITEBACK, true, 50, 5, 120 },
    { "4k clusters, table_size 2, raw backing", 4096, 2, 8 * MiB, BK_RAW,
      6 * MiB + 1536, QED_CACHE_WRITEBACK, true, 100, 5, 160 },
    { "16k clusters, table_size 1, raw backing", 16384, 1, 8 * MiB, BK_RAW,
      5 * MiB + 512, QED_CACHE_WRITEBACK, true, 60, 5, 140 },
    { "8k clusters, table_size 1, QED backing", 8192, 1, 8 * MiB, BK_QED,
      6 * MiB, QED_CACHE_WRITEBACK, true, 60, 5, 140 },
    { "4k clusters, table_size 1, no backing, O_DIRECT", 4096, 1, 8 * MiB,
      BK_NONE, 0, QED_CACHE_NONE, true, 50, 5, 140 },
    { "4k clusters, table_size 1, raw backing, O_DIRECT", 4096, 1, 8 * MiB,
      BK_RAW, 7 * MiB + 3584, QED_CACHE_NONE, true, 50, 5, 140 },
    { "4k clusters, table_size 4, no backing, no fallocate", 4096, 4, 8 * MiB,
      BK_NONE, 0, QED_CACHE_WRITEBACK, false, 40, 5, 140 },
    { "16k clusters, table_size 1, raw backing, no fallocate", 16384, 1,
      8 * MiB, BK_RAW, 6 * MiB + 2560, QED_CACHE_WRITEBACK, false, 40, 5,
      140 },
    { "4k clusters, table_size 1, raw backing, copy-on-read", 4096, 1,
      8 * MiB, BK_RAW, 6 * MiB + 1536, QED_CACHE_WRITEBACK, true, 50, 5, 140,
      true },
    { "8k clusters, table_size 1, QED backing, copy-on-read", 8192, 1,
      8 * MiB, BK_QED, 6 * MiB, QED_CACHE_WRITEBACK, true, 40, 5, 140,
      true },
};
#define NCONFIGS (sizeof(configs) / sizeof(configs[0]))

/* Short names for the many random draws of the workload. */
static uint64_t rnd(uint64_t *state)
{
    return support_rand(state);
}

static uint64_t below(uint64_t *state, uint64_t n)
{
    return support_rand_below(state, n);
}

/* ---- the model ------------------------------------------------------------------ */

enum kind { K_WRITE, K_ZERO, K_DISCARD, K_READ, K_FLUSH };
static const char *const kind_names[] = { "write", "write-zeroes", "discard",
                                          "read", "flush" };

struct oprec {
    enum kind kind;
    uint32_t id;        /* K_WRITE */
    uint64_t off, len;
    bool done;          /* succeeded before the cut */
    uint64_t seq;       /* done: completion; flush: submission */
};

struct hnode {
    uint32_t op;
    uint32_t next;
};

#define NIL UINT32_MAX

struct campaign;

struct req {
    struct campaign *c;
    uint32_t op;
    uint8_t *buf;
    struct iovec iov;
};

struct campaign {
    const struct config *cfg;
    unsigned cfg_index, case_index;
    uint64_t case_seed;
    unsigned cycle;
    uint64_t rng;
    qed_loop *loop;
    struct memfs *fs;
    qed_image *img;
    uint64_t nsect;
    uint32_t *orig;      /* durable content id of each sector at cycle start */
    uint32_t *head, *tail; /* per-sector history (op order) */
    uint8_t *busy;
    struct hnode *pool;
    size_t pool_n, pool_cap;
    struct oprec *ops;
    size_t ops_n, ops_cap;
    uint32_t next_id;
    uint64_t seq;
    uint64_t durable_seq; /* ops done before this seq are durable */
    unsigned in_flight, max_in_flight;
    uint64_t cut;         /* op number of the power loss (0: none armed) */
    uint64_t ops_at_start;
    bool failed;          /* this case has reported a failure */
    bool dirty_at_reopen; /* NEED_CHECK was set after the cut */
    unsigned printed, noted; /* diagnostics so far (per configuration) */
    char where[256];
    /* results */
    unsigned cuts, cuts_in_flight, reopen_fail, check_fail, data_fail,
        early_fail, read_fail, close_cuts, repair_cuts, leak_fail;
    uint64_t requests_done, max_seen_in_flight;
};

/* QED_CRASH_SEED=N draws other cases than the default (N = 0), for longer
 * soak runs: every failure names N with the case. */
static uint64_t seed_variant;

/* Prints a finding about the current case, with what reruns it alone. */
static void report(const struct campaign *c, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static void report(const struct campaign *c, const char *fmt, va_list ap)
{
    char msg[600];

    vsnprintf(msg, sizeof(msg), fmt, ap);
    tap_diag("config %u (%s) case %u (seed 0x%" PRIx64 ") cycle %u, %s: %s "
             "[rerun: QED_CRASH_SEED=%" PRIu64 " test-crash %u %u]",
             c->cfg_index, c->cfg->name, c->case_index, c->case_seed,
             c->cycle, c->where, msg, seed_variant, c->cfg_index,
             c->case_index);
}

/* A finding that fails the case. */
static void failure(struct campaign *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void failure(struct campaign *c, const char *fmt, ...)
{
    va_list ap;

    c->failed = true;
    if (c->printed++ >= 12)
        return;
    va_start(ap, fmt);
    report(c, fmt, ap);
    va_end(ap);
}

/* A finding that does not stop the case. */
static void note(struct campaign *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void note(struct campaign *c, const char *fmt, ...)
{
    va_list ap;

    if (c->noted++ >= 5)
        return;
    va_start(ap, fmt);
    report(c, fmt, ap);
    va_end(ap);
}

/* Room for element n of a growing array of *cap elements of size bytes:
 * doubles it when full, starting from first. */
static void *grow(void *array, size_t *cap, size_t n, size_t size,
                  size_t first)
{
    if (n < *cap)
        return array;
    *cap = *cap ? 2 * *cap : first;
    array = realloc(array, *cap * size);
    if (!array)
        abort();
    return array;
}

static uint32_t new_op(struct campaign *c, enum kind kind, uint64_t off,
                       uint64_t len)
{
    struct oprec *o;

    c->ops = grow(c->ops, &c->ops_cap, c->ops_n, sizeof(*c->ops), 256);
    o = &c->ops[c->ops_n];
    memset(o, 0, sizeof(*o));
    o->kind = kind;
    o->off = off;
    o->len = len;
    if (kind == K_WRITE)
        o->id = c->next_id++;
    return (uint32_t)c->ops_n++;
}

static void history_add(struct campaign *c, uint64_t s, uint32_t op)
{
    struct hnode *n;

    c->pool = grow(c->pool, &c->pool_cap, c->pool_n, sizeof(*c->pool), 4096);
    n = &c->pool[c->pool_n];
    n->op = op;
    n->next = NIL;
    if (c->tail[s] == NIL)
        c->head[s] = (uint32_t)c->pool_n;
    else
        c->pool[c->tail[s]].next = (uint32_t)c->pool_n;
    c->tail[s] = (uint32_t)c->pool_n;
    c->pool_n++;
}

/* Is got a content sector s may have?  all_done: every op is settled (for
 * reads while running); otherwise the durable point is durable_seq. */
static bool sector_allowed(const struct campaign *c, uint64_t s, uint32_t got,
                           bool running)
{
    uint32_t hist[512];
    int n = 0, j = -1;

    for (uint32_t i = c->head[s]; i != NIL; i = c->pool[i].next) {
        if (n == (int)QED_ARRAY_SIZE(hist))
            return true; /* never: histories are short */
        hist[n++] = c->pool[i].op;
    }
    for (int i = 0; i < n; i++) {
        const struct oprec *o = &c->ops[hist[i]];
        if (running ? o->done : (o->done && o->seq < c->durable_seq))
            j = i;
    }
    /* Anything after the durable point may have landed. */
    for (int i = j + 1; i < n; i++) {
        const struct oprec *o = &c->ops[hist[i]];
        if (o->kind == K_WRITE ? got == o->id : got == ID_ZERO)
            return true;
    }
    /* The durable point itself: a discard may also have left the content
     * before it. */
    for (int i = j; i >= 0; i--) {
        const struct oprec *o = &c->ops[hist[i]];
        if (o->kind == K_WRITE)
            return got == o->id;
        if (o->kind == K_ZERO)
            return got == ID_ZERO;
        if (got == ID_ZERO)
            return true;
    }
    return got == c->orig[s];
}

/* One request as " write#7@4096+512(durable)": its kind, write id, range
 * and how far it got.  Returns what snprintf returns. */
static size_t describe_op(const struct campaign *c, const struct oprec *o,
                          char *out, size_t size)
{
    return (size_t)snprintf(out, size, " %s%s%u@%" PRIu64 "+%" PRIu64 "%s",
                            kind_names[o->kind],
                            o->kind == K_WRITE ? "#" : "",
                            o->kind == K_WRITE ? o->id : 0, o->off, o->len,
                            !o->done ? "(in flight)"
                            : o->seq < c->durable_seq ? "(durable)"
                                                      : "(unflushed)");
}

static void describe_sector(const struct campaign *c, uint64_t s, char *out,
                            size_t size)
{
    size_t used = (size_t)snprintf(out, size, "orig id %u; history:",
                                   c->orig[s]);
    for (uint32_t i = c->head[s]; i != NIL && used < size; i = c->pool[i].next) {
        const struct oprec *o = &c->ops[c->pool[i].op];
        used += describe_op(c, o, out + used, size - used);
    }
}

/* The requests of this cycle that touched the cluster of sector s. */
static void describe_cluster(const struct campaign *c, uint64_t s)
{
    uint64_t cs = c->cfg->cluster_size;
    uint64_t lo = round_down_u64(s * SECT, cs), hi = lo + cs;
    char line[2000];
    size_t used = 0;

    used += (size_t)snprintf(line, sizeof(line), "requests on its cluster "
                             "%" PRIu64 "+%" PRIu64 ":", lo, cs);
    for (size_t i = 0; i < c->ops_n && used < sizeof(line); i++) {
        const struct oprec *o = &c->ops[i];
        if (o->kind == K_FLUSH || o->off >= hi || o->off + o->len <= lo)
            continue;
        used += describe_op(c, o, line + used, sizeof(line) - used);
    }
    tap_diag("%s", line);
}

/* ---- the workload --------------------------------------------------------------- */

static bool range_busy(const struct campaign *c, uint64_t off, uint64_t len)
{
    for (uint64_t s = off / SECT; s < (off + len) / SECT; s++)
        if (c->busy[s])
            return true;
    return false;
}

static void set_busy(struct campaign *c, uint64_t off, uint64_t len, bool on)
{
    memset(c->busy + off / SECT, on, len / SECT);
}

static void pick_range(struct campaign *c, uint64_t *off, uint64_t *len)
{
    const struct config *cfg = c->cfg;
    uint64_t cs = cfg->cluster_size, size = cfg->size;
    uint64_t span = below(&c->rng, 3) == 0 ? size : size / 4;
    uint64_t o, l;

    switch (below(&c->rng, 10)) {
    case 0: case 1: case 2: case 3: /* a few sectors anywhere */
        o = below(&c->rng, span / SECT) * SECT;
        l = (1 + below(&c->rng, 16)) * SECT;
        break;
    case 4: case 5: case 6: /* whole clusters */
        o = below(&c->rng, span / cs) * cs;
        l = (1 + below(&c->rng, 3)) * cs;
        break;
    case 7: case 8: /* several clusters, unaligned */
        o = below(&c->rng, span / SECT) * SECT;
        l = (1 + below(&c->rng, 3 * cs / SECT)) * SECT;
        break;
    default: { /* across an L2 table boundary or the end of the backing */
        uint64_t table_span = (uint64_t)cfg->table_size * cs / 8 * cs;
        uint64_t edge = cfg->backing && below(&c->rng, 2)
                            ? round_down_u64(cfg->backing_size, SECT)
                            : table_span * (1 + below(&c->rng, 3));
        if (edge >= size)
            edge = size / 2;
        l = (1 + below(&c->rng, 2 * cs / SECT)) * SECT;
        o = edge > l / 2 ? round_down_u64(edge - l / 2, SECT) : 0;
        break;
    }
    }
    if (o >= size)
        o = size - SECT;
    if (l > size - o)
        l = size - o;
    *off = o;
    *len = l;
}

static void verify_read(struct campaign *c, const struct oprec *o,
                        const uint8_t *buf)
{
    for (uint64_t i = 0; i < o->len / SECT; i++) {
        uint64_t s = o->off / SECT + i;
        uint32_t got = support_identify(buf + i * SECT, s, c->next_id);
        if (!sector_allowed(c, s, got, true)) {
            char hist[400];
            describe_sector(c, s, hist, sizeof(hist));
            c->read_fail++;
            failure(c, "read at %" PRIu64 ": sector %" PRIu64 " reads as "
                    "id %d; %s", o->off, s,
                    got == ID_GARBAGE ? -1 : (int)got, hist);
            return;
        }
    }
}

static void request_done(void *opaque, int ret, const qed_error *err)
{
    struct req *r = opaque;
    struct campaign *c = r->c;
    struct oprec *o = &c->ops[r->op];
    bool crashed = memfs_crashed(c->fs);

    c->in_flight--;
    if (o->kind != K_FLUSH)
        set_busy(c, o->off, o->len, false);
    if (!crashed) {
        if (ret < 0) {
            c->early_fail++;
            failure(c, "%s %" PRIu64 "+%" PRIu64 " failed before the cut: "
                    "%s", kind_names[o->kind], o->off, o->len,
                    err ? err->message : strerror(-ret));
        } else if (o->kind == K_FLUSH) {
            /* Everything done before the flush was submitted is durable. */
            c->durable_seq = QED_MAX(c->durable_seq, o->seq);
        } else {
            o->done = true;
            o->seq = ++c->seq;
            c->requests_done++;
            if (o->kind == K_READ)
                verify_read(c, o, r->buf);
        }
    }
    free(r->buf);
    free(r);
}

static bool submit_one(struct campaign *c)
{
    uint64_t off = 0, len = 0;
    unsigned pick = (unsigned)below(&c->rng, 100);
    enum kind kind = pick < 45   ? K_WRITE
                     : pick < 60 ? K_ZERO
                     : pick < 72 ? K_DISCARD
                     : pick < 90 ? K_READ
                                 : K_FLUSH;
    struct req *r;
    int ret = 0;

    if (kind != K_FLUSH) {
        int tries = 0;
        do
            pick_range(c, &off, &len);
        while (range_busy(c, off, len) && ++tries < 4);
        if (tries == 4)
            return false;
    }
    r = calloc(1, sizeof(*r));
    if (!r)
        abort();
    r->c = c;
    r->op = new_op(c, kind, off, len);
    switch (kind) {
    case K_WRITE:
        r->buf = malloc(len);
        if (!r->buf)
            abort();
        support_fill_sectors(r->buf, c->ops[r->op].id, off / SECT,
                             len / SECT);
        r->iov = (struct iovec){ r->buf, len };
        ret = qed_aio_writev(c->img, &r->iov, 1, off, request_done, r);
        break;
    case K_READ:
        r->buf = malloc(len);
        if (!r->buf)
            abort();
        r->iov = (struct iovec){ r->buf, len };
        ret = qed_aio_readv(c->img, &r->iov, 1, off, request_done, r);
        break;
    case K_ZERO:
        ret = qed_aio_write_zeroes(c->img, off, len,
                                   below(&c->rng, 2) ? QED_ZERO_MAY_UNMAP : 0,
                                   request_done, r);
        break;
    case K_DISCARD:
        ret = qed_aio_discard(c->img, off, len, request_done, r);
        break;
    case K_FLUSH:
        c->ops[r->op].seq = ++c->seq;
        ret = qed_aio_flush(c->img, request_done, r);
        break;
    }
    if (ret < 0) {
        c->early_fail++;
        failure(c, "submitting %s %" PRIu64 "+%" PRIu64 ": %s",
                kind_names[kind], off, len, strerror(-ret));
        free(r->buf);
        free(r);
        return false;
    }
    c->in_flight++;
    c->max_seen_in_flight = QED_MAX(c->max_seen_in_flight, c->in_flight);
    if (kind != K_FLUSH && kind != K_READ)
        for (uint64_t s = off / SECT; s < (off + len) / SECT; s++)
            history_add(c, s, r->op);
    if (kind != K_FLUSH)
        set_busy(c, off, len, true);
    return true;
}

static int run_loop_until_idle(struct campaign *c, bool stop_at_crash)
{
    unsigned idle = 0;

    while (c->in_flight > 0) {
        int r = qed_loop_run(c->loop, 0);
        if (r < 0)
            return r;
        if (stop_at_crash && memfs_crashed(c->fs))
            return 0;
        idle = r == 0 ? idle + 1 : 0;
        if (idle > 1000)
            return -ETIMEDOUT;
    }
    return 0;
}

/* Runs requests (up to max_in_flight at a time) until the power loss. */
static void run_workload(struct campaign *c, unsigned requests)
{
    unsigned submitted = 0, idle = 0;

    snprintf(c->where, sizeof(c->where), "workload (cut at op %" PRIu64 ")",
             c->cut);
    while (!memfs_crashed(c->fs) && (submitted < requests || c->in_flight)) {
        int r;
        while (submitted < requests && c->in_flight < c->max_in_flight &&
               !memfs_crashed(c->fs)) {
            if (!submit_one(c))
                break;
            submitted++;
        }
        r = qed_loop_run(c->loop, 0);
        if (r < 0) {
            failure(c, "event loop: %s", strerror(-r));
            return;
        }
        idle = r == 0 ? idle + 1 : 0;
        if (idle > 1000) {
            failure(c, "requests hang: %u in flight, memfs %u in flight",
                    c->in_flight, memfs_in_flight(c->fs));
            return;
        }
    }
}

/* ---- one case -------------------------------------------------------------------- */

static const char *base_name(const struct config *cfg)
{
    return cfg->backing == BK_QED ? "base.qed" : "base.raw";
}

static int open_top(struct campaign *c, qed_image **out, qed_error *err)
{
    return support_template_open_flags(
        c->fs, c->loop, c->cfg->cache, (size_t)(64 * KiB) * c->cfg->table_size,
        QED_OPEN_RDWR | (c->cfg->copy_on_read ? QED_OPEN_COPY_ON_READ : 0),
        out, err);
}

static void reset_history(struct campaign *c)
{
    for (uint64_t s = 0; s < c->nsect; s++)
        c->head[s] = c->tail[s] = NIL;
    c->pool_n = 0;
    c->ops_n = 0;
    c->seq = 0;
    c->durable_seq = 0;
}

/* QED_CRASH_DUMP=DIR: the files of the first image qed_check objects to go
 * to DIR (as the check saw them), for a closer look. */
static void dump_files(struct campaign *c)
{
    static bool dumped;
    const char *dir = getenv("QED_CRASH_DUMP");
    const char *names[] = { "top.qed", base_name(c->cfg) };

    if (!dir || dumped)
        return;
    dumped = true;
    for (unsigned i = 0; i < (c->cfg->backing ? 2u : 1u); i++) {
        uint8_t *data;
        size_t len;
        char path[1200];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        if (memfs_get(c->fs, names[i], &data, &len) == 0) {
            support_write_file(path, data, len);
            free(data);
            tap_diag("dumped %s", path);
        }
    }
}

/* After the reboot: check the image and read every sector back. */
static bool verify_image(struct campaign *c)
{
    struct qed_check_result res = { .size = sizeof(res) };
    qed_error err = { 0 };
    uint8_t *buf;
    uint64_t chunk = 256 * KiB, bad_sectors = 0;
    bool good = true;
    int ret;

    snprintf(c->where, sizeof(c->where), "check after reopen (cut at op %"
             PRIu64 ")", c->cut);
    qed_check_result_init(&res);
    ret = qed_check(c->img, 0, &res, &err);
    if (ret < 0 || res.corruptions || res.check_errors) {
        dump_files(c);
        c->check_fail++;
        failure(c, "qed_check: %s%scorruptions %" PRIu64 ", leaks %" PRIu64
                ", check errors %" PRIu64, ret < 0 ? err.message : "",
                ret < 0 ? "; " : "", res.corruptions, res.leaks,
                res.check_errors);
        good = false;
    } else if (res.leaks && c->cfg->backing == BK_NONE) {
        /* Without a backing file, the repair on open should have reclaimed
         * them: counted apart. */
        c->leak_fail++;
        note(c, "qed_check after the open: %" PRIu64 " leaked clusters (end "
             "of the last cluster in use 0x%" PRIx64 "); NEED_CHECK was %s "
             "at the cut", res.leaks, res.image_end_offset,
             c->dirty_at_reopen ? "set" : "clear");
    }
    /* Leaks (allowed with a backing file) and whatever else was found go
     * with a full repair, after which the image must be clean. */
    if (ret == 0 && (res.corruptions || res.leaks)) {
        ret = qed_check(c->img, QED_CHECK_REPAIR_ALL, &res, &err);
        if (ret == 0)
            ret = qed_check(c->img, 0, &res, &err);
        if (ret < 0 || res.corruptions || res.leaks || res.check_errors) {
            c->check_fail++;
            failure(c, "qed_check after REPAIR_ALL: %s%scorruptions %" PRIu64
                    ", leaks %" PRIu64, ret < 0 ? err.message : "",
                    ret < 0 ? "; " : "", res.corruptions, res.leaks);
            good = false;
        }
    }
    snprintf(c->where, sizeof(c->where), "read-back after reopen (cut at op "
             "%" PRIu64 ")", c->cut);
    buf = malloc(chunk);
    if (!buf)
        abort();
    for (uint64_t off = 0; off < c->cfg->size; off += chunk) {
        ret = qed_pread(c->img, buf, chunk, off, &err);
        if (ret < 0) {
            c->data_fail++;
            failure(c, "read %" PRIu64 "+%" PRIu64 ": %s", off, chunk,
                    err.message);
            memset(buf, 0xff, chunk); /* garbage from here on */
            good = false;
        }
        for (uint64_t i = 0; i < chunk / SECT; i++) {
            uint64_t s = off / SECT + i;
            uint32_t got = support_identify(buf + i * SECT, s, c->next_id);
            if (!sector_allowed(c, s, got, false) && bad_sectors++ == 0 &&
                c->printed < 12) {
                char hist[400];
                describe_sector(c, s, hist, sizeof(hist));
                failure(c, "sector %" PRIu64 " (offset %" PRIu64 ") reads "
                        "as id %d; %s", s, s * SECT,
                        got == ID_GARBAGE ? -1 : (int)got, hist);
                describe_cluster(c, s);
            }
            /* The next cycle starts from what survived. */
            c->orig[s] = got;
        }
    }
    if (bad_sectors) {
        c->data_fail++;
        if (bad_sectors > 1)
            failure(c, "%" PRIu64 " sectors in all hold contents they may "
                    "not have", bad_sectors);
        good = false;
    }
    free(buf);
    return good;
}

/* Closes the image of the previous boot; errors are expected. */
static void close_old(struct campaign *c)
{
    qed_error err;
    if (c->img) {
        qed_close(c->img, &err);
        c->img = NULL;
    }
}

static bool image_dirty(struct campaign *c)
{
    uint8_t f[8];
    uint64_t features;

    if (memfs_pread(c->fs, "top.qed", f, 8, HDR_FEATURES) < 0)
        return false;
    memcpy(&features, f, 8);
    return (le64toh(features) & QED_F_NEED_CHECK) != 0;
}

/* Reboot and open; sometimes the power fails again during the repair. */
static bool reopen(struct campaign *c)
{
    qed_error err = { 0 };
    int ret;

    memfs_revive(c->fs);
    c->dirty_at_reopen = image_dirty(c);
    /* The repair of a dirty image must survive a power loss too: cut it
     * (up to twice in a row). */
    for (int k = 0; k < 2 && image_dirty(c) && below(&c->rng, 3) == 0; k++) {
        uint64_t cut = 1 + below(&c->rng, 80);
        snprintf(c->where, sizeof(c->where), "repair on open cut at op %"
                 PRIu64, cut);
        memfs_crash_at(c->fs, cut, rnd(&c->rng));
        ret = open_top(c, &c->img, &err);
        if (memfs_crashed(c->fs)) {
            c->repair_cuts++;
            close_old(c);
            memfs_revive(c->fs);
            continue;
        }
        memfs_crash_at(c->fs, 0, 0);
        if (ret < 0) {
            c->reopen_fail++;
            failure(c, "open: %s", err.message);
            return false;
        }
        break;
    }
    memfs_crash_at(c->fs, 0, 0);
    if (!c->img) {
        snprintf(c->where, sizeof(c->where), "reopen (cut at op %" PRIu64
                 ")", c->cut);
        ret = open_top(c, &c->img, &err);
        if (ret < 0) {
            c->reopen_fail++;
            failure(c, "open: %s", err.message);
            return false;
        }
    }
    return true;
}

static void run_cycle(struct campaign *c, uint64_t *estimate)
{
    const struct config *cfg = c->cfg;
    unsigned requests = cfg->requests / 2 +
                        (unsigned)below(&c->rng, cfg->requests);
    bool cut_close = below(&c->rng, 10) == 0;
    uint64_t ops0 = memfs_op_count(c->fs);

    reset_history(c);
    c->max_in_flight = 16 + (unsigned)below(&c->rng, 49);
    /* Drawn one by one: the order a call's arguments are evaluated in is
     * the compiler's, and a case must replay the same with every one. */
    unsigned max_delay = (unsigned)below(&c->rng, 5);
    memfs_set_delays(c->fs, max_delay, rnd(&c->rng));
    c->cut = 0;
    if (!cut_close) {
        c->cut = 1 + below(&c->rng, *estimate + *estimate / 8);
        memfs_crash_at(c->fs, c->cut, rnd(&c->rng));
    }
    run_workload(c, requests);
    if (!memfs_crashed(c->fs)) {
        qed_error err = { 0 };
        int ret;

        /* The workload ended first: learn its length, then cut the close
         * (or right after the last request). */
        *estimate = QED_MAX(memfs_op_count(c->fs) - ops0, 8);
        if (run_loop_until_idle(c, false) < 0)
            failure(c, "requests hang at the end of the workload");
        c->cut = 1 + below(&c->rng, 12);
        memfs_crash_at(c->fs, c->cut, rnd(&c->rng));
        snprintf(c->where, sizeof(c->where), "close (cut at op %" PRIu64 ")",
                 c->cut);
        ret = qed_close(c->img, &err);
        c->img = NULL;
        c->close_cuts++;
        if (ret == 0 && !memfs_crashed(c->fs)) {
            /* A clean close makes everything durable. */
            c->durable_seq = c->seq + 1;
            memfs_crash(c->fs, rnd(&c->rng));
        } else if (!memfs_crashed(c->fs)) {
            failure(c, "close failed without a power loss: %s", err.message);
            memfs_crash(c->fs, rnd(&c->rng));
        }
    } else {
        if (c->in_flight)
            c->cuts_in_flight++;
        /* Requests in flight finish (failing) while the image closes. */
        close_old(c);
        if (c->in_flight)
            failure(c, "%u requests never completed", c->in_flight);
    }
    memfs_crash_at(c->fs, 0, 0);
    c->cuts++;
    if (!reopen(c))
        return;
    verify_image(c);
}

static void run_case(struct campaign *c, const struct support_template *t)
{
    /* I/O operations a workload takes, learnt as the case goes (per case,
     * so that a case reruns alone exactly). */
    uint64_t estimate = 2ull * c->cfg->requests;
    const struct config *cfg = c->cfg;
    qed_error err = { 0 };
    int ret;

    c->fs = support_template_load(t, base_name(cfg), cfg->fallocate);
    c->rng = c->case_seed;
    c->failed = false;
    c->next_id = 2;
    memcpy(c->orig, t->base_ids, c->nsect * sizeof(*c->orig));
    memfs_set_volatile(c->fs, true);
    snprintf(c->where, sizeof(c->where), "first open");
    ret = open_top(c, &c->img, &err);
    if (ret < 0) {
        c->reopen_fail++;
        failure(c, "open: %s", err.message);
        memfs_free(c->fs);
        return;
    }
    for (c->cycle = 0; c->cycle < cfg->cycles; c->cycle++) {
        run_cycle(c, &estimate);
        if (!c->img)
            break;
    }
    if (c->img) {
        snprintf(c->where, sizeof(c->where), "final close");
        ret = qed_close(c->img, &err);
        c->img = NULL;
        if (ret < 0)
            failure(c, "close: %s", err.message);
    }
    memfs_free(c->fs);
    c->fs = NULL;
}

/* ---- templates ---------------------------------------------------------------- */

/* A raw backing file: data in most of it, a hole here and there. */
static int make_raw_backing(const char *base, const struct config *cfg,
                            uint32_t *ids)
{
    uint64_t bsect = cfg->backing_size / SECT;

    for (uint64_t s = 0; s < bsect; s++)
        ids[s] = (s / 37) % 5 == 4 ? ID_ZERO : ID_BASE;
    return support_write_sectors(base, ids, bsect);
}

/* A QED backing file: two of every three 64k clusters written, partly. */
static int make_qed_backing(const char *base, const struct config *cfg,
                            uint32_t *ids)
{
    qed_image *bimg;
    qed_error err = { 0 };
    uint8_t *b = malloc(64 * KiB);
    int ret;

    if (!b)
        return -ENOMEM;
    ret = support_create(base, cfg->backing_size, 65536, 1, NULL,
                         QED_FORMAT_PROBE, &err);
    if (ret == 0)
        ret = support_open(base, QED_OPEN_RDWR, QED_ENGINE_AUTO, &bimg,
                           &err);
    for (uint64_t off = 0; ret == 0 && off < cfg->backing_size;
         off += 64 * KiB) {
        uint64_t first = off / SECT + (off / (64 * KiB)) % 7;
        uint64_t count = 64 * KiB / SECT - (off / (64 * KiB)) % 7;
        if ((off / (64 * KiB)) % 3 == 2)
            continue;
        support_fill_sectors(b, ID_BASE, first, count);
        ret = qed_pwrite(bimg, b, count * SECT, first * SECT, &err);
        for (uint64_t s = first; s < first + count; s++)
            ids[s] = ID_BASE;
    }
    if (ret == 0)
        ret = qed_close(bimg, &err);
    free(b);
    if (ret < 0)
        tap_diag("QED backing file: %s", err.message);
    return ret;
}

/* The image of configuration i (and its backing file), built in dir. */
static int make_template(const char *dir, unsigned i,
                         struct support_template *t)
{
    const struct config *cfg = &configs[i];
    char sub[1100], top[1200], base[1200];
    qed_error err = { 0 };
    int ret = 0;

    snprintf(sub, sizeof(sub), "%s/c%u", dir, i);
    if (mkdir(sub, 0700) < 0)
        return -errno;
    snprintf(top, sizeof(top), "%s/top.qed", sub);
    snprintf(base, sizeof(base), "%s/%s", sub, base_name(cfg));
    t->base_ids = calloc(cfg->size / SECT, sizeof(uint32_t));
    if (!t->base_ids)
        return -ENOMEM;
    if (cfg->backing == BK_RAW)
        ret = make_raw_backing(base, cfg, t->base_ids);
    else if (cfg->backing == BK_QED)
        ret = make_qed_backing(base, cfg, t->base_ids);
    if (ret < 0)
        return ret;
    ret = support_create(top, cfg->size, cfg->cluster_size, cfg->table_size,
                         cfg->backing ? base_name(cfg) : NULL,
                         cfg->backing == BK_RAW ? QED_FORMAT_RAW
                                                : QED_FORMAT_PROBE,
                         &err);
    if (ret < 0) {
        tap_diag("creating %s: %s", top, err.message);
        return ret;
    }
    return support_template_read(t, top, cfg->backing ? base : NULL);
}

/* ---- main --------------------------------------------------------------------- */

static void run_config(unsigned ci, int only_case, qed_loop *loop,
                       const struct support_template *t)
{
    const struct config *cfg = &configs[ci];
    struct campaign *c = calloc(1, sizeof(*c));
    struct timespec t0, t1;
    unsigned failed_cases = 0;

    if (!c)
        abort();
    clock_gettime(CLOCK_MONOTONIC, &t0);
    c->cfg = cfg;
    c->cfg_index = ci;
    c->loop = loop;
    c->nsect = cfg->size / SECT;
    c->orig = calloc(c->nsect, sizeof(*c->orig));
    c->head = calloc(c->nsect, sizeof(*c->head));
    c->tail = calloc(c->nsect, sizeof(*c->tail));
    c->busy = calloc(c->nsect, 1);
    if (!c->orig || !c->head || !c->tail || !c->busy)
        abort();
    for (unsigned k = 0; k < cfg->cases; k++) {
        if (only_case >= 0 && k != (unsigned)only_case)
            continue;
        c->case_index = k;
        c->case_seed = support_mix64(0xc0ffee00ull + ci * 100003ull + k +
                                     seed_variant * 0x9e3779b97f4a7c15ull);
        run_case(c, t);
        failed_cases += c->failed;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    tap_diag("%s: %u cuts (%u with requests in flight, %u in close, %u more "
             "in the repair on open), %" PRIu64 " requests done, up to %"
             PRIu64 " in flight, %.1f s",
             cfg->name, c->cuts, c->cuts_in_flight, c->close_cuts,
             c->repair_cuts, c->requests_done, c->max_seen_in_flight,
             (double)(t1.tv_sec - t0.tv_sec) +
                 (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    ok(c->early_fail == 0, "%s: no request fails before the power loss",
       cfg->name);
    ok(c->read_fail == 0, "%s: reads during the workload see the model",
       cfg->name);
    ok(c->reopen_fail == 0, "%s: the image opens read-write after every cut",
       cfg->name);
    ok(c->check_fail == 0, "%s: qed_check finds no corruption after every "
       "cut, and is clean after REPAIR_ALL", cfg->name);
    if (cfg->backing == BK_NONE)
        ok(c->leak_fail == 0, "%s: no leaked cluster after the repair on "
           "open (%u cuts left some)", cfg->name, c->leak_fail);
    ok(c->data_fail == 0, "%s: every sector holds a permitted content after "
       "every cut", cfg->name);
    ok(failed_cases == 0 && c->cuts > 0, "%s: %u cuts, %u failing cases",
       cfg->name, c->cuts, failed_cases);
    free(c->orig);
    free(c->head);
    free(c->tail);
    free(c->busy);
    free(c->pool);
    free(c->ops);
    free(c);
}

int main(int argc, char **argv)
{
    struct support_template t[NCONFIGS] = { 0 };
    qed_error err = { 0 };
    qed_loop *loop;
    int only_config = -1, only_case = -1;

    alarm(600); /* a hang fails the test instead of stalling the run */
    if (getenv("QED_CRASH_SEED"))
        seed_variant = strtoull(getenv("QED_CRASH_SEED"), NULL, 10);
    if (argc >= 2)
        only_config = atoi(argv[1]);
    if (argc >= 3)
        only_case = atoi(argv[2]);
    if (!support_tap_templates("crash", t, NCONFIGS, make_template))
        return tap_done();
    if (!ok(qed_loop_new(QED_ENGINE_AUTO, &loop, &err) == 0, "event loop")) {
        support_templates_free(t, NCONFIGS);
        return tap_done();
    }
    for (unsigned i = 0; i < NCONFIGS; i++)
        if (only_config < 0 || (unsigned)only_config == i)
            run_config(i, only_case, loop, &t[i]);
    qed_loop_free(loop);
    support_templates_free(t, NCONFIGS);
    return tap_done();
}
