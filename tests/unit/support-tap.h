/* SPDX-License-Identifier: MIT */
/* Fixtures of the engine tests that report TAP: each creates, opens, closes
 * or checks an image as one test point and diagnoses a failure under it.
 *
 * They are static inline on purpose, like ../tap.h itself: tap.h keeps its
 * test counter in static variables, one copy per translation unit, so a
 * test point reported from a separately compiled file would be numbered
 * apart from the program's own and break its plan.  Defined here, every
 * fixture counts with the test program that includes this header.  Helpers
 * that print no TAP belong in support-image.c or support-sim.c. */
#ifndef QED_TESTS_SUPPORT_TAP_H
#define QED_TESTS_SUPPORT_TAP_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

#include "qed.h"
#include "support-image.h"
#include "support-sim.h"
#include "../tap.h"

/* One test point "<en>: open <what>" (en names the engine and variant):
 * opens path with the options o.  On failure it diagnoses the error and
 * leaves *img NULL, so that callers can skip what needs the image. */
static inline bool support_tap_open(const char *en, const char *path,
                                    const struct qed_open_options *o,
                                    qed_image **img, const char *what)
{
    qed_error err = { 0 };
    int ret = qed_open(path, o, img, &err);

    if (!ok(ret == 0 && *img, "%s: open %s", en, what)) {
        tap_diag("ret %d: %s", ret, err.message);
        *img = NULL;
        return false;
    }
    return true;
}

/* One test point "<en>: close <what>". */
static inline void support_tap_close(const char *en, qed_image *img,
                                     const char *what)
{
    qed_error err = { 0 };
    int ret = qed_close(img, &err);

    if (!ok(ret == 0, "%s: close %s", en, what))
        tap_diag("ret %d: %s", ret, err.message);
}

/* One test point "<en>: create <what>": a QED image with the default table
 * size (see support_create for the other arguments). */
static inline bool support_tap_create(const char *en, const char *path,
                                      uint64_t size, uint32_t cluster_size,
                                      const char *backing,
                                      enum qed_format backing_format,
                                      const char *what)
{
    qed_error err = { 0 };
    int ret = support_create(path, size, cluster_size, 0, backing,
                             backing_format, &err);

    if (!ok(ret == 0, "%s: create %s", en, what)) {
        tap_diag("ret %d: %s", ret, err.message);
        return false;
    }
    return true;
}

/* One test point, named by fmt: `qemu-img check` exits 0 and finds nothing
 * but QEMU's phantom leaks (see support_qemu_check). */
static inline void support_tap_qemu_check(const char *path, const char *fmt,
                                          ...)
    __attribute__((format(printf, 2, 3)));
static inline void support_tap_qemu_check(const char *path, const char *fmt,
                                          ...)
{
    struct support_check chk;
    char name[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(name, sizeof(name), fmt, ap);
    va_end(ap);
    support_qemu_check(path, &chk);
    if (!ok(chk.status == 0 && chk.clean, "%s", name))
        tap_diag("exit %d: %s", chk.status, chk.output);
}

/* One test point, named by fmt: `qemu-img compare` finds the QED image
 * qed_path and the raw file raw_path equal (exit status 0). */
static inline void support_tap_qemu_compare(const char *qed_path,
                                            const char *raw_path,
                                            const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline void support_tap_qemu_compare(const char *qed_path,
                                            const char *raw_path,
                                            const char *fmt, ...)
{
    char name[512], out[2048];
    va_list ap;
    int ret;

    va_start(ap, fmt);
    vsnprintf(name, sizeof(name), fmt, ap);
    va_end(ap);
    ret = support_run(out, sizeof(out),
                      "qemu-img compare -f qed -F raw '%s' '%s'", qed_path,
                      raw_path);
    if (!ok(ret == 0, "%s", name))
        tap_diag("exit %d: %s", ret, out);
}

/* The test point "template images built": builds the n templates of a
 * simulated-disk test, t[i] by make(dir, i, &t[i]), in a temporary directory
 * /tmp/libqed-<tag>-XXXXXX removed afterwards (the runs work on copies in
 * memory).  Without a directory, the failing point is "temporary
 * directory" instead. */
static inline bool support_tap_templates(
    const char *tag, struct support_template *t, unsigned n,
    int (*make)(const char *dir, unsigned i, struct support_template *t))
{
    char dir[1024];
    int ret = 0;
    bool built;

    if (support_mkdtemp(tag, dir, sizeof(dir)) < 0) {
        ok(0, "temporary directory");
        return false;
    }
    for (unsigned i = 0; ret == 0 && i < n; i++)
        ret = make(dir, i, &t[i]);
    built = ok(ret == 0, "template images built");
    support_rmtree(dir);
    return built;
}

#endif
