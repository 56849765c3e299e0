/* SPDX-License-Identifier: MIT */
/* The QED format driver: opening an image (the header validated against
 * the file, the L1 table loaded, the engine state prepared), the dirty-bit
 * life cycle (the check on open, the clean mark on close), and what `info`
 * reports of the format.  Requests run in qed-request.c. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "driver.h"
#include "qed-image.h"

/* ---- QED open -------------------------------------------------------------- */

static void derive_geometry(struct qed_state *s, uint64_t file_size)
{
    s->cluster_size = s->header.cluster_size;
    s->cluster_bits = log2_u64(s->cluster_size);
    s->table_bytes = (uint64_t)s->header.table_size * s->cluster_size;
    s->table_entries = s->table_bytes / 8u;
    s->table_bits = log2_u64(s->table_entries);
    s->header_bytes = (uint64_t)s->header.header_size * s->cluster_size;
    /* QEMU rounds a partial last cluster down; we never leave one, and
     * rounding up keeps new clusters clear of whatever is there. */
    s->file_end = round_up_u64(file_size, s->cluster_size);
    s->tail_gap_start = round_down_u64(file_size, s->cluster_size);
    s->tail_gap_end = s->file_end;
}

static int read_backing_name(qed_image *img, qed_error *err)
{
    struct qed_state *s = qed_of(img);
    const struct qed_header *h = &s->header;
    uint64_t end = (uint64_t)h->backing_filename_offset +
                   h->backing_filename_size;
    uint8_t *buf;
    int ret;

    if (!(h->features & QED_F_BACKING_FILE))
        return 0;
    if (end <= QED_HEADER_BLOCK_SIZE)
        return qedi_header_backing_name(h, s->header_block, QED_HEADER_BLOCK_SIZE,
                                   s->backing_name,
                                   sizeof(s->backing_name), err);
    /* The name lies further into the header clusters: read just it. */
    buf = calloc(1, h->backing_filename_size);
    if (!buf)
        return qedi_fail(err, ENOMEM, "out of memory");
    ret = qedi_image_read_exact(img->file, buf, h->backing_filename_size,
                     h->backing_filename_offset, err, "the backing file name");
    if (ret == 0 && memchr(buf, 0, h->backing_filename_size))
        ret = qedi_fail(err, EINVAL, "backing file name contains a NUL byte");
    if (ret == 0) {
        memcpy(s->backing_name, buf, h->backing_filename_size);
        s->backing_name[h->backing_filename_size] = '\0';
    }
    free(buf);
    return ret;
}

static int open_qed_state(qed_image *img, size_t cache_bytes, qed_error *err)
{
    struct qed_state *s = calloc(1, sizeof(*s));
    uint64_t file_size;
    int ret;

    if (!s)
        return qedi_fail(err, ENOMEM, "out of memory");
    img->driver_state = s;
    s->header_block = qedi_aligned_zalloc(QED_HEADER_BLOCK_SIZE);
    if (!s->header_block)
        return qedi_fail(err, ENOMEM, "out of memory");
    ret = img->file->ops->get_size(img->file, &file_size);
    if (ret < 0)
        return qedi_fail(err, -ret, "%s", strerror(-ret));
    if (file_size < QED_HEADER_BYTES)
        return qedi_fail(err, EINVAL, "file is too short for a QED header "
                        "(%" PRIu64 " bytes)", file_size);
    ret = qedi_image_read_exact(img->file, s->header_block, QED_HEADER_BLOCK_SIZE, 0,
                           err,
                     "the header");
    if (ret < 0)
        return ret;
    qedi_header_decode(s->header_block, &s->header);
    ret = qedi_header_validate(&s->header, file_size, err);
    if (ret < 0)
        return ret;
    derive_geometry(s, file_size);
    s->size_ensured = file_size;
    img->size = s->header.image_size;
    ret = read_backing_name(img, err);
    if (ret < 0)
        return ret;
    s->l1 = qedi_aligned_alloc(s->table_bytes);
    if (!s->l1)
        return qedi_fail(err, ENOMEM, "cannot allocate the L1 table (%" PRIu64
                        " bytes)", s->table_bytes);
    ret = qedi_image_read_exact(img->file, s->l1, s->table_bytes,
                     s->header.l1_table_offset, err, "the L1 table");
    if (ret < 0)
        return ret;
    qedi_table_poison_invalid(s, s->l1, s->table_entries, s->table_bytes);
    if (qedi_table_index_build(s) < 0)
        return qedi_fail(err, ENOMEM, "out of memory");
    if (qedi_l2cache_new(cache_bytes, s->table_bytes, &s->l2cache) < 0)
        return qedi_fail(err, ENOMEM, "out of memory");
    s->dirty_durable = (s->header.features & QED_F_NEED_CHECK) != 0;
    return 0;
}

/* Unknown autoclear bits mean another program's extension data may now be
 * stale: a writer clears them, a reader leaves the file alone. */
static int clear_autoclear(qed_image *img, qed_error *err)
{
    struct qed_state *s = qed_of(img);
    int ret;

    if (!img->writable || s->header.autoclear_features == 0)
        return 0;
    s->header.autoclear_features = 0;
    ret = qedi_image_write_header(img, s->header.features);
    if (ret < 0)
        return qedi_fail(err, -ret, "clearing autoclear features: %s",
                        strerror(-ret));
    return 0;
}


/* The file ends exactly at the last cluster handed out: space extended
 * ahead and not used is trimmed, and no cluster sticks out past the end. */
static int settle_file_size(qed_image *img)
{
    struct qed_state *s = qed_of(img);
    uint64_t size;
    int ret = img->file->ops->get_size(img->file, &size);

    if (ret == 0 && size != s->file_end)
        ret = img->file->ops->truncate(img->file, s->file_end);
    return ret;
}

/* Clusters that failed allocations leaked and could not give back stay
 * for the check on the next read-write open: the image stays dirty. */
static int keep_dirty(qed_image *img, qed_error *err)
{
    struct qed_state *s = qed_of(img);
    int ret;

    if (s->dirty_durable)
        return 0;
    ret = qedi_image_write_header(img, s->header.features | QED_F_NEED_CHECK);
    if (ret < 0)
        return qedi_fail(err, -ret, "marking the image dirty for its leaked "
                        "clusters: %s", strerror(-ret));
    return 0;
}

/* A clean close makes everything durable, then clears NEED_CHECK. */
static int mark_clean(qed_image *img, qed_error *err)
{
    struct qed_state *s = qed_of(img);
    int ret;

    qedi_alloc_give_back(img);
    /* Marked first: a flush that fails must not leave the leaks unmarked. */
    if (qedi_alloc_leaks_outstanding(s) && (ret = keep_dirty(img, err)) < 0)
        return ret;
    ret = settle_file_size(img);
    if (ret == 0)
        ret = qedi_io_sync_sync(img->file);

    if (ret < 0)
        return qedi_fail(err, -ret, "flush: %s", strerror(-ret));
    if (qedi_alloc_leaks_outstanding(s))
        return 0;
    if (!(s->header.features & QED_F_NEED_CHECK) || s->unchecked_dirty)
        return 0;
    ret = qedi_image_write_header(img, s->header.features & ~QED_F_NEED_CHECK);
    if (ret < 0)
        return qedi_fail(err, -ret, "clearing the dirty flag: %s",
                        strerror(-ret));
    return 0;
}

/* ---- the driver ------------------------------------------------------------- */

static bool driver_probe(const uint8_t *first_block)
{
    return qedi_probe_is_qed(first_block);
}

static int driver_open(qed_image *img, const struct format_open *how,
                    qed_error *err)
{
    struct qed_state *s;
    int ret = open_qed_state(img, how->options->l2_cache_bytes, err);

    if (ret == 0)
        ret = clear_autoclear(img, err);
    if (ret < 0)
        return ret;
    s = qed_of(img);
    img->cluster_size = s->cluster_size;
    if (s->header.features & QED_F_BACKING_FILE) {
        img->backing_name = strdup(s->backing_name);
        if (!img->backing_name)
            return qedi_fail(err, ENOMEM, "out of memory");
        img->backing_raw =
            (s->header.features & QED_F_BACKING_FORMAT_NO_PROBE) != 0;
    }
    return 0;
}

/* The check runs with the chain open: a repair may need to know what the
 * backing file covers. */
static int driver_activate(qed_image *img, const struct qed_open_options *o,
                        qed_error *err)
{
    struct qed_state *s = qed_of(img);

    if (img->writable && !(o->flags & QED_OPEN_NO_CHECK))
        return qedi_check_on_open(img, err);
    if ((o->flags & QED_OPEN_NO_CHECK) &&
        (s->header.features & QED_F_NEED_CHECK))
        s->unchecked_dirty = true;
    return 0;
}

static void driver_free(qed_image *img)
{
    struct qed_state *s = qed_of(img);

    if (!s)
        return;
    qedi_alloc_free_slots(s);
    qedi_l2cache_free(s->l2cache);
    free(s->table_offsets);
    free(s->abandoned);
    free(s->l1);
    free(s->header_block);
    free(s);
    img->driver_state = NULL;
}

static void driver_get_info(qed_image *img, struct qed_image_info *info)
{
    const struct qed_header *h = &qed_of(img)->header;

    info->dirty = (h->features & QED_F_NEED_CHECK) != 0;
    info->cluster_size = h->cluster_size;
    info->table_size = h->table_size;
    info->header_size = h->header_size;
    info->features = h->features;
    info->compat_features = h->compat_features;
    info->autoclear_features = h->autoclear_features;
    info->l1_table_offset = h->l1_table_offset;
}

const struct format_driver qedi_qed_format_driver = {
    .name = "qed",
    .format = QED_FORMAT_QED,
    .request_size = sizeof(struct qed_request),
    .probe = driver_probe,
    .open = driver_open,
    .activate = driver_activate,
    .start = qedi_qed_request_start,
    .finish = qedi_qed_request_finish,
    .quiesce = qedi_alloc_quiesce,
    .close = mark_clean,
    .free = driver_free,
    .get_info = driver_get_info,
    .resize = qedi_qed_resize,
    .check_backing_name = qedi_qed_check_backing_name,
    .set_backing = qedi_qed_set_backing,
    .busy = qedi_qed_busy,
    .check = qedi_qed_check,
    .compact = qedi_qed_compact,
    .create = qedi_qed_create,
};
