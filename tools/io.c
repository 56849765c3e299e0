/* `qed io`: run qemu-io style commands (read, write, discard, flush) on an
 * image, with qemu-io's output so that scripts and logs carry over. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"

/* Reads and writes go through a buffer of at most this size, so that a
 * command covering a whole large image needs little memory. */
#define IO_DATA_CHUNK (16u * 1024 * 1024)
/* Zero writes and discards need no buffer, but are still split so no single
 * request is huge; the split points are absolute multiples of this size,
 * which every cluster size divides, so whole clusters stay whole. */
#define IO_RANGE_CHUNK (1ull << 30)

#define IO_DEFAULT_PATTERN 0xcd

struct io_session {
    const char *path;
    qed_image *image;
};

struct io_range {
    uint64_t offset;
    uint64_t length;
};

typedef int io_handler(struct io_session *session, int argc, char **argv);

/* ---- argument helpers ---------------------------------------------------- */

static int io_bad_option(const char *name, int ch)
{
    if (ch == ':')
        tool_error(NULL, "%s: option requires an argument -- '%c'", name,
                   optopt);
    else
        tool_error(NULL, "%s: invalid option -- '%c'", name, optopt);
    return 1;
}

/* A pattern is one byte, written in decimal, octal (0...) or hex (0x...). */
static bool parse_pattern(const char *name, const char *text, int *pattern)
{
    char *end;
    long value;

    errno = 0;
    value = strtol(text, &end, 0);
    if (errno || end == text || *end || value < 0 || value > 255) {
        tool_error(NULL, "%s: %s is not a valid pattern byte", name, text);
        return false;
    }
    *pattern = (int)value;
    return true;
}

/* OFFSET LENGTH after the options, inside the image. */
static bool parse_range(struct io_session *session, const char *name,
                        int argc, char **argv, struct io_range *range)
{
    uint64_t size = qed_size(session->image);

    if (argc - optind != 2) {
        tool_error(NULL, "%s: expected OFFSET LENGTH after the options", name);
        return false;
    }
    if (!tool_parse_size(argv[optind], "offset", &range->offset) ||
        !tool_parse_size(argv[optind + 1], "length", &range->length))
        return false;
    if (range->offset > size || range->length > size - range->offset) {
        tool_error(session->path,
                   "%s: range %" PRIu64 "+%" PRIu64
                   " is past the end of the image (%" PRIu64 " bytes)",
                   name, range->offset, range->length, size);
        return false;
    }
    return true;
}

static bool expect_no_arguments(const char *name, int argc)
{
    if (argc - optind != 0) {
        tool_error(NULL, "%s: takes no arguments", name);
        return false;
    }
    return true;
}

/* ---- reporting ----------------------------------------------------------- */

static double seconds_since(const struct timespec *start)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) +
           (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* qemu-io's amounts: "512 bytes", "4 KiB", "1.103 GiB". */
static void format_amount(double value, char *buf, size_t len)
{
    static const char *const units[] = {"bytes", "KiB", "MiB", "GiB",
                                        "TiB",   "PiB", "EiB"};
    unsigned unit = 0;
    char *trailing;

    while (value >= 1024 && unit + 1 < sizeof(units) / sizeof(units[0])) {
        value /= 1024;
        unit++;
    }
    snprintf(buf, len, "%.3f", value);
    trailing = strstr(buf, ".000");
    if (trailing)
        *trailing = '\0';
    snprintf(buf + strlen(buf), len - strlen(buf), " %s", units[unit]);
}

/* "00.01 sec" under a second, "H:MM:SS.ss" from then on. */
static void format_elapsed(double seconds, char *buf, size_t len)
{
    unsigned long whole = (unsigned long)seconds;
    double fraction = seconds - (double)whole;

    if (whole == 0)
        snprintf(buf, len, "%05.2f sec", fraction);
    else
        snprintf(buf, len, "%lu:%02lu:%05.2f", whole / 3600,
                 whole / 60 % 60, (double)(whole % 60) + fraction);
}

static void print_report(const char *verb, const struct io_range *range,
                         double seconds)
{
    char amount[48], rate[48], elapsed[48];
    double per_second = seconds > 0 ? 1.0 / seconds : 0;

    format_amount((double)range->length, amount, sizeof(amount));
    format_amount((double)range->length * per_second, rate, sizeof(rate));
    format_elapsed(seconds, elapsed, sizeof(elapsed));
    printf("%s %" PRIu64 "/%" PRIu64 " bytes at offset %" PRIu64 "\n", verb,
           range->length, range->length, range->offset);
    printf("%s, 1 ops; %s (%s/sec and %.4f ops/sec)\n", amount, elapsed, rate,
           per_second);
}

/* Hex dump in qemu-io's layout: offset, 16 bytes, then the letters and
 * digits among them. */
static void dump_buffer(const unsigned char *buf, size_t len, uint64_t offset)
{
    for (size_t line = 0; line < len; line += 16) {
        size_t n = len - line < 16 ? len - line : 16;

        printf("%08" PRIx64 ":  ", offset + line);
        for (size_t i = 0; i < n; i++)
            printf("%02x ", buf[line + i]);
        putchar(' ');
        for (size_t i = 0; i < n; i++) {
            unsigned char c = buf[line + i];
            bool shown = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                         (c >= 'A' && c <= 'Z');
            putchar(shown ? c : '.');
        }
        putchar('\n');
    }
}

/* Buffer size for a read or write of length bytes. */
static size_t data_chunk_size(uint64_t length)
{
    return length < IO_DATA_CHUNK ? (size_t)length : IO_DATA_CHUNK;
}

/* ---- read ---------------------------------------------------------------- */

struct read_options {
    bool verify;
    int pattern;
    bool verbose;
    bool quiet;
};

/* Offset of the first byte that differs from the pattern, or len. */
static size_t first_mismatch(const unsigned char *buf, size_t len, int pattern)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] != pattern)
            return i;
    return len;
}

/* Returns 0 when all went well, READ_MISMATCH when the data did not match
 * the pattern, READ_FAILED when the image could not be read. */
enum { READ_MISMATCH = 1, READ_FAILED = 2 };

static int read_range(struct io_session *session, const struct io_range *range,
                      const struct read_options *opts)
{
    size_t chunk = data_chunk_size(range->length);
    unsigned char *buf = tool_alloc_buffer(chunk);
    bool mismatch_found = false;
    int status = 0;

    if (!buf) {
        tool_error(session->path, "read: out of memory");
        return READ_FAILED;
    }
    for (uint64_t done = 0; done < range->length;) {
        size_t n = range->length - done < chunk ? range->length - done : chunk;
        uint64_t at = range->offset + done;
        qed_error err = {0};

        if (qed_pread(session->image, buf, n, at, &err) < 0) {
            tool_report(session->path, "read failed", &err);
            status = READ_FAILED;
            break;
        }
        if (opts->verify && !mismatch_found) {
            size_t bad = first_mismatch(buf, n, opts->pattern);
            if (bad < n) {
                uint64_t bad_offset = at + bad;
                printf("Pattern verification failed at offset %" PRIu64
                       ", %" PRIu64 " bytes\n",
                       bad_offset, range->offset + range->length - bad_offset);
                mismatch_found = true;
                status = READ_MISMATCH;
            }
        }
        if (opts->verbose && !opts->quiet)
            dump_buffer(buf, n, at);
        done += n;
    }
    free(buf);
    return status;
}

static int io_read(struct io_session *session, int argc, char **argv)
{
    struct read_options opts = {0};
    struct io_range range;
    struct timespec start;
    int ch, status;

    while ((ch = getopt(argc, argv, ":P:vq")) != -1) {
        switch (ch) {
        case 'P':
            if (!parse_pattern(argv[0], optarg, &opts.pattern))
                return 1;
            opts.verify = true;
            break;
        case 'v':
            opts.verbose = true;
            break;
        case 'q':
            opts.quiet = true;
            break;
        default:
            return io_bad_option(argv[0], ch);
        }
    }
    if (!parse_range(session, argv[0], argc, argv, &range))
        return 1;
    clock_gettime(CLOCK_MONOTONIC, &start);
    status = read_range(session, &range, &opts);
    /* Like qemu-io, a failed verification still reports the read itself. */
    if (!opts.quiet && status != READ_FAILED)
        print_report("read", &range, seconds_since(&start));
    return status == 0 ? 0 : 1;
}

/* ---- write --------------------------------------------------------------- */

static int write_pattern(struct io_session *session,
                         const struct io_range *range, int pattern)
{
    size_t chunk = data_chunk_size(range->length);
    unsigned char *buf = tool_alloc_buffer(chunk);
    int status = 0;

    if (!buf) {
        tool_error(session->path, "write: out of memory");
        return 1;
    }
    memset(buf, pattern, chunk);
    for (uint64_t done = 0; done < range->length;) {
        size_t n = range->length - done < chunk ? range->length - done : chunk;
        qed_error err = {0};

        if (qed_pwrite(session->image, buf, n, range->offset + done,
                       &err) < 0) {
            tool_report(session->path, "write failed", &err);
            status = 1;
            break;
        }
        done += n;
    }
    free(buf);
    return status;
}

/* Length of the next piece of a zero write or discard starting at offset. */
static uint64_t range_piece(uint64_t offset, uint64_t end)
{
    uint64_t boundary = (offset / IO_RANGE_CHUNK + 1) * IO_RANGE_CHUNK;

    return (boundary < end ? boundary : end) - offset;
}

static int write_zeroes(struct io_session *session,
                        const struct io_range *range)
{
    uint64_t end = range->offset + range->length;

    for (uint64_t at = range->offset; at < end;) {
        uint64_t n = range_piece(at, end);
        qed_error err = {0};

        if (qed_write_zeroes(session->image, at, n, QED_ZERO_MAY_UNMAP,
                             &err) < 0) {
            tool_report(session->path, "write failed", &err);
            return 1;
        }
        at += n;
    }
    return 0;
}

static int io_write(struct io_session *session, int argc, char **argv)
{
    int pattern = IO_DEFAULT_PATTERN;
    bool pattern_given = false, zeroes = false, quiet = false;
    struct io_range range;
    struct timespec start;
    int ch, status;

    while ((ch = getopt(argc, argv, ":P:zuq")) != -1) {
        switch (ch) {
        case 'P':
            if (!parse_pattern(argv[0], optarg, &pattern))
                return 1;
            pattern_given = true;
            break;
        case 'z':
            zeroes = true;
            break;
        case 'u':
            /* qemu-io's "may unmap": zero writes always may here. */
            break;
        case 'q':
            quiet = true;
            break;
        default:
            return io_bad_option(argv[0], ch);
        }
    }
    if (zeroes && pattern_given) {
        tool_error(NULL, "%s: -z and -P cannot be used together", argv[0]);
        return 1;
    }
    if (!parse_range(session, argv[0], argc, argv, &range))
        return 1;
    clock_gettime(CLOCK_MONOTONIC, &start);
    status = zeroes ? write_zeroes(session, &range)
                    : write_pattern(session, &range, pattern);
    if (status == 0 && !quiet)
        print_report("wrote", &range, seconds_since(&start));
    return status;
}

/* ---- discard and flush --------------------------------------------------- */

static int io_discard(struct io_session *session, int argc, char **argv)
{
    bool quiet = false;
    struct io_range range;
    struct timespec start;
    uint64_t end;
    int ch;

    while ((ch = getopt(argc, argv, ":q")) != -1) {
        if (ch != 'q')
            return io_bad_option(argv[0], ch);
        quiet = true;
    }
    if (!parse_range(session, argv[0], argc, argv, &range))
        return 1;
    clock_gettime(CLOCK_MONOTONIC, &start);
    end = range.offset + range.length;
    for (uint64_t at = range.offset; at < end;) {
        uint64_t n = range_piece(at, end);
        qed_error err = {0};

        if (qed_discard(session->image, at, n, &err) < 0) {
            tool_report(session->path, "discard failed", &err);
            return 1;
        }
        at += n;
    }
    if (!quiet)
        print_report("discard", &range, seconds_since(&start));
    return 0;
}

static int io_flush(struct io_session *session, int argc, char **argv)
{
    qed_error err = {0};
    int ch;

    if ((ch = getopt(argc, argv, ":")) != -1)
        return io_bad_option(argv[0], ch);
    if (!expect_no_arguments(argv[0], argc))
        return 1;
    if (qed_flush(session->image, &err) < 0) {
        tool_report(session->path, "flush failed", &err);
        return 1;
    }
    return 0;
}

/* ---- command lines ------------------------------------------------------- */

static const struct {
    const char *name;
    const char *alias;
    io_handler *run;
} io_commands[] = {
    {"read", "r", io_read},
    {"write", "w", io_write},
    {"discard", "d", io_discard},
    {"flush", "f", io_flush},
};

static io_handler *find_io_command(const char *name)
{
    for (size_t i = 0; i < sizeof(io_commands) / sizeof(io_commands[0]); i++)
        if (strcmp(name, io_commands[i].name) == 0 ||
            strcmp(name, io_commands[i].alias) == 0)
            return io_commands[i].run;
    return NULL;
}

/* Splits a command line at blanks, in place; words has room for all. */
static int split_words(char *line, char **words)
{
    int count = 0;

    for (char *word = strtok(line, " \t\n"); word;
         word = strtok(NULL, " \t\n"))
        words[count++] = word;
    words[count] = NULL;
    return count;
}

static int run_command_line(struct io_session *session, const char *text)
{
    char *line = strdup(text);
    /* A line of n bytes has at most n/2 + 1 words, plus the NULL. */
    char **words = calloc(strlen(text) / 2 + 2, sizeof(*words));
    int status = 1;

    if (!line || !words) {
        tool_error(NULL, "out of memory");
    } else {
        int count = split_words(line, words);
        io_handler *run = count ? find_io_command(words[0]) : NULL;

        if (count == 0) {
            tool_error(NULL, "empty command");
        } else if (!run) {
            tool_error(NULL, "command \"%s\" not found", words[0]);
        } else {
            optind = 0; /* restart getopt for this command's words */
            status = run(session, count, words);
        }
    }
    free(words);
    free(line);
    return status;
}

/* Runs every command even after a failure, as qemu-io does; the exit status
 * says whether any failed. */
static int run_commands(struct io_session *session, char **lines, int count)
{
    int status = 0;

    for (int i = 0; i < count; i++)
        if (run_command_line(session, lines[i]) != 0)
            status = 1;
    return status;
}

static int io_image(const char *path, enum qed_format format, bool read_only,
                    char **lines, int count)
{
    struct io_session session = {.path = path};
    int status;

    if (!tool_open(path, format, read_only ? 0 : QED_OPEN_RDWR,
                   &session.image))
        return 1;
    status = run_commands(&session, lines, count);
    if (!tool_close(path, session.image))
        status = 1;
    return status;
}

static int io_run(const struct tool_command *cmd, int argc, char **argv)
{
    static const struct option long_options[] = {
        {"help", no_argument, NULL, TOOL_OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    enum qed_format format = QED_FORMAT_PROBE;
    bool read_only = false;
    char **lines;
    int count = 0, ch, status;

    /* Every -c could be an argument; argc bounds how many there are. */
    lines = calloc((size_t)argc + 1, sizeof(*lines));
    if (!lines) {
        tool_error(NULL, "out of memory");
        return 1;
    }
    while ((ch = getopt_long(argc, argv, ":hrc:f:", long_options, NULL)) !=
           -1) {
        switch (ch) {
        case 'h':
        case TOOL_OPT_HELP:
            tool_print_help(stdout, cmd);
            free(lines);
            return 0;
        case 'r':
            read_only = true;
            break;
        case 'c':
            lines[count++] = optarg;
            break;
        case 'f':
            if (!tool_parse_format(optarg, &format)) {
                free(lines);
                return 1;
            }
            break;
        default:
            free(lines);
            return tool_bad_option(cmd, ch, argv);
        }
    }
    if (argc - optind != 1)
        status = tool_bad_usage(cmd, argc - optind < 1 ? "missing FILE"
                                                       : "too many arguments");
    else if (count == 0)
        status = tool_bad_usage(cmd, "no commands given (use -c COMMAND)");
    else
        status = io_image(argv[optind], format, read_only, lines, count);
    free(lines);
    return status;
}

const struct tool_command io_command = {
    .name = "io",
    .synopsis = "[-f FMT] [-r] -c COMMAND [-c COMMAND ...] FILE",
    .summary = "Read, write, zero and discard ranges (qemu-io commands).",
    .details =
        "Options:\n"
        "  -f qed|raw    image format (probed by default)\n"
        "  -r            open read-only\n"
        "  -c COMMAND    run COMMAND; repeat for more, run in order\n"
        "\n"
        "Commands (OFFSET and LENGTH take size suffixes, e.g. 64k, 1M):\n"
        "  read [-P PATTERN] [-v] [-q] OFFSET LENGTH\n"
        "      -P checks that every byte equals PATTERN, -v dumps the data\n"
        "  write [-P PATTERN] [-q] OFFSET LENGTH   (default pattern 0xcd)\n"
        "  write -z [-q] OFFSET LENGTH\n"
        "      writes zeroes; whole clusters become zero clusters\n"
        "  discard [-q] OFFSET LENGTH\n"
        "  flush\n"
        "\n"
        "Every command runs even after one fails; the exit status is 1 if\n"
        "any failed.\n",
    .run = io_run,
};
