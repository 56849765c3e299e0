/* Raw images: every request maps straight onto the file.  Used for raw
 * backing files, raw inputs of convert, and `-f raw` everywhere. */
#include <errno.h>
#include <linux/falloc.h>
#include <stdlib.h>

#include "image.h"

#define ZERO_CHUNK (1u << 20)

struct raw_zero {
    struct request *req;
    uint8_t *zeros;
    struct iovec *iov;
};

static void raw_done(void *opaque, int ret)
{
    struct request *req = opaque;
    request_complete(req, ret);
}

static void raw_zero_written(void *opaque, int ret)
{
    struct raw_zero *z = opaque;
    struct request *req = z->req;
    free(z->zeros);
    free(z->iov);
    free(z);
    request_complete(req, ret);
}

/* Writes zeros from one shared buffer repeated across the vector. */
static void write_zero_bytes(struct request *req)
{
    uint64_t n = (req->length + ZERO_CHUNK - 1) / ZERO_CHUNK;
    struct raw_zero *z = calloc(1, sizeof(*z));

    if (z) {
        z->zeros = qed_aligned_zalloc(ZERO_CHUNK);
        z->iov = calloc(n, sizeof(*z->iov));
    }
    if (!z || !z->zeros || !z->iov) {
        if (z) {
            free(z->zeros);
            free(z->iov);
        }
        free(z);
        request_complete(req, -ENOMEM);
        return;
    }
    z->req = req;
    for (uint64_t i = 0; i < n; i++) {
        z->iov[i].iov_base = z->zeros;
        z->iov[i].iov_len = QED_MIN((uint64_t)ZERO_CHUNK,
                                    req->length - i * ZERO_CHUNK);
    }
    io_writev(req->img->file, z->iov, (int)n, req->offset, raw_zero_written, z);
}

static void raw_zeroed(void *opaque, int ret)
{
    struct request *req = opaque;
    if ((ret == -EOPNOTSUPP || ret == -ENOTSUP || ret == -EINVAL) &&
        !(req->flags & QED_ZERO_NO_FALLBACK)) {
        write_zero_bytes(req);
        return;
    }
    request_complete(req, ret);
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

    memset(st, 0, sizeof(*st));
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

void raw_start(struct request *req)
{
    struct io_file *file = req->img->file;

    switch (req->kind) {
    case REQ_READ:
        io_readv(file, req->iov, req->iovcnt, req->offset, raw_done, req);
        break;
    case REQ_WRITE:
        io_writev(file, req->iov, req->iovcnt, req->offset, raw_done, req);
        break;
    case REQ_ZEROES:
        io_fallocate(file,
                     ((req->flags & QED_ZERO_MAY_UNMAP) ? FALLOC_FL_PUNCH_HOLE
                                                        : FALLOC_FL_ZERO_RANGE) |
                         FALLOC_FL_KEEP_SIZE,
                     req->offset, req->length, raw_zeroed, req);
        break;
    case REQ_DISCARD:
        io_fallocate(file, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                     req->offset, req->length, raw_discarded, req);
        break;
    case REQ_FLUSH:
        io_sync(file, raw_done, req);
        break;
    case REQ_STATUS:
        raw_status(req);
        break;
    }
}
