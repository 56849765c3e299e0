/* SPDX-License-Identifier: MIT */
/*
 * qed-poll-sum IMAGE — reads a QED or raw image (through its backing chain)
 * and prints its size and a checksum of its content, from an event loop
 * that belongs to the program: a plain poll() that could watch the
 * program's own descriptors too.
 *
 * An example of embedding libqed's loop: before each wait the program asks
 * qed_loop_get_timeout how long it may sleep (that also hands queued I/O to
 * the kernel), polls qed_loop_get_fd with it, and runs what is ready with
 * qed_loop_dispatch; the read callbacks run from there.
 *
 * Build against an installed libqed:
 *     cc -o qed-poll-sum qed-poll-sum.c $(pkg-config --cflags --libs libqed)
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qed.h>

#define CHUNK (1024 * 1024) /* bytes per read */

struct sum {
    qed_image *img;
    uint64_t size, offset;
    unsigned char *buf;
    size_t length;    /* of the read in flight */
    bool busy, failed;
    uint64_t hash;    /* FNV-1a of every byte read so far */
    qed_error err;
};

static void read_done(void *opaque, int ret, const qed_error *err)
{
    struct sum *s = opaque;

    s->busy = false;
    if (ret < 0) {
        s->failed = true;
        s->err = *err; /* err is valid only during this call */
        return;
    }
    for (size_t i = 0; i < s->length; i++)
        s->hash = (s->hash ^ s->buf[i]) * 1099511628211ull;
    s->offset += s->length;
}

static int submit(struct sum *s)
{
    struct iovec iov;
    uint64_t left = s->size - s->offset;
    int ret;

    s->length = left < CHUNK ? (size_t)left : CHUNK;
    iov.iov_base = s->buf;
    iov.iov_len = s->length;
    ret = qed_aio_readv(s->img, &iov, 1, s->offset, read_done, s);
    if (ret == 0)
        s->busy = true;
    return ret;
}

/* The program's event loop: here it only has libqed's descriptor. */
static int run(struct sum *s, qed_loop *loop)
{
    while (!s->failed && (s->busy || s->offset < s->size)) {
        struct pollfd p = { .fd = qed_loop_get_fd(loop), .events = POLLIN };
        int timeout, ret;

        if (!s->busy && (ret = submit(s)) < 0)
            return ret;
        timeout = qed_loop_get_timeout(loop);
        if (poll(&p, 1, timeout) < 0 && errno != EINTR)
            return -errno;
        ret = qed_loop_dispatch(loop);
        if (ret < 0)
            return ret;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static struct sum s = { .hash = 1469598103934665603ull };
    int ret;

    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: qed-poll-sum IMAGE\n");
        return 2;
    }
    if (qed_open(argv[1], NULL, &s.img, &s.err) < 0) {
        fprintf(stderr, "qed-poll-sum: %s: %s\n", argv[1], s.err.message);
        return 1;
    }
    s.size = qed_size(s.img);
    s.buf = malloc(CHUNK);
    if (!s.buf) {
        fprintf(stderr, "qed-poll-sum: out of memory\n");
        qed_close(s.img, NULL);
        return 1;
    }
    ret = run(&s, qed_image_loop(s.img));
    if (ret < 0)
        fprintf(stderr, "qed-poll-sum: %s\n", strerror(-ret));
    else if (s.failed)
        fprintf(stderr, "qed-poll-sum: %s\n", s.err.message);
    else
        printf("%" PRIu64 " bytes, fnv1a %016" PRIx64 "\n", s.size, s.hash);
    free(s.buf);
    qed_close(s.img, NULL);
    return ret < 0 || s.failed ? 1 : 0;
}
