/* SPDX-License-Identifier: MIT */
/* qed_resize: change an image's virtual size.  What every format shares
 * (the flags, the preallocation mode, a writable and idle image) is
 * checked here; the format driver does the rest (qed-resize.c, raw.c). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>

#include "ops.h"

static int check_preallocation(const qed_image *img, uint64_t size,
                               unsigned flags, qed_error *err)
{
    enum qed_preallocation mode = (flags & QED_RESIZE_PREALLOC_MASK) >> 4;

    if (mode == QED_PREALLOC_OFF)
        return 0;
    if (size < img->size)
        return qedi_fail(err, EINVAL, "Preallocation can only be used for "
                        "growing images");
    if (img->cluster_size == 0 && mode == QED_PREALLOC_METADATA)
        return qedi_fail(err, ENOTSUP, "Unsupported preallocation mode: "
                        "metadata (a raw file has no metadata)");
    return 0;
}

int qed_resize(qed_image *img, uint64_t size, unsigned flags, qed_error *err)
{
    unsigned known = QED_RESIZE_SHRINK | QED_RESIZE_PREALLOC_MASK;
    int ret;

    if (flags & ~known)
        return qedi_fail(err, EINVAL, "resize flags 0x%x: unknown bits 0x%x",
                        flags, flags & ~known);
    ret = check_preallocation(img, size, flags, err);
    if (ret < 0)
        return ret;
    if (!img->writable)
        return qedi_fail(err, EPERM, "resize: '%s' is open read-only",
                        img->filename);
    ret = qedi_ops_require_idle(img, "resize", err);
    if (ret < 0)
        return ret;
    if (!img->driver->resize)
        return qedi_fail(err, ENOTSUP, "resize: %s images cannot be resized",
                        img->driver->name);
    return img->driver->resize(img, size, flags, err);
}
