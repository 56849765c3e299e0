/* SPDX-License-Identifier: MIT */
/* qed_check and qed_compact: what every format shares (the arguments, a
 * writable and idle image) is checked here; the format driver checks or
 * compacts its metadata (check.c, qed-compact.c for QED; a raw file has
 * none).  Each runs on a result of the library's own, handed over up to
 * the size the program knows (abi.h). */
#include <errno.h>
#include <string.h>

#include "ops.h"

static int check_image(qed_image *img, unsigned repair,
                       struct qed_check_result *r, qed_error *err)
{
    if (!img->driver->check)
        return qedi_fail(err, EINVAL, "not a QED image (format %s): check is "
                        "only for qed images", img->driver->name);
    if (repair & ~QED_CHECK_REPAIR_ALL)
        return qedi_fail(err, EINVAL, "repair flags 0x%x: unknown bits 0x%x",
                        repair, repair & ~QED_CHECK_REPAIR_ALL);
    if (repair && !img->writable)
        return qedi_fail(err, EPERM, "repair needs the image opened read-write "
                        "(QED_OPEN_RDWR)");
    if (img->in_flight || (img->driver->busy && img->driver->busy(img)))
        return qedi_fail(err, EBUSY, "%u requests in flight: the check needs "
                        "an idle image", img->in_flight);
    return img->driver->check(img, repair, r, err);
}

int qed_check(qed_image *img, unsigned repair, struct qed_check_result *result,
              qed_error *err)
{
    struct qed_check_result r = { 0 };
    int ret;

    if (!img || !result)
        return qedi_fail(err, EINVAL, "qed_check: no image or no result");
    ret = qedi_abi_check_out(&qedi_abi_check_result, result, err);
    if (ret < 0)
        return ret;
    ret = check_image(img, repair, &r, err);
    qedi_abi_give(&qedi_abi_check_result, result, &r);
    return ret;
}

static int compact_image(qed_image *img, struct qed_compact_result *r,
                         qed_error *err)
{
    if (!img->driver->compact)
        return qedi_fail(err, EINVAL, "compact works on qed images, not %s",
                        img->driver->name);
    if (!img->writable)
        return qedi_fail(err, EPERM, "the image is open read-only");
    if (img->in_flight)
        return qedi_fail(err, EBUSY, "requests are in flight");
    return img->driver->compact(img, r, err);
}

int qed_compact(qed_image *img, struct qed_compact_result *result,
                qed_error *err)
{
    struct qed_compact_result r = { 0 };
    int ret = qedi_abi_check_out(&qedi_abi_compact_result, result, err);

    if (ret < 0)
        return ret;
    ret = compact_image(img, &r, err);
    qedi_abi_give(&qedi_abi_compact_result, result, &r);
    return ret;
}
