/* SPDX-License-Identifier: MIT */
/* Image operations (lib/ops) at the library level, once per I/O engine:
 * convert between every pair of formats with and without backing chains
 * (and -B over a shared or a different backing file), compare (exact first
 * difference, sizes), commit into raw and QED backing files (the image
 * itself byte-identical), rebase and qed_set_backing (content kept, names
 * too long or loops leave the file byte-identical), resize to the exact
 * maximum, shrink then grow reading zeros with nothing leaked, and the
 * option checks.  Every result is verified by reading images back in full. */
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qed.h"
#include "support-image.h"
#include "../tap.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

struct ctx {
    enum qed_engine engine;
    const char *en;
    char dir[256];
};

static const char *P(const struct ctx *c, const char *name)
{
    return support_path(c->dir, name);
}

static qed_image *open_img(const struct ctx *c, const char *path,
                           unsigned flags, enum qed_format format,
                           qed_loop *loop)
{
    struct qed_open_options o = {
        .size = sizeof(struct qed_open_options),
        .flags = flags, .format = format, .engine = c->engine, .loop = loop,
    };
    qed_error err = { 0 };
    qed_image *img = NULL;

    if (qed_open(path, &o, &img, &err) < 0) {
        tap_diag("%s: open %s: %s", c->en, path, err.message);
        return NULL;
    }
    return img;
}

static void close_img(qed_image *img)
{
    qed_error err = { 0 };
    if (img && qed_close(img, &err) < 0)
        tap_diag("close: %s", err.message);
}

/* The whole content of an image (NULL on failure); *size gets its size. */
static uint8_t *read_all(const struct ctx *c, const char *path,
                         enum qed_format format, uint64_t *size)
{
    qed_image *img = open_img(c, path, 0, format, NULL);
    qed_error err = { 0 };
    uint8_t *buf;

    if (!img)
        return NULL;
    *size = qed_size(img);
    buf = malloc(*size ? *size : 1);
    if (buf && *size && qed_pread(img, buf, *size, 0, &err) < 0) {
        tap_diag("read %s: %s", path, err.message);
        free(buf);
        buf = NULL;
    }
    close_img(img);
    return buf;
}

/* Do the two images read the same (same size, same bytes)? */
static bool same_content(const struct ctx *c, const char *a,
                         enum qed_format fa, const char *b, enum qed_format fb)
{
    uint64_t sa = 0, sb = 0;
    uint8_t *ba = read_all(c, a, fa, &sa);
    uint8_t *bb = read_all(c, b, fb, &sb);
    bool same = ba && bb && sa == sb && memcmp(ba, bb, sa) == 0;

    if (ba && bb && !same) {
        uint64_t i = 0;
        while (i < sa && i < sb && ba[i] == bb[i])
            i++;
        tap_diag("%s (%" PRIu64 " bytes) and %s (%" PRIu64 " bytes) first "
                 "differ at %" PRIu64, a, sa, b, sb, i);
    }
    free(ba);
    free(bb);
    return same;
}

/* Writes the pattern seed over [off, off+len) of an image. */
static bool fill(const struct ctx *c, const char *path, enum qed_format fmt,
                 uint64_t seed, uint64_t off, uint64_t len)
{
    qed_image *img = open_img(c, path, QED_OPEN_RDWR, fmt, NULL);
    uint8_t *buf = malloc(len);
    qed_error err = { 0 };
    bool good = false;

    if (img && buf) {
        support_fill(buf, len, seed, off);
        good = qed_pwrite(img, buf, len, off, &err) == 0;
        if (!good)
            tap_diag("write %s: %s", path, err.message);
    }
    free(buf);
    close_img(img);
    return good;
}

static bool zero(const struct ctx *c, const char *path, uint64_t off,
                 uint64_t len)
{
    qed_image *img = open_img(c, path, QED_OPEN_RDWR, QED_FORMAT_QED, NULL);
    qed_error err = { 0 };
    bool good = img && qed_write_zeroes(img, off, len, QED_ZERO_MAY_UNMAP,
                                        &err) == 0;
    if (img && !good)
        tap_diag("write zeroes %s: %s", path, err.message);
    close_img(img);
    return good;
}

static bool create(const char *path, uint64_t size, uint32_t cs, uint32_t ts,
                   const char *backing, enum qed_format bf)
{
    qed_error err = { 0 };
    if (support_create(path, size, cs, ts, backing, bf, &err) < 0) {
        tap_diag("create %s: %s", path, err.message);
        return false;
    }
    return true;
}

static bool make_raw(const char *path, uint64_t size)
{
    if (support_write_file(path, "", 0) < 0 || truncate(path, (off_t)size) < 0)
        return false;
    return true;
}

/* ---- sources ---------------------------------------------------------------------- */

/* raw.img: 3 MiB + 512 with data, holes and an all-zero written range;
 * base.raw (2 MiB) <- mid.qed (4k clusters, 3 MiB) <- top.qed (64k
 * clusters, 3 MiB + 512): data, zero clusters over data, partial writes;
 * plain.qed: 16k clusters, data and zero clusters; other.qed: an unrelated
 * backing file for -B. */
static bool make_sources(const struct ctx *c)
{
    uint8_t zeros[8192] = { 0 };
    bool good = make_raw(P(c, "raw.img"), 3 * MiB + 512) &&
                fill(c, P(c, "raw.img"), QED_FORMAT_RAW, 1, 0, 100 * KiB) &&
                fill(c, P(c, "raw.img"), QED_FORMAT_RAW, 2, 2 * MiB + 77, 5000) &&
                fill(c, P(c, "raw.img"), QED_FORMAT_RAW, 3, 3 * MiB, 512) &&
                support_pwrite(P(c, "raw.img"), zeros, sizeof(zeros),
                               MiB) == 0;
    good = good && make_raw(P(c, "base.raw"), 2 * MiB) &&
           fill(c, P(c, "base.raw"), QED_FORMAT_RAW, 4, 0, 2 * MiB);
    good = good && create(P(c, "mid.qed"), 3 * MiB, 4096, 0, "base.raw",
                          QED_FORMAT_RAW) &&
           fill(c, P(c, "mid.qed"), QED_FORMAT_QED, 5, 100 * KiB, 200 * KiB) &&
           zero(c, P(c, "mid.qed"), 512 * KiB, 64 * KiB) &&
           fill(c, P(c, "mid.qed"), QED_FORMAT_QED, 6, 2 * MiB + 1000, 10);
    good = good && create(P(c, "top.qed"), 3 * MiB + 512, 65536, 0,
                          "mid.qed", QED_FORMAT_QED) &&
           fill(c, P(c, "top.qed"), QED_FORMAT_QED, 7, 1000, 3000) &&
           zero(c, P(c, "top.qed"), MiB, 128 * KiB) &&
           fill(c, P(c, "top.qed"), QED_FORMAT_QED, 8, 3 * MiB, 512);
    good = good && create(P(c, "plain.qed"), 2 * MiB, 16384, 2, NULL, 0) &&
           fill(c, P(c, "plain.qed"), QED_FORMAT_QED, 9, 50 * KiB, 300 * KiB) &&
           zero(c, P(c, "plain.qed"), 64 * KiB, 32 * KiB);
    good = good && create(P(c, "other.qed"), 3 * MiB, 65536, 0, NULL, 0) &&
           fill(c, P(c, "other.qed"), QED_FORMAT_QED, 10, 0, 3 * MiB);
    return ok(good, "%s: build the source images", c->en);
}

/* ---- convert ------------------------------------------------------------------------- */

static int convert(const struct ctx *c, const char *src, enum qed_format sf,
                   const char *dst, const struct qed_convert_options *o,
                   qed_error *err)
{
    qed_image *img = open_img(c, src, 0, sf, NULL);
    int ret;

    if (!img)
        return -EIO;
    ret = qed_convert(img, dst, o, err);
    close_img(img);
    return ret;
}

static void test_convert_matrix(const struct ctx *c)
{
    static const struct {
        const char *name;
        enum qed_format fmt;
    } sources[] = {
        { "raw.img", QED_FORMAT_RAW },
        { "plain.qed", QED_FORMAT_QED },
        { "mid.qed", QED_FORMAT_QED },  /* over a raw backing file */
        { "top.qed", QED_FORMAT_QED },  /* a 3-deep chain */
    };
    static const struct {
        const char *tag;
        enum qed_format fmt;
        const char *backing;
        enum qed_format bfmt;
    } outputs[] = {
        { "raw", QED_FORMAT_RAW, NULL, 0 },
        { "qed", QED_FORMAT_QED, NULL, 0 },
        { "qed-B-mid", QED_FORMAT_QED, "mid.qed", QED_FORMAT_QED },
        { "qed-B-other", QED_FORMAT_QED, "other.qed", QED_FORMAT_QED },
        { "qed-B-raw", QED_FORMAT_QED, "base.raw", QED_FORMAT_RAW },
    };

    for (size_t i = 0; i < ARRAY_SIZE(sources); i++) {
        for (size_t j = 0; j < ARRAY_SIZE(outputs); j++) {
            struct qed_create_options co = {
                .size = sizeof(co),
                .cluster_size = 4096,
                .backing_file = outputs[j].backing,
                .backing_format = outputs[j].bfmt,
            };
            struct qed_convert_options o = {
                .size = sizeof(struct qed_convert_options),
                .format = outputs[j].fmt,
                .create = &co,
            };
            char name[128];
            qed_error err = { 0 };
            int ret;

            snprintf(name, sizeof(name), "out-%zu-%s", i, outputs[j].tag);
            ret = convert(c, P(c, sources[i].name), sources[i].fmt,
                          P(c, name), &o, &err);
            if (!ok(ret == 0, "%s: convert %s -> %s", c->en, sources[i].name,
                    outputs[j].tag)) {
                tap_diag("%s", err.message);
                continue;
            }
            ok(same_content(c, P(c, sources[i].name), sources[i].fmt,
                            P(c, name), outputs[j].fmt),
               "%s: %s -> %s reads like the source", c->en, sources[i].name,
               outputs[j].tag);
        }
    }
}

static void test_convert_sparse(const struct ctx *c)
{
    struct qed_create_options co = { .size = sizeof(co) };
    struct qed_convert_options o = { .size = sizeof(o),
                                     .format = QED_FORMAT_QED, .create = &co };
    struct qed_block_status st = { .size = sizeof(st) };
    qed_error err = { 0 };
    qed_image *img;
    int ret;

    /* The written zeros at 1 MiB of raw.img must not become data. */
    ret = convert(c, P(c, "raw.img"), QED_FORMAT_RAW, P(c, "sparse.qed"), &o,
                  &err);
    ok(ret == 0, "%s: convert raw.img -> qed", c->en);
    img = open_img(c, P(c, "sparse.qed"), 0, QED_FORMAT_QED, NULL);
    if (!img)
        return;
    ret = qed_block_status(img, MiB, 8192, &st, &err);
    ok(ret == 0 && !st.present && st.zero,
       "%s: written zeros in the source are left out of the output", c->en);
    ret = qed_block_status(img, 512 * KiB, 64 * KiB, &st, &err);
    ok(ret == 0 && !st.present, "%s: a hole in the source stays a hole",
       c->en);
    close_img(img);

    /* Over a different backing file: zero clusters where the source reads
     * zeros and the backing file does not. */
    co.backing_file = "other.qed";
    ret = convert(c, P(c, "raw.img"), QED_FORMAT_RAW, P(c, "sparse-b.qed"),
                  &o, &err);
    ok(ret == 0, "%s: convert raw.img -> qed over other.qed", c->en);
    img = open_img(c, P(c, "sparse-b.qed"), 0, QED_FORMAT_QED, NULL);
    if (!img)
        return;
    ret = qed_block_status(img, 1536 * KiB, 64 * KiB, &st, &err);
    ok(ret == 0 && st.present && st.zero && st.depth == 0,
       "%s: -B writes a zero cluster over backing data", c->en);
    close_img(img);
}

struct progress_log {
    uint64_t last, total;
    unsigned calls;
    bool backwards;
};

static void log_progress(void *opaque, uint64_t done, uint64_t total)
{
    struct progress_log *p = opaque;
    if (done < p->last)
        p->backwards = true;
    p->last = done;
    p->total = total;
    p->calls++;
}

static void test_convert_options(const struct ctx *c)
{
    struct progress_log log = { 0 };
    struct qed_op_options op = {
        .size = sizeof(op), .requests = 1, .request_size = 4096,
        .progress = log_progress, .progress_opaque = &log,
    };
    struct qed_convert_options o = {
        .size = sizeof(struct qed_convert_options),
        .format = QED_FORMAT_QED,
        .op = &op,
    };
    qed_error err = { 0 };
    int ret;

    ret = convert(c, P(c, "top.qed"), QED_FORMAT_QED, P(c, "small.qed"), &o,
                  &err);
    ok(ret == 0 && same_content(c, P(c, "top.qed"), QED_FORMAT_QED,
                                P(c, "small.qed"), QED_FORMAT_QED),
       "%s: one request of 4 KiB at a time gives the same image", c->en);
    ok(log.calls > 2 && !log.backwards && log.last == log.total &&
           log.total == 3 * MiB + 512,
       "%s: progress runs forward to the total (%u calls, %" PRIu64 "/%"
       PRIu64 ")", c->en, log.calls, log.last, log.total);

    op = (struct qed_op_options){ .size = sizeof(op), .requests = 256,
                                  .request_size = 64 * 1024 * 1024 };
    o = (struct qed_convert_options){
        .size = sizeof(struct qed_convert_options),
        .format = QED_FORMAT_RAW,
        .op = &op,
    };
    ret = convert(c, P(c, "top.qed"), QED_FORMAT_QED, P(c, "big.raw"), &o,
                  &err);
    ok(ret == 0 && same_content(c, P(c, "top.qed"), QED_FORMAT_QED,
                                P(c, "big.raw"), QED_FORMAT_RAW),
       "%s: 256 requests of 64 MiB give the same image", c->en);

    op.request_size = 1000;
    ret = convert(c, P(c, "top.qed"), QED_FORMAT_QED, P(c, "x.raw"), &o, &err);
    ok(ret == -EINVAL, "%s: a request size that is not 4 KiB-aligned fails",
       c->en);
    has_substr(err.message, "request size 1000", "%s: ... naming it", c->en);
    op.request_size = 0;
    op.requests = 257;
    ret = convert(c, P(c, "top.qed"), QED_FORMAT_QED, P(c, "x.raw"), &o, &err);
    ok(ret == -EINVAL, "%s: 257 requests in flight fail", c->en);

    o = (struct qed_convert_options){
        .size = sizeof(struct qed_convert_options),
        .format = QED_FORMAT_RAW,
        .create = &(struct qed_create_options){
            .size = sizeof(struct qed_create_options),
            .backing_file = "mid.qed" },
    };
    ret = convert(c, P(c, "top.qed"), QED_FORMAT_QED, P(c, "x.raw"), &o, &err);
    ok(ret == -EINVAL, "%s: a backing file for raw output fails", c->en);
    o = (struct qed_convert_options){ .size = sizeof(o),
                                      .format = QED_FORMAT_RAW };
    ret = convert(c, P(c, "top.qed"), QED_FORMAT_QED, P(c, "mid.qed"), &o,
                  &err);
    ok(ret == -EINVAL, "%s: converting onto a backing file of the source "
       "fails", c->en);
    has_substr(err.message, "backing file", "%s: ... saying so", c->en);
    ok(same_content(c, P(c, "mid.qed"), QED_FORMAT_QED, P(c, "out-2-qed"),
                    QED_FORMAT_QED),
       "%s: ... and leaves it alone", c->en);
}

/* ---- compare ------------------------------------------------------------------------------ */

static int compare(const struct ctx *c, const char *a, enum qed_format fa,
                   const char *b, enum qed_format fb,
                   struct qed_compare_result *r)
{
    qed_image *ia = open_img(c, a, 0, fa, NULL);
    qed_image *ib = ia ? open_img(c, b, 0, fb, qed_image_loop(ia)) : NULL;
    qed_error err = { 0 };
    int ret = -EIO;

    if (ib) {
        ret = qed_compare(ia, ib, NULL, r, &err);
        if (ret < 0)
            tap_diag("compare: %s", err.message);
    }
    close_img(ib);
    close_img(ia);
    return ret;
}

static void test_compare(const struct ctx *c)
{
    struct qed_compare_result r = { .size = sizeof(r) };
    uint8_t byte = 0xaa;
    int ret;

    ret = compare(c, P(c, "top.qed"), QED_FORMAT_QED, P(c, "out-3-raw"),
                  QED_FORMAT_RAW, &r);
    ok(ret == 0 && r.identical, "%s: a chain and its raw copy are identical",
       c->en);
    ret = compare(c, P(c, "top.qed"), QED_FORMAT_QED, P(c, "out-3-qed-B-other"),
                  QED_FORMAT_QED, &r);
    ok(ret == 0 && r.identical, "%s: ... and its copy over another backing "
       "file", c->en);
    support_copy_file(P(c, "out-3-raw"), P(c, "diff.raw"));
    support_pwrite(P(c, "diff.raw"), &byte, 1, 2 * MiB + 12345);
    ret = compare(c, P(c, "top.qed"), QED_FORMAT_QED, P(c, "diff.raw"),
                  QED_FORMAT_RAW, &r);
    ok(ret == 0 && !r.identical && r.mismatch_offset == 2 * MiB + 12345,
       "%s: the exact first differing byte (%" PRIu64 ")", c->en,
       r.mismatch_offset);
    support_pwrite(P(c, "diff.raw"), &byte, 1, 7);
    ret = compare(c, P(c, "diff.raw"), QED_FORMAT_RAW, P(c, "top.qed"),
                  QED_FORMAT_QED, &r);
    ok(ret == 0 && !r.identical && r.mismatch_offset == 7,
       "%s: the earliest of two differences (%" PRIu64 ")", c->en,
       r.mismatch_offset);

    /* Sizes: a zero tail is equal, a data tail is not. */
    create(P(c, "s1.qed"), MiB, 0, 0, NULL, 0);
    create(P(c, "s2.qed"), 4 * MiB, 0, 0, NULL, 0);
    zero(c, P(c, "s2.qed"), 2 * MiB, 64 * KiB);
    ret = compare(c, P(c, "s1.qed"), QED_FORMAT_QED, P(c, "s2.qed"),
                  QED_FORMAT_QED, &r);
    ok(ret == 0 && r.identical && r.size_a == MiB && r.size_b == 4 * MiB,
       "%s: a larger image with a zero tail is identical", c->en);
    fill(c, P(c, "s2.qed"), QED_FORMAT_QED, 11, 3 * MiB + 3, 1);
    ret = compare(c, P(c, "s2.qed"), QED_FORMAT_QED, P(c, "s1.qed"),
                  QED_FORMAT_QED, &r);
    ok(ret == 0 && !r.identical && r.mismatch_offset == 3 * MiB + 3,
       "%s: data in the tail differs at its offset", c->en);
}

/* ---- commit ------------------------------------------------------------------------------- */

static void test_commit(const struct ctx *c, const char *backing,
                        enum qed_format bf, const char *what)
{
    struct qed_commit_options o = { .size = sizeof(o), .engine = c->engine };
    qed_error err = { 0 };
    uint8_t *before = NULL, *after = NULL;
    size_t lb = 0, la = 0;
    int ret;

    /* cimg.qed (64k clusters, 3 MiB) over a backing file of 2 MiB. */
    if (!create(P(c, "cimg.qed"), 3 * MiB, 65536, 0, backing, bf) ||
        !fill(c, P(c, "cimg.qed"), QED_FORMAT_QED, 20, 5000, 70000) ||
        !zero(c, P(c, "cimg.qed"), 256 * KiB, 128 * KiB) ||
        !fill(c, P(c, "cimg.qed"), QED_FORMAT_QED, 21, 2 * MiB + 100, 100))
        return;
    {
        struct qed_convert_options co = { .size = sizeof(co),
                                          .format = QED_FORMAT_RAW };
        convert(c, P(c, "cimg.qed"), QED_FORMAT_QED, P(c, "cview.raw"), &co,
                &err);
    }
    support_read_file(P(c, "cimg.qed"), &before, &lb);
    ret = qed_commit(P(c, "cimg.qed"), &o, &err);
    if (!ok(ret == 0, "%s: commit into %s", c->en, what))
        tap_diag("%s", err.message);
    support_read_file(P(c, "cimg.qed"), &after, &la);
    ok(before && after && la == lb && memcmp(before, after, la) == 0,
       "%s: commit into %s leaves the image byte-identical", c->en, what);
    ok(same_content(c, P(c, "cview.raw"), QED_FORMAT_RAW, P(c, backing), bf),
       "%s: the %s backing file now reads like the image did (grown to "
       "its size)", c->en, what);
    free(before);
    free(after);
}

/* ---- rebase and set_backing ------------------------------------------------------------- */

static void test_rebase(const struct ctx *c)
{
    qed_error err = { 0 };
    uint8_t *before = NULL, *after = NULL;
    size_t lb = 0, la = 0;
    char name[5000];
    qed_image *img;
    int ret;

    support_copy_file(P(c, "top.qed"), P(c, "rtop.qed"));
    /* Safe rebase of the top of the chain onto other.qed. */
    img = open_img(c, P(c, "rtop.qed"), QED_OPEN_RDWR, QED_FORMAT_QED, NULL);
    if (!img)
        return;
    ret = qed_rebase(img, "other.qed", QED_FORMAT_QED, 0, NULL, &err);
    if (!ok(ret == 0, "%s: rebase onto other.qed", c->en))
        tap_diag("%s", err.message);
    ok(qed_backing(img) && qed_size(qed_backing(img)) == 3 * MiB,
       "%s: the open image now reads through other.qed", c->en);
    close_img(img);
    ok(same_content(c, P(c, "rtop.qed"), QED_FORMAT_QED, P(c, "top.qed"),
                    QED_FORMAT_QED),
       "%s: the rebased image reads as before", c->en);

    /* Removing the backing file. */
    img = open_img(c, P(c, "rtop.qed"), QED_OPEN_RDWR, QED_FORMAT_QED, NULL);
    if (img) {
        ret = qed_rebase(img, NULL, QED_FORMAT_PROBE, 0, NULL, &err);
        ok(ret == 0 && !qed_backing(img), "%s: rebase onto nothing", c->en);
        close_img(img);
    }
    ok(same_content(c, P(c, "rtop.qed"), QED_FORMAT_QED, P(c, "top.qed"),
                    QED_FORMAT_QED),
       "%s: without a backing file it still reads as before", c->en);
    ok((support_read_le64(P(c, "rtop.qed"), HDR_FEATURES) & 5) == 0,
       "%s: BACKING_FILE and NO_PROBE are clear", c->en);

    /* qed_set_backing: onto the raw base, NO_PROBE recorded. */
    img = open_img(c, P(c, "rtop.qed"), QED_OPEN_RDWR, QED_FORMAT_QED, NULL);
    if (img) {
        ret = qed_set_backing(img, "base.raw", QED_FORMAT_PROBE, &err);
        ok(ret == 0 && qed_backing(img) &&
               qed_format_of(qed_backing(img)) == QED_FORMAT_RAW,
           "%s: set_backing onto a raw file (probed)", c->en);
        close_img(img);
    }
    ok((support_read_le64(P(c, "rtop.qed"), HDR_FEATURES) & 5) == 5,
       "%s: a raw backing file sets NO_PROBE", c->en);

    /* Names that do not fit leave the file byte-identical: nm.qed has 4 KiB
     * clusters, so 4032 bytes fit after the header fields. */
    memset(name, 'n', sizeof(name));
    name[4040] = '\0';
    if (!create(P(c, "nm.qed"), MiB, 4096, 0, "mid.qed", QED_FORMAT_QED) ||
        !fill(c, P(c, "nm.qed"), QED_FORMAT_QED, 12, 0, 64 * KiB))
        return;
    support_read_file(P(c, "nm.qed"), &before, &lb);
    img = open_img(c, P(c, "nm.qed"), QED_OPEN_RDWR, QED_FORMAT_QED, NULL);
    if (img) {
        ret = qed_rebase(img, name, QED_FORMAT_QED, 0, NULL, &err);
        ok(ret == -ENAMETOOLONG, "%s: a 4040-byte name fails to rebase a "
           "4 KiB-header image", c->en);
        has_substr(err.message, "at most 4032 fit in the header",
                   "%s: ... saying how many fit", c->en);
        ret = qed_set_backing(img, name, QED_FORMAT_QED, &err);
        ok(ret == -ENAMETOOLONG, "%s: ... and to set", c->en);
        close_img(img);
    }
    ret = qed_set_backing_at(P(c, "nm.qed"), name, QED_FORMAT_QED, &err);
    ok(ret == -ENAMETOOLONG, "%s: ... and to set by path", c->en);
    name[4040] = 'n';
    name[4100] = '\0';
    ret = qed_set_backing_at(P(c, "top.qed"), name, QED_FORMAT_QED, &err);
    ok(ret == -ENAMETOOLONG, "%s: a name over 4095 bytes fails", c->en);
    /* A loop: top's chain would contain top. */
    img = open_img(c, P(c, "mid.qed"), QED_OPEN_RDWR, QED_FORMAT_QED, NULL);
    if (img) {
        uint8_t *mb = NULL, *ma = NULL;
        size_t mlb = 0, mla = 0;
        close_img(img);
        support_read_file(P(c, "mid.qed"), &mb, &mlb);
        img = open_img(c, P(c, "mid.qed"), QED_OPEN_RDWR, QED_FORMAT_QED,
                       NULL);
        ret = img ? qed_rebase(img, "top.qed", QED_FORMAT_QED, 0, NULL, &err)
                  : -EIO;
        ok(ret == -ELOOP, "%s: rebasing mid onto the image above it fails "
           "(loop)", c->en);
        close_img(img);
        support_read_file(P(c, "mid.qed"), &ma, &mla);
        ok(mb && ma && mla == mlb && memcmp(mb, ma, mla) == 0,
           "%s: ... leaving mid.qed byte-identical", c->en);
        free(mb);
        free(ma);
    }
    support_read_file(P(c, "nm.qed"), &after, &la);
    ok(before && after && la == lb && memcmp(before, after, la) == 0,
       "%s: names too long leave the file byte-identical", c->en);
    free(before);
    free(after);

    /* A 64 KiB header cluster takes a name past the first 4 KiB block. */
    if (create(P(c, "bigc.qed"), MiB, 65536, 0, NULL, 0)) {
        char *path = malloc(6000);
        size_t n = 0;
        if (path) {
            /* "./" repeated, then the file: a 4041-byte name for
             * other.qed (past the first 4 KiB block, and short enough for
             * the resolved path to stay under PATH_MAX). */
            while (n + 2 + strlen("other.qed") <= 4041) {
                memcpy(path + n, "./", 2);
                n += 2;
            }
            memcpy(path + n, "other.qed", sizeof("other.qed"));
            ret = qed_set_backing_at(P(c, "bigc.qed"), path, QED_FORMAT_QED,
                                     &err);
            ok(ret == 0, "%s: a %zu-byte name fits a 64 KiB header", c->en,
               strlen(path));
            img = open_img(c, P(c, "bigc.qed"), 0, QED_FORMAT_QED, NULL);
            ok(img && qed_backing(img) &&
                   qed_size(qed_backing(img)) == 3 * MiB,
               "%s: ... and opens as the backing file", c->en);
            if (img) {
                struct qed_image_info *info = support_image_info_new();
                ok(info && qed_get_info(img, info, &err) == 0 &&
                       strcmp(info->backing_file, path) == 0,
                   "%s: ... stored whole", c->en);
                free(info);
            }
            close_img(img);
            free(path);
        }
    }
}

/* ---- resize ------------------------------------------------------------------------------- */

static void test_resize(const struct ctx *c)
{
    const uint64_t max = GiB; /* 4k clusters, table_size 1: 512^2 * 4 KiB */
    struct qed_check_result res = { .size = sizeof(res) };
    qed_error err = { 0 };
    uint8_t sector[512], got[512];
    qed_image *img;
    uint64_t fsize;
    int ret;

    if (!create(P(c, "rs.qed"), MiB, 4096, 1, NULL, 0))
        return;
    img = open_img(c, P(c, "rs.qed"), QED_OPEN_RDWR, QED_FORMAT_QED, NULL);
    if (!img)
        return;
    ret = qed_resize(img, max + 512, 0, &err);
    ok(ret == -EINVAL, "%s: one sector past the maximum fails", c->en);
    has_substr(err.message, "exceeds the maximum 1073741824",
               "%s: ... naming the maximum", c->en);
    ret = qed_resize(img, max, 0, &err);
    ok(ret == 0 && qed_size(img) == max, "%s: resize to exactly the "
       "maximum (1 GiB)", c->en);
    support_fill(sector, sizeof(sector), 30, max - 512);
    ret = qed_pwrite(img, sector, 512, max - 512, &err);
    ok(ret == 0, "%s: write the last sector", c->en);
    close_img(img);
    ok(support_read_le64(P(c, "rs.qed"), HDR_IMAGE_SIZE) == max,
       "%s: the header holds the new size", c->en);
    img = open_img(c, P(c, "rs.qed"), QED_OPEN_RDWR, QED_FORMAT_QED, NULL);
    if (!img)
        return;
    ok(qed_pread(img, got, 512, max - 512, &err) == 0 &&
           memcmp(got, sector, 512) == 0,
       "%s: the last sector reads back after reopening", c->en);
    ret = qed_resize(img, 1000, QED_RESIZE_SHRINK, &err);
    ok(ret == -EINVAL, "%s: a size that is not whole sectors fails", c->en);
    ret = qed_resize(img, MiB, 0, &err);
    ok(ret == -EINVAL, "%s: shrinking without the flag fails", c->en);
    close_img(img);

    /* Shrink into the middle of a cluster with clusters written out of
     * order, then grow: zeros past the old end, nothing leaked. */
    if (!create(P(c, "sg.qed"), 8 * MiB, 4096, 2, NULL, 0) ||
        !fill(c, P(c, "sg.qed"), QED_FORMAT_QED, 31, 7 * MiB, MiB) ||
        !fill(c, P(c, "sg.qed"), QED_FORMAT_QED, 32, 0, 512 * KiB) ||
        !fill(c, P(c, "sg.qed"), QED_FORMAT_QED, 33, 5 * MiB, 64 * KiB) ||
        !fill(c, P(c, "sg.qed"), QED_FORMAT_QED, 34, 2 * MiB, 100 * KiB))
        return;
    fsize = support_file_size(P(c, "sg.qed"));
    img = open_img(c, P(c, "sg.qed"), QED_OPEN_RDWR, QED_FORMAT_QED, NULL);
    if (!img)
        return;
    ret = qed_resize(img, 2 * MiB + 50 * KiB + 512, QED_RESIZE_SHRINK, &err);
    if (!ok(ret == 0, "%s: shrink inside a cluster", c->en))
        tap_diag("%s", err.message);
    ret = qed_check(img, 0, &res, &err);
    ok(ret == 0 && res.leaks == 0 && res.corruptions == 0,
       "%s: no leaks, no corruption after the shrink (%" PRIu64 " leaks)",
       c->en, res.leaks);
    ret = qed_resize(img, 8 * MiB, 0, &err);
    ok(ret == 0, "%s: grow again", c->en);
    {
        uint8_t *buf = malloc(8 * MiB);
        if (buf && qed_pread(img, buf, 8 * MiB, 0, &err) == 0) {
            uint64_t keep = 2 * MiB + 50 * KiB + 512;
            ok(support_check_pattern(buf, 512 * KiB, 32, 0) == 512 * KiB &&
                   support_check_pattern(buf + 2 * MiB, keep - 2 * MiB, 34,
                                         2 * MiB) == keep - 2 * MiB,
               "%s: the data before the new end is intact", c->en);
            ok(support_first_nonzero(buf + keep, 8 * MiB - keep) ==
                   8 * MiB - keep,
               "%s: shrink then grow reads zeros past the shrunk end",
               c->en);
        }
        free(buf);
    }
    close_img(img);
    ok(support_file_size(P(c, "sg.qed")) < fsize,
       "%s: the file got shorter (%" PRIu64 " -> %" PRIu64 ")", c->en, fsize,
       support_file_size(P(c, "sg.qed")));
    if (support_have_qemu_img()) {
        struct support_check qc;
        support_qemu_check(P(c, "sg.qed"), &qc);
        if (!ok(qc.clean, "%s: qemu-img check is clean", c->en))
            tap_diag("%s", qc.output);
    }

    /* Raw files are truncated. */
    make_raw(P(c, "rs.raw"), MiB);
    img = open_img(c, P(c, "rs.raw"), QED_OPEN_RDWR, QED_FORMAT_RAW, NULL);
    if (img) {
        ret = qed_resize(img, 3 * MiB + 100, 0, &err);
        ok(ret == 0 && qed_size(img) == 3 * MiB + 512 &&
               support_file_size(P(c, "rs.raw")) == 3 * MiB + 100,
           "%s: raw: grow to an odd size", c->en);
        ret = qed_resize(img, 4096, 0, &err);
        ok(ret == -EINVAL, "%s: raw: shrinking needs the flag", c->en);
        ret = qed_resize(img, 4096, QED_RESIZE_SHRINK, &err);
        ok(ret == 0 && support_file_size(P(c, "rs.raw")) == 4096,
           "%s: raw: shrink", c->en);
        close_img(img);
    }
    img = open_img(c, P(c, "rs.raw"), 0, QED_FORMAT_RAW, NULL);
    if (img) {
        ret = qed_resize(img, MiB, 0, &err);
        ok(ret == -EPERM, "%s: a read-only image cannot be resized", c->en);
        close_img(img);
    }
}

static void run_engine(enum qed_engine engine)
{
    struct ctx c = { .engine = engine, .en = support_engine_name(engine) };

    if (support_mkdtemp("ops", c.dir, sizeof(c.dir)) < 0) {
        ok(0, "%s: temporary directory", c.en);
        return;
    }
    if (make_sources(&c)) {
        test_convert_matrix(&c);
        test_convert_sparse(&c);
        test_convert_options(&c);
        test_compare(&c);
        make_raw(P(&c, "cbase.raw"), 2 * MiB);
        fill(&c, P(&c, "cbase.raw"), QED_FORMAT_RAW, 40, 0, 2 * MiB);
        test_commit(&c, "cbase.raw", QED_FORMAT_RAW, "raw");
        create(P(&c, "cbase.qed"), 2 * MiB, 4096, 0, NULL, 0);
        fill(&c, P(&c, "cbase.qed"), QED_FORMAT_QED, 41, 0, 2 * MiB);
        test_commit(&c, "cbase.qed", QED_FORMAT_QED, "QED");
        test_rebase(&c);
        test_resize(&c);
    }
    support_rmtree(c.dir);
}

int main(void)
{
    for (unsigned i = 0; i < SUPPORT_ENGINE_COUNT; i++)
        run_engine(support_engines[i]);
    return tap_done();
}
