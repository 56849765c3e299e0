/* SPDX-License-Identifier: MIT */
/* `qed convert`: copy an image's visible content into a new (or, with -n,
 * an existing) raw or QED image, keeping it sparse (qed_convert does the
 * work).  Options and messages follow qemu-img convert. */
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* qemu-img's limit for -S: 32768 sectors. */
#define MAX_MIN_SPARSE (32768u * 512)

/* An image named by a path, or by qemu-img's key=value options. */
struct image_spec {
    const char *text;          /* as given on the command line */
    char *storage;             /* the options split up (freed at the end) */
    const char *filename;
    enum qed_format format;    /* PROBE unless given */
    bool format_given;
    bool cache_given;          /* cache.direct given */
    enum qed_cache cache;
    bool no_flush_given;       /* cache.no-flush given */
    bool no_flush;
    bool read_only;
    bool force_share;          /* -U, or force-share=on */
    enum qed_lock_mode locking; /* file.locking */
};

struct convert_args {
    struct image_spec source, target;
    bool progress;
    bool quiet;
    bool options_given;        /* -o */
    bool backing_given;        /* -B, -F */
    bool image_opts, target_image_opts;
    bool compress;
    bool copy_on_read;         /* SRC read-write: what it reads from its
                                  backing chain is written into it */
    const char *snapshot;
    bool target_format_given;
    enum qed_cache source_cache;
    struct tool_create_settings settings;
    struct qed_op_options op;
    struct qed_convert_options convert;
};

static void show_progress(void *opaque, uint64_t done, uint64_t total)
{
    tool_progress_update(opaque, done, total);
}

/* The warnings name the source: the ranges they tell of are its own. */
static void show_warning(void *opaque, const char *message)
{
    const char *source = opaque;
    tool_error(source, "warning: %s", message);
}

static bool open_source(struct convert_args *args, qed_image **out)
{
    struct qed_open_options options = {
        .size = sizeof(options),
        .format = args->source.format,
        .cache = args->source.cache_given ? args->source.cache
                                          : args->source_cache,
        .flags = args->source.force_share ? QED_OPEN_FORCE_SHARE
                 : args->copy_on_read ? QED_OPEN_RDWR | QED_OPEN_COPY_ON_READ
                 : 0,
        .locking = args->source.locking,
    };
    qed_error err = {0};

    if (tool_qed_open(args->source.filename, &options, out, &err) < 0) {
        tool_report(args->source.filename, NULL, &err);
        *out = NULL;
        return false;
    }
    tool_report_warnings(args->source.filename, *out);
    return true;
}

static int convert(struct convert_args *args)
{
    struct tool_progress progress;
    qed_error err = {0};
    qed_image *source;
    int ret;

    if (!open_source(args, &source))
        return 1;
    args->convert.create = &args->settings.options;
    tool_progress_start(&progress, args->progress && !args->quiet);
    args->op.progress = show_progress;
    args->op.progress_opaque = &progress;
    args->convert.op = &args->op;
    if (!args->quiet)
        args->convert.warning = show_warning;
    args->convert.warning_opaque = (void *)args->source.filename;
    ret = qed_convert(source, args->target.filename, &args->convert, &err);
    tool_progress_finish(&progress);
    if (ret < 0)
        tool_report(args->target.filename, NULL, &err);
    else if (args->convert.format == QED_FORMAT_QED)
        tool_warn_qemu_incompatible(args->target.filename, args->convert.create,
                                    (qed_size(source) + 511) & ~(uint64_t)511);
    if (!tool_close(args->source.filename, source))
        ret = -1;
    return ret < 0 ? 1 : 0;
}

/* ---- cache modes ----------------------------------------------------------- */

/* qemu-img's cache mode names and what libqed has for each: O_DIRECT or
 * the page cache, and whether the output is flushed.  There is no
 * write-through mode: directsync and writethrough flush once, at the end,
 * like none and writeback. */
struct cache_mode {
    const char *name;
    enum qed_cache cache;
    bool unsafe;
};

static const struct cache_mode cache_modes[] = {
    {"none", QED_CACHE_NONE, false},
    {"off", QED_CACHE_NONE, false},
    {"directsync", QED_CACHE_NONE, false},
    {"writeback", QED_CACHE_WRITEBACK, false},
    {"writethrough", QED_CACHE_WRITEBACK, false},
    {"unsafe", QED_CACHE_WRITEBACK, true},
};

static const struct cache_mode *find_cache_mode(const char *text)
{
    for (size_t i = 0; i < sizeof(cache_modes) / sizeof(cache_modes[0]); i++)
        if (strcmp(text, cache_modes[i].name) == 0)
            return &cache_modes[i];
    return NULL;
}

/* -t: the output (default unsafe, as qemu-img convert: never flushed). */
static bool parse_target_cache(const char *text, struct qed_convert_options *o)
{
    const struct cache_mode *mode = find_cache_mode(text);

    if (!mode) {
        tool_error(NULL, "convert: unknown cache mode '%s' (expected none, "
                   "off, directsync, writeback, writethrough or unsafe)",
                   text);
        return false;
    }
    o->cache = mode->cache;
    o->unsafe = mode->unsafe;
    return true;
}

/* -T: the source is only read, so only O_DIRECT or not matters. */
static bool parse_source_cache(const char *text, enum qed_cache *cache)
{
    const struct cache_mode *mode = find_cache_mode(text);

    if (!mode) {
        tool_error(NULL, "convert: Invalid source cache option: %s", text);
        return false;
    }
    *cache = mode->cache;
    return true;
}

/* ---- numbers ------------------------------------------------------------------ */

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

/* qemu-img's words for a size it cannot read, on one line. */
static bool parse_size_for(const char *text, const char *what, uint64_t *out)
{
    if (text[0] != '-' && qed_parse_size(text, out, NULL) == 0)
        return true;
    tool_error(NULL, "convert: Invalid %s specified. You may use k, M, G, "
               "T, P or E suffixes for kilobytes, megabytes, gigabytes, "
               "terabytes, petabytes and exabytes.", what);
    return false;
}

/* -S SIZE: a multiple of 512 up to 16 MiB; 0 writes everything. */
static bool parse_min_sparse(const char *text, struct qed_convert_options *o)
{
    uint64_t size;

    if (!parse_size_for(text, "buffer size for sparse output", &size))
        return false;
    if (size % 512 != 0 || size > MAX_MIN_SPARSE) {
        tool_error(NULL, "convert: Invalid buffer size for sparse output "
                   "specified. Valid sizes are multiples of 512 up to %u. "
                   "Select 0 to disable sparse detection (fully allocates "
                   "output).", MAX_MIN_SPARSE);
        return false;
    }
    o->write_all = size == 0;
    o->min_sparse = (uint32_t)size;
    return true;
}

/* ---- --image-opts -------------------------------------------------------------- */

static bool parse_bool(const char *text, bool *out)
{
    static const char *const yes[] = {"on", "yes", "true"};
    static const char *const no[] = {"off", "no", "false"};

    for (size_t i = 0; i < 3; i++) {
        if (strcmp(text, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcmp(text, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

/* driver=qed|raw|file (file: the bytes of the file, that is raw). */
static bool set_driver(struct image_spec *spec, const char *value)
{
    if (strcmp(value, "qed") == 0)
        spec->format = QED_FORMAT_QED;
    else if (strcmp(value, "raw") == 0 || strcmp(value, "file") == 0)
        spec->format = QED_FORMAT_RAW;
    else {
        tool_error(spec->text, "Unknown driver '%s' (expected qed, raw or "
                   "file)", value);
        return false;
    }
    spec->format_given = true;
    return true;
}

static const char *driver_name(const struct image_spec *spec)
{
    return spec->format_given ? qed_format_name(spec->format) : "probe";
}

/* file.locking=on|off|auto, as QEMU's file driver takes it. */
static bool set_locking(struct image_spec *spec, const char *value)
{
    if (strcmp(value, "auto") == 0)
        spec->locking = QED_LOCK_AUTO;
    else if (strcmp(value, "on") == 0)
        spec->locking = QED_LOCK_ON;
    else if (strcmp(value, "off") == 0)
        spec->locking = QED_LOCK_OFF;
    else {
        tool_error(spec->text, "Parameter 'locking' does not accept value "
                   "'%s'", value);
        return false;
    }
    return true;
}

static bool set_option(struct image_spec *spec, const char *key,
                       const char *value)
{
    bool on;

    if (strcmp(key, "driver") == 0)
        return set_driver(spec, value);
    if (strcmp(key, "file.driver") == 0) {
        if (strcmp(value, "file") == 0)
            return true;
        tool_error(spec->text, "Unknown protocol driver '%s' for 'file' "
                   "(expected file)", value);
        return false;
    }
    if (strcmp(key, "file.filename") == 0 || strcmp(key, "filename") == 0) {
        spec->filename = value;
        return true;
    }
    if (strcmp(key, "file") == 0) {
        tool_error(spec->text, "'file=%s' names a block node, which qed does "
                   "not have; use file.filename=%s", value, value);
        return false;
    }
    if (strcmp(key, "file.locking") == 0)
        return set_locking(spec, value);
    if (strcmp(key, "cache.direct") == 0 ||
        strcmp(key, "cache.no-flush") == 0 || strcmp(key, "read-only") == 0 ||
        strcmp(key, "force-share") == 0) {
        if (!parse_bool(value, &on)) {
            tool_error(spec->text, "Parameter '%s' expects 'on' or 'off'",
                       key);
            return false;
        }
        if (key[0] == 'r') {
            spec->read_only = on;
        } else if (key[0] == 'f') {
            spec->force_share = on;
        } else if (strcmp(key, "cache.direct") == 0) {
            spec->cache_given = true;
            spec->cache = on ? QED_CACHE_NONE : QED_CACHE_WRITEBACK;
        } else {
            spec->no_flush_given = true;
            spec->no_flush = on;
        }
        return true;
    }
    tool_error(spec->text, "Block format '%s' does not support the option "
               "'%s'", driver_name(spec), key);
    return false;
}

/* Parses "driver=qed,file.filename=x.qed,cache.direct=on" (a copy of the
 * text, spec->storage, is split in place). */
static bool parse_image_opts(const char *text, struct image_spec *spec)
{
    char *copy = strdup(text);
    char *save = NULL;

    spec->text = text;
    spec->filename = NULL;
    spec->storage = copy;
    if (!copy) {
        tool_error(text, "out of memory");
        return false;
    }
    for (char *item = strtok_r(copy, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');

        if (!eq) {
            tool_error(text, "'%s' is not key=value (image options look "
                       "like driver=qed,file.filename=disk.qed)", item);
            return false;
        }
        *eq = '\0';
        if (!set_option(spec, item, eq + 1))
            return false;
    }
    if (!spec->filename || !spec->filename[0]) {
        tool_error(text, "A block device must be specified for \"file\" "
                   "(file.filename=PATH)");
        return false;
    }
    return true;
}

/* ---- checks ------------------------------------------------------------------------ */

/* What qemu-img refuses before it opens anything. */
static bool check_combinations(const struct convert_args *args)
{
    if (args->target_image_opts && !args->convert.existing) {
        tool_error(NULL, "convert: --target-image-opts requires use of -n "
                   "flag");
        return false;
    }
    if (args->convert.existing && args->options_given) {
        tool_error(NULL, "convert: -o has no effect when skipping image "
                   "creation");
        return false;
    }
    if (args->convert.existing && args->backing_given) {
        tool_error(NULL, "convert: -B and -F have no effect when skipping "
                   "image creation");
        return false;
    }
    if ((args->options_given || args->backing_given) &&
        args->convert.format != QED_FORMAT_QED) {
        tool_error(NULL, "convert: -o, -B and -F need a qed output (-O qed)");
        return false;
    }
    if (args->copy_on_read && args->source.force_share) {
        tool_error(NULL, "convert: --copy-on-read writes into SRC: it cannot "
                   "be used with -U");
        return false;
    }
    return true;
}

/* -c and -l: qemu-img's messages for formats without compression or
 * internal snapshots, which QED and raw both lack. */
static bool refuse_unsupported(const struct convert_args *args)
{
    if (args->snapshot) {
        tool_error(args->source.filename, "Failed to load snapshot: Block "
                   "format '%s' does not support temporarily loading "
                   "internal snapshots ('%s')",
                   args->source.format_given
                       ? qed_format_name(args->source.format) : "qed",
                   args->snapshot);
        return false;
    }
    if (args->compress) {
        tool_error(args->target.filename, "Compression not supported for "
                   "this file format");
        return false;
    }
    return true;
}

static bool set_image(const char *text, bool opts, struct image_spec *spec)
{
    if (opts)
        return parse_image_opts(text, spec);
    spec->text = text;
    spec->filename = text;
    return true;
}

/* The output: -O, or the driver of --target-image-opts (probed when it
 * has none and -O is not given); its cache options override -t. */
static bool settle_target(struct convert_args *args)
{
    struct image_spec *t = &args->target;

    if (t->read_only) {
        tool_error(t->text, "Block node is read-only");
        return false;
    }
    if (t->force_share) {
        tool_error(t->text, "force-share=on can only be used with read-only "
                   "images");
        return false;
    }
    /* The output is opened by the library's convert, which always locks
     * it: a target written without locks is not offered. */
    if (t->locking == QED_LOCK_OFF) {
        tool_error(t->text, "file.locking=off is not supported for the "
                   "target: it is always locked while it is written");
        return false;
    }
    if (args->target_image_opts) {
        if (t->format_given)
            args->convert.format = t->format;
        else if (!args->target_format_given)
            args->convert.format = QED_FORMAT_PROBE;
    }
    if (t->cache_given)
        args->convert.cache = t->cache;
    if (t->no_flush_given)
        args->convert.unsafe = t->no_flush;
    return true;
}

static int parse_and_convert(const struct tool_command *cmd, int argc,
                             char **argv, struct convert_args *out)
{
    enum {
        OPT_IMAGE_OPTS = TOOL_OPT_HELP + 1,
        OPT_TARGET_IMAGE_OPTS,
        OPT_SALVAGE,
        OPT_COPY_ON_READ,
    };
    static const struct option long_options[] = {
        {"help", no_argument, NULL, TOOL_OPT_HELP},
        {"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
        {"target-image-opts", no_argument, NULL, OPT_TARGET_IMAGE_OPTS},
        {"salvage", no_argument, NULL, OPT_SALVAGE},
        {"copy-on-read", no_argument, NULL, OPT_COPY_ON_READ},
        TOOL_FORCE_SHARE_OPTION,
        {NULL, 0, NULL, 0},
    };
    struct convert_args args = {
        .settings = {.options = {.size = sizeof(struct qed_create_options)}},
        .op = {.size = sizeof(struct qed_op_options)},
        .convert = {.size = sizeof(struct qed_convert_options),
                    .format = QED_FORMAT_RAW, .unsafe = true},
    };
    enum qed_format backing_format;
    int ret;
    int ch;

    while ((ch = getopt_long(argc, argv, ":hpqf:O:o:B:F:t:T:m:nS:Wr:cl:U",
                             long_options, NULL)) != -1) {
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
            if (!tool_parse_format(optarg, &args.source.format))
                return 1;
            args.source.format_given = true;
            break;
        case 'O':
            if (!tool_parse_format(optarg, &args.convert.format))
                return 1;
            args.target_format_given = true;
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
            args.backing_given = true;
            break;
        case 'F':
            if (!tool_parse_format(optarg, &backing_format))
                return 1;
            args.settings.options.backing_format = backing_format;
            args.backing_given = true;
            break;
        case 't':
            if (!parse_target_cache(optarg, &args.convert))
                return 1;
            break;
        case 'T':
            if (!parse_source_cache(optarg, &args.source_cache))
                return 1;
            break;
        case 'm':
            if (!parse_requests(optarg, &args.op.requests))
                return 1;
            break;
        case 'n':
            args.convert.existing = true;
            break;
        case 'S':
            if (!parse_min_sparse(optarg, &args.convert))
                return 1;
            break;
        case 'W':
            args.convert.out_of_order = true;
            break;
        case 'U':
            args.source.force_share = true;
            break;
        case 'r':
            if (!parse_size_for(optarg, "rate limit",
                                &args.convert.rate_limit))
                return 1;
            break;
        case 'c':
            args.compress = true;
            break;
        case 'l':
            args.snapshot = optarg;
            break;
        case OPT_IMAGE_OPTS:
            args.image_opts = true;
            break;
        case OPT_TARGET_IMAGE_OPTS:
            args.target_image_opts = true;
            break;
        case OPT_SALVAGE:
            args.convert.salvage = true;
            break;
        case OPT_COPY_ON_READ:
            args.copy_on_read = true;
            break;
        default:
            return tool_bad_option(cmd, ch, argv);
        }
    }
    if (argc - optind != 2)
        return tool_bad_usage(cmd, "expected SRC and DST");
    if (!check_combinations(&args))
        return 1;
    ret = set_image(argv[optind], args.image_opts, &args.source) &&
          set_image(argv[optind + 1], args.target_image_opts, &args.target) &&
          refuse_unsupported(&args) && settle_target(&args);
    if (ret)
        ret = convert(&args);
    else
        ret = 1;
    out->source.storage = args.source.storage;
    out->target.storage = args.target.storage;
    return ret;
}

static int convert_run(const struct tool_command *cmd, int argc, char **argv)
{
    struct convert_args args = { 0 };
    int ret = parse_and_convert(cmd, argc, argv, &args);

    free(args.source.storage);
    free(args.target.storage);
    return ret;
}

const struct tool_command convert_command = {
    .name = "convert",
    .synopsis = "[-p] [-q] [-n] [-W] [-U] [--salvage] [--copy-on-read] "
                "[-f FMT] [-O raw|qed] "
                "[-o OPTIONS] [-B BACKING [-F FMT]] [-S SIZE] [-t CACHE] "
                "[-T CACHE] [-m N] [-r RATE] [--image-opts] "
                "[--target-image-opts] SRC DST",
    .summary = "Copy an image's content into a new raw or QED image.",
    .details =
        "Options:\n"
        "  -p            show progress on stderr (when it is a terminal)\n"
        "  -q            quiet: no progress, no warnings\n"
        "  -n            do not create DST: write into the existing image\n"
        "                (opened as -O says, raw by default), which must be\n"
        "                at least as large as SRC; afterwards it reads like\n"
        "                SRC over SRC's size\n"
        "  -f qed|raw    source format (probed by default)\n"
        "  -O raw|qed    output format (default raw)\n"
        "  -o OPTIONS    qed output: cluster_size=SIZE, table_size=N,\n"
        "                backing_file=NAME, backing_fmt=raw|qed\n"
        "  -B BACKING    qed output: backing file of the new image; only what\n"
        "                reads differently from it is written, so the output\n"
        "                reads exactly like the source\n"
        "  -F raw|qed    format of the -B backing file (probed by default)\n"
        "  -S SIZE       shortest run of zero bytes left unwritten (sparse):\n"
        "                a multiple of 512 up to 16M, default 4k; shorter\n"
        "                runs between data are written; 0 writes everything\n"
        "                (a fully allocated output)\n"
        "  -t CACHE      output cache mode: unsafe (default, as qemu-img\n"
        "                convert: never flushed, the system writes it back\n"
        "                later), writeback or writethrough (flushed at the\n"
        "                end), none, off or directsync (O_DIRECT, flushed at\n"
        "                the end)\n"
        "  -T CACHE      source cache mode: none, off or directsync read\n"
        "                with O_DIRECT; writeback (default), writethrough\n"
        "                and unsafe through the page cache\n"
        "  -m N          requests in flight (1 to 256, default 8)\n"
        "  -W            allow out-of-order writes: without it writes into\n"
        "                a qed output go out in order of offset, so its\n"
        "                clusters follow the disk's order; with it each\n"
        "                write goes out as soon as its data is read (faster,\n"
        "                clusters in completion order).  A raw output's\n"
        "                writes are never held back: order cannot change\n"
        "                where its bytes go\n"
        "  -U, --force-share\n"
        "                read SRC without conflicting with a program writing\n"
        "                it (the copy may then be inconsistent)\n"
        "  --copy-on-read\n"
        "                open SRC read-write and write what it reads from its\n"
        "                backing chain into it: afterwards SRC holds all its\n"
        "                data itself\n"
        "  -r RATE       copy at most RATE bytes of data per second\n"
        "                (suffixes k, M, G...; 0: no limit)\n"
        "  --salvage     go on past parts of SRC that cannot be read: they\n"
        "                are retried in smaller pieces down to 512 bytes,\n"
        "                what still fails is written as zeros, and a\n"
        "                warning names each such range\n"
        "  --image-opts  SRC is key=value options instead of a file name:\n"
        "                driver=qed|raw|file, file.driver=file,\n"
        "                file.filename=PATH (or filename=PATH),\n"
        "                cache.direct=on|off, cache.no-flush=on|off,\n"
        "                read-only=on|off, force-share=on|off (SRC),\n"
        "                file.locking=on|off|auto (off: SRC only)\n"
        "  --target-image-opts\n"
        "                DST is key=value options, likewise (needs -n;\n"
        "                without driver= and -O its format is probed)\n"
        "\n"
        "The output stays sparse: unallocated and all-zero ranges of the\n"
        "source are not written.  A raw output that is a block device is\n"
        "written in place (zeros included).  -c (compression) and -l\n"
        "(internal snapshots) are refused: neither format has them.\n",
    .run = convert_run,
};
