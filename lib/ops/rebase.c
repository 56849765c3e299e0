/* SPDX-License-Identifier: MIT */
/* Backing files: qed_set_backing (header rewrite and chain swap),
 * qed_set_backing_at (header only, by path) and qed_rebase (copy what would
 * change, then the header).
 *
 * The header rewrite: the new name always goes right after the fixed
 * fields (offset 64), where qemu-img puts it.  Nothing is written before
 * the name is known to fit and (qed_set_backing) the new backing file is
 * open; the part of a long name past the first 4 KiB block (only possible
 * with header clusters over 4 KiB) is written and flushed first, into
 * header space nothing reads yet; then the first block, fields and all, in
 * one write, and a flush. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "ops.h"

static int self_backing_error(const char *path, const char *name,
                              qed_error *err)
{
    return qedi_fail(err, ELOOP, "backing file '%s' is '%s' itself, a loop: "
                    "an image cannot be its own backing file", name, path);
}

static int no_backing_file(const char *path, const qed_image *img,
                           qed_error *err)
{
    return qedi_fail(err, ENOTSUP, "'%s' is a %s image; only QED images have "
                    "a backing file", path, img->driver->name);
}

static int check_target(qed_image *img, const char *name, qed_error *err)
{
    if (!img->driver->set_backing)
        return no_backing_file(img->filename, img, err);
    if (!img->writable)
        return qedi_fail(err, EPERM, "'%s' is open read-only", img->filename);
    if (qedi_image_backing_is_self(img->filename, name))
        return self_backing_error(img->filename, name, err);
    return img->driver->check_backing_name(img, name, err);
}

/* ELOOP when the chain opened from path would loop back to img or get too
 * deep, else 0. */
static int check_new_chain(qed_image *img, const char *path,
                           qed_image *chain, qed_error *err)
{
    unsigned depth = 1;

    for (qed_image *layer = chain; layer; layer = qed_backing(layer), depth++) {
        if (qedi_ops_same_file(layer->filename, img->filename))
            return qedi_fail(err, ELOOP, "backing file '%s' would make a "
                            "loop: '%s' is in its chain", path,
                            img->filename);
        if (depth > QED_MAX_CHAIN_DEPTH)
            return qedi_fail(err, ELOOP, "backing chain deeper than %u images",
                            QED_MAX_CHAIN_DEPTH);
    }
    return 0;
}

/* A chain that loops back to img cannot be opened while img is open for
 * writing: img's own locks refuse it.  Opened again without locks (read
 * only, nothing is written), it tells whether that was the reason, so the
 * loop is reported rather than a lock conflict with ourselves. */
static int explain_lock_conflict(qed_image *img, const char *path,
                                 const struct qed_open_options *o,
                                 qed_error *err)
{
    struct qed_open_options unlocked = *o;
    qed_image *chain;
    int ret;

    unlocked.locking = QED_LOCK_OFF;
    if (qed_open(path, &unlocked, &chain, NULL) < 0)
        return -EAGAIN;
    ret = check_new_chain(img, path, chain, err);
    qed_close(chain, NULL);
    return ret < 0 ? ret : -EAGAIN;
}

/* Opens the backing file name would make img's (NULL for none), on img's
 * loop and with its locking, and makes sure the chain would not loop or get
 * too deep. */
static int open_new_backing(qed_image *img, const char *name,
                            enum qed_format format, qed_image **out,
                            char **path_out, qed_error *err)
{
    struct qed_open_options o = {
        .size = sizeof(o),
        .format = format,
        .cache = img->cache,
        .loop = img->loop,
        .locking = img->locking,
    };
    char *path;
    int ret;

    *out = NULL;
    *path_out = NULL;
    if (!name[0])
        return 0;
    qedi_image_remote_options(img, &o);
    path = qedi_image_resolve_backing(img->filename, name);
    if (!path)
        return qedi_fail(err, ENOMEM, "out of memory");
    ret = qed_open(path, &o, out, err);
    if (ret == -EAGAIN && explain_lock_conflict(img, path, &o, err) != -EAGAIN)
        ret = -ELOOP;
    else if (ret < 0)
        qedi_error_prefix(err, "backing file '%s': ",
                          qedi_storage_uri_for_messages(path));
    if (ret == 0)
        ret = check_new_chain(img, path, *out, err);
    if (ret < 0) {
        qed_close(*out, NULL);
        *out = NULL;
        free(path);
        return ret;
    }
    *path_out = path;
    return 0;
}

/* Rewrites the header for the new backing file (already open) and swaps
 * the chain.  Takes backing and path either way. */
static int install_backing(qed_image *img, const char *name,
                           enum qed_format format, qed_image *backing,
                           char *path, qed_error *err)
{
    bool no_probe = format == QED_FORMAT_RAW ||
                    (backing && qed_format_of(backing) == QED_FORMAT_RAW);
    int ret;

    if (img->driver->quiesce)
        img->driver->quiesce(img);
    ret = img->driver->set_backing(img, name, no_probe, err);
    if (ret < 0) {
        qed_close(backing, NULL);
        free(path);
        return ret;
    }
    if (img->backing)
        qed_close(img->backing, NULL);
    img->backing = backing;
    free(img->backing_path);
    img->backing_path = path;
    img->backing_unavailable = false;
    return 0;
}

int qed_set_backing(qed_image *img, const char *name, enum qed_format format,
                    qed_error *err)
{
    qed_image *backing;
    char *path;
    int ret;

    if (!name)
        name = "";
    ret = check_target(img, name, err);
    if (ret == 0)
        ret = qedi_ops_require_idle(img, "set backing file", err);
    if (ret == 0)
        ret = open_new_backing(img, name, format, &backing, &path, err);
    if (ret < 0)
        return ret;
    return install_backing(img, name, format, backing, path, err);
}

int qed_set_backing_at(const char *path, const char *name,
                       enum qed_format format, qed_error *err)
{
    struct qed_open_options o = { .size = sizeof(o),
                                  .flags = QED_OPEN_NO_BACKING };
    qed_image *img;
    int ret;

    if (!name)
        name = "";
    /* Before the open, which could already write (autoclear bits). */
    if (qedi_image_backing_is_self(path, name))
        return self_backing_error(path, name, err);
    /* Read-only as far as requests go, but on a writable file, and without
     * the chain: the old backing file may be gone. */
    ret = qedi_image_open(path, &o, &qedi_ops_writable_opener, &img, err);
    if (ret < 0)
        return ret;
    if (!img->driver->set_backing)
        ret = no_backing_file(path, img, err);
    else
        ret = img->driver->set_backing(img, name, format == QED_FORMAT_RAW,
                                       err);
    qed_close(img, NULL);
    return ret;
}

/* ---- rebase ---------------------------------------------------------------------- */

enum { ACT_DIFF = 1 };

struct rebase {
    qed_image *img, *backing;
    int shared_depth;
};

static int classify(struct ops_walk *w, uint64_t pos, uint64_t *len,
                    const struct qed_block_status *st)
{
    struct rebase *r = w->opaque;

    (void)pos;
    (void)len;
    /* What the image holds itself does not depend on its backing file. */
    if (st[0].present && st[0].depth == 0)
        return OPS_SKIP;
    /* Layers shared by the old and the new chain read the same. */
    if (r->shared_depth > 0 && st[0].depth >= (unsigned)r->shared_depth)
        return OPS_SKIP;
    if (st[0].zero && st[1].zero)
        return OPS_SKIP;
    return ACT_DIFF;
}

static void segment_done(struct ops_worker *k)
{
    qedi_ops_worker_done(k, 0, NULL);
}

static void both_read(struct ops_worker *k)
{
    struct rebase *r = k->walk->opaque;

    /* The image keeps, as its own, whatever the new chain would change. */
    qedi_ops_begin(k, segment_done);
    qedi_ops_write_blocks(k, r->img, k->buf[0], k->buf[1],
                     r->img->cluster_size, true);
    qedi_ops_end(k);
}

static void start(struct ops_worker *k)
{
    struct rebase *r = k->walk->opaque;

    qedi_ops_begin(k, both_read);
    qedi_ops_fill(k, 0, r->img);
    qedi_ops_fill(k, 1, r->backing);
    qedi_ops_end(k);
}

int qed_rebase(qed_image *img, const char *backing, enum qed_format format,
               unsigned flags, const struct qed_op_options *o, qed_error *err)
{
    struct rebase r = { .img = img };
    struct ops_walk w = { 0 };
    const char *name = backing ? backing : "";
    char *path = NULL;
    int ret;

    if (flags & ~QED_REBASE_UNSAFE)
        return qedi_fail(err, EINVAL, "rebase flags 0x%x: unknown bits 0x%x",
                        flags, flags & ~QED_REBASE_UNSAFE);
    if (flags & QED_REBASE_UNSAFE)
        return qed_set_backing(img, name, format, err);
    ret = check_target(img, name, err);
    if (ret == 0)
        ret = qedi_ops_walk_configure(&w, o, err);
    if (ret == 0)
        ret = qedi_ops_require_idle(img, "rebase", err);
    if (ret == 0)
        ret = open_new_backing(img, name, format, &r.backing, &path, err);
    if (ret < 0)
        return ret;
    r.shared_depth = qedi_ops_chain_depth_of(img, r.backing);
    w.loop = img->loop;
    w.end = qed_size(img);
    w.status[0] = img;
    w.status[1] = r.backing;
    w.nstatus = 2;
    w.nbufs = 2;
    w.align = img->cluster_size;
    w.classify = classify;
    w.start = start;
    w.opaque = &r;
    ret = qedi_ops_walk_run(&w, err);
    /* What was copied is durable before the header points elsewhere. */
    if (ret == 0)
        ret = qed_flush(img, err);
    if (ret < 0) {
        qed_close(r.backing, NULL);
        free(path);
        return ret;
    }
    return install_backing(img, name, format, r.backing, path, err);
}
