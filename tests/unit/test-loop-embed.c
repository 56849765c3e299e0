/* SPDX-License-Identifier: MIT */
/* A program with an event loop of its own drives an image through
 * qed_loop_get_fd, qed_loop_get_timeout and qed_loop_dispatch around a
 * plain poll(): writes, reads (the first allocating) and a timer complete,
 * with either I/O engine, without qed_loop_run ever being called. */
#include <errno.h>
#include <poll.h>
#include <string.h>

#include "support-tap.h"

#define LEN (256 * 1024)

struct done {
    int count;
    int ret;
};

static void request_done(void *opaque, int ret, const qed_error *err)
{
    struct done *d = opaque;

    (void)err;
    d->count++;
    if (ret < 0)
        d->ret = ret;
}

static void timer_fired(void *opaque)
{
    (*(int *)opaque)++;
}

/* The caller's own loop: poll on the descriptor, as long as the library
 * says, then dispatch; until *count reaches want or 2000 rounds pass. */
static int drive(qed_loop *loop, const int *count, int want, int *polls)
{
    for (int round = 0; round < 2000 && *count < want; round++) {
        struct pollfd p = { .fd = qed_loop_get_fd(loop), .events = POLLIN };
        int timeout = qed_loop_get_timeout(loop);

        if (poll(&p, 1, timeout < 0 ? 1000 : timeout) < 0 && errno != EINTR)
            return -errno;
        (*polls)++;
        if (qed_loop_dispatch(loop) < 0)
            return -EIO;
    }
    return *count >= want ? 0 : -ETIMEDOUT;
}

static void run_engine(const char *dir, enum qed_engine engine)
{
    const char *en = support_engine_name(engine);
    const char *path = support_path(dir, en);
    static uint8_t wbuf[LEN], rbuf[LEN];
    struct iovec wv = { wbuf, LEN }, rv = { rbuf, LEN };
    struct qed_open_options o = { .size = sizeof(o), .flags = QED_OPEN_RDWR };
    struct done w = { 0 }, r = { 0 };
    qed_error err = { 0 };
    qed_loop *loop = NULL;
    qed_image *img = NULL;
    int fired = 0, polls = 0, ret;
    uint64_t t0;

    if (!support_tap_create(en, path, 8 << 20, 0, NULL, QED_FORMAT_PROBE, en))
        return;
    if (!ok(qed_loop_new(engine, &loop, &err) == 0, "%s: a loop of the program's own", en))
        return;
    ok(qed_loop_get_fd(loop) >= 0, "%s: the loop has a descriptor to poll", en);
    is_u64(qed_loop_get_timeout(loop), (uint64_t)-1, "%s: with nothing pending there is no time limit", en);
    o.loop = loop;
    if (!support_tap_open(en, path, &o, &img, "the image on that loop"))
        goto out;
    is_str(qed_loop_engine_name(loop), en, "%s: with the engine asked for", en);

    memset(wbuf, 0xa7, LEN);
    ok(qed_aio_writev(img, &wv, 1, 1 << 20, request_done, &w) == 0, "%s: an allocating write is submitted", en);
    ok(w.count == 0, "%s: the write does not complete inside the call", en);
    ret = drive(loop, &w.count, 1, &polls);
    ok(ret == 0 && w.ret == 0, "%s: poll + dispatch complete the write (%d polls)", en, polls);
    ok(qed_aio_readv(img, &rv, 1, 1 << 20, request_done, &r) == 0, "%s: a read is submitted", en);
    ret = drive(loop, &r.count, 1, &polls);
    ok(ret == 0 && r.ret == 0, "%s: poll + dispatch complete the read", en);
    ok(memcmp(rbuf, wbuf, LEN) == 0, "%s: it reads what was written", en);

    t0 = (uint64_t)polls;
    ok(qed_loop_add_timer(loop, 30, timer_fired, &fired) > 0, "%s: a 30 ms timer is set", en);
    {
        int t = qed_loop_get_timeout(loop);
        ok(t > 0 && t <= 30, "%s: get_timeout says to wait at most until the timer (%d ms)", en, t);
    }
    ret = drive(loop, &fired, 1, &polls);
    ok(ret == 0, "%s: the timer fires through poll + dispatch", en);
    ok((uint64_t)polls - t0 < 50, "%s: poll waited for it rather than spinning (%d polls)", en, polls - (int)t0);
    support_tap_close(en, img, "the image");
out:
    qed_loop_free(loop);
}

int main(void)
{
    char dir[256];

    if (support_mkdtemp("embed", dir, sizeof(dir)) < 0)
        return 1;
    for (int i = 0; i < SUPPORT_ENGINE_COUNT; i++)
        run_engine(dir, support_engines[i]);
    support_rmtree(dir);
    return tap_done();
}
