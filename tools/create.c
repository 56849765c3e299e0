/* SPDX-License-Identifier: MIT */
/* `qed create`: make a new QED image. */
#include <getopt.h>
#include <string.h>

#include "common.h"

/* The size a new image got, for the "Formatting" line when it came from the
 * backing file.  The header is authoritative, so read it back rather than
 * opening the backing file a second time. */
static bool created_size(const char *path, uint64_t *size)
{
    qed_image *image;

    if (!tool_open(path, QED_FORMAT_QED, QED_OPEN_NO_BACKING, &image))
        return false;
    *size = qed_size(image);
    return tool_close(path, image);
}

/* Same line as qemu-img create, so logs look alike. */
static void print_formatting_line(const char *path,
                                  const struct tool_create_settings *settings,
                                  uint64_t size)
{
    const struct qed_create_options *o = &settings->options;

    printf("Formatting '%s', fmt=qed size=%llu", path,
           (unsigned long long)size);
    if (o->backing_file && o->backing_file[0]) {
        printf(" backing_file=%s", o->backing_file);
        if (settings->backing_format_given)
            printf(" backing_fmt=%s", qed_format_name(o->backing_format));
    }
    printf(" cluster_size=%u",
           o->cluster_size ? o->cluster_size : QED_DEFAULT_CLUSTER_SIZE);
    if (settings->table_size_given)
        printf(" table_size=%u", o->table_size);
    if (settings->preallocation_given)
        printf(" preallocation=%s", qed_preallocation_name(o->preallocation));
    printf("\n");
}

static bool has_backing(const struct qed_create_options *o)
{
    return o->backing_file && o->backing_file[0];
}

static int create_image(const char *path, struct tool_create_settings *settings,
                        bool quiet)
{
    struct qed_create_options *o = &settings->options;
    struct qed_open_options remote;
    qed_error err = {0};
    uint64_t size = o->virtual_size;

    qed_open_options_init(&remote);
    o->backing_options = &remote;
    if (tool_remote_settings(&remote, &err) < 0 ||
        qed_create(path, o, &err) < 0) {
        tool_report(path, NULL, &err);
        return 1;
    }
    if (o->size_from_backing && !created_size(path, &size))
        return 1;
    if (!quiet)
        print_formatting_line(path, settings, size);
    tool_warn_qemu_incompatible(path, o, size);
    return 0;
}

static int create_run(const struct tool_command *cmd, int argc, char **argv)
{
    static const struct option long_options[] = {
        {"help", no_argument, NULL, TOOL_OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    struct tool_create_settings settings = {0};
    struct qed_create_options *o = &settings.options;
    bool quiet = false;
    enum qed_format format;
    const char *path;
    int ch;

    qed_create_options_init(o);

    while ((ch = getopt_long(argc, argv, ":hqf:b:F:o:", long_options,
                             NULL)) != -1) {
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
            if (format != QED_FORMAT_QED) {
                tool_error(NULL, "create: only qed images can be created, "
                                 "not %s", optarg);
                return 1;
            }
            break;
        case 'b':
            o->backing_file = optarg;
            break;
        case 'F':
            if (!tool_parse_format(optarg, &o->backing_format))
                return 1;
            settings.backing_format_given = true;
            break;
        case 'o':
            if (tool_create_options_help_requested(optarg)) {
                tool_print_create_options(stdout);
                return 0;
            }
            if (!tool_parse_create_options(optarg, &settings))
                return 1;
            break;
        default:
            return tool_bad_option(cmd, ch, argv);
        }
    }
    if (argc - optind < 1)
        return tool_bad_usage(cmd, "missing FILE");
    if (argc - optind > 2)
        return tool_bad_usage(cmd, "too many arguments");
    path = argv[optind];

    /* qemu-img's wording; an empty name is a mistake, not "no backing". */
    if (o->backing_file && !o->backing_file[0]) {
        tool_error(path, "Expected backing file name, got empty string");
        return 1;
    }
    if (settings.backing_format_given && !has_backing(o)) {
        tool_error(path, "a backing format needs a backing file (-b)");
        return 1;
    }
    if (argc - optind == 2) {
        if (settings.size_given) {
            tool_error(path, "The image size must be specified only once");
            return 1;
        }
        if (!tool_parse_size(argv[optind + 1], "size", &o->virtual_size))
            return 1;
        settings.size_given = true;
    }
    if (settings.size_given) {
        /* Like qemu-img: the size is rounded up to whole 512-byte sectors. */
        if (o->virtual_size > UINT64_MAX - 511) {
            tool_error(path, "image size %llu is too large",
                       (unsigned long long)o->virtual_size);
            return 1;
        }
        o->virtual_size = (o->virtual_size + 511) & ~(uint64_t)511;
    } else if (has_backing(o)) {
        o->size_from_backing = true;
    } else {
        tool_error(path, "a SIZE is needed when there is no backing file");
        return 1;
    }
    return create_image(path, &settings, quiet);
}

const struct tool_command create_command = {
    .name = "create",
    .synopsis = "[-q] [-f qed] [-b BACKING [-F raw|qed]] [-o OPTIONS] FILE "
                "[SIZE]",
    .summary = "Create a new QED image.",
    .details =
        "Options:\n"
        "  -q            do not print the 'Formatting ...' line\n"
        "  -f qed        format of the new image (only qed)\n"
        "  -b BACKING    backing file name, stored as given; a relative name\n"
        "                is relative to FILE's directory\n"
        "  -F raw|qed    backing file format: raw is recorded so that it is\n"
        "                never probed; without -F the format is probed\n"
        "  -o OPTIONS    comma-separated NAME=VALUE list: size=SIZE (instead\n"
        "                of the SIZE argument), cluster_size=SIZE\n"
        "                (default 64k), table_size=N (default 4),\n"
        "                backing_file=NAME, backing_fmt=raw|qed,\n"
        "                preallocation=off|metadata|falloc|full (every L2\n"
        "                table; falloc: and every data cluster, in guest\n"
        "                order, fallocate'd; full: written with zeros);\n"
        "                '-o help' lists them\n"
        "\n"
        "SIZE may be left out when there is a backing file: the backing\n"
        "file's size is used.\n",
    .run = create_run,
};
