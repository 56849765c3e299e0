/* qed_commit: write what an image holds itself into its backing file.
 *
 * The image is opened read-only without its chain, so its block status
 * tells exactly what it holds (unallocated ranges are not present); its
 * backing file is opened read-write on the same loop.  Data clusters are
 * copied (all-zero blocks as write-zeroes), zero clusters become
 * write-zeroes, and the backing file grows first when it is smaller.
 * Ordering: everything is written and flushed into the backing file; the
 * image itself is never written, so it stays valid and reads as before. */
#include <errno.h>
#include <inttypes.h>

#include "ops.h"

#define RAW_GRANULARITY 4096u

enum { ACT_COPY = 1, ACT_ZERO };

struct commit {
    qed_image *top, *base;
    uint64_t granularity;
};

static int classify(struct ops_walk *w, uint64_t pos, uint64_t *len,
                    const struct qed_block_status *st)
{
    (void)w;
    (void)pos;
    (void)len;
    if (!st[0].present || st[0].depth != 0)
        return OPS_SKIP;
    return st[0].zero ? ACT_ZERO : ACT_COPY;
}

static void segment_done(struct ops_worker *k)
{
    ops_worker_done(k, 0, NULL);
}

static void copy_read(struct ops_worker *k)
{
    struct commit *c = k->walk->opaque;

    ops_begin(k, segment_done);
    ops_write_blocks(k, c->base, k->buf[0], NULL, c->granularity, true);
    ops_end(k);
}

static void start(struct ops_worker *k)
{
    struct commit *c = k->walk->opaque;

    if (k->action == ACT_ZERO) {
        ops_begin(k, segment_done);
        ops_write_zeroes(k, c->base, k->offset, k->length, QED_ZERO_MAY_UNMAP);
        ops_end(k);
        return;
    }
    ops_begin(k, copy_read);
    ops_read(k, c->top, k->buf[0], k->length, k->offset);
    ops_end(k);
}

static int open_backing(struct commit *c, const struct qed_commit_options *o,
                        qed_error *err)
{
    struct qed_state *s = c->top->qed;
    struct qed_open_options bo = {
        .flags = QED_OPEN_RDWR,
        .format = (s->header.features & QED_F_BACKING_FORMAT_NO_PROBE)
                      ? QED_FORMAT_RAW
                      : QED_FORMAT_PROBE,
        .cache = o->cache,
        .loop = qed_image_loop(c->top),
        .locking = o->locking,
    };
    int ret = qed_open(c->top->backing_path, &bo, &c->base, err);

    if (ret < 0)
        qed_error_prefix(err, "backing file '%s': ", c->top->backing_path);
    return ret;
}

int qed_commit(const char *path, const struct qed_commit_options *options,
               qed_error *err)
{
    struct qed_commit_options o = { 0 };
    struct commit c = { 0 };
    struct ops_walk w = { 0 };
    qed_error close_err = { 0 };
    int ret, r;

    if (options)
        o = *options;
    ret = ops_walk_configure(&w, &o.op, err);
    if (ret < 0)
        return ret;
    struct qed_open_options to = {
        .flags = QED_OPEN_NO_BACKING,
        .format = o.format,
        .engine = o.engine,
        .cache = o.cache,
        .locking = o.locking,
    };
    ret = qed_open(path, &to, &c.top, err);
    if (ret < 0)
        return ret;
    if (!c.top->qed || !c.top->backing_path) {
        ret = qed_fail(err, EINVAL, "'%s' has no backing file to commit to",
                       path);
        goto out;
    }
    if (ops_same_file(path, c.top->backing_path)) {
        ret = qed_fail(err, ELOOP, "'%s' is its own backing file", path);
        goto out;
    }
    ret = open_backing(&c, &o, err);
    if (ret < 0)
        goto out;
    /* The backing file must hold the whole image. */
    if (qed_size(c.base) < qed_size(c.top)) {
        ret = qed_resize(c.base, qed_size(c.top), 0, err);
        if (ret < 0) {
            qed_error_prefix(err, "growing backing file '%s' to %" PRIu64
                             " bytes: ", c.top->backing_path, qed_size(c.top));
            goto out;
        }
    }
    c.granularity = c.base->qed ? c.base->qed->cluster_size : RAW_GRANULARITY;
    w.loop = qed_image_loop(c.top);
    w.end = qed_size(c.top);
    w.status[0] = c.top;
    w.nstatus = 1;
    w.nbufs = 1;
    w.classify = classify;
    w.start = start;
    w.opaque = &c;
    ret = ops_walk_run(&w, err);
    if (ret == 0) {
        ret = qed_flush(c.base, err);
        if (ret < 0)
            qed_error_prefix(err, "backing file '%s': ", c.top->backing_path);
    }
out:
    if (c.base) {
        r = qed_close(c.base, &close_err);
        if (r < 0 && ret == 0) {
            qed_error_copy(err, &close_err);
            qed_error_prefix(err, "backing file '%s': ", c.top->backing_path);
            ret = r;
        }
    }
    qed_close(c.top, NULL);
    return ret;
}
