/* `qed convert`: copy an image's visible content into a new raw or QED image,
 * keeping it sparse. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

/* Data is copied through a buffer of this size; a multiple of every cluster
 * size up to it, and chunks start at multiples of it, so cluster-aligned
 * source data stays cluster-aligned in the target. */
#define CONVERT_CHUNK (2u * 1024 * 1024)
/* Zero detection in raw targets works at file-system block granularity. */
#define RAW_ZERO_GRANULARITY 4096u

struct convert_args {
    const char *source_path;
    const char *target_path;
    enum qed_format source_format;
    enum qed_format target_format;
    bool progress;
    bool quiet;
    bool options_given;
    struct tool_create_settings settings;
};

struct convert_target {
    const char *path;
    enum qed_format format;
    /* raw */
    int fd;
    bool must_write_zeroes;  /* not a fresh regular file: no holes to rely on */
    void *zero_buffer;
    /* qed */
    qed_image *image;
    bool has_backing;        /* ranges from the source's chain are left out */
    /* Zero runs shorter than this are written as data anyway. */
    size_t zero_granularity;
};

struct conversion {
    const char *source_path;
    qed_image *source;
    uint64_t size;
    struct convert_target target;
    unsigned char *buffer;
    struct tool_progress progress;
};

/* ---- target: raw --------------------------------------------------------- */

static bool same_file(const char *a, const char *b)
{
    struct stat sa, sb;

    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* A regular file is cut to the virtual size so every range never written is
 * a hole; devices keep their old content, so zeroes must be written there. */
static bool open_raw_target(struct convert_target *t, uint64_t size)
{
    struct stat st;

    t->fd = open(t->path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (t->fd < 0) {
        tool_error(t->path, "cannot open: %s", strerror(errno));
        return false;
    }
    if (fstat(t->fd, &st) < 0) {
        tool_error(t->path, "cannot stat: %s", strerror(errno));
        return false;
    }
    t->zero_granularity = RAW_ZERO_GRANULARITY;
    if (!S_ISREG(st.st_mode)) {
        t->must_write_zeroes = true;
        return true;
    }
    if (size > INT64_MAX)
        errno = EFBIG;
    if (size > INT64_MAX || ftruncate(t->fd, 0) < 0 ||
        ftruncate(t->fd, (off_t)size) < 0) {
        tool_error(t->path, "cannot set the size to %" PRIu64 " bytes: %s",
                   size, strerror(errno));
        return false;
    }
    return true;
}

static bool raw_write(struct convert_target *t, const void *buf, size_t len,
                      uint64_t offset)
{
    const unsigned char *p = buf;

    while (len > 0) {
        ssize_t n = pwrite(t->fd, p, len, (off_t)offset);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            tool_error(t->path, "write failed at offset %" PRIu64 ": %s",
                       offset, n < 0 ? strerror(errno) : "no space written");
            return false;
        }
        p += n;
        len -= (size_t)n;
        offset += (uint64_t)n;
    }
    return true;
}

static bool raw_write_zeroes(struct convert_target *t, uint64_t offset,
                             uint64_t length)
{
    if (!t->zero_buffer) {
        t->zero_buffer = calloc(1, CONVERT_CHUNK);
        if (!t->zero_buffer) {
            tool_error(t->path, "out of memory");
            return false;
        }
    }
    while (length > 0) {
        size_t n = length < CONVERT_CHUNK ? (size_t)length : CONVERT_CHUNK;

        if (!raw_write(t, t->zero_buffer, n, offset))
            return false;
        offset += n;
        length -= n;
    }
    return true;
}

/* fsync is refused by some character devices (/dev/null); nothing is lost
 * there. */
static bool close_raw_target(struct convert_target *t, bool ok)
{
    if (t->fd < 0)
        return ok;
    if (ok && fsync(t->fd) < 0 &&
        !(t->must_write_zeroes && (errno == EINVAL || errno == EROFS))) {
        tool_error(t->path, "flush failed: %s", strerror(errno));
        ok = false;
    }
    if (close(t->fd) < 0 && ok) {
        tool_error(t->path, "close failed: %s", strerror(errno));
        ok = false;
    }
    t->fd = -1;
    free(t->zero_buffer);
    t->zero_buffer = NULL;
    return ok;
}

/* ---- target: qed --------------------------------------------------------- */

static bool open_qed_target(struct convert_target *t,
                            struct tool_create_settings *settings,
                            uint64_t size)
{
    struct qed_create_options *o = &settings->options;
    qed_error err = {0};

    /* QED sizes are whole sectors; the tail past the source reads as zero. */
    o->size = (size + 511) & ~(uint64_t)511;
    if (o->size < size) {
        tool_error(t->path, "size %" PRIu64 " is too large", size);
        return false;
    }
    if (qed_create(t->path, o, &err) < 0) {
        tool_report(t->path, NULL, &err);
        return false;
    }
    if (!tool_open(t->path, QED_FORMAT_QED, QED_OPEN_RDWR, &t->image))
        return false;
    t->has_backing = o->backing_file && o->backing_file[0];
    t->zero_granularity =
        o->cluster_size ? o->cluster_size : QED_DEFAULT_CLUSTER_SIZE;
    return true;
}

static bool qed_target_write(struct convert_target *t, const void *buf,
                             size_t len, uint64_t offset)
{
    qed_error err = {0};
    char context[64];

    if (qed_pwrite(t->image, buf, len, offset, &err) == 0)
        return true;
    snprintf(context, sizeof(context), "write failed at offset %" PRIu64,
             offset);
    tool_report(t->path, context, &err);
    return false;
}

static bool qed_target_write_zeroes(struct convert_target *t, uint64_t offset,
                                    uint64_t length)
{
    qed_error err = {0};
    char context[64];

    if (qed_write_zeroes(t->image, offset, length, QED_ZERO_MAY_UNMAP,
                         &err) == 0)
        return true;
    snprintf(context, sizeof(context), "writing zeroes at offset %" PRIu64,
             offset);
    tool_report(t->path, context, &err);
    return false;
}

/* ---- target: either ------------------------------------------------------ */

static bool target_write(struct convert_target *t, const void *buf,
                         size_t len, uint64_t offset)
{
    if (t->format == QED_FORMAT_QED)
        return qed_target_write(t, buf, len, offset);
    return raw_write(t, buf, len, offset);
}

/* Makes a range read as zeroes; a fresh target already does, unless it is a
 * device or its backing file may show through. */
static bool target_zero(struct convert_target *t, uint64_t offset,
                        uint64_t length)
{
    if (t->format == QED_FORMAT_QED)
        return !t->has_backing || qed_target_write_zeroes(t, offset, length);
    return !t->must_write_zeroes || raw_write_zeroes(t, offset, length);
}

static bool close_target(struct convert_target *t, bool ok)
{
    if (t->format == QED_FORMAT_RAW)
        return close_raw_target(t, ok);
    if (t->image && !tool_close(t->path, t->image))
        ok = false;
    t->image = NULL;
    return ok;
}

/* ---- copying ------------------------------------------------------------- */

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* Bytes from offset to the next multiple of align, at most limit. */
static uint64_t to_boundary(uint64_t offset, uint64_t align, uint64_t limit)
{
    return min_u64(align - offset % align, limit);
}

/* Writes a buffer of source data, leaving out runs of zero blocks. */
static bool write_sparse(struct conversion *c, const unsigned char *buf,
                         size_t len, uint64_t offset)
{
    size_t granularity = c->target.zero_granularity;
    size_t pos = 0;

    while (pos < len) {
        size_t block = to_boundary(offset + pos, granularity, len - pos);
        bool zero = tool_buffer_is_zero(buf + pos, block);
        size_t run = block;

        while (pos + run < len) {
            size_t next = to_boundary(offset + pos + run, granularity,
                                      len - pos - run);
            if (tool_buffer_is_zero(buf + pos + run, next) != zero)
                break;
            run += next;
        }
        if (zero ? !target_zero(&c->target, offset + pos, run)
                 : !target_write(&c->target, buf + pos, run, offset + pos))
            return false;
        pos += run;
    }
    return true;
}

static bool copy_data(struct conversion *c, uint64_t offset, uint64_t length)
{
    uint64_t end = offset + length;

    while (offset < end) {
        size_t n = to_boundary(offset, CONVERT_CHUNK, end - offset);
        qed_error err = {0};

        if (qed_pread(c->source, c->buffer, n, offset, &err) < 0) {
            char context[64];
            snprintf(context, sizeof(context), "read failed at offset %" PRIu64,
                     offset);
            tool_report(c->source_path, context, &err);
            return false;
        }
        if (!write_sparse(c, c->buffer, n, offset))
            return false;
        offset += n;
        tool_progress_update(&c->progress, offset, c->size);
    }
    return true;
}

static bool source_status(struct conversion *c, uint64_t offset,
                          struct qed_block_status *status)
{
    qed_error err = {0};

    if (qed_block_status(c->source, offset, c->size - offset, status,
                         &err) < 0) {
        char context[64];
        snprintf(context, sizeof(context), "block status at offset %" PRIu64,
                 offset);
        tool_report(c->source_path, context, &err);
        return false;
    }
    /* Guards the loop against an answer that would never advance. */
    if (status->length == 0 || status->length > c->size - offset) {
        tool_error(c->source_path,
                   "block status at offset %" PRIu64
                   " returned an invalid length %" PRIu64,
                   offset, status->length);
        return false;
    }
    return true;
}

static bool copy_range(struct conversion *c, uint64_t offset,
                       const struct qed_block_status *status)
{
    /* With a backing file in the target, what the source gets from its own
     * backing chain is expected to come from the target's. */
    if (c->target.has_backing && (status->depth > 0 || !status->present))
        return true;
    if (status->zero || !status->present)
        return target_zero(&c->target, offset, status->length);
    return copy_data(c, offset, status->length);
}

static bool copy_image(struct conversion *c)
{
    for (uint64_t offset = 0; offset < c->size;) {
        struct qed_block_status status = {0};

        if (!source_status(c, offset, &status) ||
            !copy_range(c, offset, &status))
            return false;
        offset += status.length;
        tool_progress_update(&c->progress, offset, c->size);
    }
    return true;
}

/* ---- command ------------------------------------------------------------- */

static bool open_target(struct conversion *c, struct convert_args *args)
{
    c->target.path = args->target_path;
    c->target.format = args->target_format;
    if (same_file(args->source_path, args->target_path)) {
        tool_error(args->target_path, "is the same file as the source");
        return false;
    }
    if (args->target_format == QED_FORMAT_QED)
        return open_qed_target(&c->target, &args->settings, c->size);
    return open_raw_target(&c->target, c->size);
}

static int convert(struct convert_args *args)
{
    struct conversion c = {
        .source_path = args->source_path,
        .target = {.fd = -1},
    };
    bool ok;

    if (!tool_open(args->source_path, args->source_format, 0, &c.source))
        return 1;
    c.size = qed_size(c.source);
    c.buffer = tool_alloc_buffer(CONVERT_CHUNK);
    ok = c.buffer != NULL;
    if (!ok)
        tool_error(args->source_path, "out of memory");
    ok = ok && open_target(&c, args);
    if (ok) {
        tool_progress_start(&c.progress, args->progress && !args->quiet);
        ok = copy_image(&c);
        tool_progress_finish(&c.progress);
    }
    ok = close_target(&c.target, ok) && ok;
    ok = tool_close(args->source_path, c.source) && ok;
    free(c.buffer);
    return ok ? 0 : 1;
}

/* Output options make sense only for QED targets. */
static bool check_target_options(const struct convert_args *args)
{
    if (args->target_format == QED_FORMAT_QED)
        return true;
    if (args->options_given) {
        tool_error(NULL, "convert: -o and -B need a qed output (-O qed)");
        return false;
    }
    return true;
}

static int convert_run(const struct tool_command *cmd, int argc, char **argv)
{
    static const struct option long_options[] = {
        {"help", no_argument, NULL, TOOL_OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    struct convert_args args = {.target_format = QED_FORMAT_RAW};
    int ch;

    while ((ch = getopt_long(argc, argv, ":hpqf:O:o:B:", long_options,
                             NULL)) != -1) {
        switch (ch) {
        case 'h':
        case TOOL_OPT_HELP:
            tool_print_help(stdout, cmd);
            return 0;
        case 'p':
            args.progress = true;
            break;
        case 'q':
            args.quiet = true;
            break;
        case 'f':
            if (!tool_parse_format(optarg, &args.source_format))
                return 1;
            break;
        case 'O':
            if (!tool_parse_format(optarg, &args.target_format))
                return 1;
            break;
        case 'o':
            if (tool_create_options_help_requested(optarg)) {
                tool_print_create_options(stdout);
                return 0;
            }
            if (!tool_parse_create_options(optarg, &args.settings))
                return 1;
            args.options_given = true;
            break;
        case 'B':
            args.settings.options.backing_file = optarg;
            args.options_given = true;
            break;
        default:
            return tool_bad_option(cmd, ch, argv);
        }
    }
    if (argc - optind != 2)
        return tool_bad_usage(cmd, "expected SRC and DST");
    if (!check_target_options(&args))
        return 1;
    args.source_path = argv[optind];
    args.target_path = argv[optind + 1];
    return convert(&args);
}

const struct tool_command convert_command = {
    .name = "convert",
    .synopsis = "[-p] [-q] [-f FMT] [-O raw|qed] [-o OPTIONS] [-B BACKING] "
                "SRC DST",
    .summary = "Copy an image's content into a new raw or QED image.",
    .details =
        "Options:\n"
        "  -p            show progress on stderr (when it is a terminal)\n"
        "  -q            quiet: no progress\n"
        "  -f qed|raw    source format (probed by default)\n"
        "  -O raw|qed    output format (default raw)\n"
        "  -o OPTIONS    qed output: cluster_size=SIZE, table_size=N,\n"
        "                backing_file=NAME, backing_fmt=raw|qed\n"
        "  -B BACKING    qed output: backing file of the new image; what the\n"
        "                source reads from its own backing chain is left to\n"
        "                it\n"
        "\n"
        "The output stays sparse: unallocated and all-zero ranges of the\n"
        "source are not written.\n",
    .run = convert_run,
};
