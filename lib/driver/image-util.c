/* SPDX-License-Identifier: MIT */
/* What the front and the drivers share about an image: its warnings, exact
 * reads of its metadata, where its backing file name leads, and the locks
 * that an open or a create takes. */
#include <errno.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "driver.h"

void qedi_image_warn(qed_image *img, const char *fmt, ...)
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

int qedi_image_read_exact(struct io_file *file, void *buf, size_t len,
                     uint64_t offset, qed_error *err, const char *what)
{
    int ret = qedi_io_pread_sync(file, buf, len, offset);
    if (ret < 0)
        return qedi_fail(err, -ret, "reading %s: %s", what, strerror(-ret));
    return 0;
}

/* A relative name next to an image named by a URI: the URI with its last
 * path segment replaced, as a browser resolves a relative link.  An NBD
 * URI keeps its query (the socket, the TLS settings: how to reach the
 * server), so "base.qed" next to nbd+unix:///top.qed?socket=S is the export
 * base.qed on the same server. */
static char *resolve_in_uri(const char *uri, const char *name)
{
    const char *authority = strstr(uri, "://") + 3;
    const char *path = authority + strcspn(authority, "/?#");
    const char *end = path + strcspn(path, "?#");
    const char *query = "";
    size_t keep = (size_t)(path - uri), len;
    char *out;

    /* Everything up to the last '/' of the path stays; without a path,
     * the name becomes one. */
    for (const char *p = path; p < end; p++)
        if (*p == '/')
            keep = (size_t)(p + 1 - uri);
    if (qedi_storage_driver_for(uri) == &qedi_storage_nbd_driver && *end == '?')
        query = end;
    len = keep + 1 + strlen(name) + strlen(query) + 1;
    out = malloc(len);
    if (out)
        snprintf(out, len, "%.*s%s%s%s", (int)keep, uri,
                 keep == (size_t)(path - uri) ? "/" : "", name, query);
    return out;
}

char *qedi_image_resolve_backing(const char *image_path, const char *name)
{
    char *copy, *dir, *out;
    size_t len;

    /* A URI is used as it is; a relative name next to a URI is resolved in
     * it. */
    if (qedi_storage_is_uri(name))
        return strdup(name);
    if (qedi_storage_is_uri(image_path) && name[0] != '/')
        return resolve_in_uri(image_path, name);
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

bool qedi_image_backing_is_self(const char *image_path, const char *name)
{
    struct stat image_st, backing_st;
    char *path;
    bool same;

    if (!name || !name[0] || stat(image_path, &image_st) < 0)
        return false;
    path = qedi_image_resolve_backing(image_path, name);
    if (!path)
        return false;
    same = stat(path, &backing_st) == 0 &&
           image_st.st_dev == backing_st.st_dev &&
           image_st.st_ino == backing_st.st_ino;
    free(path);
    return same;
}

unsigned qedi_image_lock_flags(const struct qed_open_options *o)
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

int qedi_image_validate_locking(const struct qed_open_options *o, qed_error *err)
{
    if (o->locking != QED_LOCK_AUTO && o->locking != QED_LOCK_ON &&
        o->locking != QED_LOCK_OFF)
        return qedi_fail(err, EINVAL, "locking mode %d: not AUTO, ON or OFF",
                        (int)o->locking);
    if ((o->flags & QED_OPEN_FORCE_SHARE) && (o->flags & QED_OPEN_RDWR))
        return qedi_fail(err, EINVAL, "force-share=on can only be used with "
                        "read-only images");
    return 0;
}

int qedi_image_lock_for_create(int fd, const char *path, enum qed_lock_mode mode,
                          qed_error *err)
{
    struct qed_open_options lo = { .locking = mode };
    struct io_lock want, held = { 0 };
    bool unsupported;

    qedi_io_lock_create_role(&want);
    return qedi_io_lock_open_fd(fd, path, qedi_image_lock_flags(&lo), &want, &held,
                           &unsupported, err);
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

void qedi_image_remote_options(const qed_image *image,
                               struct qed_open_options *o)
{
    o->tls_ca_file = image->remote.tls_ca_file;
    o->tls_no_verify = image->remote.tls_no_verify;
    o->remote_cache_bytes = image->remote.read_cache_bytes;
    o->s3_endpoint = image->remote.s3_endpoint;
    o->s3_region = image->remote.s3_region;
    o->s3_access_key_id = image->remote.s3_access_key_id;
    o->s3_secret_access_key = image->remote.s3_secret_access_key;
    o->s3_session_token = image->remote.s3_session_token;
}
