/* SPDX-License-Identifier: MIT */
/* Creating a QED image: the layout of a new file (header, L1 table, and
 * with preallocation the L2 tables and data clusters), and the limits
 * QEMU checks when it opens one. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qed-image.h"

/* ---- create ------------------------------------------------------------------ */

/* QEMU 7.2's checks at open (block/qed.c), in its order, with its
 * arithmetic: unsigned 64-bit products that wrap. */
const char *qed_qemu_open_problem(uint64_t size, uint32_t cluster_size,
                                  uint32_t table_size)
{
    uint64_t entries, max;

    if (cluster_size == 0)
        cluster_size = QED_DEFAULT_CLUSTER_SIZE;
    if (table_size == 0)
        table_size = QED_DEFAULT_TABLE_SIZE;
    /* The table's byte size is a 32-bit product there too. */
    entries = (uint32_t)(cluster_size * table_size) / 8;
    max = entries * cluster_size * entries;
    if (size > max)
        return "its largest image size for this cluster_size and table_size "
               "overflows 64 bits (\"QED image size is invalid\")";
    /* The L1 table's last cluster must lie past its first. */
    if (table_size == 1)
        return "table_size=1 fails its L1 table check "
               "(\"QED table offset is invalid\")";
    return NULL;
}

/* Where a preallocated image puts things: the header cluster, the L1 table,
 * every L2 table one after the other, then (falloc, full) one data cluster
 * per guest cluster in guest order.  The L2 tables together are then one
 * flat array of entries, entry i pointing at data cluster i. */
struct layout {
    uint64_t l1_offset, table_bytes, entries_per_table;
    uint64_t tables, tables_offset;
    uint64_t clusters, data_offset;
    uint64_t file_size;
};

static void plan_layout(const struct qed_header *h,
                        enum qed_preallocation mode, struct layout *l)
{
    uint64_t guest_clusters = (h->image_size + h->cluster_size - 1) /
                              h->cluster_size;

    l->l1_offset = h->l1_table_offset;
    l->table_bytes = (uint64_t)h->table_size * h->cluster_size;
    l->entries_per_table = l->table_bytes / 8;
    l->tables_offset = l->l1_offset + l->table_bytes;
    l->tables = mode == QED_PREALLOC_OFF ? 0 :
                (guest_clusters + l->entries_per_table - 1) /
                l->entries_per_table;
    l->data_offset = l->tables_offset + l->tables * l->table_bytes;
    l->clusters = mode >= QED_PREALLOC_FALLOC ? guest_clusters : 0;
    l->file_size = l->data_offset + l->clusters * h->cluster_size;
}

#define FILL_CHUNK (1024u * 1024)

/* Writes count table entries at offset: the first used ones are first,
 * first + step, ... and the rest 0 (free), a chunk at a time. */
static int write_entries(int fd, uint64_t offset, uint64_t count,
                         uint64_t used, uint64_t first, uint64_t step)
{
    uint8_t *buf = malloc(FILL_CHUNK);
    uint64_t done = 0;
    int ret = 0;

    if (!buf)
        return -ENOMEM;
    while (done < count && ret == 0) {
        uint64_t n = QED_MIN(count - done, (uint64_t)FILL_CHUNK / 8);

        for (uint64_t i = 0; i < n; i++)
            store_le64(buf + i * 8,
                       done + i < used ? first + (done + i) * step : 0);
        if (pwrite(fd, buf, n * 8, (off_t)(offset + done * 8)) !=
            (ssize_t)(n * 8))
            ret = errno ? -errno : -EIO;
        done += n;
    }
    free(buf);
    return ret;
}

static int write_zeros(int fd, uint64_t offset, uint64_t len)
{
    uint8_t *buf = calloc(1, FILL_CHUNK);
    int ret = 0;

    if (!buf)
        return -ENOMEM;
    while (len > 0 && ret == 0) {
        size_t n = (size_t)QED_MIN(len, (uint64_t)FILL_CHUNK);

        if (pwrite(fd, buf, n, (off_t)offset) != (ssize_t)n)
            ret = errno ? -errno : -EIO;
        offset += n;
        len -= n;
    }
    free(buf);
    return ret;
}

/* The data clusters: fallocate'd (their space is reserved and reads as
 * zeros), and for full written with zeros too. */
static int preallocate_data(int fd, const struct layout *l,
                            enum qed_preallocation mode, qed_error *err)
{
    uint64_t len = l->file_size - l->data_offset;
    int ret = 0;

    if (len == 0)
        return 0;
    errno = 0;
    if (fallocate(fd, 0, (off_t)l->data_offset, (off_t)len) < 0) {
        ret = -errno;
        /* full writes every byte anyway; falloc has no other way. */
        if (mode == QED_PREALLOC_FALLOC || (ret != -EOPNOTSUPP))
            return qedi_fail(err, -ret, "preallocation=%s: fallocate of "
                            "%" PRIu64 " bytes of data clusters: %s",
                            qed_preallocation_name(mode), len,
                            strerror(-ret));
    }
    if (mode == QED_PREALLOC_FULL) {
        ret = write_zeros(fd, l->data_offset, len);
        if (ret < 0)
            return qedi_fail(err, -ret, "preallocation=full: writing %" PRIu64
                            " bytes of zeros: %s", len, strerror(-ret));
    }
    return 0;
}

/* Everything but the header, made durable: until the header is written
 * the file has no QED magic and opens as no image at all. */
static int preallocate(int fd, const struct qed_header *h,
                       enum qed_preallocation mode, qed_error *err)
{
    struct layout l;
    int ret;

    plan_layout(h, mode, &l);
    ret = preallocate_data(fd, &l, mode, err);
    if (ret < 0)
        return ret;
    ret = write_entries(fd, l.tables_offset, l.tables * l.entries_per_table,
                        l.clusters, l.data_offset, h->cluster_size);
    if (ret == 0)
        ret = write_entries(fd, l.l1_offset, l.entries_per_table, l.tables,
                            l.tables_offset, l.table_bytes);
    if (ret == 0 && fsync(fd) < 0)
        ret = -errno;
    if (ret < 0)
        return qedi_fail(err, -ret, "preallocation=%s: writing the L1 table "
                        "and %" PRIu64 " L2 tables: %s",
                        qed_preallocation_name(mode), l.tables,
                        strerror(-ret));
    return 0;
}

static int write_new_image(int fd, const struct qed_header *h,
                           const char *backing, enum qed_preallocation mode,
                           qed_error *err)
{
    uint8_t *cluster = calloc(1, h->cluster_size);
    uint64_t file_size = h->l1_table_offset +
                         (uint64_t)h->table_size * h->cluster_size;
    int ret = 0;

    if (!cluster)
        return qedi_fail(err, ENOMEM, "out of memory");
    qedi_header_encode(h, cluster);
    if (h->backing_filename_size)
        memcpy(cluster + h->backing_filename_offset, backing,
               h->backing_filename_size);
    errno = 0;
    if (ftruncate(fd, 0) < 0)
        ret = qedi_fail(err, errno, "%s", strerror(errno));
    if (ret == 0 && mode != QED_PREALLOC_OFF)
        ret = preallocate(fd, h, mode, err);
    /* Without preallocation the L1 table is all zeros: left as a hole. */
    errno = 0;
    if (ret == 0 &&
        (pwrite(fd, cluster, h->cluster_size, 0) != (ssize_t)h->cluster_size ||
         (mode == QED_PREALLOC_OFF && ftruncate(fd, (off_t)file_size) < 0) ||
         fsync(fd) < 0))
        ret = qedi_fail(err, errno ? errno : EIO, "%s", strerror(errno));
    free(cluster);
    return ret;
}

/* The driver's create (ops/create.c checked the options and found the size
 * of the backing file). */
int qedi_qed_create(const char *path, const struct qed_create_options *o,
                      qed_error *err)
{
    bool has_backing = o->backing_file && o->backing_file[0];
    struct qed_header h;
    struct stat st;
    bool existed;
    int fd, ret;

    ret = qedi_header_init_new(&h, o->virtual_size, o->cluster_size, o->table_size,
                          has_backing ? strlen(o->backing_file) : 0,
                          o->backing_format == QED_FORMAT_RAW, err);
    if (ret < 0)
        return ret;
    existed = stat(path, &st) == 0;
    fd = qedi_io_open_fd(path, O_RDWR | O_CREAT, 0644, IO_KIND_REGULAR, err);
    if (fd < 0)
        return fd;
    /* Nothing is truncated under another program's feet. */
    ret = qedi_image_lock_for_create(fd, path, o->locking, err);
    if (ret == 0) {
        ret = write_new_image(fd, &h, o->backing_file, o->preallocation, err);
        /* Give the space back (ENOSPC) and leave nothing that could pass
         * for the image asked for. */
        if (ret < 0 && ftruncate(fd, 0) == 0 && !existed)
            unlink(path);
    }
    close(fd);
    return ret;
}
