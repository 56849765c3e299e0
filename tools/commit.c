/* SPDX-License-Identifier: MIT */
/* `qed commit`: write what an image holds itself into its backing file, or
 * (-b) what the layers above a base of its chain hold into that base
 * (qed_commit).  The image is left as it is. */
#include <getopt.h>
#include <stdio.h>

#include "common.h"

static void show_progress(void *opaque, uint64_t done, uint64_t total)
{
    tool_progress_update(opaque, done, total);
}

static int commit_run(const struct tool_command *cmd, int argc, char **argv)
{
    static const struct option long_options[] = {
        {"help", no_argument, NULL, TOOL_OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    struct qed_commit_options o = { .size = sizeof(o) };
    struct qed_op_options op = { .size = sizeof(op) };
    struct tool_progress progress;
    bool quiet = false, show = false;
    qed_error err = {0};
    const char *path;
    int ch, ret;

    o.engine = tool_engine();
    while ((ch = getopt_long(argc, argv, ":hpqdf:b:", long_options, NULL)) !=
           -1) {
        switch (ch) {
        case 'h':
        case TOOL_OPT_HELP:
            tool_print_help(stdout, cmd);
            return 0;
        case 'p':
            show = true;
            break;
        case 'q':
            quiet = true;
            break;
        case 'f':
            if (!tool_parse_format(optarg, &o.format))
                return 1;
            break;
        case 'b':
            o.base = optarg;
            break;
        case 'd':
            /* qemu-img's "do not empty the image": QED images are never
             * emptied (qemu-img cannot either), so there is nothing to
             * skip. */
            break;
        default:
            return tool_bad_option(cmd, ch, argv);
        }
    }
    if (argc - optind != 1)
        return tool_bad_usage(cmd, "expected one image");
    path = argv[optind];
    tool_progress_start(&progress, show && !quiet);
    op.progress = show_progress;
    op.progress_opaque = &progress;
    o.op = &op;
    ret = qed_commit(path, &o, &err);
    tool_progress_finish(&progress);
    if (ret < 0) {
        tool_report(path, NULL, &err);
        return 1;
    }
    if (!quiet)
        printf("Image committed.\n");
    return 0;
}

const struct tool_command commit_command = {
    .name = "commit",
    .synopsis = "[-q] [-p] [-d] [-f FMT] [-b BASE] FILE",
    .summary = "Write an image's own data into its backing file.",
    .details =
        "Options:\n"
        "  -f qed|raw    format of FILE (probed by default; it must be qed)\n"
        "  -b BASE       commit into BASE, a file further down the backing\n"
        "                chain: what every layer above it holds goes into\n"
        "                it.  BASE is named as qemu-img names it: relative\n"
        "                to the directory of the image above it\n"
        "  -d            accepted for qemu-img's sake: FILE is never\n"
        "                emptied anyway\n"
        "  -p            show progress on stderr (when it is a terminal)\n"
        "  -q            quiet: no progress, no message\n"
        "\n"
        "Every range FILE allocates itself (data, and zero clusters as\n"
        "zeros) is written into its backing file (qed or raw), which grows\n"
        "first when it is smaller; the backing file is flushed before the\n"
        "command ends.  FILE itself is not changed and stays valid.  With\n"
        "-b, the layers between FILE and BASE are not changed either, but\n"
        "read differently afterwards (BASE below them has changed), as\n"
        "after qemu-img commit -b.\n",
    .run = commit_run,
};
