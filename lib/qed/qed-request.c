/* SPDX-License-Identifier: MIT */
/* The QED driver's request layer: the state machines that carry reads,
 * writes, write-zeroes, discards, flushes and block-status queries through
 * a QED image one chunk at a time.  It alone ends requests (through the
 * front's request_complete): lookup and allocation hand their failures
 * back through req->fail.
 *
 * A chunk lies within one L2 table and maps to one kind of extent.  Reads
 * and in-place writes go straight to the file; anything that changes a table
 * takes that table's allocation lock (alloc.c), so updates of one table run
 * in order while other tables proceed in parallel. */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <stdlib.h>

#include "qed-image.h"

/* The front allocates request_size bytes and frees them as a struct
 * request: that must be the first member. */
_Static_assert(offsetof(struct qed_request, base) == 0,
               "struct request first");

static void release_chunk(struct qed_request *req)
{
    qedi_alloc_end(req);
    if (req->l2) {
        qedi_l2cache_put(qed_of(req->base.img)->l2cache, req->l2);
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

const char *qedi_qed_req_state_name(enum qed_req_state state)
{
    static const char *const names[] = {
        [QRS_START] = "start",
        [QRS_LOOKUP] = "lookup",
        [QRS_READ] = "read",
        [QRS_COPY_ON_READ] = "copy-on-read",
        [QRS_WRITE_IN_PLACE] = "write-in-place",
        [QRS_STATUS] = "status",
        [QRS_CLAIM] = "claim",
        [QRS_MARK_DIRTY] = "mark-dirty",
        [QRS_COPY_ON_WRITE] = "copy-on-write",
        [QRS_EXTEND] = "extend",
        [QRS_WRITE_DATA] = "write-data",
        [QRS_COMMIT] = "commit",
        [QRS_FLUSH] = "flush",
        [QRS_ABANDON] = "abandon",
        [QRS_DONE] = "done",
    };
    return (unsigned)state < QED_ARRAY_SIZE(names) ? names[state] : "?";
}

static void enter(struct qed_request *req, enum qed_req_state state)
{
    req->state = state;
    QEDI_TRACE("qed request %p: %s at %" PRIu64, (void *)req,
               qedi_qed_req_state_name(state), req->pos);
}

/* Loads the chunk's table, then runs next. */
static void lookup(struct qed_request *req, qed_step *next)
{
    enter(req, QRS_LOOKUP);
    qedi_lookup_load_l2(req, next);
}

/* The one place a QED request ends: the front's finish hook
 * (qedi_qed_request_finish) then releases what the chunk held. */
static void complete(struct qed_request *req, int ret)
{
    request_complete(&req->base, ret);
}

/* Lookup and allocation hand failures back here. */
static void fail_from_below(struct qed_request *req, int ret)
{
    complete(req, ret);
}

/* ---- common chunk handling ------------------------------------------------ */

static uint64_t request_end(const struct qed_request *req)
{
    return req->base.offset + req->base.length;
}

/* The chunk is done: drop what it held and move on. */
static void advance(struct qed_request *req, uint64_t bytes,
                    qed_step *next)
{
    release_chunk(req);
    req->pos += bytes;
    /* Defer rather than recurse: a request over many small extents must not
     * grow the stack. */
    qed_request_defer(req, next);
}

static void fail_io(struct qed_request *req, int ret, const char *what)
{
    if (req->base.err.code == 0)
        qedi_fail(&req->base.err, -ret, "%s: %s", what, strerror(-ret));
    complete(req, ret);
}

/* Sub-operation bookkeeping: a phase starts `pending` operations and moves on
 * when the last one finishes, or fails with the first error. */
static void sub_done(void *opaque, int ret)
{
    struct qed_request *req = opaque;

    assert(req->pending > 0);
    if (ret < 0 && req->sub_ret == 0)
        req->sub_ret = ret;
    if (--req->pending > 0)
        return;
    if (req->sub_ret < 0) {
        int r = req->sub_ret;
        req->sub_ret = 0;
        fail_io(req, r, req->base.kind == REQ_READ ? "read" : "write");
        return;
    }
    req->resume(req);
}

static void begin_subs(struct qed_request *req, qed_step *next)
{
    req->resume = next;
    req->sub_ret = 0;
    req->pending = 1; /* held until every sub-operation is submitted */
}

static void end_subs(struct qed_request *req)
{
    sub_done(req, 0);
}

static int slice_user(struct qed_request *req, uint64_t len)
{
    free(req->chunk_iov);
    req->chunk_iov = NULL;
    return qedi_iov_slice(req->base.iov, req->base.iovcnt, req->pos - req->base.offset, len,
                     &req->chunk_iov, &req->chunk_iovcnt);
}

/* ---- backing reads ---------------------------------------------------------- */

struct backing_read {
    struct qed_request *req;
    struct iovec *iov;
    int iovcnt;
};

static void backing_read_done(void *opaque, int ret, const qed_error *err)
{
    struct backing_read *br = opaque;
    struct qed_request *req = br->req;
    if (ret < 0 && err && req->base.err.code == 0)
        qedi_error_copy(&req->base.err, err);
    free(br->iov);
    free(br);
    sub_done(req, ret);
}

/* Reads [pos, pos+len) of the backing chain into iov (a sub-operation of
 * req): zeros past the end of the backing file, or without one. */
static void read_backing(struct qed_request *req, const struct iovec *iov,
                         int iovcnt, uint64_t pos, uint64_t len)
{
    qed_image *backing = req->base.img->backing;
    uint64_t avail = 0;
    struct backing_read *br;
    int ret;

    if (backing && pos < backing->size)
        avail = QED_MIN(len, backing->size - pos);
    if (avail < len)
        qedi_iov_memset(iov, iovcnt, avail, 0, len - avail);
    if (avail == 0) {
        if (req->base.img->backing_unavailable)
            req->sub_ret = req->sub_ret ? req->sub_ret : -ENOTSUP;
        return;
    }
    br = calloc(1, sizeof(*br));
    if (!br || qedi_iov_slice(iov, iovcnt, 0, avail, &br->iov, &br->iovcnt) < 0) {
        free(br);
        req->sub_ret = req->sub_ret ? req->sub_ret : -ENOMEM;
        return;
    }
    br->req = req;
    req->pending++;
    ret = backing->front->aio_readv(backing, br->iov, br->iovcnt, pos, backing_read_done,
                        br);
    if (ret < 0) {
        free(br->iov);
        free(br);
        req->pending--;
        req->sub_ret = req->sub_ret ? req->sub_ret : ret;
    }
}

/* ---- reads ------------------------------------------------------------------ */

static void read_next(struct qed_request *req);

/* Copy-on-read: the chunk came from the backing chain (and not only as
 * the zeros past its end). */
static bool copy_on_read_wanted(const struct qed_request *req)
{
    const qed_image *img = req->base.img;

    return img->copy_on_read && req->ext.kind == EXTENT_UNALLOCATED &&
           img->backing && req->pos < img->backing->size;
}

/* One write of copy-on-read done.  The read has its data either way: a
 * copy that failed (no space, say) is reported once, and that part is read
 * from the backing file again the next time. */
static void copied_on_read(void *opaque, int ret, const qed_error *err)
{
    struct qed_request *req = opaque;
    qed_image *img = req->base.img;

    if (ret < 0 && !img->copy_on_read_warned) {
        img->copy_on_read_warned = true;
        qedi_image_warn(img, "copy-on-read at offset %" PRIu64 " failed: %s",
                        req->pos, err ? err->message : strerror(-ret));
    }
    sub_done(req, 0);
}

static void copy_on_read_done(struct qed_request *req)
{
    advance(req, req->chunk_len, read_next);
}

static bool iov_is_zero(const struct iovec *iov, int iovcnt)
{
    for (int i = 0; i < iovcnt; i++)
        if (!qedi_buf_is_zero(iov[i].iov_base, iov[i].iov_len))
            return false;
    return true;
}

/* One run of copy-on-read: [pos, pos + len) of the chunk, data or (whole
 * clusters of) zeros. */
static void copy_run(struct qed_request *req, uint64_t pos, uint64_t len,
                     bool zeroes)
{
    qed_image *img = req->base.img;
    struct iovec *v = NULL;
    int n = 0, ret;

    req->pending++;
    if (zeroes) {
        ret = img->front->aio_fill_zeroes(img, pos, len, copied_on_read, req);
    } else if (qedi_iov_slice(req->chunk_iov, req->chunk_iovcnt, pos - req->pos,
                              len, &v, &n) < 0) {
        ret = -ENOMEM;
    } else {
        ret = img->front->aio_fill(img, v, n, pos, copied_on_read, req);
        free(v);
    }
    if (ret < 0)
        copied_on_read(req, ret, NULL);
}

/* Is the part of cluster-sized piece [pos, end) of the chunk all zeros? */
static bool piece_is_zero(struct qed_request *req, uint64_t pos, uint64_t end)
{
    struct iovec *v = NULL;
    int n = 0;
    bool zero;

    if (qedi_iov_slice(req->chunk_iov, req->chunk_iovcnt, pos - req->pos,
                       end - pos, &v, &n) < 0)
        return false;
    zero = iov_is_zero(v, n);
    free(v);
    return zero;
}

/* Writes what the chunk read from the backing chain into the image, from
 * the caller's buffer (the read is not complete until this is), with
 * writes that allocate only clusters still unallocated when they get to
 * them: a write of the client's since the read is never overwritten.
 * Clusters of zeros become zero clusters (the image then reads them without
 * its backing file, holding no space for them); a partial cluster of zeros
 * is left for a read that covers it all. */
static void copy_on_read(struct qed_request *req)
{
    const struct qed_state *s = qed_of(req->base.img);
    uint64_t end = req->pos + QED_MIN(req->chunk_len,
                                      req->base.img->backing->size - req->pos);
    uint64_t run = req->pos, pos = req->pos;
    int run_kind = -1; /* 0 data, 1 zeros, -1 none */

    enter(req, QRS_COPY_ON_READ);
    begin_subs(req, copy_on_read_done);
    while (pos < end) {
        uint64_t next = QED_MIN(cluster_start(s, pos) + s->cluster_size, end);
        bool whole = next - pos == s->cluster_size;
        int kind = !piece_is_zero(req, pos, next) ? 0 : whole ? 1 : -1;
        if (kind != run_kind) {
            if (run_kind >= 0)
                copy_run(req, run, pos - run, run_kind == 1);
            run = pos;
            run_kind = kind;
        }
        pos = next;
    }
    if (run_kind >= 0)
        copy_run(req, run, pos - run, run_kind == 1);
    end_subs(req);
}

static void read_chunk_done(struct qed_request *req)
{
    if (copy_on_read_wanted(req)) {
        copy_on_read(req);
        return;
    }
    advance(req, req->chunk_len, read_next);
}

static void read_chunk(struct qed_request *req)
{
    struct extent *ext = &req->ext;
    int ret;

    qedi_lookup_extent(req->base.img, req->l2, req->pos, request_end(req) - req->pos,
                  ext);
    ret = qedi_lookup_validate_extent(req->base.img, req->l1_index, req->pos, ext,
                                 false, &req->base.err);
    if (ret < 0) {
        complete(req, ret);
        return;
    }
    enter(req, QRS_READ);
    req->chunk_len = ext->length;
    if (slice_user(req, ext->length) < 0) {
        complete(req, -ENOMEM);
        return;
    }
    begin_subs(req, read_chunk_done);
    switch (ext->kind) {
    case EXTENT_DATA:
        req->pending++;
        qedi_io_readv(req->base.img->file, req->chunk_iov, req->chunk_iovcnt, ext->host,
                 sub_done, req);
        break;
    case EXTENT_ZERO:
        qedi_iov_memset(req->chunk_iov, req->chunk_iovcnt, 0, 0, ext->length);
        break;
    case EXTENT_UNALLOCATED:
        read_backing(req, req->chunk_iov, req->chunk_iovcnt, req->pos,
                     ext->length);
        break;
    }
    end_subs(req);
}

static void read_next(struct qed_request *req)
{
    if (req->pos >= request_end(req)) {
        complete(req, 0);
        return;
    }
    lookup(req, read_chunk);
}

/* ---- writes, write-zeroes, discards ----------------------------------------- */

static void write_next(struct qed_request *req);

static void write_chunk_done(struct qed_request *req)
{
    advance(req, req->chunk_len, write_next);
}

/* Zeroes or discards a range of allocated data clusters in place: the
 * mapping stays (no cluster leaks), the host space is released where the
 * file system can, and zeros are written where it cannot. */
static void zero_in_place_done(void *opaque, int ret);

static void zero_in_place(struct qed_request *req, uint64_t host, uint64_t len,
                          bool punch)
{
    int mode = (punch ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE) |
               FALLOC_FL_KEEP_SIZE;
    req->fallback_host = host;
    req->fallback_len = len;
    req->pending++;
    qedi_io_fallocate(req->base.img->file, mode, host, len, zero_in_place_done, req);
}

static void zero_in_place_done(void *opaque, int ret)
{
    struct qed_request *req = opaque;
    uint8_t *zeros;

    if (ret != -EOPNOTSUPP && ret != -ENOTSUP && ret != -EINVAL) {
        sub_done(req, ret);
        return;
    }
    if (req->base.flags & QED_ZERO_NO_FALLBACK) {
        sub_done(req, -ENOTSUP);
        return;
    }
    /* The file system cannot punch: write real zeros. */
    zeros = qedi_aligned_zalloc(req->fallback_len);
    if (!zeros) {
        sub_done(req, -ENOMEM);
        return;
    }
    free(req->data_buf);
    req->data_buf = zeros;
    qedi_io_pwrite(req->base.img->file, zeros, req->fallback_len, req->fallback_host,
              sub_done, req);
}

/* Only whole clusters are released; partial ones keep their data, as
 * discard allows. */
static void discard_in_place(struct qed_request *req, uint64_t host, uint64_t len)
{
    const struct qed_state *s = qed_of(req->base.img);
    uint64_t first = round_up_u64(req->pos, s->cluster_size);
    uint64_t last = round_down_u64(req->pos + len, s->cluster_size);

    if (last > first)
        zero_in_place(req, host + (first - req->pos), last - first, true);
}

static void write_in_place(struct qed_request *req)
{
    struct extent *ext = &req->ext;
    uint64_t len = ext->length;

    enter(req, QRS_WRITE_IN_PLACE);
    begin_subs(req, write_chunk_done);
    req->chunk_len = len;
    switch (req->base.kind) {
    case REQ_WRITE:
        if (slice_user(req, len) < 0) {
            req->sub_ret = -ENOMEM;
            break;
        }
        req->pending++;
        qedi_io_writev(req->base.img->file, req->chunk_iov, req->chunk_iovcnt, ext->host,
                  sub_done, req);
        break;
    case REQ_ZEROES:
        zero_in_place(req, ext->host, len, (req->base.flags & QED_ZERO_MAY_UNMAP));
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
static uint64_t bytes_to_skip(const struct qed_request *req)
{
    const struct qed_state *s = qed_of(req->base.img);
    const struct extent *ext = &req->ext;
    uint64_t in_cluster = cluster_offset_in(s, req->pos);
    uint64_t partial;

    switch (req->base.kind) {
    case REQ_WRITE:
        /* Copy-on-read leaves zero clusters as they are. */
        if ((req->base.flags & REQ_FLAG_FILL) && ext->kind == EXTENT_ZERO)
            return ext->length;
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
        if (req->base.img->backing && req->pos < req->base.img->backing->size)
            return 0;
        return partial;
    default:
        return ext->length;
    }
}

static void write_allocate(struct qed_request *req);
static void write_retry(struct qed_request *req);

/* Is an allocation of the data clusters under the chunk still in flight?
 * Then the chunk runs again once it is done. */
static bool data_clusters_claimed(struct qed_request *req)
{
    const struct qed_state *s = qed_of(req->base.img);
    uint64_t end = req->pos + req->ext.length;
    uint64_t first = req->pos >> s->cluster_bits;
    uint64_t last = (end - 1) >> s->cluster_bits;
    uint64_t mask = s->table_entries - 1;

    return !qedi_alloc_wait_unclaimed(req, qedi_lookup_l1_index(req->base.img, req->pos),
                                 first & mask, last - first + 1,
                                 write_retry);
}

static void write_chunk(struct qed_request *req)
{
    struct extent *ext = &req->ext;
    int ret;

    qedi_lookup_extent(req->base.img, req->l2, req->pos, request_end(req) - req->pos,
                  ext);
    ret = qedi_lookup_validate_extent(req->base.img, req->l1_index, req->pos, ext,
                                 true, &req->base.err);
    if (ret < 0) {
        complete(req, ret);
        return;
    }
    if (ext->kind == EXTENT_DATA) {
        /* Copy-on-read: the image has these clusters (a client's write
         * got there first); they stay. */
        if (req->base.flags & REQ_FLAG_FILL) {
            req->chunk_len = ext->length;
            write_chunk_done(req);
            return;
        }
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
static void write_retry(struct qed_request *req)
{
    release_chunk(req);
    write_next(req);
}

static void write_commit(struct qed_request *req)
{
    enter(req, QRS_COMMIT);
    qedi_alloc_commit(req, write_chunk_done);
}

static void write_data_written(struct qed_request *req)
{
    write_commit(req);
}

static int build_data_vector(struct qed_request *req, struct iovec **out,
                             int *outcnt)
{
    struct iovec *body = NULL;
    int bodycnt = 0, n = 0;
    struct iovec *v;

    if (req->base.kind == REQ_WRITE) {
        if (qedi_iov_slice(req->base.iov, req->base.iovcnt, req->pos - req->base.offset,
                      req->chunk_len, &body, &bodycnt) < 0)
            return -ENOMEM;
    } else {
        req->data_buf = qedi_aligned_zalloc(req->chunk_len);
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

static void write_data(struct qed_request *req)
{
    uint64_t start = req->alloc_host + (req->head_buf ? 0 : req->head_len);

    enter(req, QRS_WRITE_DATA);
    free(req->chunk_iov);
    req->chunk_iov = NULL;
    if (build_data_vector(req, &req->chunk_iov, &req->chunk_iovcnt) < 0) {
        fail_io(req, -ENOMEM, "write");
        return;
    }
    begin_subs(req, write_data_written);
    req->pending++;
    qedi_io_writev(req->base.img->file, req->chunk_iov, req->chunk_iovcnt, start,
              sub_done, req);
    end_subs(req);
}

/* New clusters must lie wholly inside the file, an unwritten tail included,
 * for every reader (QEMU too).  The file is extended ahead before the data
 * is written, so data writes never extend it: extending direct writes are
 * serialised by file systems. */
static void write_extend(struct qed_request *req)
{
    const struct qed_state *s = qed_of(req->base.img);
    uint64_t run_end = req->alloc_host + (req->alloc_count << s->cluster_bits);
    uint64_t unwritten_tail = req->tail_buf ? 0 : req->tail_len;

    enter(req, QRS_EXTEND);
    begin_subs(req, write_data);
    if (run_end > s->size_ensured && (!s->no_fallocate || unwritten_tail)) {
        req->pending++;
        qedi_alloc_extend_file(req->base.img, run_end, unwritten_tail, sub_done, req);
    }
    end_subs(req);
}

static void *cow_buffer(struct qed_request *req, uint64_t len, uint64_t pos)
{
    uint8_t *buf = qedi_aligned_alloc(len);
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
static void plan_chunk(struct qed_request *req)
{
    const struct qed_state *s = qed_of(req->base.img);
    uint64_t data_end = req->pos + req->ext.length;
    uint64_t first, run_end;

    req->new_entry_value = 0;
    req->l1_index = qedi_lookup_l1_index(req->base.img, req->pos);
    if (req->base.kind == REQ_ZEROES) {
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

static void write_allocate_space(struct qed_request *req);

/* Claims the clusters, gives them new space at the end of the file, copies
 * what the backing file must supply, then writes the data (write_data). */
static void write_allocate(struct qed_request *req)
{
    plan_chunk(req);
    if (req->base.kind == REQ_ZEROES && req->new_entry_value != QED_ENTRY_ZERO &&
        (req->base.flags & QED_ZERO_NO_FALLBACK)) {
        qedi_fail(&req->base.err, ENOTSUP, "zeroing part of a cluster at offset %"
                 PRIu64 " needs written zeros", req->pos);
        complete(req, -ENOTSUP);
        return;
    }
    enter(req, QRS_CLAIM);
    if (!qedi_alloc_begin(req, write_retry))
        return;
    /* Dirty before the file grows or a table changes: a crash after that
     * leaves nothing the check on open would not find. */
    enter(req, QRS_MARK_DIRTY);
    qedi_alloc_make_dirty(req, write_allocate_space);
}

/* Gives the claimed clusters their table and their space. */
static void write_allocate_space(struct qed_request *req)
{
    bool cow;

    if (qedi_alloc_table(req) < 0) {
        complete(req, -req->base.err.code);
        return;
    }
    if (req->new_entry_value == QED_ENTRY_ZERO) {
        write_commit(req);
        return;
    }
    req->alloc_host = qedi_alloc_clusters(req->base.img, req->alloc_count);
    req->space = SPACE_CLAIMED;
    req->new_entry_value = req->alloc_host;
    cow = req->ext.kind == EXTENT_UNALLOCATED && req->base.img->backing;
    if (cow && (req->head_len || req->tail_len))
        enter(req, QRS_COPY_ON_WRITE);
    begin_subs(req, write_extend);
    if (cow && req->head_len)
        req->head_buf = cow_buffer(req, req->head_len,
                                   req->pos - req->head_len);
    if (cow && req->tail_len)
        req->tail_buf = cow_buffer(req, req->tail_len,
                                   req->pos + req->chunk_len);
    end_subs(req);
}

static void write_next(struct qed_request *req)
{
    if (req->pos >= request_end(req)) {
        complete(req, 0);
        return;
    }
    lookup(req, write_chunk);
}

/* ---- flush and block status -------------------------------------------------- */

static void flush_done(void *opaque, int ret)
{
    struct qed_request *req = opaque;
    if (ret < 0)
        fail_io(req, ret, "flush");
    else
        complete(req, 0);
}

static void status_from_backing(void *opaque, int ret, const qed_error *err)
{
    struct qed_request *req = opaque;
    struct qed_block_status *st = req->base.status;

    if (ret < 0) {
        qedi_error_copy(&req->base.err, err);
        complete(req, ret);
        return;
    }
    st->depth++;
    complete(req, 0);
}

static void status_chunk(struct qed_request *req)
{
    struct qed_block_status *st = req->base.status;
    struct extent *ext = &req->ext;
    qed_image *backing = req->base.img->backing;
    int ret;

    enter(req, QRS_STATUS);
    qedi_lookup_extent(req->base.img, req->l2, req->pos, req->base.length, ext);
    ret = qedi_lookup_validate_extent(req->base.img, req->l1_index, req->pos, ext,
                                 false, &req->base.err);
    if (ret < 0) {
        complete(req, ret);
        return;
    }
    qedi_abi_clear(&qedi_abi_block_status, st);
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
            ret = backing->front->aio_block_status(backing, req->pos, len, st,
                                       status_from_backing, req);
            if (ret < 0)
                complete(req, ret);
            return;
        }
        /* Nothing below covers it: this layer answers (depth 0). */
        break;
    }
    complete(req, 0);
}

/* A failed request's new clusters go back (or the image is marked dirty
 * for them) before it completes: true while that is under way. */
bool qedi_qed_request_finish(struct request *base, int ret)
{
    struct qed_request *req = qed_request_of(base);

    if (ret < 0 && req->state != QRS_ABANDON) {
        enter(req, QRS_ABANDON);
        if (qedi_alloc_abandon(req, ret))
            return true;
    }
    enter(req, QRS_DONE);
    release_chunk(req);
    return false;
}

void qedi_qed_request_start(struct request *base)
{
    struct qed_request *req = qed_request_of(base);

    req->pos = base->offset;
    req->fail = fail_from_below;
    switch (req->base.kind) {
    case REQ_READ:
        read_next(req);
        break;
    case REQ_WRITE:
    case REQ_ZEROES:
    case REQ_DISCARD:
        write_next(req);
        break;
    case REQ_FLUSH:
        enter(req, QRS_FLUSH);
        qedi_io_sync(req->base.img->file, flush_done, req);
        break;
    case REQ_STATUS:
        lookup(req, status_chunk);
        break;
    }
}

