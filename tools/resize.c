/* SPDX-License-Identifier: MIT */
/* `qed resize`: change an image's virtual size (qed_resize). */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define OPT_SHRINK 0x101
#define OPT_PREALLOCATION 0x102

/* "+SIZE", "-SIZE" or "SIZE" against the current size. */
static bool new_size(const char *text, uint64_t current, uint64_t *out)
{
    uint64_t n;

    if (text[0] == '+' || text[0] == '-') {
        if (!tool_parse_size(text + 1, "size", &n))
            return false;
        if (text[0] == '+' && n > UINT64_MAX - current) {
            tool_error(NULL, "resize: %" PRIu64 " + %" PRIu64
                       " bytes is too large", current, n);
            return false;
        }
        if (text[0] == '-' && n > current) {
            tool_error(NULL, "resize: cannot shrink %" PRIu64 " bytes by %"
                       PRIu64, current, n);
            return false;
        }
        *out = text[0] == '+' ? current + n : current - n;
        return true;
    }
    return tool_parse_size(text, "size", out);
}

static bool looks_like_size(const char *text)
{
    if (text[0] == '+' || text[0] == '-')
        text++;
    return text[0] >= '0' && text[0] <= '9';
}

static int resize_run(const struct tool_command *cmd, int argc, char **argv)
{
    static const struct option long_options[] = {
        {"help", no_argument, NULL, TOOL_OPT_HELP},
        {"shrink", no_argument, NULL, OPT_SHRINK},
        {"preallocation", required_argument, NULL, OPT_PREALLOCATION},
        {NULL, 0, NULL, 0},
    };
    enum qed_format format = QED_FORMAT_PROBE;
    struct qed_image_info *info = NULL;
    const char *size_text = NULL, *path;
    enum qed_preallocation preallocation = QED_PREALLOC_OFF;
    unsigned flags = 0;
    bool quiet = false, ok = true;
    qed_error err = {0};
    uint64_t current, size = 0;
    qed_image *img;
    int ch;

    /* The size goes before getopt sees it: "-1G" is not an option. */
    if (argc >= 3 && looks_like_size(argv[argc - 1])) {
        size_text = argv[argc - 1];
        argc--;
    }
    while ((ch = getopt_long(argc, argv, ":hqf:", long_options, NULL)) != -1) {
        switch (ch) {
        case 'h':
        case TOOL_OPT_HELP:
            tool_print_help(stdout, cmd);
            return 0;
        case 'q':
            quiet = true;
            break;
        case 'f':
            if (!tool_parse_format(optarg, &format))
                return 1;
            break;
        case OPT_SHRINK:
            flags |= QED_RESIZE_SHRINK;
            break;
        case OPT_PREALLOCATION:
            if (!tool_parse_preallocation(optarg, &preallocation))
                return 1;
            break;
        default:
            return tool_bad_option(cmd, ch, argv);
        }
    }
    if (!size_text && argc - optind == 2) {
        size_text = argv[argc - 1];
        argc--;
    }
    if (argc - optind != 1 || !size_text)
        return tool_bad_usage(cmd, "expected FILE and SIZE");
    path = argv[optind];
    flags |= QED_RESIZE_PREALLOC(preallocation);
    if (!tool_open(path, format, QED_OPEN_RDWR, &img))
        return 1;
    current = qed_size(img);
    if (qed_format_of(img) == QED_FORMAT_RAW) {
        /* A raw file's own length, not its length in whole sectors. */
        info = malloc(sizeof(*info));
        if (info)
            qed_image_info_init(info);
        if (info && qed_get_info(img, info, &err) == 0)
            current = info->file_size;
        free(info);
    }
    ok = new_size(size_text, current, &size);
    if (ok && qed_resize(img, size, flags, &err) < 0) {
        tool_report(path, NULL, &err);
        ok = false;
    }
    ok = tool_close(path, img) && ok;
    if (ok && !quiet)
        printf("Image resized.\n");
    return ok ? 0 : 1;
}

const struct tool_command resize_command = {
    .name = "resize",
    .synopsis = "[-q] [--shrink] [--preallocation=MODE] [-f FMT] FILE "
                "[+|-]SIZE",
    .summary = "Change the virtual size of an image.",
    .details =
        "Options:\n"
        "  --shrink      allow a smaller size (the data past it is lost)\n"
        "  --preallocation=off|metadata|falloc|full\n"
        "                preallocate what growing adds: the L2 tables\n"
        "                (metadata), and a data cluster for every whole new\n"
        "                cluster, in guest order, fallocate'd (falloc) or\n"
        "                written with zeros (full); raw files: falloc or\n"
        "                full reserve or write the new bytes\n"
        "  -f qed|raw    format of FILE (probed by default)\n"
        "  -q            quiet: no message\n"
        "\n"
        "SIZE is the new size, or +SIZE / -SIZE relative to the current\n"
        "one.  A raw file is truncated or extended.  A QED image grows up\n"
        "to what its tables address (the error names that maximum), and the\n"
        "new range reads as zeros; shrinking frees every cluster past the\n"
        "new end and truncates the file, leaving no leaked clusters.\n",
    .run = resize_run,
};
