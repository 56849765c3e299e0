/* SPDX-License-Identifier: MIT */
/* lookup.c: logical offset -> L1 index, table end and extent, and the
 * validation of the host offsets the extents map to.  The geometry is built
 * by hand (no I/O) and cross-checked against real images opened with each
 * I/O engine, whose L2 tables are then looked up as the engine does. */
#include <errno.h>
#include <stdlib.h>

#include "qed-image.h"
#include "support-image.h"
#include "../tap.h"

/* ---- a hand-built image -------------------------------------------------- */

struct fake {
    qed_image img;
    struct qed_state s;
    struct table t;
};

/* An image with header_size header clusters, the L1 table right after them
 * and file_end bytes of file.  The L2 buffer is allocated only when asked
 * (64 MiB clusters make 1 GiB tables). */
static void fake_init(struct fake *f, uint32_t cluster_size,
                      uint32_t table_size, uint32_t header_size,
                      uint64_t file_end, bool with_table)
{
    struct qed_state *s = &f->s;

    memset(f, 0, sizeof(*f));
    s->header.magic = QED_MAGIC;
    s->header.cluster_size = cluster_size;
    s->header.table_size = table_size;
    s->header.header_size = header_size;
    s->header.l1_table_offset = (uint64_t)header_size * cluster_size;
    s->header.image_size = 1 * GiB;
    s->cluster_size = cluster_size;
    s->cluster_bits = log2_u64(cluster_size);
    s->table_bytes = (uint64_t)table_size * cluster_size;
    s->table_entries = s->table_bytes / 8;
    s->table_bits = log2_u64(s->table_entries);
    s->header_bytes = (uint64_t)header_size * cluster_size;
    s->file_end = file_end;
    f->img.driver = &qedi_qed_format_driver;
    f->img.driver_state = s;
    f->img.size = s->header.image_size;
    if (with_table) {
        f->t.bytes = calloc(1, s->table_bytes);
        if (!f->t.bytes)
            abort();
        f->t.offset = s->header.l1_table_offset + s->table_bytes;
    }
}

static void fake_free(struct fake *f)
{
    free(f->t.bytes);
    f->t.bytes = NULL;
}

static const char *kind_name(enum extent_kind k)
{
    switch (k) {
    case EXTENT_UNALLOCATED:
        return "unallocated";
    case EXTENT_ZERO:
        return "zero";
    case EXTENT_DATA:
        return "data";
    }
    return "?";
}

/* Looks up pos and checks kind, length and host. */
static void check_extent(struct fake *f, bool with_l2, uint64_t pos,
                         uint64_t max_len, enum extent_kind kind,
                         uint64_t length, uint64_t host, const char *what)
{
    struct extent ext = { .kind = 99, .length = 12345, .host = 777 };

    qedi_lookup_extent(&f->img, with_l2 ? &f->t : NULL, pos, max_len, &ext);
    is_str(kind_name(ext.kind), kind_name(kind), "%s: kind", what);
    is_u64(ext.length, length, "%s: length", what);
    if (kind == EXTENT_DATA)
        is_u64(ext.host, host, "%s: host offset", what);
}

/* ---- qedi_lookup_extent ------------------------------------------------------- */

static void test_extent_runs(void)
{
    struct fake f;
    const uint64_t cs = 4 * KiB;
    const uint64_t H = 1 * MiB; /* host base of the data clusters */
    const uint64_t span = 2 * MiB; /* 4k clusters, table_size 1 */
    uint8_t *t;

    fake_init(&f, 4096, 1, 1, 64 * MiB, true);
    t = f.t.bytes;
    /* 0-2 unallocated, 3-4 zero, 5-7 data contiguous, 8-9 data elsewhere,
     * 10 data before them, 11-508 unallocated, 509 zero, 510-511 data. */
    qedi_table_set_entry(t, 3, 1);
    qedi_table_set_entry(t, 4, 1);
    qedi_table_set_entry(t, 5, H);
    qedi_table_set_entry(t, 6, H + cs);
    qedi_table_set_entry(t, 7, H + 2 * cs);
    qedi_table_set_entry(t, 8, H + 10 * cs);
    qedi_table_set_entry(t, 9, H + 11 * cs);
    qedi_table_set_entry(t, 10, H + 3 * cs);
    qedi_table_set_entry(t, 509, 1);
    qedi_table_set_entry(t, 510, H + 20 * cs);
    qedi_table_set_entry(t, 511, H + 21 * cs);

    is_u64(f.s.table_entries, 512, "4k clusters, table_size 1: 512 entries");
    check_extent(&f, true, 0, UINT64_MAX, EXTENT_UNALLOCATED, 3 * cs, 0,
                 "unallocated run from 0 stops at the zero entry");
    check_extent(&f, true, 100, UINT64_MAX, EXTENT_UNALLOCATED, 3 * cs - 100,
                 0, "unallocated run from mid-cluster 100");
    check_extent(&f, true, 2 * cs + 4095, UINT64_MAX, EXTENT_UNALLOCATED, 1,
                 0, "unallocated: last byte before the zero run");
    check_extent(&f, true, 3 * cs, UINT64_MAX, EXTENT_ZERO, 2 * cs, 0,
                 "zero run of two entries");
    check_extent(&f, true, 4 * cs + 17, UINT64_MAX, EXTENT_ZERO, cs - 17, 0,
                 "zero run from mid-cluster");
    check_extent(&f, true, 5 * cs, UINT64_MAX, EXTENT_DATA, 3 * cs, H,
                 "data run of three contiguous clusters");
    check_extent(&f, true, 5 * cs + 123, UINT64_MAX, EXTENT_DATA,
                 3 * cs - 123, H + 123,
                 "mid-cluster start: host includes the in-cluster offset");
    check_extent(&f, true, 6 * cs + 7, 10, EXTENT_DATA, 10, H + cs + 7,
                 "data run clipped at max_len inside a cluster");
    check_extent(&f, true, 5 * cs, cs + 1, EXTENT_DATA, cs + 1, H,
                 "data run clipped at max_len one byte into the next cluster");
    check_extent(&f, true, 5 * cs, 1, EXTENT_DATA, 1, H,
                 "max_len 1 gives a one-byte extent");
    check_extent(&f, true, 8 * cs, UINT64_MAX, EXTENT_DATA, 2 * cs,
                 H + 10 * cs,
                 "non-contiguous host offset starts a new data run");
    check_extent(&f, true, 7 * cs + 5, UINT64_MAX, EXTENT_DATA, cs - 5,
                 H + 2 * cs + 5,
                 "data run ends where the next host offset jumps");
    check_extent(&f, true, 10 * cs, UINT64_MAX, EXTENT_DATA, cs, H + 3 * cs,
                 "a host offset going backwards breaks the run");
    check_extent(&f, true, 11 * cs, UINT64_MAX, EXTENT_UNALLOCATED,
                 498 * cs, 0, "long unallocated run up to the zero entry 509");
    check_extent(&f, true, 11 * cs, 3 * cs + 1, EXTENT_UNALLOCATED,
                 3 * cs + 1, 0, "unallocated run clipped at max_len");
    check_extent(&f, true, 509 * cs, UINT64_MAX, EXTENT_ZERO, cs, 0,
                 "zero entry before data at the table end");
    check_extent(&f, true, 510 * cs, UINT64_MAX, EXTENT_DATA, 2 * cs,
                 H + 20 * cs, "data run clipped at the end of the table span");
    check_extent(&f, true, 511 * cs + 9, UINT64_MAX, EXTENT_DATA, cs - 9,
                 H + 21 * cs + 9, "last cluster of the table from mid-cluster");
    check_extent(&f, true, span - 100, 1000, EXTENT_DATA, 100,
                 H + 22 * cs - 100,
                 "max_len crossing the table end is clipped at it");

    /* The same L2 buffer as the table of the second L1 entry: the index
     * within the table wraps. */
    check_extent(&f, true, span + 3 * cs, UINT64_MAX, EXTENT_ZERO, 2 * cs, 0,
                 "second table: index taken modulo the table entries");
    check_extent(&f, true, span + 5 * cs + 1, UINT64_MAX, EXTENT_DATA,
                 3 * cs - 1, H + 1, "second table: data run and host");
    check_extent(&f, true, 7 * span + 510 * cs, UINT64_MAX, EXTENT_DATA,
                 2 * cs, H + 20 * cs, "eighth table: clipped at its end");

    /* l2 == NULL: the L1 entry is unallocated. */
    check_extent(&f, false, 0, UINT64_MAX, EXTENT_UNALLOCATED, span, 0,
                 "no L2 table: unallocated to the table end");
    check_extent(&f, false, 100, UINT64_MAX, EXTENT_UNALLOCATED, span - 100,
                 0, "no L2 table, mid-cluster start: to the table end");
    check_extent(&f, false, 100, 50, EXTENT_UNALLOCATED, 50, 0,
                 "no L2 table: clipped at max_len");
    check_extent(&f, false, 3 * span + 5, UINT64_MAX, EXTENT_UNALLOCATED,
                 span - 5, 0, "no L2 table, fourth table: to its end");
    check_extent(&f, false, 2 * span - 1, UINT64_MAX, EXTENT_UNALLOCATED, 1,
                 0, "no L2 table, last byte of a table: length 1");
    fake_free(&f);
}

static void test_extent_runs_64k(void)
{
    struct fake f;
    const uint64_t cs = 64 * KiB;
    const uint64_t entries = 4 * 64 * KiB / 8; /* 32768 */
    const uint64_t span = entries * cs;        /* 2 GiB */
    uint8_t *t;

    fake_init(&f, 64 * 1024, 4, 1, 8 * GiB, true);
    t = f.t.bytes;
    is_u64(f.s.table_entries, entries, "64k clusters, table_size 4: entries");
    /* Everything zero from 100 to the end; a data run at the very end. */
    for (uint64_t i = 100; i < entries - 2; i++)
        qedi_table_set_entry(t, i, 1);
    qedi_table_set_entry(t, entries - 2, 4 * GiB);
    qedi_table_set_entry(t, entries - 1, 4 * GiB + cs);
    check_extent(&f, true, 0, UINT64_MAX, EXTENT_UNALLOCATED, 100 * cs, 0,
                 "64k: unallocated head");
    check_extent(&f, true, 100 * cs, UINT64_MAX, EXTENT_ZERO,
                 (entries - 102) * cs, 0, "64k: long zero run");
    check_extent(&f, true, 100 * cs, 5 * cs - 3, EXTENT_ZERO, 5 * cs - 3, 0,
                 "64k: zero run clipped at max_len");
    check_extent(&f, true, (entries - 2) * cs + 1, UINT64_MAX, EXTENT_DATA,
                 2 * cs - 1, 4 * GiB + 1, "64k: data run up to the table end");
    check_extent(&f, true, span - 1, UINT64_MAX, EXTENT_DATA, 1,
                 4 * GiB + 2 * cs - 1, "64k: last byte of the table");
    check_extent(&f, false, span + 12345, UINT64_MAX, EXTENT_UNALLOCATED,
                 span - 12345, 0, "64k: no L2 table, to the 2 GiB table end");
    fake_free(&f);
}

/* A data entry of 0 or 1 is impossible; the smallest real data offset (the
 * first cluster past the header) must still count as data. */
static void test_extent_kinds(void)
{
    struct fake f;

    fake_init(&f, 4096, 1, 1, 64 * KiB, true);
    qedi_table_set_entry(f.t.bytes, 0, 8192);
    qedi_table_set_entry(f.t.bytes, 1, 1);
    qedi_table_set_entry(f.t.bytes, 2, 12288);
    check_extent(&f, true, 0, UINT64_MAX, EXTENT_DATA, 4096, 8192,
                 "data entry followed by a zero entry: one cluster");
    check_extent(&f, true, 4096, UINT64_MAX, EXTENT_ZERO, 4096, 0,
                 "zero entry between data entries: one cluster");
    check_extent(&f, true, 8192, UINT64_MAX, EXTENT_DATA, 4096, 12288,
                 "data entry followed by unallocated: one cluster");
    fake_free(&f);
}

/* ---- qedi_lookup_validate_extent --------------------------------------------- */

static int validate_at(struct fake *f, uint64_t pos, qed_error *err)
{
    struct extent ext;
    qedi_lookup_extent(&f->img, &f->t, pos, UINT64_MAX, &ext);
    return qedi_lookup_validate_extent(&f->img, qedi_lookup_l1_index(&f->img, pos), pos,
                                  &ext, true, err);
}

static void check_valid(struct fake *f, uint64_t pos, const char *what)
{
    qed_error err = { 0 };
    int ret = validate_at(f, pos, &err);
    if (!ok(ret == 0, "accepted: %s", what))
        tap_diag("ret %d: %s", ret, err.message);
}

static void check_invalid(struct fake *f, uint64_t pos, const char *what)
{
    qed_error err = { 0 };
    int ret = validate_at(f, pos, &err);
    is_u64(ret, (uint64_t)-EIO, "rejected with -EIO: %s", what);
    is_u64(err.code, EIO, "err.code EIO: %s", what);
    has_substr(err.message, "corrupt", "message says corrupt: %s", what);
}

static void test_validate(void)
{
    struct fake f;
    const uint64_t cs = 4096;
    uint8_t *t;

    /* 4 header clusters, L1 (table_size 2) at 16k..24k, file end 64k. */
    fake_init(&f, 4096, 2, 4, 64 * KiB, true);
    t = f.t.bytes;
    is_u64(f.s.header.l1_table_offset, 16 * KiB, "validate: L1 at 16k");
    qedi_table_set_entry(t, 0, 24 * KiB);          /* first usable cluster */
    qedi_table_set_entry(t, 1, 60 * KiB);          /* last cluster of the file */
    qedi_table_set_entry(t, 2, 100 * KiB);         /* past file_end */
    qedi_table_set_entry(t, 3, 24 * KiB + 512);    /* misaligned */
    qedi_table_set_entry(t, 4, 4 * KiB);           /* inside the header */
    qedi_table_set_entry(t, 5, 12 * KiB);          /* last header cluster */
    qedi_table_set_entry(t, 6, 16 * KiB);          /* the L1 table itself */
    qedi_table_set_entry(t, 7, 20 * KiB);          /* second L1 cluster */
    qedi_table_set_entry(t, 10, 56 * KiB);         /* run 56k, 60k: valid */
    qedi_table_set_entry(t, 11, 60 * KiB);
    qedi_table_set_entry(t, 13, 60 * KiB);         /* run 60k, 64k: past end */
    qedi_table_set_entry(t, 14, 64 * KiB);
    qedi_table_set_entry(t, 16, 12 * KiB);         /* run 12k,16k: into L1 */
    qedi_table_set_entry(t, 17, 16 * KiB);
    qedi_table_set_entry(t, 19, 20 * KiB);         /* run 20k, 24k: L1 + data */
    qedi_table_set_entry(t, 20, 24 * KiB);
    qedi_table_set_entry(t, 22, 1);                /* zero */
    qedi_table_set_entry(t, 24, 2 * GiB);          /* far past the end */
    qedi_table_set_entry(t, 25, UINT64_MAX & ~(cs - 1)); /* offset + len wraps */

    check_valid(&f, 0, "first cluster after the L1 table");
    check_valid(&f, 100, "first cluster after L1, mid-cluster position");
    check_valid(&f, 1 * cs, "last cluster of the file");
    check_valid(&f, 1 * cs + cs - 1, "last byte of the file");
    check_valid(&f, 10 * cs, "two-cluster run ending at file_end");
    check_valid(&f, 22 * cs, "zero entry");
    check_valid(&f, 30 * cs, "unallocated entry");
    check_invalid(&f, 2 * cs, "entry past file_end");
    check_invalid(&f, 2 * cs + 99, "entry past the file, mid-cluster");
    check_invalid(&f, 3 * cs, "misaligned entry, cluster start");
    check_invalid(&f, 3 * cs + 512, "misaligned entry, position 512 in");
    check_invalid(&f, 3 * cs + cs - 512,
                  "misaligned entry, host lands on a cluster boundary");
    check_invalid(&f, 4 * cs, "entry inside the header");
    check_invalid(&f, 5 * cs, "entry in the last header cluster");
    check_invalid(&f, 6 * cs, "entry at the L1 table");
    check_invalid(&f, 7 * cs, "entry in the second cluster of the L1 table");
    check_invalid(&f, 13 * cs, "run whose second cluster is past file_end");
    check_invalid(&f, 14 * cs, "entry exactly at file_end");
    check_invalid(&f, 16 * cs, "run from the header into the L1 table");
    check_invalid(&f, 19 * cs, "run from the L1 table into data");
    check_valid(&f, 20 * cs, "data cluster right after the L1 table");
    check_invalid(&f, 24 * cs, "entry far past the end");
    check_invalid(&f, 25 * cs, "entry whose end wraps around 2^64");

    /* A hand-made extent of a run that starts valid and ends past the file. */
    {
        struct extent ext = { EXTENT_DATA, 2 * cs, 56 * KiB + 100 };
        qed_error err = { 0 };
        int ret = qedi_lookup_validate_extent(&f.img, 0, 100, &ext, true, &err);
        is_u64(ret, (uint64_t)-EIO,
               "extent of 2 clusters from 56k+100 ends past file_end");
        ext.length = 2 * cs - 100;
        ret = qedi_lookup_validate_extent(&f.img, 0, 100, &ext, true, &err);
        is_u64(ret, 0, "extent of 2 clusters minus 100 from 56k+100 fits");
        ext.kind = EXTENT_ZERO;
        ext.host = 3;
        ret = qedi_lookup_validate_extent(&f.img, 0, 100, &ext, true, &err);
        is_u64(ret, 0, "non-data extents are not validated");
    }
    fake_free(&f);
}

/* ---- qedi_lookup_l1_index / qedi_lookup_table_end ------------------------------------ */

static void check_geometry(uint32_t cs, uint32_t ts, unsigned span_bits)
{
    struct fake f;
    const uint64_t span = UINT64_C(1) << span_bits;
    char name[64];

    snprintf(name, sizeof(name), "cluster %u table_size %u", cs, ts);
    fake_init(&f, cs, ts, 1, 0, false);
    is_u64(f.s.table_bits + f.s.cluster_bits, span_bits,
           "%s: a table spans 2^%u bytes", name, span_bits);
    is_u64(qedi_lookup_l1_index(&f.img, 0), 0, "%s: l1_index(0)", name);
    is_u64(qedi_lookup_l1_index(&f.img, span - 1), 0, "%s: l1_index(span-1)",
           name);
    is_u64(qedi_lookup_l1_index(&f.img, span), 1, "%s: l1_index(span)", name);
    is_u64(qedi_lookup_l1_index(&f.img, 5 * span + 3), 5,
           "%s: l1_index(5 span + 3)", name);
    is_u64(qedi_lookup_table_end(&f.img, 0), span, "%s: table_end(0)", name);
    is_u64(qedi_lookup_table_end(&f.img, span - 1), span,
           "%s: table_end(span-1)", name);
    is_u64(qedi_lookup_table_end(&f.img, span), 2 * span, "%s: table_end(span)",
           name);
    /* The largest virtual size libqed accepts. */
    {
        uint64_t top = INT64_MAX & ~(uint64_t)511;
        uint64_t idx = top >> span_bits;
        is_u64(qedi_lookup_l1_index(&f.img, top), idx,
               "%s: l1_index of the largest virtual offset", name);
        if (span_bits < 63)
            is_u64(qedi_lookup_table_end(&f.img, top), (idx + 1) << span_bits,
                   "%s: table_end of the largest virtual offset", name);
    }
    is_u64(qedi_lookup_table_end(&f.img, UINT64_MAX), UINT64_MAX,
           "%s: table_end(UINT64_MAX) saturates instead of wrapping", name);
    ok(qedi_lookup_table_end(&f.img, UINT64_MAX - span / 2) > UINT64_MAX - span,
       "%s: table_end near 2^64 does not wrap to a small value", name);
}

static void test_geometry(void)
{
    check_geometry(4096, 1, 21);                /* 2 MiB */
    check_geometry(4096, 16, 25);               /* 32 MiB */
    check_geometry(64 * 1024, 1, 29);           /* 512 MiB */
    check_geometry(64 * 1024, 4, 31);           /* 2 GiB */
    check_geometry(64 * 1024, 16, 33);          /* 8 GiB */
    check_geometry(64u * 1024 * 1024, 1, 49);   /* 512 TiB */
    check_geometry(64u * 1024 * 1024, 16, 53);  /* 8 PiB */

    /* qedi_lookup_extent without a table on the largest geometry. */
    {
        struct fake f;
        uint64_t top = (INT64_MAX & ~(uint64_t)511) - 511;
        fake_init(&f, 64u * 1024 * 1024, 16, 1, 0, false);
        check_extent(&f, false, top, UINT64_MAX, EXTENT_UNALLOCATED,
                     (UINT64_C(1) << 63) - top, 0,
                     "64M clusters, table_size 16: no table, runs to 2^63");
        check_extent(&f, false, UINT64_C(1) << 53, UINT64_MAX,
                     EXTENT_UNALLOCATED, UINT64_C(1) << 53, 0,
                     "64M clusters, table_size 16: a whole 8 PiB table");
    }
}

/* ---- real images, through each engine --------------------------------------- */

static void test_real_image(enum qed_engine engine, const char *dir)
{
    const char *en = support_engine_name(engine);
    const char *path = support_path(dir, "lookup.qed");
    const uint64_t cs = 4096;
    qed_image *img = NULL;
    qed_error err = { 0 };
    struct qed_state *s;
    struct table t = { 0 };
    struct extent ext;
    uint8_t *buf = malloc(3 * cs), *back = malloc(3 * cs);
    uint64_t l2_offset;
    int ret;

    ret = support_create(path, 16 * MiB, 4096, 2, NULL, QED_FORMAT_PROBE,
                         &err);
    is_u64(ret, 0, "%s: create 16M image, 4k clusters, table_size 2", en);
    ret = support_open(path, QED_OPEN_RDWR, engine, &img, &err);
    if (!ok(ret == 0, "%s: open it", en)) {
        tap_diag("%s", err.message);
        goto out;
    }
    s = qed_of(img);
    is_str(qed_loop_engine_name(qed_image_loop(img)), en,
           "%s: the image runs on the requested engine", en);
    is_u64(s->cluster_bits, 12, "%s: real image cluster_bits", en);
    is_u64(s->table_entries, 1024, "%s: real image table_entries", en);
    is_u64(s->table_bits, 10, "%s: real image table_bits", en);
    is_u64(s->header_bytes, cs, "%s: real image header_bytes", en);
    is_u64(s->table_bytes, 2 * cs, "%s: real image table_bytes", en);
    is_u64(s->file_end, 3 * cs, "%s: real image file_end after create", en);
    is_u64(qedi_lookup_table_end(img, 0), 4 * MiB, "%s: real table_end(0)", en);
    is_u64(qedi_lookup_l1_index(img, 9 * MiB), 2, "%s: real l1_index(9M)", en);

    /* Three clusters in one write: one data run. */
    support_fill(buf, 3 * cs, 42, 4 * MiB + 5 * cs);
    ret = qed_pwrite(img, buf, 3 * cs, 4 * MiB + 5 * cs, &err);
    is_u64(ret, 0, "%s: write 3 clusters at 4M + 20k", en);
    is_u64(qedi_table_entry(s->l1, 0), 0, "%s: L1 entry 0 still empty", en);
    l2_offset = qedi_table_entry(s->l1, 1);
    ok(l2_offset >= 3 * cs && l2_offset % cs == 0,
       "%s: L1 entry 1 points at a new aligned table", en);
    t.offset = l2_offset;
    t.bytes = calloc(1, s->table_bytes);
    ret = support_pread(path, t.bytes, s->table_bytes, l2_offset);
    is_u64(ret, 0, "%s: read the L2 table from the file", en);

    qedi_lookup_extent(img, &t, 4 * MiB, UINT64_MAX, &ext);
    is_str(kind_name(ext.kind), "unallocated", "%s: table 1 head kind", en);
    is_u64(ext.length, 5 * cs, "%s: table 1 head is 5 clusters", en);
    qedi_lookup_extent(img, &t, 4 * MiB + 5 * cs + 10, UINT64_MAX, &ext);
    is_str(kind_name(ext.kind), "data", "%s: written range is data", en);
    is_u64(ext.length, 3 * cs - 10, "%s: one contiguous 3-cluster run", en);
    ret = qedi_lookup_validate_extent(img, 1, 4 * MiB + 5 * cs + 10, &ext, true, &err);
    is_u64(ret, 0, "%s: the run validates against the real file", en);
    ret = support_pread(path, back, 3 * cs - 10, ext.host);
    ok(ret == 0 && memcmp(back, buf + 10, 3 * cs - 10) == 0,
       "%s: host bytes at the looked-up offset are the written data", en);
    qedi_lookup_extent(img, &t, 4 * MiB + 8 * cs, UINT64_MAX, &ext);
    is_str(kind_name(ext.kind), "unallocated", "%s: after the run", en);
    is_u64(ext.length, 1024 * cs - 8 * cs,
           "%s: unallocated to the end of table 1", en);

    /* Whole-cluster write-zeroes without a backing file: nothing to store
     * unless allocated; on an allocated cluster the mapping stays data. */
    ret = qed_write_zeroes(img, 4 * MiB + 6 * cs, cs, QED_ZERO_MAY_UNMAP,
                           &err);
    is_u64(ret, 0, "%s: write zeroes over the middle cluster", en);
    ret = support_pread(path, t.bytes, s->table_bytes, l2_offset);
    qedi_lookup_extent(img, &t, 4 * MiB + 5 * cs, UINT64_MAX, &ext);
    ok(ext.kind == EXTENT_DATA && ext.length >= cs,
       "%s: the cluster before the zeroed one is still data", en);
    qedi_lookup_extent(img, &t, 4 * MiB + 7 * cs, UINT64_MAX, &ext);
    ok(ext.kind == EXTENT_DATA && ext.length == cs,
       "%s: the cluster after the zeroed one is still data", en);
    memset(back, 0xff, cs);
    ret = qed_pread(img, back, cs, 4 * MiB + 6 * cs, &err);
    ok(ret == 0 && support_first_nonzero(back, cs) == cs,
       "%s: and it reads as zeros", en);
    is_u64(qed_close(img, &err), 0, "%s: close", en);
out:
    free(t.bytes);
    free(buf);
    free(back);
}

int main(void)
{
    char dir[256];

    test_extent_runs();
    test_extent_runs_64k();
    test_extent_kinds();
    test_validate();
    test_geometry();
    if (support_mkdtemp("lookup", dir, sizeof(dir)) < 0) {
        ok(0, "make a temporary directory");
        return tap_done();
    }
    for (int i = 0; i < SUPPORT_ENGINE_COUNT; i++)
        test_real_image(support_engines[i], dir);
    support_rmtree(dir);
    return tap_done();
}
