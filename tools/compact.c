/* SPDX-License-Identifier: MIT */
/* `qed compact`: rewrite an image in place without holes or leaks. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>

#include "common.h"

static int compact_run(const struct tool_command *cmd, int argc, char **argv)
{
    static const struct option long_options[] = {
        { "help", no_argument, NULL, TOOL_OPT_HELP },
        { NULL, 0, NULL, 0 },
    };
    struct qed_compact_result r = { .size = sizeof(r) };
    enum qed_format format = QED_FORMAT_PROBE;
    bool quiet = false;
    qed_error err = { 0 };
    qed_image *img;
    const char *path;
    int ch, status = 0;

    while ((ch = getopt_long(argc, argv, ":hpqf:", long_options, NULL)) != -1) {
        switch (ch) {
        case 'h':
        case TOOL_OPT_HELP:
            tool_print_help(stdout, cmd);
            return 0;
        case 'p':
            /* Accepted like the other long-running subcommands; compaction
             * reports what it did when it ends. */
            break;
        case 'q':
            quiet = true;
            break;
        case 'f':
            if (!tool_parse_format(optarg, &format))
                return 1;
            break;
        default:
            return tool_bad_option(cmd, ch, argv);
        }
    }
    if (optind != argc - 1)
        return tool_bad_usage(cmd, "expected one image file name");
    path = argv[optind];
    if (!tool_open(path, format, QED_OPEN_RDWR, &img))
        return 1;
    if (qed_compact(img, &r, &err) < 0) {
        tool_report(path, "compact failed", &err);
        status = 1;
    } else if (!quiet) {
        printf("%" PRIu64 " zero clusters released, %" PRIu64
               " clusters reclaimed; file size %" PRIu64 " -> %" PRIu64
               " bytes\n", r.zero_clusters_dropped, r.leaks_reclaimed,
               r.size_before, r.size_after);
    }
    if (!tool_close(path, img))
        status = 1;
    return status;
}

const struct tool_command compact_command = {
    .name = "compact",
    .synopsis = "[-p] [-q] [-f qed] FILE",
    .summary = "Rewrite an image in place without holes or leaks.",
    .details =
        "Data clusters that read as zeros are released (unallocated, or zero\n"
        "clusters over a backing file); then the last clusters of the file\n"
        "move into the gaps (copy, flush, update the entry, flush) and the\n"
        "file is truncated.  The content never changes; a crash at any point\n"
        "leaves a consistent image; running it again does nothing.\n"
        "  -q   do not print what was done\n"
        "  -p   accepted for compatibility (the summary is printed at the end)\n",
    .run = compact_run,
};
