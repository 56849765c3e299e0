/* qed_convert: copy what an image reads into a new raw or QED image, with
 * many reads and writes in flight, keeping the output sparse.
 *
 * Without a backing file in the output, a range the source reports as
 * zeros is left alone (the new output reads zeros there already; a block
 * device gets written zeros), and data is read and written block by block
 * (clusters of a QED output, 4 KiB for raw) leaving out all-zero blocks.
 * With a backing file, the output must read like the source over it: the
 * source and the output (that is, its backing chain) are both read, and
 * only the blocks that differ are written, as data or as zero clusters.
 * Where the source's own chain shares layers with the new backing file,
 * what comes from those layers is the same on both sides and is skipped
 * without reading. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ops.h"

#define RAW_GRANULARITY 4096u

enum { ACT_COPY = 1, ACT_ZERO, ACT_DIFF };

struct convert {
    qed_image *src, *dst;
    bool write_zeroes;     /* the output does not read zeros where unwritten */
    bool has_backing;      /* the output has a backing file */
    bool preallocate;      /* a sparse raw file: allocate before writing */
    int shared_depth;      /* source layers from here down are the output's
                              backing chain; -1: none */
    uint64_t granularity;  /* zero detection and comparison */
};

static int classify(struct ops_walk *w, uint64_t pos, uint64_t *len,
                    const struct qed_block_status *st)
{
    struct convert *c = w->opaque;

    (void)pos;
    (void)len;
    if (!c->has_backing) {
        if (st[0].zero)
            return c->write_zeroes ? ACT_ZERO : OPS_SKIP;
        return ACT_COPY;
    }
    if (c->shared_depth >= 0 && st[0].depth >= (unsigned)c->shared_depth)
        return OPS_SKIP;
    if (st[0].zero && st[1].zero)
        return OPS_SKIP;
    return ACT_DIFF;
}

static void segment_done(struct ops_worker *k)
{
    ops_worker_done(k, 0, NULL);
}

static void copy_write(struct ops_worker *k)
{
    struct convert *c = k->walk->opaque;

    ops_begin(k, segment_done);
    ops_write_blocks(k, c->dst, k->buf[0], NULL, c->granularity,
                     c->write_zeroes);
    ops_end(k);
}

static void copy_read(struct ops_worker *k)
{
    struct convert *c = k->walk->opaque;

    if (!c->preallocate) {
        copy_write(k);
        return;
    }
    ops_begin(k, copy_write);
    ops_preallocate_data_blocks(k, c->dst, k->buf[0], c->granularity);
    ops_end(k);
}

static void diff_read(struct ops_worker *k)
{
    struct convert *c = k->walk->opaque;

    ops_begin(k, segment_done);
    ops_write_blocks(k, c->dst, k->buf[0], k->buf[1], c->granularity, true);
    ops_end(k);
}

static void start(struct ops_worker *k)
{
    struct convert *c = k->walk->opaque;

    switch (k->action) {
    case ACT_ZERO:
        ops_begin(k, segment_done);
        ops_write_zeroes(k, c->dst, k->offset, k->length, QED_ZERO_MAY_UNMAP);
        ops_end(k);
        break;
    case ACT_COPY:
        ops_begin(k, copy_read);
        ops_read(k, c->src, k->buf[0], k->length, k->offset);
        ops_end(k);
        break;
    default:
        /* The output reads its backing chain where nothing is written. */
        ops_begin(k, diff_read);
        ops_fill(k, 0, c->src);
        ops_fill(k, 1, c->dst);
        ops_end(k);
        break;
    }
}

/* ---- the output ---------------------------------------------------------------- */

static int refuse_chain_file(qed_image *src, const char *dst_path,
                             qed_error *err)
{
    for (qed_image *layer = src; layer; layer = qed_backing(layer)) {
        if (!ops_same_file(layer->filename, dst_path))
            continue;
        if (layer == src)
            return qed_fail(err, EINVAL, "'%s' is the same file as the "
                            "source", dst_path);
        return qed_fail(err, EINVAL, "'%s' is a backing file of the source "
                        "('%s')", dst_path, layer->filename);
    }
    return 0;
}

static int open_output(const char *path, enum qed_format format,
                       const struct qed_convert_options *o, qed_loop *loop,
                       qed_image **out, qed_error *err)
{
    struct qed_open_options oo = {
        .flags = QED_OPEN_RDWR,
        .format = format,
        .cache = o->cache,
        .loop = loop,
    };

    return image_open(path, &oo, o->unsafe ? &ops_unsafe_opener : NULL, out,
                      err);
}

/* A regular file is made empty and sized, so every range never written is
 * a hole; a block device keeps its content, so zeros must be written. */
static int create_raw(const char *path, uint64_t size, bool *is_device,
                      qed_error *err)
{
    struct stat st;
    int fd;

    *is_device = false;
    if (stat(path, &st) == 0 && S_ISBLK(st.st_mode)) {
        *is_device = true;
        return 0;
    }
    if (size > INT64_MAX)
        return qed_fail(err, EFBIG, "size %" PRIu64 " is too large", size);
    fd = io_open_fd(path, O_WRONLY | O_CREAT, 0644, IO_KIND_REGULAR, err);
    if (fd < 0)
        return fd;
    if (ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t)size) < 0) {
        int code = errno;
        close(fd);
        return qed_fail(err, code, "setting the size to %" PRIu64
                        " bytes: %s", size, strerror(code));
    }
    if (close(fd) < 0)
        return qed_fail(err, errno, "%s", strerror(errno));
    return 0;
}

static int create_output(qed_image *src, const char *path,
                         const struct qed_convert_options *o,
                         enum qed_format format, struct convert *c,
                         qed_error *err)
{
    uint64_t size = qed_size(src);
    bool device = false;
    int ret;

    if (format == QED_FORMAT_RAW) {
        ret = create_raw(path, size, &device, err);
        if (ret == 0)
            ret = open_output(path, QED_FORMAT_RAW, o, qed_image_loop(src),
                              &c->dst, err);
        if (ret < 0)
            return ret;
        if (qed_size(c->dst) < size)
            return qed_fail(err, ENOSPC, "the output holds %" PRIu64
                            " bytes; the source needs %" PRIu64,
                            qed_size(c->dst), size);
        c->write_zeroes = device;
        c->preallocate = !device;
        c->granularity = RAW_GRANULARITY;
        return 0;
    }
    struct qed_create_options co = o->create;
    co.size = round_up_u64(size, 512);
    co.size_from_backing = false;
    if (co.size < size)
        return qed_fail(err, EFBIG, "size %" PRIu64 " is too large", size);
    ret = qed_create(path, &co, err);
    if (ret == 0)
        ret = open_output(path, QED_FORMAT_QED, o, qed_image_loop(src),
                          &c->dst, err);
    if (ret < 0)
        return ret;
    c->has_backing = qed_backing(c->dst) != NULL;
    c->granularity = c->dst->qed->cluster_size;
    if (c->has_backing)
        c->shared_depth = ops_chain_depth_of(src, qed_backing(c->dst));
    return 0;
}

int qed_convert(qed_image *src, const char *dst_path,
                const struct qed_convert_options *options, qed_error *err)
{
    struct qed_convert_options o = { 0 };
    struct convert c = { .src = src, .shared_depth = -1 };
    struct ops_walk w = { 0 };
    enum qed_format format;
    qed_error close_err = { 0 };
    int ret, r;

    if (options)
        o = *options;
    format = o.format == QED_FORMAT_PROBE ? QED_FORMAT_RAW : o.format;
    if (format != QED_FORMAT_RAW && format != QED_FORMAT_QED)
        return qed_fail(err, EINVAL, "output format %d is neither raw nor "
                        "qed", (int)o.format);
    if (format == QED_FORMAT_RAW && o.create.backing_file &&
        o.create.backing_file[0])
        return qed_fail(err, EINVAL, "a backing file needs qed output "
                        "(backing file '%s' for a raw output)",
                        o.create.backing_file);
    ret = ops_walk_configure(&w, &o.op, err);
    if (ret == 0)
        ret = ops_require_idle(src, "convert", err);
    if (ret == 0)
        ret = refuse_chain_file(src, dst_path, err);
    if (ret < 0)
        return ret;
    ret = create_output(src, dst_path, &o, format, &c, err);
    if (ret < 0) {
        if (c.dst)
            qed_close(c.dst, NULL);
        return ret;
    }
    w.loop = qed_image_loop(src);
    w.end = qed_size(src);
    w.status[0] = src;
    w.status[1] = c.dst;
    w.nstatus = c.has_backing ? 2 : 1;
    w.nbufs = c.has_backing ? 2 : 1;
    w.align = c.has_backing ? c.granularity : 0;
    w.classify = classify;
    w.start = start;
    w.opaque = &c;
    ret = ops_walk_run(&w, err);
    if (ret == 0) {
        ret = qed_flush(c.dst, err);
        if (ret < 0)
            qed_error_prefix(err, "flushing the output: ");
    }
    r = qed_close(c.dst, &close_err);
    if (r < 0 && ret == 0) {
        qed_error_copy(err, &close_err);
        qed_error_prefix(err, "closing the output: ");
        ret = r;
    }
    return ret;
}
