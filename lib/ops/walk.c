/* SPDX-License-Identifier: MIT */
/* The walk behind every image operation: block status at a cursor, runs
 * classified by the operation, segments handed to a pool of workers that
 * keep many requests in flight on one loop.  Also the helpers the
 * operations share: sub-request bookkeeping, sparse writes, file identity,
 * and the file openers for unsafe caching and header rewrites. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

#include "ops.h"

/* ---- configuration --------------------------------------------------------- */

int qedi_ops_walk_configure(struct ops_walk *w, const struct qed_op_options *o,
                       qed_error *err)
{
    struct qed_op_options d = { 0 };
    int ret = qedi_abi_take(&qedi_abi_op_options, &d, o, err);

    if (ret < 0)
        return ret;
    if (d.requests == 0)
        d.requests = OPS_DEFAULT_REQUESTS;
    if (d.request_size == 0)
        d.request_size = OPS_DEFAULT_REQUEST_SIZE;
    if (d.requests > OPS_MAX_REQUESTS)
        return qedi_fail(err, EINVAL, "requests in flight %u exceeds the "
                        "limit of %u", d.requests, OPS_MAX_REQUESTS);
    if (d.request_size % 4096 != 0 || d.request_size > OPS_MAX_REQUEST_SIZE)
        return qedi_fail(err, EINVAL, "request size %" PRIu32 " is not a "
                        "multiple of 4096 in [4096, %u]", d.request_size,
                        OPS_MAX_REQUEST_SIZE);
    w->requests = d.requests;
    w->request_size = d.request_size;
    w->progress = d.progress;
    w->progress_opaque = d.progress_opaque;
    return 0;
}

/* ---- the walk ----------------------------------------------------------------- */

static void pump(struct ops_walk *w);

static void walk_fail(struct ops_walk *w, int ret, const qed_error *err)
{
    if (w->ret < 0)
        return;
    w->ret = ret;
    if (err && err->code)
        qedi_error_copy(&w->err, err);
    else
        qedi_fail(&w->err, -ret, "%s", strerror(-ret));
}

static void report_progress(struct ops_walk *w, uint64_t bytes)
{
    w->done_bytes += bytes;
    if (w->progress)
        w->progress(w->progress_opaque, QED_MIN(w->done_bytes, w->end),
                    w->end);
}

static const char *image_name(const qed_image *img)
{
    return img && img->filename ? img->filename : "image";
}

void qedi_ops_warn(struct ops_walk *w, const char *fmt, ...)
{
    char message[sizeof(((qed_error *)0)->message)];
    va_list ap;

    if (!w->warning)
        return;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    w->warning(w->warning_opaque, message);
}

/* Salvage: a status query that failed is asked again about a quarter of
 * the range, down to 512 bytes; when even that fails, the range up to the
 * next multiple of salvage_gran is handed out as salvage_action, with
 * nothing known about it (its reads then tell what can be read). */
static void salvage_status(struct ops_walk *w)
{
    uint64_t gran = w->salvage_gran ? w->salvage_gran : 512;
    uint64_t end;

    if (w->q_len > 512) {
        w->q_shrink = QED_MAX(512, round_up_u64(w->q_len / 4, 512));
        w->run_start = w->run_end = w->pos; /* query again */
        return;
    }
    w->q_shrink = 0;
    qedi_ops_warn(w, "error while reading block status at offset %" PRIu64
             ": %s", w->pos, w->q_err.message[0] ? w->q_err.message
                                                   : strerror(-w->q_ret));
    end = QED_MIN(round_down_u64(w->pos, gran) + gran, w->limit);
    w->run_start = w->pos;
    w->run_end = end;
    w->run_action = w->salvage_action;
    memset(w->run_st, 0, sizeof(w->run_st));
    for (unsigned i = 0; i < w->nstatus; i++) {
        w->run_st[i].length = end - w->pos;
        w->run_st[i].present = true;
        w->run_st[i].data = true;
    }
}

static void query_finished(struct ops_walk *w)
{
    uint64_t len = w->q_len;
    uint64_t want;
    int action;

    w->querying = false;
    if (w->q_ret < 0) {
        if (w->salvage)
            salvage_status(w);
        else
            walk_fail(w, w->q_ret, &w->q_err);
        return;
    }
    w->q_shrink = 0;
    for (unsigned i = 0; i < w->nstatus; i++) {
        uint64_t l = w->q_st[i].length;
        /* A length that would not advance, or runs past what was asked,
         * would make the walk loop or overrun: refuse it. */
        if (l == 0 || l > w->q_len) {
            qed_error e;
            qedi_fail(&e, EIO, "block status of '%s' at offset %" PRIu64
                     " returned an invalid length %" PRIu64,
                     image_name(w->status[i]), w->pos, l);
            walk_fail(w, -EIO, &e);
            return;
        }
        len = QED_MIN(len, l);
    }
    want = len;
    action = w->classify(w, w->pos, &len, w->q_st);
    if (len == 0 || len > want)
        len = want;
    w->run_start = w->pos;
    w->run_end = w->pos + len;
    w->run_action = action;
    memcpy(w->run_st, w->q_st, sizeof(w->run_st));
}

static void status_done(void *opaque, int ret, const qed_error *err)
{
    struct ops_walk *w = opaque;

    if (ret < 0 && w->q_ret == 0) {
        w->q_ret = ret;
        if (err)
            qedi_error_copy(&w->q_err, err);
        else
            qedi_fail(&w->q_err, -ret, "block status: %s", strerror(-ret));
    }
    if (--w->q_pending > 0)
        return;
    query_finished(w);
    pump(w);
}

/* Asks every status image about [pos, limit); an image that is absent or
 * ends before pos reads as zeros and answers at once. */
static void start_query(struct ops_walk *w)
{
    w->querying = true;
    w->q_ret = 0;
    w->q_len = w->limit - w->pos; /* the limit may drop meanwhile */
    if (w->q_shrink)
        w->q_len = QED_MIN(w->q_len, w->q_shrink);
    w->q_pending = 1; /* held while submitting */
    w->q_err.code = 0;
    w->q_err.message[0] = '\0';
    for (unsigned i = 0; i < w->nstatus; i++) {
        qed_image *img = w->status[i];
        struct qed_block_status *st = &w->q_st[i];
        int ret;

        qed_block_status_init(st);
        if (!img || w->pos >= qed_size(img)) {
            st->length = w->q_len;
            st->zero = true;
            continue;
        }
        w->q_pending++;
        ret = qed_aio_block_status(img, w->pos, w->q_len, st, status_done,
                                   w);
        if (ret < 0) {
            w->q_pending--;
            if (w->q_ret == 0) {
                w->q_ret = ret;
                qedi_fail(&w->q_err, -ret, "block status of '%s' at offset %"
                         PRIu64 ": %s", image_name(img), w->pos,
                         strerror(-ret));
            }
        }
    }
    if (--w->q_pending == 0)
        query_finished(w); /* the caller (pump) goes on */
}

static struct ops_worker *idle_worker(struct ops_walk *w)
{
    for (unsigned i = 0; i < w->nworkers; i++)
        if (!w->workers[i].busy)
            return &w->workers[i];
    return NULL;
}

/* Where the next segment ends.  Segments never cross a multiple of the
 * request size, so aligned source data stays aligned (and whole clusters
 * stay whole). */
static uint64_t segment_end(const struct ops_walk *w)
{
    uint64_t boundary = round_down_u64(w->pos, w->request_size);

    return QED_MIN(w->run_end, boundary + w->request_size);
}

static uint64_t monotonic_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void rate_timer_fired(void *opaque)
{
    struct ops_walk *w = opaque;

    w->rate_timer = 0;
    pump(w);
}

/* Rate limit: may the next segment start now?  If not, a timer runs pump
 * again when it may.  Its bytes count once it is let through. */
static bool rate_allows(struct ops_walk *w)
{
    uint64_t len, now, due;
    double after_ns;

    if (!w->rate_limit || !(w->rate_actions & (1u << w->run_action)))
        return true;
    if (w->rate_timer)
        return false;
    len = segment_end(w) - w->pos;
    now = monotonic_ns();
    after_ns = (double)(w->rate_bytes + len) * 1e9 / (double)w->rate_limit;
    due = after_ns < 1e18 ? w->rate_start_ns + (uint64_t)after_ns
                          : UINT64_MAX;
    if (now < due) {
        /* At most an hour at a time: the timer asks again when it fires. */
        uint64_t ms = QED_MIN((due - now) / 1000000 + 1, 3600000u);
        w->rate_timer = qed_loop_add_timer(w->loop, ms, rate_timer_fired, w);
        if (w->rate_timer)
            return false;
        /* No memory for a timer: go on unlimited rather than stall. */
    }
    w->rate_bytes += len;
    return true;
}

static void dispatch(struct ops_walk *w, struct ops_worker *k)
{
    uint64_t start = w->pos, end = segment_end(w), seg_end;
    uint64_t align = w->align;

    seg_end = end;
    if (align > 1 && w->request_size % align == 0) {
        if (start == w->run_start)
            start = round_down_u64(start, align);
        if (end == w->run_end)
            seg_end = QED_MIN(round_up_u64(end, align), w->end);
    }
    k->busy = true;
    k->offset = start;
    k->length = seg_end - start;
    k->counted = end - w->pos;
    k->action = w->run_action;
    k->pending = 0;
    k->sub_ret = 0;
    k->sub_err.code = 0;
    k->sub_err.message[0] = '\0';
    k->tolerant = false;
    k->seq = w->next_seq++;
    k->has_turn = false;
    k->parked = NULL;
    for (unsigned i = 0; i < w->nstatus; i++) {
        k->st[i] = w->run_st[i];
        k->st[i].length = w->run_end - w->pos;
        if (k->st[i].has_offset)
            k->st[i].offset += w->pos - w->run_start;
        /* Widened past the run, the status says nothing about the rest. */
        if (start != w->pos || seg_end != end)
            k->st[i].zero = false;
    }
    w->busy++;
    w->pos = end;
    w->start(k);
}

static void pump_once(struct ops_walk *w)
{
    while (w->ret == 0 && !w->querying && w->pos < w->limit) {
        struct ops_worker *k;

        if (w->pos >= w->run_end) {
            start_query(w);
            continue; /* answered at once, or pump runs again later */
        }
        if (w->run_end > w->limit)
            w->run_end = w->limit;
        if (w->run_action == OPS_SKIP) {
            uint64_t n = w->run_end - w->pos;
            w->pos = w->run_end;
            report_progress(w, n);
            continue;
        }
        k = idle_worker(w);
        if (!k || !rate_allows(w))
            return;
        dispatch(w, k);
    }
}

/* Hands out work while workers are idle; never recurses into itself (a
 * worker that finishes at once only asks for another round). */
static void pump(struct ops_walk *w)
{
    if (w->pumping) {
        w->repump = true;
        return;
    }
    w->pumping = true;
    do {
        w->repump = false;
        pump_once(w);
    } while (w->repump);
    w->pumping = false;
}

/* In-order writes: gives the turn to the worker parked for it; once the
 * walk has failed, ends every parked worker instead (nothing more is to be
 * written).  A worker that gets the turn may finish at once and come back
 * here: the depth is bounded by the number of workers. */
static void wake_parked(struct ops_walk *w)
{
    for (unsigned i = 0; i < w->nworkers; i++) {
        struct ops_worker *p = &w->workers[i];
        void (*then)(struct ops_worker *k) = p->parked;

        if (!then)
            continue;
        if (w->ret < 0) {
            p->parked = NULL;
            p->busy = false;
            w->busy--;
        } else if (p->seq == w->turn) {
            p->parked = NULL;
            p->has_turn = true;
            then(p);
            return;
        }
    }
}

void qedi_ops_await_turn(struct ops_worker *k, void (*then)(struct ops_worker *k))
{
    struct ops_walk *w = k->walk;

    if (!w->in_order) {
        then(k);
    } else if (w->ret < 0) {
        qedi_ops_worker_done(k, 0, NULL);
    } else if (k->seq == w->turn) {
        k->has_turn = true;
        then(k);
    } else {
        k->parked = then;
    }
}

void qedi_ops_pass_turn(struct ops_worker *k)
{
    struct ops_walk *w = k->walk;

    if (!k->has_turn)
        return;
    k->has_turn = false;
    w->turn++;
    wake_parked(w);
}

void qedi_ops_worker_done(struct ops_worker *k, int ret, const qed_error *err)
{
    struct ops_walk *w = k->walk;

    k->busy = false;
    w->busy--;
    if (ret < 0)
        walk_fail(w, ret, err);
    else
        report_progress(w, k->counted);
    if (k->has_turn) {
        k->has_turn = false;
        w->turn++;
    }
    if (w->in_order)
        wake_parked(w);
    pump(w);
}

static bool walk_finished(const struct ops_walk *w)
{
    if (w->busy > 0 || w->querying)
        return false;
    return w->ret < 0 || w->pos >= w->limit;
}

static void free_workers(struct ops_walk *w)
{
    if (w->pool)
        munmap(w->pool, w->pool_size);
    w->pool = NULL;
    free(w->workers);
    w->workers = NULL;
}

/* Every worker's buffers in one mapping.  Not in transparent huge pages:
 * a huge page is cleared whole on its first fault even where a segment
 * only fills part of a buffer, and in virtual machines fresh huge pages
 * are the slowest memory to touch first. */
static int alloc_buffers(struct ops_walk *w)
{
    size_t total = (size_t)w->nworkers * w->nbufs * w->request_size;
    uint8_t *base;

    if (total == 0)
        return 0;
    w->pool_size = total;
    w->pool = mmap(NULL, w->pool_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (w->pool == MAP_FAILED) {
        w->pool = NULL;
        return -ENOMEM;
    }
    base = w->pool;
    for (unsigned i = 0; i < w->nworkers; i++)
        for (unsigned j = 0; j < w->nbufs; j++)
            w->workers[i].buf[j] =
                base + ((size_t)i * w->nbufs + j) * w->request_size;
    return 0;
}

int qedi_ops_walk_run(struct ops_walk *w, qed_error *err)
{
    uint64_t per_worker;
    int ret = 0;

    if (w->requests == 0 || w->request_size == 0) {
        ret = qedi_ops_walk_configure(w, NULL, err);
        if (ret < 0)
            return ret;
    }
    w->limit = w->end;
    w->pos = w->run_start = w->run_end = 0;
    w->ret = 0;
    w->done_bytes = 0;
    w->q_shrink = 0;
    w->next_seq = w->turn = 0;
    w->rate_bytes = 0;
    w->rate_timer = 0;
    w->rate_start_ns = monotonic_ns();
    /* No more workers than segments could ever keep busy. */
    per_worker = w->request_size;
    w->nworkers = (unsigned)QED_MIN((uint64_t)w->requests,
                                    QED_MAX(w->end / per_worker + 1, 1));
    w->workers = calloc(w->nworkers, sizeof(*w->workers));
    if (!w->workers)
        return qedi_fail(err, ENOMEM, "out of memory");
    for (unsigned i = 0; i < w->nworkers; i++)
        w->workers[i].walk = w;
    if (alloc_buffers(w) < 0) {
        free_workers(w);
        return qedi_fail(err, ENOMEM, "out of memory for %u buffers of %"
                        PRIu64 " bytes", w->nworkers * w->nbufs,
                        w->request_size);
    }
    if (w->progress)
        w->progress(w->progress_opaque, 0, w->end);
    pump(w);
    while (!walk_finished(w)) {
        int r = qed_loop_run(w->loop, -1);
        if (r < 0) {
            /* The loop itself failed: requests in flight cannot finish,
             * so their buffers must not be freed. */
            return qedi_fail(err, -r, "event loop: %s", strerror(-r));
        }
    }
    if (w->rate_timer)
        qed_loop_cancel_timer(w->loop, w->rate_timer);
    w->rate_timer = 0;
    free_workers(w);
    if (w->ret < 0) {
        qedi_error_copy(err, &w->err);
        return w->ret;
    }
    return 0;
}

/* ---- worker sub-requests ------------------------------------------------------ */

struct ops_sub {
    struct ops_worker *k;
    const char *what;
    const qed_image *img;
    uint64_t offset;
};

static void subs_settled(struct ops_worker *k)
{
    if (k->sub_ret < 0 && !k->tolerant)
        qedi_ops_worker_done(k, k->sub_ret, &k->sub_err);
    else
        k->next(k);
}

static void sub_failed(struct ops_worker *k, int ret, const char *what,
                       const qed_image *img, uint64_t offset,
                       const qed_error *err)
{
    if (k->sub_ret < 0)
        return;
    k->sub_ret = ret;
    qedi_fail(&k->sub_err, -ret, "%s '%s' at offset %" PRIu64 ": %s", what,
             image_name(img), offset,
             err && err->message[0] ? err->message : strerror(-ret));
}

static void sub_done(void *opaque, int ret, const qed_error *err)
{
    struct ops_sub *sub = opaque;
    struct ops_worker *k = sub->k;

    if (ret < 0)
        sub_failed(k, ret, sub->what, sub->img, sub->offset, err);
    free(sub);
    if (--k->pending == 0)
        subs_settled(k);
}

void qedi_ops_begin(struct ops_worker *k, void (*next)(struct ops_worker *k))
{
    k->next = next;
    k->pending = 1;
    k->sub_ret = 0;
    k->sub_err.code = 0;
    k->sub_err.message[0] = '\0';
    k->tolerant = false;
}

void qedi_ops_begin_tolerant(struct ops_worker *k,
                        void (*next)(struct ops_worker *k))
{
    qedi_ops_begin(k, next);
    k->tolerant = true;
}

void qedi_ops_end(struct ops_worker *k)
{
    if (--k->pending == 0)
        subs_settled(k);
}

static struct ops_sub *sub_new(struct ops_worker *k, const char *what,
                               const qed_image *img, uint64_t offset)
{
    struct ops_sub *sub = malloc(sizeof(*sub));

    if (!sub) {
        sub_failed(k, -ENOMEM, what, img, offset, NULL);
        return NULL;
    }
    sub->k = k;
    sub->what = what;
    sub->img = img;
    sub->offset = offset;
    k->pending++;
    return sub;
}

static void sub_submitted(struct ops_sub *sub, int ret)
{
    struct ops_worker *k;

    if (ret == 0)
        return;
    k = sub->k;
    sub_failed(k, ret, sub->what, sub->img, sub->offset, NULL);
    k->pending--;
    free(sub);
}

void qedi_ops_read(struct ops_worker *k, qed_image *img, void *buf, uint64_t len,
              uint64_t offset)
{
    struct ops_sub *sub = sub_new(k, "reading", img, offset);
    struct iovec v = { buf, len };

    if (sub)
        sub_submitted(sub, qed_aio_readv(img, &v, 1, offset, sub_done, sub));
}

void qedi_ops_write(struct ops_worker *k, qed_image *img, const void *buf,
               uint64_t len, uint64_t offset)
{
    struct ops_sub *sub = sub_new(k, "writing", img, offset);
    struct iovec v = { (void *)buf, len };

    if (sub)
        sub_submitted(sub, qed_aio_writev(img, &v, 1, offset, sub_done, sub));
}

void qedi_ops_write_zeroes(struct ops_worker *k, qed_image *img, uint64_t offset,
                      uint64_t len, unsigned flags)
{
    struct ops_sub *sub = sub_new(k, "writing zeroes to", img, offset);

    if (sub)
        sub_submitted(sub, qed_aio_write_zeroes(img, offset, len, flags,
                                                sub_done, sub));
}

void qedi_ops_fill(struct ops_worker *k, unsigned i, qed_image *img)
{
    uint64_t size = img ? qed_size(img) : 0;
    uint64_t avail = 0;

    if (img && !k->st[i].zero && k->offset < size)
        avail = QED_MIN(k->length, size - k->offset);
    if (avail < k->length)
        memset(k->buf[i] + avail, 0, k->length - avail);
    if (avail > 0)
        qedi_ops_read(k, img, k->buf[i], avail, k->offset);
}

enum block_kind { BLOCK_SAME, BLOCK_ZERO, BLOCK_DATA };

static enum block_kind block_kind(const uint8_t *buf, const uint8_t *cmp,
                                  size_t len)
{
    if (cmp && memcmp(buf, cmp, len) == 0)
        return BLOCK_SAME;
    return qedi_buf_is_zero(buf, len) ? BLOCK_ZERO : BLOCK_DATA;
}

/* The run of blocks of one kind that starts at pos of the worker's segment
 * (blocks aligned to absolute offsets at granularity gran). */
static uint64_t block_run(const struct ops_worker *k, const uint8_t *buf,
                          const uint8_t *cmp, uint64_t gran, uint64_t pos,
                          enum block_kind *kind)
{
    uint64_t len = k->length;
    uint64_t run = QED_MIN(gran - (k->offset + pos) % gran, len - pos);

    *kind = block_kind(buf + pos, cmp ? cmp + pos : NULL, run);
    while (pos + run < len) {
        uint64_t next = QED_MIN(gran, len - pos - run);
        if (block_kind(buf + pos + run, cmp ? cmp + pos + run : NULL,
                       next) != *kind)
            break;
        run += next;
    }
    return run;
}

void qedi_ops_write_blocks(struct ops_worker *k, qed_image *dst, const uint8_t *buf,
                      const uint8_t *cmp, uint64_t gran,
                      bool write_zero_blocks)
{
    for (uint64_t pos = 0, run; pos < k->length; pos += run) {
        enum block_kind kind;

        run = block_run(k, buf, cmp, gran, pos, &kind);
        if (kind == BLOCK_DATA)
            qedi_ops_write(k, dst, buf + pos, run, k->offset + pos);
        else if (kind == BLOCK_ZERO && write_zero_blocks)
            qedi_ops_write_zeroes(k, dst, k->offset + pos, run,
                             QED_ZERO_MAY_UNMAP);
    }
}

void qedi_ops_write_sparse(struct ops_worker *k, qed_image *dst, const uint8_t *buf,
                      uint64_t gran, uint64_t min_zero,
                      bool write_zero_blocks)
{
    uint64_t data_from = UINT64_MAX;

    for (uint64_t pos = 0, run; pos < k->length; pos += run) {
        enum block_kind kind;
        bool inside;

        run = block_run(k, buf, NULL, gran, pos, &kind);
        inside = pos > 0 && pos + run < k->length;
        if (kind == BLOCK_DATA || (inside && run < min_zero)) {
            if (data_from == UINT64_MAX)
                data_from = pos;
            continue;
        }
        if (data_from != UINT64_MAX)
            qedi_ops_write(k, dst, buf + data_from, pos - data_from,
                      k->offset + data_from);
        data_from = UINT64_MAX;
        if (write_zero_blocks)
            qedi_ops_write_zeroes(k, dst, k->offset + pos, run,
                             QED_ZERO_MAY_UNMAP);
    }
    if (data_from != UINT64_MAX)
        qedi_ops_write(k, dst, buf + data_from, k->length - data_from,
                  k->offset + data_from);
}

/* Preallocation only saves time: where it fails (no fallocate, no space)
 * the write that follows does the allocation, or reports the error. */
static void preallocated(void *opaque, int ret)
{
    (void)ret;
    sub_done(opaque, 0, NULL);
}

void qedi_ops_preallocate_data_blocks(struct ops_worker *k, qed_image *dst,
                                 const uint8_t *buf, uint64_t gran)
{
    for (uint64_t pos = 0, run; pos < k->length; pos += run) {
        enum block_kind kind;
        struct ops_sub *sub;

        run = block_run(k, buf, NULL, gran, pos, &kind);
        if (kind != BLOCK_DATA)
            continue;
        sub = sub_new(k, "allocating space in", dst, k->offset + pos);
        if (sub)
            qedi_io_fallocate(dst->file, FALLOC_FL_KEEP_SIZE, k->offset + pos, run,
                         preallocated, sub);
    }
}

/* ---- files and chains ------------------------------------------------------- */

bool qedi_ops_same_file(const char *a, const char *b)
{
    struct stat sa, sb;

    return a && b && stat(a, &sa) == 0 && stat(b, &sb) == 0 &&
           sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int qedi_ops_chain_depth_of(qed_image *img, qed_image *other)
{
    int depth = 0;

    if (!other)
        return -1;
    for (qed_image *layer = img; layer; layer = qed_backing(layer), depth++)
        if (layer->format == other->format &&
            qedi_ops_same_file(layer->filename, other->filename))
            return depth;
    return -1;
}

int qedi_ops_require_idle(qed_image *img, const char *what, qed_error *err)
{
    if (img->in_flight || (img->driver->busy && img->driver->busy(img)))
        return qedi_fail(err, EBUSY, "%s: %u requests in flight on '%s'; the "
                        "image must be idle", what, img->in_flight,
                        image_name(img));
    return 0;
}

/* ---- storage drivers -------------------------------------------------------------- */

/* Files whose flushes complete at once without reaching the disk: a layer
 * over the local file. */
static void unsafe_flush(struct io_file *file, io_callback *cb, void *opaque)
{
    qedi_storage_complete_later(file, cb, opaque, 0);
}

static const struct storage_ops unsafe_ops = {
    .name = "unsafe",
    .readv = qedi_storage_layer_readv,
    .writev = qedi_storage_layer_writev,
    .flush = unsafe_flush,
    .fallocate = qedi_storage_layer_fallocate,
    .get_size = qedi_storage_layer_get_size,
    .truncate = qedi_storage_layer_truncate,
    .allocated_bytes = qedi_storage_layer_allocated_bytes,
    .seek = qedi_storage_layer_seek,
    .close = qedi_storage_layer_close,
};

static int unsafe_open(const struct storage_driver *driver, qed_loop *loop,
                       const char *path, unsigned io_flags,
                       struct io_file **out, qed_error *err)
{
    struct storage_layer *u = calloc(1, sizeof(*u));
    struct io_file *lower;
    int ret;

    (void)driver;
    *out = NULL;
    if (!u)
        return qedi_fail(err, ENOMEM, "out of memory");
    ret = qedi_storage_open(NULL, loop, path, io_flags, &lower, err);
    if (ret < 0) {
        free(u);
        return ret;
    }
    qedi_storage_layer_init(u, &unsafe_ops, lower);
    *out = &u->base;
    return 0;
}

const struct storage_driver qedi_ops_unsafe_opener = {
    .name = "unsafe",
    .open = unsafe_open,
};

/* The local file driver's own open: qedi_storage_open then locks the file as
 * the writer it is. */
static int writable_open(const struct storage_driver *driver, qed_loop *loop,
                         const char *path, unsigned io_flags,
                         struct io_file **out, qed_error *err)
{
    (void)driver;
    return qedi_storage_file_driver.open(&qedi_storage_file_driver, loop, path,
                                    io_flags | IO_OPEN_WRITE, out, err);
}

const struct storage_driver qedi_ops_writable_opener = {
    .name = "writable",
    .open = writable_open,
};
