/* SPDX-License-Identifier: MIT */
/* A write into a cluster whose allocation by another request is still in
 * flight: it may only complete once that allocation is done, or a flush
 * after it would promise data that a power loss can still unmap (the new
 * entry is in the in-memory table before the table write reaches the disk).
 *
 * Request A writes the first 4 KiB of an unallocated cluster over a backing
 * file (an allocation: copy-on-write, flush, table write).  Request B,
 * submitted after 0 to MAX_ROUNDS loop rounds, writes another 4 KiB of the
 * same cluster.  Each timing runs on a fresh simulated file system with
 * random I/O delays; B must not complete before A, and after B and a flush
 * complete, a power loss must leave B's data in place. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "io-sim.h"
#include "qed.h"
#include "support-image.h"
#include "support-sim.h"
#include "support-tap.h"

#define CLUSTER (64 * KiB)
#define SIZE (1 * MiB)
#define WRITE_LEN (4 * KiB)
#define B_OFFSET (32 * KiB)
#define ID_A 2u
#define ID_B 3u
#define MAX_ROUNDS 48u
#define SEEDS 32u

struct completion {
    bool done;
    int ret;
    unsigned order; /* when it completed, counted across requests */
};

static unsigned completions;

static void completed(void *opaque, int ret, const qed_error *err)
{
    struct completion *c = opaque;

    (void)err;
    c->done = true;
    c->ret = ret;
    c->order = ++completions;
}

static bool run_until(qed_loop *loop, const struct completion *c)
{
    for (unsigned i = 0; i < 100000 && !c->done; i++)
        if (qed_loop_run(loop, 0) < 0)
            return false;
    return c->done;
}

static int submit_write(qed_image *img, uint8_t *buf, uint32_t id,
                        uint64_t offset, struct completion *c)
{
    struct iovec v = { buf, WRITE_LEN };

    support_fill_sectors(buf, id, offset / SECT, WRITE_LEN / SECT);
    return qed_aio_writev(img, &v, 1, offset, completed, c);
}

/* B's sectors after the power loss, on the next boot. */
static bool b_survived(struct memfs *fs, qed_loop *loop, char *why,
                       size_t why_len)
{
    uint8_t buf[WRITE_LEN];
    qed_error err = { 0 };
    qed_image *img = NULL;
    bool good = true;

    memfs_revive(fs);
    if (support_template_open(fs, loop, QED_CACHE_WRITEBACK, 0, &img,
                              &err) < 0) {
        snprintf(why, why_len, "reopen: %s", err.message);
        return false;
    }
    if (qed_pread(img, buf, WRITE_LEN, B_OFFSET, &err) < 0) {
        snprintf(why, why_len, "read: %s", err.message);
        good = false;
    }
    for (uint64_t i = 0; good && i < WRITE_LEN / SECT; i++) {
        uint64_t s = B_OFFSET / SECT + i;
        uint32_t got = support_identify(buf + i * SECT, s, ID_B + 1);
        if (got != ID_B) {
            snprintf(why, why_len, "sector %llu reads as id %d, not B's %u",
                     (unsigned long long)s, got == ID_GARBAGE ? -1 : (int)got,
                     ID_B);
            good = false;
        }
    }
    qed_close(img, NULL);
    return good;
}

struct outcome {
    unsigned runs, b_first, lost, errors;
};

/* One timing: B after rounds loop rounds, I/O delays drawn from seed. */
static void run_one(const struct support_template *t, qed_loop *loop,
                    unsigned rounds, uint64_t seed, struct outcome *out)
{
    struct memfs *fs = support_template_load(t, "base.raw", true);
    uint8_t *a_buf = malloc(WRITE_LEN), *b_buf = malloc(WRITE_LEN);
    struct completion a = { 0 }, b = { 0 }, f = { 0 };
    qed_error err = { 0 };
    qed_image *img = NULL;
    char why[700];

    if (!a_buf || !b_buf)
        abort();
    memfs_set_volatile(fs, true);
    memfs_set_delays(fs, 16, seed);
    out->runs++;
    if (support_template_open(fs, loop, QED_CACHE_WRITEBACK, 0, &img,
                              &err) < 0 ||
        submit_write(img, a_buf, ID_A, 0, &a) < 0) {
        tap_diag("rounds %u seed %llu: open or write A: %s", rounds,
                 (unsigned long long)seed, err.message);
        out->errors++;
        goto done;
    }
    for (unsigned i = 0; i < rounds && !a.done; i++)
        qed_loop_run(loop, 0);
    if (submit_write(img, b_buf, ID_B, B_OFFSET, &b) < 0 ||
        !run_until(loop, &b) || b.ret < 0 ||
        qed_aio_flush(img, completed, &f) < 0 || !run_until(loop, &f) ||
        f.ret < 0) {
        tap_diag("rounds %u seed %llu: write B or flush failed", rounds,
                 (unsigned long long)seed);
        out->errors++;
        goto done;
    }
    if (!a.done || a.order > b.order) {
        out->b_first++;
        tap_diag("rounds %u seed %llu: B completed before the allocating "
                 "write A", rounds, (unsigned long long)seed);
    }
    memfs_crash(fs, seed);
    qed_close(img, NULL); /* fails: the files are gone with the crash */
    img = NULL;
    if (!b_survived(fs, loop, why, sizeof(why))) {
        out->lost++;
        tap_diag("rounds %u seed %llu: after B and a flush completed and "
                 "the power failed: %s", rounds, (unsigned long long)seed,
                 why);
    }
done:
    if (img) {
        run_until(loop, &a);
        qed_close(img, NULL);
    }
    memfs_free(fs);
    free(a_buf);
    free(b_buf);
}

static bool make_template(struct support_template *t, char *dir,
                          size_t dir_len)
{
    uint32_t ids[SIZE / SECT];
    qed_error err = { 0 };

    if (support_mkdtemp("write-order", dir, dir_len) < 0)
        return false;
    for (size_t i = 0; i < SIZE / SECT; i++)
        ids[i] = ID_BASE;
    if (support_write_sectors(support_path(dir, "base.raw"), ids,
                              SIZE / SECT) < 0 ||
        support_create(support_path(dir, "top.qed"), SIZE, CLUSTER, 1,
                       "base.raw", QED_FORMAT_RAW, &err) < 0) {
        tap_diag("creating the images: %s", err.message);
        return false;
    }
    return support_template_read(t, support_path(dir, "top.qed"),
                                 support_path(dir, "base.raw")) == 0;
}

int main(void)
{
    struct support_template t = { 0 };
    struct outcome out = { 0 };
    qed_error err = { 0 };
    qed_loop *loop = NULL;
    char dir[256];

    if (!ok(make_template(&t, dir, sizeof(dir)), "template images") ||
        !ok(qed_loop_new(QED_ENGINE_THREADS, &loop, &err) == 0,
            "event loop")) {
        tap_done();
        return 1;
    }
    for (unsigned rounds = 0; rounds <= MAX_ROUNDS; rounds++)
        for (uint64_t seed = 1; seed <= SEEDS; seed++)
            run_one(&t, loop, rounds, seed * 0x9e3779b97f4a7c15u, &out);
    tap_diag("%u timings", out.runs);
    ok(out.errors == 0, "every timing runs without I/O errors");
    ok(out.b_first == 0, "a write into a cluster being allocated completes "
       "after the allocation (%u of %u did not)", out.b_first, out.runs);
    ok(out.lost == 0, "its data survives a power loss after a flush (%u of "
       "%u lost)", out.lost, out.runs);
    qed_loop_free(loop);
    support_templates_free(&t, 1);
    support_rmtree(dir);
    return tap_done();
}
