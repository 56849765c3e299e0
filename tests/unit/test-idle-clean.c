/* SPDX-License-Identifier: MIT */
/* The dirty bit's life cycle while an image stays open: set before the
 * first table update, cleared after a flush once allocations have been idle
 * for a few seconds, set again by the next allocation. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../tap.h"
#include "qed.h"

static uint64_t features_on_disk(const char *path)
{
    uint8_t buf[24] = { 0 };
    uint64_t v = 0;
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        if (pread(fd, buf, sizeof(buf), 0) != (ssize_t)sizeof(buf))
            memset(buf, 0xff, sizeof(buf));
        close(fd);
    }
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | buf[16 + i];
    return v;
}

/* Runs the image's loop for about ms milliseconds. */
static void idle_for(qed_image *img, int ms)
{
    for (int waited = 0; waited < ms; waited += 50)
        qed_loop_run(qed_image_loop(img), 50);
}

static void lifecycle(const char *dir, enum qed_engine engine,
                      const char *ename)
{
    char path[256];
    struct qed_create_options co = { .size = sizeof(co),
                                     .virtual_size = 16 << 20 };
    struct qed_open_options oo = { .size = sizeof(oo),
                                   .flags = QED_OPEN_RDWR, .engine = engine };
    char buf[4096];
    qed_image *img;
    qed_error err;

    snprintf(path, sizeof(path), "%s/idle-%s.qed", dir, ename);
    memset(buf, 0x5a, sizeof(buf));
    if (!ok(qed_create(path, &co, &err) == 0 &&
                qed_open(path, &oo, &img, &err) == 0,
            "%s: create and open", ename)) {
        tap_diag("%s", err.message);
        return;
    }
    ok(!(features_on_disk(path) & QED_F_NEED_CHECK),
       "%s: a fresh image is clean on disk", ename);
    ok(qed_pwrite(img, buf, sizeof(buf), 0, &err) == 0,
       "%s: allocating write", ename);
    ok(features_on_disk(path) & QED_F_NEED_CHECK,
       "%s: NEED_CHECK is on disk after an allocating write", ename);
    idle_for(img, 500);
    ok(features_on_disk(path) & QED_F_NEED_CHECK,
       "%s: still dirty half a second later", ename);
    idle_for(img, 2500);
    ok(!(features_on_disk(path) & QED_F_NEED_CHECK),
       "%s: clean on disk after a few idle seconds", ename);
    ok(qed_pwrite(img, buf, sizeof(buf), 1 << 20, &err) == 0,
       "%s: another allocating write", ename);
    ok(features_on_disk(path) & QED_F_NEED_CHECK,
       "%s: dirty again after it", ename);
    ok(qed_pwrite(img, buf, sizeof(buf), 0, &err) == 0 &&
           qed_pread(img, buf, sizeof(buf), 1 << 20, &err) == 0,
       "%s: reads and in-place writes keep working", ename);
    ok(qed_close(img, &err) == 0, "%s: close", ename);
    ok(!(features_on_disk(path) & QED_F_NEED_CHECK),
       "%s: clean after close", ename);
    unlink(path);
}

int main(void)
{
    char dir[] = "/tmp/qed-idle-XXXXXX";

    if (!mkdtemp(dir))
        return 1;
    lifecycle(dir, QED_ENGINE_URING, "io_uring");
    lifecycle(dir, QED_ENGINE_THREADS, "threads");
    rmdir(dir);
    return tap_done();
}
