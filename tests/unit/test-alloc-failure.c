/* SPDX-License-Identifier: MIT */
/* Failed allocating writes leave no leaked clusters behind an image marked
 * clean.  On the simulated file system of io-sim.c, without and with a
 * raw backing file, one I/O operation of an allocating write fails:
 *   - at the end of the file, the clusters go back: a later write reuses
 *     them (and sees nothing the failed one left), the image closes clean
 *     and its check finds no leak;
 *   - below a later allocation, the image stays marked dirty on disk, past
 *     the idle timer and the close, and the next read-write open reclaims
 *     the clusters;
 *   - when the later allocation fails too, both go back;
 *   - a failed write of a linked L2 table keeps the image dirty too.
 * Every time, the open image keeps working and acknowledged data reads
 * back. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "qed-image.h"
#include "io-sim.h"
#include "qed.h"
#include "support-image.h"
#include "support-sim.h"
#include "support-tap.h"

#define CS 4096u          /* cluster size; table_size 1: 512 clusters a table */
#define IMAGE_SIZE (4 * MiB)
#define BASE_SIZE (1 * MiB)
#define IDLE_WAIT_MS 2600 /* longer than the idle timer's 2 s */

struct variant {
    const char *name;
    bool backing;
};

static const struct variant variants[] = {
    { "no backing", false },
    { "raw backing", true },
};
#define NVARIANTS (sizeof(variants) / sizeof(variants[0]))

struct run {
    const struct variant *v;
    const struct support_template *t;
    struct memfs *fs;
    qed_loop *loop;
    qed_image *img;
};

static int make_template(const char *dir, unsigned i,
                         struct support_template *t)
{
    const struct variant *v = &variants[i];
    char top[1200], base[1200];
    qed_error err = { 0 };
    int ret;

    snprintf(top, sizeof(top), "%s/top%u.qed", dir, i);
    snprintf(base, sizeof(base), "%s/base.raw", dir);
    t->base_ids = calloc(IMAGE_SIZE / SECT, sizeof(uint32_t));
    if (!t->base_ids)
        return -ENOMEM;
    if (v->backing) {
        for (uint64_t s = 0; s < BASE_SIZE / SECT; s++)
            t->base_ids[s] = ID_BASE;
        ret = support_write_sectors(base, t->base_ids, BASE_SIZE / SECT);
        if (ret < 0)
            return ret;
    }
    ret = support_create(top, IMAGE_SIZE, CS, 1,
                         v->backing ? "base.raw" : NULL, QED_FORMAT_RAW, &err);
    if (ret < 0) {
        tap_diag("creating %s: %s", top, err.message);
        return ret;
    }
    return support_template_read(t, top, v->backing ? base : NULL);
}

/* ---- helpers ------------------------------------------------------------------ */

static bool dirty_on_disk(struct run *r)
{
    uint8_t b[8];
    uint64_t features = 0;

    if (memfs_pread(r->fs, "top.qed", b, sizeof(b), 16) < 0)
        return false;
    for (int i = 7; i >= 0; i--)
        features = (features << 8) | b[i];
    return (features & QED_F_NEED_CHECK) != 0;
}

static bool start(struct run *r)
{
    qed_error err = { 0 };

    r->fs = support_template_load(r->t, "base.raw", true);
    if (support_template_open(r->fs, r->loop, QED_CACHE_WRITEBACK, 0,
                              &r->img, &err) < 0) {
        tap_diag("%s: open: %s", r->v->name, err.message);
        return false;
    }
    return true;
}

static void finish(struct run *r)
{
    qed_error err = { 0 };

    if (r->img)
        qed_close(r->img, &err);
    r->img = NULL;
    memfs_free(r->fs);
    r->fs = NULL;
}

/* Cluster c written whole with content id. */
static int write_cluster(struct run *r, uint64_t c, uint32_t id)
{
    uint8_t *buf = malloc(CS);
    qed_error err = { 0 };
    int ret;

    if (!buf)
        abort();
    support_fill_sectors(buf, id, c * CS / SECT, CS / SECT);
    ret = qed_pwrite(r->img, buf, CS, c * CS, &err);
    free(buf);
    return ret;
}

/* Does cluster c read as content id, or other (ID_ZERO: zeros; ID_BASE:
 * the backing file's, zeros past its end)? */
static bool cluster_reads(struct run *r, uint64_t c, uint32_t id,
                          uint32_t other)
{
    uint8_t *buf = malloc(CS);
    qed_error err = { 0 };
    bool good;

    if (!buf)
        abort();
    good = qed_pread(r->img, buf, CS, c * CS, &err) == 0;
    for (unsigned i = 0; good && i < CS / SECT; i++) {
        uint64_t s = c * CS / SECT + i;
        uint32_t got = support_identify(buf + i * SECT, s, 1000);
        uint32_t want = id == ID_BASE && s * SECT >= BASE_SIZE ? ID_ZERO : id;
        uint32_t alt = other == ID_BASE && s * SECT >= BASE_SIZE ? ID_ZERO
                                                                 : other;
        if (got == ID_BASE && !r->v->backing)
            got = ID_GARBAGE;
        good = got == want || got == alt;
        if (!good)
            tap_diag("%s: cluster %" PRIu64 " sector %u reads as id %d",
                     r->v->name, c, i, got == ID_GARBAGE ? -1 : (int)got);
    }
    free(buf);
    return good;
}

struct pending_write {
    uint8_t *buf;
    bool done;
    int ret;
};

static void write_done(void *opaque, int ret, const qed_error *err)
{
    struct pending_write *w = opaque;
    (void)err;
    w->done = true;
    w->ret = ret;
}

/* Writes clusters a and b (ids 20, 21) in flight together, the fail_k-th
 * I/O operation from now failing with EIO (0: none); their results in
 * ret[0], ret[1]. */
static void two_writes(struct run *r, uint64_t a, uint64_t b,
                       uint64_t fail_k, int ret[2])
{
    struct pending_write w[2] = { { 0 } };
    uint64_t c[2] = { a, b };

    if (fail_k)
        memfs_fail_nth(r->fs, fail_k, EIO);
    for (unsigned i = 0; i < 2; i++) {
        struct iovec iov;
        w[i].buf = malloc(CS);
        if (!w[i].buf)
            abort();
        support_fill_sectors(w[i].buf, 20 + i, c[i] * CS / SECT, CS / SECT);
        iov.iov_base = w[i].buf;
        iov.iov_len = CS;
        if (qed_aio_writev(r->img, &iov, 1, c[i] * CS, write_done, &w[i]) < 0)
            w[i].done = true, w[i].ret = -EINVAL;
    }
    while (!w[0].done || !w[1].done)
        if (qed_loop_run(r->loop, -1) < 0)
            break;
    for (unsigned i = 0; i < 2; i++) {
        ret[i] = w[i].ret;
        free(w[i].buf);
    }
    memfs_fail_nth(r->fs, 0, 0);
}

static void idle_for(struct run *r, int ms)
{
    for (int waited = 0; waited < ms; waited += 50)
        qed_loop_run(r->loop, 50);
}

/* Closes the image; a read-only check then finds it clean without leaks,
 * or (dirty_ok) it is dirty and a read-write open leaves no leak.  Returns
 * whether the closed image was dirty, through *was_dirty. */
static bool closed_without_leaks(struct run *r, bool dirty_ok,
                                 bool *was_dirty)
{
    struct qed_open_options ro = { .size = sizeof(ro), .loop = r->loop };
    struct storage_driver opener = memfs_opener(r->fs);
    struct qed_check_result res = { .size = sizeof(res) };
    qed_error err = { 0 };
    qed_image *img = NULL;
    bool good = true;

    if (qed_close(r->img, &err) < 0) {
        tap_diag("%s: close: %s", r->v->name, err.message);
        good = false;
    }
    r->img = NULL;
    *was_dirty = dirty_on_disk(r);
    if (*was_dirty && !dirty_ok) {
        tap_diag("%s: the closed image is dirty", r->v->name);
        return false;
    }
    if (*was_dirty) {
        /* The repairing open, then the check below on its result. */
        if (support_template_open(r->fs, r->loop, QED_CACHE_WRITEBACK, 0,
                                  &img, &err) < 0 ||
            qed_close(img, &err) < 0) {
            tap_diag("%s: repairing open: %s", r->v->name, err.message);
            return false;
        }
    }
    if (qedi_image_open("top.qed", &ro, &opener, &img, &err) < 0) {
        tap_diag("%s: open read-only: %s", r->v->name, err.message);
        return false;
    }
    qed_check_result_init(&res);
    if (qed_check(img, 0, &res, &err) < 0 || res.leaks || res.corruptions ||
        res.check_errors) {
        tap_diag("%s: check: %" PRIu64 " leaks, %" PRIu64 " corruptions "
                 "(%s)", r->v->name, res.leaks, res.corruptions, err.message);
        good = false;
    }
    if (dirty_on_disk(r)) {
        tap_diag("%s: still dirty after the repairing open", r->v->name);
        good = false;
    }
    qed_close(img, &err);
    return good;
}

/* ---- the cases ------------------------------------------------------------------- */

/* Every I/O operation of a write into a new L2 table fails in turn. */
static void new_table_failures(struct run *r)
{
    const char *n = r->v->name;
    unsigned failed = 0, leaky = 0, stale = 0, dirty = 0, broken = 0;

    for (uint64_t k = 1; k <= 8; k++) {
        bool was_dirty;
        int ret;

        if (!start(r)) {
            broken++;
            break;
        }
        if (write_cluster(r, 0, 2) < 0)
            broken++;
        memfs_fail_nth(r->fs, k, EIO);
        ret = write_cluster(r, 600, 3);
        memfs_fail_nth(r->fs, 0, 0);
        failed += ret == -EIO;
        /* The same clusters again, written in part: the rest must read as
         * zeros, whatever the failed write left in them. */
        {
            uint8_t sect[SECT];
            qed_error err = { 0 };
            support_fill_sector(sect, 4, 600 * CS / SECT);
            if (qed_pwrite(r->img, sect, SECT, 600 * CS, &err) < 0)
                broken++;
        }
        if (!cluster_reads(r, 0, 2, 2))
            broken++;
        {
            uint8_t *buf = malloc(CS);
            qed_error err = { 0 };
            if (!buf)
                abort();
            if (qed_pread(r->img, buf, CS, 600 * CS, &err) < 0 ||
                (ret < 0 && support_first_nonzero(buf + SECT, CS - SECT) !=
                                CS - SECT))
                stale++;
            free(buf);
        }
        if (!closed_without_leaks(r, true, &was_dirty))
            leaky++;
        dirty += was_dirty;
        finish(r);
    }
    ok(failed > 0 && broken == 0, "%s: a write into a new L2 table fails "
       "with EIO on its I/O operations (%u of 8), and the image keeps "
       "working", n, failed);
    ok(stale == 0, "%s: clusters given back read as zeros when handed out "
       "again (%u runs showed old bytes)", n, stale);
    ok(leaky == 0, "%s: after each failure the closed image has no leak, "
       "or is dirty and its next open repairs it (%u runs leaked, %u left "
       "dirty)", n, leaky, dirty);
}

/* The write at the end of the file fails: its clusters go back. */
static void failure_at_the_end(struct run *r)
{
    const char *n = r->v->name;
    bool was_dirty = false, reused;
    struct qed_block_status st0 = { .size = sizeof(st0) };
    struct qed_block_status st8 = { .size = sizeof(st8) };
    qed_error err = { 0 };
    int ret;

    if (!ok(start(r) && write_cluster(r, 0, 2) == 0, "%s: open, first "
            "write", n))
        return;
    memfs_fail_nth(r->fs, 1, EIO);
    ret = write_cluster(r, 8, 3);
    memfs_fail_nth(r->fs, 0, 0);
    ok(ret == -EIO, "%s: the allocating write whose data write fails "
       "reports EIO (got %d)", n, ret);
    ok(write_cluster(r, 8, 4) == 0 && write_cluster(r, 9, 5) == 0 &&
       cluster_reads(r, 0, 2, 2) && cluster_reads(r, 8, 4, 4) &&
       cluster_reads(r, 9, 5, 5), "%s: later writes on the open image work; "
       "acknowledged data reads back", n);
    reused = qed_block_status(r->img, 0, CS, &st0, &err) == 0 &&
             qed_block_status(r->img, 8 * CS, CS, &st8, &err) == 0 &&
             st0.has_offset && st8.has_offset &&
             st8.offset == st0.offset + CS;
    ok(reused, "%s: the next allocation gets the cluster given back (host "
       "0x%" PRIx64 " after 0x%" PRIx64 ")", n, st8.offset, st0.offset);
    ok(closed_without_leaks(r, false, &was_dirty), "%s: closed clean, and "
       "the check finds no leak", n);
    finish(r);
}

/* Of two writes in flight, the first one's data write fails: its clusters
 * lie below the second's. */
static void failure_below_another(struct run *r)
{
    const char *n = r->v->name;
    bool was_dirty = false;
    int ret[2];

    if (!ok(start(r) && write_cluster(r, 0, 2) == 0, "%s: open, first "
            "write", n))
        return;
    two_writes(r, 8, 10, 1, ret);
    ok(ret[0] == -EIO && ret[1] == 0, "%s: of two writes in flight the "
       "first fails, the second works (%d, %d)", n, ret[0], ret[1]);
    ok(dirty_on_disk(r), "%s: the image is marked dirty on disk when the "
       "failure is reported", n);
    idle_for(r, IDLE_WAIT_MS);
    ok(dirty_on_disk(r), "%s: the idle timer leaves it dirty", n);
    ok(cluster_reads(r, 0, 2, 2) && cluster_reads(r, 10, 21, 21) &&
       cluster_reads(r, 8, r->v->backing ? ID_BASE : ID_ZERO,
                     r->v->backing ? ID_BASE : ID_ZERO) &&
       write_cluster(r, 8, 6) == 0 && cluster_reads(r, 8, 6, 6),
       "%s: acknowledged data reads back; the failed range is old; "
       "writing it again works", n);
    ok(closed_without_leaks(r, true, &was_dirty) && was_dirty, "%s: the "
       "close leaves it dirty, and the next read-write open reclaims the "
       "leak", n);
    finish(r);
}

/* Of two writes in flight, the second one's data write fails: its
 * clusters are at the end of the file. */
static void failure_of_the_last(struct run *r)
{
    const char *n = r->v->name;
    bool was_dirty = false;
    int ret[2];

    if (!ok(start(r) && write_cluster(r, 0, 2) == 0, "%s: open, first "
            "write", n))
        return;
    two_writes(r, 8, 10, 2, ret);
    ok(ret[0] == 0 && ret[1] == -EIO, "%s: of two writes in flight the "
       "second fails (%d, %d)", n, ret[0], ret[1]);
    idle_for(r, IDLE_WAIT_MS);
    ok(!dirty_on_disk(r), "%s: with the clusters given back, the idle "
       "timer marks the image clean", n);
    ok(closed_without_leaks(r, false, &was_dirty), "%s: closed clean, and "
       "the check finds no leak", n);
    finish(r);
}

/* The L2 write of a linked table fails: the table on disk may or may not
 * hold the new entry. */
static void table_write_failure(struct run *r)
{
    const char *n = r->v->name;
    /* Data, (flush with a backing file), L2. */
    uint64_t k = r->v->backing ? 3 : 2;
    bool was_dirty = false;
    int ret;

    if (!ok(start(r) && write_cluster(r, 0, 2) == 0, "%s: open, first "
            "write", n))
        return;
    memfs_fail_nth(r->fs, k, EIO);
    ret = write_cluster(r, 12, 3);
    memfs_fail_nth(r->fs, 0, 0);
    ok(ret == -EIO && dirty_on_disk(r), "%s: a failed L2 write reports EIO "
       "(got %d) with the image marked dirty on disk", n, ret);
    ok(write_cluster(r, 13, 4) == 0 && cluster_reads(r, 13, 4, 4) &&
       cluster_reads(r, 0, 2, 2), "%s: the table takes later writes", n);
    ok(closed_without_leaks(r, true, &was_dirty) && was_dirty, "%s: the "
       "close leaves it dirty, and the next read-write open reclaims the "
       "leak", n);
    finish(r);
}

int main(void)
{
    struct support_template t[NVARIANTS] = { 0 };
    qed_error err = { 0 };
    qed_loop *loop;

    if (!support_tap_templates("alloc-failure", t, NVARIANTS, make_template))
        return tap_done();
    if (ok(qed_loop_new(QED_ENGINE_AUTO, &loop, &err) == 0, "event loop")) {
        for (unsigned i = 0; i < NVARIANTS; i++) {
            struct run r = { .v = &variants[i], .t = &t[i], .loop = loop };
            failure_at_the_end(&r);
            failure_below_another(&r);
            failure_of_the_last(&r);
            table_write_failure(&r);
            new_table_failures(&r);
        }
        qed_loop_free(loop);
    }
    support_templates_free(t, NVARIANTS);
    return tap_done();
}
