/* SPDX-License-Identifier: MIT */
/* `qed rebase`: give an image another backing file (or none), copying
 * whatever would read differently (qed_rebase), or with -u only rewriting
 * the header (qed_set_backing_at). */
#include <getopt.h>
#include <stdio.h>

#include "common.h"

static void show_progress(void *opaque, uint64_t done, uint64_t total)
{
    tool_progress_update(opaque, done, total);
}

struct rebase_args {
    const char *path, *backing;
    enum qed_format format, backing_format;
    bool unsafe, quiet, progress;
};

static int rebase(const struct rebase_args *args)
{
    struct qed_op_options o = { .size = sizeof(o) };
    struct tool_progress progress;
    qed_error err = {0};
    qed_image *img;
    int ret;

    if (args->unsafe) {
        if (args->format == QED_FORMAT_RAW) {
            tool_error(args->path, "a raw image has no backing file");
            return 1;
        }
        ret = qed_set_backing_at(args->path, args->backing,
                                 args->backing_format, &err);
        if (ret < 0)
            tool_report(args->path, NULL, &err);
        return ret < 0 ? 1 : 0;
    }
    if (!tool_open(args->path, args->format, QED_OPEN_RDWR, &img))
        return 1;
    tool_progress_start(&progress, args->progress && !args->quiet);
    o.progress = show_progress;
    o.progress_opaque = &progress;
    ret = qed_rebase(img, args->backing, args->backing_format, 0, &o, &err);
    tool_progress_finish(&progress);
    if (ret < 0)
        tool_report(args->path, NULL, &err);
    if (!tool_close(args->path, img))
        ret = -1;
    return ret < 0 ? 1 : 0;
}

static int rebase_run(const struct tool_command *cmd, int argc, char **argv)
{
    static const struct option long_options[] = {
        {"help", no_argument, NULL, TOOL_OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    struct rebase_args args = {0};
    int ch;

    while ((ch = getopt_long(argc, argv, ":hupqf:b:F:", long_options,
                             NULL)) != -1) {
        switch (ch) {
        case 'h':
        case TOOL_OPT_HELP:
            tool_print_help(stdout, cmd);
            return 0;
        case 'u':
            args.unsafe = true;
            break;
        case 'p':
            args.progress = true;
            break;
        case 'q':
            args.quiet = true;
            break;
        case 'f':
            if (!tool_parse_format(optarg, &args.format))
                return 1;
            break;
        case 'b':
            args.backing = optarg;
            break;
        case 'F':
            if (!tool_parse_format(optarg, &args.backing_format))
                return 1;
            break;
        default:
            return tool_bad_option(cmd, ch, argv);
        }
    }
    if (argc - optind != 1)
        return tool_bad_usage(cmd, "expected one image");
    if (!args.backing)
        return tool_bad_usage(cmd, "-b BACKING is required (-b \"\" removes "
                              "the backing file)");
    args.path = argv[optind];
    return rebase(&args);
}

const struct tool_command rebase_command = {
    .name = "rebase",
    .synopsis = "[-q] [-u] [-p] [-f FMT] -b BACKING [-F FMT] FILE",
    .summary = "Change the backing file of an image.",
    .details =
        "Options:\n"
        "  -b BACKING    the new backing file, as stored in the header\n"
        "                (relative names are relative to FILE's directory);\n"
        "                \"\" removes the backing file\n"
        "  -F raw|qed    format of BACKING (probed by default; raw is\n"
        "                recorded in the header)\n"
        "  -u            unsafe: only rewrite the header; neither the old\n"
        "                nor the new backing file is opened, and what FILE\n"
        "                reads may change\n"
        "  -f qed|raw    format of FILE (probed by default; it must be qed)\n"
        "  -p            show progress on stderr (when it is a terminal)\n"
        "  -q            quiet: no progress\n"
        "\n"
        "Without -u the rebase is safe: for every range FILE does not hold\n"
        "itself, whatever the new backing file reads differently from the\n"
        "old one is first copied into FILE (and flushed), so FILE reads the\n"
        "same afterwards; then the header changes.  A name that does not\n"
        "fit in the header is refused before anything is written.\n",
    .run = rebase_run,
};
