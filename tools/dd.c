/* SPDX-License-Identifier: MIT */
/* `qed dd`: copy part of an image into a new one, as qemu-img dd does:
 * dd(1)-style operands (bs=, count=, skip=, if=, of=), the output created
 * (raw unless -O says otherwise) with the size of what is copied, and the
 * same quirks: count counts blocks from the start of the input, not from
 * the skipped part, and a skip past the end makes an empty output with a
 * warning. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

#define DD_DEFAULT_BS 512
/* Bytes read and written at a time: the copy does not depend on it (the
 * output is written front to back either way, as qemu-img writes it). */
#define DD_CHUNK (1u << 20)

struct dd_args {
    enum qed_format in_format;
    enum qed_format out_format;
    uint64_t bs;
    uint64_t count;
    uint64_t skip;
    bool count_given;
    bool skip_given;
    bool force_share;
    const char *in;
    const char *out;
};

/* ---- operands ------------------------------------------------------------ */

/* A size operand in [min, max]; qemu-img's words when it is not. */
static bool parse_operand_size(const char *name, const char *text,
                               uint64_t min, uint64_t max, uint64_t *out)
{
    qed_error err = {0};

    if (qed_parse_size(text, out, &err) < 0) {
        tool_error(NULL, "Invalid %s specified: %s", name, err.message);
        return false;
    }
    if (*out < min || *out > max) {
        tool_error(NULL, "Invalid %s specified. Must be between %" PRIu64
                   " and %" PRIu64 ".", name, min, max);
        return false;
    }
    return true;
}

/* One NAME=VALUE operand; later ones override earlier ones, as in
 * qemu-img. */
static bool parse_operand(const char *arg, struct dd_args *args)
{
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    const char *value = eq ? eq + 1 : NULL;

#define IS(name) (len == strlen(name) && strncmp(arg, name, len) == 0)
    if (value && IS("bs"))
        return parse_operand_size("bs", value, 1, INT_MAX, &args->bs);
    if (value && IS("count")) {
        args->count_given = true;
        return parse_operand_size("count", value, 0, INT64_MAX,
                                  &args->count);
    }
    if (value && IS("skip")) {
        args->skip_given = true;
        return parse_operand_size("skip", value, 0, INT64_MAX, &args->skip);
    }
    if (value && IS("if")) {
        args->in = value;
        return true;
    }
    if (value && IS("of")) {
        args->out = value;
        return true;
    }
#undef IS
    tool_error(NULL, "unrecognized operand %.*s", (int)(len < 256 ? len : 256),
               arg);
    return false;
}

/* ---- the output ---------------------------------------------------------- */

static bool same_file(const char *a, const struct stat *b)
{
    struct stat sa;

    return stat(a, &sa) == 0 && sa.st_dev == b->st_dev &&
           sa.st_ino == b->st_ino;
}

/* Creating the output would truncate a file the copy reads from. */
static bool output_is_input(const struct dd_args *args, qed_image *in)
{
    struct qed_image_info *info;
    struct stat st;
    bool found = false;

    if (stat(args->out, &st) < 0)
        return false;
    info = malloc(sizeof(*info));
    if (!info)
        return false;
    qed_image_info_init(info);
    for (qed_image *layer = in; layer && !found; layer = qed_backing(layer)) {
        qed_error err = {0};

        if (qed_get_info(layer, info, &err) < 0 ||
            !same_file(info->filename, &st))
            continue;
        found = true;
        if (layer == in)
            tool_error(args->out, "error while creating output image: it "
                       "is the input image");
        else
            tool_error(args->out, "error while creating output image: it "
                       "is a backing file of the input ('%s')",
                       info->filename);
    }
    free(info);
    return found;
}

/* A raw output: an empty regular file of the size, sparse. */
static bool create_raw(const char *path, uint64_t size)
{
    struct stat st;
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);

    if (fd < 0) {
        tool_error(path, "error while creating output image: %s",
                   strerror(errno));
        return false;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        tool_error(path, "error while creating output image: not a regular "
                   "file");
        close(fd);
        return false;
    }
    if (ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t)size) < 0) {
        tool_error(path, "error while creating output image: setting the "
                   "size to %" PRIu64 " bytes: %s", size, strerror(errno));
        close(fd);
        return false;
    }
    if (close(fd) < 0) {
        tool_error(path, "error while creating output image: %s",
                   strerror(errno));
        return false;
    }
    return true;
}

static bool create_output(const struct dd_args *args, uint64_t size)
{
    struct qed_create_options o = { .size = sizeof(o), .virtual_size = size };
    qed_error err = {0};

    if (args->out_format != QED_FORMAT_QED)
        return create_raw(args->out, size);
    if (qed_create(args->out, &o, &err) < 0) {
        tool_report(args->out, "error while creating output image", &err);
        return false;
    }
    return true;
}

static bool open_output(const struct dd_args *args, qed_image *in,
                        qed_image **out)
{
    struct qed_open_options o = {
        .size = sizeof(o),
        .flags = QED_OPEN_RDWR,
        .format = args->out_format == QED_FORMAT_QED ? QED_FORMAT_QED
                                                     : QED_FORMAT_RAW,
        .loop = qed_image_loop(in),
    };
    qed_error err = {0};

    if (tool_qed_open(args->out, &o, out, &err) < 0) {
        tool_report(args->out, NULL, &err);
        *out = NULL;
        return false;
    }
    return true;
}

/* ---- copying ------------------------------------------------------------- */

/* Copies [from, end) of in to the start of out.  Every byte is written,
 * zeros too, as qemu-img dd writes them (the output is fully allocated,
 * like qemu-img's; `qed convert` makes sparse copies). */
static bool copy_range(const struct dd_args *args, qed_image *in,
                       qed_image *out, uint64_t from, uint64_t end)
{
    uint8_t *buf = tool_alloc_buffer(DD_CHUNK);
    bool ok = buf != NULL;

    if (!buf)
        tool_error(NULL, "out of memory");
    for (uint64_t pos = from; ok && pos < end;) {
        size_t n = end - pos < DD_CHUNK ? (size_t)(end - pos) : DD_CHUNK;
        qed_error err = {0};

        if (qed_pread(in, buf, n, pos, &err) < 0) {
            tool_report(args->in, "error while reading from input image file",
                        &err);
            ok = false;
        } else if (qed_pwrite(out, buf, n, pos - from, &err) < 0) {
            tool_report(args->out, "error while writing to output image file",
                        &err);
            ok = false;
        }
        pos += n;
    }
    free(buf);
    return ok;
}

static int dd(const struct dd_args *args)
{
    uint64_t size, from, out_size;
    qed_image *in, *out;
    bool ok, beyond;

    if (!tool_open(args->in, args->in_format,
                   args->force_share ? QED_OPEN_FORCE_SHARE : 0, &in))
        return 1;
    size = qed_size(in);
    /* Like qemu-img: count blocks from the start of the input. */
    if (args->count_given && args->count <= INT64_MAX / args->bs &&
        args->count * args->bs < size)
        size = args->count * args->bs;
    beyond = args->skip_given && (args->skip > INT64_MAX / args->bs ||
                                  args->skip * args->bs > size);
    from = beyond ? size : args->skip * args->bs;
    /* Images are made in whole 512-byte sectors, as qemu-img makes them;
     * the copied bytes come first, zeros fill the rest. */
    out_size = ((size - from) + 511) & ~(uint64_t)511;
    if (output_is_input(args, in) || !create_output(args, out_size)) {
        qed_close(in, NULL);
        return 1;
    }
    if (!open_output(args, in, &out)) {
        qed_close(in, NULL);
        return 1;
    }
    if (beyond)
        tool_error(args->in, "cannot skip to specified offset");
    ok = copy_range(args, in, out, from, size);
    ok = tool_close(args->out, out) && ok;
    qed_close(in, NULL);
    return ok ? 0 : 1;
}

/* ---- command ------------------------------------------------------------- */

static int dd_run(const struct tool_command *cmd, int argc, char **argv)
{
    static const struct option long_options[] = {
        {"help", no_argument, NULL, TOOL_OPT_HELP},
        TOOL_FORCE_SHARE_OPTION,
        {NULL, 0, NULL, 0},
    };
    struct dd_args args = {
        .out_format = QED_FORMAT_RAW,
        .bs = DD_DEFAULT_BS,
    };
    int ch;

    while ((ch = getopt_long(argc, argv, ":hf:O:U", long_options, NULL)) !=
           -1) {
        switch (ch) {
        case 'h':
        case TOOL_OPT_HELP:
            tool_print_help(stdout, cmd);
            return 0;
        case 'f':
            if (!tool_parse_format(optarg, &args.in_format))
                return 1;
            break;
        case 'O':
            if (!tool_parse_format(optarg, &args.out_format))
                return 1;
            break;
        case 'U':
            args.force_share = true;
            break;
        default:
            return tool_bad_option(cmd, ch, argv);
        }
    }
    for (int i = optind; i < argc; i++)
        if (!parse_operand(argv[i], &args))
            return 1;
    if (!args.in || !args.out) {
        tool_error(NULL, "Must specify both input and output files");
        return 1;
    }
    if (!args.in[0] || !args.out[0]) {
        tool_error(NULL, "%s= names no file", args.in[0] ? "of" : "if");
        return 1;
    }
    return dd(&args);
}

const struct tool_command dd_command = {
    .name = "dd",
    .synopsis = "[-U] [-f FMT] [-O FMT] [bs=BLOCK_SIZE] [count=BLOCKS] "
                "[skip=BLOCKS]\n              if=INPUT of=OUTPUT",
    .summary = "Copy part of an image into a new image, as qemu-img dd.",
    .details =
        "Options:\n"
        "  -f qed|raw       format of INPUT (probed by default)\n"
        "  -O qed|raw       format of OUTPUT (default raw)\n"
        "  -U, --force-share\n"
        "                   read INPUT without conflicting with a program\n"
        "                   writing it (the copy may then be inconsistent)\n"
        "  bs=BLOCK_SIZE    block size, 1 to 2147483647 bytes (default\n"
        "                   512); suffixes k, M, G... as for sizes\n"
        "  count=BLOCKS     copy the input up to BLOCKS blocks from its\n"
        "                   start (default: all of it)\n"
        "  skip=BLOCKS      start copying BLOCKS blocks into the input\n"
        "  if=INPUT         the image to read\n"
        "  of=OUTPUT        the image to create (replaced if it exists)\n"
        "\n"
        "OUTPUT is created with the size of what is copied (rounded up to\n"
        "512 bytes), whatever it was before.  As in qemu-img dd, count\n"
        "counts from the start of INPUT, so with skip=S count=C the output\n"
        "holds blocks S to C - 1; a skip past the end makes an empty\n"
        "OUTPUT and a warning.  Every byte is written, zeros too, as\n"
        "qemu-img dd writes them: the output is fully allocated (use\n"
        "'qed convert' for a sparse copy).\n",
    .run = dd_run,
};
