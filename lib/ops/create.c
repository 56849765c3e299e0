/* SPDX-License-Identifier: MIT */
/* qed_create: the options checked, the image size taken from the backing
 * file when asked, then the QED driver lays the new file out
 * (qed-create.c). */
#include <errno.h>
#include <stdlib.h>

#include "ops.h"

static int backing_size(const char *image_path,
                        const struct qed_create_options *o, uint64_t *size,
                        qed_error *err)
{
    struct qed_open_options bo = { .size = sizeof(bo) };
    char *path = qedi_image_resolve_backing(image_path, o->backing_file);
    qed_image *backing;
    int ret;

    if (!path)
        return qedi_fail(err, ENOMEM, "out of memory");
    /* The caller's remote settings, if any; read-only, this format. */
    if (o->backing_options) {
        ret = qedi_abi_take(&qedi_abi_open_options, &bo, o->backing_options,
                            err);
        if (ret < 0) {
            free(path);
            return ret;
        }
    }
    bo.flags = 0;
    bo.format = o->backing_format;
    bo.locking = o->locking;
    bo.loop = NULL;
    ret = qed_open(path, &bo, &backing, err);
    if (ret < 0) {
        qedi_error_prefix(err, "backing file '%s': ",
                          qedi_storage_uri_for_messages(path));
        free(path);
        return ret;
    }
    *size = qed_size(backing);
    qed_close(backing, NULL);
    free(path);
    return 0;
}

int qed_create(const char *path, const struct qed_create_options *options,
               qed_error *err)
{
    struct qed_create_options o = { 0 };
    bool has_backing;
    int ret = qedi_abi_take(&qedi_abi_create_options, &o, options, err);

    if (ret < 0)
        return ret;
    /* Creating writes a local file; an NBD export has a size of its own. */
    if (qedi_storage_is_uri(path))
        return qedi_fail(err, EOPNOTSUPP, "an image cannot be created in an "
                         "NBD export (create it locally and copy it in)");
    has_backing = o.backing_file && o.backing_file[0];
    if (o.cluster_size == 0)
        o.cluster_size = QED_DEFAULT_CLUSTER_SIZE;
    if (o.table_size == 0)
        o.table_size = QED_DEFAULT_TABLE_SIZE;
    if (o.size_from_backing && !has_backing)
        return qedi_fail(err, EINVAL, "an image size is needed when there is "
                        "no backing file");
    if (!qed_preallocation_name(o.preallocation))
        return qedi_fail(err, EINVAL, "preallocation mode %d is none of off, "
                        "metadata, falloc, full", (int)o.preallocation);
    /* Zeroed L2 tables let the backing file show through; allocated data
     * clusters would hide it. */
    if (has_backing && o.preallocation >= QED_PREALLOC_FALLOC)
        return qedi_fail(err, EINVAL, "Backing file and preallocation=%s "
                        "cannot be used at the same time: the preallocated "
                        "clusters would hide the backing file's data",
                        qed_preallocation_name(o.preallocation));
    /* Before the backing file is even opened: truncating path would
     * destroy the backing file too.  (qemu-img's wording.) */
    if (has_backing && qedi_image_backing_is_self(path, o.backing_file))
        return qedi_fail(err, EINVAL, "Error: Trying to create an image with "
                        "the same filename as the backing file");
    struct qed_open_options lo = { .locking = o.locking };
    ret = qedi_image_validate_locking(&lo, err);
    if (ret < 0)
        return ret;
    if (has_backing) {
        uint64_t bsize = 0;
        ret = backing_size(path, &o, &bsize, err);
        if (ret < 0)
            return ret;
        if (o.size_from_backing)
            o.virtual_size = round_up_u64(bsize, QED_SECTOR_SIZE);
    }
    return qedi_qed_format_driver.create(path, &o, err);
}
