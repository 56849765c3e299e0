/* SPDX-License-Identifier: MIT */
/* The front of an image, whatever its format: open (the storage, the
 * format driver chosen by the caller or by probing, the backing chain),
 * drain, close, and what `info` reports beyond the format's own fields.
 * Everything a format means lives in its driver (driver.h). */
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

#include "core.h"

struct chain {
    const struct storage_driver *driver; /* NULL: local files */
    /* A failed open's message already names the backing file that failed:
     * the images above it must not name theirs in front. */
    bool failure_named;
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

const char *qed_warnings(const qed_image *image)
{
    return image ? image->warnings : NULL;
}

/* ---- format drivers ---------------------------------------------------------- */

/* Probed in this order; raw, which has no signature, comes last. */
static const struct format_driver *const format_drivers[] = {
    &qedi_qed_format_driver,
    &qedi_raw_format_driver,
};

static const struct format_driver *driver_for(enum qed_format format)
{
    for (size_t i = 0; i < QED_ARRAY_SIZE(format_drivers); i++)
        if (format_drivers[i]->format == format)
            return format_drivers[i];
    return NULL;
}

/* A file that carries another format's signature is not read as raw
 * behind the user's back: its content would be that format's metadata. */
static int probe(qed_image *img, uint8_t *block, qed_error *err)
{
    const char *foreign;
    int ret = qedi_image_read_exact(img->file, block, PROBE_BLOCK_SIZE, 0,
                               err, "the first block");

    if (ret < 0)
        return ret;
    for (size_t i = 0; i < QED_ARRAY_SIZE(format_drivers); i++) {
        if (!format_drivers[i]->probe || format_drivers[i]->probe(block)) {
            img->driver = format_drivers[i];
            break;
        }
    }
    foreign = img->driver == &qedi_raw_format_driver ? qedi_probe_foreign_format(block)
                                                : NULL;
    if (foreign)
        return qedi_fail(err, EINVAL, "the file looks like a %s image, a "
                        "format qed does not read; give the format raw (-f "
                        "raw) to use its bytes as they are", foreign);
    return 0;
}

/* Finds the image's driver (probing when no format was given) and lets it
 * read the format's metadata. */
static int open_format(qed_image *img, const struct qed_open_options *o,
                       enum qed_format format, qed_error *err)
{
    struct format_open how = { .options = o };
    uint8_t *block = NULL;
    int ret;

    if (format == QED_FORMAT_PROBE) {
        block = qedi_aligned_zalloc(PROBE_BLOCK_SIZE);
        if (!block)
            return qedi_fail(err, ENOMEM, "out of memory");
        ret = probe(img, block, err);
        if (ret < 0) {
            free(block);
            return ret;
        }
        how.probed = true;
        how.first_block = block;
    } else {
        img->driver = driver_for(format);
        if (!img->driver)
            return qedi_fail(err, EINVAL, "format %d: not qed, raw or probe",
                            (int)format);
    }
    img->format = img->driver->format;
    img->probed = how.probed;
    ret = img->driver->open(img, &how, err);
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
        return qedi_fail(err, ELOOP, "backing chain deeper than %u images",
                        QED_MAX_CHAIN_DEPTH);
    if (chain->driver || qedi_storage_is_uri(path)) {
        /* Files that are not on disk are told apart by name. */
        memset(&st, 0, sizeof(st));
        st.st_ino = name_hash(path);
    } else if (stat(path, &st) < 0) {
        return qedi_fail(err, errno, "%s", strerror(errno));
    }
    for (unsigned i = 0; i < chain->depth; i++)
        if (chain->dev[i] == st.st_dev && chain->ino[i] == st.st_ino)
            return qedi_fail(err, ELOOP, "backing chain loop: '%s' is already "
                            "in the chain", path);
    chain->dev[chain->depth] = st.st_dev;
    chain->ino[chain->depth] = st.st_ino;
    chain->depth++;
    return 0;
}

static void free_remote_settings(struct storage_settings *r)
{
    free((char *)r->tls_ca_file);
    free((char *)r->s3_endpoint);
    free((char *)r->s3_region);
    free((char *)r->s3_access_key_id);
    free((char *)r->s3_secret_access_key);
    free((char *)r->s3_session_token);
    memset(r, 0, sizeof(*r));
}

static int dup_setting(const char **to, const char *from)
{
    *to = from ? strdup(from) : NULL;
    return from && !*to ? -ENOMEM : 0;
}

static int keep_remote_settings(qed_image *img, const struct qed_open_options *o)
{
    struct storage_settings *r = &img->remote;

    r->tls_no_verify = o->tls_no_verify;
    r->read_cache_bytes = o->remote_cache_bytes;
    if (dup_setting(&r->tls_ca_file, o->tls_ca_file) < 0 ||
        dup_setting(&r->s3_endpoint, o->s3_endpoint) < 0 ||
        dup_setting(&r->s3_region, o->s3_region) < 0 ||
        dup_setting(&r->s3_access_key_id, o->s3_access_key_id) < 0 ||
        dup_setting(&r->s3_secret_access_key, o->s3_secret_access_key) < 0 ||
        dup_setting(&r->s3_session_token, o->s3_session_token) < 0)
        return -ENOMEM;
    return 0;
}

/* ---- open / close ---------------------------------------------------------- */

static void free_image(qed_image *img)
{
    if (!img)
        return;
    if (img->driver && img->driver->free)
        img->driver->free(img);
    qedi_io_file_close(img->file);
    free(img->filename);
    free_remote_settings(&img->remote);
    free(img->backing_name);
    free(img->backing_path);
    free(img->warnings);
    free(img);
}

static int open_internal(const char *path, const struct qed_open_options *o,
                         qed_loop *loop, enum qed_format format,
                         struct chain *chain, qed_image **out, qed_error *err);

/* The backing files' warnings (locks missing there) are the image's too. */
static void take_backing_warnings(qed_image *img)
{
    const char *line = img->backing ? img->backing->warnings : NULL;

    while (line && *line) {
        const char *end = strchr(line, '\n');
        int len = end ? (int)(end - line) : (int)strlen(line);
        qedi_image_warn(img, "backing file '%s': %.*s",
                        qedi_storage_uri_for_messages(img->backing_path), len,
                        line);
        line = end ? end + 1 : NULL;
    }
}

/* The driver the name asks for, given the open's settings when it is a
 * remote one.  The caller's driver, when there is one, opens local files:
 * the layers it stacks (flushes skipped for convert's unsafe output, the
 * writable opener of commit) are about them; a URI in the chain (the
 * output's backing file behind https://, say) is opened as it says. */
static int open_storage(const struct chain *chain,
                        const struct qed_open_options *o, qed_loop *loop,
                        const char *path, unsigned io_flags,
                        struct io_file **out, qed_error *err)
{
    struct storage_settings settings = {
        .tls_ca_file = o->tls_ca_file,
        .tls_no_verify = o->tls_no_verify,
        .s3_endpoint = o->s3_endpoint,
        .s3_region = o->s3_region,
        .s3_access_key_id = o->s3_access_key_id,
        .s3_secret_access_key = o->s3_secret_access_key,
        .s3_session_token = o->s3_session_token,
        .read_cache_bytes = o->remote_cache_bytes == QED_REMOTE_CACHE_OFF ? 0
                            : o->remote_cache_bytes ? o->remote_cache_bytes
                            : QED_REMOTE_CACHE_DEFAULT,
    };
    struct storage_driver driver;

    if (!qedi_storage_is_uri(path))
        return qedi_storage_open(chain->driver, loop, path, io_flags, out, err);
    driver = *qedi_storage_driver_for(path);
    driver.ctx = &settings;
    return qedi_storage_open(&driver, loop, path, io_flags, out, err);
}

static int open_backing(qed_image *img, const struct qed_open_options *o,
                        struct chain *chain, qed_error *err)
{
    struct qed_open_options bo = *o;
    enum qed_format format = QED_FORMAT_PROBE;
    int ret;

    if (!img->backing_name)
        return 0;
    img->backing_path = qedi_image_resolve_backing(img->filename, img->backing_name);
    if (!img->backing_path)
        return qedi_fail(err, ENOMEM, "out of memory");
    if (o->flags & QED_OPEN_NO_BACKING) {
        /* Writes copy from the backing file; without it they would store
         * zeros where its data should show. */
        if (img->writable)
            return qedi_fail(err, EINVAL, "an image with a backing file cannot "
                            "be opened for writing without it");
        img->backing_unavailable = true;
        return 0;
    }
    if (img->backing_raw)
        format = QED_FORMAT_RAW;
    bo.flags &= ~(QED_OPEN_RDWR | QED_OPEN_COPY_ON_READ);
    ret = open_internal(img->backing_path, &bo, img->loop, format, chain,
                        &img->backing, err);
    /* Deep in a chain, only the file that failed is named. */
    if (ret < 0 && !chain->failure_named) {
        qedi_error_prefix(err, "backing file '%s': ",
                          qedi_storage_uri_for_messages(img->backing_path));
        chain->failure_named = true;
    }
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
        return qedi_fail(err, ENOMEM, "out of memory");
    img->loop = loop;
    img->front = &qedi_image_front;
    img->writable = (o->flags & QED_OPEN_RDWR) != 0;
    img->copy_on_read = (o->flags & QED_OPEN_COPY_ON_READ) != 0;
    img->cache = o->cache;
    img->locking = o->locking;
    img->filename = strdup(path);
    if (keep_remote_settings(img, o) < 0) {
        ret = qedi_fail(err, ENOMEM, "out of memory");
        goto fail;
    }
    if (img->writable)
        io_flags |= IO_OPEN_WRITE;
    if (o->cache == QED_CACHE_NONE)
        io_flags |= IO_OPEN_DIRECT;
    io_flags |= qedi_image_lock_flags(o);
    if (!img->filename) {
        ret = qedi_fail(err, ENOMEM, "out of memory");
        goto fail;
    }
    ret = open_storage(chain, o, loop, path, io_flags, &img->file, err);
    if (ret < 0)
        goto fail;
    if (img->file->lock_unsupported)
        qedi_image_warn(img, "the file system does not support OFD locks: the "
                   "image is open without locks, so other programs (QEMU's "
                   "too) are not kept from using it at the same time");
    ret = open_format(img, o, format, err);
    if (ret == 0)
        ret = open_backing(img, o, chain, err);
    if (ret == 0 && img->driver->activate)
        ret = img->driver->activate(img, o, err);
    if (ret < 0)
        goto fail;
    QEDI_TRACE("open '%s': %s, %s, %" PRIu64 " bytes, %s engine",
               img->filename, img->driver->name,
               img->writable ? "read-write" : "read-only", img->size,
               qed_loop_engine_name(img->loop));
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

int qedi_image_open(const char *path, const struct qed_open_options *options,
               const struct storage_driver *driver, qed_image **out,
               qed_error *err)
{
    struct qed_open_options o = { 0 };
    struct chain chain = { .driver = driver };
    qed_loop *loop;
    int ret;

    *out = NULL;
    ret = qedi_abi_take(&qedi_abi_open_options, &o, options, err);
    if (ret == 0)
        ret = qedi_image_validate_locking(&o, err);
    if (ret == 0 && (o.flags & QED_OPEN_COPY_ON_READ) &&
        !(o.flags & QED_OPEN_RDWR))
        ret = qedi_fail(err, EINVAL, "copy-on-read writes into the image: "
                        "it needs a read-write open");
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
    return qedi_image_open(path, options, NULL, out, err);
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

    if (qedi_image_refuse_nested(img, "qed_drain", err) < 0)
        return -EDEADLK;
    r = drain(img);
    if (r < 0)
        return qedi_fail(err, -r, "event loop: %s", strerror(-r));
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
    if (qedi_image_refuse_nested(img, "qed_close", err) < 0)
        return -EDEADLK;
    QEDI_TRACE("close '%s'", img->filename);
    loop = img->loop;
    owns_loop = img->owns_loop;
    r = drain(img);
    if (img->driver->quiesce)
        img->driver->quiesce(img);
    if (r < 0)
        ret = qedi_fail(err, -r, "event loop: %s", strerror(-r));
    if (ret == 0 && img->writable)
        ret = img->driver->close(img, err);
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

static int get_info(qed_image *img, struct qed_image_info *info,
                    qed_error *err)
{
    int ret;

    info->format = img->format;
    copy_string(info->filename, sizeof(info->filename),
                qedi_storage_uri_for_messages(img->filename));
    info->virtual_size = img->size;
    ret = img->file->ops->get_size(img->file, &info->file_size);
    if (ret == 0)
        ret = img->file->ops->allocated_bytes(img->file, &info->actual_size);
    if (ret == -ENOTSUP) {
        info->actual_size = 0;
        info->actual_size_unknown = true;
        ret = 0;
    }
    if (ret < 0)
        return qedi_fail(err, -ret, "%s", strerror(-ret));
    info->has_backing = img->backing_name != NULL;
    if (info->has_backing) {
        copy_string(info->backing_file, sizeof(info->backing_file),
                    qedi_storage_uri_for_messages(img->backing_name));
        copy_string(info->backing_file_full, sizeof(info->backing_file_full),
                    qedi_storage_uri_for_messages(img->backing_path));
        /* Only a raw backing file has its format recorded; any other is
         * probed on every open, so none is reported, as qemu-img does. */
        if (img->backing_raw)
            info->backing_format = QED_FORMAT_RAW;
    }
    if (img->driver->get_info)
        img->driver->get_info(img, info);
    return 0;
}

/* Filled whole, then handed over up to the size the program knows. */
int qed_get_info(qed_image *img, struct qed_image_info *info, qed_error *err)
{
    struct qed_image_info *full;
    int ret = qedi_abi_check_out(&qedi_abi_image_info, info, err);

    if (ret < 0)
        return ret;
    full = calloc(1, sizeof(*full));
    if (!full)
        return qedi_fail(err, ENOMEM, "out of memory");
    ret = get_info(img, full, err);
    qedi_abi_give(&qedi_abi_image_info, info, full);
    free(full);
    return ret;
}
