/* SPDX-License-Identifier: MIT */
/* Copy-on-read (QED_OPEN_COPY_ON_READ) against a client's writes: a write
 * to a cluster that a copy-on-read read is bringing in always wins — issued
 * before the read, together with it, or while its copy is on its way — and
 * the read returns either the backing file's bytes or the write's, whole;
 * reads past the backing file's end copy nothing; a read-only open with the
 * mode is refused.  Every engine. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qed.h"
#include "support-image.h"
#include "../tap.h"

#define CLUSTER 65536u
#define BASE_SIZE (4u * CLUSTER)
#define TOP_SIZE (8u * CLUSTER)
#define BASE_SEED 11
#define WRITE_SEED 22

struct counter {
    unsigned done;
    int ret[8];
};

struct slot {
    struct counter *c;
    unsigned i;
};

static void done(void *opaque, int ret, const qed_error *err)
{
    struct slot *s = opaque;
    (void)err;
    s->c->ret[s->i] = ret;
    s->c->done++;
}

static bool make_chain(const char *dir, qed_error *err)
{
    const char *base = support_path(dir, "base.qed");
    const char *top = support_path(dir, "top.qed");
    uint8_t *buf = malloc(BASE_SIZE);
    qed_image *img = NULL;
    bool good = false;

    remove(base);
    remove(top);
    if (!buf)
        return false;
    support_fill(buf, BASE_SIZE, BASE_SEED, 0);
    if (support_create(base, BASE_SIZE, CLUSTER, 4, NULL, QED_FORMAT_PROBE, err) == 0 &&
        support_open(base, QED_OPEN_RDWR, QED_ENGINE_AUTO, &img, err) == 0 &&
        qed_pwrite(img, buf, BASE_SIZE, 0, err) == 0 && qed_close(img, err) == 0 &&
        support_create(top, TOP_SIZE, CLUSTER, 4, "base.qed", QED_FORMAT_QED, err) == 0)
        good = true;
    free(buf);
    return good;
}

/* Cluster 1 is read with copy-on-read and written by the client, in the
 * order `order` says (0: read first, 1: write first), both submitted before
 * the loop runs; then the cluster must hold the write's bytes. */
static void race(const char *en, enum qed_engine engine, const char *dir,
                 int order)
{
    const char *top = support_path(dir, "top.qed");
    uint8_t *rbuf = malloc(CLUSTER), *wbuf = malloc(CLUSTER), *after = malloc(CLUSTER);
    struct iovec rv = { rbuf, CLUSTER }, wv = { wbuf, CLUSTER };
    struct counter c = { 0 };
    struct slot sr = { &c, 0 }, sw = { &c, 1 };
    qed_image *img = NULL;
    qed_error err = { 0 };
    bool from_base, from_write;

    if (!make_chain(dir, &err) ||
        support_open(top, QED_OPEN_RDWR | QED_OPEN_COPY_ON_READ, engine, &img,
                     &err) < 0) {
        ok(0, "%s: a chain with copy-on-read: %s", en, err.message);
        goto out;
    }
    support_fill(wbuf, CLUSTER, WRITE_SEED, CLUSTER);
    if (order == 0) {
        qed_aio_readv(img, &rv, 1, CLUSTER, done, &sr);
        qed_aio_writev(img, &wv, 1, CLUSTER, done, &sw);
    } else {
        qed_aio_writev(img, &wv, 1, CLUSTER, done, &sw);
        qed_aio_readv(img, &rv, 1, CLUSTER, done, &sr);
    }
    ok(support_run_until(qed_image_loop(img), &c.done, 2, 10000) == 0 &&
       c.ret[0] == 0 && c.ret[1] == 0, "%s: %s: both complete (read %d, "
       "write %d)", en, order ? "write, then read" : "read, then write",
       c.ret[0], c.ret[1]);
    from_base = support_check_pattern(rbuf, CLUSTER, BASE_SEED, CLUSTER) == CLUSTER;
    from_write = support_check_pattern(rbuf, CLUSTER, WRITE_SEED, CLUSTER) == CLUSTER;
    ok(from_base || from_write, "%s: the read returns one whole version "
       "(backing file %d, write %d)", en, from_base, from_write);
    ok(qed_pread(img, after, CLUSTER, CLUSTER, &err) == 0 &&
       support_check_pattern(after, CLUSTER, WRITE_SEED, CLUSTER) == CLUSTER,
       "%s: the cluster holds the write's bytes, not the backing file's",
       en);
    ok(qed_close(img, &err) == 0, "%s: close: %s", en, err.message);
out:
    free(rbuf);
    free(wbuf);
    free(after);
}

/* A write lands while the copy of a whole-image read is on its way. */
static void write_during_copy(const char *en, enum qed_engine engine,
                              const char *dir)
{
    const char *top = support_path(dir, "top.qed");
    uint8_t *rbuf = malloc(TOP_SIZE), *wbuf = malloc(4096), *after = malloc(4096);
    struct iovec rv = { rbuf, TOP_SIZE }, wv = { wbuf, 4096 };
    struct counter c = { 0 };
    struct slot sr = { &c, 0 }, sw = { &c, 1 };
    qed_image *img = NULL;
    qed_error err = { 0 };
    struct qed_block_status st;
    bool beyond_unallocated;

    if (!make_chain(dir, &err) ||
        support_open(top, QED_OPEN_RDWR | QED_OPEN_COPY_ON_READ, engine, &img,
                     &err) < 0) {
        ok(0, "%s: a chain with copy-on-read: %s", en, err.message);
        goto out;
    }
    support_fill(wbuf, 4096, WRITE_SEED, 3 * CLUSTER + 8192);
    qed_aio_readv(img, &rv, 1, 0, done, &sr);
    /* Run until the read is under way, then write inside its last
     * cluster of the backing file. */
    qed_loop_run(qed_image_loop(img), 0);
    qed_aio_writev(img, &wv, 1, 3 * CLUSTER + 8192, done, &sw);
    ok(support_run_until(qed_image_loop(img), &c.done, 2, 10000) == 0 &&
       c.ret[0] == 0 && c.ret[1] == 0, "%s: a whole read and a write into "
       "it complete", en);
    ok(qed_pread(img, after, 4096, 3 * CLUSTER + 8192, &err) == 0 &&
       support_check_pattern(after, 4096, WRITE_SEED, 3 * CLUSTER + 8192) == 4096,
       "%s: the write's bytes stay", en);
    ok(support_check_pattern(rbuf, 3 * CLUSTER, BASE_SEED, 0) == 3 * CLUSTER,
       "%s: the read returned the backing file's data", en);
    /* Past the backing file's 4 clusters the image reads zeros: nothing to
     * copy there. */
    qed_block_status_init(&st);
    beyond_unallocated =
        qed_block_status(img, 4 * CLUSTER, 4 * CLUSTER, &st, &err) == 0 &&
        !st.present && st.length == 4 * CLUSTER;
    ok(beyond_unallocated, "%s: nothing copied past the backing file's end "
       "(present %d, %llu bytes)", en, st.present,
       (unsigned long long)st.length);
    ok(qed_close(img, &err) == 0, "%s: close: %s", en, err.message);
out:
    free(rbuf);
    free(wbuf);
    free(after);
}

static void read_only_refused(const char *dir)
{
    qed_image *img = NULL;
    qed_error err = { 0 };
    int ret;

    make_chain(dir, &err);
    ret = support_open(support_path(dir, "top.qed"), QED_OPEN_COPY_ON_READ,
                       QED_ENGINE_AUTO, &img, &err);
    ok(ret == -EINVAL && !img && strstr(err.message, "read-write"),
       "a read-only open with copy-on-read is refused: %d %s", ret,
       err.message);
}

int main(void)
{
    static const enum qed_engine engines[] = { QED_ENGINE_URING,
                                               QED_ENGINE_THREADS };
    char dir[256];

    if (support_mkdtemp("cor", dir, sizeof(dir)) < 0) {
        ok(0, "a temporary directory");
        return tap_done();
    }
    for (size_t i = 0; i < sizeof(engines) / sizeof(engines[0]); i++) {
        const char *en = support_engine_name(engines[i]);
        race(en, engines[i], dir, 0);
        race(en, engines[i], dir, 1);
        write_during_copy(en, engines[i], dir);
    }
    read_only_refused(dir);
    support_rmtree(dir);
    return tap_done();
}
