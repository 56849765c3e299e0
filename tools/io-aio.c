/* SPDX-License-Identifier: MIT */
/* `qed io` asynchronous commands: aio_read and aio_write submit a request
 * and return at once, so that several are in flight together; each prints
 * its report when it completes (from the image's loop, which runs while
 * later commands wait for their own I/O, during sleep, and in aio_flush,
 * which waits for all of them).  As in qemu-io, a request that fails or
 * does not match its pattern is reported but does not make the exit
 * status 1: the command succeeded when it was submitted. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"

struct aio_request {
    struct io_session *session;
    struct io_vector vec;
    uint64_t offset, length;
    bool write, fua, flushing;
    bool quiet, verbose, machine, verify;
    int pattern;
    struct timespec start;
};

static void aio_report(struct aio_request *req, int ret, const qed_error *err)
{
    double seconds = io_seconds_since(&req->start);
    const char *failed = req->write ? "aio_write" : "readv";

    if (ret < 0) {
        io_report_failure(req->session, failed, ret, err);
        return;
    }
    if (req->verify) {
        for (uint64_t i = 0; i < req->length; i++) {
            if (req->vec.buf[i] != req->pattern) {
                printf("Pattern verification failed at offset %" PRIu64
                       ", %" PRIu64 " bytes\n",
                       req->offset, req->length);
                break;
            }
        }
    }
    if (req->quiet)
        return;
    if (req->verbose)
        io_dump_buffer(req->vec.buf, (size_t)req->length, req->offset);
    io_print_report(req->write ? "wrote" : "read", seconds, req->offset,
                    req->length, req->machine);
}

static void aio_finish(struct aio_request *req, int ret, const qed_error *err)
{
    aio_report(req, ret, err);
    fflush(stdout);
    req->session->aio_in_flight--;
    io_vector_free(&req->vec);
    free(req);
}

static void aio_done(void *opaque, int ret, const qed_error *err)
{
    struct aio_request *req = opaque;

    /* -f: the write completes once it is durable. */
    if (ret == 0 && req->fua && !req->flushing) {
        req->flushing = true;
        ret = qed_aio_flush(req->session->image, aio_done, req);
        if (ret == 0)
            return;
        err = NULL;
    }
    aio_finish(req, ret, err);
}

/* Starts the request; its completion reports.  A request that cannot
 * start, or has nothing to transfer, completes at once. */
static void aio_submit(struct aio_request *req, bool zeroes)
{
    struct io_session *session = req->session;
    qed_image *image = session->image;
    int ret;

    session->aio_in_flight++;
    clock_gettime(CLOCK_MONOTONIC, &req->start);
    if (req->length == 0 && !zeroes) {
        aio_finish(req, 0, NULL);
        return;
    }
    if (zeroes)
        ret = qed_aio_write_zeroes(image, req->offset, req->length,
                                   QED_ZERO_MAY_UNMAP, aio_done, req);
    else if (req->write)
        ret = qed_aio_writev(image, req->vec.iov, req->vec.count,
                             req->offset, aio_done, req);
    else
        ret = qed_aio_readv(image, req->vec.iov, req->vec.count, req->offset,
                            aio_done, req);
    if (ret < 0)
        aio_finish(req, ret, NULL);
}

static struct aio_request *aio_request_new(struct io_session *session)
{
    struct aio_request *req = calloc(1, sizeof(*req));

    if (!req)
        tool_error(NULL, "out of memory");
    else
        req->session = session;
    return req;
}

/* Parses the lengths and allocates the buffers of a request inside the
 * image.  Returns -1 when the request is ready to submit; otherwise the
 * request is freed and the command's status returned: 1 for bad lengths,
 * 0 for a range outside the image (reported like a failed completion,
 * which does not fail an aio command). */
static int aio_prepare(struct aio_request *req, char **argv, char **lengths,
                       int count, int fill)
{
    const char *failed = req->write ? "aio_write" : "readv";
    int status = -1;

    if (!io_vector_new(&req->vec, lengths, count, fill)) {
        free(req);
        return 1;
    }
    req->length = req->vec.total;
    if (!io_range_ok(req->session, argv[0], failed, req->offset,
                     req->length))
        status = 0;
    else if (!io_vector_alloc(&req->vec))
        status = 1;
    if (status >= 0) {
        io_vector_free(&req->vec);
        free(req);
    }
    return status;
}

/* ---- aio_read ------------------------------------------------------------ */

static int io_aio_read(struct io_session *session, int argc, char **argv)
{
    struct aio_request *req = aio_request_new(session);
    int ch, status;

    if (!req)
        return 1;
    while ((ch = getopt(argc, argv, ":CP:iqv")) != -1) {
        switch (ch) {
        case 'C': req->machine = true; break;
        case 'P':
            req->verify = true;
            if (!io_parse_pattern(optarg, &req->pattern)) {
                free(req);
                return 1;
            }
            break;
        case 'i':
            /* qemu-io counts an invalid request in its statistics. */
            printf("injecting invalid read request\n");
            free(req);
            return 0;
        case 'q': req->quiet = true; break;
        case 'v': req->verbose = true; break;
        default:
            free(req);
            return io_bad_option(&io_aio_read_command, ch);
        }
    }
    if (optind > argc - 2) {
        free(req);
        return io_usage(&io_aio_read_command);
    }
    if (!io_parse_number(argv[optind], "offset", &req->offset)) {
        free(req);
        return 1;
    }
    status = aio_prepare(req, argv, argv + optind + 1, argc - optind - 1,
                         0xab);
    if (status >= 0)
        return status;
    aio_submit(req, false);
    return 0;
}

const struct io_command io_aio_read_command = {
    .name = "aio_read",
    .run = io_aio_read,
    .argmin = 2,
    .argmax = -1,
    .args = "[-Ciqv] [-P pattern] off len [len..]",
    .oneline = "asynchronously reads a number of bytes",
    .help =
        "\n"
        " asynchronously reads a range of bytes from the given offset\n"
        "\n"
        " Example:\n"
        " 'aio_read -v 512 1k 1k ' - dumps 2 kilobytes read from 512 bytes "
        "into the file\n"
        "\n"
        " Reads a segment of the currently open file, optionally dumping it "
        "to the\n"
        " standard output stream (with -v option) for subsequent "
        "inspection.\n"
        " The read is performed asynchronously and the aio_flush command "
        "must be\n"
        " used to ensure all outstanding aio requests have been completed.\n"
        " Note that due to its asynchronous nature, this command will be\n"
        " considered successful once the request is submitted, "
        "independently\n"
        " of potential I/O errors or pattern mismatches.\n"
        " -C, -- report statistics in a machine parsable format\n"
        " -P, -- use a pattern to verify read data\n"
        " -i, -- treat request as invalid, for exercising stats\n"
        " -v, -- dump buffer to standard output\n"
        " -q, -- quiet mode, do not show I/O statistics\n"
        "\n",
};

/* ---- aio_write ----------------------------------------------------------- */

struct aio_write_flags {
    bool zeroes, unmap;
    int pattern;
};

static int parse_aio_write(struct aio_request *req, int argc, char **argv,
                           struct aio_write_flags *f)
{
    int ch;

    while ((ch = getopt(argc, argv, ":CfiqP:uz")) != -1) {
        switch (ch) {
        case 'C': req->machine = true; break;
        case 'f': req->fua = true; break;
        case 'q': req->quiet = true; break;
        case 'u': f->unmap = true; break;
        case 'P':
            if (!io_parse_pattern(optarg, &f->pattern))
                return 1;
            break;
        case 'i':
            printf("injecting invalid write request\n");
            return -1;
        case 'z': f->zeroes = true; break;
        default:
            return io_bad_option(&io_aio_write_command, ch);
        }
    }
    if (optind > argc - 2)
        return io_usage(&io_aio_write_command);
    if (f->zeroes && optind != argc - 2) {
        printf("-z supports only a single length parameter\n");
        return 1;
    }
    if (f->unmap && !f->zeroes) {
        printf("-u requires -z to be specified\n");
        return 1;
    }
    /* qemu-io 7.2 lets -P pass with -z (the zeroes win): so does this. */
    if (!io_parse_number(argv[optind], "offset", &req->offset))
        return 1;
    return 0;
}

static int io_aio_write(struct io_session *session, int argc, char **argv)
{
    struct aio_write_flags f = {.pattern = IO_DEFAULT_PATTERN};
    struct aio_request *req = aio_request_new(session);
    int status;

    if (!req)
        return 1;
    req->write = true;
    status = parse_aio_write(req, argc, argv, &f);
    if (status != 0) {
        free(req);
        return status < 0 ? 0 : status;
    }
    if (f.zeroes) {
        if (!io_parse_number(argv[optind + 1], "length", &req->length)) {
            free(req);
            return 1;
        }
        if (!io_range_ok(session, argv[0], "aio_write", req->offset,
                         req->length)) {
            free(req);
            return 0;
        }
        aio_submit(req, true);
        return 0;
    }
    status = aio_prepare(req, argv, argv + optind + 1, argc - optind - 1,
                         f.pattern);
    if (status >= 0)
        return status;
    aio_submit(req, false);
    return 0;
}

const struct io_command io_aio_write_command = {
    .name = "aio_write",
    .run = io_aio_write,
    .argmin = 2,
    .argmax = -1,
    .writes = true,
    .args = "[-Cfiquz] [-P pattern] off len [len..]",
    .oneline = "asynchronously writes a number of bytes",
    .help =
        "\n"
        " asynchronously writes a range of bytes from the given offset "
        "source\n"
        " from multiple buffers\n"
        "\n"
        " Example:\n"
        " 'aio_write 512 1k 1k' - writes 2 kilobytes at 512 bytes into the "
        "open file\n"
        "\n"
        " Writes into a segment of the currently open file, using a buffer\n"
        " filled with a set pattern (0xcdcdcdcd).\n"
        " The write is performed asynchronously and the aio_flush command "
        "must be\n"
        " used to ensure all outstanding aio requests have been completed.\n"
        " Note that due to its asynchronous nature, this command will be\n"
        " considered successful once the request is submitted, "
        "independently\n"
        " of potential I/O errors or pattern mismatches.\n"
        " -P, -- use different pattern to fill file\n"
        " -C, -- report statistics in a machine parsable format\n"
        " -f, -- use Force Unit Access semantics\n"
        " -i, -- treat request as invalid, for exercising stats\n"
        " -q, -- quiet mode, do not show I/O statistics\n"
        " -u, -- with -z, allow unmapping\n"
        " -z, -- write zeroes using blk_aio_pwrite_zeroes\n"
        "\n",
};

/* ---- aio_flush ----------------------------------------------------------- */

static int io_aio_flush(struct io_session *session, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return io_drain(session);
}

const struct io_command io_aio_flush_command = {
    .name = "aio_flush",
    .run = io_aio_flush,
    .argmin = 0,
    .argmax = 0,
    .oneline = "completes all outstanding aio requests",
};
