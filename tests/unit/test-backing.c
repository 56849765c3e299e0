/* SPDX-License-Identifier: MIT */
/* Backing files, once per I/O engine: raw and QED backing files, copy-on-
 * write of the uncovered head and tail of partial-cluster writes, zero
 * clusters over backing data, backing files shorter than the image, relative
 * names, missing files, loops, chain depth and QED_OPEN_NO_BACKING, and a
 * concurrent workload over a backing file. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"
#include "qed.h"
#include "support-image.h"
#include "support-tap.h"

#define CS (64 * KiB)

struct ctx {
    enum qed_engine engine;
    const char *en;
    char dir[256];
};

/* Opens with the engine under test; one test point (see support-tap.h). */
static bool open_image(const struct ctx *c, const char *path, unsigned flags,
                       qed_image **img, const char *what)
{
    struct qed_open_options o = { .size = sizeof(o),
                                  .flags = flags, .engine = c->engine };
    return support_tap_open(c->en, path, &o, img, what);
}

/* Does the image read as want over [off, off+len)? Diagnoses the first
 * difference. */
static bool reads_as(qed_image *img, const uint8_t *want, uint64_t off,
                     uint64_t len)
{
    uint8_t *buf = malloc(len);
    qed_error err = { 0 };
    bool same = false;
    int ret;

    if (!buf)
        return false;
    ret = qed_pread(img, buf, len, off, &err);
    if (ret < 0) {
        tap_diag("read %" PRIu64 "+%" PRIu64 ": %s", off, len, err.message);
    } else {
        size_t i;
        for (i = 0; i < len && buf[i] == want[i]; i++)
            ;
        same = i == len;
        if (!same)
            tap_diag("first difference at %" PRIu64 ": got 0x%02x, want "
                     "0x%02x", off + i, buf[i], want[i]);
    }
    free(buf);
    return same;
}

/* ---- raw backing file ----------------------------------------------------- */

static void test_raw_backing(const struct ctx *c)
{
    const char *base = support_path(c->dir, "base.raw");
    const char *path = support_path(c->dir, "over-raw.qed");
    const uint64_t size = 1 * MiB;
    uint8_t *model = malloc(size), *data = malloc(4 * CS), *buf = malloc(CS);
    struct qed_image_info *info = support_image_info_new();
    struct qed_block_status st = { .size = sizeof(st) };
    qed_image *img = NULL, *ro = NULL;
    qed_error err = { 0 };
    int ret;

    support_fill(model, size, 1, 0);
    is_u64(support_write_file(base, model, size), 0,
           "%s: raw: write a 1 MiB raw backing file", c->en);
    if (!support_tap_create(c->en, path, 0, 0, "base.raw", QED_FORMAT_RAW,
                            "a QED image over it, size from the backing "
                            "file"))
        goto out;
    if (!open_image(c, path, QED_OPEN_RDWR, &img, "it read-write"))
        goto out;
    ret = qed_get_info(img, info, &err);
    is_u64(ret, 0, "%s: raw: qed_get_info", c->en);
    is_u64(info->virtual_size, size, "%s: raw: size taken from the backing "
           "file", c->en);
    ok(info->has_backing, "%s: raw: info.has_backing", c->en);
    is_str(info->backing_file, "base.raw", "%s: raw: backing name as stored",
           c->en);
    is_str(info->backing_file_full, base, "%s: raw: backing name resolved",
           c->en);
    is_u64(info->backing_format, QED_FORMAT_RAW, "%s: raw: backing format "
           "recorded as raw", c->en);
    is_u64(info->features, QED_F_BACKING_FILE | QED_F_BACKING_FORMAT_NO_PROBE,
           "%s: raw: features BACKING_FILE | NO_PROBE", c->en);
    ok(qed_backing(img) && qed_format_of(qed_backing(img)) == QED_FORMAT_RAW,
       "%s: raw: the backing image is open as raw", c->en);
    ok(qed_backing(img) && qed_size(qed_backing(img)) == size,
       "%s: raw: backing image size", c->en);
    ok(reads_as(img, model, 0, size),
       "%s: raw: a new image reads the backing file", c->en);
    ret = qed_block_status(img, 0, size, &st, &err);
    ok(ret == 0 && st.present && st.data && st.depth == 1 && st.has_offset &&
           st.offset == 0,
       "%s: raw: status of unallocated data: present data at depth 1", c->en);

    /* Partial-cluster writes: the rest of the cluster comes from the
     * backing file. */
    support_fill(data, 100, 2, CS + 500);
    ret = qed_pwrite(img, data, 100, CS + 500, &err);
    is_u64(ret, 0, "%s: raw: write 100 bytes inside cluster 1", c->en);
    memcpy(model + CS + 500, data, 100);
    ok(reads_as(img, model + CS, CS, CS),
       "%s: raw: cluster 1 has backing head and tail around the write",
       c->en);
    support_fill(data, 2000, 3, 4 * CS - 1000);
    ret = qed_pwrite(img, data, 2000, 4 * CS - 1000, &err);
    is_u64(ret, 0, "%s: raw: write 2000 bytes across clusters 3-4", c->en);
    memcpy(model + 4 * CS - 1000, data, 2000);
    support_fill(data, 3000, 4, 6 * CS);
    ret = qed_pwrite(img, data, 3000, 6 * CS, &err);
    is_u64(ret, 0, "%s: raw: write the head of cluster 6", c->en);
    memcpy(model + 6 * CS, data, 3000);
    support_fill(data, 3000, 5, 8 * CS - 3000);
    ret = qed_pwrite(img, data, 3000, 8 * CS - 3000, &err);
    is_u64(ret, 0, "%s: raw: write the tail of cluster 7", c->en);
    memcpy(model + 8 * CS - 3000, data, 3000);
    support_fill(data, 2 * CS + 2, 6, 10 * CS - 1);
    ret = qed_pwrite(img, data, 2 * CS + 2, 10 * CS - 1, &err);
    is_u64(ret, 0, "%s: raw: write 2 clusters + 2 bytes over 4 clusters",
           c->en);
    memcpy(model + 10 * CS - 1, data, 2 * CS + 2);
    ok(reads_as(img, model, 0, size),
       "%s: raw: the whole image matches after partial writes", c->en);
    ret = qed_block_status(img, CS, CS, &st, &err);
    ok(ret == 0 && st.present && st.data && st.depth == 0,
       "%s: raw: a written cluster is data of the top image", c->en);
    support_tap_close(c->en, img, "the raw overlay");

    /* The copied head and tail are stored in the image itself. */
    if (open_image(c, path, QED_OPEN_NO_BACKING, &ro, "it without backing")) {
        ok(qed_backing(ro) == NULL, "%s: raw: NO_BACKING opens no backing",
           c->en);
        ok(reads_as(ro, model + CS, CS, CS),
           "%s: raw: cluster 1 reads whole without the backing file", c->en);
        ok(reads_as(ro, model + 3 * CS, 3 * CS, 2 * CS),
           "%s: raw: clusters 3-4 read whole without the backing file", c->en);
        ok(reads_as(ro, model + 9 * CS, 9 * CS, 4 * CS),
           "%s: raw: clusters 9-12 read whole without the backing file",
           c->en);
        memset(&err, 0, sizeof(err));
        ret = qed_pread(ro, buf, 100, 0, &err);
        is_u64(ret, (uint64_t)-ENOTSUP, "%s: raw: NO_BACKING: reading an "
               "unallocated cluster fails with ENOTSUP", c->en);
        is_u64(err.code, ENOTSUP, "%s: raw: NO_BACKING: err.code ENOTSUP",
               c->en);
        ret = qed_pread(ro, buf, 100, CS - 50, &err);
        is_u64(ret, (uint64_t)-ENOTSUP, "%s: raw: NO_BACKING: a read that "
               "touches an unallocated cluster fails", c->en);
        ret = qed_get_info(ro, info, &err);
        ok(ret == 0 && info->has_backing &&
               strcmp(info->backing_file, "base.raw") == 0,
           "%s: raw: NO_BACKING: info still names the backing file", c->en);
        support_tap_close(c->en, ro, "it without backing");
    }
    {
        uint8_t *now = NULL;
        size_t len = 0;
        support_fill(model, size, 1, 0);
        support_read_file(base, &now, &len);
        ok(now && len == size && memcmp(now, model, size) == 0,
           "%s: raw: the backing file was never written", c->en);
        free(now);
    }
    support_tap_qemu_check(path, "%s: raw: qemu-img check exits 0", c->en);
out:
    free(model);
    free(data);
    free(buf);
    free(info);
}

/* ---- QED backing files and chains ----------------------------------------- */

static void test_qed_backing(const struct ctx *c)
{
    const char *raw = support_path(c->dir, "chain0.raw");
    const char *mid = support_path(c->dir, "chain1.qed");
    const char *top = support_path(c->dir, "chain2.qed");
    const uint64_t size = 2 * MiB;
    uint8_t *model = malloc(size), *data = malloc(2 * CS);
    struct qed_image_info *info = support_image_info_new();
    struct qed_block_status st = { .size = sizeof(st) };
    qed_image *img = NULL;
    qed_error err = { 0 };
    int ret;

    /* raw <- mid.qed <- top.qed */
    support_fill(model, size, 10, 0);
    support_write_file(raw, model, size);
    if (!support_tap_create(c->en, mid, 0, 0, "chain0.raw", QED_FORMAT_RAW,
                            "chain1.qed") ||
        !support_tap_create(c->en, top, 0, 0, "chain1.qed", QED_FORMAT_PROBE,
                            "chain2.qed"))
        goto out;
    if (!open_image(c, mid, QED_OPEN_RDWR, &img, "chain1.qed read-write"))
        goto out;
    support_fill(data, CS, 11, 2 * CS);
    ret = qed_pwrite(img, data, CS, 2 * CS, &err);
    is_u64(ret, 0, "%s: chain: write cluster 2 of the middle image", c->en);
    memcpy(model + 2 * CS, data, CS);
    support_fill(data, 200, 12, 5 * CS + 100);
    ret = qed_pwrite(img, data, 200, 5 * CS + 100, &err);
    is_u64(ret, 0, "%s: chain: write 200 bytes in cluster 5 of the middle",
           c->en);
    memcpy(model + 5 * CS + 100, data, 200);
    ret = qed_write_zeroes(img, 7 * CS, CS, QED_ZERO_MAY_UNMAP, &err);
    is_u64(ret, 0, "%s: chain: zero cluster 7 of the middle", c->en);
    memset(model + 7 * CS, 0, CS);
    support_tap_close(c->en, img, "chain1.qed");

    if (!open_image(c, top, QED_OPEN_RDWR, &img, "chain2.qed read-write"))
        goto out;
    ret = qed_get_info(img, info, &err);
    is_u64(info->features, QED_F_BACKING_FILE, "%s: chain: a probed backing "
           "file sets only BACKING_FILE", c->en);
    is_u64(info->backing_format, QED_FORMAT_PROBE, "%s: chain: no backing "
           "format recorded for a probed backing file", c->en);
    ok(qed_backing(img) && qed_format_of(qed_backing(img)) == QED_FORMAT_QED,
       "%s: chain: the backing file probes as QED", c->en);
    ok(qed_backing(img) && qed_backing(qed_backing(img)) &&
           qed_format_of(qed_backing(qed_backing(img))) == QED_FORMAT_RAW &&
           qed_backing(qed_backing(qed_backing(img))) == NULL,
       "%s: chain: its own backing file is the raw one, and the chain ends",
       c->en);
    ok(reads_as(img, model, 0, size),
       "%s: chain: the top reads through both layers", c->en);
    ret = qed_block_status(img, 2 * CS, CS, &st, &err);
    ok(ret == 0 && st.present && st.data && st.depth == 1 && st.length == CS,
       "%s: chain: data of the middle image has depth 1", c->en);
    ret = qed_block_status(img, 0, CS, &st, &err);
    ok(ret == 0 && st.present && st.data && st.depth == 2,
       "%s: chain: data of the raw file has depth 2", c->en);
    ret = qed_block_status(img, 7 * CS, CS, &st, &err);
    ok(ret == 0 && st.present && st.zero && !st.data && st.depth == 1,
       "%s: chain: zero cluster of the middle image: zero at depth 1",
       c->en);

    /* COW in the top from the middle image's partial cluster and zero
     * cluster. */
    support_fill(data, 50, 13, 5 * CS + 1000);
    ret = qed_pwrite(img, data, 50, 5 * CS + 1000, &err);
    is_u64(ret, 0, "%s: chain: write 50 bytes into cluster 5 of the top",
           c->en);
    memcpy(model + 5 * CS + 1000, data, 50);
    support_fill(data, 10, 14, 7 * CS + 10);
    ret = qed_pwrite(img, data, 10, 7 * CS + 10, &err);
    is_u64(ret, 0, "%s: chain: write 10 bytes over the middle's zero cluster",
           c->en);
    memcpy(model + 7 * CS + 10, data, 10);
    ok(reads_as(img, model, 0, size),
       "%s: chain: copy-on-write took the middle image's data", c->en);
    support_tap_close(c->en, img, "chain2.qed");
    if (open_image(c, top, QED_OPEN_NO_BACKING, &img, "chain2.qed alone")) {
        ok(reads_as(img, model + 5 * CS, 5 * CS, CS),
           "%s: chain: COW cluster 5 stored whole in the top", c->en);
        ok(reads_as(img, model + 7 * CS, 7 * CS, CS),
           "%s: chain: COW cluster 7 stored whole in the top", c->en);
        support_tap_close(c->en, img, "chain2.qed alone");
    }
out:
    free(model);
    free(data);
    free(info);
}

/* ---- zero clusters over backing data ----------------------------------------- */

/* A partial write into a zero cluster must keep the rest of the cluster
 * zero: the backing file is hidden there (QEMU 7.2 copies backing data in). */
static void test_zero_cluster_cow(const struct ctx *c)
{
    const char *base = support_path(c->dir, "zbase.raw");
    const char *path = support_path(c->dir, "zcow.qed");
    const uint64_t size = 1 * MiB;
    uint8_t *model = malloc(size), *data = malloc(CS);
    struct qed_block_status st = { .size = sizeof(st) };
    qed_image *img = NULL;
    qed_error err = { 0 };
    int ret;

    support_fill(model, size, 20, 0);
    support_write_file(base, model, size);
    if (!support_tap_create(c->en, path, 0, 0, "zbase.raw", QED_FORMAT_RAW,
                            "zcow.qed") ||
        !open_image(c, path, QED_OPEN_RDWR, &img, "zcow.qed"))
        goto out;
    ret = qed_write_zeroes(img, 2 * CS, CS, QED_ZERO_MAY_UNMAP, &err);
    is_u64(ret, 0, "%s: zero cow: zero cluster 2", c->en);
    ret = qed_write_zeroes(img, 6 * CS, CS, QED_ZERO_MAY_UNMAP, &err);
    is_u64(ret, 0, "%s: zero cow: zero cluster 6", c->en);
    memset(model + 2 * CS, 0, CS);
    memset(model + 6 * CS, 0, CS);
    ret = qed_block_status(img, 2 * CS, CS, &st, &err);
    ok(ret == 0 && st.present && st.zero && !st.data && st.depth == 0,
       "%s: zero cow: cluster 2 is a zero cluster", c->en);

    support_fill(data, 100, 21, 2 * CS + 1000);
    ret = qed_pwrite(img, data, 100, 2 * CS + 1000, &err);
    is_u64(ret, 0, "%s: zero cow: write 100 bytes into the zero cluster",
           c->en);
    memcpy(model + 2 * CS + 1000, data, 100);
    ok(reads_as(img, model + 2 * CS, 2 * CS, 1000),
       "%s: zero cow: head of the cluster stays zero, not backing data",
       c->en);
    ok(reads_as(img, model + 2 * CS + 1100, 2 * CS + 1100, CS - 1100),
       "%s: zero cow: tail of the cluster stays zero, not backing data",
       c->en);
    ret = qed_block_status(img, 2 * CS, CS, &st, &err);
    ok(ret == 0 && st.present && st.data && st.depth == 0,
       "%s: zero cow: the cluster is now data of the top image", c->en);

    /* A write across a zero cluster (6) and an unallocated one (7). */
    support_fill(data, 1000, 22, 7 * CS - 500);
    ret = qed_pwrite(img, data, 1000, 7 * CS - 500, &err);
    is_u64(ret, 0, "%s: zero cow: write across a zero and an unallocated "
           "cluster", c->en);
    memcpy(model + 7 * CS - 500, data, 1000);
    ok(reads_as(img, model + 6 * CS, 6 * CS, CS),
       "%s: zero cow: the zero cluster's part keeps zeros", c->en);
    ok(reads_as(img, model + 7 * CS, 7 * CS, CS),
       "%s: zero cow: the unallocated cluster's part has backing data",
       c->en);
    support_tap_close(c->en, img, "zcow.qed");
    if (open_image(c, path, 0, &img, "zcow.qed again")) {
        ok(reads_as(img, model, 0, size),
           "%s: zero cow: the whole image matches after reopening", c->en);
        support_tap_close(c->en, img, "zcow.qed again");
    }
    support_tap_qemu_check(path, "%s: zero cow: qemu-img check exits 0", c->en);
out:
    free(model);
    free(data);
}

/* ---- backing files shorter than the image ------------------------------------ */

static void test_short_backing(const struct ctx *c)
{
    const char *braw = support_path(c->dir, "short.raw");
    const char *bqed = support_path(c->dir, "short-base.qed");
    const char *p1 = support_path(c->dir, "over-short-raw.qed");
    const char *p2 = support_path(c->dir, "over-short-qed.qed");
    const uint64_t bsize = 100000, qsize = 100352, size = 1 * MiB;
    uint8_t *model = calloc(1, size), *data = malloc(CS);
    qed_image *img = NULL;
    qed_error err = { 0 };
    int ret;

    /* Raw backing file of 100000 bytes (not a multiple of 512). */
    support_fill(model, bsize, 30, 0);
    support_write_file(braw, model, bsize);
    if (!support_tap_create(c->en, p1, size, 0, "short.raw", QED_FORMAT_RAW,
                            "1 MiB over a 100000-byte raw file") ||
        !open_image(c, p1, QED_OPEN_RDWR, &img, "it"))
        goto qed_part;
    ok(reads_as(img, model, 0, size),
       "%s: short raw: backing data, then zeros past its end", c->en);
    support_fill(data, 100, 31, 98000);
    ret = qed_pwrite(img, data, 100, 98000, &err);
    is_u64(ret, 0, "%s: short raw: write in the cluster holding the end",
           c->en);
    memcpy(model + 98000, data, 100);
    support_fill(data, 100, 32, 200000);
    ret = qed_pwrite(img, data, 100, 200000, &err);
    is_u64(ret, 0, "%s: short raw: write in a cluster past the end", c->en);
    memcpy(model + 200000, data, 100);
    support_fill(data, 2000, 33, bsize - 1000);
    ret = qed_pwrite(img, data, 2000, bsize - 1000, &err);
    is_u64(ret, 0, "%s: short raw: write across the backing end", c->en);
    memcpy(model + bsize - 1000, data, 2000);
    ret = qed_write_zeroes(img, 300000, 1000, 0, &err);
    is_u64(ret, 0, "%s: short raw: partial write zeroes past the end", c->en);
    ok(reads_as(img, model, 0, size),
       "%s: short raw: COW across the end: backing data, then zeros", c->en);
    support_tap_close(c->en, img, "it");
    if (open_image(c, p1, QED_OPEN_NO_BACKING, &img, "it alone")) {
        ok(reads_as(img, model + CS, CS, CS),
           "%s: short raw: the COW cluster is stored whole", c->en);
        support_tap_close(c->en, img, "it alone");
    }

qed_part:
    /* QED backing file of 100352 bytes: its last cluster is partial. */
    memset(model, 0, size);
    if (!support_tap_create(c->en, bqed, qsize, 0, NULL, QED_FORMAT_PROBE,
                            "a 100352-byte QED backing file") ||
        !open_image(c, bqed, QED_OPEN_RDWR, &img, "it read-write"))
        goto out;
    support_fill(model + CS, qsize - CS, 34, CS);
    ret = qed_pwrite(img, model + CS, qsize - CS, CS, &err);
    is_u64(ret, 0, "%s: short qed: fill its partial last cluster", c->en);
    support_tap_close(c->en, img, "the short QED backing file");
    if (!support_tap_create(c->en, p2, size, 0, "short-base.qed",
                            QED_FORMAT_PROBE, "1 MiB over it") ||
        !open_image(c, p2, QED_OPEN_RDWR, &img, "the overlay"))
        goto out;
    ok(reads_as(img, model, 0, size),
       "%s: short qed: backing data, then zeros past its end", c->en);
    support_fill(data, 100, 35, 98000);
    ret = qed_pwrite(img, data, 100, 98000, &err);
    is_u64(ret, 0, "%s: short qed: write in the cluster holding the end",
           c->en);
    memcpy(model + 98000, data, 100);
    ok(reads_as(img, model, 0, size),
       "%s: short qed: COW across the end: backing data, then zeros", c->en);
    {
        struct qed_block_status st = { .size = sizeof(st) };
        ret = qed_block_status(img, 2 * CS, CS, &st, &err);
        ok(ret == 0 && st.zero && !st.data && st.length == CS,
           "%s: short qed: status past the backing end reads zeros", c->en);
    }
    support_tap_close(c->en, img, "the overlay");
out:
    free(model);
    free(data);
}

/* ---- relative names --------------------------------------------------------- */

static void test_relative_names(const struct ctx *c)
{
    char cwd[PATH_MAX], sub[512], other[512], bdir[512];
    const uint64_t size = 256 * KiB;
    uint8_t *good = malloc(size), *decoy = malloc(size);
    struct qed_image_info *info = support_image_info_new();
    qed_image *img = NULL;
    qed_error err = { 0 };
    int ret;

    if (!getcwd(cwd, sizeof(cwd)))
        cwd[0] = '\0';
    snprintf(sub, sizeof(sub), "%s/rel-sub", c->dir);
    snprintf(other, sizeof(other), "%s/rel-other", c->dir);
    snprintf(bdir, sizeof(bdir), "%s/rel-base", c->dir);
    mkdir(sub, 0755);
    mkdir(other, 0755);
    mkdir(bdir, 0755);
    support_fill(good, size, 40, 0);
    support_fill(decoy, size, 41, 0);
    support_write_file(support_path(sub, "base.raw"), good, size);
    support_write_file(support_path(bdir, "b.raw"), good, size);
    /* Decoys where a cwd-relative lookup would look. */
    support_write_file(support_path(other, "base.raw"), decoy, size);

    if (!ok(chdir(other) == 0, "%s: relative: chdir to another directory",
            c->en))
        goto out;
    ret = support_create("../rel-sub/over.qed", 0, 0, 0, "base.raw",
                         QED_FORMAT_RAW, &err);
    if (!ok(ret == 0, "%s: relative: create ../rel-sub/over.qed with backing "
            "'base.raw' (resolved against the image's directory)", c->en))
        tap_diag("%s", err.message);
    ret = support_create("../rel-sub/over2.qed", 0, 0, 0,
                         "../rel-base/b.raw",
                         QED_FORMAT_RAW, &err);
    if (!ok(ret == 0, "%s: relative: create with backing '../rel-base/b.raw'",
            c->en))
        tap_diag("%s", err.message);
    if (open_image(c, "../rel-sub/over.qed", 0, &img,
                   "../rel-sub/over.qed from elsewhere")) {
        ok(reads_as(img, good, 0, size),
           "%s: relative: reads come from the image's directory, not the "
           "cwd", c->en);
        qed_get_info(img, info, &err);
        is_str(info->backing_file, "base.raw",
               "%s: relative: stored name unchanged", c->en);
        has_substr(info->backing_file_full, "rel-sub/base.raw",
                   "%s: relative: resolved name is in the image's directory",
                   c->en);
        support_tap_close(c->en, img, "over.qed");
    }
    if (open_image(c, "../rel-sub/over2.qed", 0, &img, "over2.qed")) {
        ok(reads_as(img, good, 0, size),
           "%s: relative: '../rel-base/b.raw' resolved from the image's "
           "directory", c->en);
        support_tap_close(c->en, img, "over2.qed");
    }
    ok(chdir("/") == 0, "%s: relative: chdir to /", c->en);
    if (open_image(c, support_path(sub, "over.qed"), 0, &img,
                   "over.qed by absolute path from /")) {
        ok(reads_as(img, good, 0, size),
           "%s: relative: absolute image path, relative backing name",
           c->en);
        support_tap_close(c->en, img, "over.qed from /");
    }
    /* An absolute backing name is used as it is. */
    ret = support_create(support_path(other, "abs.qed"), 0, 0, 0,
                         support_path(bdir, "b.raw"), QED_FORMAT_RAW, &err);
    is_u64(ret, 0, "%s: relative: create with an absolute backing name",
           c->en);
    if (open_image(c, support_path(other, "abs.qed"), 0, &img, "abs.qed")) {
        ok(reads_as(img, good, 0, size),
           "%s: relative: absolute backing name", c->en);
        qed_get_info(img, info, &err);
        is_str(info->backing_file_full, support_path(bdir, "b.raw"),
               "%s: relative: absolute name resolves to itself", c->en);
        support_tap_close(c->en, img, "abs.qed");
    }
out:
    if (cwd[0] && chdir(cwd) != 0)
        tap_diag("cannot return to %s", cwd);
    free(good);
    free(decoy);
    free(info);
}

/* ---- missing backing files, loops, depth ------------------------------------------ */

static void test_missing(const struct ctx *c)
{
    const char *base = support_path(c->dir, "gone-backing.raw");
    const char *path = support_path(c->dir, "orphan.qed");
    uint8_t block[4096] = { 0 };
    qed_image *img = NULL;
    qed_error err = { 0 };
    int ret;

    support_write_file(base, block, sizeof(block));
    if (!support_tap_create(c->en, path, 0, 0, "gone-backing.raw",
                            QED_FORMAT_RAW,
                            "an image whose backing file will go"))
        return;
    unlink(base);
    for (int rw = 0; rw < 2; rw++) {
        const char *mode = rw ? "read-write" : "read-only";
        memset(&err, 0, sizeof(err));
        ret = support_open(path, rw ? QED_OPEN_RDWR : 0, c->engine, &img,
                           &err);
        is_u64(ret, (uint64_t)-ENOENT, "%s: missing backing, %s: -ENOENT",
               c->en, mode);
        is_u64(err.code, ENOENT, "%s: missing backing, %s: err.code", c->en,
               mode);
        has_substr(err.message, "gone-backing.raw",
                   "%s: missing backing, %s: the message names the file",
                   c->en, mode);
        ok(img == NULL, "%s: missing backing, %s: no image returned", c->en,
           mode);
        if (img)
            qed_close(img, NULL);
        img = NULL;
    }
    if (open_image(c, path, QED_OPEN_NO_BACKING, &img,
                   "it with QED_OPEN_NO_BACKING")) {
        ret = qed_pread(img, block, 512, 0, &err);
        is_u64(ret, (uint64_t)-ENOTSUP, "%s: missing backing, NO_BACKING: "
               "unallocated read fails with ENOTSUP", c->en);
        support_tap_close(c->en, img, "it with NO_BACKING");
    }
    memset(&err, 0, sizeof(err));
    ret = support_create(support_path(c->dir, "orphan2.qed"), 0, 0, 0,
                         "no-such-file.raw", QED_FORMAT_RAW, &err);
    ok(ret < 0, "%s: creating over a missing backing file fails", c->en);
    has_substr(err.message, "no-such-file.raw",
               "%s: create: the message names the missing file", c->en);
}

/* A storage whose open of "the-base.raw" fails with a message that happens
 * to start like the name of a failed backing file. */
static int failing_open(const struct storage_driver *driver, qed_loop *loop,
                        const char *path, unsigned flags, struct io_file **out,
                        qed_error *err)
{
    (void)driver;
    if (strstr(path, "the-base.raw"))
        return qedi_fail(err, EIO, "backing file 'elsewhere' of the "
                        "storage: unreachable");
    return qedi_storage_file_driver.open(&qedi_storage_file_driver, loop, path, flags,
                                    out, err);
}

/* Which file of a chain failed is told by the open itself, not guessed
 * from the message: a message that starts like a named backing file still
 * gets the name of the backing file that failed in front, once. */
static void test_failure_named_once(const struct ctx *c)
{
    const struct storage_driver failing = { "failing", failing_open, NULL };
    const char *base = support_path(c->dir, "the-base.raw");
    const char *mid = support_path(c->dir, "the-mid.qed");
    const char *top = support_path(c->dir, "the-top.qed");
    struct qed_open_options o = { .size = sizeof(o), .engine = c->engine };
    uint8_t block[4096] = { 0 };
    qed_image *img = NULL;
    qed_error err = { 0 };
    char want[512];
    int ret;

    support_write_file(base, block, sizeof(block));
    if (!support_tap_create(c->en, mid, 0, 0, "the-base.raw",
                            QED_FORMAT_RAW, "mid over the-base.raw") ||
        !support_tap_create(c->en, top, 0, 0, "the-mid.qed", QED_FORMAT_QED,
                            "top over the-mid.qed"))
        return;
    ret = qedi_image_open(top, &o, &failing, &img, &err);
    is_u64(ret, (uint64_t)-EIO, "%s: a failing base fails the chain's open",
           c->en);
    snprintf(want, sizeof(want), "backing file '%s': backing file 'elsewhere' "
             "of the storage: unreachable", base);
    is_str(err.message, want, "%s: the message names the failing file once, "
           "in front of its own message", c->en);
    if (img)
        qed_close(img, NULL);
}

static void check_loop(const struct ctx *c, const char *path,
                       const char *what)
{
    qed_image *img = NULL;
    qed_error err = { 0 };
    int ret;

    for (int rw = 0; rw < 2; rw++) {
        memset(&err, 0, sizeof(err));
        ret = support_open(path, rw ? QED_OPEN_RDWR : 0, c->engine, &img,
                           &err);
        is_u64(ret, (uint64_t)-ELOOP, "%s: %s, %s: -ELOOP", c->en, what,
               rw ? "read-write" : "read-only");
        is_u64(err.code, ELOOP, "%s: %s: err.code ELOOP", c->en, what);
        if (ok(err.message[0] != '\0', "%s: %s: there is a message", c->en,
               what))
            tap_diag("%s", err.message);
        if (img)
            qed_close(img, NULL);
        img = NULL;
    }
    if (open_image(c, path, QED_OPEN_NO_BACKING, &img,
                   "a looping image with NO_BACKING"))
        support_tap_close(c->en, img, "it");
}

static int patch_byte(const char *path, off_t offset, char value)
{
    int fd = open(path, O_WRONLY);
    int ret = fd >= 0 && pwrite(fd, &value, 1, offset) == 1 ? 0 : -1;

    if (fd >= 0)
        close(fd);
    return ret;
}

static void test_loops(const struct ctx *c)
{
    const char *self = support_path(c->dir, "self.qed");
    const char *a = support_path(c->dir, "cycle-a.qed");
    const char *b = support_path(c->dir, "cycle-b.qed");
    const char *x = support_path(c->dir, "tri-x.qed");
    const char *y = support_path(c->dir, "tri-y.qed");
    const char *z = support_path(c->dir, "tri-z.qed");
    uint8_t block[MiB / 16] = { 0 };
    qed_error err = { 0 };

    /* qed_create refuses an image as its own backing file, so the image is
     * made over a placeholder of another name, which the header is then
     * patched to name the image itself (the name follows the 64-byte
     * header). */
    support_write_file(support_path(c->dir, "selg.qed"), block, sizeof(block));
    ok(support_create(self, 0, 0, 0, "selg.qed", QED_FORMAT_PROBE, &err) == 0 &&
       patch_byte(self, 64 + 3, 'f') == 0,
       "%s: loop: create an image whose backing file is itself", c->en);
    check_loop(c, self, "backing file is the image itself");

    support_write_file(a, block, sizeof(block));
    support_write_file(b, block, sizeof(block));
    ok(support_create(a, 0, 0, 0, "cycle-b.qed", QED_FORMAT_PROBE, &err) == 0 &&
           support_create(b, 0, 0, 0, "cycle-a.qed", QED_FORMAT_PROBE,
                          &err) == 0,
       "%s: loop: create a -> b -> a", c->en);
    check_loop(c, a, "two-image cycle from a");
    check_loop(c, b, "two-image cycle from b");

    support_write_file(x, block, sizeof(block));
    support_write_file(y, block, sizeof(block));
    support_write_file(z, block, sizeof(block));
    ok(support_create(x, 0, 0, 0, "tri-y.qed", QED_FORMAT_PROBE, &err) == 0 &&
           support_create(y, 0, 0, 0, "tri-z.qed", QED_FORMAT_PROBE,
                          &err) == 0 &&
           support_create(z, 0, 0, 0, "./tri-x.qed", QED_FORMAT_PROBE,
                          &err) == 0,
       "%s: loop: create x -> y -> z -> ./x", c->en);
    check_loop(c, x, "three-image cycle (spelled differently)");
}

/* img0 -> img1 -> ... -> img{n-1} (qed) -> img{n} (raw), built top-down
 * from raw placeholders so creating never walks the whole chain. */
static bool build_chain(const struct ctx *c, unsigned n, const uint8_t *base,
                        uint64_t size)
{
    char name[64], next[64];
    qed_error err = { 0 };

    for (unsigned i = 0; i <= n; i++) {
        snprintf(name, sizeof(name), "deep%u.img", i);
        if (support_write_file(support_path(c->dir, name), base, size) < 0)
            return false;
    }
    for (unsigned i = 0; i < n; i++) {
        snprintf(name, sizeof(name), "deep%u.img", i);
        snprintf(next, sizeof(next), "deep%u.img", i + 1);
        if (support_create(support_path(c->dir, name), size, 4096, 1, next,
                           i + 1 == n ? QED_FORMAT_RAW : QED_FORMAT_PROBE,
                           &err) < 0) {
            tap_diag("creating %s: %s", name, err.message);
            return false;
        }
    }
    return true;
}

static void test_depth(const struct ctx *c)
{
    const unsigned n = QED_MAX_CHAIN_DEPTH + 1; /* links from deep0 */
    const uint64_t size = 64 * KiB;
    uint8_t *base = malloc(size);
    qed_image *img = NULL;
    qed_error err = { 0 };
    int ret;

    support_fill(base, size, 50, 0);
    if (!ok(build_chain(c, n, base, size),
            "%s: depth: build a chain of %u backing links", c->en, n))
        goto out;
    if (open_image(c, support_path(c->dir, "deep1.img"), 0, &img,
                   "a chain of exactly QED_MAX_CHAIN_DEPTH backing files")) {
        unsigned depth = 0;
        for (qed_image *i = qed_backing(img); i; i = qed_backing(i))
            depth++;
        is_u64(depth, QED_MAX_CHAIN_DEPTH, "%s: depth: all %u backing files "
               "are open", c->en, QED_MAX_CHAIN_DEPTH);
        ok(reads_as(img, base, 0, size),
           "%s: depth: reads reach the raw file at the bottom", c->en);
        {
            struct qed_block_status st = { .size = sizeof(st) };
            ret = qed_block_status(img, 0, size, &st, &err);
            ok(ret == 0 && st.present && st.depth == QED_MAX_CHAIN_DEPTH,
               "%s: depth: status answered at depth %u", c->en,
               QED_MAX_CHAIN_DEPTH);
        }
        support_tap_close(c->en, img, "the deepest allowed chain");
    }
    memset(&err, 0, sizeof(err));
    ret = support_open(support_path(c->dir, "deep0.img"), 0, c->engine, &img,
                       &err);
    ok(ret < 0 && img == NULL, "%s: depth: one backing file more than "
       "QED_MAX_CHAIN_DEPTH is refused", c->en);
    is_u64(err.code, ELOOP, "%s: depth: err.code ELOOP", c->en);
    if (ok(err.message[0] != '\0', "%s: depth: there is a message", c->en))
        tap_diag("%s", err.message);
    if (img)
        qed_close(img, NULL);
out:
    free(base);
}

/* ---- QED_OPEN_NO_BACKING writes ------------------------------------------------ */

/* Without the backing file, a write that would copy part of a cluster from
 * it cannot be done right: it must fail rather than store zeros there. */
static void test_no_backing_writes(const struct ctx *c)
{
    const char *base = support_path(c->dir, "nb-base.raw");
    const char *path = support_path(c->dir, "nb.qed");
    const uint64_t size = 1 * MiB;
    uint8_t *model = malloc(size), *data = malloc(CS);
    qed_image *img = NULL;
    qed_error err = { 0 };
    int ret;

    support_fill(model, size, 60, 0);
    support_write_file(base, model, size);
    if (!support_tap_create(c->en, path, 0, 0, "nb-base.raw", QED_FORMAT_RAW,
                            "nb.qed"))
        goto out;
    /* Refusing read-write without the backing file would be fine too. */
    ret = support_open(path, QED_OPEN_RDWR | QED_OPEN_NO_BACKING, c->engine,
                       &img, &err);
    if (ret < 0) {
        ok(img == NULL, "%s: no backing: read-write without the backing "
           "file is refused", c->en);
        tap_diag("%s", err.message);
        goto out;
    }
    ok(img != NULL, "%s: no backing: opened read-write without the backing "
       "file", c->en);
    support_fill(data, CS, 61, 3 * CS);
    ret = qed_pwrite(img, data, CS, 3 * CS, &err);
    is_u64(ret, 0, "%s: no backing: a whole-cluster write needs no backing "
           "data", c->en);
    memcpy(model + 3 * CS, data, CS);
    ret = qed_pwrite(img, data, 100, 5 * CS + 100, &err);
    is_u64(ret, (uint64_t)-ENOTSUP, "%s: no backing: a partial write into "
           "an unallocated cluster fails with ENOTSUP", c->en);
    if (ret == 0)
        memcpy(model + 5 * CS + 100, data, 100);
    ret = qed_write_zeroes(img, 8 * CS + 100, 100, 0, &err);
    if (ret == 0)
        memset(model + 8 * CS + 100, 0, 100);
    ok(ret == 0 || ret == -ENOTSUP, "%s: no backing: partial write zeroes "
       "succeeds or fails with ENOTSUP (%d)", c->en, ret);
    support_tap_close(c->en, img, "it");
    if (open_image(c, path, 0, &img, "it with its backing file")) {
        ok(reads_as(img, model + 3 * CS, 3 * CS, CS),
           "%s: no backing: the whole-cluster write is there", c->en);
        ok(reads_as(img, model + 5 * CS, 5 * CS, CS),
           "%s: no backing: cluster 5 still shows the backing data "
           "(nothing replaced it with zeros)", c->en);
        ok(reads_as(img, model + 8 * CS, 8 * CS, CS),
           "%s: no backing: write zeroes took effect or left the cluster "
           "alone, as it reported", c->en);
        support_tap_close(c->en, img, "it with its backing file");
    }
out:
    free(model);
    free(data);
}

/* ---- concurrent writes over a backing file --------------------------------------- */

#define CW_SIZE (8 * MiB)
#define CW_CS 4096u
#define CW_DEPTH 48
#define CW_BATCHES 12

struct cw_req {
    int op; /* 0 write, 1 zeroes, 2 read */
    uint64_t off, len;
    uint8_t *buf;
    struct iovec iov;
    bool done;
    int ret;
    char msg[512];
    unsigned *counter;
};

static void cw_done(void *opaque, int ret, const qed_error *err)
{
    struct cw_req *r = opaque;
    r->done = true;
    r->ret = ret;
    if (err)
        snprintf(r->msg, sizeof(r->msg), "%s", err->message);
    (*r->counter)++;
}

static void test_concurrent_cow(const struct ctx *c)
{
    const char *base = support_path(c->dir, "cw-base.raw");
    const char *path = support_path(c->dir, "cw.qed");
    const char *raw = support_path(c->dir, "cw-model.raw");
    uint8_t *model = malloc(CW_SIZE);
    struct cw_req *reqs = calloc(CW_DEPTH, sizeof(*reqs));
    uint64_t rng = 0xbac1c0;
    qed_image *img = NULL;
    qed_error err = { 0 };
    bool all_ok = true, reads_ok = true;
    int ret;

    if (!model || !reqs)
        goto out;
    /* The backing file covers 6 MiB of the 8. */
    support_fill(model, 6 * MiB, 70, 0);
    memset(model + 6 * MiB, 0, 2 * MiB);
    support_write_file(base, model, 6 * MiB);
    ret = support_create(path, CW_SIZE, CW_CS, 2, "cw-base.raw",
                         QED_FORMAT_RAW, &err);
    is_u64(ret, 0, "%s: concurrent cow: create 8 MiB over 6 MiB raw", c->en);
    if (!open_image(c, path, QED_OPEN_RDWR, &img, "it"))
        goto out;
    for (int nb = 0; nb < CW_BATCHES; nb++) {
        unsigned completed = 0, submitted = 0;
        uint64_t a[CW_DEPTH], b[CW_DEPTH];
        int n = 0;

        /* Disjoint ranges, many sharing clusters: small pieces packed into
         * a few hot clusters, some longer runs. */
        for (int tries = 0; n < CW_DEPTH && tries < 2000; tries++) {
            struct cw_req *r = &reqs[n];
            uint64_t off, len;
            bool clash = false;
            if (support_rand_below(&rng, 3) == 0) {
                uint64_t hot = (support_rand_below(&rng, 8) * 97 % 2048) *
                               CW_CS;
                off = hot + support_rand_below(&rng, CW_CS);
                len = 1 + support_rand_below(&rng, 600);
            } else {
                off = support_rand_below(&rng, CW_SIZE);
                len = 1 + support_rand_below(&rng, 5 * CW_CS);
            }
            if (len > CW_SIZE - off)
                len = CW_SIZE - off;
            for (int i = 0; i < n && !clash; i++)
                clash = off < b[i] && a[i] < off + len;
            if (clash)
                continue;
            a[n] = off;
            b[n] = off + len;
            memset(r, 0, sizeof(*r));
            r->op = (int)support_rand_below(&rng, 10);
            r->op = r->op < 6 ? 0 : r->op < 8 ? 1 : 2;
            r->off = off;
            r->len = len;
            r->counter = &completed;
            n++;
        }
        for (int i = 0; i < n; i++) {
            struct cw_req *r = &reqs[i];
            if (r->op == 1) {
                ret = qed_aio_write_zeroes(img, r->off, r->len,
                                           QED_ZERO_MAY_UNMAP, cw_done, r);
            } else {
                r->buf = malloc(r->len);
                r->iov = (struct iovec){ r->buf, r->len };
                if (r->op == 0) {
                    support_fill(r->buf, r->len, 1000 + (uint64_t)nb * 100 +
                                                     (uint64_t)i, r->off);
                    ret = qed_aio_writev(img, &r->iov, 1, r->off, cw_done, r);
                } else {
                    ret = qed_aio_readv(img, &r->iov, 1, r->off, cw_done, r);
                }
            }
            if (ret == 0)
                submitted++;
            else
                all_ok = false;
        }
        ret = support_run_until(qed_image_loop(img), &completed, submitted,
                                20000);
        if (ret < 0)
            all_ok = false;
        for (int i = 0; i < n; i++) {
            struct cw_req *r = &reqs[i];
            if (!r->done || r->ret < 0) {
                if (all_ok)
                    tap_diag("batch %d op %d at %" PRIu64 "+%" PRIu64
                             ": %d %s", nb, r->op, r->off, r->len, r->ret,
                             r->msg);
                all_ok = false;
                continue;
            }
            if (r->op == 2 && memcmp(r->buf, model + r->off, r->len) != 0) {
                if (reads_ok)
                    tap_diag("batch %d: read at %" PRIu64 "+%" PRIu64
                             " differs from the model", nb, r->off, r->len);
                reads_ok = false;
            }
        }
        for (int i = 0; i < n; i++) {
            struct cw_req *r = &reqs[i];
            if (r->op == 0)
                memcpy(model + r->off, r->buf, r->len);
            else if (r->op == 1)
                memset(model + r->off, 0, r->len);
            free(r->buf);
            r->buf = NULL;
        }
    }
    ok(all_ok, "%s: concurrent cow: every request of %d batches of %d "
       "succeeded", c->en, CW_BATCHES, CW_DEPTH);
    ok(reads_ok, "%s: concurrent cow: reads in flight match the model",
       c->en);
    ok(reads_as(img, model, 0, CW_SIZE),
       "%s: concurrent cow: the image matches the model", c->en);
    support_tap_close(c->en, img, "it");
    support_tap_qemu_check(path, "%s: concurrent cow: qemu-img check exits 0",
                           c->en);
    support_write_file(raw, model, CW_SIZE);
    support_tap_qemu_compare(path, raw, "%s: concurrent cow: qemu-img compare "
                             "with the model exits 0", c->en);
out:
    free(model);
    free(reqs);
}

int main(void)
{
    /* A backing loop must fail, not hang: give up after a minute. */
    alarm(60);
    for (int i = 0; i < SUPPORT_ENGINE_COUNT; i++) {
        struct ctx c = { support_engines[i],
                         support_engine_name(support_engines[i]), "" };
        if (support_mkdtemp("backing", c.dir, sizeof(c.dir)) < 0) {
            ok(0, "make a temporary directory");
            break;
        }
        test_raw_backing(&c);
        test_qed_backing(&c);
        test_zero_cluster_cow(&c);
        test_short_backing(&c);
        test_relative_names(&c);
        test_missing(&c);
        test_failure_named_once(&c);
        test_loops(&c);
        test_depth(&c);
        test_no_backing_writes(&c);
        test_concurrent_cow(&c);
        support_rmtree(c.dir);
    }
    return tap_done();
}
