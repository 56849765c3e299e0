/* SPDX-License-Identifier: MIT */
/* Preallocation of a range of an idle image's file, for the drivers'
 * resize: the space reserved (falloc) or written with zeros (full). */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "driver.h"

#define ZERO_CHUNK (1024u * 1024)

static int write_zeros_sync(qed_image *img, uint64_t offset, uint64_t len)
{
    uint8_t *zeros = qedi_aligned_zalloc(ZERO_CHUNK);
    int ret = 0;

    if (!zeros)
        return -ENOMEM;
    while (len > 0 && ret == 0) {
        size_t n = (size_t)QED_MIN(len, (uint64_t)ZERO_CHUNK);

        ret = qedi_io_pwrite_sync(img->file, zeros, n, offset);
        offset += n;
        len -= n;
    }
    free(zeros);
    return ret;
}

/* Reserves [offset, offset + len) (falloc), or writes zeros there (full,
 * after reserving when the file system can). */
int qedi_image_preallocate(qed_image *img, uint64_t offset, uint64_t len,
                     enum qed_preallocation mode, qed_error *err)
{
    int ret;

    if (len == 0)
        return 0;
    ret = qedi_io_fallocate_sync(img->file, 0, offset, len);
    if (ret < 0 && (mode == QED_PREALLOC_FALLOC || ret != -EOPNOTSUPP))
        return qedi_fail(err, -ret, "preallocation=%s: fallocate of %" PRIu64
                        " bytes at offset %" PRIu64 ": %s",
                        qed_preallocation_name(mode), len, offset,
                        strerror(-ret));
    if (mode == QED_PREALLOC_FULL) {
        ret = write_zeros_sync(img, offset, len);
        if (ret < 0)
            return qedi_fail(err, -ret, "preallocation=full: writing %" PRIu64
                            " bytes of zeros at offset %" PRIu64 ": %s", len,
                            offset, strerror(-ret));
    }
    return 0;
}

int qedi_image_flush(qed_image *img, qed_error *err)
{
    int ret = qedi_io_sync_sync(img->file);

    if (ret < 0)
        return qedi_fail(err, -ret, "flush: %s", strerror(-ret));
    return 0;
}
