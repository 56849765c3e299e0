/* SPDX-License-Identifier: MIT */
/* The dirty bit (QED_F_NEED_CHECK) and the feature fields, once per I/O
 * engine, observed in the file itself: set before the first allocation of an
 * image without a backing file and cleared by close; never set with a
 * backing file; a dirty image left alone by read-only opens and checked and
 * repaired by read-write ones (also after a simulated crash); autoclear bits
 * cleared by writers only, compat bits kept, unknown features refused. */
#include <errno.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "qed.h"
#include "support-image.h"
#include "support-tap.h"

#define CS (64 * KiB)

struct ctx {
    enum qed_engine engine;
    const char *en;
    const char *dir;
};

/* Opens with the engine under test; one test point (see support-tap.h). */
static bool open_image(const struct ctx *c, const char *path, unsigned flags,
                       qed_image **img, const char *what)
{
    struct qed_open_options o = { .size = sizeof(o),
                                  .flags = flags, .engine = c->engine };
    return support_tap_open(c->en, path, &o, img, what);
}

static uint64_t disk_features(const char *path)
{
    return support_read_le64(path, HDR_FEATURES);
}

static bool disk_dirty(const char *path)
{
    return (disk_features(path) & QED_F_NEED_CHECK) != 0;
}

static bool info_dirty(qed_image *img)
{
    struct qed_image_info *info = support_image_info_new();
    bool dirty = info && qed_get_info(img, info, NULL) == 0 && info->dirty;
    free(info);
    return dirty;
}

/* Snapshot of a file, to show a session left it byte-identical. */
struct snapshot {
    uint8_t *bytes;
    size_t len;
};

static void snap(const char *path, struct snapshot *s)
{
    if (support_read_file(path, &s->bytes, &s->len) < 0) {
        s->bytes = NULL;
        s->len = 0;
    }
}

static bool unchanged(const char *path, struct snapshot *s)
{
    struct snapshot now;
    bool same;

    snap(path, &now);
    same = s->bytes && now.bytes && now.len == s->len &&
           memcmp(now.bytes, s->bytes, s->len) == 0;
    free(now.bytes);
    free(s->bytes);
    s->bytes = NULL;
    return same;
}

/* ---- NEED_CHECK life cycle without a backing file -------------------------- */

struct probe {
    const char *path;
    bool done;
    int ret;
    bool dirty_at_callback;
};

static void probe_done(void *opaque, int ret, const qed_error *err)
{
    struct probe *p = opaque;
    (void)err;
    p->done = true;
    p->ret = ret;
    p->dirty_at_callback = disk_dirty(p->path);
}

static void test_lifecycle(const struct ctx *c)
{
    const char *path = support_path(c->dir, "life.qed");
    uint8_t *buf = malloc(2 * CS);
    qed_image *img = NULL;
    qed_error err = { 0 };
    int ret;

    ret = support_create(path, 8 * MiB, 0, 0, NULL, QED_FORMAT_PROBE, &err);
    is_u64(ret, 0, "%s: life: create an image without a backing file", c->en);
    is_u64(disk_features(path), 0, "%s: life: a new image is clean", c->en);
    if (!open_image(c, path, QED_OPEN_RDWR, &img, "it read-write"))
        goto out;
    ok(!disk_dirty(path), "%s: life: opening read-write does not set "
       "NEED_CHECK", c->en);
    ret = qed_pread(img, buf, CS, 0, &err);
    ok(ret == 0 && !disk_dirty(path), "%s: life: a read does not set "
       "NEED_CHECK", c->en);
    ret = qed_write_zeroes(img, CS + 100, 100, 0, &err);
    ok(ret == 0 && !disk_dirty(path), "%s: life: partial zeroes over "
       "nothing allocate nothing and leave the header clean", c->en);

    {
        struct probe p = { .path = path };
        struct iovec v = { buf, 1000 };
        support_fill(buf, 1000, 1, 3 * CS + 7);
        ret = qed_aio_writev(img, &v, 1, 3 * CS + 7, probe_done, &p);
        is_u64(ret, 0, "%s: life: submit an allocating write", c->en);
        while (!p.done && qed_loop_run(qed_image_loop(img), 1000) >= 0)
            ;
        is_u64(p.ret, 0, "%s: life: the allocating write succeeds", c->en);
        ok(p.dirty_at_callback, "%s: life: NEED_CHECK is on disk when the "
           "write completes", c->en);
    }
    ok(disk_dirty(path), "%s: life: NEED_CHECK set while the image is open",
       c->en);
    ok(info_dirty(img), "%s: life: info.dirty is true", c->en);
    support_fill(buf, 2 * CS, 2, 10 * CS);
    ret = qed_pwrite(img, buf, 2 * CS, 10 * CS, &err);
    ok(ret == 0 && disk_dirty(path), "%s: life: still dirty after a second "
       "allocation", c->en);
    ret = qed_flush(img, &err);
    ok(ret == 0 && disk_dirty(path), "%s: life: a flush does not clear it",
       c->en);
    support_tap_close(c->en, img, "it");
    ok(!disk_dirty(path), "%s: life: qed_close clears NEED_CHECK", c->en);
    is_u64(disk_features(path), 0, "%s: life: no other feature bit appeared",
           c->en);
    support_tap_qemu_check(path, "%s: life: qemu-img check exits 0", c->en);

    /* Rewriting allocated clusters changes no table: no NEED_CHECK. */
    if (!open_image(c, path, QED_OPEN_RDWR, &img, "it again"))
        goto out;
    support_fill(buf, 500, 3, 10 * CS + 100);
    ret = qed_pwrite(img, buf, 500, 10 * CS + 100, &err);
    ok(ret == 0 && !disk_dirty(path), "%s: life: an in-place rewrite leaves "
       "the header clean", c->en);
    ok(!info_dirty(img), "%s: life: info.dirty false after it", c->en);
    ret = qed_pwrite(img, buf, 500, 20 * CS, &err);
    ok(ret == 0 && disk_dirty(path), "%s: life: a new allocation sets "
       "NEED_CHECK again", c->en);
    support_tap_close(c->en, img, "it again");
    ok(!disk_dirty(path), "%s: life: clean after the second close", c->en);
out:
    free(buf);
}

/* ---- images with a backing file never get NEED_CHECK ----------------------- */

static void test_backing_never_dirty(const struct ctx *c)
{
    const char *base = support_path(c->dir, "nd-base.raw");
    const char *path = support_path(c->dir, "nd.qed");
    uint8_t *buf = malloc(4 * CS);
    qed_image *img = NULL;
    qed_error err = { 0 };
    bool ever_dirty = false;
    int ret;

    support_fill(buf, 4 * CS, 5, 0);
    support_write_file(base, buf, 4 * CS);
    ret = support_create(path, 3 * GiB, 0, 0, "nd-base.raw", QED_FORMAT_RAW,
                         &err);
    is_u64(ret, 0, "%s: backing: create an image over a raw file", c->en);
    if (!open_image(c, path, QED_OPEN_RDWR, &img, "it read-write"))
        goto out;
    ret = qed_pwrite(img, buf, 100, CS + 50, &err);
    is_u64(ret, 0, "%s: backing: a COW write", c->en);
    ever_dirty |= disk_dirty(path);
    ret = qed_pwrite(img, buf, CS, 5 * CS, &err);
    is_u64(ret, 0, "%s: backing: a whole-cluster write", c->en);
    ever_dirty |= disk_dirty(path);
    ret = qed_write_zeroes(img, 2 * CS, CS, QED_ZERO_MAY_UNMAP, &err);
    is_u64(ret, 0, "%s: backing: a zero-cluster write", c->en);
    ever_dirty |= disk_dirty(path);
    ret = qed_pwrite(img, buf, 3 * CS, 2 * GiB + 5, &err);
    is_u64(ret, 0, "%s: backing: a write that needs a second L2 table",
           c->en);
    ever_dirty |= disk_dirty(path);
    ok(!ever_dirty, "%s: backing: NEED_CHECK never appeared on disk", c->en);
    ok(!info_dirty(img), "%s: backing: info.dirty stays false", c->en);
    support_tap_close(c->en, img, "it");
    is_u64(disk_features(path),
           QED_F_BACKING_FILE | QED_F_BACKING_FORMAT_NO_PROBE,
           "%s: backing: features after close are exactly the backing bits",
           c->en);
    support_tap_qemu_check(path, "%s: backing: qemu-img check exits 0", c->en);
out:
    free(buf);
}

/* ---- read-only opens of dirty images, crash and repair --------------------- */

static void test_dirty_read_only(const struct ctx *c)
{
    const char *path = support_path(c->dir, "ro-dirty.qed");
    uint8_t *data = malloc(CS), *buf = malloc(CS);
    struct snapshot s;
    qed_image *img = NULL;
    qed_error err = { 0 };
    int ret;

    support_create(path, 4 * MiB, 0, 0, NULL, QED_FORMAT_PROBE, &err);
    if (!open_image(c, path, QED_OPEN_RDWR, &img, "a new image"))
        goto out;
    support_fill(data, CS, 7, 2 * CS);
    qed_pwrite(img, data, CS, 2 * CS, &err);
    support_tap_close(c->en, img, "it");
    support_write_le64(path, HDR_FEATURES, QED_F_NEED_CHECK);
    ok(disk_dirty(path), "%s: read-only: NEED_CHECK set by hand", c->en);

    snap(path, &s);
    if (open_image(c, path, 0, &img, "the dirty image read-only")) {
        ok(info_dirty(img), "%s: read-only: info.dirty is true", c->en);
        ret = qed_pread(img, buf, CS, 2 * CS, &err);
        ok(ret == 0 && memcmp(buf, data, CS) == 0,
           "%s: read-only: data reads fine", c->en);
        support_tap_close(c->en, img, "it");
    }
    ok(unchanged(path, &s), "%s: read-only: the dirty file is byte-identical "
       "after a read-only session", c->en);

    if (open_image(c, path, QED_OPEN_RDWR, &img, "it read-write")) {
        ok(!disk_dirty(path), "%s: read-only: a read-write open checks and "
           "clears NEED_CHECK at once", c->en);
        ok(!info_dirty(img), "%s: read-only: info.dirty false after the "
           "check", c->en);
        ret = qed_pread(img, buf, CS, 2 * CS, &err);
        ok(ret == 0 && memcmp(buf, data, CS) == 0,
           "%s: read-only: data survives the check", c->en);
        support_tap_close(c->en, img, "it read-write");
    }
out:
    free(data);
    free(buf);
}

/* A writer that dies without closing leaves NEED_CHECK behind. */
static void test_crash(const struct ctx *c)
{
    const char *path = support_path(c->dir, "crash.qed");
    uint8_t *data = malloc(3 * CS), *buf = malloc(3 * CS);
    struct snapshot s;
    qed_image *img = NULL;
    qed_error err = { 0 };
    pid_t pid;
    int status = -1, ret;

    support_create(path, 4 * MiB, 0, 0, NULL, QED_FORMAT_PROBE, &err);
    support_fill(data, 3 * CS, 8, CS + 1);
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        qed_image *child = NULL;
        if (support_open(path, QED_OPEN_RDWR, c->engine, &child, NULL) < 0 ||
            qed_pwrite(child, data, 3 * CS, CS + 1, NULL) < 0)
            _exit(1);
        _exit(0); /* no qed_close: a crash */
    }
    if (pid > 0)
        waitpid(pid, &status, 0);
    ok(pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
       "%s: crash: a child process writes and exits without closing", c->en);
    ok(disk_dirty(path), "%s: crash: the file is left with NEED_CHECK",
       c->en);

    snap(path, &s);
    if (open_image(c, path, 0, &img, "the crashed image read-only")) {
        ok(info_dirty(img), "%s: crash: info.dirty is true", c->en);
        ret = qed_pread(img, buf, 3 * CS, CS + 1, &err);
        ok(ret == 0 && memcmp(buf, data, 3 * CS) == 0,
           "%s: crash: the completed write is readable", c->en);
        support_tap_close(c->en, img, "it");
    }
    ok(unchanged(path, &s), "%s: crash: read-only session left the file "
       "byte-identical", c->en);
    if (open_image(c, path, QED_OPEN_RDWR, &img, "it read-write")) {
        ok(!disk_dirty(path), "%s: crash: read-write open repaired and "
           "cleared NEED_CHECK", c->en);
        ret = qed_pread(img, buf, 3 * CS, CS + 1, &err);
        ok(ret == 0 && memcmp(buf, data, 3 * CS) == 0,
           "%s: crash: the data survives the repair", c->en);
        support_tap_close(c->en, img, "it read-write");
    }
    support_tap_qemu_check(path, "%s: crash: qemu-img check exits 0", c->en);
    free(data);
    free(buf);
}

/* ---- repair of bad table entries ------------------------------------------------ */

static void test_repair(const struct ctx *c)
{
    const char *path = support_path(c->dir, "repair.qed");
    const uint64_t size = 4 * GiB; /* two L1 entries with 64k/4 tables */
    uint8_t *data = malloc(4 * CS), *buf = malloc(CS);
    struct snapshot s;
    qed_image *img = NULL;
    qed_error err = { 0 };
    uint64_t l1, l2, fsize, e[4];
    int ret;

    ret = support_create(path, size, 0, 0, NULL, QED_FORMAT_PROBE, &err);
    is_u64(ret, 0, "%s: repair: create a 4 GiB image", c->en);
    if (!open_image(c, path, QED_OPEN_RDWR, &img, "it"))
        goto out;
    support_fill(data, 2 * CS, 9, 0);
    ret = qed_pwrite(img, data, 2 * CS, 0, &err);
    support_fill(data + 2 * CS, CS, 10, 3 * CS);
    ret |= qed_pwrite(img, data + 2 * CS, CS, 3 * CS, &err);
    is_u64(ret, 0, "%s: repair: write clusters 0, 1 and 3", c->en);
    support_tap_close(c->en, img, "it");

    /* Craft: L2 entry 5 past the end of the file, 6 misaligned, 9 into the
     * L1 table; L1 entry 1 past the end; NEED_CHECK. */
    l1 = support_read_le64(path, HDR_L1_TABLE_OFFSET);
    l2 = support_read_le64(path, l1);
    fsize = support_file_size(path);
    ok(l2 >= CS && l2 % CS == 0, "%s: repair: L1 entry 0 holds a table",
       c->en);
    for (int i = 0; i < 4; i++)
        e[i] = support_read_le64(path, l2 + 8 * (uint64_t)i);
    support_write_le64(path, l2 + 8 * 5, (fsize + 10 * CS) & ~(CS - 1));
    support_write_le64(path, l2 + 8 * 6, e[0] + 512);
    support_write_le64(path, l2 + 8 * 9, l1);
    support_write_le64(path, l1 + 8, (fsize + 100 * CS) & ~(CS - 1));
    support_write_le64(path, HDR_FEATURES, QED_F_NEED_CHECK);

    snap(path, &s);
    if (open_image(c, path, 0, &img, "the corrupt image read-only")) {
        ok(info_dirty(img), "%s: repair: read-only: dirty", c->en);
        memset(&err, 0, sizeof(err));
        ret = qed_pread(img, buf, CS, 5 * CS, &err);
        is_u64(ret, (uint64_t)-EIO, "%s: repair: read-only: reading through "
               "an entry past the end fails with EIO", c->en);
        ret = qed_pread(img, buf, CS, 6 * CS, &err);
        is_u64(ret, (uint64_t)-EIO, "%s: repair: read-only: a misaligned "
               "entry fails with EIO", c->en);
        ret = qed_pread(img, buf, CS, 9 * CS, &err);
        is_u64(ret, (uint64_t)-EIO, "%s: repair: read-only: an entry into "
               "the L1 table fails with EIO", c->en);
        ret = qed_pread(img, buf, CS, 2 * GiB, &err);
        is_u64(ret, (uint64_t)-EIO, "%s: repair: read-only: an L1 entry past "
               "the end fails with EIO", c->en);
        ret = qed_pread(img, buf, CS, 0, &err);
        ok(ret == 0 && memcmp(buf, data, CS) == 0,
           "%s: repair: read-only: good clusters still read", c->en);
        support_tap_close(c->en, img, "it read-only");
    }
    ok(unchanged(path, &s), "%s: repair: read-only left the corrupt file "
       "byte-identical", c->en);

    if (!open_image(c, path, QED_OPEN_RDWR, &img, "the corrupt image "
                    "read-write"))
        goto out;
    ok(!disk_dirty(path), "%s: repair: header clean right after the "
       "read-write open", c->en);
    is_u64(support_read_le64(path, l2 + 8 * 5), 0,
           "%s: repair: the entry past the end is cleared on disk", c->en);
    is_u64(support_read_le64(path, l2 + 8 * 6), 0,
           "%s: repair: the misaligned entry is cleared on disk", c->en);
    is_u64(support_read_le64(path, l2 + 8 * 9), 0,
           "%s: repair: the entry into the L1 table is cleared", c->en);
    is_u64(support_read_le64(path, l1 + 8), 0,
           "%s: repair: the L1 entry past the end is cleared", c->en);
    ok(support_read_le64(path, l2) == e[0] &&
           support_read_le64(path, l2 + 8) == e[1] &&
           support_read_le64(path, l2 + 24) == e[3],
       "%s: repair: good entries are kept", c->en);
    memset(buf, 0xff, CS);
    ret = qed_pread(img, buf, CS, 5 * CS, &err);
    ok(ret == 0 && support_first_nonzero(buf, CS) == CS,
       "%s: repair: the repaired cluster reads as zeros", c->en);
    memset(buf, 0xff, CS);
    ret = qed_pread(img, buf, CS, 2 * GiB + 3 * CS, &err);
    ok(ret == 0 && support_first_nonzero(buf, CS) == CS,
       "%s: repair: the repaired table's range reads as zeros", c->en);
    ret = qed_pread(img, buf, CS, 3 * CS, &err);
    ok(ret == 0 && memcmp(buf, data + 2 * CS, CS) == 0,
       "%s: repair: cluster 3 keeps its data", c->en);
    support_fill(data, CS, 11, 5 * CS);
    ret = qed_pwrite(img, data, CS, 5 * CS, &err);
    is_u64(ret, 0, "%s: repair: the repaired cluster can be written", c->en);
    support_tap_close(c->en, img, "the repaired image");
    ok(!disk_dirty(path), "%s: repair: clean after close", c->en);
    support_tap_qemu_check(path, "%s: repair: qemu-img check exits 0", c->en);
out:
    free(data);
    free(buf);
}

/* A dirty image with a backing file is checked too, and ends clean. */
static void test_dirty_with_backing(const struct ctx *c)
{
    const char *base = support_path(c->dir, "db-base.raw");
    const char *path = support_path(c->dir, "db.qed");
    uint8_t block[4096];
    qed_image *img = NULL;
    qed_error err = { 0 };

    support_fill(block, sizeof(block), 12, 0);
    support_write_file(base, block, sizeof(block));
    support_create(path, MiB, 0, 0, "db-base.raw", QED_FORMAT_RAW, &err);
    support_write_le64(path, HDR_FEATURES, QED_F_BACKING_FILE |
                                               QED_F_BACKING_FORMAT_NO_PROBE |
                                               QED_F_NEED_CHECK);
    if (open_image(c, path, QED_OPEN_RDWR, &img, "a dirty image with a "
                   "backing file")) {
        is_u64(disk_features(path),
               QED_F_BACKING_FILE | QED_F_BACKING_FORMAT_NO_PROBE,
               "%s: dirty with backing: NEED_CHECK cleared, other bits kept",
               c->en);
        support_tap_close(c->en, img, "it");
    }
}

/* ---- autoclear, compat and unknown features --------------------------------------- */

static void test_autoclear(const struct ctx *c)
{
    const char *path = support_path(c->dir, "autoclear.qed");
    const uint64_t bits = UINT64_C(0x8000000000000041);
    struct qed_image_info *info = support_image_info_new();
    struct snapshot s;
    qed_image *img = NULL;
    qed_error err = { 0 };

    support_create(path, MiB, 0, 0, NULL, QED_FORMAT_PROBE, &err);
    support_write_le64(path, HDR_AUTOCLEAR_FEATURES, bits);
    snap(path, &s);
    if (open_image(c, path, 0, &img, "an image with unknown autoclear bits "
                   "read-only")) {
        qed_get_info(img, info, &err);
        is_u64(info->autoclear_features, bits, "%s: autoclear: read-only "
               "reports the bits", c->en);
        support_tap_close(c->en, img, "it");
    }
    ok(unchanged(path, &s), "%s: autoclear: read-only keeps them on disk "
       "(file byte-identical)", c->en);
    if (open_image(c, path, QED_OPEN_RDWR, &img, "it read-write")) {
        qed_get_info(img, info, &err);
        is_u64(info->autoclear_features, 0, "%s: autoclear: read-write "
               "reports them cleared", c->en);
        is_u64(support_read_le64(path, HDR_AUTOCLEAR_FEATURES), 0,
               "%s: autoclear: cleared on disk by the read-write open",
               c->en);
        support_tap_close(c->en, img, "it read-write");
    }
    is_u64(support_read_le64(path, HDR_AUTOCLEAR_FEATURES), 0,
           "%s: autoclear: still clear after close", c->en);
    is_u64(disk_features(path), 0, "%s: autoclear: features untouched",
           c->en);
    free(info);
}

static void test_compat(const struct ctx *c)
{
    const char *path = support_path(c->dir, "compat.qed");
    const uint64_t bits = UINT64_C(0x4000000000000104);
    struct qed_image_info *info = support_image_info_new();
    uint8_t data[1000];
    qed_image *img = NULL;
    qed_error err = { 0 };
    int ret;

    support_create(path, MiB, 0, 0, NULL, QED_FORMAT_PROBE, &err);
    support_write_le64(path, HDR_COMPAT_FEATURES, bits);
    if (open_image(c, path, QED_OPEN_RDWR, &img, "an image with unknown "
                   "compat bits read-write")) {
        qed_get_info(img, info, &err);
        is_u64(info->compat_features, bits, "%s: compat: reported", c->en);
        support_fill(data, sizeof(data), 13, 5000);
        ret = qed_pwrite(img, data, sizeof(data), 5000, &err);
        is_u64(ret, 0, "%s: compat: an allocating write works", c->en);
        is_u64(support_read_le64(path, HDR_COMPAT_FEATURES), bits,
               "%s: compat: kept on disk while dirty", c->en);
        support_tap_close(c->en, img, "it");
    }
    is_u64(support_read_le64(path, HDR_COMPAT_FEATURES), bits,
           "%s: compat: kept on disk after close", c->en);
    is_u64(disk_features(path), 0, "%s: compat: features clean", c->en);
    if (open_image(c, path, 0, &img, "it read-only")) {
        uint8_t back[1000];
        ret = qed_pread(img, back, sizeof(back), 5000, &err);
        ok(ret == 0 && memcmp(back, data, sizeof(data)) == 0,
           "%s: compat: data reads back", c->en);
        support_tap_close(c->en, img, "it read-only");
    }
    free(info);
}

static void check_refused(const struct ctx *c, const char *path,
                          uint64_t features, const char *want,
                          const char *what)
{
    struct snapshot s;

    support_write_le64(path, HDR_FEATURES, features);
    snap(path, &s);
    for (int rw = 0; rw < 2; rw++) {
        qed_image *img = NULL;
        qed_error err = { 0 };
        int ret = support_open(path, rw ? QED_OPEN_RDWR : 0, c->engine, &img,
                               &err);
        const char *mode = rw ? "read-write" : "read-only";
        is_u64(ret, (uint64_t)-ENOTSUP, "%s: %s, %s: -ENOTSUP", c->en, what,
               mode);
        is_u64(err.code, ENOTSUP, "%s: %s, %s: err.code ENOTSUP", c->en,
               what, mode);
        has_substr(err.message, want, "%s: %s, %s: message", c->en, what,
                   mode);
        ok(img == NULL, "%s: %s, %s: no image", c->en, what, mode);
        if (img)
            qed_close(img, NULL);
    }
    ok(unchanged(path, &s), "%s: %s: the file is untouched", c->en, what);
}

static void test_unknown_features(const struct ctx *c)
{
    const char *path = support_path(c->dir, "unknown.qed");
    qed_error err = { 0 };

    support_create(path, MiB, 0, 0, NULL, QED_FORMAT_PROBE, &err);
    check_refused(c, path, 0x100, "Unsupported QED features: 0x100",
                  "feature 0x100");
    check_refused(c, path, 0x100 | QED_F_NEED_CHECK,
                  "Unsupported QED features: 0x100",
                  "feature 0x100 with NEED_CHECK (only unknown bits named)");
    check_refused(c, path, UINT64_C(0x8000000000000000),
                  "Unsupported QED features: 0x8000000000000000",
                  "feature bit 63");
    check_refused(c, path, 0x18, "Unsupported QED features: 0x18",
                  "features 0x8 and 0x10");
    support_write_le64(path, HDR_FEATURES, 0);
    {
        qed_image *img = NULL;
        ok(support_open(path, 0, c->engine, &img, &err) == 0,
           "%s: unknown: opens again once the bit is gone", c->en);
        if (img)
            qed_close(img, NULL);
    }
}

int main(void)
{
    char dir[256];

    if (support_mkdtemp("dirty", dir, sizeof(dir)) < 0) {
        ok(0, "make a temporary directory");
        return tap_done();
    }
    for (int i = 0; i < SUPPORT_ENGINE_COUNT; i++) {
        struct ctx c = { support_engines[i],
                         support_engine_name(support_engines[i]), dir };
        test_lifecycle(&c);
        test_backing_never_dirty(&c);
        test_dirty_read_only(&c);
        test_crash(&c);
        test_repair(&c);
        test_dirty_with_backing(&c);
        test_autoclear(&c);
        test_compat(&c);
        test_unknown_features(&c);
    }
    support_rmtree(dir);
    return tap_done();
}
