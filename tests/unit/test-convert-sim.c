/* SPDX-License-Identifier: MIT */
/* qed_convert's write order and salvage, with a source whose reads
 * complete in a random order or fail (the simulated file system of
 * io-sim.c), and a QED source with an unreadable cluster:
 *
 * - without out_of_order, a QED output's clusters are allocated in guest
 *   order even when the source's reads complete out of order; with it
 *   they follow the completions;
 * - a read error stops a convert; with salvage the failed segment is read
 *   again in pieces, so a transient error leaves the output whole and
 *   warns of nothing;
 * - with salvage, a cluster that cannot be read becomes zeros, is reported
 *   once with its offset, and everything else is copied. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "qed-image.h"
#include "io-sim.h"
#include "qed.h"
#include "support-image.h"
#include "../tap.h"

#define SRC_SIZE (8 * MiB)
#define CLUSTER (64 * KiB)

struct warnings {
    unsigned count;
    char first[512];
};

static void collect_warning(void *opaque, const char *message)
{
    struct warnings *w = opaque;

    if (w->count++ == 0)
        snprintf(w->first, sizeof(w->first), "%s", message);
}

/* The source: SRC_SIZE bytes of pattern in "src.raw" of a fresh memfs. */
static struct memfs *make_source(const uint8_t *data)
{
    struct memfs *fs = memfs_new();

    if (fs && memfs_add(fs, "src.raw", data, SRC_SIZE) < 0) {
        memfs_free(fs);
        return NULL;
    }
    return fs;
}

static int open_source(struct memfs *fs, qed_loop *loop, qed_image **img,
                       qed_error *err)
{
    struct qed_open_options o = { .size = sizeof(o),
                                  .format = QED_FORMAT_RAW, .loop = loop };
    struct storage_driver opener = memfs_opener(fs);

    return qedi_image_open("src.raw", &o, &opener, img, err);
}

/* Does the QED image at path read as data? */
static bool output_is(const char *path, const uint8_t *data, uint64_t size)
{
    qed_image *img = NULL;
    qed_error err = { 0 };
    uint8_t *buf = malloc(size);
    bool same = false;

    if (buf && qed_open(path, NULL, &img, &err) == 0 &&
        qed_size(img) == size && qed_pread(img, buf, size, 0, &err) == 0)
        same = memcmp(buf, data, size) == 0;
    if (err.code)
        tap_diag("%s: %s", path, err.message);
    qed_close(img, NULL);
    free(buf);
    return same;
}

/* How many data clusters of the QED image at path sit at a lower host
 * offset than the cluster before them in guest order (-1 on error). */
static int clusters_out_of_order(const char *path)
{
    qed_image *img = NULL;
    qed_error err = { 0 };
    uint64_t last = 0;
    int inversions = 0;

    if (qed_open(path, NULL, &img, &err) < 0)
        return -1;
    for (uint64_t off = 0; off < qed_size(img); off += CLUSTER) {
        struct qed_block_status st = { .size = sizeof(st) };

        if (qed_block_status(img, off, CLUSTER, &st, &err) < 0) {
            inversions = -1;
            break;
        }
        if (!st.data || !st.has_offset)
            continue;
        if (st.offset < last)
            inversions++;
        last = st.offset;
    }
    qed_close(img, NULL);
    return inversions;
}

/* Converts the memfs source to a QED output at dst, reads completing in a
 * random order (seed). */
static int convert_shuffled(const uint8_t *data, const char *dst,
                            bool out_of_order, uint64_t seed, qed_loop *loop)
{
    struct memfs *fs = make_source(data);
    struct qed_op_options op = { .size = sizeof(op), .requests = 16,
                                 .request_size = CLUSTER };
    struct qed_convert_options o = {
        .size = sizeof(struct qed_convert_options),
        .format = QED_FORMAT_QED,
        .out_of_order = out_of_order,
        .op = &op,
    };
    qed_image *src = NULL;
    qed_error err = { 0 };
    int ret = -ENOMEM;

    if (!fs)
        return ret;
    memfs_set_delays(fs, 8, seed);
    ret = open_source(fs, loop, &src, &err);
    if (ret == 0)
        ret = qed_convert(src, dst, &o, &err);
    if (ret < 0)
        tap_diag("convert: %s", err.message);
    if (src)
        qed_close(src, NULL);
    memfs_free(fs);
    return ret;
}

static void test_write_order(const char *dir, const uint8_t *data,
                             qed_loop *loop)
{
    const char *in_order = support_path(dir, "in-order.qed");
    const char *any_order = support_path(dir, "any-order.qed");
    int worst = 0, most = 0;

    for (uint64_t seed = 1; seed <= 3; seed++) {
        int n;

        if (convert_shuffled(data, in_order, false, seed, loop) < 0 ||
            !output_is(in_order, data, SRC_SIZE))
            worst = -1;
        n = clusters_out_of_order(in_order);
        if (worst >= 0)
            worst = n < 0 ? -1 : QED_MAX(worst, n);
        if (convert_shuffled(data, any_order, true, seed, loop) == 0 &&
            output_is(any_order, data, SRC_SIZE))
            most = QED_MAX(most, clusters_out_of_order(any_order));
    }
    ok(worst == 0, "reads completing out of order: in-order writes copy "
       "the source and allocate every cluster in guest order (%d out of "
       "place)", worst);
    ok(most > 0, "with out_of_order the clusters follow the completions "
       "(%d out of place)", most);
}

static void test_transient_error(const char *dir, const uint8_t *data,
                                 qed_loop *loop)
{
    const char *dst = support_path(dir, "transient.qed");

    for (int salvage = 0; salvage <= 1; salvage++) {
        struct memfs *fs = make_source(data);
        struct warnings w = { 0 };
        struct qed_convert_options o = {
            .size = sizeof(struct qed_convert_options),
            .format = QED_FORMAT_QED,
            .salvage = salvage,
            .warning = collect_warning,
            .warning_opaque = &w,
        };
        qed_image *src = NULL;
        qed_error err = { 0 };
        int ret = fs ? open_source(fs, loop, &src, &err) : -ENOMEM;

        if (ret == 0) {
            memfs_fail_nth(fs, 3, EIO);
            ret = qed_convert(src, dst, &o, &err);
        }
        if (!salvage) {
            ok(ret == -EIO && memfs_faults_fired(fs) == 1,
               "a read error stops the convert with EIO (%d: %s)", ret,
               err.message);
        } else {
            ok(ret == 0 && memfs_faults_fired(fs) == 1 && w.count == 0 &&
                   output_is(dst, data, SRC_SIZE),
               "salvage: a transient read error is read again in pieces; "
               "the output is whole, no warning (%d, %u warnings)", ret,
               w.count);
        }
        if (src)
            qed_close(src, NULL);
        if (fs)
            memfs_free(fs);
    }
}

/* A QED image with data everywhere but its third cluster's L2 entry
 * pointing far past the end of the file. */
static bool make_broken(const char *path, const uint8_t *data)
{
    qed_image *img = NULL;
    qed_error err = { 0 };
    uint64_t l1, l2;
    bool good = support_create(path, SRC_SIZE, CLUSTER, 0, NULL, 0,
                               &err) == 0 &&
                qed_open(path, &(struct qed_open_options){
                                   .size = sizeof(struct qed_open_options),
                                   .flags = QED_OPEN_RDWR }, &img,
                         &err) == 0 &&
                qed_pwrite(img, data, SRC_SIZE, 0, &err) == 0;

    if (img && qed_close(img, &err) < 0)
        good = false;
    if (!good) {
        tap_diag("%s: %s", path, err.message);
        return false;
    }
    l1 = support_read_le64(path, HDR_L1_TABLE_OFFSET);
    l2 = support_read_le64(path, l1);
    return l2 != UINT64_MAX &&
           support_write_le64(path, l2 + 2 * 8, UINT64_C(1) << 40) == 0;
}

static void test_unreadable_cluster(const char *dir, uint8_t *data)
{
    const char *bad = support_path(dir, "broken.qed");
    const char *dst = support_path(dir, "salvaged.qed");
    struct warnings w = { 0 };
    struct qed_convert_options o = {
        .size = sizeof(struct qed_convert_options),
        .format = QED_FORMAT_QED,
        .warning = collect_warning,
        .warning_opaque = &w,
    };
    qed_image *src = NULL;
    qed_error err = { 0 };
    int plain = -1, salvaged = -1;

    if (!ok(make_broken(bad, data), "a QED image with an L2 entry past the "
            "end of its file"))
        return;
    if (qed_open(bad, NULL, &src, &err) == 0) {
        plain = qed_convert(src, dst, &o, &err);
        o.salvage = true;
        salvaged = qed_convert(src, dst, &o, &err);
        qed_close(src, NULL);
    }
    ok(plain < 0, "without salvage the convert fails (%d)", plain);
    memset(data + 2 * CLUSTER, 0, CLUSTER);
    ok(salvaged == 0 && output_is(dst, data, SRC_SIZE),
       "salvage: the unreadable cluster becomes zeros, the rest is copied "
       "(%d)", salvaged);
    ok(w.count == 2 && strstr(w.first, "block status at offset 131072"),
       "salvage: warned once for the block status and once for the read "
       "of that cluster (%u; first: %s)", w.count, w.first);
}

int main(void)
{
    char dir[256];
    uint8_t *data = malloc(SRC_SIZE);
    qed_loop *loop = NULL;
    qed_error err = { 0 };

    if (!data || support_mkdtemp("convert-sim", dir, sizeof(dir)) < 0 ||
        qed_loop_new(QED_ENGINE_AUTO, &loop, &err) < 0) {
        ok(false, "setup: a buffer, a directory and a loop (%s)",
           err.message);
        free(data);
        return tap_done();
    }
    support_fill(data, SRC_SIZE, 7, 0);
    test_write_order(dir, data, loop);
    test_transient_error(dir, data, loop);
    test_unreadable_cluster(dir, data);
    qed_loop_free(loop);
    support_rmtree(dir);
    free(data);
    return tap_done();
}
