/* SPDX-License-Identifier: MIT */
/* `qed map`: where each range of the image comes from, like qemu-img map. */
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

struct map_entry {
    uint64_t start;
    uint64_t length;
    unsigned depth;
    bool present;
    bool zero;
    bool data;
    bool has_offset;
    uint64_t offset;
};

struct map_printer {
    bool json;
    bool first;
    uint64_t start;    /* where the listing starts (--start-offset) */
    /* Human output names the file of each layer, top first. */
    char **layer_names;
    size_t layer_count;
};

/* ---- layers -------------------------------------------------------------- */

static void free_layer_names(struct map_printer *printer)
{
    for (size_t i = 0; i < printer->layer_count; i++)
        free(printer->layer_names[i]);
    free(printer->layer_names);
    printer->layer_names = NULL;
    printer->layer_count = 0;
}

static bool collect_layer_names(const char *path, qed_image *top,
                                struct map_printer *printer)
{
    struct qed_image_info *info = malloc(sizeof(*info));
    bool ok = info != NULL;

    if (info)
        qed_image_info_init(info);
    printer->layer_names =
        calloc(QED_MAX_CHAIN_DEPTH + 1, sizeof(*printer->layer_names));
    ok = ok && printer->layer_names;
    for (qed_image *layer = top;
         ok && layer && printer->layer_count <= QED_MAX_CHAIN_DEPTH;
         layer = qed_backing(layer)) {
        qed_error err = {0};
        const char *name = info->filename;

        if (qed_get_info(layer, info, &err) < 0) {
            tool_report(path, NULL, &err);
            free(info);
            return false;
        }
        /* The top image goes by the name the user gave, like qemu-img. */
        if (layer == top)
            name = path;
        printer->layer_names[printer->layer_count] = strdup(name);
        ok = printer->layer_names[printer->layer_count++] != NULL;
    }
    free(info);
    if (!ok)
        tool_error(path, "out of memory");
    return ok;
}

static const char *layer_name(const struct map_printer *printer,
                              unsigned depth)
{
    return depth < printer->layer_count ? printer->layer_names[depth] : "";
}

/* ---- printing ------------------------------------------------------------ */

static const char *json_bool(bool value)
{
    return value ? "true" : "false";
}

static void print_entry_json(struct map_printer *printer,
                             const struct map_entry *e)
{
    printf("%s{ \"start\": %" PRIu64 ", \"length\": %" PRIu64
           ", \"depth\": %u, \"present\": %s, \"zero\": %s, \"data\": %s",
           printer->first ? "[" : ",\n", e->start, e->length, e->depth,
           json_bool(e->present), json_bool(e->zero), json_bool(e->data));
    if (e->has_offset)
        printf(", \"offset\": %" PRIu64, e->offset);
    printf("}");
}

/* Only ranges with data somewhere in a file are listed. */
static void print_entry_human(struct map_printer *printer,
                              const struct map_entry *e)
{
    if (!e->data || e->zero || !e->has_offset)
        return;
    printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", e->start,
           e->length, e->offset, layer_name(printer, e->depth));
}

static void print_start(struct map_printer *printer)
{
    printer->first = true;
    if (!printer->json)
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
}

static void print_entry(struct map_printer *printer, const struct map_entry *e)
{
    if (printer->json)
        print_entry_json(printer, e);
    else
        print_entry_human(printer, e);
    printer->first = false;
}

static void print_end(struct map_printer *printer)
{
    if (!printer->json)
        return;
    /* qemu-img lists one empty range (at the start offset) when there is
     * nothing to list; do the same so that consumers see the same
     * document. */
    if (printer->first) {
        struct map_entry empty = {.start = printer->start};
        print_entry_json(printer, &empty);
    }
    printf("]\n");
}

/* ---- walking ------------------------------------------------------------- */

/* The part of the image to list: --start-offset and --max-length. */
struct map_range {
    uint64_t start;
    uint64_t length;   /* UINT64_MAX: to the end */
};

/* Adjacent ranges that only differ in where they start are shown as one. */
static bool entries_mergeable(const struct map_entry *a,
                              const struct map_entry *b)
{
    if (a->depth != b->depth || a->present != b->present ||
        a->zero != b->zero || a->data != b->data ||
        a->has_offset != b->has_offset)
        return false;
    return !a->has_offset || a->offset + a->length == b->offset;
}

/* The status of [offset, end), or of its first part. */
static bool query_status(const char *path, qed_image *image, uint64_t offset,
                         uint64_t end, struct map_entry *entry)
{
    struct qed_block_status status = { .size = sizeof(status) };
    qed_error err = {0};

    if (qed_block_status(image, offset, end - offset, &status, &err) < 0) {
        char context[64];
        snprintf(context, sizeof(context), "block status at offset %" PRIu64,
                 offset);
        tool_report(path, context, &err);
        return false;
    }
    /* A zero or oversized answer would loop forever or run past the end. */
    if (status.length == 0 || status.length > end - offset) {
        tool_error(path, "block status at offset %" PRIu64
                   " returned an invalid length %" PRIu64, offset,
                   status.length);
        return false;
    }
    *entry = (struct map_entry){
        .start = offset,
        .length = status.length,
        .depth = status.depth,
        .present = status.present,
        .zero = status.zero,
        .data = status.data,
        .has_offset = status.has_offset,
        .offset = status.has_offset ? status.offset : 0,
    };
    return true;
}

/* [start, start + length) of the image, clipped to its size; the first
 * and last ranges are cut at the edges, as qemu-img map cuts them. */
static uint64_t walk_end(uint64_t size, uint64_t start, uint64_t length)
{
    if (start >= size)
        return start;
    return length < size - start ? start + length : size;
}

static bool walk_image(const char *path, qed_image *image,
                       const struct map_range *range,
                       struct map_printer *printer)
{
    uint64_t end = walk_end(qed_size(image), range->start, range->length);
    struct map_entry pending = {0};
    bool have_pending = false;

    printer->start = range->start;
    print_start(printer);
    for (uint64_t offset = range->start; offset < end;) {
        struct map_entry next;

        if (!query_status(path, image, offset, end, &next))
            return false;
        offset += next.length;
        if (have_pending && entries_mergeable(&pending, &next)) {
            pending.length += next.length;
            continue;
        }
        if (have_pending)
            print_entry(printer, &pending);
        pending = next;
        have_pending = true;
    }
    if (have_pending)
        print_entry(printer, &pending);
    print_end(printer);
    return true;
}

/* ---- command ------------------------------------------------------------- */

static int map_image(const char *path, enum qed_format format, bool json,
                     unsigned open_flags, const struct map_range *range)
{
    struct map_printer printer = {.json = json};
    qed_image *image;
    bool ok;

    if (!tool_open(path, format, open_flags, &image))
        return 1;
    ok = json || collect_layer_names(path, image, &printer);
    ok = ok && walk_image(path, image, range, &printer);
    ok = tool_close(path, image) && ok;
    free_layer_names(&printer);
    return ok ? 0 : 1;
}

/* Offsets and lengths as qemu-img takes them: sizes up to INT64_MAX. */
static bool parse_offset(const char *text, const char *what, uint64_t *out)
{
    if (!tool_parse_size(text, what, out))
        return false;
    if (*out > INT64_MAX) {
        tool_error(NULL, "%s %s is too large (it must be between 0 and %"
                   PRId64 ")", what, text, INT64_MAX);
        return false;
    }
    return true;
}

static int map_run(const struct tool_command *cmd, int argc, char **argv)
{
    enum { OPT_OUTPUT = TOOL_OPT_HELP + 1 };
    static const struct option long_options[] = {
        {"help", no_argument, NULL, TOOL_OPT_HELP},
        {"output", required_argument, NULL, OPT_OUTPUT},
        {"start-offset", required_argument, NULL, 's'},
        {"max-length", required_argument, NULL, 'l'},
        TOOL_FORCE_SHARE_OPTION,
        {NULL, 0, NULL, 0},
    };
    enum qed_format format = QED_FORMAT_PROBE;
    struct map_range range = {.start = 0, .length = UINT64_MAX};
    bool json = false;
    unsigned open_flags = 0;
    int ch;

    while ((ch = getopt_long(argc, argv, ":hf:s:l:U", long_options, NULL)) !=
           -1) {
        switch (ch) {
        case 'h':
        case TOOL_OPT_HELP:
            tool_print_help(stdout, cmd);
            return 0;
        case 'f':
            if (!tool_parse_format(optarg, &format))
                return 1;
            break;
        case OPT_OUTPUT:
            if (!tool_parse_output(optarg, &json))
                return 1;
            break;
        case 's':
            if (!parse_offset(optarg, "start offset", &range.start))
                return 1;
            break;
        case 'l':
            if (!parse_offset(optarg, "max length", &range.length))
                return 1;
            break;
        case 'U':
            open_flags |= QED_OPEN_FORCE_SHARE;
            break;
        default:
            return tool_bad_option(cmd, ch, argv);
        }
    }
    if (argc - optind != 1)
        return tool_bad_usage(cmd, argc - optind < 1 ? "missing FILE"
                                                     : "too many arguments");
    return map_image(argv[optind], format, json, open_flags, &range);
}

const struct tool_command map_command = {
    .name = "map",
    .synopsis = "[-U] [-f FMT] [--start-offset=OFFSET] [--max-length=LEN]\n"
                "               [--output=human|json] FILE",
    .summary = "Show which layer and host offset every range comes from.",
    .details =
        "Options:\n"
        "  -f qed|raw      image format (probed by default)\n"
        "  -s, --start-offset=OFFSET\n"
        "                  start the listing at OFFSET (default 0)\n"
        "  -l, --max-length=LEN\n"
        "                  list at most LEN bytes from there (default: to\n"
        "                  the end); the first and last ranges are cut at\n"
        "                  the edges, as qemu-img map cuts them\n"
        "  --output=FMT    human (default): the ranges holding data, with\n"
        "                  their host offset and file; json: every range as\n"
        "                  {start, length, depth, present, zero, data\n"
        "                  [, offset]}, the same as qemu-img map\n"
        TOOL_FORCE_SHARE_HELP,
    .run = map_run,
};
