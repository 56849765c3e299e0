/* SPDX-License-Identifier: MIT */
/* qed_commit: write what the layers of an image above a base hold into
 * that base: its backing file, or (options->base, qemu-img commit -b) a
 * file further down its backing chain.
 *
 * The image is opened read-only with its chain, and the chain is cut just
 * above the base: the base's read-only instance is closed, so block status
 * of the image tells exactly what the layers above the base hold
 * (unallocated down to the base is not present) and nothing reads the
 * base through the chain while it changes; the base is then opened
 * read-write on the same loop.  Data is copied (all-zero blocks as
 * write-zeroes), zero clusters become write-zeroes, and so do ranges past
 * the end of a shorter layer in between (they read as zeros); the base
 * grows first when it is smaller.  Ordering: everything is written and
 * flushed into the base; the image and the layers in between are never
 * written (QED has no way to empty an image, so qemu-img leaves them as
 * they are too): the image still reads as before, the layers in between
 * may not. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

#define RAW_GRANULARITY 4096u

enum { ACT_COPY = 1, ACT_ZERO };

struct commit {
    qed_image *top, *base;
    unsigned base_depth;     /* of the base in top's chain (>= 1) */
    char *base_path;         /* as the layer above names it, resolved */
    uint64_t granularity;
};

static int classify(struct ops_walk *w, uint64_t pos, uint64_t *len,
                    const struct qed_block_status *st)
{
    struct commit *c = w->opaque;

    (void)pos;
    (void)len;
    if (st[0].present)
        return st[0].zero ? ACT_ZERO : ACT_COPY;
    /* Not present: unallocated down to the base (the chain ends above it)
     * or past its end, which the grown base reads as zeros; or past the end
     * of a shorter layer in between, where the image reads zeros the base
     * must read too. */
    return st[0].depth + 1 < c->base_depth ? ACT_ZERO : OPS_SKIP;
}

static void segment_done(struct ops_worker *k)
{
    qedi_ops_worker_done(k, 0, NULL);
}

static void copy_read(struct ops_worker *k)
{
    struct commit *c = k->walk->opaque;

    qedi_ops_begin(k, segment_done);
    qedi_ops_write_blocks(k, c->base, k->buf[0], NULL, c->granularity, true);
    qedi_ops_end(k);
}

static void start(struct ops_worker *k)
{
    struct commit *c = k->walk->opaque;

    if (k->action == ACT_ZERO) {
        qedi_ops_begin(k, segment_done);
        qedi_ops_write_zeroes(k, c->base, k->offset, k->length, QED_ZERO_MAY_UNMAP);
        qedi_ops_end(k);
        return;
    }
    qedi_ops_begin(k, copy_read);
    qedi_ops_read(k, c->top, k->buf[0], k->length, k->offset);
    qedi_ops_end(k);
}

/* Is layer, named by the layer above it, the file the user named base?
 * Like qemu-img: base is relative to the directory of the layer above (not
 * to the working directory), and the two must be the same canonical
 * path. */
static bool is_base(const qed_image *above, const qed_image *layer,
                    const char *base)
{
    char *named = qedi_image_resolve_backing(above->filename, base);
    char *a = named ? realpath(named, NULL) : NULL;
    char *b = a ? realpath(layer->filename, NULL) : NULL;
    bool same = named && (strcmp(named, layer->filename) == 0 ||
                          (a && b && strcmp(a, b) == 0));

    free(b);
    free(a);
    free(named);
    return same;
}

/* The layer above the base in top's chain (which has one), or NULL. */
static qed_image *find_above_base(struct commit *c, const char *base,
                                  const char *path, qed_error *err)
{
    unsigned depth = 1;

    if (!base) {
        if (!c->top->backing_path) {
            qedi_fail(err, EINVAL, "'%s' has no backing file to commit to",
                     path);
            return NULL;
        }
        c->base_depth = 1;
        return c->top;
    }
    for (qed_image *above = c->top; above && above->backing;
         above = above->backing, depth++) {
        if (is_base(above, above->backing, base)) {
            c->base_depth = depth;
            return above;
        }
    }
    qedi_fail(err, EINVAL, "Did not find '%s' in the backing chain of '%s'",
             base, path);
    return NULL;
}

/* Cuts top's chain above the base and opens the base read-write. */
static int open_base(struct commit *c, qed_image *above,
                     const struct qed_commit_options *o, qed_error *err)
{
    qed_image *ro_base = above->backing;
    struct qed_open_options bo = {
        .size = sizeof(bo),
        .flags = QED_OPEN_RDWR,
        .cache = o->cache,
        .loop = qed_image_loop(c->top),
        .locking = o->locking,
    };
    int ret;

    c->base_path = strdup(above->backing_path);
    if (!c->base_path)
        return qedi_fail(err, ENOMEM, "out of memory");
    /* Probed again when the layer above records no format: a raw base
     * opened by probing keeps its first sector guarded (raw.c), so the
     * commit cannot turn it into another format's image. */
    bo.format = above->backing_raw ? QED_FORMAT_RAW : QED_FORMAT_PROBE;
    /* Reads of what the layer above does not hold would now need the
     * base: make them fail rather than read zeros (none is expected). */
    above->backing = NULL;
    above->backing_unavailable = true;
    qed_close(ro_base, NULL);
    ret = qed_open(c->base_path, &bo, &c->base, err);
    if (ret < 0)
        qedi_error_prefix(err, "backing file '%s': ", c->base_path);
    return ret;
}

static int commit_walk(struct commit *c, struct ops_walk *w, qed_error *err)
{
    int ret;

    /* The base must hold the whole image. */
    if (qed_size(c->base) < qed_size(c->top)) {
        ret = qed_resize(c->base, qed_size(c->top), 0, err);
        if (ret < 0) {
            qedi_error_prefix(err, "growing backing file '%s' to %" PRIu64
                             " bytes: ", c->base_path, qed_size(c->top));
            return ret;
        }
    }
    c->granularity = c->base->cluster_size ? c->base->cluster_size
                                  : RAW_GRANULARITY;
    w->loop = qed_image_loop(c->top);
    w->end = qed_size(c->top);
    w->status[0] = c->top;
    w->nstatus = 1;
    w->nbufs = 1;
    w->classify = classify;
    w->start = start;
    w->opaque = c;
    ret = qedi_ops_walk_run(w, err);
    if (ret == 0) {
        ret = qed_flush(c->base, err);
        if (ret < 0)
            qedi_error_prefix(err, "backing file '%s': ", c->base_path);
    }
    return ret;
}

int qed_commit(const char *path, const struct qed_commit_options *options,
               qed_error *err)
{
    struct qed_commit_options o = { 0 };
    struct commit c = { 0 };
    struct ops_walk w = { 0 };
    qed_error close_err = { 0 };
    qed_image *above;
    int ret, r;

    ret = qedi_abi_take(&qedi_abi_commit_options, &o, options, err);
    if (ret == 0)
        ret = qedi_ops_walk_configure(&w, o.op, err);
    if (ret < 0)
        return ret;
    struct qed_open_options to = {
        .size = sizeof(to),
        .format = o.format,
        .engine = o.engine,
        .cache = o.cache,
        .locking = o.locking,
    };
    ret = qed_open(path, &to, &c.top, err);
    if (ret < 0)
        return ret;
    above = find_above_base(&c, o.base, path, err);
    ret = above ? open_base(&c, above, &o, err) : -EINVAL;
    if (ret == 0)
        ret = commit_walk(&c, &w, err);
    if (c.base) {
        r = qed_close(c.base, &close_err);
        if (r < 0 && ret == 0) {
            qedi_error_copy(err, &close_err);
            qedi_error_prefix(err, "backing file '%s': ", c.base_path);
            ret = r;
        }
    }
    qed_close(c.top, NULL);
    free(c.base_path);
    return ret;
}
