/* SPDX-License-Identifier: MIT */
/* `qed io`: run qemu-io commands on an image, with qemu-io's syntax and
 * output, so that scripts and logs written for qemu-io carry over.
 *
 * Output: stdout carries exactly what qemu-io prints there (reports,
 * dumps, "read failed: ..." lines, usage lines); stderr carries qed's own
 * one-line diagnostics ("qed: FILE: read failed: <what went wrong>"). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io.h"

/* ---- argument helpers ---------------------------------------------------- */

int io_usage(const struct io_command *cmd)
{
    printf("%s %s -- %s\n", cmd->name, cmd->args ? cmd->args : "",
           cmd->oneline);
    return 1;
}

int io_bad_option(const struct io_command *cmd, int ch)
{
    if (ch == ':')
        tool_error(NULL, "%s: option requires an argument -- '%c'",
                   cmd->name, optopt);
    else
        tool_error(NULL, "%s: invalid option -- '%c'", cmd->name, optopt);
    return io_usage(cmd);
}

bool io_parse_number(const char *text, const char *what, uint64_t *out)
{
    uint64_t value;

    if (!tool_parse_size(text, what, &value)) {
        /* Only the kind of error is needed here, for qemu-io's wording. */
        uint64_t ignored;
        bool too_large = qed_parse_size(text, &ignored, NULL) == -ERANGE;

        if (too_large)
            printf("Parsing error: argument too large -- %s\n", text);
        else
            printf("Parsing error: non-numeric argument, or "
                   "extraneous/unrecognized suffix -- %s\n",
                   text);
        return false;
    }
    if (value > INT64_MAX) {
        printf("Parsing error: argument too large -- %s\n", text);
        return false;
    }
    *out = value;
    return true;
}

bool io_parse_pattern(const char *text, int *pattern)
{
    if (!tool_parse_byte(text, pattern)) {
        printf("%s is not a valid pattern byte\n", text);
        return false;
    }
    return true;
}

bool io_range_ok(struct io_session *session, const char *name,
                 const char *failed, uint64_t offset, uint64_t length)
{
    uint64_t size = qed_size(session->image);

    if (offset <= size && length <= size - offset)
        return true;
    printf("%s failed: %s\n", failed, strerror(EIO));
    tool_error(session->path,
               "%s: range %" PRIu64 "+%" PRIu64
               " is past the end of the image (%" PRIu64 " bytes)",
               name, offset, length, size);
    return false;
}

int io_report_failure(struct io_session *session, const char *failed,
                      int ret, const qed_error *err)
{
    int code = err && err->code ? err->code : -ret;
    char context[64];
    qed_error fallback = {.code = code};

    printf("%s failed: %s\n", failed, strerror(code ? code : EIO));
    snprintf(context, sizeof(context), "%s failed", failed);
    if (err && err->message[0]) {
        /* The library names the request too ("write: No space left on
         * device"): say it once. */
        size_t n = strlen(failed);
        qed_error once = *err;
        if (strncmp(err->message, failed, n) == 0 &&
            strncmp(err->message + n, ": ", 2) == 0) {
            snprintf(once.message, sizeof(once.message), "%s",
                     err->message + n + 2);
            tool_report(session->path, context, &once);
            return 1;
        }
    }
    tool_report(session->path, context, err ? err : &fallback);
    return 1;
}

/* ---- reporting ----------------------------------------------------------- */

double io_seconds_since(const struct timespec *start)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) +
           (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* Whole bytes get six decimals, larger units three; a ".000" fraction is
 * dropped (the first ".000" found, as qemu-io does). */
void io_format_amount(double value, char *buf, size_t len)
{
    static const char *const units[] = {"KiB", "MiB", "GiB",
                                        "TiB", "PiB", "EiB"};
    const char *unit = "bytes";
    char *trailing;

    for (int i = 5; i >= 0; i--) {
        double scale = 1;
        for (int k = 0; k <= i; k++)
            scale *= 1024;
        if (value >= scale) {
            unit = units[i];
            snprintf(buf, len, "%.3f", value / scale);
            break;
        }
    }
    if (strcmp(unit, "bytes") == 0)
        snprintf(buf, len, "%f", value);
    trailing = strstr(buf, ".000");
    if (trailing)
        *trailing = '\0';
    snprintf(buf + strlen(buf), len - strlen(buf), " %s", unit);
}

/* "00.01 sec" under a second, "H:MM:SS.ss" from then on (and always for
 * the machine-readable line). */
static void format_elapsed(double seconds, bool fixed, char *buf, size_t len)
{
    unsigned long whole = (unsigned long)seconds;
    double fraction = seconds - (double)whole;

    if (!fixed && whole == 0)
        snprintf(buf, len, "%05.2f sec", fraction);
    else
        snprintf(buf, len, "%lu:%02lu:%05.2f", whole / 3600,
                 whole / 60 % 60, (double)(whole % 60) + fraction);
}

void io_print_report(const char *op, double seconds, uint64_t offset,
                     uint64_t bytes, bool machine)
{
    char amount[64], rate[64], elapsed[64];

    format_elapsed(seconds, machine, elapsed, sizeof(elapsed));
    if (machine) {
        printf("%" PRIu64 ",1,%s,%.3f,%.3f\n", bytes, elapsed,
               (double)bytes / seconds, 1.0 / seconds);
        return;
    }
    io_format_amount((double)bytes, amount, sizeof(amount));
    io_format_amount((double)bytes / seconds, rate, sizeof(rate));
    printf("%s %" PRIu64 "/%" PRIu64 " bytes at offset %" PRIu64 "\n", op,
           bytes, bytes, offset);
    printf("%s, 1 ops; %s (%s/sec and %.4f ops/sec)\n", amount, elapsed,
           rate, 1.0 / seconds);
}

void io_dump_buffer(const unsigned char *buf, size_t len, uint64_t offset)
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

/* ---- the loop ------------------------------------------------------------ */

int io_wait_until(struct io_session *session, const bool *done)
{
    qed_loop *loop = qed_image_loop(session->image);

    while (!*done) {
        int ret = qed_loop_run(loop, -1);
        if (ret < 0 && ret != -EINTR)
            return ret;
    }
    return 0;
}

int io_drain(struct io_session *session)
{
    qed_error err = {0};

    if (session->aio_in_flight == 0)
        return 0;
    if (qed_drain(session->image, &err) < 0) {
        tool_report(session->path, "aio_flush failed", &err);
        return 1;
    }
    return 0;
}

/* ---- help ---------------------------------------------------------------- */

/* In qemu-io's order (sorted by name). */
static const struct io_command *const io_commands[] = {
    &io_aio_flush_command, &io_aio_read_command, &io_aio_write_command,
    &io_alloc_command,     &io_discard_command,  &io_flush_command,
    &io_help_command,      &io_info_command,     &io_length_command,
    &io_map_command,       &io_read_command,     &io_readv_command,
    &io_sleep_command,     &io_truncate_command, &io_write_command,
    &io_writev_command,
};

#define IO_COMMAND_COUNT (sizeof(io_commands) / sizeof(io_commands[0]))

static const struct io_command *find_io_command(const char *name)
{
    for (size_t i = 0; i < IO_COMMAND_COUNT; i++) {
        const struct io_command *cmd = io_commands[i];
        if (strcmp(name, cmd->name) == 0 ||
            (cmd->altname && strcmp(name, cmd->altname) == 0))
            return cmd;
    }
    return NULL;
}

static void help_oneline(const char *name, const struct io_command *cmd)
{
    printf("%s ", name);
    if (cmd->args)
        printf("%s ", cmd->args);
    printf("-- %s\n", cmd->oneline);
}

static int io_help(struct io_session *session, int argc, char **argv)
{
    const struct io_command *cmd;

    (void)session;
    if (argc == 1) {
        for (size_t i = 0; i < IO_COMMAND_COUNT; i++)
            help_oneline(io_commands[i]->name, io_commands[i]);
        printf("\nUse 'help commandname' for extended help.\n");
        return 0;
    }
    cmd = find_io_command(argv[1]);
    if (!cmd) {
        printf("command %s not found\n", argv[1]);
        return 1;
    }
    help_oneline(argv[1], cmd);
    if (cmd->help)
        fputs(cmd->help, stdout);
    return 0;
}

const struct io_command io_help_command = {
    .name = "help",
    .altname = "?",
    .run = io_help,
    .argmin = 0,
    .argmax = 1,
    .args = "[command]",
    .oneline = "help for one or all commands",
};

/* ---- command lines ------------------------------------------------------- */

static bool argument_count_ok(const struct io_command *cmd, int argc,
                              const char *typed)
{
    int given = argc - 1;

    if (given >= cmd->argmin && (cmd->argmax == -1 || given <= cmd->argmax))
        return true;
    if (cmd->argmax == -1)
        tool_error(NULL,
                   "bad argument count %d to %s, expected at least %d "
                   "arguments",
                   given, typed, cmd->argmin);
    else if (cmd->argmin == cmd->argmax)
        tool_error(NULL,
                   "bad argument count %d to %s, expected %d arguments",
                   given, typed, cmd->argmin);
    else
        tool_error(NULL,
                   "bad argument count %d to %s, expected between %d and "
                   "%d arguments",
                   given, typed, cmd->argmin, cmd->argmax);
    return false;
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

static int run_words(struct io_session *session, int count, char **words)
{
    const struct io_command *cmd;

    if (count == 0)
        return 0; /* an empty line does nothing, as in qemu-io */
    cmd = find_io_command(words[0]);
    if (!cmd) {
        tool_error(NULL, "command \"%s\" not found", words[0]);
        return 1;
    }
    if (!argument_count_ok(cmd, count, words[0]))
        return 1;
    if (cmd->writes && session->read_only) {
        tool_error(session->path, "Block node is read-only");
        return 1;
    }
    optind = 0; /* restart getopt for this command's words */
    return cmd->run(session, count, words);
}

static int run_command_line(struct io_session *session, const char *text)
{
    char *line = strdup(text);
    /* A line of n bytes has at most n/2 + 1 words, plus the NULL. */
    char **words = calloc(strlen(text) / 2 + 2, sizeof(*words));
    int status = 1;

    if (!line || !words)
        tool_error(NULL, "out of memory");
    else
        status = run_words(session, split_words(line, words), words);
    free(words);
    free(line);
    fflush(stdout);
    return status;
}

/* Runs every command even after a failure, as qemu-io does; the exit status
 * says whether any failed.  Requests still in flight at the end complete
 * (and report) before the image is closed. */
static int run_commands(struct io_session *session, char **lines, int count)
{
    int status = 0;

    for (int i = 0; i < count; i++)
        if (run_command_line(session, lines[i]) != 0)
            status = 1;
    if (io_drain(session) != 0)
        status = 1;
    fflush(stdout);
    return status;
}

static int io_image(const char *path, enum qed_format format, bool read_only,
                    unsigned open_flags, char **lines, int count)
{
    struct io_session session = {.path = path, .read_only = read_only};
    int status;

    if (!tool_open(path, format, (read_only ? 0 : QED_OPEN_RDWR) | open_flags,
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
        TOOL_FORCE_SHARE_OPTION,
        {"copy-on-read", no_argument, NULL, 'C'},
        {NULL, 0, NULL, 0},
    };
    enum qed_format format = QED_FORMAT_PROBE;
    unsigned share_flags = 0;
    bool read_only = false, copy_on_read = false;
    char **lines;
    int count = 0, ch, status;

    /* Every -c could be an argument; argc bounds how many there are. */
    lines = calloc((size_t)argc + 1, sizeof(*lines));
    if (!lines) {
        tool_error(NULL, "out of memory");
        return 1;
    }
    while ((ch = getopt_long(argc, argv, ":hrc:f:UC", long_options, NULL)) !=
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
        case 'U':
            share_flags = QED_OPEN_FORCE_SHARE;
            break;
        case 'C':
            copy_on_read = true;
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
    else if (copy_on_read && read_only)
        status = tool_bad_usage(cmd, "-C writes into the image: it cannot be "
                                     "used with -r");
    else
        status = io_image(argv[optind], format, read_only,
                          share_flags | (copy_on_read ? QED_OPEN_COPY_ON_READ : 0),
                          lines, count);
    free(lines);
    return status;
}

const struct tool_command io_command = {
    .name = "io",
    .synopsis = "[-f FMT] [-r [-U] | -C] -c COMMAND [-c COMMAND ...] FILE",
    .summary = "Run qemu-io commands (read, write, map, ...) on an image.",
    .details =
        "Options:\n"
        "  -f qed|raw    image format (probed by default)\n"
        "  -r            open read-only\n"
        "  -C, --copy-on-read\n"
        "                what is read from the backing chain is also written\n"
        "                into the image\n"
        "  -U, --force-share\n"
        "                with -r: open without conflicting with a program\n"
        "                writing the image (the data read may then be\n"
        "                inconsistent)\n"
        "  -c COMMAND    run COMMAND; repeat for more, run in order\n"
        "\n"
        "Commands, with qemu-io's syntax and output (-c help lists them,\n"
        "-c 'help CMD' explains one; offsets and lengths take size\n"
        "suffixes, e.g. 64k, 1M):\n"
        "  read [-bCqv] [-P pattern [-s off] [-l len]] off len\n"
        "  readv [-Cqv] [-P pattern] off len [len..]\n"
        "  write [-bcCfnquz] [-P pattern | -s source_file] off len\n"
        "  writev [-Cfq] [-P pattern] off len [len..]\n"
        "  aio_read [-Ciqv] [-P pattern] off len [len..]\n"
        "  aio_write [-Cfiquz] [-P pattern] off len [len..]\n"
        "  aio_flush, flush, discard [-Cq] off len\n"
        "  map, alloc offset [count], length, info\n"
        "  truncate [-m prealloc_mode] off, sleep ms, help [command]\n"
        "\n"
        "stdout is what qemu-io prints; errors also get a line on stderr.\n"
        "Every command runs even after one fails; the exit status is 1 if\n"
        "any failed.\n",
    .run = io_run,
};
