/* SPDX-License-Identifier: MIT */
/* qed_compact is crash safe: power is cut at every I/O operation of a
 * compaction (on the simulated file system, with unflushed writes lost or
 * torn); after each cut the image opens (repairing itself), checks clean,
 * and reads exactly as before. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../tap.h"
#include "io-sim.h"
#include "qed.h"

#define SIZE (1u << 20)
#define CS 4096u

static qed_image *open_mem(struct memfs *fs, unsigned flags, qed_error *err)
{
    struct storage_driver opener = memfs_opener(fs);
    struct qed_open_options o = { .size = sizeof(o), .flags = flags };
    qed_image *img = NULL;
    if (qedi_image_open("c.qed", &o, &opener, &img, err) < 0)
        return NULL;
    return img;
}

static bool read_all(struct memfs *fs, uint8_t *out)
{
    qed_error err;
    qed_image *img = open_mem(fs, 0, &err);
    bool good = img && qed_pread(img, out, SIZE, 0, &err) == 0;
    if (img)
        qed_close(img, &err);
    return good;
}

/* An image with data, zero-filled data clusters, discarded ones and a
 * trailing leak, as a disk file loaded into the simulated file system. */
static bool make_image(const char *dir, struct memfs *fs)
{
    char path[256];
    struct qed_create_options co = { .size = sizeof(co),
                                     .virtual_size = SIZE, .cluster_size = CS,
                                     .table_size = 1 };
    struct qed_open_options oo = { .size = sizeof(oo), .flags = QED_OPEN_RDWR };
    uint8_t buf[64 * 1024];
    qed_image *img;
    qed_error err;
    bool good;

    snprintf(path, sizeof(path), "%s/c.qed", dir);
    if (qed_create(path, &co, &err) < 0 || qed_open(path, &oo, &img, &err) < 0)
        return false;
    memset(buf, 0x5a, sizeof(buf));
    good = qed_pwrite(img, buf, sizeof(buf), 0, &err) == 0;
    memset(buf, 0, sizeof(buf));
    good = good && qed_pwrite(img, buf, 32 * 1024, 128 * 1024, &err) == 0;
    memset(buf, 0x77, sizeof(buf));
    good = good && qed_pwrite(img, buf, 16 * 1024, 512 * 1024, &err) == 0;
    good = good && qed_discard(img, 16 * 1024, 16 * 1024, &err) == 0;
    good = qed_close(img, &err) == 0 && good;
    if (good && truncate(path, 300 * 1024) < 0)
        good = false;
    good = good && memfs_load(fs, "c.qed", path) == 0;
    unlink(path);
    return good;
}

int main(void)
{
    char dir[] = "/tmp/qed-compact-XXXXXX";
    struct memfs *base = memfs_new();
    uint8_t *expect = malloc(SIZE), *got = malloc(SIZE);
    uint8_t *image_bytes = NULL;
    size_t image_len = 0;
    unsigned cuts = 0, bad_open = 0, bad_check = 0, bad_content = 0;
    uint64_t total_ops, leaks_before = 0;

    if (!mkdtemp(dir) || !base || !expect || !got)
        return 1;
    if (!ok(make_image(dir, base), "the test image is made"))
        return tap_done();
    ok(read_all(base, expect), "its content is read");
    memfs_get(base, "c.qed", &image_bytes, &image_len);

    /* How many operations a whole compaction takes. */
    {
        struct memfs *fs = memfs_new();
        struct qed_compact_result r = { .size = sizeof(r) };
        qed_error err;
        qed_image *img;
        uint64_t before;
        memfs_add(fs, "c.qed", image_bytes, image_len);
        struct qed_check_result cr0 = { .size = sizeof(cr0) };
        img = open_mem(fs, QED_OPEN_RDWR, &err);
        if (img && qed_check(img, 0, &cr0, &err) == 0)
            leaks_before = cr0.leaks;
        before = memfs_op_count(fs);
        qed_compact_result_init(&r);
        int ret = img ? qed_compact(img, &r, &err) : -1;
        ok(ret == 0 && r.zero_clusters_dropped > 0 && r.leaks_reclaimed > 0,
           "compact runs: %" PRIu64 " zero clusters released, %" PRIu64
           " clusters reclaimed (%" PRIu64 " leaks before)",
           r.zero_clusters_dropped, r.leaks_reclaimed, leaks_before);
        total_ops = memfs_op_count(fs) - before;
        if (img)
            qed_close(img, &err);
        ok(read_all(fs, got) && memcmp(got, expect, SIZE) == 0,
           "compacted without a crash, it reads the same");
        memfs_free(fs);
    }
    for (uint64_t n = 1; n <= total_ops + 1; n++) {
        for (uint64_t seed = 1; seed <= 3; seed++) {
            struct memfs *fs = memfs_new();
            struct qed_compact_result r = { .size = sizeof(r) };
            struct qed_check_result cr = { .size = sizeof(cr) };
            qed_error err;
            qed_image *img;

            memfs_add(fs, "c.qed", image_bytes, image_len);
            memfs_set_volatile(fs, true);
            img = open_mem(fs, QED_OPEN_RDWR, &err);
            memfs_crash_at(fs, n, seed * 7919 + n);
            if (img) {
                qed_compact(img, &r, &err);
                qed_close(img, &err);
            }
            memfs_revive(fs);
            memfs_set_volatile(fs, false);
            cuts++;
            img = open_mem(fs, QED_OPEN_RDWR, &err);
            if (!img) {
                if (bad_open++ == 0)
                    tap_diag("cut %" PRIu64 " seed %" PRIu64 ": open: %s", n,
                             seed, err.message);
                memfs_free(fs);
                continue;
            }
            /* A cut before the end may leave the image's old leaks, never
             * a corruption or a new leak (the open repairs a dirty one). */
            if (qed_check(img, 0, &cr, &err) < 0 || cr.corruptions ||
                cr.leaks > leaks_before) {
                if (bad_check++ == 0)
                    tap_diag("cut %" PRIu64 " seed %" PRIu64 ": %" PRIu64
                             " corruptions, %" PRIu64 " leaks", n, seed,
                             cr.corruptions, cr.leaks);
            }
            if (qed_pread(img, got, SIZE, 0, &err) < 0 ||
                memcmp(got, expect, SIZE) != 0) {
                if (bad_content++ == 0)
                    tap_diag("cut %" PRIu64 " seed %" PRIu64
                             ": content differs", n, seed);
            }
            qed_close(img, &err);
            memfs_free(fs);
        }
    }
    ok(cuts > 10, "%u cuts, at every operation of a compaction (%" PRIu64
       " operations)", cuts, total_ops);
    ok(bad_open == 0, "after every cut the image opens read-write");
    ok(bad_check == 0, "after every cut the check finds no corruption and "
       "no new leak");
    ok(bad_content == 0, "after every cut it reads exactly as before");
    free(image_bytes);
    free(expect);
    free(got);
    memfs_free(base);
    rmdir(dir);
    return tap_done();
}
