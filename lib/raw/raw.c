/* SPDX-License-Identifier: MIT */
/* The raw format driver: every request maps straight onto the file.  Used
 * for raw backing files, raw inputs of convert, and `-f raw` everywhere. */
#include <errno.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <stdlib.h>

#include "driver.h"

/* What a writable raw image opened by probing keeps of its first sector,
 * so that no write can make it probe as another format: the driver's
 * state (NULL for every other raw image). */
struct probed_raw {
    uint8_t sector[PROBE_SECTOR_SIZE]; /* its content on disk */
    bool unknown;             /* a write into it failed: its content on
                                 disk may be old or new, byte by byte */
    struct request *current;  /* the change to it in flight, or NULL */
    uint8_t pending[PROBE_SECTOR_SIZE]; /* its content after that change */
    struct raw_request *queue, **queue_tail; /* changes waiting for it */
};

struct raw_request {
    struct request base;
    struct raw_request *next; /* in the first sector's queue */
};

/* The front allocates request_size bytes and frees them as a struct
 * request: that must be the first member. */
_Static_assert(offsetof(struct raw_request, base) == 0,
               "struct request first");

static struct raw_request *raw_request_of(struct request *req)
{
    return (struct raw_request *)((char *)req -
                                  offsetof(struct raw_request, base));
}

static struct probed_raw *probed_raw_of(const qed_image *img)
{
    return img->driver_state;
}

#define ZERO_CHUNK (1u << 20)

struct raw_zero {
    struct request *req;
    uint8_t *zeros;
    struct iovec *iov;
};

static void raw_finish(struct request *req, int ret);

static void raw_done(void *opaque, int ret)
{
    raw_finish(opaque, ret);
}

static void raw_zero_written(void *opaque, int ret)
{
    struct raw_zero *z = opaque;
    struct request *req = z->req;
    free(z->zeros);
    free(z->iov);
    free(z);
    raw_finish(req, ret);
}

/* Writes zeros from one shared buffer repeated across the vector. */
static void write_zero_bytes(struct request *req)
{
    uint64_t n = (req->length + ZERO_CHUNK - 1) / ZERO_CHUNK;
    struct raw_zero *z = calloc(1, sizeof(*z));

    if (z) {
        z->zeros = qedi_aligned_zalloc(ZERO_CHUNK);
        z->iov = calloc(n, sizeof(*z->iov));
    }
    if (!z || !z->zeros || !z->iov) {
        if (z) {
            free(z->zeros);
            free(z->iov);
        }
        free(z);
        raw_finish(req, -ENOMEM);
        return;
    }
    z->req = req;
    for (uint64_t i = 0; i < n; i++) {
        z->iov[i].iov_base = z->zeros;
        z->iov[i].iov_len = QED_MIN((uint64_t)ZERO_CHUNK,
                                    req->length - i * ZERO_CHUNK);
    }
    qedi_io_writev(req->img->file, z->iov, (int)n, req->offset, raw_zero_written, z);
}

static void raw_zeroed(void *opaque, int ret)
{
    struct request *req = opaque;
    if ((ret == -EOPNOTSUPP || ret == -ENOTSUP || ret == -EINVAL) &&
        !(req->flags & QED_ZERO_NO_FALLBACK)) {
        write_zero_bytes(req);
        return;
    }
    raw_finish(req, ret);
}

static void raw_discarded(void *opaque, int ret)
{
    /* Discard is advisory: a file system that cannot punch keeps the data. */
    if (ret == -EOPNOTSUPP || ret == -ENOTSUP || ret == -EINVAL)
        ret = 0;
    raw_done(opaque, ret);
}

/* Block status of a raw file: data where the file has data, zeros in holes,
 * always at the same offset. */
static void raw_status(struct request *req)
{
    struct io_file *file = req->img->file;
    struct qed_block_status *st = req->status;
    uint64_t end = req->offset + req->length;
    uint64_t next;
    int ret;

    qedi_abi_clear(&qedi_abi_block_status, st);
    st->present = st->has_offset = true;
    st->offset = req->offset;
    ret = file->ops->seek(file, req->offset, true, &next);
    if (ret == 0 && next > req->offset) {
        st->zero = true;
        st->length = QED_MIN(next, end) - req->offset;
    } else if (ret == -ENXIO) {
        st->zero = true;
        st->length = req->length;
    } else {
        st->data = true;
        if (ret == 0 && file->ops->seek(file, req->offset, false, &next) == 0)
            st->length = QED_MIN(next, end) - req->offset;
        else
            st->length = req->length;
        if (st->length == 0)
            st->length = req->length;
    }
    request_complete(req, 0);
}

/* ---- the first sector of a probed raw image ------------------------------
 *
 * A raw image opened writable without a format given would be probed
 * again at its next open.  A guest must not be able to turn it into a QED
 * (or qcow2, VMDK...) image whose backing file is a host file, so every
 * change to its first sector is checked against what the sector would then
 * hold.  Such changes run one at a time, so the copy kept in memory is
 * exactly what is on disk; they are rare (a partition table, a boot
 * sector), so waiting costs nothing that matters. */

static bool touches_first_sector(const struct request *req)
{
    return probed_raw_of(req->img) && req->kind != REQ_READ &&
           req->kind != REQ_FLUSH && req->kind != REQ_STATUS &&
           req->offset < PROBE_SECTOR_SIZE && req->length > 0;
}

/* What the first sector holds after req, into candidate; fails when its
 * content before req is unknown and req does not replace all of it. */
static int first_sector_after(struct request *req, uint8_t *candidate)
{
    struct probed_raw *pr = probed_raw_of(req->img);
    uint64_t len = QED_MIN(req->length, PROBE_SECTOR_SIZE - req->offset);

    if (pr->unknown && !(req->offset == 0 && len == PROBE_SECTOR_SIZE &&
                         req->kind == REQ_WRITE))
        return qedi_fail(&req->err, EPERM, "the first sector of this raw "
                        "image (format probed) is in an unknown state after "
                        "a failed write: only a write of the whole sector is "
                        "allowed; give the format (-f raw) to lift this "
                        "restriction");
    memcpy(candidate, pr->sector, PROBE_SECTOR_SIZE);
    /* Write-zeroes and discard leave zeros (discard may also leave the old
     * bytes: those were checked when they were written). */
    if (req->kind == REQ_WRITE)
        qedi_iov_to_buf(req->iov, req->iovcnt, 0, candidate + req->offset, len);
    else
        memset(candidate + req->offset, 0, len);
    return 0;
}

static int check_first_sector(struct request *req, uint8_t *candidate)
{
    const char *format;
    int ret = first_sector_after(req, candidate);

    if (ret < 0)
        return ret;
    format = qedi_probe_is_qed(candidate) ? "qed" : qedi_probe_foreign_format(candidate);
    if (format)
        return qedi_fail(&req->err, EPERM, "write to the first sector refused: "
                        "this raw image's format was probed, and the data "
                        "would make it probe as %s; give the format (-f raw) "
                        "to allow it", format);
    return 0;
}

static void raw_submit(struct request *req);

/* Starts a change of the first sector, or queues it behind the one in
 * flight. */
static void first_sector_start(struct request *req)
{
    struct probed_raw *pr = probed_raw_of(req->img);
    int ret;

    if (pr->current) {
        struct raw_request *waiting = raw_request_of(req);
        waiting->next = NULL;
        *pr->queue_tail = waiting;
        pr->queue_tail = &waiting->next;
        return;
    }
    ret = check_first_sector(req, pr->pending);
    if (ret < 0) {
        request_complete(req, ret);
        return;
    }
    pr->current = req;
    raw_submit(req);
}

/* The change in flight is done: the copy follows the disk, and the next
 * change starts. */
static void first_sector_done(struct probed_raw *pr, int ret)
{
    struct raw_request *next = pr->queue;

    if (ret < 0) {
        pr->unknown = true;
    } else if (pr->current->kind != REQ_DISCARD) {
        memcpy(pr->sector, pr->pending, PROBE_SECTOR_SIZE);
        pr->unknown = false;
    } else if (memcmp(pr->sector, pr->pending, PROBE_SECTOR_SIZE) != 0) {
        /* Discard is advisory: each byte it covered is now old or zero. */
        pr->unknown = true;
    }
    pr->current = NULL;
    if (next) {
        pr->queue = next->next;
        if (!pr->queue)
            pr->queue_tail = &pr->queue;
        next->next = NULL;
        first_sector_start(&next->base);
    }
}

/* Every raw request ends here. */
static void raw_finish(struct request *req, int ret)
{
    struct probed_raw *pr = probed_raw_of(req->img);

    request_complete(req, ret);
    if (pr && pr->current == req)
        first_sector_done(pr, ret);
}

static void raw_submit(struct request *req)
{
    struct io_file *file = req->img->file;

    switch (req->kind) {
    case REQ_READ:
        qedi_io_readv(file, req->iov, req->iovcnt, req->offset, raw_done, req);
        break;
    case REQ_WRITE:
        qedi_io_writev(file, req->iov, req->iovcnt, req->offset, raw_done, req);
        break;
    case REQ_ZEROES:
        qedi_io_fallocate(file,
                     ((req->flags & QED_ZERO_MAY_UNMAP) ? FALLOC_FL_PUNCH_HOLE
                                                        : FALLOC_FL_ZERO_RANGE) |
                         FALLOC_FL_KEEP_SIZE,
                     req->offset, req->length, raw_zeroed, req);
        break;
    case REQ_DISCARD:
        qedi_io_fallocate(file, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                     req->offset, req->length, raw_discarded, req);
        break;
    case REQ_FLUSH:
        qedi_io_sync(file, raw_done, req);
        break;
    case REQ_STATUS:
        raw_status(req);
        break;
    }
}

static void raw_start(struct request *req)
{
    if (touches_first_sector(req))
        first_sector_start(req);
    else
        raw_submit(req);
}

/* ---- the driver ------------------------------------------------------------- */

/* Writes into the first sector of a raw image whose format was probed are
 * checked from now on: the next probing open must find raw again. */
static int guard_probed_raw(qed_image *img, const uint8_t *first_block,
                            qed_error *err)
{
    struct probed_raw *pr = calloc(1, sizeof(*pr));

    if (!pr)
        return qedi_fail(err, ENOMEM, "out of memory");
    memcpy(pr->sector, first_block, PROBE_SECTOR_SIZE);
    pr->queue_tail = &pr->queue;
    img->driver_state = pr;
    qedi_image_warn(img, "the format was not given and probing guessed raw: "
               "writes that would make the first sector look like another "
               "image format are refused; give the format (-f raw) to lift "
               "this restriction");
    return 0;
}

static int raw_open(qed_image *img, const struct format_open *how,
                    qed_error *err)
{
    int ret = img->file->ops->get_size(img->file, &img->size);

    if (ret < 0)
        return qedi_fail(err, -ret, "%s", strerror(-ret));
    /* Like qemu, a raw image is a whole number of 512-byte sectors; the
     * partial last one reads as zeros past the end of the file. */
    img->size = round_up_u64(img->size, QED_SECTOR_SIZE);
    if (how->probed && img->writable)
        return guard_probed_raw(img, how->first_block, err);
    return 0;
}

static int raw_close(qed_image *img, qed_error *err)
{
    int ret = qedi_io_sync_sync(img->file);

    if (ret < 0)
        return qedi_fail(err, -ret, "flush: %s", strerror(-ret));
    return 0;
}

/* ---- resize --------------------------------------------------------------- */

static int resize_raw(qed_image *img, uint64_t size, unsigned flags,
                      qed_error *err)
{
    uint64_t current;
    int ret = img->file->ops->get_size(img->file, &current);

    if (ret < 0)
        return qedi_fail(err, -ret, "size of '%s': %s", img->filename,
                        strerror(-ret));
    if (size < current && !(flags & QED_RESIZE_SHRINK))
        return qedi_fail(err, EINVAL, "shrinking from %" PRIu64 " to %" PRIu64
                        " bytes deletes data: it needs the shrink flag "
                        "(--shrink)", current, size);
    if (size > QED_MAX_VIRTUAL_SIZE)
        return qedi_fail(err, EFBIG, "size %" PRIu64 " exceeds the largest "
                        "supported size %" PRIu64, size,
                        (uint64_t)QED_MAX_VIRTUAL_SIZE);
    if (size != current) {
        ret = img->file->ops->truncate(img->file, size);
        if (ret < 0)
            return qedi_fail(err, -ret, "truncating '%s' to %" PRIu64
                            " bytes: %s", img->filename, size,
                            strerror(-ret));
    }
    ret = qedi_io_sync_sync(img->file);
    if (ret < 0)
        return qedi_fail(err, -ret, "flushing '%s': %s", img->filename,
                        strerror(-ret));
    /* As the open does: whole sectors, the partial last one reads zeros. */
    img->size = round_up_u64(size, QED_SECTOR_SIZE);
    return 0;
}

/* Raw files: the new bytes reserved (falloc) or written (full). */
static int preallocate_raw(qed_image *img, uint64_t old_size,
                           enum qed_preallocation mode, qed_error *err)
{
    int ret;

    uint64_t size;

    if (mode == QED_PREALLOC_OFF)
        return 0;
    ret = img->file->ops->get_size(img->file, &size);
    if (ret < 0)
        return qedi_fail(err, -ret, "size of '%s': %s", img->filename,
                        strerror(-ret));
    if (size <= old_size)
        return 0;
    ret = qedi_image_preallocate(img, old_size, size - old_size, mode, err);
    if (ret == 0)
        ret = qedi_image_flush(img, err);
    return ret;
}

/* The file is truncated or extended; what grows is preallocated as asked. */
static int raw_resize(qed_image *img, uint64_t size, unsigned flags,
                      qed_error *err)
{
    enum qed_preallocation mode = (flags & QED_RESIZE_PREALLOC_MASK) >> 4;
    uint64_t old_size = img->size;
    int ret;

    /* The file's own length: what is past it is what grows. */
    if (mode != QED_PREALLOC_OFF &&
        (ret = img->file->ops->get_size(img->file, &old_size)) < 0)
        return qedi_fail(err, -ret, "size of '%s': %s", img->filename,
                        strerror(-ret));
    ret = resize_raw(img, size, flags, err);
    return ret < 0 ? ret : preallocate_raw(img, old_size, mode, err);
}

static void raw_free(qed_image *img)
{
    free(img->driver_state);
    img->driver_state = NULL;
}

const struct format_driver qedi_raw_format_driver = {
    .name = "raw",
    .format = QED_FORMAT_RAW,
    .request_size = sizeof(struct raw_request),
    .open = raw_open,
    .start = raw_start,
    .close = raw_close,
    .free = raw_free,
    .resize = raw_resize,
};
