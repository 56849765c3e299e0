/* SPDX-License-Identifier: MIT */
/* The QED driver's backing file name: the name stored after the header
 * fields (and past the first block when it is long), and the features
 * that say whether there is one and whether its format is probed.  The
 * new name is written and flushed before the header that points at it, so
 * a crash leaves the old header with the old name or the new one whole. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "qed-image.h"

/* Does a backing file name of len bytes fit the header? */
static int check_backing_name(qed_image *img, size_t len, qed_error *err)
{
    const struct qed_state *s = qed_of(img);
    uint64_t room = s->header_bytes - QED_HEADER_BYTES;

    if (len > QED_MAX_BACKING_NAME)
        return qedi_fail(err, ENAMETOOLONG, "backing file name is %zu bytes; "
                        "at most %u are accepted", len, QED_MAX_BACKING_NAME);
    if (len > room)
        return qedi_fail(err, ENAMETOOLONG, "backing file name is %zu bytes; "
                        "at most %" PRIu64 " fit in the header (header size "
                        "%" PRIu64 " bytes)", len, room, s->header_bytes);
    return 0;
}

/* Writes the part of the name past the first block (into header space
 * that only the new header will point at), then flushes. */
static int write_name_tail(qed_image *img, const char *name, size_t len)
{
    uint64_t end = QED_HEADER_BYTES + (uint64_t)len;
    uint64_t span = round_up_u64(end, QED_HEADER_BLOCK_SIZE) - QED_HEADER_BLOCK_SIZE;
    uint8_t *buf;
    int ret;

    if (end <= QED_HEADER_BLOCK_SIZE)
        return 0;
    buf = qedi_aligned_alloc(span);
    if (!buf)
        return -ENOMEM;
    ret = qedi_io_pread_sync(img->file, buf, span, QED_HEADER_BLOCK_SIZE);
    if (ret == 0) {
        size_t head = QED_HEADER_BLOCK_SIZE - QED_HEADER_BYTES;
        memcpy(buf, name + head, len - head);
        ret = qedi_io_pwrite_sync(img->file, buf, span, QED_HEADER_BLOCK_SIZE);
    }
    if (ret == 0)
        ret = qedi_io_sync_sync(img->file);
    free(buf);
    return ret;
}

static int rewrite_header(qed_image *img, const char *name, bool no_probe,
                          qed_error *err)
{
    struct qed_state *s = qed_of(img);
    struct qed_header old = s->header;
    size_t len = strlen(name);
    uint8_t *saved = malloc(QED_HEADER_BLOCK_SIZE);
    uint64_t features;
    int ret;

    if (!saved)
        return qedi_fail(err, ENOMEM, "out of memory");
    ret = write_name_tail(img, name, len);
    if (ret < 0) {
        free(saved);
        return qedi_fail(err, -ret, "writing the backing file name: %s",
                        strerror(-ret));
    }
    memcpy(saved, s->header_block, QED_HEADER_BLOCK_SIZE);
    /* The old name's bytes in the first block go; the new one follows the
     * fields. */
    if (old.features & QED_F_BACKING_FILE) {
        uint64_t from = old.backing_filename_offset;
        uint64_t to = from + old.backing_filename_size;
        if (from < QED_HEADER_BLOCK_SIZE)
            memset(s->header_block + from, 0,
                   QED_MIN(to, (uint64_t)QED_HEADER_BLOCK_SIZE) - from);
    }
    memcpy(s->header_block + QED_HEADER_BYTES, name,
           QED_MIN(len, (size_t)(QED_HEADER_BLOCK_SIZE - QED_HEADER_BYTES)));
    features = s->header.features &
               ~(QED_F_BACKING_FILE | QED_F_BACKING_FORMAT_NO_PROBE);
    if (len > 0)
        features |= QED_F_BACKING_FILE;
    if (len > 0 && no_probe)
        features |= QED_F_BACKING_FORMAT_NO_PROBE;
    s->header.backing_filename_offset = len ? QED_HEADER_BYTES : 0;
    s->header.backing_filename_size = (uint32_t)len;
    /* Whatever autoclear bits meant, this writer did not keep them. */
    s->header.autoclear_features = 0;
    ret = qedi_image_write_header(img, features);
    if (ret < 0) {
        s->header = old;
        memcpy(s->header_block, saved, QED_HEADER_BLOCK_SIZE);
        free(saved);
        return qedi_fail(err, -ret, "writing the header: %s", strerror(-ret));
    }
    free(saved);
    memcpy(s->backing_name, name, len + 1);
    return 0;
}

/* The image's view of its backing file follows the header. */
static int note_backing(qed_image *img, const char *name, bool no_probe,
                        qed_error *err)
{
    char *copy = name[0] ? strdup(name) : NULL;

    if (name[0] && !copy)
        return qedi_fail(err, ENOMEM, "out of memory");
    free(img->backing_name);
    img->backing_name = copy;
    img->backing_raw = copy && no_probe;
    return 0;
}

int qedi_qed_check_backing_name(qed_image *img, const char *name,
                                  qed_error *err)
{
    return check_backing_name(img, strlen(name), err);
}

int qedi_qed_set_backing(qed_image *img, const char *name, bool raw,
                           qed_error *err)
{
    int ret = check_backing_name(img, strlen(name), err);

    if (ret == 0)
        ret = rewrite_header(img, name, raw, err);
    if (ret == 0)
        ret = note_backing(img, name, raw, err);
    return ret;
}


