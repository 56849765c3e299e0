/* SPDX-License-Identifier: MIT */
/*
 * qed-cat IMAGE — writes what a QED or raw image reads (through its backing
 * chain) to standard output, with several asynchronous reads in flight.
 *
 * An example of libqed's asynchronous API: reads are submitted with
 * qed_aio_readv, the image's event loop is run with qed_loop_run, and the
 * completed chunks are written out in order while the next reads proceed.
 *
 * Build against an installed libqed:
 *     cc -o qed-cat qed-cat.c $(pkg-config --cflags --libs libqed)
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <qed.h>

#define CHUNK (1024 * 1024) /* bytes per read */
#define DEPTH 8             /* reads in flight */

struct cat;

/* One read buffer.  Chunk i of the image always goes through slot
 * i % DEPTH, so the slots complete in any order but are written in order. */
struct slot {
    struct cat *cat;
    char *buf;
    size_t length;
    bool busy;  /* read in flight */
    bool ready; /* read done, not written yet */
};

struct cat {
    qed_image *img;
    uint64_t size;
    uint64_t next_read;  /* offset of the next read to submit */
    uint64_t next_write; /* offset of the next byte to write out */
    struct slot slots[DEPTH];
    bool failed;
    qed_error err;       /* the first error */
};

/* Called from qed_loop_run, on this thread, once per read. */
static void read_done(void *opaque, int ret, const qed_error *err)
{
    struct slot *slot = opaque;
    struct cat *cat = slot->cat;

    slot->busy = false;
    if (ret < 0) {
        /* err is valid only during this call: keep a copy. */
        if (!cat->failed)
            cat->err = *err;
        cat->failed = true;
        return;
    }
    slot->ready = true;
}

static int submit(struct cat *cat, struct slot *slot)
{
    uint64_t left = cat->size - cat->next_read;
    struct iovec iov;
    int ret;

    slot->length = left < CHUNK ? (size_t)left : CHUNK;
    iov.iov_base = slot->buf;
    iov.iov_len = slot->length;
    /* 0: accepted, read_done runs later.  < 0: nothing was submitted and
     * read_done will not run. */
    ret = qed_aio_readv(cat->img, &iov, 1, cat->next_read, read_done, slot);
    if (ret < 0) {
        cat->failed = true;
        cat->err.code = -ret;
        snprintf(cat->err.message, sizeof(cat->err.message),
                 "read at offset %llu: %s",
                 (unsigned long long)cat->next_read, strerror(-ret));
        return ret;
    }
    slot->busy = true;
    cat->next_read += slot->length;
    return 0;
}

static int write_all(int fd, const char *buf, size_t length)
{
    while (length > 0) {
        ssize_t n = write(fd, buf, length);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        buf += n;
        length -= (size_t)n;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static struct cat cat;
    qed_loop *loop;
    int status = 0, ret;

    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: qed-cat IMAGE > FILE\n");
        return 2;
    }
    /* NULL options: read-only, format probed, the image makes its loop. */
    if (qed_open(argv[1], NULL, &cat.img, &cat.err) < 0) {
        fprintf(stderr, "qed-cat: %s: %s\n", argv[1], cat.err.message);
        return 1;
    }
    loop = qed_image_loop(cat.img);
    cat.size = qed_size(cat.img);

    for (int i = 0; i < DEPTH; i++) {
        cat.slots[i].cat = &cat;
        cat.slots[i].buf = malloc(CHUNK);
        if (!cat.slots[i].buf) {
            fprintf(stderr, "qed-cat: out of memory\n");
            status = 1;
            goto out;
        }
    }
    for (int i = 0; i < DEPTH && cat.next_read < cat.size && !cat.failed; i++)
        submit(&cat, &cat.slots[i]);

    while (cat.next_write < cat.size && !cat.failed) {
        struct slot *slot = &cat.slots[(cat.next_write / CHUNK) % DEPTH];

        if (!slot->ready) {
            /* Wait for completions; read_done runs from here. */
            ret = qed_loop_run(loop, -1);
            if (ret < 0) {
                fprintf(stderr, "qed-cat: event loop: %s\n", strerror(-ret));
                status = 1;
                goto out;
            }
            continue;
        }
        ret = write_all(STDOUT_FILENO, slot->buf, slot->length);
        if (ret < 0) {
            fprintf(stderr, "qed-cat: standard output: %s\n", strerror(-ret));
            status = 1;
            goto out;
        }
        cat.next_write += slot->length;
        slot->ready = false;
        if (cat.next_read < cat.size)
            submit(&cat, slot);
    }
    if (cat.failed) {
        fprintf(stderr, "qed-cat: %s: %s\n", argv[1], cat.err.message);
        status = 1;
    }

out:
    /* qed_close waits for the reads still in flight (their callbacks run
     * and touch the slots), so the buffers are freed only afterwards. */
    if (qed_close(cat.img, &cat.err) < 0) {
        fprintf(stderr, "qed-cat: %s: %s\n", argv[1], cat.err.message);
        status = 1;
    }
    for (int i = 0; i < DEPTH; i++)
        free(cat.slots[i].buf);
    return status;
}
