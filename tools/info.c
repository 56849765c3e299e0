/* SPDX-License-Identifier: MIT */
/* `qed info`: describe an image (and its backing chain) like qemu-img info. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

struct info_args {
    const char *path;
    enum qed_format format;
    bool json;
    bool backing_chain;
    bool force_share;
};

/* The information of every layer shown, top first. */
struct info_list {
    struct qed_image_info *layers;
    size_t count;
};

/* ---- gathering ----------------------------------------------------------- */

/* Opens read-only with the backing chain, so that the backing format can be
 * reported.  A broken or missing backing file must not hide the top image's
 * own information, so without --backing-chain fall back to the top alone. */
static bool open_for_info(const struct info_args *args, qed_image **image)
{
    struct qed_open_options options = {
        .size = sizeof(options),
        .format = args->format,
        .flags = args->force_share ? QED_OPEN_FORCE_SHARE : 0,
    };
    qed_error err = {0};
    qed_error retry_err = {0};

    if (tool_qed_open(args->path, &options, image, &err) == 0)
        return true;
    if (args->backing_chain) {
        tool_report(args->path, NULL, &err);
        return false;
    }
    options.flags |= QED_OPEN_NO_BACKING;
    if (tool_qed_open(args->path, &options, image, &retry_err) < 0) {
        tool_report(args->path, NULL, &err);
        return false;
    }
    tool_report(args->path, "warning: backing chain not opened", &err);
    return true;
}

static bool gather_layers(const struct info_args *args, qed_image *top,
                          struct info_list *list)
{
    size_t limit = args->backing_chain ? QED_MAX_CHAIN_DEPTH + 1 : 1;
    qed_image *layer = top;
    char shown[4096];

    list->layers = calloc(limit, sizeof(*list->layers));
    if (!list->layers) {
        tool_error(args->path, "out of memory");
        return false;
    }
    for (list->count = 0; layer && list->count < limit; list->count++) {
        struct qed_image_info *info = &list->layers[list->count];
        qed_error err = {0};

        qed_image_info_init(info);
        if (qed_get_info(layer, info, &err) < 0) {
            tool_report(args->path, NULL, &err);
            return false;
        }
        layer = qed_backing(layer);
    }
    /* The top image is shown under the name the user gave. */
    snprintf(list->layers[0].filename, sizeof(list->layers[0].filename), "%s",
             tool_display_name(args->path, shown, sizeof(shown)));
    return true;
}

/* ---- human output -------------------------------------------------------- */

static void print_qed_details_human(const struct qed_image_info *info)
{
    printf("Format specific information:\n");
    printf("    table size: %u\n", info->table_size);
    printf("    header size: %u\n", info->header_size);
    printf("    features: 0x%llx\n", (unsigned long long)info->features);
    printf("    compat features: 0x%llx\n",
           (unsigned long long)info->compat_features);
    printf("    autoclear features: 0x%llx\n",
           (unsigned long long)info->autoclear_features);
    printf("    l1 table offset: 0x%llx\n",
           (unsigned long long)info->l1_table_offset);
}

static void print_backing_human(const struct qed_image_info *info)
{
    printf("backing file: %s", info->backing_file);
    if (strcmp(info->backing_file, info->backing_file_full) != 0)
        printf(" (actual path: %s)", info->backing_file_full);
    printf("\n");
    if (info->backing_format != QED_FORMAT_PROBE)
        printf("backing file format: %s\n",
               qed_format_name(info->backing_format));
}

static void print_layer_human(const struct qed_image_info *info)
{
    char virtual_size[32], disk_size[32];

    tool_format_size(info->virtual_size, virtual_size, sizeof(virtual_size));
    tool_format_size(info->actual_size, disk_size, sizeof(disk_size));
    printf("image: %s\n", info->filename);
    printf("file format: %s\n", qed_format_name(info->format));
    printf("virtual size: %s (%llu bytes)\n", virtual_size,
           (unsigned long long)info->virtual_size);
    /* As qemu-img says of storage that cannot tell (an NBD export). */
    printf("disk size: %s\n", info->actual_size_unknown ? "unavailable"
                                                        : disk_size);
    if (info->format != QED_FORMAT_QED)
        return;
    printf("cluster_size: %u\n", info->cluster_size);
    if (info->has_backing)
        print_backing_human(info);
    print_qed_details_human(info);
}

static void print_human(const struct info_list *list)
{
    for (size_t i = 0; i < list->count; i++) {
        if (i > 0)
            printf("\n");
        print_layer_human(&list->layers[i]);
    }
}

/* ---- JSON output --------------------------------------------------------- */

static void print_qed_details_json(struct tool_json *json,
                                   const struct qed_image_info *info)
{
    tool_json_begin_object(json, "format-specific");
    tool_json_str(json, "type", "qed");
    tool_json_begin_object(json, "data");
    tool_json_uint(json, "table-size", info->table_size);
    tool_json_uint(json, "header-size", info->header_size);
    tool_json_uint(json, "features", info->features);
    tool_json_uint(json, "compat-features", info->compat_features);
    tool_json_uint(json, "autoclear-features", info->autoclear_features);
    tool_json_uint(json, "l1-table-offset", info->l1_table_offset);
    tool_json_end_object(json);
    tool_json_end_object(json);
}

/* Members in the order qemu-img prints them, so outputs can be diffed. */
static void print_layer_json(struct tool_json *json,
                             const struct qed_image_info *info)
{
    bool is_qed = info->format == QED_FORMAT_QED;
    bool backing = is_qed && info->has_backing;

    tool_json_begin_object(json, NULL);
    if (backing && info->backing_format != QED_FORMAT_PROBE)
        tool_json_str(json, "backing-filename-format",
                      qed_format_name(info->backing_format));
    tool_json_uint(json, "virtual-size", info->virtual_size);
    tool_json_str(json, "filename", info->filename);
    if (is_qed)
        tool_json_uint(json, "cluster-size", info->cluster_size);
    tool_json_str(json, "format", qed_format_name(info->format));
    if (!info->actual_size_unknown)
        tool_json_uint(json, "actual-size", info->actual_size);
    if (is_qed)
        print_qed_details_json(json, info);
    if (backing) {
        tool_json_str(json, "full-backing-filename", info->backing_file_full);
        tool_json_str(json, "backing-filename", info->backing_file);
    }
    tool_json_bool(json, "dirty-flag", info->dirty);
    tool_json_end_object(json);
}

static void print_json(const struct info_list *list, bool as_array)
{
    struct tool_json json;

    tool_json_init(&json, stdout);
    if (as_array)
        tool_json_begin_array(&json, NULL);
    for (size_t i = 0; i < list->count; i++)
        print_layer_json(&json, &list->layers[i]);
    if (as_array)
        tool_json_end_array(&json);
    tool_json_finish(&json);
}

/* ---- command ------------------------------------------------------------- */

static int show_info(const struct info_args *args)
{
    struct info_list list = {0};
    qed_image *image;
    bool ok;

    if (!open_for_info(args, &image))
        return 1;
    ok = gather_layers(args, image, &list);
    ok = tool_close(args->path, image) && ok;
    if (ok) {
        if (args->json)
            print_json(&list, args->backing_chain);
        else
            print_human(&list);
    }
    free(list.layers);
    return ok ? 0 : 1;
}

static int info_run(const struct tool_command *cmd, int argc, char **argv)
{
    enum { OPT_OUTPUT = TOOL_OPT_HELP + 1, OPT_BACKING_CHAIN };
    static const struct option long_options[] = {
        {"help", no_argument, NULL, TOOL_OPT_HELP},
        {"output", required_argument, NULL, OPT_OUTPUT},
        {"backing-chain", no_argument, NULL, OPT_BACKING_CHAIN},
        TOOL_FORCE_SHARE_OPTION,
        {NULL, 0, NULL, 0},
    };
    struct info_args args = {0};
    int ch;

    while ((ch = getopt_long(argc, argv, ":hf:U", long_options, NULL)) != -1) {
        switch (ch) {
        case 'h':
        case TOOL_OPT_HELP:
            tool_print_help(stdout, cmd);
            return 0;
        case 'f':
            if (!tool_parse_format(optarg, &args.format))
                return 1;
            break;
        case OPT_OUTPUT:
            if (!tool_parse_output(optarg, &args.json))
                return 1;
            break;
        case OPT_BACKING_CHAIN:
            args.backing_chain = true;
            break;
        case 'U':
            args.force_share = true;
            break;
        default:
            return tool_bad_option(cmd, ch, argv);
        }
    }
    if (argc - optind != 1)
        return tool_bad_usage(cmd, argc - optind < 1 ? "missing FILE"
                                                     : "too many arguments");
    args.path = argv[optind];
    return show_info(&args);
}

const struct tool_command info_command = {
    .name = "info",
    .synopsis = "[-U] [-f FMT] [--output=human|json] [--backing-chain] FILE",
    .summary = "Show an image's format, sizes, backing file and header.",
    .details =
        "Options:\n"
        "  -f qed|raw          image format (probed by default)\n"
        "  --output=FMT        human (default) or json, with qemu-img's\n"
        "                      field names\n"
        "  --backing-chain     also show every backing file, top first\n"
        "                      (a JSON array with --output=json)\n"
        TOOL_FORCE_SHARE_HELP,
    .run = info_run,
};
