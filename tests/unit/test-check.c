/* SPDX-License-Identifier: MIT */
/* qed_check: the counts for every corruption class and every kind of leak
 * (on images crafted with pwrite), repair that leaves what every reader sees
 * unchanged (and qemu-img check satisfied), references that share a cluster
 * made independent, leaked clusters reclaimed by moving the last clusters
 * into the gaps, the repair on a read-write open of a dirty image, the
 * in-memory state after a repair of an open image, I/O errors, crash safety
 * of the repair at every step, and time and memory bounded by the file. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core.h"
#include "qed-image.h"
#include "io-sim.h"
#include "qed.h"
#include "support-image.h"
#include "../tap.h"

/* Small geometry: 4 KiB clusters, two-cluster tables: one L2 table maps
 * 4 MiB, so a 16 MiB image has four L2 tables. */
#define CS UINT64_C(4096)
#define TS 2u
#define ENTRIES (TS * CS / 8)
#define L2_SPAN (ENTRIES * CS)
#define VSIZE (4 * L2_SPAN)
#define NCLUSTERS (VSIZE / CS)
#define SEED 77

static char dir[256];
static const char *tests_dir = "tests";
static bool have_qemu;

/* ---- on-disk access ------------------------------------------------------ */

static uint64_t l1_offset(const char *path)
{
    return support_read_le64(path, HDR_L1_TABLE_OFFSET);
}

static uint64_t get_l1(const char *path, uint64_t i)
{
    return support_read_le64(path, l1_offset(path) + 8 * i);
}

static void set_l1(const char *path, uint64_t i, uint64_t v)
{
    support_write_le64(path, l1_offset(path) + 8 * i, v);
}

/* Host offset of the virtual cluster vc (its L2 entry). */
static uint64_t host_of(const char *path, uint64_t vc)
{
    uint64_t l2 = get_l1(path, vc / ENTRIES);
    return l2 ? support_read_le64(path, l2 + 8 * (vc % ENTRIES)) : 0;
}

static void set_host(const char *path, uint64_t vc, uint64_t v)
{
    support_write_le64(path, get_l1(path, vc / ENTRIES) + 8 * (vc % ENTRIES),
                       v);
}

static void truncate_file(const char *path, uint64_t size)
{
    if (truncate(path, (off_t)size) < 0)
        tap_diag("truncate %s: %s", path, strerror(errno));
}

/* ---- images -------------------------------------------------------------- */

static int open_image(const char *path, unsigned flags, qed_image **img,
                      qed_error *err)
{
    return support_open(path, flags, QED_ENGINE_AUTO, img, err);
}

/* Writes virtual cluster vc with its pattern (or buf when not NULL). */
static int write_vc(qed_image *img, uint64_t vc, const uint8_t *buf)
{
    uint8_t data[CS];
    qed_error err;

    if (!buf) {
        support_fill(data, CS, SEED, vc * CS);
        buf = data;
    }
    return qed_pwrite(img, buf, CS, vc * CS, &err);
}

/* A fresh image with the virtual clusters vcs written in that order, one
 * write each: tables and data are allocated in that order from the end. */
static bool make_image(const char *path, const uint64_t *vcs, size_t n)
{
    qed_image *img;
    qed_error err = { 0 };
    int ret;

    unlink(path);
    ret = support_create(path, VSIZE, CS, TS, NULL, QED_FORMAT_PROBE, &err);
    if (ret == 0)
        ret = open_image(path, QED_OPEN_RDWR, &img, &err);
    for (size_t i = 0; ret == 0 && i < n; i++)
        ret = write_vc(img, vcs[i], NULL);
    if (ret == 0 || img)
        ret |= qed_close(img, &err);
    if (ret != 0)
        tap_diag("making %s: %s", path, err.message);
    return ret == 0;
}

/* The standard image: four clusters under L2 table 0, two under table 1.
 * Layout: header, L1 (2), L2#0 (2), data 0-3, L2#1 (2), data. */
static const uint64_t std_vcs[] = { 0, 1, 2, 3, ENTRIES, ENTRIES + 1 };
#define STD_COUNT (sizeof(std_vcs) / sizeof(std_vcs[0]))

static bool make_std(const char *path)
{
    return make_image(path, std_vcs, STD_COUNT);
}

/* ---- what readers see ---------------------------------------------------- */

struct content {
    uint8_t *bytes;  /* the whole virtual disk */
    bool *readable;  /* per cluster: the read succeeded */
};

static void content_free(struct content *ct)
{
    free(ct->bytes);
    free(ct->readable);
}

static void content_read_image(qed_image *img, struct content *ct)
{
    for (uint64_t c = 0; c < NCLUSTERS; c++) {
        qed_error err;
        ct->readable[c] = img && qed_pread(img, ct->bytes + c * CS, CS,
                                           c * CS, &err) == 0;
        if (!ct->readable[c])
            memset(ct->bytes + c * CS, 0, CS);
    }
}

static void content_read(const char *path, const struct storage_driver *opener,
                         struct content *ct)
{
    struct qed_open_options o = { .size = sizeof(o) };
    qed_image *img = NULL;
    qed_error err;

    ct->bytes = malloc(VSIZE);
    ct->readable = calloc(NCLUSTERS, sizeof(bool));
    if (qedi_image_open(path, &o, opener, &img, &err) < 0)
        img = NULL;
    content_read_image(img, ct);
    if (img)
        qed_close(img, &err);
}

/* Every cluster readable before reads the same now; one that was not
 * (an entry pointing outside the file) reads as zeros, or, when unrepaired
 * is allowed, still fails. */
static bool content_same(const struct content *a, const struct content *b,
                         bool allow_unrepaired, uint64_t *bad)
{
    static const uint8_t zero[CS];

    for (uint64_t c = 0; c < NCLUSTERS; c++) {
        const uint8_t *x = a->bytes + c * CS, *y = b->bytes + c * CS;
        bool good;
        if (a->readable[c])
            good = b->readable[c] && memcmp(x, y, CS) == 0;
        else
            good = (b->readable[c] && memcmp(y, zero, CS) == 0) ||
                   (allow_unrepaired && !b->readable[c]);
        if (!good) {
            *bad = c;
            return false;
        }
    }
    return true;
}

/* ---- checking ------------------------------------------------------------ */

static int check_file(const char *path, unsigned repair,
                      struct qed_check_result *r, qed_error *err)
{
    unsigned flags = repair ? QED_OPEN_RDWR | QED_OPEN_NO_CHECK : 0;
    qed_image *img;
    qed_error cerr;
    int ret;

    qed_check_result_init(r);
    ret = open_image(path, flags, &img, err);
    if (ret < 0)
        return ret;
    ret = qed_check(img, repair, r, err);
    if (qed_close(img, &cerr) < 0 && ret == 0) {
        *err = cerr;
        ret = -cerr.code;
    }
    return ret;
}

static void qemu_clean(const char *path, const char *name)
{
    char out[4096];
    int st;

    if (!have_qemu) {
        ok(1, "%s: qemu-img check # SKIP qemu-img is not installed", name);
        return;
    }
    st = support_run(out, sizeof(out), "'%s/qemu-check-clean' '%s'",
                     tests_dir, path);
    if (!ok(st == 0, "%s: qemu-img check finds nothing wrong", name))
        tap_diag("%s", out);
}

static void show(const char *name, const struct qed_check_result *r)
{
    tap_diag("%s: corruptions %" PRIu64 " (fixed %" PRIu64 "), leaks %" PRIu64
             " (fixed %" PRIu64 "), check errors %" PRIu64 ", allocated %"
             PRIu64 ", end %" PRIu64, name, r->corruptions,
             r->corruptions_fixed, r->leaks, r->leaks_fixed, r->check_errors,
             r->allocated_clusters, r->image_end_offset);
}

/* The image at path holds `corruptions` corruptions and `leaks` leaks; a
 * full repair fixes `fixed` corruptions and leaves an image qed_check and
 * qemu-img check find clean, whose content every reader sees unchanged. */
static void repair_case(const char *name, const char *path,
                        uint64_t corruptions, uint64_t leaks, uint64_t fixed)
{
    struct qed_check_result r = { .size = sizeof(r) };
    struct content before, after;
    qed_error err = { 0 };
    uint64_t bad = 0;
    int ret;

    content_read(path, NULL, &before);
    ret = check_file(path, 0, &r, &err);
    if (!ok(ret == 0 && r.corruptions == corruptions && r.leaks == leaks &&
                r.check_errors == 0,
            "%s: check finds %" PRIu64 " corruptions and %" PRIu64 " leaks",
            name, corruptions, leaks))
        show(name, &r), tap_diag("%s", err.message);
    ret = check_file(path, QED_CHECK_REPAIR_ALL, &r, &err);
    if (!ok(ret == 0 && r.corruptions == corruptions && r.leaks == leaks &&
                r.corruptions_fixed == fixed && r.leaks_fixed >= leaks,
            "%s: repair reports what it found and fixed %" PRIu64
            " corruptions and the leaks", name, fixed))
        show(name, &r), tap_diag("%s", err.message);
    ret = check_file(path, 0, &r, &err);
    if (!ok(ret == 0 && r.corruptions == 0 && r.leaks == 0 &&
                r.check_errors == 0,
            "%s: qed_check finds the repaired image clean", name))
        show(name, &r);
    is_u64(support_file_size(path), r.image_end_offset,
           "%s: the file ends at its last cluster in use", name);
    content_read(path, NULL, &after);
    if (!ok(content_same(&before, &after, false, &bad),
            "%s: every reader sees the same content after the repair", name))
        tap_diag("first difference in virtual cluster %" PRIu64, bad);
    qemu_clean(path, name);
    content_free(&before);
    content_free(&after);
}

/* Writes new data to virtual cluster `written` and tells whether virtual
 * cluster `other` still reads what it read before. */
static bool independent(const char *path, uint64_t written, uint64_t other)
{
    uint8_t before[CS], now[CS], data[CS];
    qed_image *img;
    qed_error err;
    bool same;

    if (open_image(path, QED_OPEN_RDWR, &img, &err) < 0)
        return false;
    memset(data, 0xe5, sizeof(data));
    same = qed_pread(img, before, CS, other * CS, &err) == 0 &&
           qed_pwrite(img, data, CS, written * CS, &err) == 0 &&
           qed_pread(img, now, CS, other * CS, &err) == 0 &&
           memcmp(before, now, CS) == 0;
    if (same) {
        same = qed_pread(img, now, CS, written * CS, &err) == 0 &&
               memcmp(now, data, CS) == 0;
    }
    qed_close(img, &err);
    return same;
}

/* ---- API errors ---------------------------------------------------------- */

static void count_done(void *opaque, int ret, const qed_error *err)
{
    (void)ret;
    (void)err;
    (*(unsigned *)opaque)++;
}

static void test_api_errors(void)
{
    const char *path = support_path(dir, "api.qed");
    const char *raw = support_path(dir, "api.raw");
    uint8_t buf[4096] = { 0 };
    struct qed_check_result r = { .size = sizeof(r) };
    qed_image *img;
    qed_error err = { 0 };
    int ret;

    make_std(path);
    support_write_file(raw, buf, sizeof(buf));
    if (open_image(raw, 0, &img, &err) == 0) {
        ret = qed_check(img, 0, &r, &err);
        is_u64(ret, (uint64_t)-EINVAL, "api: a raw image is refused with "
               "EINVAL");
        has_substr(err.message, "not a QED image", "api: the error says it "
                   "is not a QED image");
        qed_close(img, &err);
    }
    if (open_image(path, 0, &img, &err) == 0) {
        ret = qed_check(img, QED_CHECK_REPAIR_LEAKS, &r, &err);
        is_u64(ret, (uint64_t)-EPERM, "api: repair of a read-only image is "
               "refused with EPERM");
        ret = qed_check(img, 0x10, &r, &err);
        is_u64(ret, (uint64_t)-EINVAL, "api: unknown repair bits are "
               "refused with EINVAL");
        qed_close(img, &err);
    }
    if (open_image(path, QED_OPEN_RDWR, &img, &err) == 0) {
        uint8_t rb[CS];
        struct iovec iov = { rb, sizeof(rb) };
        unsigned done = 0;

        ret = qed_aio_readv(img, &iov, 1, 0, count_done, &done);
        ok(ret == 0 && qed_check(img, 0, &r, &err) == -EBUSY,
           "api: a check with a request in flight is refused with EBUSY");
        support_run_until(qed_image_loop(img), &done, 1, 2000);
        ok(qed_check(img, 0, &r, &err) == 0 && r.corruptions == 0,
           "api: once it completed the check runs");
        qed_close(img, &err);
    }
}

/* ---- a clean image ------------------------------------------------------- */

static void test_clean(void)
{
    const char *path = support_path(dir, "clean.qed");
    struct qed_check_result r = { .size = sizeof(r) };
    qed_error err = { 0 };
    int ret;

    make_std(path);
    ret = check_file(path, 0, &r, &err);
    ok(ret == 0 && r.corruptions == 0 && r.leaks == 0 && r.check_errors == 0,
       "clean: no corruption, no leak");
    is_u64(r.allocated_clusters, STD_COUNT, "clean: allocated clusters");
    is_u64(r.fragmented_clusters, 0, "clean: no fragmentation");
    is_u64(r.total_clusters, NCLUSTERS, "clean: total clusters of the "
           "virtual disk");
    is_u64(r.image_end_offset, support_file_size(path),
           "clean: image end offset is the end of the file");
    ret = check_file(path, QED_CHECK_REPAIR_ALL, &r, &err);
    ok(ret == 0 && r.corruptions_fixed == 0 && r.leaks_fixed == 0,
       "clean: a repair has nothing to do");
    qemu_clean(path, "clean");
}

/* Fragmentation is counted like qemu-img: per table, an entry whose
 * cluster does not follow the previous entry's. */
static void test_fragmented(void)
{
    const char *path = support_path(dir, "frag.qed");
    static const uint64_t vcs[] = { 0, 1, 5, 4, 2 };
    struct qed_check_result r = { .size = sizeof(r) };
    qed_error err = { 0 };

    make_image(path, vcs, 5);
    check_file(path, 0, &r, &err);
    /* Written (so laid out) 0 1 5 4 2; in table order 0 1 2 4 5 only 1
     * follows its predecessor. */
    ok(r.allocated_clusters == 5 && r.fragmented_clusters == 3,
       "fragmented: allocated 5 and some fragmentation (%" PRIu64 ")",
       r.fragmented_clusters);
    if (have_qemu) {
        char out[2048];
        char want[64];
        support_run(out, sizeof(out), "qemu-img check --output=json '%s'",
                    path);
        snprintf(want, sizeof(want), "\"fragmented-clusters\": %" PRIu64,
                 r.fragmented_clusters);
        has_substr(out, want, "fragmented: qemu-img counts the same");
    }
}

/* ---- corruptions ------------------------------------------------------------ */

static void test_l2_misaligned(void)
{
    const char *path = support_path(dir, "l2-misaligned.qed");
    make_std(path);
    set_host(path, 2, host_of(path, 2) + 512);
    /* The cluster it pointed at is leaked as well. */
    repair_case("L2 entry misaligned", path, 1, 1, 1);
    is_u64(host_of(path, 2), 0, "L2 entry misaligned: the entry is cleared");
}

static void test_l2_into_l1(void)
{
    const char *path = support_path(dir, "l2-l1.qed");
    make_std(path);
    set_host(path, 1, l1_offset(path) + CS);
    repair_case("L2 entry into the L1 table", path, 1, 1, 1);
}

static void test_l2_past_eof(void)
{
    const char *path = support_path(dir, "l2-eof.qed");
    make_std(path);
    set_host(path, 3, support_file_size(path) + 10 * CS);
    repair_case("L2 entry past the end of the file", path, 1, 1, 1);
    is_u64(host_of(path, 3), 0, "L2 entry past the end: cleared");
}

static void test_l1_misaligned(void)
{
    const char *path = support_path(dir, "l1-misaligned.qed");
    make_std(path);
    set_l1(path, 1, get_l1(path, 1) + 8);
    /* Table 1 and its two data clusters are leaked. */
    repair_case("L1 entry misaligned", path, 1, 4, 1);
}

static void test_l1_past_eof(void)
{
    const char *path = support_path(dir, "l1-eof.qed");
    make_std(path);
    set_l1(path, 2, support_file_size(path) + 100 * CS);
    repair_case("L1 entry past the end of the file", path, 1, 0, 1);
}

static void test_l1_into_l1(void)
{
    const char *path = support_path(dir, "l1-l1.qed");
    make_std(path);
    set_l1(path, 3, l1_offset(path));
    repair_case("L1 entry pointing at the L1 table", path, 1, 0, 1);
}

static void test_table_not_fitting(void)
{
    const char *path = support_path(dir, "l1-fit.qed");
    make_std(path);
    /* Its first cluster is the last of the file, its second past it. */
    set_l1(path, 2, support_file_size(path) - CS);
    repair_case("L2 table that does not fit in the file", path, 1, 0, 1);
}

/* An image with two header clusters (L1 at 8 KiB), made by hand, so that
 * an aligned offset can point inside the header. */
static bool make_header2(const char *path)
{
    uint8_t h[2 * CS + TS * CS];
    qed_image *img;
    qed_error err = { 0 };
    int ret;

    memset(h, 0, sizeof(h));
    h[0] = 'Q', h[1] = 'E', h[2] = 'D', h[3] = 0;
    h[HDR_CLUSTER_SIZE + 1] = CS >> 8;  /* 4096 little-endian */
    h[HDR_TABLE_SIZE] = TS;
    h[12] = 2;                          /* header_size */
    h[HDR_L1_TABLE_OFFSET + 1] = (2 * CS) >> 8;
    for (int i = 0; i < 8; i++)
        h[HDR_IMAGE_SIZE + i] = (uint8_t)(VSIZE >> (8 * i));
    unlink(path);
    if (support_write_file(path, h, sizeof(h)) < 0)
        return false;
    ret = open_image(path, QED_OPEN_RDWR, &img, &err);
    for (uint64_t vc = 0; ret == 0 && vc < 3; vc++)
        ret = write_vc(img, vc, NULL);
    if (img)
        ret |= qed_close(img, &err);
    if (ret)
        tap_diag("header2: %s", err.message);
    return ret == 0;
}

static void test_into_header(void)
{
    const char *path = support_path(dir, "header2.qed");

    if (!ok(make_header2(path), "into the header: an image with two header "
            "clusters"))
        return;
    set_host(path, 1, CS);  /* the second header cluster */
    set_l1(path, 2, CS);
    /* vc 1's old cluster is leaked. */
    repair_case("entries pointing inside the header", path, 2, 1, 2);
}

/* Two L2 entries name one data cluster: the second gets a copy. */
static void test_data_twice(void)
{
    const char *path = support_path(dir, "data-twice.qed");
    uint64_t h1;

    make_std(path);
    h1 = host_of(path, 1);
    set_host(path, 3, h1);
    repair_case("two L2 entries, one data cluster", path, 1, 1, 1);
    ok(host_of(path, 1) == h1 && host_of(path, 3) != h1 &&
           host_of(path, 3) != 0,
       "two L2 entries, one data cluster: the first keeps it, the second "
       "has its own");
    ok(independent(path, 1, 3), "two L2 entries, one data cluster: writing "
       "the first leaves the second alone");
    ok(independent(path, 3, 1), "two L2 entries, one data cluster: writing "
       "the second leaves the first alone");
    qemu_clean(path, "two L2 entries, one data cluster, after writes");
}

/* Two L1 entries name one L2 table: the second gets a copied table, and
 * its entries copies of the data. */
static void test_table_twice(void)
{
    const char *path = support_path(dir, "table-twice.qed");
    uint64_t t0;

    make_std(path);
    t0 = get_l1(path, 0);
    set_l1(path, 2, t0);
    /* The table, and each of its four data entries a second time. */
    repair_case("two L1 entries, one L2 table", path, 5, 0, 5);
    ok(get_l1(path, 0) == t0 && get_l1(path, 2) != t0 &&
           get_l1(path, 2) != 0,
       "two L1 entries, one L2 table: the second has a table of its own");
    ok(independent(path, 0, 2 * ENTRIES), "two L1 entries, one L2 table: "
       "writing through the first leaves the second alone");
    ok(independent(path, 2 * ENTRIES + 1, 1), "two L1 entries, one L2 "
       "table: writing through the second leaves the first alone");
    ok(independent(path, 2 * ENTRIES + 7, 7), "two L1 entries, one L2 "
       "table: allocating through the second leaves the first alone");
    qemu_clean(path, "two L1 entries, one L2 table, after writes");
}

/* A data entry names an L2 table that comes later in L1. */
static void test_data_into_later_table(void)
{
    const char *path = support_path(dir, "data-table.qed");

    make_std(path);
    set_host(path, 3, get_l1(path, 1));
    /* vc 3's own cluster is leaked; the table's second cluster too once
     * the table moves, and the repair reclaims it. */
    repair_case("data entry into a later L2 table", path, 1, 1, 1);
    ok(independent(path, 3, ENTRIES), "data entry into a later L2 table: "
       "writing the data leaves the table's clusters alone");
    ok(independent(path, ENTRIES + 5, 3), "data entry into a later L2 "
       "table: allocating through the table leaves the data alone");
    ok(independent(path, ENTRIES, 3), "data entry into a later L2 table: "
       "writing through the table leaves the data alone");
    qemu_clean(path, "data entry into a later L2 table, after writes");
}

/* A data entry names an L2 table that comes earlier in L1. */
static void test_data_into_earlier_table(void)
{
    const char *path = support_path(dir, "data-table0.qed");

    make_std(path);
    set_host(path, ENTRIES + 1, get_l1(path, 0));
    repair_case("data entry into an earlier L2 table", path, 1, 1, 1);
    ok(independent(path, ENTRIES + 1, 0), "data entry into an earlier L2 "
       "table: writing the data leaves the table alone");
    ok(independent(path, 9, ENTRIES + 1), "data entry into an earlier L2 "
       "table: allocating through the table leaves the data alone");
    qemu_clean(path, "data entry into an earlier L2 table, after writes");
}

/* An L1 entry names two data clusters; their bytes, read as a table, point
 * at a third data cluster. */
static void test_table_over_data(void)
{
    const char *path = support_path(dir, "table-data.qed");
    static const uint64_t first[] = { 5 };
    uint8_t two[2 * CS] = { 0 };
    qed_image *img;
    qed_error err;
    uint64_t h5, h0;
    bool made;

    made = make_image(path, first, 1);
    h5 = host_of(path, 5);
    for (int i = 0; i < 8; i++)
        two[i] = (uint8_t)(h5 >> (8 * i));
    made = made && open_image(path, QED_OPEN_RDWR, &img, &err) == 0;
    if (made) {
        made = qed_pwrite(img, two, sizeof(two), 0, &err) == 0;
        made &= qed_close(img, &err) == 0;
    }
    h0 = host_of(path, 0);
    if (!ok(made && host_of(path, 1) == h0 + CS, "L2 table over data: two "
            "consecutive data clusters written"))
        return;
    set_l1(path, 1, h0);
    /* The table, and its entry naming vc 5's cluster. */
    repair_case("L2 table overlapping data clusters", path, 2, 0, 2);
    ok(get_l1(path, 1) != h0 && host_of(path, 0) == h0,
       "L2 table overlapping data: the table moved, the data stayed");
    ok(independent(path, 5, ENTRIES), "L2 table overlapping data: writing "
       "the cluster both named leaves the table's view alone");
    ok(independent(path, ENTRIES, 0), "L2 table overlapping data: writing "
       "through the table leaves the data alone");
    ok(independent(path, ENTRIES + 3, 1), "L2 table overlapping data: "
       "allocating through the table leaves the data alone");
    qemu_clean(path, "L2 table overlapping data, after writes");
}

/* ---- leaks ------------------------------------------------------------------ */

static void test_trailing_leaks(void)
{
    const char *path = support_path(dir, "trailing.qed");
    uint64_t size;

    make_std(path);
    size = support_file_size(path);
    truncate_file(path, size + 3 * CS);
    repair_case("trailing leaks", path, 0, 3, 0);
    is_u64(support_file_size(path), size, "trailing leaks: the file is "
           "truncated back");
}

static void test_partial_cluster_leak(void)
{
    const char *path = support_path(dir, "partial.qed");
    uint64_t size;

    make_std(path);
    size = support_file_size(path);
    truncate_file(path, size + 1000);
    repair_case("a partial cluster at the end", path, 0, 1, 0);
    is_u64(support_file_size(path), size, "a partial cluster at the end: "
           "cut off");
}

/* The first data cluster was freed: the last cluster of the file moves
 * into the gap and the file shrinks by one cluster. */
static void test_interior_leak(void)
{
    const char *path = support_path(dir, "interior.qed");
    uint64_t size, gap, last_vc = ENTRIES + 1;

    make_std(path);
    size = support_file_size(path);
    gap = host_of(path, 0);
    ok(host_of(path, last_vc) == size - CS, "interior leak: the last "
       "written cluster is the last of the file");
    set_host(path, 0, 0);
    repair_case("an interior leak", path, 0, 1, 0);
    is_u64(support_file_size(path), size - CS, "interior leak: the file "
           "shrank by one cluster");
    is_u64(host_of(path, last_vc), gap, "interior leak: the last cluster "
           "moved into the gap");
}

static void test_several_leaks(void)
{
    const char *path = support_path(dir, "several.qed");
    static const uint64_t vcs[] = { 0, 1, 2, 3, 4, 5, ENTRIES, ENTRIES + 1,
                                    2 * ENTRIES, 2 * ENTRIES + 1, 6, 7 };
    uint64_t size;

    make_image(path, vcs, 12);
    size = support_file_size(path);
    set_host(path, 0, 0);
    set_host(path, 2, 0);
    set_host(path, ENTRIES, 0);
    set_host(path, 2 * ENTRIES + 1, 0);
    truncate_file(path, size + 2 * CS);
    repair_case("several leaks, interior and trailing", path, 0, 6, 0);
    is_u64(support_file_size(path), size - 4 * CS, "several leaks: the file "
           "shrank by all of them");
}

/* The last object in the file is an L2 table and the only gap is one
 * cluster: the table is parked at the end, a data cluster makes room, and
 * the table moves into the two-cluster gap. */
static void test_table_into_gap(void)
{
    const char *path = support_path(dir, "table-gap.qed");
    uint64_t size;

    make_std(path);
    size = support_file_size(path);
    set_host(path, 0, 0);
    set_host(path, ENTRIES, 0);
    set_host(path, ENTRIES + 1, 0);
    repair_case("an L2 table moved into a gap", path, 0, 3, 0);
    is_u64(support_file_size(path), size - 3 * CS, "an L2 table moved into a "
           "gap: the file shrank by three clusters");
    ok(get_l1(path, 1) < size - 3 * CS, "an L2 table moved into a gap: the "
       "table lies inside the file");
}

/* Only leaks are repaired: corruptions stay, and clusters referenced twice
 * are not moved (each reference still reads the same). */
static void test_leaks_only(void)
{
    const char *path = support_path(dir, "leaks-only.qed");
    struct qed_check_result r = { .size = sizeof(r) };
    struct content before, after;
    qed_error err = { 0 };
    uint64_t bad = 0, h5;
    static const uint64_t vcs[] = { 0, 1, 2, 3, 4, 5 };
    int ret;

    make_image(path, vcs, 6);
    h5 = host_of(path, 1);
    set_host(path, 4, h5);    /* vc 4's cluster leaks; vc 1's is shared */
    set_host(path, 0, 0);     /* a gap at the start */
    content_read(path, NULL, &before);
    ret = check_file(path, QED_CHECK_REPAIR_LEAKS, &r, &err);
    ok(ret == 0 && r.corruptions == 1 && r.leaks == 2 && r.leaks_fixed >= 1 &&
           r.corruptions_fixed == 0,
       "leaks only: leaks are fixed, corruptions are not");
    ret = check_file(path, 0, &r, &err);
    ok(ret == 0 && r.corruptions == 1 && r.leaks == 0,
       "leaks only: afterwards one corruption and no leak remain");
    if (r.leaks)
        show("leaks only", &r);
    is_u64(host_of(path, 4), h5, "leaks only: the shared cluster stays");
    content_read(path, NULL, &after);
    ok(content_same(&before, &after, false, &bad), "leaks only: the content "
       "is unchanged");
    content_free(&before);
    content_free(&after);
    repair_case("leaks only, then all", path, 1, 0, 1);
}

/* ---- random damage ------------------------------------------------------------- */

static void crash_case(const char *name, bool (*make)(const char *path),
                       bool on_open, unsigned seeds);

static bool copy_random(const char *path)
{
    return support_copy_file(support_path(dir, "random-crash.qed"), path) == 0;
}

/* Random images with random damage of every kind: the repair must leave a
 * clean image whose content every reader sees unchanged. */
static void test_random(void)
{
    char path[512];
    uint64_t rng = 4242, bad = 0;
    unsigned failures = 0, qemu_failures = 0, runs = 40, crash_every = 10;

    snprintf(path, sizeof(path), "%s", support_path(dir, "random.qed"));

    for (unsigned run = 0; run < runs; run++) {
        uint64_t vcs[64], nvcs = 8 + support_rand_below(&rng, 56);
        struct qed_check_result r = { .size = sizeof(r) };
        struct content before, after;
        qed_error err = { 0 };
        uint64_t size, damage = 1 + support_rand_below(&rng, 10);
        char out[2048];
        int ret;

        for (uint64_t i = 0; i < nvcs; i++)
            vcs[i] = support_rand_below(&rng, NCLUSTERS);
        if (!make_image(path, vcs, nvcs))
            break;
        size = support_file_size(path);
        for (uint64_t d = 0; d < damage; d++) {
            uint64_t vc = vcs[support_rand_below(&rng, nvcs)];
            uint64_t other = vcs[support_rand_below(&rng, nvcs)];
            uint64_t l1i = support_rand_below(&rng, VSIZE / L2_SPAN);
            uint64_t cl = support_rand_below(&rng, size / CS);
            switch (support_rand_below(&rng, 9)) {
            case 0: set_host(path, vc, 0); break;
            case 1: set_host(path, vc, host_of(path, other)); break;
            case 2: set_l1(path, l1i, get_l1(path, vc / ENTRIES)); break;
            case 3: set_host(path, vc, get_l1(path, other / ENTRIES) +
                                       CS * support_rand_below(&rng, TS));
                    break;
            case 4: if (cl + TS <= size / CS && cl > 0)
                        set_l1(path, l1i, cl * CS);
                    break;
            case 5: set_host(path, vc, host_of(path, vc) + 8); break;
            case 6: set_host(path, vc, size + CS * support_rand_below(&rng, 4));
                    break;
            case 7: truncate_file(path, support_file_size(path) +
                                            CS * (1 + support_rand_below(&rng, 3)));
                    break;
            default: set_host(path, vc, cl * CS); break;
            }
        }
        content_read(path, NULL, &before);
        if (run % crash_every == 0) {
            char name[64];
            snprintf(name, sizeof(name), "random damage %u", run);
            support_copy_file(path, support_path(dir, "random-crash.qed"));
            crash_case(name, copy_random, run % (2 * crash_every) != 0, 1);
        }
        ret = check_file(path, QED_CHECK_REPAIR_ALL, &r, &err);
        if (ret == 0)
            ret = check_file(path, 0, &r, &err);
        content_read(path, NULL, &after);
        if (ret != 0 || r.corruptions || r.leaks || r.check_errors ||
            support_file_size(path) != r.image_end_offset ||
            !content_same(&before, &after, false, &bad)) {
            if (failures++ == 0) {
                tap_diag("random run %u: ret %d (%s), vc %" PRIu64, run, ret,
                         err.message, bad);
                show("random", &r);
            }
        }
        if (have_qemu &&
            support_run(out, sizeof(out), "'%s/qemu-check-clean' '%s'",
                        tests_dir, path) != 0 && qemu_failures++ == 0)
            tap_diag("random run %u: %s", run, out);
        content_free(&before);
        content_free(&after);
    }
    is_u64(failures, 0, "random damage: %u repairs all end clean with the "
           "same content", runs);
    is_u64(qemu_failures, 0, "random damage: qemu-img check agrees each time");
}

/* ---- dirty images ------------------------------------------------------------ */

static void test_dirty_open(void)
{
    const char *path = support_path(dir, "dirty.qed");
    struct qed_check_result r = { .size = sizeof(r) };
    struct content before, after;
    qed_image *img;
    qed_error err = { 0 };
    uint64_t bad = 0, size;

    make_std(path);
    size = support_file_size(path);
    set_host(path, 3, host_of(path, 1));   /* a double reference */
    set_host(path, 0, 0);                  /* an interior leak */
    set_l1(path, 3, size + 50 * CS);       /* past the end */
    truncate_file(path, size + 5 * CS);    /* trailing leaks */
    support_write_le64(path, HDR_FEATURES, QED_F_NEED_CHECK);
    content_read(path, NULL, &before);
    ok(open_image(path, QED_OPEN_RDWR, &img, &err) == 0,
       "dirty open: a read-write open of the dirty image");
    if (img) {
        ok(!(support_read_le64(path, HDR_FEATURES) & QED_F_NEED_CHECK),
           "dirty open: NEED_CHECK is clear after the open");
        ok(qed_check(img, 0, &r, &err) == 0 && r.corruptions == 0 &&
               r.leaks == 0,
           "dirty open: the open image has neither corruptions nor leaks");
        qed_close(img, &err);
    }
    ok(check_file(path, 0, &r, &err) == 0 && r.corruptions == 0 &&
           r.leaks == 0,
       "dirty open: clean after close");
    content_read(path, NULL, &after);
    ok(content_same(&before, &after, false, &bad), "dirty open: every reader "
       "sees the same content");
    qemu_clean(path, "dirty open");
    content_free(&before);
    content_free(&after);
}

/* A dirty image examined as it is (NO_CHECK) and repaired through
 * qed_check is marked clean. */
static void test_dirty_check(void)
{
    const char *path = support_path(dir, "dirty2.qed");
    struct qed_check_result r = { .size = sizeof(r) };
    qed_image *img;
    qed_error err = { 0 };

    make_std(path);
    set_host(path, 2, 0);
    support_write_le64(path, HDR_FEATURES, QED_F_NEED_CHECK);
    if (!ok(open_image(path, QED_OPEN_RDWR | QED_OPEN_NO_CHECK, &img,
                       &err) == 0, "dirty check: open without the check"))
        return;
    ok(qed_check(img, 0, &r, &err) == 0 && r.leaks == 1,
       "dirty check: the leak is still there (not repaired on open)");
    ok(support_read_le64(path, HDR_FEATURES) & QED_F_NEED_CHECK,
       "dirty check: still dirty on disk");
    ok(qed_check(img, QED_CHECK_REPAIR_ALL, &r, &err) == 0 &&
           r.leaks_fixed == 1,
       "dirty check: repaired");
    ok(!(support_read_le64(path, HDR_FEATURES) & QED_F_NEED_CHECK),
       "dirty check: the repair marked it clean");
    qed_close(img, &err);
}

/* ---- an open image after a repair ------------------------------------------------ */

static void test_live_state(void)
{
    const char *path = support_path(dir, "live.qed");
    uint8_t a[CS], b[CS], data[CS];
    struct qed_check_result r = { .size = sizeof(r) };
    qed_image *img;
    qed_error err = { 0 };
    bool good;

    make_std(path);
    if (!ok(open_image(path, QED_OPEN_RDWR | QED_OPEN_NO_CHECK, &img,
                       &err) == 0, "live: open read-write"))
        return;
    /* Writes extend the file ahead: that space is not a leak. */
    good = write_vc(img, 9, NULL) == 0 && write_vc(img, 2 * ENTRIES, NULL) == 0;
    ok(good && qed_check(img, 0, &r, &err) == 0 && r.leaks == 0 &&
           r.corruptions == 0,
       "live: space extended ahead by writes is not counted as leaked");
    /* Behind the library's back (its tables are cached): a double
     * reference and a gap. */
    good = qed_pread(img, a, CS, 0, &err) == 0 &&
           qed_pread(img, a, CS, 3 * CS, &err) == 0 && qed_flush(img, &err) == 0;
    set_host(path, 3, host_of(path, 1));
    set_host(path, 0, 0);
    ok(good && qed_check(img, QED_CHECK_REPAIR_ALL, &r, &err) == 0 &&
           r.corruptions == 1 && r.corruptions_fixed == 1 && r.leaks == 2,
       "live: repair of the open image");
    if (r.corruptions != 1)
        show("live", &r);
    ok(qed_pread(img, a, CS, 3 * CS, &err) == 0 &&
           qed_pread(img, b, CS, 1 * CS, &err) == 0 && memcmp(a, b, CS) == 0,
       "live: reads see the repaired tables, not cached ones");
    ok(qed_pread(img, a, CS, 0, &err) == 0 &&
           support_first_nonzero(a, CS) == CS,
       "live: the freed cluster reads as zeros");
    memset(data, 0x3c, sizeof(data));
    ok(qed_pwrite(img, data, CS, 1 * CS, &err) == 0 &&
           qed_pread(img, a, CS, 3 * CS, &err) == 0 && memcmp(a, b, CS) == 0,
       "live: writing one reference leaves the other alone");
    good = true;
    for (uint64_t vc = 20; vc < 40 && good; vc++)
        good = write_vc(img, vc, NULL) == 0 && write_vc(img, 3 * ENTRIES + vc,
                                                        NULL) == 0;
    ok(good, "live: new allocations after the repair");
    ok(qed_check(img, 0, &r, &err) == 0 && r.corruptions == 0 &&
           r.leaks == 0,
       "live: still clean after them");
    support_fill(data, CS, SEED, 25 * CS);
    ok(qed_pread(img, a, CS, 25 * CS, &err) == 0 && memcmp(a, data, CS) == 0,
       "live: new data reads back");
    ok(qed_close(img, &err) == 0, "live: close");
    ok(check_file(path, 0, &r, &err) == 0 && r.corruptions == 0 &&
           r.leaks == 0,
       "live: clean after close");
    qemu_clean(path, "live");
}

/* ---- big virtual disks --------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_big_virtual(void)
{
    const char *path = support_path(dir, "big.qed");
    const uint64_t size = UINT64_C(64) << 40;
    uint8_t data[65536];
    struct qed_check_result r = { .size = sizeof(r) };
    qed_image *img;
    qed_error err = { 0 };
    double t0, t;
    int ret;

    unlink(path);
    ret = support_create(path, size, 0, 0, NULL, QED_FORMAT_PROBE, &err);
    if (!ok(ret == 0, "64 TiB: create (%s)", err.message))
        return;
    memset(data, 0x42, sizeof(data));
    ret = open_image(path, QED_OPEN_RDWR, &img, &err);
    if (ret == 0) {
        ret |= qed_pwrite(img, data, sizeof(data), 0, &err);
        ret |= qed_pwrite(img, data, sizeof(data), size / 2, &err);
        ret |= qed_pwrite(img, data, sizeof(data), size - sizeof(data), &err);
        ret |= qed_close(img, &err);
    }
    ok(ret == 0, "64 TiB: three clusters written");
    t0 = now_s();
    ret = check_file(path, 0, &r, &err);
    t = now_s() - t0;
    ok(ret == 0 && r.corruptions == 0 && r.leaks == 0 &&
           r.allocated_clusters == 3,
       "64 TiB: clean, three clusters allocated");
    is_u64(r.total_clusters, size / 65536, "64 TiB: total clusters");
    ok(t < 0.5, "64 TiB: the check takes %.3f s (well under a second)", t);
    t0 = now_s();
    ret = check_file(path, QED_CHECK_REPAIR_ALL, &r, &err);
    t = now_s() - t0;
    ok(ret == 0 && t < 0.5, "64 TiB: a repair pass too (%.3f s)", t);
    truncate_file(path, support_file_size(path) + 65536);
    t0 = now_s();
    ret = check_file(path, QED_CHECK_REPAIR_ALL, &r, &err);
    t = now_s() - t0;
    ok(ret == 0 && r.leaks == 1 && r.leaks_fixed == 1 && t < 0.5,
       "64 TiB: a leak is found and fixed fast (%.3f s)", t);
    unlink(path);
}

/* Every L1 entry names one table whose every entry names one cluster: the
 * check stays fast (the table is read once), and a repair that would need
 * hundreds of GiB of copies refuses before it changes anything. */
static void test_hostile_sharing(void)
{
    const char *path = support_path(dir, "hostile.qed");
    const uint64_t entries = 16 * 4096 / 8;
    uint8_t *table = malloc(16 * 4096), data[4096];
    struct qed_check_result r = { .size = sizeof(r) };
    struct timespec t0, t1;
    qed_image *img;
    qed_error err = { 0 };
    uint64_t l1, t, d, size;
    double secs;
    bool same;
    int ret;

    unlink(path);
    ret = support_create(path, entries * entries * 4096, 4096, 16, NULL,
                         QED_FORMAT_PROBE, &err);
    if (ret == 0)
        ret = open_image(path, QED_OPEN_RDWR, &img, &err);
    if (ret == 0) {
        memset(data, 0x17, sizeof(data));
        ret = qed_pwrite(img, data, sizeof(data), 0, &err);
        ret |= qed_close(img, &err);
    }
    if (!ok(ret == 0 && table, "hostile: an image with 16-cluster tables")) {
        free(table);
        return;
    }
    l1 = l1_offset(path);
    t = support_read_le64(path, l1);
    d = support_read_le64(path, t);
    for (uint64_t i = 0; i < entries; i++)
        support_write_le64(path, l1 + 8 * i, t);
    for (uint64_t i = 0; i < entries; i++)
        for (int b = 0; b < 8; b++)
            table[8 * i + b] = (uint8_t)(d >> (8 * b));
    support_pwrite(path, table, 16 * 4096, t);
    size = support_file_size(path);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ret = check_file(path, 0, &r, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    ok(ret == 0 && r.corruptions == (entries - 1) * (entries + 1) + entries - 1,
       "hostile: every second reference is counted (%" PRIu64 ")",
       r.corruptions);
    ok(secs < 1.0, "hostile: the check takes %.3f s", secs);
    support_copy_file(path, support_path(dir, "hostile.copy"));
    ret = check_file(path, QED_CHECK_REPAIR_ALL, &r, &err);
    is_u64(ret, (uint64_t)-EFBIG, "hostile: the repair refuses with EFBIG");
    has_substr(err.message, "refusing", "hostile: and says why");
    same = support_files_equal(path, support_path(dir, "hostile.copy"));
    ok(same, "hostile: the file is unchanged");
    ret = check_file(path, QED_CHECK_REPAIR_LEAKS, &r, &err);
    ok(ret == 0 && r.leaks == 0 && support_file_size(path) == size,
       "hostile: a leak repair runs and finds nothing to reclaim");
    free(table);
}

/* ---- I/O errors and crashes (simulated files) ----------------------------------- */

static void test_read_error(void)
{
    const char *path = support_path(dir, "ioerr.qed");
    struct memfs *fs = memfs_new();
    struct storage_driver opener = memfs_opener(fs);
    struct qed_open_options o = { .size = sizeof(o) };
    struct qed_check_result r = { .size = sizeof(r) };
    qed_image *img;
    qed_error err = { 0 };
    int ret;

    make_std(path);
    set_host(path, 0, 0); /* a leak that must not be counted */
    if (!ok(memfs_load(fs, "io.qed", path) == 0 &&
                qedi_image_open("io.qed", &o, &opener, &img, &err) == 0,
            "I/O error: open from memory")) {
        memfs_free(fs);
        return;
    }
    memfs_fail_nth(fs, 1, EIO);
    ret = qed_check(img, 0, &r, &err);
    ok(ret == 0 && r.check_errors == 1, "I/O error: a table that cannot be "
       "read counts as a check error");
    is_u64(r.leaks, 0, "I/O error: leaks are not counted when a table could "
           "not be read");
    has_substr(err.message, "L2 table", "I/O error: the message names the "
               "table");
    ret = qed_check(img, 0, &r, &err);
    ok(ret == 0 && r.check_errors == 0 && r.leaks == 1,
       "I/O error: the next check succeeds");
    qed_close(img, &err);
    memfs_free(fs);
}

/* Everything at once: a double reference of each kind, invalid entries,
 * interior and trailing leaks, a table that has to move into a gap. */
static bool make_messy(const char *path)
{
    static const uint64_t vcs[] = { 0, 1, 2, 3, ENTRIES, ENTRIES + 1,
                                    2 * ENTRIES, 4, 5, 6 };
    uint64_t size;

    if (!make_image(path, vcs, 10))
        return false;
    size = support_file_size(path);
    set_host(path, 3, host_of(path, 1));       /* data twice */
    set_l1(path, 3, get_l1(path, 1));          /* table twice */
    set_host(path, 4, get_l1(path, 2));        /* data into a table */
    set_host(path, 0, 0);                      /* interior leak */
    /* Past the end: where the first copy appended will go. */
    set_host(path, 5, size + 2 * CS);
    set_host(path, 6, host_of(path, 6) + 100); /* misaligned */
    truncate_file(path, size + 2 * CS);        /* trailing */
    return true;
}

/* The image of test_table_into_gap: a table has to be parked at the end,
 * a data cluster moved out of its way, and the table moved back. */
static bool make_table_gap(const char *path)
{
    if (!make_std(path))
        return false;
    set_host(path, 0, 0);
    set_host(path, ENTRIES, 0);
    set_host(path, ENTRIES + 1, 0);
    return true;
}

static uint64_t memfs_features(struct memfs *fs, const char *name)
{
    uint8_t f[8] = { 0 };
    uint64_t v = 0;

    memfs_pread(fs, name, f, sizeof(f), HDR_FEATURES);
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | f[i];
    return v;
}

static bool memfs_same_as(struct memfs *fs, const char *name,
                          const uint8_t *bytes, size_t len)
{
    uint8_t *now = NULL;
    size_t n = 0;
    bool same = memfs_get(fs, name, &now, &n) == 0 && n == len &&
                memcmp(now, bytes, len) == 0;
    free(now);
    return same;
}

/* The repair is cut by a power loss at each of its I/O operations in turn,
 * with seeds choosing what of the unflushed writes survives.  The repair is
 * qed_check's, or (on_open) the one a read-write open of the dirty image
 * runs.  Afterwards every reader sees what it saw; the image is unchanged or
 * marked dirty, so that a read-write open repairs it to a clean image. */
static void crash_case(const char *name, bool (*make)(const char *path),
                       bool on_open, unsigned seeds)
{
    char path[512];
    struct qed_open_options nocheck = { .size = sizeof(nocheck),
                                        .flags = QED_OPEN_RDWR |
                                                 QED_OPEN_NO_CHECK };
    struct qed_open_options rw = { .size = sizeof(rw), .flags = QED_OPEN_RDWR };
    struct content before;
    uint8_t *original = NULL;
    size_t original_len = 0;
    uint64_t cut = 0, crashes = 0, bad_cut = 0, bad = 0, runs = 0;
    uint64_t marked_cut = 0, repaired_cut = 0;
    bool all_same = true, all_marked = true, all_repaired = true;
    bool finished = false;

    snprintf(path, sizeof(path), "%s", support_path(dir, "crash.qed"));
    if (!ok(make(path), "crash, %s: the image", name))
        return;
    if (on_open)
        support_write_le64(path, HDR_FEATURES, QED_F_NEED_CHECK);
    content_read(path, NULL, &before);
    support_read_file(path, &original, &original_len);
    for (runs = 0; runs < 5000 && !finished; runs++) {
        struct memfs *fs = memfs_new();
        struct storage_driver opener = memfs_opener(fs);
        struct qed_check_result r = { .size = sizeof(r) };
        struct content after;
        qed_image *img = NULL;
        qed_error err = { 0 };
        bool dirty, same, clean;
        int ret;

        if (runs % seeds == 0)
            cut++;
        memfs_load(fs, "m.qed", path);
        memfs_set_volatile(fs, true);
        if (on_open) {
            memfs_crash_at(fs, cut, runs * 7919 + 1);
            ret = qedi_image_open("m.qed", &rw, &opener, &img, &err);
        } else {
            ret = qedi_image_open("m.qed", &nocheck, &opener, &img, &err);
            memfs_crash_at(fs, cut, runs * 7919 + 1);
            if (ret == 0)
                ret = qed_check(img, QED_CHECK_REPAIR_ALL, &r, &err);
        }
        if (img)
            qed_close(img, &err);
        memfs_crash_at(fs, 0, 0);
        if (!memfs_crashed(fs)) {
            finished = true;
            memfs_set_volatile(fs, false);
        } else {
            crashes++;
            memfs_revive(fs);
        }
        /* What survived: every reader sees what it saw. */
        content_read("m.qed", &opener, &after);
        if (all_same && !content_same(&before, &after, true, &bad)) {
            all_same = false;
            bad_cut = cut;
        }
        content_free(&after);
        /* Unchanged, or dirty, or (the crash came after the repair) clean;
         * a read-write open of a dirty image repairs it all. */
        dirty = memfs_features(fs, "m.qed") & QED_F_NEED_CHECK;
        same = memfs_same_as(fs, "m.qed", original, original_len);
        img = NULL;
        ret = qedi_image_open("m.qed", &rw, &opener, &img, &err);
        if (ret == 0)
            ret = qed_check(img, 0, &r, &err);
        clean = ret == 0 && !r.corruptions && !r.leaks && !r.check_errors;
        if (all_marked && !dirty && !same && !clean) {
            all_marked = false;
            marked_cut = cut;
        }
        if (ret == 0 && !clean && dirty)
            ret = -EUCLEAN; /* the open should have repaired it */
        if (ret == 0 && !clean)
            ret = qed_check(img, QED_CHECK_REPAIR_ALL, &r, &err);
        if (ret == 0)
            ret = qed_check(img, 0, &r, &err);
        if (img)
            qed_close(img, &err);
        content_read("m.qed", &opener, &after);
        if (all_repaired &&
            (ret != 0 || r.corruptions || r.leaks || r.check_errors ||
             !content_same(&before, &after, false, &bad))) {
            all_repaired = false;
            repaired_cut = cut;
            tap_diag("crash at operation %" PRIu64 ": repair afterwards: ret "
                     "%d, %s", cut, ret, err.message);
            show("after the crash", &r);
        }
        content_free(&after);
        memfs_free(fs);
    }
    ok(finished && cut > 10, "crash, %s: the repair was cut at each of its "
       "%" PRIu64 " I/O operations (%" PRIu64 " crashes)", name, cut - 1,
       crashes);
    if (!ok(all_same, "crash, %s: after a crash anywhere in the repair every "
            "reader sees the same content", name))
        tap_diag("crash at operation %" PRIu64 ", virtual cluster %" PRIu64,
                 bad_cut, bad);
    if (!ok(all_marked, "crash, %s: after a crash the image is unchanged or "
            "marked dirty", name))
        tap_diag("crash at operation %" PRIu64, marked_cut);
    if (!ok(all_repaired, "crash, %s: a read-write open and a repair after "
            "the crash leave a clean image with the same content", name))
        tap_diag("crash at operation %" PRIu64, repaired_cut);
    content_free(&before);
    free(original);
}

static void test_crash_safety(void)
{
    crash_case("corruptions and leaks of every kind", make_messy, false, 3);
    crash_case("a table moved into a gap", make_table_gap, false, 3);
    crash_case("repair on a read-write open", make_messy, true, 2);
}

int main(void)
{
    const char *env = getenv("TESTS_DIR");

    if (env && env[0])
        tests_dir = env;
    have_qemu = support_have_qemu_img();
    if (support_mkdtemp("check", dir, sizeof(dir)) < 0) {
        printf("Bail out! cannot make a temporary directory\n");
        return 1;
    }
    test_api_errors();
    test_clean();
    test_fragmented();
    test_l2_misaligned();
    test_l2_into_l1();
    test_l2_past_eof();
    test_l1_misaligned();
    test_l1_past_eof();
    test_l1_into_l1();
    test_table_not_fitting();
    test_into_header();
    test_data_twice();
    test_table_twice();
    test_data_into_later_table();
    test_data_into_earlier_table();
    test_table_over_data();
    test_trailing_leaks();
    test_partial_cluster_leak();
    test_interior_leak();
    test_several_leaks();
    test_table_into_gap();
    test_leaks_only();
    test_random();
    test_dirty_open();
    test_dirty_check();
    test_live_state();
    test_big_virtual();
    test_hostile_sharing();
    test_read_error();
    test_crash_safety();
    support_rmtree(dir);
    return tap_done();
}
