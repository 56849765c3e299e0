/* SPDX-License-Identifier: MIT */
/* `qed bench`: the same workload as `qemu-img bench` with the same arguments
 * (COUNT requests of SIZE bytes, STEP apart, DEPTH in flight), so the two can
 * be timed side by side. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"

struct bench {
    qed_image *image;
    bool write;
    uint64_t count;        /* requests still to submit */
    uint64_t done;         /* requests completed */
    uint64_t total;
    uint64_t size;
    uint64_t step;
    uint64_t offset;       /* next request's offset */
    uint64_t image_size;
    unsigned depth;
    unsigned in_flight;
    uint64_t flush_interval;
    bool drain_on_flush;
    bool flushing;         /* a draining flush is in flight */
    uint8_t *buffers;      /* depth * size */
    unsigned *free_slots;  /* buffer slots not in use */
    unsigned nfree;
    int failed;            /* first error, negative errno */
    qed_error err;
};

struct bench_request {
    struct bench *b;
    unsigned slot;
    struct iovec iov;
};

static void submit_more(struct bench *b);

static void note_failure(struct bench *b, int ret, const qed_error *err)
{
    if (b->failed)
        return;
    b->failed = ret;
    if (err)
        b->err = *err;
    else
        snprintf(b->err.message, sizeof(b->err.message), "%s", strerror(-ret));
}

static void flush_done(void *opaque, int ret, const qed_error *err)
{
    struct bench *b = opaque;
    if (ret < 0)
        note_failure(b, ret, err);
    if (b->flushing) {
        b->flushing = false;
        submit_more(b);
    }
}

/* Every flush_interval completions, flush; by default the queue drains
 * first, as qemu-img bench does unless --no-drain. */
static void maybe_flush(struct bench *b)
{
    if (!b->flush_interval || b->done % b->flush_interval != 0)
        return;
    if (b->drain_on_flush) {
        b->flushing = true;
        if (b->in_flight == 0 && qed_aio_flush(b->image, flush_done, b) < 0)
            note_failure(b, -EIO, NULL);
        return;
    }
    if (qed_aio_flush(b->image, flush_done, b) < 0)
        note_failure(b, -EIO, NULL);
}

static void request_done(void *opaque, int ret, const qed_error *err)
{
    struct bench_request *r = opaque;
    struct bench *b = r->b;

    b->in_flight--;
    b->done++;
    b->free_slots[b->nfree++] = r->slot;
    free(r);
    if (ret < 0)
        note_failure(b, ret, err);
    maybe_flush(b);
    if (b->flushing && b->in_flight == 0 &&
        qed_aio_flush(b->image, flush_done, b) < 0)
        note_failure(b, -EIO, NULL);
    submit_more(b);
}

static int submit_one(struct bench *b)
{
    struct bench_request *r = calloc(1, sizeof(*r));
    int ret;

    if (!r)
        return -ENOMEM;
    r->b = b;
    r->slot = b->free_slots[--b->nfree];
    r->iov.iov_base = b->buffers + (uint64_t)r->slot * b->size;
    r->iov.iov_len = b->size;
    if (b->write)
        ret = qed_aio_writev(b->image, &r->iov, 1, b->offset, request_done, r);
    else
        ret = qed_aio_readv(b->image, &r->iov, 1, b->offset, request_done, r);
    if (ret < 0) {
        b->free_slots[b->nfree++] = r->slot;
        free(r);
        return ret;
    }
    b->in_flight++;
    b->count--;
    /* Wrap around like qemu-img: the next offset modulo the image size. */
    b->offset = (b->offset + b->step) % b->image_size;
    if (b->offset + b->size > b->image_size)
        b->offset = 0;
    return 0;
}

static void submit_more(struct bench *b)
{
    while (!b->failed && !b->flushing && b->count > 0 &&
           b->in_flight < b->depth) {
        int ret = submit_one(b);
        if (ret < 0) {
            note_failure(b, ret, NULL);
            if (ret == -EINVAL)
                snprintf(b->err.message, sizeof(b->err.message),
                         "request at offset %" PRIu64 " of %" PRIu64
                         " bytes lies outside the image", b->offset, b->size);
        }
    }
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int run_bench(struct bench *b, const char *file, bool quiet)
{
    qed_loop *loop = qed_image_loop(b->image);
    double start, elapsed;

    if (!quiet)
        printf("Sending %" PRIu64 " %s requests, %" PRIu64 " bytes each, %u "
               "in parallel (starting at offset %" PRIu64 ", step size %"
               PRIu64 ")\n",
               b->total, b->write ? "write" : "read", b->size, b->depth,
               b->offset, b->step);
    start = now_seconds();
    submit_more(b);
    while (b->in_flight > 0 || b->flushing ||
           (!b->failed && b->count > 0)) {
        int r = qed_loop_run(loop, -1);
        if (r < 0) {
            note_failure(b, r, NULL);
            break;
        }
        if (b->failed && b->in_flight == 0 && !b->flushing)
            break;
    }
    elapsed = now_seconds() - start;
    if (b->failed) {
        tool_report(file, "request failed", &b->err);
        return 1;
    }
    printf("Run completed in %.3f seconds.\n", elapsed);
    if (!quiet && elapsed > 0)
        printf("%.2f MiB/s, %.0f requests/s\n",
               (double)(b->total * b->size) / elapsed / (1024.0 * 1024.0),
               (double)b->total / elapsed);
    return 0;
}

enum { OPT_FLUSH_INTERVAL = TOOL_OPT_HELP + 1, OPT_NO_DRAIN, OPT_PATTERN };

static bool parse_count(const char *text, const char *what, uint64_t *out,
                        uint64_t max)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-' || v == 0 || v > max) {
        tool_error(NULL, "invalid %s '%s' (a whole number from 1 to %" PRIu64
                   ")", what, text, max);
        return false;
    }
    *out = v;
    return true;
}

static int bench_main(const struct tool_command *cmd, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, TOOL_OPT_HELP },
        { "flush-interval", required_argument, NULL, OPT_FLUSH_INTERVAL },
        { "no-drain", no_argument, NULL, OPT_NO_DRAIN },
        { "pattern", required_argument, NULL, OPT_PATTERN },
        TOOL_FORCE_SHARE_OPTION,
        { NULL, 0, NULL, 0 },
    };
    struct bench b = { .total = 75000, .size = 4096, .depth = 64,
                       .drain_on_flush = true };
    enum qed_format format = QED_FORMAT_PROBE;
    struct qed_open_options opts = { .size = sizeof(opts) };
    uint64_t depth = 64, step = 0;
    int pattern = 0;
    bool quiet = false, force_share = false;
    const char *file;
    int ch, status;

    while ((ch = getopt_long(argc, argv, ":hwc:d:s:S:o:t:f:qP:i:nU", longopts,
                             NULL)) != -1) {
        switch (ch) {
        case 'h':
        case TOOL_OPT_HELP:
            tool_print_help(stdout, cmd);
            return 0;
        case 'w':
            b.write = true;
            break;
        case 'c':
            if (!parse_count(optarg, "request count", &b.total, UINT32_MAX))
                return 1;
            break;
        case 'd':
            if (!parse_count(optarg, "queue depth", &depth, 4096))
                return 1;
            break;
        case 's':
            if (!tool_parse_size(optarg, "buffer size", &b.size))
                return 1;
            if (b.size == 0 || b.size > 1024u * 1024 * 1024) {
                tool_error(NULL, "invalid buffer size '%s' (1 byte to 1 GiB)",
                           optarg);
                return 1;
            }
            break;
        case 'S':
            if (!tool_parse_size(optarg, "step size", &step))
                return 1;
            break;
        case 'o':
            if (!tool_parse_size(optarg, "offset", &b.offset))
                return 1;
            break;
        case 't':
            if (strcmp(optarg, "none") == 0) {
                opts.cache = QED_CACHE_NONE;
            } else if (strcmp(optarg, "writeback") == 0) {
                opts.cache = QED_CACHE_WRITEBACK;
            } else {
                tool_error(NULL, "invalid cache mode '%s' (none or writeback)",
                           optarg);
                return 1;
            }
            break;
        case 'f':
            if (!tool_parse_format(optarg, &format))
                return 1;
            break;
        case 'q':
            quiet = true;
            break;
        case 'P':
        case OPT_PATTERN:
            /* Read as qemu-img bench reads it: 0x5c, 92 and 0134 agree. */
            if (!tool_parse_byte(optarg, &pattern)) {
                tool_error(NULL, "Invalid pattern byte specified: '%s' "
                           "(0 to 255, decimal, octal or hexadecimal)", optarg);
                return 1;
            }
            break;
        case 'i':
            /* qemu-img's AIO back-end choice: libqed picks its own engine
             * (io_uring, or threads); accepted so the same arguments work. */
            break;
        case 'n':
            /* qemu-img's native AIO: the engine is chosen by libqed. */
            break;
        case 'U':
            force_share = true;
            break;
        case OPT_FLUSH_INTERVAL:
            if (!parse_count(optarg, "flush interval", &b.flush_interval,
                             UINT32_MAX))
                return 1;
            break;
        case OPT_NO_DRAIN:
            b.drain_on_flush = false;
            break;
        default:
            return tool_bad_option(cmd, ch, argv);
        }
    }
    if (optind != argc - 1)
        return tool_bad_usage(cmd, "expected one image file name");
    file = argv[optind];
    b.depth = (unsigned)depth;
    b.step = step ? step : b.size;
    b.count = b.total;

    opts.flags = (b.write ? QED_OPEN_RDWR : 0) |
                 (force_share ? QED_OPEN_FORCE_SHARE : 0);
    opts.format = format;
    if (tool_qed_open(file, &opts, &b.image, &b.err) < 0) {
        tool_report(file, NULL, &b.err);
        return 1;
    }
    tool_report_warnings(file, b.image);
    b.image_size = qed_size(b.image);
    if (b.size > b.image_size || b.offset > b.image_size - b.size) {
        tool_error(file, "a %" PRIu64 "-byte request at offset %" PRIu64
                   " does not fit in the image (%" PRIu64 " bytes)",
                   b.size, b.offset, b.image_size);
        tool_close(file, b.image);
        return 1;
    }
    b.buffers = tool_alloc_buffer(b.depth * b.size);
    b.free_slots = calloc(b.depth, sizeof(*b.free_slots));
    if (!b.buffers || !b.free_slots) {
        tool_error(file, "out of memory for %u buffers of %" PRIu64 " bytes",
                   b.depth, b.size);
        free(b.buffers);
        free(b.free_slots);
        tool_close(file, b.image);
        return 1;
    }
    memset(b.buffers, pattern, b.depth * b.size);
    for (unsigned i = 0; i < b.depth; i++)
        b.free_slots[b.nfree++] = i;
    status = run_bench(&b, file, quiet);
    if (!tool_close(file, b.image))
        status = 1;
    free(b.buffers);
    free(b.free_slots);
    return status;
}

const struct tool_command bench_command = {
    .name = "bench",
    .synopsis = "[-w] [-c COUNT] [-d DEPTH] [-s SIZE] [-S STEP] [-o OFFSET] "
                "[-t none|writeback] [-f FMT] [-q] [-U] [-P PATTERN] "
                "[--flush-interval N [--no-drain]] FILE",
    .summary = "Time sequential requests, like qemu-img bench.",
    .details =
        "Options:\n"
        "  -w                  write (default: read)\n"
        "  -c COUNT            number of requests (default 75000)\n"
        "  -d DEPTH            requests in flight (default 64)\n"
        "  -s SIZE             bytes per request (default 4096)\n"
        "  -S STEP             distance between request offsets (default SIZE)\n"
        "  -o OFFSET           offset of the first request (default 0)\n"
        "  -t none|writeback   cache mode; none opens with O_DIRECT\n"
        "  -f FMT              image format (qed or raw; default probed)\n"
        "  -P PATTERN          byte value written (default 0)\n"
        "  -q                  print only the elapsed time\n"
        TOOL_FORCE_SHARE_HELP
        "                      (not with -w)\n"
        "  --flush-interval N  flush after every N requests\n"
        "  --no-drain          do not wait for requests in flight before "
        "a flush\n"
        "Prints the elapsed time and the throughput (MiB/s).\n",
    .run = bench_main,
};
