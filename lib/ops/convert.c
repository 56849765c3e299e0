/* SPDX-License-Identifier: MIT */
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
 * without reading.
 *
 * Into an existing image (-n), ranges the source reads as zeros are made
 * to read as zeros unless the output already does.  Writes into a QED
 * output go out in order of offset unless out_of_order is set (so its
 * clusters follow the guest's order), at most rate_limit bytes of data a second,
 * and with salvage, what cannot be read is written as zeros. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ops.h"

#define RAW_GRANULARITY 4096u
#define DEFAULT_MIN_SPARSE 4096u
/* Salvage reads a failed segment again in pieces of this size, and a
 * failed piece 512 bytes at a time. */
#define SALVAGE_PIECE (64u * 1024)

enum { ACT_COPY = 1, ACT_ZERO, ACT_DIFF };

struct convert {
    qed_image *src, *dst;
    bool write_zeroes;     /* the output does not read zeros where unwritten */
    bool has_backing;      /* the output has a backing file */
    bool preallocate;      /* a sparse raw file: allocate before writing */
    bool existing;         /* the output existed (-n): status[1] */
    bool write_all;        /* -S 0: every byte is written */
    bool salvage;
    int shared_depth;      /* source layers from here down are the output's
                              backing chain; -1: none */
    uint64_t granularity;  /* zero detection and comparison */
    uint64_t min_sparse;   /* shortest zero run left unwritten */
};

static int classify(struct ops_walk *w, uint64_t pos, uint64_t *len,
                    const struct qed_block_status *st)
{
    struct convert *c = w->opaque;

    (void)pos;
    (void)len;
    if (!c->has_backing) {
        if (c->write_all)
            return ACT_COPY;
        if (st[0].zero) {
            if (c->existing && st[1].zero)
                return OPS_SKIP; /* reads as zeros already */
            return c->write_zeroes ? ACT_ZERO : OPS_SKIP;
        }
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
    qedi_ops_worker_done(k, 0, NULL);
}

/* Zero blocks of a copied segment are written as zeroes where the output
 * would not read zeros otherwise. */
static bool zero_blocks_need_writing(const struct convert *c,
                                     const struct ops_worker *k)
{
    if (c->existing)
        return !k->st[1].zero;
    return c->write_zeroes;
}

static void copy_write(struct ops_worker *k)
{
    struct convert *c = k->walk->opaque;

    qedi_ops_begin(k, segment_done);
    if (c->write_all)
        qedi_ops_write(k, c->dst, k->buf[0], k->length, k->offset);
    else
        qedi_ops_write_sparse(k, c->dst, k->buf[0], c->granularity,
                         c->min_sparse, zero_blocks_need_writing(c, k));
    qedi_ops_pass_turn(k);
    qedi_ops_end(k);
}

static void copy_in_turn(struct ops_worker *k)
{
    qedi_ops_await_turn(k, copy_write);
}

static void copy_read(struct ops_worker *k)
{
    struct convert *c = k->walk->opaque;

    if (!c->preallocate) {
        copy_in_turn(k);
        return;
    }
    qedi_ops_begin(k, copy_in_turn);
    qedi_ops_preallocate_data_blocks(k, c->dst, k->buf[0], c->granularity);
    qedi_ops_end(k);
}

static void diff_write(struct ops_worker *k)
{
    struct convert *c = k->walk->opaque;

    qedi_ops_begin(k, segment_done);
    qedi_ops_write_blocks(k, c->dst, k->buf[0], k->buf[1], c->granularity, true);
    qedi_ops_pass_turn(k);
    qedi_ops_end(k);
}

static void diff_read(struct ops_worker *k)
{
    qedi_ops_await_turn(k, diff_write);
}

static void zero_write(struct ops_worker *k)
{
    struct convert *c = k->walk->opaque;

    qedi_ops_begin(k, segment_done);
    qedi_ops_write_zeroes(k, c->dst, k->offset, k->length, QED_ZERO_MAY_UNMAP);
    qedi_ops_pass_turn(k);
    qedi_ops_end(k);
}

/* ---- salvage ----------------------------------------------------------------- */

/* A segment whose read failed is read again piece by piece (cursor: bytes
 * done); a piece that fails is read again sector by sector (up to
 * piece_end), and the sectors that still fail become zeros.  Each run of
 * such sectors [bad_start, bad_end) is reported once. */
static uint64_t salvage_len(const struct ops_worker *k)
{
    uint64_t off = k->offset + k->cursor;

    if (k->cursor < k->piece_end)
        return QED_MIN(QED_SECTOR_SIZE, k->piece_end - k->cursor);
    return QED_MIN(SALVAGE_PIECE - off % SALVAGE_PIECE,
                   k->length - k->cursor);
}

static void report_unreadable(struct ops_worker *k)
{
    if (k->bad_end == k->bad_start)
        return;
    qedi_ops_warn(k->walk, "error while reading offset %" PRIu64 ": %s (%"
             PRIu64 " bytes written as zeros)", k->bad_start,
             strerror(k->bad_code), k->bad_end - k->bad_start);
    k->bad_start = k->bad_end = 0;
}

static void note_unreadable(struct ops_worker *k, uint64_t off, uint64_t len,
                            int code)
{
    if (k->bad_end != off)
        report_unreadable(k);
    if (k->bad_end == k->bad_start) {
        k->bad_start = off;
        k->bad_code = code ? code : EIO;
    }
    k->bad_end = off + len;
}

static void salvage_next(struct ops_worker *k);

static void salvage_piece_read(struct ops_worker *k)
{
    uint64_t len = salvage_len(k);
    uint64_t off = k->offset + k->cursor;

    if (k->sub_ret == 0) {
        report_unreadable(k);
        k->cursor += len;
    } else if (k->cursor >= k->piece_end && len > QED_SECTOR_SIZE) {
        k->piece_end = k->cursor + len; /* again, sector by sector */
    } else {
        memset(k->buf[0] + k->cursor, 0, len);
        note_unreadable(k, off, len, k->sub_err.code);
        k->cursor += len;
    }
    salvage_next(k);
}

static void salvage_next(struct ops_worker *k)
{
    struct convert *c = k->walk->opaque;

    if (k->cursor >= k->length) {
        report_unreadable(k);
        copy_read(k);
        return;
    }
    qedi_ops_begin_tolerant(k, salvage_piece_read);
    qedi_ops_read(k, c->src, k->buf[0] + k->cursor, salvage_len(k),
             k->offset + k->cursor);
    qedi_ops_end(k);
}

static void copy_read_salvaging(struct ops_worker *k)
{
    if (k->sub_ret == 0) {
        copy_read(k);
        return;
    }
    k->cursor = k->piece_end = 0;
    k->bad_start = k->bad_end = 0;
    salvage_next(k);
}

static void start(struct ops_worker *k)
{
    struct convert *c = k->walk->opaque;

    switch (k->action) {
    case ACT_ZERO:
        qedi_ops_await_turn(k, zero_write);
        break;
    case ACT_COPY:
        if (c->salvage)
            qedi_ops_begin_tolerant(k, copy_read_salvaging);
        else
            qedi_ops_begin(k, copy_read);
        qedi_ops_read(k, c->src, k->buf[0], k->length, k->offset);
        qedi_ops_end(k);
        break;
    default:
        /* The output reads its backing chain where nothing is written. */
        qedi_ops_begin(k, diff_read);
        qedi_ops_fill(k, 0, c->src);
        qedi_ops_fill(k, 1, c->dst);
        qedi_ops_end(k);
        break;
    }
}

/* ---- the output ---------------------------------------------------------------- */

static int refuse_chain_file(qed_image *src, const char *dst_path,
                             qed_error *err)
{
    for (qed_image *layer = src; layer; layer = qed_backing(layer)) {
        if (!qedi_ops_same_file(layer->filename, dst_path))
            continue;
        if (layer == src)
            return qedi_fail(err, EINVAL, "'%s' is the same file as the "
                            "source", dst_path);
        return qedi_fail(err, EINVAL, "'%s' is a backing file of the source "
                        "('%s')", dst_path, layer->filename);
    }
    return 0;
}

static int open_output(qed_image *src, const char *path,
                       enum qed_format format,
                       const struct qed_convert_options *o,
                       qed_image **out, qed_error *err)
{
    struct qed_open_options oo = {
        .size = sizeof(oo),
        .flags = QED_OPEN_RDWR,
        .format = format,
        .cache = o->cache,
        .loop = qed_image_loop(src),
    };

    /* The output's backing file (-B) may be remote: the source's settings
     * (CAs, S3 keys) reach it too. */
    qedi_image_remote_options(src, &oo);
    return qedi_image_open(path, &oo, o->unsafe ? &qedi_ops_unsafe_opener : NULL, out,
                      err);
}

/* A regular file is made empty and sized, so every range never written is
 * a hole; a block device keeps its content, so zeros must be written. */
static int create_raw(const char *path, uint64_t size, bool *is_device,
                      qed_error *err)
{
    struct stat st;
    int fd, ret;

    *is_device = false;
    if (stat(path, &st) == 0 && S_ISBLK(st.st_mode)) {
        *is_device = true;
        return 0;
    }
    if (size > INT64_MAX)
        return qedi_fail(err, EFBIG, "size %" PRIu64 " is too large", size);
    fd = qedi_io_open_fd(path, O_RDWR | O_CREAT, 0644, IO_KIND_REGULAR, err);
    if (fd < 0)
        return fd;
    /* Nothing is truncated under another program's feet. */
    ret = qedi_image_lock_for_create(fd, path, QED_LOCK_AUTO, err);
    if (ret < 0) {
        close(fd);
        return ret;
    }
    if (ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t)size) < 0) {
        int code = errno;
        close(fd);
        return qedi_fail(err, code, "setting the size to %" PRIu64
                        " bytes: %s", size, strerror(code));
    }
    if (close(fd) < 0)
        return qedi_fail(err, errno, "%s", strerror(errno));
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
            ret = open_output(src, path, QED_FORMAT_RAW, o, &c->dst, err);
        if (ret < 0)
            return ret;
        if (qed_size(c->dst) < size)
            return qedi_fail(err, ENOSPC, "the output holds %" PRIu64
                            " bytes; the source needs %" PRIu64,
                            qed_size(c->dst), size);
        c->write_zeroes = device;
        c->preallocate = !device;
        c->granularity = RAW_GRANULARITY;
        return 0;
    }
    struct qed_create_options co = *o->create;
    struct qed_open_options remote;

    /* A remote -B backing file is read with the source's settings. */
    qed_open_options_init(&remote);
    qedi_image_remote_options(src, &remote);
    if (!co.backing_options)
        co.backing_options = &remote;
    co.virtual_size = round_up_u64(size, QED_SECTOR_SIZE);
    co.size_from_backing = false;
    if (co.virtual_size < size)
        return qedi_fail(err, EFBIG, "size %" PRIu64 " is too large", size);
    ret = qed_create(path, &co, err);
    if (ret == 0)
        ret = open_output(src, path, QED_FORMAT_QED, o, &c->dst, err);
    if (ret < 0)
        return ret;
    c->has_backing = qed_backing(c->dst) != NULL;
    c->granularity = c->dst->cluster_size;
    if (c->has_backing)
        c->shared_depth = qedi_ops_chain_depth_of(src, qed_backing(c->dst));
    return 0;
}

/* -n: the output exists and is opened as it is (its format probed when
 * o->format is PROBE); it must hold the whole
 * source (qemu-img's message when it does not). */
static int open_existing(qed_image *src, const char *path,
                         const struct qed_convert_options *o,
                         struct convert *c, qed_error *err)
{
    int ret = open_output(src, path, o->format, o, &c->dst, err);

    if (ret < 0)
        return ret;
    if (qed_size(c->dst) < qed_size(src))
        return qedi_fail(err, ENOSPC, "output file is smaller than input "
                        "file (%" PRIu64 " bytes; the source has %" PRIu64
                        ")", qed_size(c->dst), qed_size(src));
    c->existing = true;
    c->write_zeroes = true;
    c->has_backing = qed_backing(c->dst) != NULL;
    c->granularity = c->dst->format == QED_FORMAT_QED
                         ? c->dst->cluster_size : RAW_GRANULARITY;
    /* What the output holds itself is unknown: nothing can be skipped for
     * coming from a backing file the source shares. */
    c->shared_depth = -1;
    return 0;
}

/* -S: zero detection works on blocks of a power of two up to the shortest
 * zero run left out (never below the output's cluster, which is
 * allocated whole anyway). */
static void set_sparseness(const struct qed_convert_options *o,
                           struct convert *c)
{
    uint64_t min = o->min_sparse ? o->min_sparse : DEFAULT_MIN_SPARSE;
    uint64_t gran = QED_SECTOR_SIZE;

    while (gran * 2 <= min)
        gran *= 2;
    if (c->dst->format == QED_FORMAT_QED)
        gran = QED_MAX(gran, c->dst->cluster_size);
    c->granularity = gran;
    c->min_sparse = min;
    c->write_all = o->write_all;
}

static void configure_walk(struct ops_walk *w, struct convert *c,
                           const struct qed_convert_options *o)
{
    w->loop = qed_image_loop(c->src);
    w->end = qed_size(c->src);
    w->status[0] = c->src;
    w->status[1] = c->dst;
    w->nstatus = c->has_backing || c->existing ? 2 : 1;
    w->nbufs = c->has_backing ? 2 : 1;
    w->align = c->has_backing ? c->granularity : 0;
    if (w->align > w->request_size)
        w->request_size = w->align;
    w->classify = classify;
    w->start = start;
    w->opaque = c;
    /* Order matters where writes allocate: a QED output's clusters follow
     * the order they are written in.  A raw output's bytes have fixed
     * places, so its writes stay in flight together. */
    w->in_order = !o->out_of_order && qed_format_of(c->dst) == QED_FORMAT_QED;
    w->rate_limit = o->rate_limit;
    w->rate_actions = 1u << ACT_COPY | 1u << ACT_DIFF;
    /* Short segments keep a low rate smooth: about four a second. */
    if (o->rate_limit) {
        uint64_t size = QED_MAX(4096, QED_MAX(w->align, 1));
        while (size * 2 <= o->rate_limit / 4 && size * 2 <= w->request_size)
            size *= 2;
        w->request_size = QED_MIN(w->request_size, size);
    }
    w->salvage = c->salvage;
    w->salvage_gran = c->src->format == QED_FORMAT_QED
                          ? c->src->cluster_size : QED_SECTOR_SIZE;
    w->salvage_action = ACT_COPY;
    w->warning = o->warning;
    w->warning_opaque = o->warning_opaque;
}

int qed_convert(qed_image *src, const char *dst_path,
                const struct qed_convert_options *options, qed_error *err)
{
    struct qed_convert_options o = { 0 };
    struct qed_create_options create = { 0 };
    struct convert c = { .src = src, .shared_depth = -1 };
    struct ops_walk w = { 0 };
    enum qed_format format;
    qed_error close_err = { 0 };
    int ret, r;

    ret = qedi_abi_take(&qedi_abi_convert_options, &o, options, err);
    if (ret == 0)
        ret = qedi_abi_take(&qedi_abi_create_options, &create, o.create, err);
    if (ret < 0)
        return ret;
    /* From here on, the options as this library knows them. */
    o.create = &create;
    format = o.format == QED_FORMAT_PROBE ? QED_FORMAT_RAW : o.format;
    if (format != QED_FORMAT_RAW && format != QED_FORMAT_QED)
        return qedi_fail(err, EINVAL, "output format %d is neither raw nor "
                        "qed", (int)o.format);
    if (o.min_sparse % QED_SECTOR_SIZE != 0)
        return qedi_fail(err, EINVAL, "minimum zero run %" PRIu32 " is not "
                        "a multiple of 512", o.min_sparse);
    if (!o.existing && o.salvage && create.backing_file &&
        create.backing_file[0])
        return qedi_fail(err, EINVAL, "salvage needs an output without a "
                        "backing file (backing file '%s')",
                        create.backing_file);
    if (!o.existing && format == QED_FORMAT_RAW && create.backing_file &&
        create.backing_file[0])
        return qedi_fail(err, EINVAL, "a backing file needs qed output "
                        "(backing file '%s' for a raw output)",
                        create.backing_file);
    ret = qedi_ops_walk_configure(&w, o.op, err);
    if (ret == 0)
        ret = qedi_ops_require_idle(src, "convert", err);
    if (ret == 0)
        ret = refuse_chain_file(src, dst_path, err);
    if (ret < 0)
        return ret;
    if (o.existing)
        ret = open_existing(src, dst_path, &o, &c, err);
    else
        ret = create_output(src, dst_path, &o, format, &c, err);
    if (ret < 0) {
        if (c.dst)
            qed_close(c.dst, NULL);
        return ret;
    }
    if (o.salvage && c.has_backing) {
        qed_close(c.dst, NULL);
        return qedi_fail(err, EINVAL, "salvage needs an output without a "
                        "backing file ('%s' has one)", dst_path);
    }
    if (!c.has_backing)
        set_sparseness(&o, &c);
    c.salvage = o.salvage;
    configure_walk(&w, &c, &o);
    ret = qedi_ops_walk_run(&w, err);
    if (ret == 0) {
        ret = qed_flush(c.dst, err);
        if (ret < 0)
            qedi_error_prefix(err, "flushing the output: ");
    }
    r = qed_close(c.dst, &close_err);
    if (r < 0 && ret == 0) {
        qedi_error_copy(err, &close_err);
        qedi_error_prefix(err, "closing the output: ");
        ret = r;
    }
    return ret;
}
