/* `qed convert`: copy an image's visible content into a new raw or QED image,
 * keeping it sparse (qed_convert does the work). */
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

struct convert_args {
    const char *source_path;
    const char *target_path;
    enum qed_format source_format;
    bool progress;
    bool quiet;
    bool options_given;
    struct tool_create_settings settings;
    struct qed_convert_options convert;
};

static void show_progress(void *opaque, uint64_t done, uint64_t total)
{
    tool_progress_update(opaque, done, total);
}

static int convert(struct convert_args *args)
{
    struct tool_progress progress;
    qed_error err = {0};
    qed_image *source;
    int ret;

    if (!tool_open(args->source_path, args->source_format, 0, &source))
        return 1;
    args->convert.create = args->settings.options;
    tool_progress_start(&progress, args->progress && !args->quiet);
    args->convert.op.progress = show_progress;
    args->convert.op.progress_opaque = &progress;
    ret = qed_convert(source, args->target_path, &args->convert, &err);
    tool_progress_finish(&progress);
    if (ret < 0)
        tool_report(args->target_path, NULL, &err);
    else if (args->convert.format == QED_FORMAT_QED)
        tool_warn_qemu_incompatible(args->target_path, &args->convert.create,
                                    (qed_size(source) + 511) & ~(uint64_t)511);
    if (!tool_close(args->source_path, source))
        ret = -1;
    return ret < 0 ? 1 : 0;
}

/* qemu-img's cache modes for the output: unsafe (its convert default: no
 * flush), writeback (flushed at the end), none (O_DIRECT, flushed). */
static bool parse_cache(const char *text, struct qed_convert_options *o)
{
    if (strcmp(text, "unsafe") == 0) {
        o->unsafe = true;
        o->cache = QED_CACHE_WRITEBACK;
    } else if (strcmp(text, "writeback") == 0) {
        o->unsafe = false;
        o->cache = QED_CACHE_WRITEBACK;
    } else if (strcmp(text, "none") == 0) {
        o->unsafe = false;
        o->cache = QED_CACHE_NONE;
    } else {
        tool_error(NULL, "convert: unknown cache mode '%s' (expected unsafe, "
                   "writeback or none)", text);
        return false;
    }
    return true;
}

static bool parse_requests(const char *text, unsigned *out)
{
    char *end;
    unsigned long n = strtoul(text, &end, 10);

    if (!*text || *end || n < 1 || n > 256) {
        tool_error(NULL, "convert: requests in flight '%s' is not a number "
                   "in [1, 256]", text);
        return false;
    }
    *out = (unsigned)n;
    return true;
}

/* Output options make sense only for QED targets. */
static bool check_target_options(const struct convert_args *args)
{
    if (args->convert.format == QED_FORMAT_QED)
        return true;
    if (args->options_given) {
        tool_error(NULL, "convert: -o, -B and -F need a qed output (-O qed)");
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
    struct convert_args args = {
        .convert = {.format = QED_FORMAT_RAW, .unsafe = true},
    };
    enum qed_format backing_format;
    int ch;

    while ((ch = getopt_long(argc, argv, ":hpqf:O:o:B:F:t:m:", long_options,
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
            if (!tool_parse_format(optarg, &args.convert.format))
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
        case 'F':
            if (!tool_parse_format(optarg, &backing_format))
                return 1;
            args.settings.options.backing_format = backing_format;
            args.options_given = true;
            break;
        case 't':
            if (!parse_cache(optarg, &args.convert))
                return 1;
            break;
        case 'm':
            if (!parse_requests(optarg, &args.convert.op.requests))
                return 1;
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
    .synopsis = "[-p] [-q] [-f FMT] [-O raw|qed] [-o OPTIONS] "
                "[-B BACKING [-F FMT]] [-t CACHE] [-m N] SRC DST",
    .summary = "Copy an image's content into a new raw or QED image.",
    .details =
        "Options:\n"
        "  -p            show progress on stderr (when it is a terminal)\n"
        "  -q            quiet: no progress\n"
        "  -f qed|raw    source format (probed by default)\n"
        "  -O raw|qed    output format (default raw)\n"
        "  -o OPTIONS    qed output: cluster_size=SIZE, table_size=N,\n"
        "                backing_file=NAME, backing_fmt=raw|qed\n"
        "  -B BACKING    qed output: backing file of the new image; only what\n"
        "                reads differently from it is written, so the output\n"
        "                reads exactly like the source\n"
        "  -F raw|qed    format of the -B backing file (probed by default)\n"
        "  -t CACHE      output cache mode: unsafe (default, as qemu-img\n"
        "                convert: never flushed, the system writes it back\n"
        "                later), writeback (flushed at the end), none\n"
        "                (O_DIRECT, flushed at the end)\n"
        "  -m N          requests in flight (1 to 256, default 8)\n"
        "\n"
        "The output stays sparse: unallocated and all-zero ranges of the\n"
        "source are not written.  A raw output that is a block device is\n"
        "written in place (zeros included).\n",
    .run = convert_run,
};
