/* SPDX-License-Identifier: MIT */
/* Requests: the public asynchronous calls, their completion, and the state
 * machines that carry reads, writes, write-zeroes, discards, flushes and
 * block-status queries through a QED image one chunk at a time.
 *
 * A chunk lies within one L2 table and maps to one kind of extent.  Reads
 * and in-place writes go straight to the file; anything that changes a table
 * takes that table's allocation lock (alloc.c), so updates of one table run
 * in order while other tables proceed in parallel. */
#include <errno.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <stdlib.h>

#include "image.h"

/* ---- life cycle ------------------------------------------------------------ */

static void run_completion(struct loop_task *task)
{
    struct request *req = (struct request *)((char *)task -
                                              offsetof(struct request, task));
    qed_image *img = req->img;
    int ret = req->err.code ? -req->err.code : 0;

    img->in_flight--;
    req->cb(req->opaque, ret, ret ? &req->err : NULL);
    free(req->iov);
    free(req);
}

static void release_chunk(struct request *req)
{
    alloc_end(req);
    if (req->l2) {
        l2cache_put(req->img->qed->l2cache, req->l2);
        req->l2 = NULL;
    }
    free(req->chunk_iov);
    req->chunk_iov = NULL;
    free(req->head_buf);
    free(req->tail_buf);
    free(req->data_buf);
    req->head_buf = req->tail_buf = req->data_buf = NULL;
    free(req->saved_entries);
    req->saved_entries = NULL;
}

/* Ends the request: its callback runs from the loop, never from inside the
 * call that submitted it. */
void request_complete(struct request *req, int ret)
{
    if (req->img->qed) {
        if (ret < 0 && alloc_abandon(req, ret))
            return;
        release_chunk(req);
    }
    if (ret < 0 && req->err.code == 0)
        qed_fail(&req->err, -ret, "%s", strerror(-ret));
    if (ret == 0)
        qed_error_clear(&req->err);
    req->task.run = run_completion;
    loop_defer(req->img->loop, &req->task);
}

static void run_resume(struct loop_task *task)
{
    struct request *req = (struct request *)((char *)task -
                                              offsetof(struct request, task));
    req->resume(req);
}

void request_resume_later(struct request *req, void (*fn)(struct request *))
{
    req->resume = fn;
    req->task.run = run_resume;
    loop_defer(req->img->loop, &req->task);
}

static int fail_now(qed_error *err, int code, const char *what)
{
    return qed_fail(err, code, "%s", what);
}

static struct request *request_new(qed_image *img, enum request_kind kind,
                                   uint64_t offset, uint64_t length,
                                   qed_callback *cb, void *opaque)
{
    struct request *req = calloc(1, sizeof(*req));
    if (!req)
        return NULL;
    req->img = img;
    req->kind = kind;
    req->offset = req->pos = offset;
    req->length = length;
    req->cb = cb;
    req->opaque = opaque;
    return req;
}

static int check_range(const qed_image *img, uint64_t offset, uint64_t length)
{
    uint64_t end;
    if (add_overflows(offset, length, &end) || end > img->size)
        return -EINVAL;
    return 0;
}

static void dispatch(struct request *req)
{
    req->img->in_flight++;
    if (req->img->qed)
        qed_request_start(req);
    else
        raw_start(req);
}

static int submit_vector(qed_image *img, enum request_kind kind,
                         const struct iovec *iov, int iovcnt, uint64_t offset,
                         qed_callback *cb, void *opaque)
{
    uint64_t length = iov_size(iov, iovcnt);
    struct request *req;

    if (iovcnt < 0 || check_range(img, offset, length) < 0)
        return -EINVAL;
    if (kind == REQ_WRITE && !img->writable)
        return -EPERM;
    req = request_new(img, kind, offset, length, cb, opaque);
    if (!req)
        return -ENOMEM;
    req->iov = malloc(sizeof(*iov) * (size_t)(iovcnt ? iovcnt : 1));
    if (!req->iov) {
        free(req);
        return -ENOMEM;
    }
    memcpy(req->iov, iov, sizeof(*iov) * (size_t)iovcnt);
    req->iovcnt = iovcnt;
    dispatch(req);
    return 0;
}

int qed_aio_readv(qed_image *img, const struct iovec *iov, int iovcnt,
                  uint64_t offset, qed_callback *cb, void *opaque)
{
    return submit_vector(img, REQ_READ, iov, iovcnt, offset, cb, opaque);
}

int qed_aio_writev(qed_image *img, const struct iovec *iov, int iovcnt,
                   uint64_t offset, qed_callback *cb, void *opaque)
{
    return submit_vector(img, REQ_WRITE, iov, iovcnt, offset, cb, opaque);
}

static int submit_range(qed_image *img, enum request_kind kind,
                        uint64_t offset, uint64_t length, unsigned flags,
                        struct qed_block_status *status, qed_callback *cb,
                        void *opaque)
{
    struct request *req;

    if (check_range(img, offset, length) < 0)
        return -EINVAL;
    if ((kind == REQ_ZEROES || kind == REQ_DISCARD) && !img->writable)
        return -EPERM;
    req = request_new(img, kind, offset, length, cb, opaque);
    if (!req)
        return -ENOMEM;
    req->flags = flags;
    req->status = status;
    dispatch(req);
    return 0;
}

int qed_aio_write_zeroes(qed_image *img, uint64_t offset, uint64_t length,
                         unsigned flags, qed_callback *cb, void *opaque)
{
    return submit_range(img, REQ_ZEROES, offset, length, flags, NULL, cb,
                        opaque);
}

int qed_aio_discard(qed_image *img, uint64_t offset, uint64_t length,
                    qed_callback *cb, void *opaque)
{
    return submit_range(img, REQ_DISCARD, offset, length, 0, NULL, cb, opaque);
}

int qed_aio_flush(qed_image *img, qed_callback *cb, void *opaque)
{
    return submit_range(img, REQ_FLUSH, 0, 0, 0, NULL, cb, opaque);
}

int qed_aio_block_status(qed_image *img, uint64_t offset, uint64_t length,
                         struct qed_block_status *status, qed_callback *cb,
                         void *opaque)
{
    if (offset >= img->size || length == 0)
        return -EINVAL;
    length = QED_MIN(length, img->size - offset);
    return submit_range(img, REQ_STATUS, offset, length, 0, status, cb,
                        opaque);
}

/* ---- synchronous wrappers ------------------------------------------------- */

struct sync_call {
    bool done;
    int ret;
    qed_error *err;
};

static void sync_done(void *opaque, int ret, const qed_error *err)
{
    struct sync_call *c = opaque;
    c->done = true;
    c->ret = ret;
    if (ret < 0 && c->err && err)
        qed_error_copy(c->err, err);
}

int image_refuse_nested(const qed_image *img, const char *what,
                        qed_error *err)
{
    if (!loop_running(img->loop))
        return 0;
    return qed_fail(err, EDEADLK, "%s called from a callback running on the "
                    "image's loop: it would wait for itself; use the "
                    "asynchronous call there", what);
}

static int sync_wait(qed_image *img, int submitted, struct sync_call *c,
                     const char *what)
{
    if (submitted < 0) {
        if (submitted == -EINVAL)
            return qed_fail(c->err, EINVAL, "%s: range outside the image "
                            "(size %" PRIu64 ")", what, img->size);
        if (submitted == -EPERM)
            return qed_fail(c->err, EPERM, "%s: image is read-only", what);
        return fail_now(c->err, -submitted, strerror(-submitted));
    }
    while (!c->done) {
        int r = qed_loop_run(img->loop, -1);
        if (r < 0)
            return qed_fail(c->err, -r, "event loop: %s", strerror(-r));
    }
    return c->ret;
}

int qed_pread(qed_image *img, void *buf, size_t length, uint64_t offset,
              qed_error *err)
{
    struct sync_call c = { .err = err };
    struct iovec v = { buf, length };

    if (image_refuse_nested(img, "qed_pread", err) < 0)
        return -EDEADLK;
    return sync_wait(img, qed_aio_readv(img, &v, 1, offset, sync_done, &c),
                     &c, "read");
}

int qed_pwrite(qed_image *img, const void *buf, size_t length,
               uint64_t offset, qed_error *err)
{
    struct sync_call c = { .err = err };
    struct iovec v = { (void *)buf, length };

    if (image_refuse_nested(img, "qed_pwrite", err) < 0)
        return -EDEADLK;
    return sync_wait(img, qed_aio_writev(img, &v, 1, offset, sync_done, &c),
                     &c, "write");
}

int qed_write_zeroes(qed_image *img, uint64_t offset, uint64_t length,
                     unsigned flags, qed_error *err)
{
    struct sync_call c = { .err = err };

    if (image_refuse_nested(img, "qed_write_zeroes", err) < 0)
        return -EDEADLK;
    return sync_wait(img, qed_aio_write_zeroes(img, offset, length, flags,
                                               sync_done, &c),
                     &c, "write zeroes");
}

int qed_discard(qed_image *img, uint64_t offset, uint64_t length,
                qed_error *err)
{
    struct sync_call c = { .err = err };

    if (image_refuse_nested(img, "qed_discard", err) < 0)
        return -EDEADLK;
    return sync_wait(img, qed_aio_discard(img, offset, length, sync_done, &c),
                     &c, "discard");
}

int qed_flush(qed_image *img, qed_error *err)
{
    struct sync_call c = { .err = err };

    if (image_refuse_nested(img, "qed_flush", err) < 0)
        return -EDEADLK;
    return sync_wait(img, qed_aio_flush(img, sync_done, &c), &c, "flush");
}

int qed_block_status(qed_image *img, uint64_t offset, uint64_t length,
                     struct qed_block_status *status, qed_error *err)
{
    struct sync_call c = { .err = err };

    if (image_refuse_nested(img, "qed_block_status", err) < 0)
        return -EDEADLK;
    return sync_wait(img, qed_aio_block_status(img, offset, length, status,
                                               sync_done, &c),
                     &c, "block status");
}

/* ---- QED: common chunk handling ------------------------------------------- */

static uint64_t request_end(const struct request *req)
{
    return req->offset + req->length;
}

/* The chunk is done: drop what it held and move on. */
static void advance(struct request *req, uint64_t bytes,
                    void (*next)(struct request *))
{
    release_chunk(req);
    req->pos += bytes;
    /* Defer rather than recurse: a request over many small extents must not
     * grow the stack. */
    request_resume_later(req, next);
}

static void fail_io(struct request *req, int ret, const char *what)
{
    if (req->err.code == 0)
        qed_fail(&req->err, -ret, "%s: %s", what, strerror(-ret));
    request_complete(req, ret);
}

/* Sub-operation bookkeeping: a phase starts `pending` operations and moves on
 * when the last one finishes, or fails with the first error. */
static void sub_done(void *opaque, int ret)
{
    struct request *req = opaque;
    if (ret < 0 && req->sub_ret == 0)
        req->sub_ret = ret;
    if (--req->pending > 0)
        return;
    if (req->sub_ret < 0) {
        int r = req->sub_ret;
        req->sub_ret = 0;
        fail_io(req, r, req->kind == REQ_READ ? "read" : "write");
        return;
    }
    req->resume(req);
}

static void begin_subs(struct request *req, void (*next)(struct request *))
{
    req->resume = next;
    req->sub_ret = 0;
    req->pending = 1; /* held until every sub-operation is submitted */
}

static void end_subs(struct request *req)
{
    sub_done(req, 0);
}

static int slice_user(struct request *req, uint64_t len)
{
    free(req->chunk_iov);
    req->chunk_iov = NULL;
    return iov_slice(req->iov, req->iovcnt, req->pos - req->offset, len,
                     &req->chunk_iov, &req->chunk_iovcnt);
}

/* ---- backing reads ---------------------------------------------------------- */

struct backing_read {
    struct request *req;
    struct iovec *iov;
    int iovcnt;
};

static void backing_read_done(void *opaque, int ret, const qed_error *err)
{
    struct backing_read *br = opaque;
    struct request *req = br->req;
    if (ret < 0 && err && req->err.code == 0)
        qed_error_copy(&req->err, err);
    free(br->iov);
    free(br);
    sub_done(req, ret);
}

/* Reads [pos, pos+len) of the backing chain into iov (a sub-operation of
 * req): zeros past the end of the backing file, or without one. */
static void read_backing(struct request *req, const struct iovec *iov,
                         int iovcnt, uint64_t pos, uint64_t len)
{
    qed_image *backing = req->img->backing;
    uint64_t avail = 0;
    struct backing_read *br;
    int ret;

    if (backing && pos < backing->size)
        avail = QED_MIN(len, backing->size - pos);
    if (avail < len)
        iov_memset(iov, iovcnt, avail, 0, len - avail);
    if (avail == 0) {
        if (req->img->backing_unavailable)
            req->sub_ret = req->sub_ret ? req->sub_ret : -ENOTSUP;
        return;
    }
    br = calloc(1, sizeof(*br));
    if (!br || iov_slice(iov, iovcnt, 0, avail, &br->iov, &br->iovcnt) < 0) {
        free(br);
        req->sub_ret = req->sub_ret ? req->sub_ret : -ENOMEM;
        return;
    }
    br->req = req;
    req->pending++;
    ret = qed_aio_readv(backing, br->iov, br->iovcnt, pos, backing_read_done,
                        br);
    if (ret < 0) {
        free(br->iov);
        free(br);
        req->pending--;
        req->sub_ret = req->sub_ret ? req->sub_ret : ret;
    }
}

/* ---- reads ------------------------------------------------------------------ */

static void read_next(struct request *req);

static void read_chunk_done(struct request *req)
{
    advance(req, req->chunk_len, read_next);
}

static void read_chunk(struct request *req)
{
    struct extent *ext = &req->ext;
    int ret;

    lookup_extent(req->img, req->l2, req->pos, request_end(req) - req->pos,
                  ext);
    ret = lookup_validate_extent(req->img, req->l1_index, req->pos, ext,
                                 false, &req->err);
    if (ret < 0) {
        request_complete(req, ret);
        return;
    }
    req->chunk_len = ext->length;
    if (slice_user(req, ext->length) < 0) {
        request_complete(req, -ENOMEM);
        return;
    }
    begin_subs(req, read_chunk_done);
    switch (ext->kind) {
    case EXTENT_DATA:
        req->pending++;
        io_readv(req->img->file, req->chunk_iov, req->chunk_iovcnt, ext->host,
                 sub_done, req);
        break;
    case EXTENT_ZERO:
        iov_memset(req->chunk_iov, req->chunk_iovcnt, 0, 0, ext->length);
        break;
    case EXTENT_UNALLOCATED:
        read_backing(req, req->chunk_iov, req->chunk_iovcnt, req->pos,
                     ext->length);
        break;
    }
    end_subs(req);
}

static void read_next(struct request *req)
{
    if (req->pos >= request_end(req)) {
        request_complete(req, 0);
        return;
    }
    lookup_load_l2(req, read_chunk);
}

/* ---- writes, write-zeroes, discards ----------------------------------------- */

static void write_next(struct request *req);

static void write_chunk_done(struct request *req)
{
    advance(req, req->chunk_len, write_next);
}

/* Zeroes or discards a range of allocated data clusters in place: the
 * mapping stays (no cluster leaks), the host space is released where the
 * file system can, and zeros are written where it cannot. */
static void zero_in_place_done(void *opaque, int ret);

static void zero_in_place(struct request *req, uint64_t host, uint64_t len,
                          bool punch)
{
    int mode = (punch ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE) |
               FALLOC_FL_KEEP_SIZE;
    req->fallback_host = host;
    req->fallback_len = len;
    req->pending++;
    io_fallocate(req->img->file, mode, host, len, zero_in_place_done, req);
}

static void zero_in_place_done(void *opaque, int ret)
{
    struct request *req = opaque;
    uint8_t *zeros;

    if (ret != -EOPNOTSUPP && ret != -ENOTSUP && ret != -EINVAL) {
        sub_done(req, ret);
        return;
    }
    if (req->flags & QED_ZERO_NO_FALLBACK) {
        sub_done(req, -ENOTSUP);
        return;
    }
    /* The file system cannot punch: write real zeros. */
    zeros = qed_aligned_zalloc(req->fallback_len);
    if (!zeros) {
        sub_done(req, -ENOMEM);
        return;
    }
    free(req->data_buf);
    req->data_buf = zeros;
    io_pwrite(req->img->file, zeros, req->fallback_len, req->fallback_host,
              sub_done, req);
}

/* Only whole clusters are released; partial ones keep their data, as
 * discard allows. */
static void discard_in_place(struct request *req, uint64_t host, uint64_t len)
{
    const struct qed_state *s = req->img->qed;
    uint64_t first = round_up_u64(req->pos, s->cluster_size);
    uint64_t last = round_down_u64(req->pos + len, s->cluster_size);

    if (last > first)
        zero_in_place(req, host + (first - req->pos), last - first, true);
}

static void write_in_place(struct request *req)
{
    struct extent *ext = &req->ext;
    uint64_t len = ext->length;

    begin_subs(req, write_chunk_done);
    req->chunk_len = len;
    switch (req->kind) {
    case REQ_WRITE:
        if (slice_user(req, len) < 0) {
            req->sub_ret = -ENOMEM;
            break;
        }
        req->pending++;
        io_writev(req->img->file, req->chunk_iov, req->chunk_iovcnt, ext->host,
                  sub_done, req);
        break;
    case REQ_ZEROES:
        zero_in_place(req, ext->host, len, (req->flags & QED_ZERO_MAY_UNMAP));
        break;
    case REQ_DISCARD:
        discard_in_place(req, ext->host, len);
        break;
    default:
        break;
    }
    end_subs(req);
}

/* Bytes at the start of an unallocated or zero extent that the request
 * leaves as they are; 0 when the chunk must change the table. */
static uint64_t bytes_to_skip(const struct request *req)
{
    const struct qed_state *s = req->img->qed;
    const struct extent *ext = &req->ext;
    uint64_t in_cluster = cluster_offset_in(s, req->pos);
    uint64_t partial;

    switch (req->kind) {
    case REQ_WRITE:
        return 0;
    case REQ_ZEROES:
        if (ext->kind == EXTENT_ZERO)
            return ext->length;
        /* Whole clusters become zero clusters. */
        if (in_cluster == 0 && ext->length >= s->cluster_size)
            return 0;
        /* A partial cluster already reads as zeros unless a backing file
         * shows through it. */
        partial = QED_MIN(ext->length, s->cluster_size - in_cluster);
        if (req->img->backing && req->pos < req->img->backing->size)
            return 0;
        return partial;
    default:
        return ext->length;
    }
}

static void write_allocate(struct request *req);
static void write_retry(struct request *req);

/* Is an allocation of the data clusters under the chunk still in flight?
 * Then the chunk runs again once it is done. */
static bool data_clusters_claimed(struct request *req)
{
    const struct qed_state *s = req->img->qed;
    uint64_t end = req->pos + req->ext.length;
    uint64_t first = req->pos >> s->cluster_bits;
    uint64_t last = (end - 1) >> s->cluster_bits;
    uint64_t mask = s->table_entries - 1;

    return !alloc_wait_unclaimed(req, lookup_l1_index(req->img, req->pos),
                                 first & mask, last - first + 1,
                                 write_retry);
}

static void write_chunk(struct request *req)
{
    struct extent *ext = &req->ext;
    int ret;

    lookup_extent(req->img, req->l2, req->pos, request_end(req) - req->pos,
                  ext);
    ret = lookup_validate_extent(req->img, req->l1_index, req->pos, ext,
                                 true, &req->err);
    if (ret < 0) {
        request_complete(req, ret);
        return;
    }
    if (ext->kind == EXTENT_DATA) {
        if (data_clusters_claimed(req))
            return;
        write_in_place(req);
        return;
    }
    req->chunk_len = bytes_to_skip(req);
    if (req->chunk_len > 0) {
        write_chunk_done(req);
        return;
    }
    write_allocate(req);
}

/* Another request was allocating part of our range: look again. */
static void write_retry(struct request *req)
{
    release_chunk(req);
    write_next(req);
}

static void write_commit(struct request *req)
{
    alloc_commit(req, write_chunk_done);
}

static void write_data_written(struct request *req)
{
    write_commit(req);
}

static int build_data_vector(struct request *req, struct iovec **out,
                             int *outcnt)
{
    struct iovec *body = NULL;
    int bodycnt = 0, n = 0;
    struct iovec *v;

    if (req->kind == REQ_WRITE) {
        if (iov_slice(req->iov, req->iovcnt, req->pos - req->offset,
                      req->chunk_len, &body, &bodycnt) < 0)
            return -ENOMEM;
    } else {
        req->data_buf = qed_aligned_zalloc(req->chunk_len);
        if (!req->data_buf)
            return -ENOMEM;
    }
    v = malloc(sizeof(*v) * (size_t)(bodycnt + 3));
    if (!v) {
        free(body);
        return -ENOMEM;
    }
    if (req->head_buf)
        v[n++] = (struct iovec){ req->head_buf, req->head_len };
    if (body) {
        memcpy(&v[n], body, sizeof(*v) * (size_t)bodycnt);
        n += bodycnt;
    } else {
        v[n++] = (struct iovec){ req->data_buf, req->chunk_len };
    }
    if (req->tail_buf)
        v[n++] = (struct iovec){ req->tail_buf, req->tail_len };
    free(body);
    *out = v;
    *outcnt = n;
    return 0;
}

static void write_data(struct request *req)
{
    uint64_t start = req->alloc_host + (req->head_buf ? 0 : req->head_len);

    free(req->chunk_iov);
    req->chunk_iov = NULL;
    if (build_data_vector(req, &req->chunk_iov, &req->chunk_iovcnt) < 0) {
        fail_io(req, -ENOMEM, "write");
        return;
    }
    begin_subs(req, write_data_written);
    req->pending++;
    io_writev(req->img->file, req->chunk_iov, req->chunk_iovcnt, start,
              sub_done, req);
    end_subs(req);
}

/* New clusters must lie wholly inside the file, an unwritten tail included,
 * for every reader (QEMU too).  The file is extended ahead before the data
 * is written, so data writes never extend it: extending direct writes are
 * serialised by file systems. */
static void write_extend(struct request *req)
{
    const struct qed_state *s = req->img->qed;
    uint64_t run_end = req->alloc_host + (req->alloc_count << s->cluster_bits);
    uint64_t unwritten_tail = req->tail_buf ? 0 : req->tail_len;

    begin_subs(req, write_data);
    if (run_end > s->size_ensured && (!s->no_fallocate || unwritten_tail)) {
        req->pending++;
        alloc_extend_file(req->img, run_end, unwritten_tail, sub_done, req);
    }
    end_subs(req);
}

static void *cow_buffer(struct request *req, uint64_t len, uint64_t pos)
{
    uint8_t *buf = qed_aligned_alloc(len);
    struct iovec v = { buf, len };
    if (buf)
        read_backing(req, &v, 1, pos, len);
    else
        req->sub_ret = -ENOMEM;
    return buf;
}

/* Decides which clusters the chunk changes: whole clusters of write-zeroes
 * become zero entries; otherwise the clusters under [pos, data_end) get new
 * space, with the head and tail the chunk does not cover. */
static void plan_chunk(struct request *req)
{
    const struct qed_state *s = req->img->qed;
    uint64_t data_end = req->pos + req->ext.length;
    uint64_t first, run_end;

    req->new_entry_value = 0;
    req->l1_index = lookup_l1_index(req->img, req->pos);
    if (req->kind == REQ_ZEROES) {
        if (cluster_offset_in(s, req->pos) == 0 &&
            req->ext.length >= s->cluster_size) {
            req->chunk_len = round_down_u64(req->ext.length, s->cluster_size);
            req->alloc_first =
                (req->pos >> s->cluster_bits) & (s->table_entries - 1);
            req->alloc_count = req->chunk_len >> s->cluster_bits;
            req->new_entry_value = QED_ENTRY_ZERO;
            return;
        }
        /* A partial cluster: real zeros, one cluster at a time. */
        data_end = QED_MIN(data_end, cluster_start(s, req->pos) +
                                         s->cluster_size);
    }
    first = cluster_start(s, req->pos);
    run_end = round_up_u64(data_end, s->cluster_size);
    req->chunk_len = data_end - req->pos;
    req->alloc_first = (first >> s->cluster_bits) & (s->table_entries - 1);
    req->alloc_count = (run_end - first) >> s->cluster_bits;
    req->head_len = req->pos - first;
    req->tail_len = run_end - data_end;
}

static void write_allocate_space(struct request *req);

/* Claims the clusters, gives them new space at the end of the file, copies
 * what the backing file must supply, then writes the data (write_data). */
static void write_allocate(struct request *req)
{
    plan_chunk(req);
    if (req->kind == REQ_ZEROES && req->new_entry_value != QED_ENTRY_ZERO &&
        (req->flags & QED_ZERO_NO_FALLBACK)) {
        qed_fail(&req->err, ENOTSUP, "zeroing part of a cluster at offset %"
                 PRIu64 " needs written zeros", req->pos);
        request_complete(req, -ENOTSUP);
        return;
    }
    if (!alloc_begin(req, write_retry))
        return;
    /* Dirty before the file grows or a table changes: a crash after that
     * leaves nothing the check on open would not find. */
    alloc_make_dirty(req, write_allocate_space);
}

/* Gives the claimed clusters their table and their space. */
static void write_allocate_space(struct request *req)
{
    bool cow;

    if (alloc_table(req) < 0) {
        request_complete(req, -req->err.code);
        return;
    }
    if (req->new_entry_value == QED_ENTRY_ZERO) {
        write_commit(req);
        return;
    }
    req->alloc_host = alloc_clusters(req->img, req->alloc_count);
    req->space = SPACE_CLAIMED;
    req->new_entry_value = req->alloc_host;
    cow = req->ext.kind == EXTENT_UNALLOCATED && req->img->backing;
    begin_subs(req, write_extend);
    if (cow && req->head_len)
        req->head_buf = cow_buffer(req, req->head_len,
                                   req->pos - req->head_len);
    if (cow && req->tail_len)
        req->tail_buf = cow_buffer(req, req->tail_len,
                                   req->pos + req->chunk_len);
    end_subs(req);
}

static void write_next(struct request *req)
{
    if (req->pos >= request_end(req)) {
        request_complete(req, 0);
        return;
    }
    lookup_load_l2(req, write_chunk);
}

/* ---- flush and block status -------------------------------------------------- */

static void flush_done(void *opaque, int ret)
{
    struct request *req = opaque;
    if (ret < 0)
        fail_io(req, ret, "flush");
    else
        request_complete(req, 0);
}

static void status_from_backing(void *opaque, int ret, const qed_error *err)
{
    struct request *req = opaque;
    struct qed_block_status *st = req->status;

    if (ret < 0) {
        qed_error_copy(&req->err, err);
        request_complete(req, ret);
        return;
    }
    st->depth++;
    request_complete(req, 0);
}

static void status_chunk(struct request *req)
{
    struct qed_block_status *st = req->status;
    struct extent *ext = &req->ext;
    qed_image *backing = req->img->backing;
    int ret;

    lookup_extent(req->img, req->l2, req->pos, req->length, ext);
    ret = lookup_validate_extent(req->img, req->l1_index, req->pos, ext,
                                 false, &req->err);
    if (ret < 0) {
        request_complete(req, ret);
        return;
    }
    memset(st, 0, sizeof(*st));
    st->length = ext->length;
    switch (ext->kind) {
    case EXTENT_DATA:
        st->present = st->data = st->has_offset = true;
        st->offset = ext->host;
        break;
    case EXTENT_ZERO:
        st->present = st->zero = true;
        break;
    case EXTENT_UNALLOCATED:
        st->zero = true;
        if (backing && req->pos < backing->size) {
            uint64_t len = QED_MIN(ext->length, backing->size - req->pos);
            ret = qed_aio_block_status(backing, req->pos, len, st,
                                       status_from_backing, req);
            if (ret < 0)
                request_complete(req, ret);
            return;
        }
        /* Nothing below covers it: this layer answers (depth 0). */
        break;
    }
    request_complete(req, 0);
}

void qed_request_start(struct request *req)
{
    switch (req->kind) {
    case REQ_READ:
        read_next(req);
        break;
    case REQ_WRITE:
    case REQ_ZEROES:
    case REQ_DISCARD:
        write_next(req);
        break;
    case REQ_FLUSH:
        io_sync(req->img->file, flush_done, req);
        break;
    case REQ_STATUS:
        lookup_load_l2(req, status_chunk);
        break;
    }
}
