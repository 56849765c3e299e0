/* SPDX-License-Identifier: MIT */
/* `qed check`: consistency check (and repair) of a QED image, like
 * qemu-img check: the same messages, JSON field names and exit statuses. */
#include <getopt.h>
#include <inttypes.h>
#include <string.h>

#include "common.h"

enum {
    CHECK_OK = 0,          /* no problem remains */
    CHECK_FAILED = 1,      /* the check could not complete */
    CHECK_CORRUPT = 2,     /* corruptions remain */
    CHECK_LEAKS = 3,       /* only leaked clusters remain */
    CHECK_UNSUPPORTED = 63, /* the format has nothing to check (raw) */
};

struct check_args {
    const char *path;
    enum qed_format format;
    unsigned repair;       /* QED_CHECK_REPAIR_* */
    bool json;
    bool quiet;
    bool progress;
    bool force_share;
};

/* ---- output -------------------------------------------------------------- */

static void print_json(const struct check_args *args,
                       const struct qed_check_result *r)
{
    struct tool_json json;

    tool_json_init(&json, stdout);
    tool_json_begin_object(&json, NULL);
    tool_json_str(&json, "filename", args->path);
    tool_json_str(&json, "format", "qed");
    tool_json_uint(&json, "check-errors", r->check_errors);
    tool_json_uint(&json, "corruptions", r->corruptions);
    tool_json_uint(&json, "leaks", r->leaks);
    tool_json_uint(&json, "corruptions-fixed", r->corruptions_fixed);
    tool_json_uint(&json, "leaks-fixed", r->leaks_fixed);
    tool_json_uint(&json, "total-clusters", r->total_clusters);
    tool_json_uint(&json, "allocated-clusters", r->allocated_clusters);
    tool_json_uint(&json, "fragmented-clusters", r->fragmented_clusters);
    tool_json_uint(&json, "image-end-offset", r->image_end_offset);
    tool_json_end_object(&json);
    tool_json_finish(&json);
}

/* qemu-img check's wording, line for line. */
static void print_human(const struct qed_check_result *r)
{
    if (!(r->corruptions || r->leaks || r->check_errors)) {
        printf("No errors were found on the image.\n");
    } else {
        if (r->corruptions)
            printf("\n%" PRIu64 " errors were found on the image.\n"
                   "Data may be corrupted, or further writes to the image "
                   "may corrupt it.\n",
                   r->corruptions);
        if (r->leaks)
            printf("\n%" PRIu64 " leaked clusters were found on the image.\n"
                   "This means waste of disk space, but no harm to data.\n",
                   r->leaks);
        if (r->check_errors)
            printf("\n%" PRIu64 " internal errors have occurred during the "
                   "check.\n",
                   r->check_errors);
    }
    if (r->total_clusters != 0 && r->allocated_clusters != 0)
        printf("%" PRIu64 "/%" PRIu64 " = %0.2f%% allocated, %0.2f%% "
               "fragmented, %0.2f%% compressed clusters\n",
               r->allocated_clusters, r->total_clusters,
               (double)r->allocated_clusters * 100.0 /
                   (double)r->total_clusters,
               (double)r->fragmented_clusters * 100.0 /
                   (double)r->allocated_clusters,
               0.0);
    if (r->image_end_offset)
        printf("Image end offset: %" PRIu64 "\n", r->image_end_offset);
}

/* ---- command ------------------------------------------------------------- */

static bool run_check(const struct check_args *args, qed_image *image,
                      struct qed_check_result *result)
{
    struct qed_check_result fixed;
    qed_error err = {0};

    if (qed_check(image, args->repair, result, &err) < 0) {
        tool_report(args->path, "check failed", &err);
        return false;
    }
    if (!args->repair ||
        (result->corruptions_fixed == 0 && result->leaks_fixed == 0))
        return true;
    /* Like qemu-img: say what was repaired, then report what a second
     * check finds, with the repair counts of the first. */
    if (!args->json && !args->quiet)
        printf("The following inconsistencies were found and repaired:\n\n"
               "    %" PRIu64 " leaked clusters\n"
               "    %" PRIu64 " corruptions\n\n"
               "Double checking the fixed image now...\n",
               result->leaks_fixed, result->corruptions_fixed);
    fixed = *result;
    memset(&err, 0, sizeof(err));
    if (qed_check(image, 0, result, &err) < 0) {
        tool_report(args->path, "check of the repaired image failed", &err);
        return false;
    }
    result->corruptions_fixed = fixed.corruptions_fixed;
    result->leaks_fixed = fixed.leaks_fixed;
    return true;
}

static int check_image(const struct check_args *args)
{
    /* Without repair the backing file is not needed (nor opened); a repair
     * opens the image as it is, dirty or not, to look at it first. */
    unsigned flags = args->repair ? QED_OPEN_RDWR | QED_OPEN_NO_CHECK
                                  : QED_OPEN_NO_BACKING;
    struct qed_check_result result = { .size = sizeof(result) };
    struct tool_progress progress;

    if (args->force_share)
        flags |= QED_OPEN_FORCE_SHARE;
    qed_image *image;
    int status;

    if (!tool_open(args->path, args->format, flags, &image))
        return CHECK_FAILED;
    /* qemu-img's words and status, whatever the output format or -q:
     * scripts tell "nothing to check" apart from a failed check by 63. */
    if (qed_format_of(image) != QED_FORMAT_QED) {
        tool_error(args->path, "This image format does not support checks");
        tool_close(args->path, image);
        return CHECK_UNSUPPORTED;
    }
    tool_progress_start(&progress, args->progress);
    if (!run_check(args, image, &result)) {
        tool_progress_finish(&progress);
        tool_close(args->path, image);
        return CHECK_FAILED;
    }
    tool_progress_finish(&progress);
    if (args->json)
        print_json(args, &result);
    else if (!args->quiet)
        print_human(&result);
    if (!tool_close(args->path, image))
        return CHECK_FAILED;
    if (result.check_errors) {
        tool_error(args->path, "check failed: %" PRIu64 " tables could not "
                   "be read", result.check_errors);
        status = CHECK_FAILED;
    } else if (result.corruptions) {
        status = CHECK_CORRUPT;
    } else if (result.leaks) {
        status = CHECK_LEAKS;
    } else {
        status = CHECK_OK;
    }
    return status;
}

static bool parse_repair(const char *text, unsigned *out)
{
    if (strcmp(text, "leaks") == 0) {
        *out = QED_CHECK_REPAIR_LEAKS;
        return true;
    }
    if (strcmp(text, "all") == 0) {
        *out = QED_CHECK_REPAIR_ALL;
        return true;
    }
    tool_error(NULL, "check: -r must be leaks or all, not '%s'", text);
    return false;
}

static int check_cmd_run(const struct tool_command *cmd, int argc, char **argv)
{
    enum { OPT_OUTPUT = TOOL_OPT_HELP + 1 };
    static const struct option long_options[] = {
        {"help", no_argument, NULL, TOOL_OPT_HELP},
        {"output", required_argument, NULL, OPT_OUTPUT},
        {"repair", required_argument, NULL, 'r'},
        {"quiet", no_argument, NULL, 'q'},
        {"format", required_argument, NULL, 'f'},
        {"progress", no_argument, NULL, 'p'},
        TOOL_FORCE_SHARE_OPTION,
        {NULL, 0, NULL, 0},
    };
    struct check_args args = {0};
    int ch;

    while ((ch = getopt_long(argc, argv, ":hqpf:r:U", long_options, NULL)) !=
           -1) {
        switch (ch) {
        case 'h':
        case TOOL_OPT_HELP:
            tool_print_help(stdout, cmd);
            return 0;
        case 'q':
            args.quiet = true;
            break;
        case 'p':
            args.progress = true;
            break;
        case 'f':
            if (!tool_parse_format(optarg, &args.format))
                return CHECK_FAILED;
            break;
        case 'r':
            if (!parse_repair(optarg, &args.repair))
                return CHECK_FAILED;
            break;
        case OPT_OUTPUT:
            if (!tool_parse_output(optarg, &args.json))
                return CHECK_FAILED;
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
    return check_image(&args);
}

const struct tool_command check_command = {
    .name = "check",
    .synopsis = "[-q] [-p] [-U] [-f FMT] [-r leaks|all] [--output=human|json] "
                "FILE",
    .summary = "Check a QED image for corruption and leaked clusters; "
               "repair them.",
    .details =
        "Options:\n"
        "  -f qed|raw          image format (probed by default; only qed\n"
        "                      images can be checked: a raw one exits 63)\n"
        "  -r leaks            reclaim leaked clusters (clusters nothing\n"
        "                      references)\n"
        "  -r all              also repair corruptions: invalid offsets,\n"
        "                      tables that do not fit in the file, clusters\n"
        "                      referenced twice (each reference gets its own\n"
        "                      copy, so no data changes)\n"
        "  --output=FMT        human (default) or json, with qemu-img's\n"
        "                      field names\n"
        "  -q                  quiet: no human output\n"
        "  -p                  show progress on a terminal\n"
        TOOL_FORCE_SHARE_HELP
        "                      (not with -r)\n"
        "\n"
        "Exit status: 0 no problem remains, 1 the check could not complete,\n"
        "2 corruptions remain, 3 only leaked clusters remain, 63 the format\n"
        "(raw) does not support checks.\n"
        "After a repair the image is checked again; the status describes\n"
        "what remains.\n",
    .run = check_cmd_run,
};
