/* SPDX-License-Identifier: MIT */
/* The QED header: byte layout, validation and the layout of new images. */
#include <errno.h>
#include <inttypes.h>

#include "header.h"
#include "base.h"

/* Byte offsets of the fixed fields inside the first header cluster. */
enum {
    OFF_MAGIC = 0,
    OFF_CLUSTER_SIZE = 4,
    OFF_TABLE_SIZE = 8,
    OFF_HEADER_SIZE = 12,
    OFF_FEATURES = 16,
    OFF_COMPAT_FEATURES = 24,
    OFF_AUTOCLEAR_FEATURES = 32,
    OFF_L1_TABLE_OFFSET = 40,
    OFF_IMAGE_SIZE = 48,
    OFF_BACKING_NAME_OFFSET = 56,
    OFF_BACKING_NAME_SIZE = 60,
};

/* Each table entry is a 64-bit cluster offset. */
#define TABLE_ENTRY_LOG2 3u

void qedi_header_decode(const uint8_t buf[QED_HEADER_BYTES], struct qed_header *h)
{
    h->magic = load_le32(buf + OFF_MAGIC);
    h->cluster_size = load_le32(buf + OFF_CLUSTER_SIZE);
    h->table_size = load_le32(buf + OFF_TABLE_SIZE);
    h->header_size = load_le32(buf + OFF_HEADER_SIZE);
    h->features = load_le64(buf + OFF_FEATURES);
    h->compat_features = load_le64(buf + OFF_COMPAT_FEATURES);
    h->autoclear_features = load_le64(buf + OFF_AUTOCLEAR_FEATURES);
    h->l1_table_offset = load_le64(buf + OFF_L1_TABLE_OFFSET);
    h->image_size = load_le64(buf + OFF_IMAGE_SIZE);
    h->backing_filename_offset = load_le32(buf + OFF_BACKING_NAME_OFFSET);
    h->backing_filename_size = load_le32(buf + OFF_BACKING_NAME_SIZE);
}

void qedi_header_encode(const struct qed_header *h, uint8_t buf[QED_HEADER_BYTES])
{
    store_le32(buf + OFF_MAGIC, h->magic);
    store_le32(buf + OFF_CLUSTER_SIZE, h->cluster_size);
    store_le32(buf + OFF_TABLE_SIZE, h->table_size);
    store_le32(buf + OFF_HEADER_SIZE, h->header_size);
    store_le64(buf + OFF_FEATURES, h->features);
    store_le64(buf + OFF_COMPAT_FEATURES, h->compat_features);
    store_le64(buf + OFF_AUTOCLEAR_FEATURES, h->autoclear_features);
    store_le64(buf + OFF_L1_TABLE_OFFSET, h->l1_table_offset);
    store_le64(buf + OFF_IMAGE_SIZE, h->image_size);
    store_le32(buf + OFF_BACKING_NAME_OFFSET, h->backing_filename_offset);
    store_le32(buf + OFF_BACKING_NAME_SIZE, h->backing_filename_size);
}

bool qedi_header_cluster_size_valid(uint64_t cluster_size)
{
    return is_power_of_2(cluster_size) &&
           cluster_size >= QED_MIN_CLUSTER_SIZE &&
           cluster_size <= QED_MAX_CLUSTER_SIZE;
}

bool qedi_header_table_size_valid(uint64_t table_size)
{
    return is_power_of_2(table_size) && table_size >= QED_MIN_TABLE_SIZE &&
           table_size <= QED_MAX_TABLE_SIZE;
}

uint64_t qedi_header_max_image_size(uint32_t cluster_size, uint32_t table_size)
{
    /* Everything is a power of two, so add exponents instead of multiplying:
     * entries^2 * cluster_size needs up to 80 bits for 64 MiB clusters and
     * 16-cluster tables, and a 32-bit product (as QEMU uses) wraps to 0. */
    unsigned cluster_log2 = log2_u64(cluster_size);
    unsigned entries_log2 =
        log2_u64(table_size) + cluster_log2 - TABLE_ENTRY_LOG2;
    unsigned max_log2 = 2 * entries_log2 + cluster_log2;

    if (max_log2 >= 64)
        return UINT64_MAX;
    return UINT64_C(1) << max_log2;
}

static int check_cluster_size(uint32_t cluster_size, qed_error *err)
{
    if (qedi_header_cluster_size_valid(cluster_size))
        return 0;
    return qedi_fail(err, EINVAL,
                    "cluster size %" PRIu32
                    " is not a power of two in [%u, %u]",
                    cluster_size, QED_MIN_CLUSTER_SIZE, QED_MAX_CLUSTER_SIZE);
}

static int check_table_size(uint32_t table_size, qed_error *err)
{
    if (qedi_header_table_size_valid(table_size))
        return 0;
    return qedi_fail(err, EINVAL,
                    "table size %" PRIu32 " is not a power of two in [%u, %u]",
                    table_size, QED_MIN_TABLE_SIZE, QED_MAX_TABLE_SIZE);
}

/* Cluster and table sizes must already be valid. */
static int check_image_size(uint64_t image_size, uint32_t cluster_size,
                            uint32_t table_size, qed_error *err)
{
    uint64_t max = qedi_header_max_image_size(cluster_size, table_size);

    if (image_size % 512 != 0)
        return qedi_fail(err, EINVAL,
                        "image size %" PRIu64 " is not a multiple of 512",
                        image_size);
    if (image_size > max)
        return qedi_fail(err, EINVAL,
                        "image size %" PRIu64 " exceeds the maximum %" PRIu64
                        " for cluster size %" PRIu32 " and table size %" PRIu32,
                        image_size, max, cluster_size, table_size);
    if (image_size > QED_MAX_VIRTUAL_SIZE)
        return qedi_fail(err, EINVAL,
                        "image size %" PRIu64
                        " exceeds the largest supported size %" PRIu64,
                        image_size, (uint64_t)QED_MAX_VIRTUAL_SIZE);
    return 0;
}

static uint64_t header_bytes(const struct qed_header *h)
{
    /* At most 2^32 * 2^26: cannot overflow 64 bits. */
    return (uint64_t)h->header_size * h->cluster_size;
}

static int check_header_size(const struct qed_header *h, qed_error *err)
{
    if (h->header_size == 0)
        return qedi_fail(err, EINVAL, "header size 0 is invalid (at least 1 "
                                     "cluster holds the header fields)");
    /* This is also the rule that keeps the L1 table out of the header. */
    if (header_bytes(h) > h->l1_table_offset)
        return qedi_fail(err, EINVAL,
                        "header size %" PRIu32 " (%" PRIu64
                        " bytes) overlaps the L1 table at offset %" PRIu64,
                        h->header_size, header_bytes(h), h->l1_table_offset);
    return 0;
}

static int check_l1_table(const struct qed_header *h, uint64_t file_size,
                          qed_error *err)
{
    uint64_t table_bytes = (uint64_t)h->table_size * h->cluster_size;
    uint64_t end;

    if (h->l1_table_offset % h->cluster_size != 0)
        return qedi_fail(err, EINVAL,
                        "L1 table offset %" PRIu64
                        " is not a multiple of the cluster size %" PRIu32,
                        h->l1_table_offset, h->cluster_size);
    if (add_overflows(h->l1_table_offset, table_bytes, &end) ||
        end > file_size)
        return qedi_fail(err, EINVAL,
                        "L1 table at offset %" PRIu64 " (%" PRIu64
                        " bytes) extends past the end of the file (%" PRIu64
                        " bytes)",
                        h->l1_table_offset, table_bytes, file_size);
    return 0;
}

static int check_backing_name(const struct qed_header *h, qed_error *err)
{
    uint64_t offset = h->backing_filename_offset;
    uint64_t size = h->backing_filename_size;

    if (!(h->features & QED_F_BACKING_FILE))
        return 0;
    if (offset < QED_HEADER_BYTES)
        return qedi_fail(err, EINVAL,
                        "backing file name offset %" PRIu64
                        " overlaps the header fields (first %u bytes)",
                        offset, QED_HEADER_BYTES);
    if (size == 0)
        return qedi_fail(err, EINVAL, "backing file name size is 0");
    if (size > QED_MAX_BACKING_NAME)
        return qedi_fail(err, EINVAL,
                        "backing file name size %" PRIu64
                        " exceeds the limit of %u bytes",
                        size, QED_MAX_BACKING_NAME);
    if (offset + size > header_bytes(h))
        return qedi_fail(err, EINVAL,
                        "backing file name at offset %" PRIu64 " (%" PRIu64
                        " bytes) extends past the header (%" PRIu64 " bytes)",
                        offset, size, header_bytes(h));
    return 0;
}

int qedi_header_validate(const struct qed_header *h, uint64_t file_size,
                    qed_error *err)
{
    uint64_t unknown = h->features & ~QED_FEATURE_MASK;
    int ret;

    if (h->magic != QED_MAGIC)
        return qedi_fail(err, EINVAL, "not a QED image (magic 0x%08" PRIx32 ")",
                        h->magic);
    if (unknown)
        return qedi_fail(err, ENOTSUP, "Unsupported QED features: 0x%" PRIx64,
                        unknown);
    ret = check_cluster_size(h->cluster_size, err);
    if (ret == 0)
        ret = check_table_size(h->table_size, err);
    if (ret == 0)
        ret = check_header_size(h, err);
    if (ret == 0)
        ret = check_image_size(h->image_size, h->cluster_size, h->table_size,
                               err);
    if (ret == 0)
        ret = check_l1_table(h, file_size, err);
    if (ret == 0)
        ret = check_backing_name(h, err);
    return ret;
}

int qedi_header_backing_name(const struct qed_header *h, const uint8_t *buf,
                        size_t buf_len, char *out, size_t out_size,
                        qed_error *err)
{
    uint64_t offset = h->backing_filename_offset;
    size_t size = h->backing_filename_size;
    const uint8_t *nul;

    if (out_size == 0)
        return qedi_fail(err, EINVAL, "no room for the backing file name");
    if (!(h->features & QED_F_BACKING_FILE)) {
        out[0] = '\0';
        return 0;
    }
    if (offset + size > buf_len)
        return qedi_fail(err, EINVAL,
                        "backing file name at offset %" PRIu64
                        " (%zu bytes) lies past the %zu header bytes read",
                        offset, size, buf_len);
    if (size >= out_size)
        return qedi_fail(err, EINVAL,
                        "backing file name of %zu bytes does not fit in a "
                        "buffer of %zu bytes",
                        size, out_size);
    nul = memchr(buf + offset, '\0', size);
    if (nul)
        return qedi_fail(err, EINVAL,
                        "backing file name contains a NUL byte at position "
                        "%zu of %zu",
                        (size_t)(nul - (buf + offset)), size);
    memcpy(out, buf + offset, size);
    out[size] = '\0';
    return 0;
}

static int check_new_backing_name(size_t len, uint32_t cluster_size,
                                  qed_error *err)
{
    uint32_t room = cluster_size - QED_HEADER_BYTES;

    if (len > room)
        return qedi_fail(err, EINVAL,
                        "backing file name is %zu bytes; at most %" PRIu32
                        " fit in the header (cluster size %" PRIu32 ")",
                        len, room, cluster_size);
    /* Big clusters have room for more than readers accept. */
    if (len > QED_MAX_BACKING_NAME)
        return qedi_fail(err, EINVAL,
                        "backing file name is %zu bytes; at most %u are "
                        "accepted",
                        len, QED_MAX_BACKING_NAME);
    return 0;
}

int qedi_header_init_new(struct qed_header *h, uint64_t image_size,
                    uint32_t cluster_size, uint32_t table_size,
                    size_t backing_name_len, bool backing_no_probe,
                    qed_error *err)
{
    int ret = check_cluster_size(cluster_size, err);

    if (ret == 0)
        ret = check_table_size(table_size, err);
    if (ret == 0)
        ret = check_image_size(image_size, cluster_size, table_size, err);
    if (ret == 0 && backing_name_len > 0)
        ret = check_new_backing_name(backing_name_len, cluster_size, err);
    if (ret < 0)
        return ret;

    memset(h, 0, sizeof(*h));
    h->magic = QED_MAGIC;
    h->cluster_size = cluster_size;
    h->table_size = table_size;
    h->header_size = 1;
    h->l1_table_offset = cluster_size;
    h->image_size = image_size;
    if (backing_name_len > 0) {
        h->features = QED_F_BACKING_FILE;
        if (backing_no_probe)
            h->features |= QED_F_BACKING_FORMAT_NO_PROBE;
        h->backing_filename_offset = QED_HEADER_BYTES;
        h->backing_filename_size = (uint32_t)backing_name_len;
    }
    return 0;
}
