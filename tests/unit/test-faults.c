/* SPDX-License-Identifier: MIT */
/* Injected I/O errors: the N-th I/O operation fails with EIO, or with
 * ENOSPC, for every N across a short workload (open, requests one at a time
 * and a batch in flight together, close), on images in the simulated file
 * system of io-sim.c, without and with a backing file.
 *
 * For every N: an open that meets the error fails with exactly it; the
 * request that meets it fails with exactly it (ret and qed_error code, with
 * a message); every other request succeeds, before and after it; reads see
 * what was written; qed_close succeeds or fails cleanly; the closed image
 * (also the one closed in the middle of the workload), checked read-only,
 * has no leaked cluster and no corruption unless it is marked dirty; a
 * later open read-write succeeds (repairing the image when it was left
 * dirty); qed_check then finds no leak and no corruption; and every
 * 512-byte sector reads as the last content acknowledged for it, or, where
 * a request failed, as the content before that request or the one it was
 * writing.  Run under
 * AddressSanitizer, every error path must also free what it allocated. */
#include <errno.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core.h"
#include "qed-image.h"
#include "io-sim.h"
#include "qed.h"
#include "support-image.h"
#include "support-sim.h"
#include "support-tap.h"

#define MAX_CAND 4
/* No run writes this many times: a sector naming a larger id is garbage. */
#define MAX_ID 1000000u

enum backing_kind { BK_NONE, BK_RAW };

struct variant {
    const char *name;
    uint32_t cluster_size, table_size;
    uint64_t size;
    enum backing_kind backing;
    uint64_t backing_size;
    enum qed_cache cache;
    bool fallocate;
};

static const struct variant variants[] = {
    { "no backing", 4096, 1, 4 * MiB, BK_NONE, 0, QED_CACHE_WRITEBACK, true },
    { "raw backing", 4096, 1, 4 * MiB, BK_RAW, 3 * MiB + 1536,
      QED_CACHE_WRITEBACK, true },
    { "no backing, O_DIRECT", 8192, 1, 4 * MiB, BK_NONE, 0, QED_CACHE_NONE,
      true },
    { "raw backing, no fallocate", 4096, 2, 4 * MiB, BK_RAW, 2 * MiB + 512,
      QED_CACHE_WRITEBACK, false },
};
#define NVARIANTS (sizeof(variants) / sizeof(variants[0]))

/* ---- the model: up to MAX_CAND permitted contents per sector ------------------- */

struct model {
    uint64_t nsect;
    uint32_t (*cand)[MAX_CAND];
    uint8_t *ncand;
};

static void model_set(struct model *m, uint64_t s, uint32_t id)
{
    m->cand[s][0] = id;
    m->ncand[s] = 1;
}

static void model_add(struct model *m, uint64_t s, uint32_t id)
{
    for (unsigned i = 0; i < m->ncand[s]; i++)
        if (m->cand[s][i] == id)
            return;
    if (m->ncand[s] < MAX_CAND)
        m->cand[s][m->ncand[s]++] = id;
}

static bool model_allows(const struct model *m, uint64_t s, uint32_t id)
{
    for (unsigned i = 0; i < m->ncand[s]; i++)
        if (m->cand[s][i] == id)
            return true;
    return false;
}

/* ---- the workload ---------------------------------------------------------------- */

enum kind { K_WRITE, K_ZERO, K_ZERO_UNMAP, K_DISCARD, K_FLUSH, K_READ,
            K_BATCH, K_REOPEN };
static const char *const kind_names[] = { "write", "write-zeroes",
                                          "write-zeroes (unmap)", "discard",
                                          "flush", "read", "batch of writes",
                                          "close and open again" };

struct step {
    enum kind kind;
    uint64_t off, len; /* in sectors of the cluster geometry, see below */
};

/* Offsets in units of clusters plus sectors, so every variant's geometry
 * gets allocating writes, overwrites, partial clusters (copy-on-write over
 * a backing file), whole zero clusters, writes into zero clusters, a second
 * L2 table, discards and flushes; after a close and open in the middle, the
 * L2 tables are read from the file again. */
struct step_spec {
    enum kind kind;
    uint32_t cl, sect;        /* offset: cl clusters + sect sectors */
    uint32_t len_cl, len_sect;
};

static const struct step_spec workload[] = {
    { K_WRITE, 0, 0, 1, 0 },       /* allocating, whole cluster */
    { K_WRITE, 2, 3, 0, 5 },       /* partial cluster */
    { K_READ, 0, 0, 4, 0 },
    { K_WRITE, 0, 2, 0, 4 },       /* overwrite in place */
    { K_FLUSH, 0, 0, 0, 0 },
    { K_ZERO_UNMAP, 4, 0, 2, 0 },  /* zero clusters */
    { K_WRITE, 5, 1, 0, 2 },       /* into a zero cluster */
    { K_ZERO, 2, 1, 0, 3 },        /* partial zeroing of data */
    { K_WRITE, 7, 6, 2, 0 },       /* unaligned, three clusters */
    { K_DISCARD, 0, 0, 1, 0 },     /* whole data cluster */
    { K_READ, 0, 0, 10, 0 },
    { K_WRITE, 600, 0, 1, 3 },     /* second L2 table (4k, table_size 1) */
    { K_BATCH, 20, 0, 1, 0 },      /* eight writes in flight at once */
    { K_REOPEN, 0, 0, 0, 0 },      /* later steps load tables from disk */
    { K_READ, 20, 0, 1, 0 },
    { K_ZERO, 40, 2, 0, 2 },       /* partial zeroes of unallocated */
    { K_DISCARD, 7, 6, 0, 4 },     /* partial discard: keeps the data */
    { K_WRITE, 0, 0, 0, 1 },       /* the discarded cluster again */
    { K_FLUSH, 0, 0, 0, 0 },
    { K_READ, 0, 0, 30, 0 },
    { K_READ, 600, 0, 2, 0 },
};
#define NSTEPS (sizeof(workload) / sizeof(workload[0]))

struct run {
    const struct variant *v;
    int fault;         /* errno injected, 0 for none */
    uint64_t nth;
    qed_loop *loop;
    struct memfs *fs;
    qed_image *img;
    struct model m;
    uint32_t next_id;
    bool failed;
    char where[128];
    /* results */
    uint64_t fired_in_open, fired_in_steps, fired_in_close, never_fired;
    uint64_t leaks_seen;
    uint64_t closed_clean, closed_dirty;
};

static unsigned printed;

static void failure(struct run *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void failure(struct run *r, const char *fmt, ...)
{
    char msg[700];
    va_list ap;

    r->failed = true;
    if (printed++ >= 60)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    tap_diag("%s, %s on I/O #%" PRIu64 ", %s: %s", r->v->name,
             r->fault ? strerror(r->fault) : "no fault", r->nth, r->where,
             msg);
}

static void step_range(const struct run *r, const struct step_spec *sp,
                       uint64_t *off, uint64_t *len)
{
    uint64_t cs = r->v->cluster_size;
    *off = (uint64_t)sp->cl * cs + (uint64_t)sp->sect * SECT;
    *len = (uint64_t)sp->len_cl * cs + (uint64_t)sp->len_sect * SECT;
    if (*off >= r->v->size)
        *off = r->v->size / 2;
    if (*len > r->v->size - *off)
        *len = r->v->size - *off;
}

static int open_image(struct run *r, qed_image **out, qed_error *err)
{
    return support_template_open(r->fs, r->loop, r->v->cache, 0, out, err);
}

static const char *base_name(void)
{
    return "base.raw";
}

/* What a request did to the model: exact when it succeeded, either way
 * when it failed. */
static void apply(struct run *r, enum kind kind, uint64_t off, uint64_t len,
                  uint32_t id, bool ok_)
{
    for (uint64_t s = off / SECT; s < (off + len) / SECT; s++) {
        uint32_t v = kind == K_WRITE ? id : ID_ZERO;
        if (kind == K_DISCARD || !ok_)
            model_add(&r->m, s, v);
        else
            model_set(&r->m, s, v);
    }
}

static bool check_sectors(struct run *r, const uint8_t *buf, uint64_t off,
                          uint64_t len, const char *what)
{
    for (uint64_t i = 0; i < len / SECT; i++) {
        uint64_t s = off / SECT + i;
        uint32_t got = support_identify(buf + i * SECT, s, MAX_ID + 1);
        if (!model_allows(&r->m, s, got)) {
            failure(r, "%s: sector %" PRIu64 " (offset %" PRIu64 ") reads "
                    "as id %d, expected id %u%s", what, s, s * SECT,
                    got == ID_GARBAGE ? -1 : (int)got, r->m.cand[s][0],
                    r->m.ncand[s] > 1 ? " or another candidate" : "");
            return false;
        }
    }
    return true;
}

/* A request result: an error exactly when the injected fault fired in it. */
static void expect_result(struct run *r, const char *what, int ret,
                          const qed_error *err, bool fired)
{
    if (fired) {
        if (ret != -r->fault || !err || err->code != r->fault ||
            err->message[0] == '\0')
            failure(r, "%s: got ret %d, code %d (%s); want %d and a message",
                    what, ret, err ? err->code : 0,
                    err ? err->message : "", -r->fault);
    } else if (ret != 0) {
        failure(r, "%s failed: ret %d (%s)", what, ret,
                err ? err->message : "");
    }
}

struct batch_req {
    struct run *r;
    uint8_t *buf;
    int ret;
    int code;
    bool done;
    char message[sizeof(((qed_error *)0)->message)];
};

static void batch_done(void *opaque, int ret, const qed_error *err)
{
    struct batch_req *b = opaque;
    b->done = true;
    b->ret = ret;
    b->code = err ? err->code : 0;
    snprintf(b->message, sizeof(b->message), "%s", err ? err->message : "");
}

/* Eight one-cluster writes, every other cluster, in flight together. */
static void run_batch(struct run *r, uint64_t off)
{
    enum { N = 8 };
    struct batch_req b[N];
    uint64_t cs = r->v->cluster_size;
    uint64_t fired0 = memfs_faults_fired(r->fs);
    uint32_t ids[N];
    unsigned failed = 0;
    bool fired;

    memset(b, 0, sizeof(b));
    for (unsigned i = 0; i < N; i++) {
        uint64_t o = off + 2 * i * cs;
        struct iovec iov;
        b[i].r = r;
        b[i].buf = malloc(cs);
        if (!b[i].buf)
            abort();
        ids[i] = r->next_id++;
        support_fill_sectors(b[i].buf, ids[i], o / SECT, cs / SECT);
        iov.iov_base = b[i].buf;
        iov.iov_len = cs;
        if (qed_aio_writev(r->img, &iov, 1, o, batch_done, &b[i]) < 0) {
            failure(r, "batch: submitting a write failed");
            b[i].done = true;
            b[i].ret = -EINVAL;
        }
    }
    for (;;) {
        unsigned done = 0;
        for (unsigned i = 0; i < N; i++)
            done += b[i].done;
        if (done == N)
            break;
        if (qed_loop_run(r->loop, -1) < 0) {
            failure(r, "batch: event loop failed");
            break;
        }
    }
    fired = memfs_faults_fired(r->fs) > fired0;
    for (unsigned i = 0; i < N; i++) {
        uint64_t o = off + 2 * i * cs;
        if (b[i].ret < 0) {
            failed++;
            if (!fired || b[i].ret != -r->fault || b[i].code != r->fault ||
                !b[i].message[0])
                failure(r, "batch write %u: ret %d, code %d (%s)", i,
                        b[i].ret, b[i].code, b[i].message);
        }
        apply(r, K_WRITE, o, cs, ids[i], b[i].ret == 0);
        free(b[i].buf);
    }
    if (fired && failed == 0)
        failure(r, "batch: the injected error was lost (every write "
                "succeeded)");
    if (fired)
        r->fired_in_steps++;
}

/* Closes the image and opens it again.  A close that meets the error may
 * fail (with exactly it); an open that meets it fails with it, and the next
 * open must work. */
static void check_closed(struct run *r);

static void reopen_mid(struct run *r)
{
    uint64_t fired0 = memfs_faults_fired(r->fs);
    qed_error err = { 0 };
    int ret = qed_close(r->img, &err);

    r->img = NULL;
    if (memfs_faults_fired(r->fs) > fired0) {
        r->fired_in_steps++;
        if (ret < 0)
            expect_result(r, "close", ret, &err, true);
    } else if (ret < 0) {
        failure(r, "close failed: %s", err.message);
    }
    /* Once the error has fired, the check's own I/O cannot meet it (and
     * the run without faults keeps the count of I/O operations as it
     * was). */
    if (r->fault && memfs_faults_fired(r->fs))
        check_closed(r);
    fired0 = memfs_faults_fired(r->fs);
    ret = open_image(r, &r->img, &err);
    if (memfs_faults_fired(r->fs) > fired0) {
        r->fired_in_steps++;
        expect_result(r, "open", ret, &err, true);
        if (ret == 0)
            return;
        ret = open_image(r, &r->img, &err);
    }
    if (ret < 0) {
        failure(r, "open failed: %s", err.message);
        r->img = NULL;
    }
}

static void run_steps(struct run *r)
{
    for (unsigned k = 0; k < NSTEPS; k++) {
        const struct step_spec *sp = &workload[k];
        uint64_t off, len, fired0 = memfs_faults_fired(r->fs);
        qed_error err = { 0 };
        uint8_t *buf = NULL;
        uint32_t id = 0;
        bool fired;
        int ret = 0;

        step_range(r, sp, &off, &len);
        snprintf(r->where, sizeof(r->where), "step %u (%s %" PRIu64 "+%"
                 PRIu64 ")", k, kind_names[sp->kind], off, len);
        switch (sp->kind) {
        case K_BATCH:
            run_batch(r, off);
            continue;
        case K_REOPEN:
            reopen_mid(r);
            if (!r->img)
                return;
            continue;
        case K_WRITE:
            buf = malloc(len);
            if (!buf)
                abort();
            id = r->next_id++;
            support_fill_sectors(buf, id, off / SECT, len / SECT);
            ret = qed_pwrite(r->img, buf, len, off, &err);
            break;
        case K_ZERO:
        case K_ZERO_UNMAP:
            ret = qed_write_zeroes(r->img, off, len,
                                   sp->kind == K_ZERO_UNMAP
                                       ? QED_ZERO_MAY_UNMAP
                                       : 0,
                                   &err);
            break;
        case K_DISCARD:
            ret = qed_discard(r->img, off, len, &err);
            break;
        case K_FLUSH:
            ret = qed_flush(r->img, &err);
            break;
        case K_READ:
            buf = malloc(len);
            if (!buf)
                abort();
            ret = qed_pread(r->img, buf, len, off, &err);
            break;
        }
        fired = memfs_faults_fired(r->fs) > fired0;
        if (fired)
            r->fired_in_steps++;
        expect_result(r, kind_names[sp->kind], ret, &err, fired);
        if (sp->kind == K_READ && ret == 0)
            check_sectors(r, buf, off, len, "read");
        else if (sp->kind != K_READ && sp->kind != K_FLUSH)
            apply(r, sp->kind == K_ZERO_UNMAP ? K_ZERO : sp->kind, off, len,
                  id, ret == 0);
        free(buf);
    }
}

/* The closed image as a read-only check sees it: no leaked cluster and no
 * corruption, unless it is marked dirty (the next read-write open then
 * repairs it, which verify_after checks). */
static void check_closed(struct run *r)
{
    struct qed_open_options o = { .size = sizeof(o),
                                  .cache = r->v->cache, .loop = r->loop };
    struct storage_driver opener = memfs_opener(r->fs);
    struct qed_check_result res = { .size = sizeof(res) };
    struct qed_image_info info = { .size = sizeof(info) };
    qed_error err = { 0 };
    qed_image *img = NULL;
    int ret;

    snprintf(r->where, sizeof(r->where), "read-only check after the close");
    ret = qedi_image_open("top.qed", &o, &opener, &img, &err);
    if (ret < 0) {
        failure(r, "open read-only failed: %s", err.message);
        return;
    }
    qed_check_result_init(&res);
    ret = qed_get_info(img, &info, &err);
    if (ret == 0 && info.dirty) {
        r->closed_dirty++;
    } else if (ret == 0) {
        ret = qed_check(img, 0, &res, &err);
        if (ret < 0 || res.leaks || res.corruptions || res.check_errors)
            failure(r, "the image was closed clean, but its check finds %"
                    PRIu64 " leaked clusters, %" PRIu64 " corruptions (ret "
                    "%d: %s)", res.leaks, res.corruptions, ret, err.message);
        r->closed_clean++;
    } else {
        failure(r, "info: %s", err.message);
    }
    qed_close(img, &err);
}

/* After the run: reopen without faults, check, read everything back. */
static void verify_after(struct run *r)
{
    struct qed_check_result res = { .size = sizeof(res) };
    qed_error err = { 0 };
    uint64_t chunk = 256 * KiB;
    uint8_t *buf;
    int ret;

    snprintf(r->where, sizeof(r->where), "reopen");
    ret = open_image(r, &r->img, &err);
    if (ret < 0) {
        failure(r, "open read-write failed: %s", err.message);
        return;
    }
    snprintf(r->where, sizeof(r->where), "check after reopen");
    qed_check_result_init(&res);
    ret = qed_check(r->img, 0, &res, &err);
    if (ret < 0 || res.corruptions || res.check_errors) {
        failure(r, "qed_check: ret %d (%s), corruptions %" PRIu64 ", check "
                "errors %" PRIu64, ret, err.message, res.corruptions,
                res.check_errors);
    } else if (res.leaks) {
        r->leaks_seen++;
        failure(r, "the read-write open left %" PRIu64 " leaked clusters",
                res.leaks);
        ret = qed_check(r->img, QED_CHECK_REPAIR_ALL, &res, &err);
        if (ret == 0)
            ret = qed_check(r->img, 0, &res, &err);
        if (ret < 0 || res.corruptions || res.leaks || res.check_errors)
            failure(r, "qed_check after REPAIR_ALL: ret %d (%s), "
                    "corruptions %" PRIu64 ", leaks %" PRIu64, ret,
                    err.message, res.corruptions, res.leaks);
    }
    snprintf(r->where, sizeof(r->where), "read-back after reopen");
    buf = malloc(chunk);
    if (!buf)
        abort();
    for (uint64_t off = 0; off < r->v->size; off += chunk) {
        ret = qed_pread(r->img, buf, chunk, off, &err);
        if (ret < 0) {
            failure(r, "read %" PRIu64 ": %s", off, err.message);
            break;
        }
        if (!check_sectors(r, buf, off, chunk, "read-back"))
            break;
    }
    free(buf);
    snprintf(r->where, sizeof(r->where), "final close");
    ret = qed_close(r->img, &err);
    r->img = NULL;
    if (ret < 0)
        failure(r, "close: %s", err.message);
}

/* One run: open, the workload, close, then verify.  Returns the I/O
 * operations the run took before the verification. */
static uint64_t one_run(struct run *r, const struct support_template *t,
                        int fault, uint64_t nth)
{
    const struct variant *v = r->v;
    qed_error err = { 0 };
    uint64_t ops, fired0;
    int ret;

    r->fault = fault;
    r->nth = nth;
    r->failed = false;
    r->next_id = 2;
    for (uint64_t s = 0; s < r->m.nsect; s++)
        model_set(&r->m, s, t->base_ids[s]);
    r->fs = support_template_load(t, base_name(), v->fallocate);
    if (fault)
        memfs_fail_nth(r->fs, nth, fault);

    snprintf(r->where, sizeof(r->where), "open");
    ret = open_image(r, &r->img, &err);
    if (memfs_faults_fired(r->fs)) {
        r->fired_in_open++;
        expect_result(r, "open", ret, &err, true);
        if (ret == 0) {
            qed_close(r->img, &err);
            r->img = NULL;
        }
    } else if (ret < 0) {
        failure(r, "open failed: %s", err.message);
    }
    if (r->img) {
        run_steps(r);
        snprintf(r->where, sizeof(r->where), "close");
        fired0 = memfs_faults_fired(r->fs);
        ret = qed_close(r->img, &err);
        r->img = NULL;
        if (memfs_faults_fired(r->fs) > fired0) {
            r->fired_in_close++;
            if (ret < 0 && (ret != -fault || err.code != fault))
                failure(r, "close: ret %d, code %d (%s)", ret, err.code,
                        err.message);
        } else if (ret < 0) {
            failure(r, "close failed: %s", err.message);
        }
    }
    ops = memfs_op_count(r->fs);
    if (fault && !memfs_faults_fired(r->fs))
        r->never_fired++;
    memfs_fail_nth(r->fs, 0, 0);
    check_closed(r);
    verify_after(r);
    memfs_free(r->fs);
    r->fs = NULL;
    return ops;
}

/* The image of variant i (and its raw backing file), built in dir. */
static int make_template(const char *dir, unsigned i,
                         struct support_template *t)
{
    const struct variant *v = &variants[i];
    char top[1200], base[1200];
    qed_error err = { 0 };
    int ret;

    snprintf(top, sizeof(top), "%s/top%u.qed", dir, i);
    snprintf(base, sizeof(base), "%s/%s", dir, base_name());
    t->base_ids = calloc(v->size / SECT, sizeof(uint32_t));
    if (!t->base_ids)
        return -ENOMEM;
    if (v->backing == BK_RAW) {
        uint64_t bsect = v->backing_size / SECT;
        for (uint64_t s = 0; s < bsect; s++)
            t->base_ids[s] = ID_BASE;
        ret = support_write_sectors(base, t->base_ids, bsect);
        if (ret < 0)
            return ret;
    }
    ret = support_create(top, v->size, v->cluster_size, v->table_size,
                         v->backing ? base_name() : NULL, QED_FORMAT_RAW,
                         &err);
    if (ret < 0) {
        tap_diag("creating %s: %s", top, err.message);
        return ret;
    }
    return support_template_read(t, top, v->backing ? base : NULL);
}

static void run_variant(unsigned vi, qed_loop *loop,
                        const struct support_template *t)
{
    static const int faults[] = { EIO, ENOSPC };
    struct run r = { .v = &variants[vi], .loop = loop };
    uint64_t total;

    r.m.nsect = r.v->size / SECT;
    r.m.cand = calloc(r.m.nsect, sizeof(*r.m.cand));
    r.m.ncand = calloc(r.m.nsect, 1);
    if (!r.m.cand || !r.m.ncand)
        abort();
    total = one_run(&r, t, 0, 0);
    ok(!r.failed && total > 10, "%s: the workload runs clean without faults "
       "(%" PRIu64 " I/O operations)", r.v->name, total);
    for (unsigned f = 0; f < QED_ARRAY_SIZE(faults); f++) {
        unsigned failed_runs = 0;
        r.fired_in_open = r.fired_in_steps = r.fired_in_close = 0;
        r.never_fired = r.leaks_seen = 0;
        r.closed_clean = r.closed_dirty = 0;
        for (uint64_t n = 1; n <= total; n++) {
            one_run(&r, t, faults[f], n);
            failed_runs += r.failed;
        }
        ok(failed_runs == 0, "%s: %s on each of I/O #1..#%" PRIu64 " is "
           "reported by the request that met it, and the image stays "
           "consistent (%u runs failed)", r.v->name, strerror(faults[f]),
           total, failed_runs);
        tap_diag("%s, %s: the error hit the open %" PRIu64 " times, a "
                 "request %" PRIu64 ", the close %" PRIu64 "; %" PRIu64
                 " runs took fewer I/O operations; %" PRIu64 " reopened "
                 "images had leaks; closed clean %" PRIu64 ", dirty %"
                 PRIu64, r.v->name, strerror(faults[f]), r.fired_in_open,
                 r.fired_in_steps, r.fired_in_close, r.never_fired,
                 r.leaks_seen, r.closed_clean, r.closed_dirty);
    }
    free(r.m.cand);
    free(r.m.ncand);
}

/* ---- the simulator itself ------------------------------------------------------ */

struct cb_state {
    bool done;
    int ret;
};

static void cb_done(void *opaque, int ret)
{
    struct cb_state *st = opaque;
    st->done = true;
    st->ret = ret;
}

static int run_until(qed_loop *loop, struct cb_state *st)
{
    while (!st->done)
        if (qed_loop_run(loop, -1) < 0)
            return -EIO;
    return st->ret;
}

static int sim_fallocate(qed_loop *loop, struct io_file *f, int mode,
                         uint64_t off, uint64_t len)
{
    struct cb_state st = { 0 };
    qedi_io_fallocate(f, mode, off, len, cb_done, &st);
    return run_until(loop, &st);
}

static void memfs_selftest(qed_loop *loop)
{
    struct memfs *fs = memfs_new();
    struct storage_driver o = memfs_opener(fs);
    struct io_file *f = NULL, *g = NULL;
    struct cb_state st = { 0 };
    qed_error err = { 0 };
    uint8_t a[8192], b[8192], got[12288];
    uint64_t size = 0;
    bool a_whole = true, b_none_or_sectors = true;
    size_t len = 0;
    uint8_t *data = NULL;

    memset(a, 0xaa, sizeof(a));
    memset(b, 0xbb, sizeof(b));
    ok(fs && memfs_add(fs, "f", a, 4096) == 0 &&
       qedi_storage_open(&o, loop, "f", IO_OPEN_WRITE, &f, &err) == 0,
       "memfs: a file added and opened");
    ok(qedi_storage_open(&o, loop, "nothere", 0, &g, &err) == -ENOENT &&
       err.code == ENOENT, "memfs: a missing file does not open (ENOENT)");
    qedi_io_pwrite(f, b, 4096, 4096, cb_done, &st);
    ok(!st.done, "memfs: completions never arrive inside submit");
    ok(run_until(loop, &st) == 0 && f->ops->get_size(f, &size) == 0 &&
       size == 8192, "memfs: a write past the end extends the file");
    memset(got, 0x11, sizeof(got));
    ok(qedi_io_pread_sync(f, got, 12288, 0) == 0 && memcmp(got, a, 4096) == 0 &&
       memcmp(got + 4096, b, 4096) == 0 &&
       support_first_nonzero(got + 8192, 4096) == 4096,
       "memfs: reads see the data, zeros past the end (short read)");
    ok(sim_fallocate(loop, f, 0, 0, 65536) == 0 &&
       f->ops->get_size(f, &size) == 0 && size == 65536 &&
       qedi_io_pread_sync(f, got, 4096, 0) == 0 && memcmp(got, a, 4096) == 0,
       "memfs: fallocate mode 0 extends and keeps the data");
    ok(sim_fallocate(loop, f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                     1024, 4096) == 0 &&
       qedi_io_pread_sync(f, got, 8192, 0) == 0 && got[1023] == 0xaa &&
       support_first_nonzero(got + 1024, 4096) == 4096 && got[5120] == 0xbb &&
       f->ops->get_size(f, &size) == 0 && size == 65536,
       "memfs: punching a hole zeros the range and keeps the size");
    ok(sim_fallocate(loop, f, FALLOC_FL_COLLAPSE_RANGE, 0, 4096) ==
           -EOPNOTSUPP,
       "memfs: other fallocate modes fail with EOPNOTSUPP");
    memfs_set_max_file_size(fs, 1 * MiB);
    ok(qedi_io_pwrite_sync(f, b, 4096, MiB - 2048) == -ENOSPC &&
       f->ops->truncate(f, 2 * MiB) == -ENOSPC,
       "memfs: growing past the size limit fails with ENOSPC");
    memfs_fail_nth(fs, 2, EIO);
    ok(qedi_io_pread_sync(f, got, 512, 0) == 0 &&
       qedi_io_pwrite_sync(f, b, 512, 0) == -EIO &&
       qedi_io_pread_sync(f, got, 512, 0) == 0 && got[0] == 0xaa &&
       memfs_faults_fired(fs) == 1,
       "memfs: the 2nd operation fails as asked, changes nothing, and the "
       "next works");

    /* Power loss: what was synced stays; the rest lands in part or not. */
    memfs_set_volatile(fs, true);
    ok(qedi_io_pwrite_sync(f, a, 8192, 16384) == 0 && qedi_io_sync_sync(f) == 0 &&
       qedi_io_pwrite_sync(f, b, 8192, 16384) == 0 &&
       qedi_io_pread_sync(f, got, 8192, 16384) == 0 && memcmp(got, b, 8192) == 0,
       "memfs: volatile writes are seen at once");
    memfs_crash(fs, 42);
    ok(memfs_crashed(fs) && qedi_io_pread_sync(f, got, 512, 0) == -EIO &&
       qedi_io_sync_sync(f) == -EIO && f->ops->truncate(f, 0) == -EIO,
       "memfs: after a crash every operation of an old file fails with EIO");
    ok(qedi_storage_open(&o, loop, "f", 0, &g, &err) == -EIO,
       "memfs: nothing opens until the next boot");
    memfs_revive(fs);
    ok(memfs_get(fs, "f", &data, &len) == 0 && len == 65536,
       "memfs: the file survives with its synced length");
    for (unsigned i = 0; data && i < 8192; i++) {
        uint8_t v = data[16384 + i];
        if (v != 0xaa && v != 0xbb)
            b_none_or_sectors = a_whole = false;
        if (i % 512 && v != data[16384 + i - 1])
            b_none_or_sectors = false;
    }
    ok(a_whole && b_none_or_sectors, "memfs: synced data survives; the "
       "unsynced write lands whole, torn in 512-byte sectors, or not");
    free(data);
    qedi_io_file_close(f);
    f = NULL;
    ok(qedi_storage_open(&o, loop, "f", IO_OPEN_WRITE, &f, &err) == 0 &&
       qedi_io_pread_sync(f, got, 512, 16384) == 0,
       "memfs: opens work again after the reboot");
    qedi_io_file_close(f);
    memfs_free(fs);
}

int main(void)
{
    struct support_template t[NVARIANTS] = { 0 };
    qed_error err = { 0 };
    qed_loop *loop;

    if (!support_tap_templates("faults", t, NVARIANTS, make_template))
        return tap_done();
    if (ok(qed_loop_new(QED_ENGINE_AUTO, &loop, &err) == 0, "event loop")) {
        memfs_selftest(loop);
        for (unsigned i = 0; i < NVARIANTS; i++)
            run_variant(i, loop, &t[i]);
        qed_loop_free(loop);
    }
    support_templates_free(t, NVARIANTS);
    return tap_done();
}
