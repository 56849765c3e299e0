/* SPDX-License-Identifier: MIT */
/* Shared pieces of the `qed` command-line tool: the subcommand table, error
 * reporting, option helpers, and output formatting. */
#ifndef QED_TOOLS_COMMON_H
#define QED_TOOLS_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "qed.h"

#define TOOL_PRINTF(f, a) __attribute__((format(printf, f, a)))

/* ---- subcommands --------------------------------------------------------- */

struct tool_command {
    const char *name;
    const char *synopsis;    /* arguments after "qed NAME" */
    const char *summary;     /* one line for `qed --help` */
    const char *details;     /* option descriptions for `qed NAME --help` */
    /* argv[0] is the subcommand name; returns the exit status. */
    int (*run)(const struct tool_command *cmd, int argc, char **argv);
};

extern const struct tool_command create_command;
extern const struct tool_command info_command;
extern const struct tool_command map_command;
extern const struct tool_command io_command;
extern const struct tool_command convert_command;
extern const struct tool_command dd_command;
extern const struct tool_command bench_command;
extern const struct tool_command serve_command;
extern const struct tool_command check_command;
extern const struct tool_command compare_command;
extern const struct tool_command commit_command;
extern const struct tool_command rebase_command;
extern const struct tool_command resize_command;
extern const struct tool_command compact_command;
extern const struct tool_command mount_command;

/* Prints "usage: qed NAME SYNOPSIS" and the details. */
void tool_print_help(FILE *out, const struct tool_command *cmd);

/* ---- errors -------------------------------------------------------------- */

/* One line on stderr: "qed: FILE: message", or "qed: message" when file is
 * NULL. */
void tool_error(const char *file, const char *fmt, ...) TOOL_PRINTF(2, 3);
/* name as it may be shown: a URI's password (scheme://user:password@host)
 * becomes "***" (written into buf), else name itself. */
const char *tool_display_name(const char *name, char *buf, size_t len);
/* The password of the first scheme://user:password@host URI in text:
 * [*start, *end), or false when there is none. */
bool tool_find_url_password(const char *text, const char **start,
                            const char **end);
/* A notice callback of a server or mount (opaque: the image's name):
 * "qed: FILE: warning: message". */
void tool_print_notice(void *file, const char *message);
/* Reports a library error; falls back to strerror when the message is empty.
 * context (may be NULL) is put before the message, e.g. "read failed". */
void tool_report(const char *file, const char *context, const qed_error *err);

/* ---- options ------------------------------------------------------------- */

/* Option strings for getopt_long start with ':' so that a missing argument is
 * told apart from an unknown option; this turns either into one error line
 * and returns exit status 1.  ch is what getopt_long returned. */
int tool_bad_option(const struct tool_command *cmd, int ch, char **argv);
/* The -U/--force-share line of a read-only subcommand's help. */
#define TOOL_FORCE_SHARE_HELP                                                  \
    "  -U, --force-share   open without conflicting with a program writing\n" \
    "                      the image (the data read may then be\n"            \
    "                      inconsistent)\n"
/* The -U long option, for a subcommand's option table. */
#define TOOL_FORCE_SHARE_OPTION {"force-share", no_argument, NULL, 'U'}

/* val of the "help" long option: outside the character range, so that
 * tool_bad_option can tell long options from short ones. */
#define TOOL_OPT_HELP 0x100
/* Error for wrong positional arguments; returns exit status 1. */
int tool_bad_usage(const struct tool_command *cmd, const char *fmt, ...)
    TOOL_PRINTF(2, 3);

/* Parses "512", "64k", "1G"...; prints an error naming what on failure. */
bool tool_parse_size(const char *text, const char *what, uint64_t *out);
/* A byte value as qemu-img and qemu-io read pattern bytes: decimal, octal
 * (0...) or hexadecimal (0x...), 0 to 255.  Prints nothing. */
bool tool_parse_byte(const char *text, int *out);
/* "qed" or "raw"; prints an error on anything else. */
bool tool_parse_format(const char *text, enum qed_format *out);
/* "human" or "json". */
bool tool_parse_output(const char *text, bool *json);

/* Options shared by `create` and `convert -O qed`.  Strings point into the
 * option text given to tool_parse_create_options, which must stay alive. */
struct tool_create_settings {
    struct qed_create_options options;
    bool table_size_given;   /* qemu-img shows table_size only when set */
    bool backing_format_given;
    bool size_given;         /* -o size=SIZE (in options.size) */
    bool preallocation_given;
};

/* "off", "metadata", "falloc" or "full"; prints an error on anything else. */
bool tool_parse_preallocation(const char *text, enum qed_preallocation *out);

/* Parses "size=1G,cluster_size=64k,table_size=4,backing_file=x,backing_fmt=raw".
 * The text is modified in place (split at commas and '='). */
bool tool_parse_create_options(char *text,
                               struct tool_create_settings *settings);
/* Prints "qed: warning: PATH: ..." when QEMU 7.2 cannot open an image
 * created with these options (size: the image's virtual size). */
void tool_warn_qemu_incompatible(const char *path,
                                 const struct qed_create_options *o,
                                 uint64_t size);
/* True for "?" and "help": list the options instead of creating. */
bool tool_create_options_help_requested(const char *text);
void tool_print_create_options(FILE *out);

/* ---- images -------------------------------------------------------------- */

/* Opens path; on failure prints "qed: PATH: message" and returns false. */
bool tool_open(const char *path, enum qed_format format, unsigned flags,
               qed_image **out);
/* Prints the image's open warnings (qed_warnings), one line each:
 * "qed: PATH: warning: ...". */
void tool_report_warnings(const char *path, const qed_image *image);
/* Closes image; on failure prints the error and returns false. */
bool tool_close(const char *path, qed_image *image);

/* Buffer for image I/O, aligned so that O_DIRECT images can use it too. */
void *tool_alloc_buffer(size_t size);

/* ---- output -------------------------------------------------------------- */

/* Sizes the way qemu-img shows them: "0 B", "64 KiB", "1 GiB", "644 KiB". */
void tool_format_size(uint64_t bytes, char *buf, size_t len);

/* Writes text as a JSON string literal, quotes included.  Bytes that are not
 * valid UTF-8 become U+FFFD so the output always parses. */
void tool_json_string(FILE *out, const char *text);

/* A small pretty-printer producing qemu-img's JSON layout (4-space indent,
 * "key": value, one member per line). */
struct tool_json {
    FILE *out;
    int depth;
    bool need_comma;
};

void tool_json_init(struct tool_json *json, FILE *out);
/* key is NULL inside arrays and at the top level. */
void tool_json_begin_object(struct tool_json *json, const char *key);
void tool_json_end_object(struct tool_json *json);
void tool_json_begin_array(struct tool_json *json, const char *key);
void tool_json_end_array(struct tool_json *json);
void tool_json_uint(struct tool_json *json, const char *key, uint64_t value);
void tool_json_bool(struct tool_json *json, const char *key, bool value);
void tool_json_str(struct tool_json *json, const char *key, const char *value);
/* Ends the document with a newline. */
void tool_json_finish(struct tool_json *json);

/* ---- progress ------------------------------------------------------------ */

/* "    (45.00/100%)\r" on stderr, when asked for and stderr is a terminal. */
struct tool_progress {
    bool active;
    double shown;  /* last percentage printed, negative before the first */
};

void tool_progress_start(struct tool_progress *progress, bool requested);
void tool_progress_update(struct tool_progress *progress, uint64_t done,
                          uint64_t total);
void tool_progress_finish(struct tool_progress *progress);

/* The I/O engine QED_IO_ENGINE asks for ("uring" or "io_uring",
 * "threads"; unset or anything else: AUTO).  The library itself reads no
 * environment: the tool passes it on. */
enum qed_engine tool_engine(void);
/* Fills the settings for images behind URLs from the environment: the CA
 * file (CURL_CA_BUNDLE, SSL_CERT_FILE), QED_TLS_NO_VERIFY=1, and the AWS_*
 * variables for s3:// names. */
int tool_remote_settings(struct qed_open_options *options, qed_error *err);
/* qed_open with the engine from the environment, unless the options name
 * one (or a loop) themselves, and the remote settings. */
int tool_qed_open(const char *path, struct qed_open_options *options,
              qed_image **out, qed_error *err);

#endif
