/* SPDX-License-Identifier: MIT */
/* `qed compare`: do two images read the same?  Output and exit status as
 * qemu-img compare: 0 identical, 1 different, 2 error. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>

#include "common.h"

#define EXIT_DIFFERENT 1
#define EXIT_ERROR 2
#define QED_MIN_SIZE(a, b) ((a) < (b) ? (a) : (b))

static void show_progress(void *opaque, uint64_t done, uint64_t total)
{
    tool_progress_update(opaque, done, total);
}

static bool open_second(const char *path, enum qed_format format,
                        unsigned flags, qed_image *first, qed_image **out)
{
    struct qed_open_options o = {
        .size = sizeof(o),
        .format = format,
        .flags = flags,
        .loop = qed_image_loop(first),
    };
    qed_error err = {0};

    if (tool_qed_open(path, &o, out, &err) < 0) {
        tool_report(path, NULL, &err);
        *out = NULL;
        return false;
    }
    tool_report_warnings(path, *out);
    return true;
}

struct compare_args {
    enum qed_format format_a, format_b;
    bool quiet, strict, progress, force_share;
    const char *a, *b;
};

static int report(const struct compare_args *args,
                  const struct qed_compare_result *r, bool status_mismatch)
{
    bool sizes_differ = r->size_a != r->size_b;

    if (sizes_differ && args->strict) {
        if (!args->quiet)
            printf("Strict mode: Image size mismatch!\n");
        return EXIT_DIFFERENT;
    }
    if (status_mismatch) {
        if (!args->quiet)
            printf("Strict mode: Offset %" PRIu64 " block status mismatch!\n",
                   r->mismatch_offset);
        return EXIT_DIFFERENT;
    }
    /* Like qemu-img, the warning comes when the comparison gets past the
     * end of the smaller image. */
    if (sizes_differ && !args->quiet &&
        (r->identical ||
         r->mismatch_offset >= QED_MIN_SIZE(r->size_a, r->size_b)))
        printf("Warning: Image size mismatch!\n");
    if (!r->identical) {
        /* qemu-img names the 512-byte sector the first difference is in. */
        if (!args->quiet)
            printf("Content mismatch at offset %" PRIu64 "!\n",
                   r->mismatch_offset & ~(uint64_t)511);
        return EXIT_DIFFERENT;
    }
    if (!args->quiet)
        printf("Images are identical.\n");
    return 0;
}

static int compare(const struct compare_args *args)
{
    struct qed_compare_result result = { .size = sizeof(result) };
    struct tool_progress progress;
    struct qed_op_options o = { .size = sizeof(o) };
    qed_image *a, *b;
    qed_error err = {0};
    bool status_mismatch = false;
    int status, ret;

    unsigned flags = args->force_share ? QED_OPEN_FORCE_SHARE : 0;

    if (!tool_open(args->a, args->format_a, flags, &a))
        return EXIT_ERROR;
    if (!open_second(args->b, args->format_b, flags, a, &b)) {
        qed_close(a, NULL);
        return EXIT_ERROR;
    }
    tool_progress_start(&progress, args->progress && !args->quiet);
    o.progress = show_progress;
    o.progress_opaque = &progress;
    if (args->strict)
        ret = qed_compare_strict(a, b, &o, &result, &status_mismatch, &err);
    else
        ret = qed_compare(a, b, &o, &result, &err);
    tool_progress_finish(&progress);
    if (ret < 0) {
        tool_report(NULL, "compare", &err);
        status = EXIT_ERROR;
    } else {
        status = report(args, &result, status_mismatch);
    }
    qed_close(b, NULL);
    qed_close(a, NULL);
    return status;
}

static int compare_run(const struct tool_command *cmd, int argc, char **argv)
{
    static const struct option long_options[] = {
        {"help", no_argument, NULL, TOOL_OPT_HELP},
        TOOL_FORCE_SHARE_OPTION,
        {NULL, 0, NULL, 0},
    };
    struct compare_args args = {0};
    int ch;

    while ((ch = getopt_long(argc, argv, ":hf:F:qspU", long_options, NULL)) !=
           -1) {
        switch (ch) {
        case 'h':
        case TOOL_OPT_HELP:
            tool_print_help(stdout, cmd);
            return 0;
        case 'f':
            if (!tool_parse_format(optarg, &args.format_a))
                return EXIT_ERROR;
            break;
        case 'F':
            if (!tool_parse_format(optarg, &args.format_b))
                return EXIT_ERROR;
            break;
        case 'q':
            args.quiet = true;
            break;
        case 's':
            args.strict = true;
            break;
        case 'p':
            args.progress = true;
            break;
        case 'U':
            args.force_share = true;
            break;
        default:
            tool_bad_option(cmd, ch, argv);
            return EXIT_ERROR;
        }
    }
    if (argc - optind != 2) {
        tool_bad_usage(cmd, "expected two images");
        return EXIT_ERROR;
    }
    args.a = argv[optind];
    args.b = argv[optind + 1];
    return compare(&args);
}

const struct tool_command compare_command = {
    .name = "compare",
    .synopsis = "[-q] [-s] [-p] [-U] [-f FMT] [-F FMT] A B",
    .summary = "Compare the content of two images.",
    .details =
        "Options:\n"
        "  -f qed|raw    format of A (probed by default)\n"
        "  -F qed|raw    format of B (probed by default)\n"
        "  -s            strict: images of different sizes differ, and so\n"
        "                do images whose allocation differs (allocated or\n"
        "                not, zeros or data, as qemu-img compare -s sees\n"
        "                it): \"Strict mode: Offset N block status mismatch!\"\n"
        "  -q            quiet: print nothing, only the exit status\n"
        "  -p            show progress on stderr (when it is a terminal)\n"
        TOOL_FORCE_SHARE_HELP
        "\n"
        "Without -s, the part of the larger image past the end of the\n"
        "smaller one must read as zeros.  Prints \"Images are identical.\"\n"
        "or \"Content mismatch at offset N!\" (N: the first differing\n"
        "512-byte sector), as qemu-img compare does.\n"
        "\n"
        "Exit status: 0 same content, 1 different, 2 error.\n",
    .run = compare_run,
};
