/* SPDX-License-Identifier: MIT */
/* A synchronous call made from a callback running on the image's loop
 * would run the loop inside itself and wait for work queued behind the
 * callback: every synchronous call refuses it with EDEADLK and a message
 * saying what to do, changes nothing, and works again once the callback
 * has returned. */
#include <errno.h>
#include <string.h>

#include "support-tap.h"

struct nested {
    qed_image *img;
    bool done;
    int outer_ret;
    int ret[8];
    char message[8][512];
};

static void record(struct nested *n, int i, int ret, const qed_error *err)
{
    n->ret[i] = ret;
    snprintf(n->message[i], sizeof(n->message[i]), "%s", err->message);
}

/* Runs inside the loop: every synchronous call is tried here. */
static void from_callback(void *opaque, int ret, const qed_error *err)
{
    struct nested *n = opaque;
    struct qed_block_status st = { .size = sizeof(st) };
    uint8_t buf[512] = { 0x5a };
    qed_error e[8] = { { 0 } };

    (void)err;
    n->outer_ret = ret;
    record(n, 0, qed_pread(n->img, buf, sizeof(buf), 0, &e[0]), &e[0]);
    record(n, 1, qed_pwrite(n->img, buf, sizeof(buf), 0, &e[1]), &e[1]);
    record(n, 2, qed_write_zeroes(n->img, 0, 512, 0, &e[2]), &e[2]);
    record(n, 3, qed_discard(n->img, 0, 65536, &e[3]), &e[3]);
    record(n, 4, qed_flush(n->img, &e[4]), &e[4]);
    record(n, 5, qed_block_status(n->img, 0, 512, &st, &e[5]), &e[5]);
    record(n, 6, qed_drain(n->img, &e[6]), &e[6]);
    record(n, 7, qed_close(n->img, &e[7]), &e[7]);
    n->done = true;
}

int main(void)
{
    static const char *names[8] = {
        "qed_pread", "qed_pwrite", "qed_write_zeroes", "qed_discard",
        "qed_flush", "qed_block_status", "qed_drain", "qed_close",
    };
    char dir[256];
    const char *path;
    struct nested n = { 0 };
    uint8_t buf[512];
    qed_error err = { 0 };
    struct iovec iov = { buf, sizeof(buf) };

    if (support_mkdtemp("nested", dir, sizeof(dir)) < 0)
        return 1;
    path = support_path(dir, "n.qed");
    if (!support_tap_create("nested", path, 1 << 20, 0, NULL, QED_FORMAT_PROBE,
                            "n.qed"))
        return tap_done();
    if (support_open(path, QED_OPEN_RDWR, QED_ENGINE_AUTO, &n.img, &err) < 0) {
        ok(0, "open n.qed");
        return tap_done();
    }
    memset(buf, 0x11, sizeof(buf));
    ok(qed_pwrite(n.img, buf, sizeof(buf), 0, &err) == 0, "a write from the top level works");
    ok(qed_aio_readv(n.img, &iov, 1, 0, from_callback, &n) == 0, "an asynchronous read is submitted");
    while (!n.done)
        if (qed_loop_run(qed_image_loop(n.img), -1) < 0)
            break;
    is_u64(n.outer_ret, 0, "the asynchronous read itself succeeds");
    for (int i = 0; i < 8; i++) {
        is_u64(n.ret[i], (uint64_t)-EDEADLK, "%s from a callback fails with EDEADLK", names[i]);
        has_substr(n.message[i], names[i], "%s: the message names it: %s", names[i], n.message[i]);
        has_substr(n.message[i], "use the asynchronous call", "%s: and says what to do instead", names[i]);
    }
    memset(buf, 0, sizeof(buf));
    ok(qed_pread(n.img, buf, sizeof(buf), 0, &err) == 0 && buf[0] == 0x11 && buf[511] == 0x11,
       "back at the top level a read works and nothing was changed by the refused calls");
    ok(qed_close(n.img, &err) == 0, "the image (not closed by the refused qed_close) closes");
    support_rmtree(dir);
    return tap_done();
}
