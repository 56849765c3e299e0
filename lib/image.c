/* SPDX-License-Identifier: MIT */
/* Images: create, open (with the backing chain), close, and what `info`
 * reports.  Opening a QED image validates its header against the file,
 * loads the L1 table, and prepares the engine state; the dirty-bit life
 * cycle (check on open, clear on close) lives here too. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "image.h"
#include "probe.h"

struct chain {
    const struct storage_driver *driver; /* NULL: local files */
    unsigned depth;
    dev_t dev[QED_MAX_CHAIN_DEPTH + 1];
    ino_t ino[QED_MAX_CHAIN_DEPTH + 1];
};

const char *qed_format_name(enum qed_format format)
{
    switch (format) {
    case QED_FORMAT_QED:
        return "qed";
    case QED_FORMAT_RAW:
        return "raw";
    default:
        return "probe";
    }
}

qed_loop *qed_image_loop(const qed_image *img)
{
    return img->loop;
}

qed_image *qed_backing(qed_image *img)
{
    return img->backing;
}

uint64_t qed_size(const qed_image *img)
{
    return img->size;
}

enum qed_format qed_format_of(const qed_image *img)
{
    return img->format;
}

/* ---- helpers ----------------------------------------------------------------- */

void image_warn(qed_image *img, const char *fmt, ...)
{
    char line[1024];
    size_t old = img->warnings ? strlen(img->warnings) : 0;
    char *grown;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    /* Out of memory loses a warning, never the open. */
    grown = realloc(img->warnings, old + strlen(line) + 2);
    if (!grown)
        return;
    if (old)
        grown[old++] = '\n';
    memcpy(grown + old, line, strlen(line) + 1);
    img->warnings = grown;
}

const char *qed_warnings(const qed_image *image)
{
    return image ? image->warnings : NULL;
}

/* Writes into the first sector of a raw image whose format was probed are
 * checked from now on (raw.c): the next probing open must find raw again. */
static int guard_probed_raw(qed_image *img, const uint8_t *first_block,
                            qed_error *err)
{
    img->probed_raw = calloc(1, sizeof(*img->probed_raw));
    if (!img->probed_raw)
        return qed_fail(err, ENOMEM, "out of memory");
    memcpy(img->probed_raw->sector, first_block, PROBE_SECTOR_SIZE);
    img->probed_raw->queue_tail = &img->probed_raw->queue;
    image_warn(img, "the format was not given and probing guessed raw: "
               "writes that would make the first sector look like another "
               "image format are refused; give the format (-f raw) to lift "
               "this restriction");
    return 0;
}

static int read_exact(struct io_file *file, void *buf, size_t len,
                      uint64_t offset, qed_error *err, const char *what)
{
    int ret = io_pread_sync(file, buf, len, offset);
    if (ret < 0)
        return qed_fail(err, -ret, "reading %s: %s", what, strerror(-ret));
    return 0;
}

char *image_resolve_backing(const char *image_path, const char *name)
{
    char *copy, *dir, *out;
    size_t len;

    /* Like qemu: a name is relative to the image's directory, and an image
     * named without a directory makes no "./" prefix. */
    if (name[0] == '/' || !strchr(image_path, '/'))
        return strdup(name);
    copy = strdup(image_path);
    if (!copy)
        return NULL;
    dir = dirname(copy);
    len = strlen(dir) + 1 + strlen(name) + 1;
    out = malloc(len);
    if (out)
        snprintf(out, len, "%s/%s", dir, name);
    free(copy);
    return out;
}

bool image_backing_is_self(const char *image_path, const char *name)
{
    struct stat image_st, backing_st;
    char *path;
    bool same;

    if (!name || !name[0] || stat(image_path, &image_st) < 0)
        return false;
    path = image_resolve_backing(image_path, name);
    if (!path)
        return false;
    same = stat(path, &backing_st) == 0 &&
           image_st.st_dev == backing_st.st_dev &&
           image_st.st_ino == backing_st.st_ino;
    free(path);
    return same;
}

/* A file that carries another format's signature is not read as raw
 * behind the user's back: its content would be that format's metadata. */
static int probe(qed_image *img, enum qed_format *format, qed_error *err)
{
    uint8_t *block = qed_aligned_zalloc(QED_HEADER_BLOCK_SIZE);
    const char *foreign;
    int ret;

    if (!block)
        return qed_fail(err, ENOMEM, "out of memory");
    ret = read_exact(img->file, block, QED_HEADER_BLOCK_SIZE, 0, err,
                     "the first block");
    if (ret < 0)
        goto out;
    *format = probe_is_qed(block) ? QED_FORMAT_QED : QED_FORMAT_RAW;
    foreign = *format == QED_FORMAT_RAW ? probe_foreign_format(block) : NULL;
    if (foreign) {
        ret = qed_fail(err, EINVAL, "the file looks like a %s image, a format "
                       "qed does not read; give the format raw (-f raw) to "
                       "use its bytes as they are", foreign);
        goto out;
    }
    if (*format == QED_FORMAT_RAW && img->writable)
        ret = guard_probed_raw(img, block, err);
out:
    free(block);
    return ret;
}

static ino_t name_hash(const char *name)
{
    uint64_t h = 1469598103934665603ull;
    for (; *name; name++)
        h = (h ^ (uint8_t)*name) * 1099511628211ull;
    return (ino_t)h;
}

static int chain_enter(struct chain *chain, const char *path, qed_error *err)
{
    struct stat st;

    if (chain->depth > QED_MAX_CHAIN_DEPTH)
        return qed_fail(err, ELOOP, "backing chain deeper than %u images",
                        QED_MAX_CHAIN_DEPTH);
    if (chain->driver) {
        /* Files that are not on disk are told apart by name. */
        memset(&st, 0, sizeof(st));
        st.st_ino = name_hash(path);
    } else if (stat(path, &st) < 0) {
        return qed_fail(err, errno, "%s", strerror(errno));
    }
    for (unsigned i = 0; i < chain->depth; i++)
        if (chain->dev[i] == st.st_dev && chain->ino[i] == st.st_ino)
            return qed_fail(err, ELOOP, "backing chain loop: '%s' is already "
                            "in the chain", path);
    chain->dev[chain->depth] = st.st_dev;
    chain->ino[chain->depth] = st.st_ino;
    chain->depth++;
    return 0;
}

/* ---- QED open -------------------------------------------------------------- */

static void derive_geometry(struct qed_state *s, uint64_t file_size)
{
    s->cluster_size = s->header.cluster_size;
    s->cluster_bits = log2_u64(s->cluster_size);
    s->table_bytes = (uint64_t)s->header.table_size * s->cluster_size;
    s->table_entries = s->table_bytes / 8u;
    s->table_bits = log2_u64(s->table_entries);
    s->header_bytes = (uint64_t)s->header.header_size * s->cluster_size;
    /* QEMU rounds a partial last cluster down; we never leave one, and
     * rounding up keeps new clusters clear of whatever is there. */
    s->file_end = round_up_u64(file_size, s->cluster_size);
    s->tail_gap_start = round_down_u64(file_size, s->cluster_size);
    s->tail_gap_end = s->file_end;
}

static int read_backing_name(qed_image *img, qed_error *err)
{
    struct qed_state *s = img->qed;
    const struct qed_header *h = &s->header;
    uint64_t end = (uint64_t)h->backing_filename_offset +
                   h->backing_filename_size;
    uint8_t *buf;
    int ret;

    if (!(h->features & QED_F_BACKING_FILE))
        return 0;
    if (end <= QED_HEADER_BLOCK_SIZE)
        return header_backing_name(h, s->header_block, QED_HEADER_BLOCK_SIZE,
                                   s->backing_name,
                                   sizeof(s->backing_name), err);
    /* The name lies further into the header clusters: read just it. */
    buf = calloc(1, h->backing_filename_size);
    if (!buf)
        return qed_fail(err, ENOMEM, "out of memory");
    ret = read_exact(img->file, buf, h->backing_filename_size,
                     h->backing_filename_offset, err, "the backing file name");
    if (ret == 0 && memchr(buf, 0, h->backing_filename_size))
        ret = qed_fail(err, EINVAL, "backing file name contains a NUL byte");
    if (ret == 0) {
        memcpy(s->backing_name, buf, h->backing_filename_size);
        s->backing_name[h->backing_filename_size] = '\0';
    }
    free(buf);
    return ret;
}

static int open_qed_state(qed_image *img, size_t cache_bytes, qed_error *err)
{
    struct qed_state *s = calloc(1, sizeof(*s));
    uint64_t file_size;
    int ret;

    if (!s)
        return qed_fail(err, ENOMEM, "out of memory");
    img->qed = s;
    s->header_block = qed_aligned_zalloc(QED_HEADER_BLOCK_SIZE);
    if (!s->header_block)
        return qed_fail(err, ENOMEM, "out of memory");
    ret = img->file->ops->get_size(img->file, &file_size);
    if (ret < 0)
        return qed_fail(err, -ret, "%s", strerror(-ret));
    if (file_size < QED_HEADER_BYTES)
        return qed_fail(err, EINVAL, "file is too short for a QED header "
                        "(%" PRIu64 " bytes)", file_size);
    ret = read_exact(img->file, s->header_block, QED_HEADER_BLOCK_SIZE, 0, err,
                     "the header");
    if (ret < 0)
        return ret;
    header_decode(s->header_block, &s->header);
    ret = header_validate(&s->header, file_size, err);
    if (ret < 0)
        return ret;
    derive_geometry(s, file_size);
    s->size_ensured = file_size;
    img->size = s->header.image_size;
    ret = read_backing_name(img, err);
    if (ret < 0)
        return ret;
    s->l1 = qed_aligned_alloc(s->table_bytes);
    if (!s->l1)
        return qed_fail(err, ENOMEM, "cannot allocate the L1 table (%" PRIu64
                        " bytes)", s->table_bytes);
    ret = read_exact(img->file, s->l1, s->table_bytes,
                     s->header.l1_table_offset, err, "the L1 table");
    if (ret < 0)
        return ret;
    table_poison_invalid(s, s->l1, s->table_entries, s->table_bytes);
    if (table_index_build(s) < 0)
        return qed_fail(err, ENOMEM, "out of memory");
    if (l2cache_new(cache_bytes, s->table_bytes, &s->l2cache) < 0)
        return qed_fail(err, ENOMEM, "out of memory");
    s->dirty_durable = (s->header.features & QED_F_NEED_CHECK) != 0;
    return 0;
}

/* Unknown autoclear bits mean another program's extension data may now be
 * stale: a writer clears them, a reader leaves the file alone. */
static int clear_autoclear(qed_image *img, qed_error *err)
{
    struct qed_state *s = img->qed;
    int ret;

    if (!img->writable || s->header.autoclear_features == 0)
        return 0;
    s->header.autoclear_features = 0;
    ret = image_write_header(img, s->header.features);
    if (ret < 0)
        return qed_fail(err, -ret, "clearing autoclear features: %s",
                        strerror(-ret));
    return 0;
}

/* ---- open / close ---------------------------------------------------------- */

static void free_image(qed_image *img)
{
    if (!img)
        return;
    if (img->qed) {
        struct qed_state *s = img->qed;
        alloc_free_slots(s);
        l2cache_free(s->l2cache);
        free(s->table_offsets);
        free(s->abandoned);
        free(s->l1);
        free(s->header_block);
        free(s);
    }
    io_file_close(img->file);
    free(img->filename);
    free(img->backing_path);
    free(img->probed_raw);
    free(img->warnings);
    free(img);
}

static int open_internal(const char *path, const struct qed_open_options *o,
                         qed_loop *loop, enum qed_format format,
                         struct chain *chain, qed_image **out, qed_error *err);

static unsigned lock_io_flags(const struct qed_open_options *o)
{
    unsigned flags = 0;

    if (o->locking == QED_LOCK_OFF)
        flags |= IO_OPEN_LOCK_OFF;
    else if (o->locking == QED_LOCK_ON)
        flags |= IO_OPEN_LOCK_REQUIRED;
    if (o->flags & QED_OPEN_FORCE_SHARE)
        flags |= IO_OPEN_SHARE_ALL;
    return flags;
}

static int validate_locking(const struct qed_open_options *o, qed_error *err)
{
    if (o->locking != QED_LOCK_AUTO && o->locking != QED_LOCK_ON &&
        o->locking != QED_LOCK_OFF)
        return qed_fail(err, EINVAL, "locking mode %d: not AUTO, ON or OFF",
                        (int)o->locking);
    if ((o->flags & QED_OPEN_FORCE_SHARE) && (o->flags & QED_OPEN_RDWR))
        return qed_fail(err, EINVAL, "force-share=on can only be used with "
                        "read-only images");
    return 0;
}

/* The backing files' warnings (locks missing there) are the image's too. */
static void take_backing_warnings(qed_image *img)
{
    const char *line = img->backing ? img->backing->warnings : NULL;

    while (line && *line) {
        const char *end = strchr(line, '\n');
        int len = end ? (int)(end - line) : (int)strlen(line);
        image_warn(img, "backing file '%s': %.*s", img->backing_path, len,
                   line);
        line = end ? end + 1 : NULL;
    }
}

static int open_backing(qed_image *img, const struct qed_open_options *o,
                        struct chain *chain, qed_error *err)
{
    struct qed_state *s = img->qed;
    struct qed_open_options bo = *o;
    enum qed_format format = QED_FORMAT_PROBE;
    int ret;

    if (!(s->header.features & QED_F_BACKING_FILE))
        return 0;
    img->backing_path = image_resolve_backing(img->filename, s->backing_name);
    if (!img->backing_path)
        return qed_fail(err, ENOMEM, "out of memory");
    if (o->flags & QED_OPEN_NO_BACKING) {
        /* Writes copy from the backing file; without it they would store
         * zeros where its data should show. */
        if (img->writable)
            return qed_fail(err, EINVAL, "an image with a backing file cannot "
                            "be opened for writing without it");
        img->backing_unavailable = true;
        return 0;
    }
    if (s->header.features & QED_F_BACKING_FORMAT_NO_PROBE)
        format = QED_FORMAT_RAW;
    bo.flags &= ~QED_OPEN_RDWR;
    ret = open_internal(img->backing_path, &bo, img->loop, format, chain,
                        &img->backing, err);
    /* Deep in a chain, only the file that failed is named. */
    if (ret < 0 && err && strncmp(err->message, "backing file '", 14) != 0)
        qed_error_prefix(err, "backing file '%s': ", img->backing_path);
    if (ret == 0)
        take_backing_warnings(img);
    return ret;
}

static int open_internal(const char *path, const struct qed_open_options *o,
                         qed_loop *loop, enum qed_format format,
                         struct chain *chain, qed_image **out, qed_error *err)
{
    qed_image *img;
    unsigned io_flags = 0;
    int ret;

    *out = NULL;
    ret = chain_enter(chain, path, err);
    if (ret < 0)
        return ret;
    img = calloc(1, sizeof(*img));
    if (!img)
        return qed_fail(err, ENOMEM, "out of memory");
    img->loop = loop;
    img->writable = (o->flags & QED_OPEN_RDWR) != 0;
    img->cache = o->cache;
    img->locking = o->locking;
    img->filename = strdup(path);
    if (img->writable)
        io_flags |= IO_OPEN_WRITE;
    if (o->cache == QED_CACHE_NONE)
        io_flags |= IO_OPEN_DIRECT;
    io_flags |= lock_io_flags(o);
    if (!img->filename) {
        ret = qed_fail(err, ENOMEM, "out of memory");
        goto fail;
    }
    ret = storage_open(chain->driver, loop, path, io_flags, &img->file, err);
    if (ret < 0)
        goto fail;
    if (img->file->lock_unsupported)
        image_warn(img, "the file system does not support OFD locks: the "
                   "image is open without locks, so other programs (QEMU's "
                   "too) are not kept from using it at the same time");
    if (format == QED_FORMAT_PROBE) {
        ret = probe(img, &format, err);
        if (ret < 0)
            goto fail;
    }
    img->format = format;
    if (format == QED_FORMAT_RAW) {
        ret = img->file->ops->get_size(img->file, &img->size);
        if (ret < 0) {
            qed_fail(err, -ret, "%s", strerror(-ret));
            goto fail;
        }
        /* Like qemu, a raw image is a whole number of 512-byte sectors; the
         * partial last one reads as zeros past the end of the file. */
        img->size = round_up_u64(img->size, QED_SECTOR_SIZE);
        *out = img;
        return 0;
    }
    ret = open_qed_state(img, o->l2_cache_bytes, err);
    if (ret == 0)
        ret = clear_autoclear(img, err);
    if (ret == 0)
        ret = open_backing(img, o, chain, err);
    if (ret == 0 && img->writable && !(o->flags & QED_OPEN_NO_CHECK))
        ret = check_on_open(img, err);
    if (ret == 0 && (o->flags & QED_OPEN_NO_CHECK) &&
        (img->qed->header.features & QED_F_NEED_CHECK))
        img->qed->unchecked_dirty = true;
    if (ret < 0)
        goto fail;
    *out = img;
    return 0;
fail:
    if (img->backing) {
        qed_error ignored;
        qed_close(img->backing, &ignored);
    }
    free_image(img);
    return ret;
}

int image_open(const char *path, const struct qed_open_options *options,
               const struct storage_driver *driver, qed_image **out,
               qed_error *err)
{
    struct qed_open_options o = { 0 };
    struct chain chain = { .driver = driver };
    qed_loop *loop;
    int ret;

    *out = NULL;
    if (options)
        o = *options;
    ret = validate_locking(&o, err);
    if (ret < 0)
        return ret;
    loop = o.loop;
    if (!loop) {
        ret = qed_loop_new(o.engine, &loop, err);
        if (ret < 0)
            return ret;
    }
    ret = open_internal(path, &o, loop, o.format, &chain, out, err);
    if (ret < 0) {
        if (!o.loop)
            qed_loop_free(loop);
        return ret;
    }
    (*out)->owns_loop = !o.loop;
    return 0;
}

int qed_open(const char *path, const struct qed_open_options *options,
             qed_image **out, qed_error *err)
{
    return image_open(path, options, NULL, out, err);
}

static int drain(qed_image *img)
{
    for (qed_image *layer = img; layer; layer = layer->backing) {
        while (layer->in_flight > 0) {
            int r = qed_loop_run(img->loop, -1);
            if (r < 0)
                return r;
        }
    }
    return 0;
}

int qed_drain(qed_image *img, qed_error *err)
{
    int r;

    if (image_refuse_nested(img, "qed_drain", err) < 0)
        return -EDEADLK;
    r = drain(img);
    if (r < 0)
        return qed_fail(err, -r, "event loop: %s", strerror(-r));
    return 0;
}

/* The file ends exactly at the last cluster handed out: space extended
 * ahead and not used is trimmed, and no cluster sticks out past the end. */
static int settle_file_size(qed_image *img)
{
    struct qed_state *s = img->qed;
    uint64_t size;
    int ret = img->file->ops->get_size(img->file, &size);

    if (ret == 0 && size != s->file_end)
        ret = img->file->ops->truncate(img->file, s->file_end);
    return ret;
}

/* Clusters that failed allocations leaked and could not give back stay
 * for the check on the next read-write open: the image stays dirty. */
static int keep_dirty(qed_image *img, qed_error *err)
{
    struct qed_state *s = img->qed;
    int ret;

    if (s->dirty_durable)
        return 0;
    ret = image_write_header(img, s->header.features | QED_F_NEED_CHECK);
    if (ret < 0)
        return qed_fail(err, -ret, "marking the image dirty for its leaked "
                        "clusters: %s", strerror(-ret));
    return 0;
}

/* A clean close makes everything durable, then clears NEED_CHECK. */
static int mark_clean(qed_image *img, qed_error *err)
{
    struct qed_state *s = img->qed;
    int ret;

    alloc_give_back(img);
    /* Marked first: a flush that fails must not leave the leaks unmarked. */
    if (alloc_leaks_outstanding(s) && (ret = keep_dirty(img, err)) < 0)
        return ret;
    ret = settle_file_size(img);
    if (ret == 0)
        ret = io_sync_sync(img->file);

    if (ret < 0)
        return qed_fail(err, -ret, "flush: %s", strerror(-ret));
    if (alloc_leaks_outstanding(s))
        return 0;
    if (!(s->header.features & QED_F_NEED_CHECK) || s->unchecked_dirty)
        return 0;
    ret = image_write_header(img, s->header.features & ~QED_F_NEED_CHECK);
    if (ret < 0)
        return qed_fail(err, -ret, "clearing the dirty flag: %s",
                        strerror(-ret));
    return 0;
}

int qed_close(qed_image *img, qed_error *err)
{
    qed_loop *loop;
    bool owns_loop;
    int ret = 0, r;

    if (!img)
        return 0;
    /* Closing waits for the requests in flight: not from a callback of
     * the loop that runs them.  The image stays open then. */
    if (image_refuse_nested(img, "qed_close", err) < 0)
        return -EDEADLK;
    loop = img->loop;
    owns_loop = img->owns_loop;
    r = drain(img);
    if (img->qed)
        alloc_quiesce(img);
    if (r < 0)
        ret = qed_fail(err, -r, "event loop: %s", strerror(-r));
    if (ret == 0 && img->writable) {
        if (img->qed)
            ret = mark_clean(img, err);
        else if ((r = io_sync_sync(img->file)) < 0)
            ret = qed_fail(err, -r, "flush: %s", strerror(-r));
    }
    if (img->backing) {
        qed_error ignored;
        qed_close(img->backing, &ignored);
    }
    free_image(img);
    if (owns_loop)
        qed_loop_free(loop);
    return ret;
}

/* ---- info ------------------------------------------------------------------ */

static void copy_string(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src ? src : "");
}

int qed_get_info(qed_image *img, struct qed_image_info *info, qed_error *err)
{
    int ret;

    memset(info, 0, sizeof(*info));
    info->format = img->format;
    copy_string(info->filename, sizeof(info->filename), img->filename);
    info->virtual_size = img->size;
    ret = img->file->ops->get_size(img->file, &info->file_size);
    if (ret == 0)
        ret = img->file->ops->allocated_bytes(img->file, &info->actual_size);
    if (ret < 0)
        return qed_fail(err, -ret, "%s", strerror(-ret));
    if (!img->qed)
        return 0;
    const struct qed_header *h = &img->qed->header;
    info->dirty = (h->features & QED_F_NEED_CHECK) != 0;
    info->cluster_size = h->cluster_size;
    info->table_size = h->table_size;
    info->header_size = h->header_size;
    info->features = h->features;
    info->compat_features = h->compat_features;
    info->autoclear_features = h->autoclear_features;
    info->l1_table_offset = h->l1_table_offset;
    info->has_backing = (h->features & QED_F_BACKING_FILE) != 0;
    if (info->has_backing) {
        copy_string(info->backing_file, sizeof(info->backing_file),
                    img->qed->backing_name);
        copy_string(info->backing_file_full, sizeof(info->backing_file_full),
                    img->backing_path);
        /* Only a raw backing file has its format recorded (NO_PROBE); any
         * other is probed on every open, so none is reported, as qemu-img
         * does. */
        if (h->features & QED_F_BACKING_FORMAT_NO_PROBE)
            info->backing_format = QED_FORMAT_RAW;
    }
    return 0;
}

/* ---- create ------------------------------------------------------------------ */

/* QEMU 7.2's checks at open (block/qed.c), in its order, with its
 * arithmetic: unsigned 64-bit products that wrap. */
const char *qed_qemu_open_problem(uint64_t size, uint32_t cluster_size,
                                  uint32_t table_size)
{
    uint64_t entries, max;

    if (cluster_size == 0)
        cluster_size = QED_DEFAULT_CLUSTER_SIZE;
    if (table_size == 0)
        table_size = QED_DEFAULT_TABLE_SIZE;
    /* The table's byte size is a 32-bit product there too. */
    entries = (uint32_t)(cluster_size * table_size) / 8;
    max = entries * cluster_size * entries;
    if (size > max)
        return "its largest image size for this cluster_size and table_size "
               "overflows 64 bits (\"QED image size is invalid\")";
    /* The L1 table's last cluster must lie past its first. */
    if (table_size == 1)
        return "table_size=1 fails its L1 table check "
               "(\"QED table offset is invalid\")";
    return NULL;
}

static int backing_size(const char *image_path,
                        const struct qed_create_options *o, uint64_t *size,
                        qed_error *err)
{
    struct qed_open_options bo = {
        .format = o->backing_format,
        .locking = o->locking,
    };
    char *path = image_resolve_backing(image_path, o->backing_file);
    qed_image *backing;
    int ret;

    if (!path)
        return qed_fail(err, ENOMEM, "out of memory");
    ret = qed_open(path, &bo, &backing, err);
    if (ret < 0) {
        qed_error_prefix(err, "backing file '%s': ", path);
        free(path);
        return ret;
    }
    *size = qed_size(backing);
    qed_close(backing, NULL);
    free(path);
    return 0;
}

const char *qed_preallocation_name(enum qed_preallocation mode)
{
    switch (mode) {
    case QED_PREALLOC_OFF:
        return "off";
    case QED_PREALLOC_METADATA:
        return "metadata";
    case QED_PREALLOC_FALLOC:
        return "falloc";
    case QED_PREALLOC_FULL:
        return "full";
    }
    return NULL;
}

/* Where a preallocated image puts things: the header cluster, the L1 table,
 * every L2 table one after the other, then (falloc, full) one data cluster
 * per guest cluster in guest order.  The L2 tables together are then one
 * flat array of entries, entry i pointing at data cluster i. */
struct layout {
    uint64_t l1_offset, table_bytes, entries_per_table;
    uint64_t tables, tables_offset;
    uint64_t clusters, data_offset;
    uint64_t file_size;
};

static void plan_layout(const struct qed_header *h,
                        enum qed_preallocation mode, struct layout *l)
{
    uint64_t guest_clusters = (h->image_size + h->cluster_size - 1) /
                              h->cluster_size;

    l->l1_offset = h->l1_table_offset;
    l->table_bytes = (uint64_t)h->table_size * h->cluster_size;
    l->entries_per_table = l->table_bytes / 8;
    l->tables_offset = l->l1_offset + l->table_bytes;
    l->tables = mode == QED_PREALLOC_OFF ? 0 :
                (guest_clusters + l->entries_per_table - 1) /
                l->entries_per_table;
    l->data_offset = l->tables_offset + l->tables * l->table_bytes;
    l->clusters = mode >= QED_PREALLOC_FALLOC ? guest_clusters : 0;
    l->file_size = l->data_offset + l->clusters * h->cluster_size;
}

#define FILL_CHUNK (1024u * 1024)

/* Writes count table entries at offset: the first used ones are first,
 * first + step, ... and the rest 0 (free), a chunk at a time. */
static int write_entries(int fd, uint64_t offset, uint64_t count,
                         uint64_t used, uint64_t first, uint64_t step)
{
    uint8_t *buf = malloc(FILL_CHUNK);
    uint64_t done = 0;
    int ret = 0;

    if (!buf)
        return -ENOMEM;
    while (done < count && ret == 0) {
        uint64_t n = QED_MIN(count - done, (uint64_t)FILL_CHUNK / 8);

        for (uint64_t i = 0; i < n; i++)
            store_le64(buf + i * 8,
                       done + i < used ? first + (done + i) * step : 0);
        if (pwrite(fd, buf, n * 8, (off_t)(offset + done * 8)) !=
            (ssize_t)(n * 8))
            ret = errno ? -errno : -EIO;
        done += n;
    }
    free(buf);
    return ret;
}

static int write_zeros(int fd, uint64_t offset, uint64_t len)
{
    uint8_t *buf = calloc(1, FILL_CHUNK);
    int ret = 0;

    if (!buf)
        return -ENOMEM;
    while (len > 0 && ret == 0) {
        size_t n = (size_t)QED_MIN(len, (uint64_t)FILL_CHUNK);

        if (pwrite(fd, buf, n, (off_t)offset) != (ssize_t)n)
            ret = errno ? -errno : -EIO;
        offset += n;
        len -= n;
    }
    free(buf);
    return ret;
}

/* The data clusters: fallocate'd (their space is reserved and reads as
 * zeros), and for full written with zeros too. */
static int preallocate_data(int fd, const struct layout *l,
                            enum qed_preallocation mode, qed_error *err)
{
    uint64_t len = l->file_size - l->data_offset;
    int ret = 0;

    if (len == 0)
        return 0;
    errno = 0;
    if (fallocate(fd, 0, (off_t)l->data_offset, (off_t)len) < 0) {
        ret = -errno;
        /* full writes every byte anyway; falloc has no other way. */
        if (mode == QED_PREALLOC_FALLOC || (ret != -EOPNOTSUPP))
            return qed_fail(err, -ret, "preallocation=%s: fallocate of "
                            "%" PRIu64 " bytes of data clusters: %s",
                            qed_preallocation_name(mode), len,
                            strerror(-ret));
    }
    if (mode == QED_PREALLOC_FULL) {
        ret = write_zeros(fd, l->data_offset, len);
        if (ret < 0)
            return qed_fail(err, -ret, "preallocation=full: writing %" PRIu64
                            " bytes of zeros: %s", len, strerror(-ret));
    }
    return 0;
}

/* Everything but the header, made durable: until the header is written
 * the file has no QED magic and opens as no image at all. */
static int preallocate(int fd, const struct qed_header *h,
                       enum qed_preallocation mode, qed_error *err)
{
    struct layout l;
    int ret;

    plan_layout(h, mode, &l);
    ret = preallocate_data(fd, &l, mode, err);
    if (ret < 0)
        return ret;
    ret = write_entries(fd, l.tables_offset, l.tables * l.entries_per_table,
                        l.clusters, l.data_offset, h->cluster_size);
    if (ret == 0)
        ret = write_entries(fd, l.l1_offset, l.entries_per_table, l.tables,
                            l.tables_offset, l.table_bytes);
    if (ret == 0 && fsync(fd) < 0)
        ret = -errno;
    if (ret < 0)
        return qed_fail(err, -ret, "preallocation=%s: writing the L1 table "
                        "and %" PRIu64 " L2 tables: %s",
                        qed_preallocation_name(mode), l.tables,
                        strerror(-ret));
    return 0;
}

static int write_new_image(int fd, const struct qed_header *h,
                           const char *backing, enum qed_preallocation mode,
                           qed_error *err)
{
    uint8_t *cluster = calloc(1, h->cluster_size);
    uint64_t file_size = h->l1_table_offset +
                         (uint64_t)h->table_size * h->cluster_size;
    int ret = 0;

    if (!cluster)
        return qed_fail(err, ENOMEM, "out of memory");
    header_encode(h, cluster);
    if (h->backing_filename_size)
        memcpy(cluster + h->backing_filename_offset, backing,
               h->backing_filename_size);
    errno = 0;
    if (ftruncate(fd, 0) < 0)
        ret = qed_fail(err, errno, "%s", strerror(errno));
    if (ret == 0 && mode != QED_PREALLOC_OFF)
        ret = preallocate(fd, h, mode, err);
    /* Without preallocation the L1 table is all zeros: left as a hole. */
    errno = 0;
    if (ret == 0 &&
        (pwrite(fd, cluster, h->cluster_size, 0) != (ssize_t)h->cluster_size ||
         (mode == QED_PREALLOC_OFF && ftruncate(fd, (off_t)file_size) < 0) ||
         fsync(fd) < 0))
        ret = qed_fail(err, errno ? errno : EIO, "%s", strerror(errno));
    free(cluster);
    return ret;
}

int image_lock_for_create(int fd, const char *path, enum qed_lock_mode mode,
                          qed_error *err)
{
    struct qed_open_options lo = { .locking = mode };
    struct io_lock want, held = { 0 };
    bool unsupported;

    io_lock_create_role(&want);
    return io_lock_open_fd(fd, path, lock_io_flags(&lo), &want, &held,
                           &unsupported, err);
}

int qed_create(const char *path, const struct qed_create_options *options,
               qed_error *err)
{
    struct qed_create_options o = *options;
    bool has_backing = o.backing_file && o.backing_file[0];
    struct qed_header h;
    struct stat st;
    bool existed;
    int fd, ret;

    if (o.cluster_size == 0)
        o.cluster_size = QED_DEFAULT_CLUSTER_SIZE;
    if (o.table_size == 0)
        o.table_size = QED_DEFAULT_TABLE_SIZE;
    if (o.size_from_backing && !has_backing)
        return qed_fail(err, EINVAL, "an image size is needed when there is "
                        "no backing file");
    if (!qed_preallocation_name(o.preallocation))
        return qed_fail(err, EINVAL, "preallocation mode %d is none of off, "
                        "metadata, falloc, full", (int)o.preallocation);
    /* Zeroed L2 tables let the backing file show through; allocated data
     * clusters would hide it. */
    if (has_backing && o.preallocation >= QED_PREALLOC_FALLOC)
        return qed_fail(err, EINVAL, "Backing file and preallocation=%s "
                        "cannot be used at the same time: the preallocated "
                        "clusters would hide the backing file's data",
                        qed_preallocation_name(o.preallocation));
    /* Before the backing file is even opened: truncating path would
     * destroy the backing file too.  (qemu-img's wording.) */
    if (has_backing && image_backing_is_self(path, o.backing_file))
        return qed_fail(err, EINVAL, "Error: Trying to create an image with "
                        "the same filename as the backing file");
    struct qed_open_options lo = { .locking = o.locking };
    ret = validate_locking(&lo, err);
    if (ret < 0)
        return ret;
    if (has_backing) {
        uint64_t bsize = 0;
        ret = backing_size(path, &o, &bsize, err);
        if (ret < 0)
            return ret;
        if (o.size_from_backing)
            o.size = round_up_u64(bsize, QED_SECTOR_SIZE);
    }
    ret = header_init_new(&h, o.size, o.cluster_size, o.table_size,
                          has_backing ? strlen(o.backing_file) : 0,
                          o.backing_format == QED_FORMAT_RAW, err);
    if (ret < 0)
        return ret;
    existed = stat(path, &st) == 0;
    fd = io_open_fd(path, O_RDWR | O_CREAT, 0644, IO_KIND_REGULAR, err);
    if (fd < 0)
        return fd;
    /* Nothing is truncated under another program's feet. */
    ret = image_lock_for_create(fd, path, o.locking, err);
    if (ret == 0) {
        ret = write_new_image(fd, &h, o.backing_file, o.preallocation, err);
        /* Give the space back (ENOSPC) and leave nothing that could pass
         * for the image asked for. */
        if (ret < 0 && ftruncate(fd, 0) == 0 && !existed)
            unlink(path);
    }
    close(fd);
    return ret;
}
