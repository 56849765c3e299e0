/* SPDX-License-Identifier: MIT */
/*
 * raw2qed [-c CLUSTER_SIZE] RAW QED — copies a raw disk image into a new
 * QED image, leaving the all-zero clusters out (they stay unallocated and
 * read as zeros), with a progress line on a terminal.
 *
 * An example of libqed's synchronous API: qed_create, qed_open, qed_pwrite
 * and qed_close, with errors reported through qed_error.  (The library's
 * qed_convert does the same job with many requests in flight.)
 *
 * Build against an installed libqed:
 *     cc -o raw2qed raw2qed.c $(pkg-config --cflags --libs libqed)
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <qed.h>

#define READ_SIZE (4u * 1024 * 1024) /* bytes read from RAW at a time */

static bool all_zero(const char *buf, size_t length)
{
    return length == 0 ||
           (buf[0] == 0 && memcmp(buf, buf + 1, length - 1) == 0);
}

/* Bytes of the cluster at pos in a buffer of n bytes. */
static size_t piece(const struct qed_image_info *info, size_t pos, size_t n)
{
    return info->cluster_size < n - pos ? info->cluster_size : n - pos;
}

/* Reads length bytes at offset, short only at the end of the file. */
static ssize_t read_full(int fd, char *buf, size_t length, uint64_t offset)
{
    size_t done = 0;

    while (done < length) {
        ssize_t n = pread(fd, buf + done, length - done,
                          (off_t)(offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

static void progress(bool show, uint64_t done, uint64_t total)
{
    if (show)
        fprintf(stderr, "\r%5.1f%% (%" PRIu64 " of %" PRIu64 " MiB)",
                total ? 100.0 * (double)done / (double)total : 100.0,
                done >> 20, total >> 20);
}

static int usage(void)
{
    fprintf(stderr, "usage: raw2qed [-c CLUSTER_SIZE] RAW QED\n");
    return 2;
}

int main(int argc, char **argv)
{
    struct qed_create_options create;
    struct qed_open_options open_options;
    struct qed_image_info info;
    qed_image *img = NULL;
    qed_error err;
    const char *raw_path, *qed_path;
    uint64_t raw_size, offset, written = 0, cluster_size = 0;
    bool show = isatty(STDERR_FILENO);
    char *buf = NULL;
    size_t bufsize;
    int fd, opt, status = 1;
    off_t end;

    while ((opt = getopt(argc, argv, "c:")) != -1) {
        if (opt != 'c')
            return usage();
        /* "64k", "1M", ...: the same sizes qed(1) takes. */
        if (qed_parse_size(optarg, &cluster_size, &err) < 0 ||
            cluster_size > UINT32_MAX) {
            fprintf(stderr, "raw2qed: -c %s: %s\n", optarg,
                    cluster_size > UINT32_MAX ? "too large" : err.message);
            return 2;
        }
    }
    if (argc - optind != 2)
        return usage();
    raw_path = argv[optind];
    qed_path = argv[optind + 1];

    fd = open(raw_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || (end = lseek(fd, 0, SEEK_END)) < 0) {
        fprintf(stderr, "raw2qed: %s: %s\n", raw_path, strerror(errno));
        return 1;
    }
    raw_size = (uint64_t)end;

    /* Every struct the library takes or fills starts with its size: the
     * init functions set it and the defaults (zeros). */
    qed_create_options_init(&create);
    qed_open_options_init(&open_options);
    qed_image_info_init(&info);
    /* The virtual size must be a multiple of 512: the tail past the end of
     * RAW reads as zeros.  Cluster size 0 means the default, 64 KiB. */
    create.virtual_size = (raw_size + 511) / 512 * 512;
    create.cluster_size = (uint32_t)cluster_size;
    if (qed_create(qed_path, &create, &err) < 0) {
        fprintf(stderr, "raw2qed: %s: %s\n", qed_path, err.message);
        goto out;
    }
    open_options.flags = QED_OPEN_RDWR;
    open_options.format = QED_FORMAT_QED;
    if (qed_open(qed_path, &open_options, &img, &err) < 0 ||
        qed_get_info(img, &info, &err) < 0) {
        fprintf(stderr, "raw2qed: %s: %s\n", qed_path, err.message);
        goto out;
    }
    bufsize = READ_SIZE > info.cluster_size ? READ_SIZE : info.cluster_size;
    buf = malloc(bufsize);
    if (!buf) {
        fprintf(stderr, "raw2qed: out of memory\n");
        goto out;
    }

    for (offset = 0; offset < raw_size;) {
        ssize_t got = read_full(fd, buf, bufsize, offset);

        if (got < 0) {
            fprintf(stderr, "%sraw2qed: %s: %s\n", show ? "\n" : "", raw_path,
                    strerror(errno));
            goto out;
        }
        if (got == 0)
            break;
        /* Write each run of clusters that are not all zeros in one call.
         * The buffer holds a multiple of the cluster size (but at the end
         * of RAW), so the pieces are cluster-aligned in the image. */
        for (size_t pos = 0, n = (size_t)got; pos < n;) {
            size_t start;

            while (pos < n && all_zero(buf + pos, piece(&info, pos, n)))
                pos += piece(&info, pos, n);
            start = pos;
            while (pos < n && !all_zero(buf + pos, piece(&info, pos, n)))
                pos += piece(&info, pos, n);
            if (pos == start)
                break;
            /* Blocks until the write is done (the loop runs inside). */
            if (qed_pwrite(img, buf + start, pos - start, offset + start,
                           &err) < 0) {
                fprintf(stderr, "%sraw2qed: %s: %s\n", show ? "\n" : "",
                        qed_path, err.message);
                goto out;
            }
            written += pos - start;
        }
        offset += (uint64_t)got;
        progress(show, offset, raw_size);
    }
    progress(show, raw_size, raw_size);
    if (show)
        fputc('\n', stderr);
    status = 0;

out:
    free(buf);
    close(fd);
    /* Flushes, and marks the image clean. */
    if (img && qed_close(img, &err) < 0) {
        fprintf(stderr, "raw2qed: %s: %s\n", qed_path, err.message);
        status = 1;
    }
    if (status == 0)
        printf("%s: %" PRIu64 " bytes, %" PRIu64 " bytes of data written\n",
               qed_path, raw_size, written);
    return status;
}
