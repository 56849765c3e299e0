/* SPDX-License-Identifier: MIT */
/* Compaction: rewrite an image in place without holes or leaks.  Data
 * clusters that read as all zeros (discarded, or written with zeros) stop
 * being data: they become unallocated, or zero clusters where a backing
 * file would show through.  The clusters that frees, and any other leak,
 * are then reclaimed by the check's leak repair, which moves the last
 * clusters of the file into the gaps (copy, flush, update the entry, flush)
 * and truncates.  Readers see the same content at every step; running it
 * again finds nothing to do. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "qed-image.h"

/* Turns the all-zero data clusters of one L2 table into unallocated or zero
 * entries; returns how many, or -errno. */
static int64_t drop_zero_clusters(qed_image *img, uint64_t l2_offset,
                                  uint8_t *table, uint8_t *cluster,
                                  qed_error *err)
{
    struct qed_state *s = qed_of(img);
    /* Over a backing file, a zero cluster keeps the backing data hidden. */
    uint64_t replacement = (s->header.features & QED_F_BACKING_FILE)
                               ? QED_ENTRY_ZERO
                               : QED_ENTRY_UNALLOCATED;
    int64_t dropped = 0;
    int ret = qedi_table_read_sync(img, l2_offset, table, err);

    if (ret < 0)
        return ret;
    for (uint64_t i = 0; i < s->table_entries; i++) {
        uint64_t e = qedi_table_entry(table, i);
        if (e <= QED_ENTRY_ZERO || !qedi_offset_valid(s, e, s->cluster_size))
            continue; /* the check deals with invalid entries */
        ret = qedi_io_pread_sync(img->file, cluster, s->cluster_size, e);
        if (ret < 0)
            return qedi_fail(err, -ret, "reading cluster at 0x%" PRIx64 ": %s",
                            e, strerror(-ret));
        if (qedi_buf_is_zero(cluster, s->cluster_size)) {
            qedi_table_set_entry(table, i, replacement);
            dropped++;
        }
    }
    if (dropped) {
        ret = qedi_table_write_sync(img, l2_offset, table, err);
        if (ret < 0)
            return ret;
    }
    return dropped;
}

/* The driver's compact (ops/maintain.c checked that the image is
 * writable and idle, and zeroed the result). */
int qedi_qed_compact(qed_image *img, struct qed_compact_result *result,
                       qed_error *err)
{
    struct qed_state *s = qed_of(img);
    struct qed_check_result check;
    uint64_t size_before = 0;
    uint8_t *table = NULL, *cluster = NULL;
    int ret = 0;

    ret = img->file->ops->get_size(img->file, &size_before);
    if (ret < 0)
        return qedi_fail(err, -ret, "%s", strerror(-ret));
    table = qedi_aligned_alloc(s->table_bytes);
    cluster = qedi_aligned_alloc(s->cluster_size);
    if (!table || !cluster) {
        ret = qedi_fail(err, ENOMEM, "out of memory");
        goto out;
    }
    /* A data entry changing to unallocated or zero reads the same before
     * and after, so a crash between table writes loses nothing; the bit
     * makes the next open reclaim what the crash left unreferenced. */
    if (!(s->header.features & QED_F_BACKING_FILE)) {
        ret = qedi_image_write_header(img, s->header.features | QED_F_NEED_CHECK);
        if (ret < 0) {
            ret = qedi_fail(err, -ret, "marking the image dirty: %s",
                           strerror(-ret));
            goto out;
        }
    }
    for (uint64_t i = 0; i < s->table_entries; i++) {
        uint64_t l2 = qedi_table_entry(s->l1, i);
        int64_t n;
        if (l2 == 0 || !qedi_offset_valid(s, l2, s->table_bytes))
            continue;
        n = drop_zero_clusters(img, l2, table, cluster, err);
        if (n < 0) {
            ret = (int)n;
            goto out;
        }
        result->zero_clusters_dropped += (uint64_t)n;
    }
    ret = qedi_io_sync_sync(img->file);
    if (ret < 0) {
        ret = qedi_fail(err, -ret, "flush: %s", strerror(-ret));
        goto out;
    }
    ret = qedi_qed_check(img, QED_CHECK_REPAIR_LEAKS, &check, err);
    if (ret < 0)
        goto out;
    result->leaks_reclaimed = check.leaks_fixed;
    result->size_before = size_before;
    ret = img->file->ops->get_size(img->file, &result->size_after);
    if (ret < 0)
        ret = qedi_fail(err, -ret, "%s", strerror(-ret));
out:
    free(table);
    free(cluster);
    return ret;
}
