/* SPDX-License-Identifier: MIT */
/* `qed io` commands that move data and wait for it: read, readv, write,
 * writev, discard, flush. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "io.h"

/* Plain reads and writes go through a buffer of at most this size, so that
 * a command covering a large range needs little memory. */
#define IO_DATA_CHUNK (16u * 1024 * 1024)
/* Zero writes and discards need no buffer, but are still split so no single
 * request is huge; the split points are absolute multiples of this size,
 * which every cluster size divides, so whole clusters stay whole. */
#define IO_RANGE_CHUNK (1ull << 30)
#define IO_SECTOR 512u

static size_t chunk_for(uint64_t length)
{
    return length < IO_DATA_CHUNK ? (size_t)length : IO_DATA_CHUNK;
}

/* Length of the next piece of a zero write or discard starting at offset. */
static uint64_t range_piece(uint64_t offset, uint64_t end)
{
    uint64_t boundary = (offset / IO_RANGE_CHUNK + 1) * IO_RANGE_CHUNK;

    return (boundary < end ? boundary : end) - offset;
}

/* qemu-io's check for the VM state and compressed requests. */
static bool sector_aligned(uint64_t offset, uint64_t count)
{
    if (offset % IO_SECTOR) {
        printf("%" PRIu64 " is not a sector-aligned value for 'offset'\n",
               offset);
        return false;
    }
    if (count % IO_SECTOR) {
        printf("%" PRIu64 " is not a sector-aligned value for 'count'\n",
               count);
        return false;
    }
    return true;
}

static int unsupported(struct io_session *session, const char *failed,
                       const char *why)
{
    qed_error err = {.code = ENOTSUP};

    snprintf(err.message, sizeof(err.message), "%s", why);
    return io_report_failure(session, failed, -ENOTSUP, &err);
}

static bool parse_length(const char *text, uint64_t *length)
{
    if (!io_parse_number(text, "length", length))
        return false;
    if (*length > IO_REQUEST_MAX_BYTES) {
        printf("length cannot exceed %llu, given %s\n", IO_REQUEST_MAX_BYTES,
               text);
        return false;
    }
    return true;
}

/* Where the first byte of buf[0..len) that is not pattern is, or len. */
static size_t first_mismatch(const unsigned char *buf, size_t len, int pattern)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] != pattern)
            return i;
    return len;
}

/* ---- read ---------------------------------------------------------------- */

struct read_plan {
    uint64_t offset, count;
    bool verify;
    int pattern;
    uint64_t check_offset, check_count; /* the part -P checks, absolute */
    uint64_t first_bad;                 /* set when a byte differs */
    bool mismatch;
};

/* Reads the range a chunk at a time, checking the pattern on the way. */
static int read_and_check(struct io_session *session, struct read_plan *plan,
                          qed_error *err)
{
    size_t chunk = chunk_for(plan->count);
    unsigned char *buf = plan->count ? tool_alloc_buffer(chunk) : NULL;
    uint64_t check_end = plan->check_offset + plan->check_count;
    int ret = 0;

    if (plan->count && !buf)
        return -ENOMEM;
    for (uint64_t done = 0; done < plan->count && ret == 0;) {
        size_t n = plan->count - done < chunk ? plan->count - done : chunk;
        uint64_t at = plan->offset + done;

        ret = qed_pread(session->image, buf, n, at, err);
        if (ret == 0 && plan->verify && !plan->mismatch) {
            uint64_t from = at > plan->check_offset ? at : plan->check_offset;
            uint64_t to = at + n < check_end ? at + n : check_end;
            if (from < to) {
                size_t bad = first_mismatch(buf + (from - at),
                                            (size_t)(to - from),
                                            plan->pattern);
                if (bad < to - from) {
                    plan->mismatch = true;
                    plan->first_bad = from + bad;
                }
            }
        }
        done += n;
    }
    free(buf);
    return ret;
}

/* -v: the data again, dumped (after the pattern line, as qemu-io has it). */
static int dump_range(struct io_session *session, uint64_t offset,
                      uint64_t count, qed_error *err)
{
    size_t chunk = chunk_for(count);
    unsigned char *buf = count ? tool_alloc_buffer(chunk) : NULL;
    int ret = 0;

    if (count && !buf)
        return -ENOMEM;
    for (uint64_t done = 0; done < count && ret == 0;) {
        size_t n = count - done < chunk ? count - done : chunk;

        ret = qed_pread(session->image, buf, n, offset + done, err);
        if (ret == 0)
            io_dump_buffer(buf, n, offset + done);
        done += n;
    }
    free(buf);
    return ret;
}

/* qemu-io names the whole checked range; the first bad byte goes to
 * stderr, which is what one needs to look further. */
static void report_mismatch(struct io_session *session, const char *name,
                            uint64_t offset, uint64_t count,
                            uint64_t first_bad)
{
    printf("Pattern verification failed at offset %" PRIu64 ", %" PRIu64
           " bytes\n",
           offset, count);
    tool_error(session->path,
               "%s: pattern mismatch, first bad byte at offset %" PRIu64
               " (0x%" PRIx64 ")",
               name, first_bad, first_bad);
}

struct read_flags {
    bool machine, quiet, verbose, vmstate, start_given, length_given;
};

static int finish_read(struct io_session *session, char **argv,
                       struct read_plan *plan, const struct read_flags *f)
{
    struct timespec start;
    qed_error err = {0};
    double seconds;
    int ret;

    if (f->vmstate) {
        if (!sector_aligned(plan->offset, plan->count))
            return 1;
        return unsupported(session, "read", "the image has no VM state");
    }
    if (!io_range_ok(session, argv[0], "read", plan->offset, plan->count))
        return 1;
    clock_gettime(CLOCK_MONOTONIC, &start);
    ret = read_and_check(session, plan, &err);
    seconds = io_seconds_since(&start);
    if (ret < 0)
        return io_report_failure(session, "read", ret, &err);
    if (plan->mismatch)
        report_mismatch(session, argv[0], plan->check_offset,
                        plan->check_count, plan->first_bad);
    if (f->quiet)
        return plan->mismatch;
    if (f->verbose) {
        ret = dump_range(session, plan->offset, plan->count, &err);
        if (ret < 0)
            return io_report_failure(session, "read", ret, &err);
    }
    io_print_report("read", seconds, plan->offset, plan->count, f->machine);
    return plan->mismatch;
}

static int io_read(struct io_session *session, int argc, char **argv)
{
    struct read_plan plan = {0};
    struct read_flags f = {0};
    uint64_t check_start = 0, check_length = 0;
    int ch;

    while ((ch = getopt(argc, argv, ":bCl:pP:qs:v")) != -1) {
        switch (ch) {
        case 'b':
            f.vmstate = true;
            break;
        case 'C':
            f.machine = true;
            break;
        case 'l':
            f.length_given = true;
            if (!io_parse_number(optarg, "pattern length", &check_length))
                return 1;
            break;
        case 'p':
            break; /* ignored, as in qemu-io */
        case 'P':
            plan.verify = true;
            if (!io_parse_pattern(optarg, &plan.pattern))
                return 1;
            break;
        case 'q':
            f.quiet = true;
            break;
        case 's':
            f.start_given = true;
            if (!io_parse_number(optarg, "pattern offset", &check_start))
                return 1;
            break;
        case 'v':
            f.verbose = true;
            break;
        default:
            return io_bad_option(&io_read_command, ch);
        }
    }
    if (optind != argc - 2)
        return io_usage(&io_read_command);
    if (!io_parse_number(argv[optind], "offset", &plan.offset) ||
        !parse_length(argv[optind + 1], &plan.count))
        return 1;
    if (!plan.verify && (f.start_given || f.length_given))
        return io_usage(&io_read_command);
    if (check_start > plan.count ||
        (f.length_given && check_length > plan.count - check_start)) {
        printf("pattern verification range exceeds end of read data\n");
        return 1;
    }
    if (!f.length_given)
        check_length = plan.count - check_start;
    plan.check_offset = plan.offset + check_start;
    plan.check_count = check_length;
    return finish_read(session, argv, &plan, &f);
}

const struct io_command io_read_command = {
    .name = "read",
    .altname = "r",
    .run = io_read,
    .argmin = 2,
    .argmax = -1,
    .args = "[-abCqv] [-P pattern [-s off] [-l len]] off len",
    .oneline = "reads a number of bytes at a specified offset",
    .help =
        "\n"
        " reads a range of bytes from the given offset\n"
        "\n"
        " Example:\n"
        " 'read -v 512 1k' - dumps 1 kilobyte read from 512 bytes into the "
        "file\n"
        "\n"
        " Reads a segment of the currently open file, optionally dumping it "
        "to the\n"
        " standard output stream (with -v option) for subsequent "
        "inspection.\n"
        " -b, -- read from the VM state rather than the virtual disk\n"
        " -C, -- report statistics in a machine parsable format\n"
        " -l, -- length for pattern verification (only with -P)\n"
        " -p, -- ignored for backwards compatibility\n"
        " -P, -- use a pattern to verify read data\n"
        " -q, -- quiet mode, do not show I/O statistics\n"
        " -s, -- start offset for pattern verification (only with -P)\n"
        " -v, -- dump buffer to standard output\n"
        "\n",
};

/* ---- vectors (readv, writev, aio_read, aio_write) ------------------------ */

bool io_vector_new(struct io_vector *vec, char **lengths, int count,
                   int fill)
{
    uint64_t total = 0;

    memset(vec, 0, sizeof(*vec));
    vec->iov = calloc((size_t)count, sizeof(*vec->iov));
    if (!vec->iov) {
        tool_error(NULL, "out of memory");
        return false;
    }
    vec->count = count;
    for (int i = 0; i < count; i++) {
        uint64_t len;

        if (!io_parse_number(lengths[i], "length", &len))
            goto fail;
        if (len > IO_REQUEST_MAX_BYTES) {
            printf("Argument '%s' exceeds maximum size %llu\n", lengths[i],
                   IO_REQUEST_MAX_BYTES);
            goto fail;
        }
        if (total > IO_REQUEST_MAX_BYTES - len) {
            printf("The total number of bytes exceed the maximum size "
                   "%llu\n",
                   IO_REQUEST_MAX_BYTES);
            goto fail;
        }
        vec->iov[i].iov_len = (size_t)len;
        total += len;
    }
    vec->total = total;
    vec->fill = fill;
    return true;
fail:
    io_vector_free(vec);
    return false;
}

bool io_vector_alloc(struct io_vector *vec)
{
    unsigned char *p;

    vec->buf = tool_alloc_buffer(vec->total ? (size_t)vec->total : 1);
    if (!vec->buf) {
        tool_error(NULL, "out of memory for %" PRIu64 " bytes", vec->total);
        return false;
    }
    memset(vec->buf, vec->fill, (size_t)vec->total);
    p = vec->buf;
    for (int i = 0; i < vec->count; i++) {
        vec->iov[i].iov_base = p;
        p += vec->iov[i].iov_len;
    }
    return true;
}

void io_vector_free(struct io_vector *vec)
{
    free(vec->buf);
    free(vec->iov);
    memset(vec, 0, sizeof(*vec));
}

struct io_wait {
    bool done;
    int ret;
    qed_error err;
};

static void wait_done(void *opaque, int ret, const qed_error *err)
{
    struct io_wait *wait = opaque;

    wait->ret = ret;
    if (err)
        wait->err = *err;
    wait->done = true;
}

/* Submits the vector as one request and runs the loop until it is done. */
static int vector_io(struct io_session *session, struct io_vector *vec,
                     uint64_t offset, bool write, qed_error *err)
{
    struct io_wait wait = {0};
    int ret;

    if (vec->total == 0)
        return 0;
    ret = write ? qed_aio_writev(session->image, vec->iov, vec->count,
                                 offset, wait_done, &wait)
                : qed_aio_readv(session->image, vec->iov, vec->count, offset,
                                wait_done, &wait);
    if (ret < 0)
        return ret;
    ret = io_wait_until(session, &wait.done);
    if (ret < 0)
        return ret;
    *err = wait.err;
    return wait.ret;
}

static int qedi_io_readv(struct io_session *session, int argc, char **argv)
{
    bool machine = false, quiet = false, verbose = false, verify = false;
    int pattern = 0, ch, ret, status = 0;
    struct io_vector vec;
    struct timespec start;
    qed_error err = {0};
    uint64_t offset;
    double seconds;

    while ((ch = getopt(argc, argv, ":CP:qv")) != -1) {
        switch (ch) {
        case 'C':
            machine = true;
            break;
        case 'P':
            verify = true;
            if (!io_parse_pattern(optarg, &pattern))
                return 1;
            break;
        case 'q':
            quiet = true;
            break;
        case 'v':
            verbose = true;
            break;
        default:
            return io_bad_option(&io_readv_command, ch);
        }
    }
    if (optind > argc - 2)
        return io_usage(&io_readv_command);
    if (!io_parse_number(argv[optind], "offset", &offset) ||
        !io_vector_new(&vec, argv + optind + 1, argc - optind - 1, 0xab))
        return 1;
    if (!io_range_ok(session, argv[0], "readv", offset, vec.total) ||
        !io_vector_alloc(&vec)) {
        io_vector_free(&vec);
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &start);
    ret = vector_io(session, &vec, offset, false, &err);
    seconds = io_seconds_since(&start);
    if (ret < 0) {
        status = io_report_failure(session, "readv", ret, &err);
    } else {
        size_t bad = first_mismatch(vec.buf, (size_t)vec.total, pattern);
        if (verify && bad < vec.total) {
            report_mismatch(session, argv[0], offset, vec.total,
                            offset + bad);
            status = 1;
        }
        if (!quiet) {
            if (verbose)
                io_dump_buffer(vec.buf, (size_t)vec.total, offset);
            io_print_report("read", seconds, offset, vec.total, machine);
        }
    }
    io_vector_free(&vec);
    return status;
}

const struct io_command io_readv_command = {
    .name = "readv",
    .run = qedi_io_readv,
    .argmin = 2,
    .argmax = -1,
    .args = "[-Cqv] [-P pattern] off len [len..]",
    .oneline = "reads a number of bytes at a specified offset",
    .help =
        "\n"
        " reads a range of bytes from the given offset into multiple "
        "buffers\n"
        "\n"
        " Example:\n"
        " 'readv -v 512 1k 1k ' - dumps 2 kilobytes read from 512 bytes "
        "into the file\n"
        "\n"
        " Reads a segment of the currently open file, optionally dumping it "
        "to the\n"
        " standard output stream (with -v option) for subsequent "
        "inspection.\n"
        " Uses multiple iovec buffers if more than one byte range is "
        "specified.\n"
        " -C, -- report statistics in a machine parsable format\n"
        " -P, -- use a pattern to verify read data\n"
        " -v, -- dump buffer to standard output\n"
        " -q, -- quiet mode, do not show I/O statistics\n"
        "\n",
};

/* ---- write --------------------------------------------------------------- */

struct write_plan {
    uint64_t offset, count;
    int pattern;
    bool zeroes, no_fallback, fua;
    const char *source; /* -s: the file whose bytes fill the buffer */
};

/* -s: the buffer holds the file's bytes, repeated to fill it (len > 0). */
static unsigned char *load_source(const char *file, size_t len)
{
    FILE *f = fopen(file, "r");
    unsigned char *buf;
    size_t got;
    bool failed;

    if (!f) {
        tool_error(NULL, "%s: %s", file, strerror(errno));
        return NULL;
    }
    buf = tool_alloc_buffer(len);
    if (!buf) {
        tool_error(file, "out of memory");
        fclose(f);
        return NULL;
    }
    got = fread(buf, 1, len, f);
    failed = ferror(f);
    if (failed)
        tool_error(NULL, "%s: %s", file, strerror(errno));
    else if (got == 0)
        tool_error(NULL, "%s: file is empty", file);
    fclose(f);
    if (failed || got == 0) {
        free(buf);
        return NULL;
    }
    for (size_t p = got; p < len; p += got)
        memcpy(buf + p, buf, len - p < got ? len - p : got);
    return buf;
}

static int write_buffer(struct io_session *session, const unsigned char *buf,
                        const struct write_plan *plan, size_t chunk,
                        bool repeat, qed_error *err)
{
    for (uint64_t done = 0; done < plan->count;) {
        size_t n = plan->count - done < chunk ? plan->count - done : chunk;
        int ret = qed_pwrite(session->image, repeat ? buf : buf + done, n,
                             plan->offset + done, err);
        if (ret < 0)
            return ret;
        done += n;
    }
    return 0;
}

static int write_data(struct io_session *session,
                      const struct write_plan *plan, qed_error *err)
{
    unsigned char *buf;
    size_t chunk;
    int ret;

    if (plan->count == 0)
        return 0;
    if (plan->source) {
        buf = load_source(plan->source, (size_t)plan->count);
        if (!buf)
            return 1; /* reported; not a write failure */
        ret = write_buffer(session, buf, plan, (size_t)plan->count, false,
                           err);
    } else {
        chunk = chunk_for(plan->count);
        buf = tool_alloc_buffer(chunk);
        if (!buf)
            return -ENOMEM;
        memset(buf, plan->pattern, chunk);
        ret = write_buffer(session, buf, plan, chunk, true, err);
    }
    free(buf);
    return ret;
}

static int write_zeroes(struct io_session *session,
                        const struct write_plan *plan, qed_error *err)
{
    uint64_t end = plan->offset + plan->count;
    unsigned flags = QED_ZERO_MAY_UNMAP;

    if (plan->no_fallback)
        flags |= QED_ZERO_NO_FALLBACK;
    for (uint64_t at = plan->offset; at < end;) {
        uint64_t n = range_piece(at, end);
        int ret = qed_write_zeroes(session->image, at, n, flags, err);
        if (ret < 0)
            return ret;
        at += n;
    }
    return 0;
}

/* -f (FUA): the data is durable when the command reports it written. */
static int write_and_maybe_flush(struct io_session *session,
                                 const struct write_plan *plan,
                                 qed_error *err)
{
    int ret = plan->zeroes ? write_zeroes(session, plan, err)
                           : write_data(session, plan, err);

    if (ret == 0 && plan->fua)
        ret = qed_flush(session->image, err);
    return ret;
}

struct write_flags {
    bool machine, quiet, vmstate, compressed, unmap, pattern_given;
};

/* qemu-io's checks of the option combinations, in its order. */
static bool write_options_ok(const struct write_plan *plan,
                             const struct write_flags *f)
{
    if (f->vmstate && plan->zeroes) {
        printf("-b and -z cannot be specified at the same time\n");
        return false;
    }
    if (plan->fua && (f->vmstate || f->compressed)) {
        printf("-f and -b or -c cannot be specified at the same time\n");
        return false;
    }
    if (plan->no_fallback && !plan->zeroes) {
        printf("-n requires -z to be specified\n");
        return false;
    }
    if (f->unmap && !plan->zeroes) {
        printf("-u requires -z to be specified\n");
        return false;
    }
    if ((int)plan->zeroes + (int)f->pattern_given + (plan->source != NULL) >
        1) {
        printf("Only one of -z, -P, and -s can be specified at the same "
               "time\n");
        return false;
    }
    return true;
}

static int finish_write(struct io_session *session, char **argv,
                        const struct write_plan *plan,
                        const struct write_flags *f)
{
    struct timespec start;
    qed_error err = {0};
    double seconds;
    int ret;

    if ((f->vmstate || f->compressed) &&
        !sector_aligned(plan->offset, plan->count))
        return 1;
    if (f->vmstate)
        return unsupported(session, "write", "the image has no VM state");
    if (f->compressed)
        return unsupported(session, "write",
                           "compressed writes are not supported");
    if (!io_range_ok(session, argv[0], "write", plan->offset, plan->count))
        return 1;
    /* qemu's QED driver has no zero write without fallback. */
    if (plan->no_fallback && qed_format_of(session->image) == QED_FORMAT_QED)
        return unsupported(session, "write",
                           "zero writes without fallback (-n) are not "
                           "supported on QED images");
    clock_gettime(CLOCK_MONOTONIC, &start);
    ret = write_and_maybe_flush(session, plan, &err);
    seconds = io_seconds_since(&start);
    if (ret > 0)
        return 1;
    if (ret < 0)
        return io_report_failure(session, "write", ret, &err);
    if (!f->quiet)
        io_print_report("wrote", seconds, plan->offset, plan->count,
                        f->machine);
    return 0;
}

static int io_write(struct io_session *session, int argc, char **argv)
{
    struct write_plan plan = {.pattern = IO_DEFAULT_PATTERN};
    struct write_flags f = {0};
    int ch;

    while ((ch = getopt(argc, argv, ":bcCfnpP:qs:uz")) != -1) {
        switch (ch) {
        case 'b': f.vmstate = true; break;
        case 'c': f.compressed = true; break;
        case 'C': f.machine = true; break;
        case 'f': plan.fua = true; break;
        case 'n': plan.no_fallback = true; break;
        case 'p': break; /* ignored, as in qemu-io */
        case 'P':
            f.pattern_given = true;
            if (!io_parse_pattern(optarg, &plan.pattern))
                return 1;
            break;
        case 'q': f.quiet = true; break;
        case 's': plan.source = optarg; break;
        case 'u': f.unmap = true; break;
        case 'z': plan.zeroes = true; break;
        default:
            return io_bad_option(&io_write_command, ch);
        }
    }
    if (optind != argc - 2)
        return io_usage(&io_write_command);
    if (!write_options_ok(&plan, &f) ||
        !io_parse_number(argv[optind], "offset", &plan.offset) ||
        !io_parse_number(argv[optind + 1], "length", &plan.count))
        return 1;
    if (plan.count > IO_REQUEST_MAX_BYTES && !plan.no_fallback) {
        printf("length cannot exceed %llu without -n, given %s\n",
               IO_REQUEST_MAX_BYTES, argv[optind + 1]);
        return 1;
    }
    return finish_write(session, argv, &plan, &f);
}

const struct io_command io_write_command = {
    .name = "write",
    .altname = "w",
    .run = io_write,
    .argmin = 2,
    .argmax = -1,
    .writes = true,
    .args = "[-bcCfnquz] [-P pattern | -s source_file] off len",
    .oneline = "writes a number of bytes at a specified offset",
    .help =
        "\n"
        " writes a range of bytes from the given offset\n"
        "\n"
        " Example:\n"
        " 'write 512 1k' - writes 1 kilobyte at 512 bytes into the open "
        "file\n"
        "\n"
        " Writes into a segment of the currently open file, using a buffer\n"
        " filled with a set pattern (0xcdcdcdcd).\n"
        " -b, -- write to the VM state rather than the virtual disk\n"
        " -c, -- write compressed data with blk_write_compressed\n"
        " -f, -- use Force Unit Access semantics\n"
        " -n, -- with -z, don't allow slow fallback\n"
        " -p, -- ignored for backwards compatibility\n"
        " -P, -- use different pattern to fill file\n"
        " -s, -- use a pattern file to fill the write buffer\n"
        " -C, -- report statistics in a machine parsable format\n"
        " -q, -- quiet mode, do not show I/O statistics\n"
        " -u, -- with -z, allow unmapping\n"
        " -z, -- write zeroes using blk_co_pwrite_zeroes\n"
        "\n",
};

static int qedi_io_writev(struct io_session *session, int argc, char **argv)
{
    bool machine = false, quiet = false, fua = false;
    int pattern = IO_DEFAULT_PATTERN, ch, ret, status = 0;
    struct io_vector vec;
    struct timespec start;
    qed_error err = {0};
    uint64_t offset;
    double seconds;

    while ((ch = getopt(argc, argv, ":CfqP:")) != -1) {
        switch (ch) {
        case 'C': machine = true; break;
        case 'f': fua = true; break;
        case 'q': quiet = true; break;
        case 'P':
            if (!io_parse_pattern(optarg, &pattern))
                return 1;
            break;
        default:
            return io_bad_option(&io_writev_command, ch);
        }
    }
    if (optind > argc - 2)
        return io_usage(&io_writev_command);
    if (!io_parse_number(argv[optind], "offset", &offset) ||
        !io_vector_new(&vec, argv + optind + 1, argc - optind - 1, pattern))
        return 1;
    if (!io_range_ok(session, argv[0], "writev", offset, vec.total) ||
        !io_vector_alloc(&vec)) {
        io_vector_free(&vec);
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &start);
    ret = vector_io(session, &vec, offset, true, &err);
    if (ret == 0 && fua)
        ret = qed_flush(session->image, &err);
    seconds = io_seconds_since(&start);
    if (ret < 0)
        status = io_report_failure(session, "writev", ret, &err);
    else if (!quiet)
        io_print_report("wrote", seconds, offset, vec.total, machine);
    io_vector_free(&vec);
    return status;
}

const struct io_command io_writev_command = {
    .name = "writev",
    .run = qedi_io_writev,
    .argmin = 2,
    .argmax = -1,
    .writes = true,
    .args = "[-Cfq] [-P pattern] off len [len..]",
    .oneline = "writes a number of bytes at a specified offset",
    .help =
        "\n"
        " writes a range of bytes from the given offset source from "
        "multiple buffers\n"
        "\n"
        " Example:\n"
        " 'writev 512 1k 1k' - writes 2 kilobytes at 512 bytes into the "
        "open file\n"
        "\n"
        " Writes into a segment of the currently open file, using a buffer\n"
        " filled with a set pattern (0xcdcdcdcd).\n"
        " -P, -- use different pattern to fill file\n"
        " -C, -- report statistics in a machine parsable format\n"
        " -f, -- use Force Unit Access semantics\n"
        " -q, -- quiet mode, do not show I/O statistics\n"
        "\n",
};

/* ---- discard and flush --------------------------------------------------- */

static int io_discard(struct io_session *session, int argc, char **argv)
{
    bool machine = false, quiet = false;
    uint64_t offset, length, end;
    struct timespec start;
    qed_error err = {0};
    int ch;

    while ((ch = getopt(argc, argv, ":Cq")) != -1) {
        switch (ch) {
        case 'C': machine = true; break;
        case 'q': quiet = true; break;
        default:
            return io_bad_option(&io_discard_command, ch);
        }
    }
    if (optind != argc - 2)
        return io_usage(&io_discard_command);
    if (!io_parse_number(argv[optind], "offset", &offset) ||
        !parse_length(argv[optind + 1], &length))
        return 1;
    if (!io_range_ok(session, argv[0], "discard", offset, length))
        return 1;
    clock_gettime(CLOCK_MONOTONIC, &start);
    end = offset + length;
    for (uint64_t at = offset; at < end;) {
        uint64_t n = range_piece(at, end);
        int ret = qed_discard(session->image, at, n, &err);
        if (ret < 0)
            return io_report_failure(session, "discard", ret, &err);
        at += n;
    }
    if (!quiet)
        io_print_report("discard", io_seconds_since(&start), offset, length,
                        machine);
    return 0;
}

const struct io_command io_discard_command = {
    .name = "discard",
    .altname = "d",
    .run = io_discard,
    .argmin = 2,
    .argmax = -1,
    .writes = true,
    .args = "[-Cq] off len",
    .oneline = "discards a number of bytes at a specified offset",
    .help =
        "\n"
        " discards a range of bytes from the given offset\n"
        "\n"
        " Example:\n"
        " 'discard 512 1k' - discards 1 kilobyte from 512 bytes into the "
        "file\n"
        "\n"
        " Discards a segment of the currently open file.\n"
        " -C, -- report statistics in a machine parsable format\n"
        " -q, -- quiet mode, do not show I/O statistics\n"
        "\n",
};

/* qemu-io prints nothing for a failed flush; stderr still says why. */
static int io_flush(struct io_session *session, int argc, char **argv)
{
    qed_error err = {0};

    (void)argc;
    (void)argv;
    if (qed_flush(session->image, &err) < 0) {
        tool_report(session->path, "flush failed", &err);
        return 1;
    }
    return 0;
}

const struct io_command io_flush_command = {
    .name = "flush",
    .altname = "f",
    .run = io_flush,
    .argmin = 0,
    .argmax = 0,
    .oneline = "flush all in-core file state to disk",
};
