/* SPDX-License-Identifier: MIT */
/* The QED driver's resize.
 *
 * Growing: the range past the old end is made to read as zeros first
 * (whatever still maps there, and a longer backing file, would show
 * through), flushed, then the header's image_size is written.
 *
 * Shrinking: the rest of the cluster the new end falls in is zeroed and
 * flushed; the header gets the new size and NEED_CHECK (durable); the
 * table entries past the new end are cleared (whole L2 tables through L1)
 * and flushed; then the clusters that freed are reclaimed by the leak
 * repair of qed_check, which moves the clusters at the end of the file into
 * the holes and truncates the file, and clears NEED_CHECK.  A crash at any
 * point leaves the image readable at the old or the new size with at worst
 * leaked clusters, which the check on the next read-write open reclaims. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>

#include "qed-image.h"

static int check_qed_size(const struct qed_state *s, uint64_t size,
                          qed_error *err)
{
    uint64_t max = qedi_header_max_image_size(s->cluster_size,
                                         s->header.table_size);

    if (size % QED_SECTOR_SIZE != 0)
        return qedi_fail(err, EINVAL, "image size %" PRIu64
                        " is not a multiple of 512", size);
    if (size > max)
        return qedi_fail(err, EINVAL, "image size %" PRIu64 " exceeds the "
                        "maximum %" PRIu64 " the tables address (cluster size "
                        "%" PRIu32 ", table size %" PRIu32 ")",
                        size, max, s->cluster_size, s->header.table_size);
    if (size > QED_MAX_VIRTUAL_SIZE)
        return qedi_fail(err, EINVAL, "image size %" PRIu64 " exceeds the "
                        "largest supported size %" PRIu64, size,
                        (uint64_t)QED_MAX_VIRTUAL_SIZE);
    return 0;
}

static int write_size(qed_image *img, uint64_t size, uint64_t features,
                      qed_error *err)
{
    struct qed_state *s = qed_of(img);
    uint64_t old = s->header.image_size;
    int ret;

    s->header.image_size = size;
    ret = qedi_image_write_header(img, features);
    if (ret < 0) {
        s->header.image_size = old;
        return qedi_fail(err, -ret, "writing the header of '%s': %s",
                        img->filename, strerror(-ret));
    }
    return 0;
}

/* Makes [from, to) read as zeros wherever it does not already, through
 * write-zeroes (zero clusters for whole clusters).  only_own: only what img
 * holds itself (data clusters), not what comes from its backing file. */
static int zero_range(qed_image *img, uint64_t from, uint64_t to,
                      bool only_own, qed_error *err)
{
    while (from < to) {
        struct qed_block_status st;
        int ret;

        qed_block_status_init(&st);
        ret = img->front->block_status(img, from, to - from, &st, err);

        if (ret < 0)
            return ret;
        if (st.length == 0 || st.length > to - from)
            return qedi_fail(err, EIO, "block status at offset %" PRIu64
                            " returned an invalid length %" PRIu64, from,
                            st.length);
        if (!st.zero && (!only_own || (st.depth == 0 && st.present))) {
            ret = img->front->write_zeroes(img, from, st.length,
                                   only_own ? 0 : QED_ZERO_MAY_UNMAP, err);
            if (ret < 0)
                return ret;
        }
        from += st.length;
    }
    return 0;
}

static int grow(qed_image *img, uint64_t size, qed_error *err)
{
    struct qed_state *s = qed_of(img);
    uint64_t old = img->size;
    int ret;

    /* The new range is the image's from now on for requests; the header
     * follows once it reads as zeros. */
    img->size = size;
    ret = zero_range(img, old, size, false, err);
    if (ret == 0)
        ret = img->front->flush(img, err);
    if (ret == 0)
        ret = write_size(img, size, s->header.features, err);
    if (ret < 0)
        img->size = old;
    return ret;
}

/* Clears the L2 entries for clusters at or past keep_end, and the L1
 * entries of tables wholly past it, on disk (then flushed). */
static int clear_tables(qed_image *img, uint64_t keep_end, qed_error *err)
{
    struct qed_state *s = qed_of(img);
    uint64_t span = s->table_entries << s->cluster_bits;
    uint64_t first_full = keep_end / span;
    uint64_t l1_changed = 0;
    uint8_t *table = NULL;
    int ret = 0;

    if (keep_end % span != 0) {
        uint64_t index = first_full;
        uint64_t offset = qedi_table_entry(s->l1, index);
        uint64_t from = (keep_end % span) >> s->cluster_bits;
        bool any = false;

        first_full++;
        if (offset != 0) {
            table = qedi_aligned_alloc(s->table_bytes);
            if (!table)
                return qedi_fail(err, ENOMEM, "out of memory for an L2 table");
            ret = qedi_table_read_sync(img, offset, table, err);
            if (ret < 0)
                goto out;
            for (uint64_t i = from; i < s->table_entries; i++) {
                if (qedi_table_entry(table, i) != QED_ENTRY_UNALLOCATED) {
                    qedi_table_set_entry(table, i, QED_ENTRY_UNALLOCATED);
                    any = true;
                }
            }
            if (any)
                ret = qedi_table_write_sync(img, offset, table, err);
            if (ret < 0)
                goto out;
        }
    }
    for (uint64_t i = first_full; i < s->table_entries; i++) {
        uint64_t offset = qedi_table_entry(s->l1, i);
        if (offset == 0)
            continue;
        qedi_l2cache_forget(s->l2cache, offset);
        qedi_table_set_entry(s->l1, i, 0);
        l1_changed++;
    }
    if (l1_changed) {
        ret = qedi_io_pwrite_sync(img->file, s->l1, s->table_bytes,
                             s->header.l1_table_offset);
        if (ret < 0) {
            ret = qedi_fail(err, -ret, "writing the L1 table: %s",
                           strerror(-ret));
            goto out;
        }
    }
    ret = qedi_io_sync_sync(img->file);
    if (ret < 0)
        ret = qedi_fail(err, -ret, "flush after clearing tables: %s",
                       strerror(-ret));
out:
    free(table);
    return ret;
}

/* The tables that stay must be readable before the size changes. */
static int check_straddling_table(const qed_image *img, uint64_t keep_end,
                                  qed_error *err)
{
    const struct qed_state *s = qed_of(img);
    uint64_t span = s->table_entries << s->cluster_bits;
    uint64_t index = keep_end / span;
    uint64_t offset;

    if (keep_end % span == 0 || index >= s->table_entries)
        return 0;
    offset = qedi_table_entry(s->l1, index);
    if (offset != 0 && !qedi_offset_valid(s, offset, s->table_bytes))
        return qedi_fail(err, EIO, "corrupt image: L1 entry %" PRIu64
                        " points at invalid L2 table offset 0x%" PRIx64
                        " (file end 0x%" PRIx64 "); repair it first (qed "
                        "check -r all)", index, offset, s->file_end);
    return 0;
}

static int shrink(qed_image *img, uint64_t size, qed_error *err)
{
    struct qed_state *s = qed_of(img);
    uint64_t keep_end = round_up_u64(size, s->cluster_size);
    struct qed_check_result res;
    int ret;

    ret = check_straddling_table(img, keep_end, err);
    /* What the last cluster holds past the new end must not come back
     * when the image grows again. */
    if (ret == 0 && keep_end > size)
        ret = zero_range(img, size, QED_MIN(keep_end, img->size), true, err);
    if (ret == 0)
        ret = img->front->flush(img, err);
    if (ret == 0)
        ret = write_size(img, size, s->header.features | QED_F_NEED_CHECK,
                         err);
    if (ret < 0)
        return ret;
    img->size = size;
    ret = clear_tables(img, keep_end, err);
    if (ret < 0)
        return ret;
    ret = qedi_qed_check(img, QED_CHECK_REPAIR_LEAKS, &res, err);
    if (ret < 0) {
        qedi_error_prefix(err, "reclaiming the clusters past the new end: ");
        return ret;
    }
    if (res.check_errors)
        return qedi_fail(err, EIO, "reclaiming the clusters past the new end: "
                        "%" PRIu64 " check errors", res.check_errors);
    return 0;
}

/* ---- preallocation of the grown range ------------------------------------------ */

/* The whole clusters of the grown range, [first, end) in cluster numbers,
 * and the L2 tables that cover them. */
struct grown {
    uint64_t first, end;
    uint64_t first_table, end_table;
};

static bool needs_cluster(uint64_t entry)
{
    return entry == QED_ENTRY_UNALLOCATED || entry == QED_ENTRY_ZERO;
}

/* Clusters of table t in the grown range that get a data cluster, with
 * table (its entries, NULL for a table not allocated yet). */
static uint64_t clusters_to_fill(const struct qed_state *s,
                                 const struct grown *g, uint64_t t,
                                 const uint8_t *table)
{
    uint64_t from = QED_MAX(g->first, t << s->table_bits);
    uint64_t to = QED_MIN(g->end, (t + 1) << s->table_bits);
    uint64_t n = 0;

    if (!table)
        return to - from;
    for (uint64_t c = from; c < to; c++)
        n += needs_cluster(qedi_table_entry(table, c & (s->table_entries - 1)));
    return n;
}

/* Points the entries of table t that need a cluster at the next ones from
 * *next, in guest order. */
static void link_clusters(const struct qed_state *s, const struct grown *g,
                          uint64_t t, uint8_t *table, uint64_t *next)
{
    uint64_t from = QED_MAX(g->first, t << s->table_bits);
    uint64_t to = QED_MIN(g->end, (t + 1) << s->table_bits);

    for (uint64_t c = from; c < to; c++) {
        uint64_t i = c & (s->table_entries - 1);

        if (needs_cluster(qedi_table_entry(table, i))) {
            qedi_table_set_entry(table, i, *next);
            *next += s->cluster_size;
        }
    }
}

/* Counts the new tables and the data clusters the grown range needs. */
static int count_needs(qed_image *img, const struct grown *g,
                       enum qed_preallocation mode, uint8_t *table,
                       uint64_t *tables, uint64_t *clusters, qed_error *err)
{
    struct qed_state *s = qed_of(img);

    *tables = *clusters = 0;
    for (uint64_t t = g->first_table; t < g->end_table; t++) {
        uint64_t offset = qedi_table_entry(s->l1, t);
        int ret;

        if (offset == 0) {
            (*tables)++;
            if (mode >= QED_PREALLOC_FALLOC)
                *clusters += clusters_to_fill(s, g, t, NULL);
            continue;
        }
        if (mode < QED_PREALLOC_FALLOC)
            continue;
        ret = qedi_table_read_sync(img, offset, table, err);
        if (ret < 0)
            return ret;
        *clusters += clusters_to_fill(s, g, t, table);
    }
    return 0;
}

/* Data clusters and new tables (written, flushed) before anything links
 * them; then the existing tables and the L1 table, flushed. */
static int preallocate_grown(qed_image *img, uint64_t old_size,
                             enum qed_preallocation mode, qed_error *err)
{
    struct qed_state *s = qed_of(img);
    struct grown g;
    uint64_t new_tables, clusters, tables_at, data_at, next, made = 0;
    uint64_t end_before;
    uint8_t *table;
    bool l1_changed = false;
    int ret;

    g.first = round_up_u64(old_size, s->cluster_size) >> s->cluster_bits;
    g.end = round_up_u64(img->size, s->cluster_size) >> s->cluster_bits;
    if (mode == QED_PREALLOC_OFF || g.first >= g.end)
        return 0;
    g.first_table = g.first >> s->table_bits;
    g.end_table = ((g.end - 1) >> s->table_bits) + 1;
    table = qedi_aligned_alloc(s->table_bytes);
    if (!table)
        return qedi_fail(err, ENOMEM, "out of memory for an L2 table");
    ret = count_needs(img, &g, mode, table, &new_tables, &clusters, err);
    if (ret < 0)
        goto out;
    end_before = s->file_end;
    tables_at = qedi_alloc_clusters(img, new_tables * s->header.table_size);
    data_at = qedi_alloc_clusters(img, clusters);
    ret = qedi_image_preallocate(img, data_at, clusters << s->cluster_bits, mode, err);
    next = data_at;
    /* New tables: not reachable until L1 points at them. */
    for (uint64_t t = g.first_table; ret == 0 && t < g.end_table; t++) {
        if (qedi_table_entry(s->l1, t) != 0) {
            if (mode >= QED_PREALLOC_FALLOC) {
                ret = qedi_table_read_sync(img, qedi_table_entry(s->l1, t), table, err);
                next += clusters_to_fill(s, &g, t, table) << s->cluster_bits;
            }
            continue;
        }
        memset(table, 0, s->table_bytes);
        if (mode >= QED_PREALLOC_FALLOC)
            link_clusters(s, &g, t, table, &next);
        ret = qedi_table_write_sync(img, tables_at + made * s->table_bytes, table, err);
        made++;
    }
    if (ret == 0)
        ret = qedi_image_flush(img, err);
    if (ret < 0) {
        /* Nothing links the new space: give it back (the close trims the
         * file to file_end). */
        s->file_end = end_before;
        goto out;
    }
    s->size_ensured = QED_MAX(s->size_ensured, s->file_end);
    /* Then the links: existing tables in place, and L1. */
    next = data_at;
    made = 0;
    for (uint64_t t = g.first_table; ret == 0 && t < g.end_table; t++) {
        uint64_t offset = qedi_table_entry(s->l1, t);

        if (offset == 0) {
            offset = tables_at + made++ * s->table_bytes;
            ret = qedi_table_index_add(s, offset);
            if (ret < 0) {
                ret = qedi_fail(err, -ret, "out of memory");
                break;
            }
            qedi_table_set_entry(s->l1, t, offset);
            l1_changed = true;
            next += clusters_to_fill(s, &g, t, NULL) << s->cluster_bits;
            continue;
        }
        if (mode < QED_PREALLOC_FALLOC)
            continue;
        ret = qedi_table_read_sync(img, offset, table, err);
        if (ret == 0 && clusters_to_fill(s, &g, t, table) > 0) {
            link_clusters(s, &g, t, table, &next);
            ret = qedi_table_write_sync(img, offset, table, err);
        }
    }
    if (ret == 0 && l1_changed) {
        ret = qedi_io_pwrite_sync(img->file, s->l1, s->table_bytes,
                             s->header.l1_table_offset);
        if (ret < 0)
            ret = qedi_fail(err, -ret, "writing the L1 table: %s",
                           strerror(-ret));
    }
    if (ret == 0)
        ret = qedi_image_flush(img, err);
out:
    free(table);
    if (ret < 0)
        qedi_error_prefix(err, "resized to %" PRIu64 " bytes, but preallocating "
                         "the new range failed: ", img->size);
    return ret;
}

/* The format's part of qed_resize (ops/resize.c checked the flags, the
 * preallocation mode, that the image is writable and idle). */
int qedi_qed_resize(qed_image *img, uint64_t size, unsigned flags,
                      qed_error *err)
{
    enum qed_preallocation mode = (flags & QED_RESIZE_PREALLOC_MASK) >> 4;
    uint64_t old_size = img->size;
    int ret;

    ret = check_qed_size(qed_of(img), size, err);
    if (ret < 0)
        return ret;
    if (size == img->size)
        return 0;
    if (size < img->size && !(flags & QED_RESIZE_SHRINK))
        return qedi_fail(err, EINVAL, "shrinking from %" PRIu64 " to %" PRIu64
                        " bytes deletes data: it needs the shrink flag "
                        "(--shrink)", img->size, size);
    /* Header rewrites must not race the idle timer's. */
    qedi_alloc_quiesce(img);
    if (size < img->size)
        return shrink(img, size, err);
    ret = grow(img, size, err);
    return ret < 0 ? ret : preallocate_grown(img, old_size, mode, err);
}
