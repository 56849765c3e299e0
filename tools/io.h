/* SPDX-License-Identifier: MIT */
/* Pieces shared by the files of `qed io`: the session, the command table
 * entry, and the helpers that print what qemu-io prints. */
#ifndef QED_TOOLS_IO_H
#define QED_TOOLS_IO_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>
#include <time.h>

#include "common.h"

/* qemu's largest single request (BDRV_REQUEST_MAX_BYTES): lengths above it
 * are refused as qemu-io refuses them. */
#define IO_REQUEST_MAX_BYTES 2147483136ull

#define IO_DEFAULT_PATTERN 0xcd

struct io_session {
    const char *path;
    qed_image *image;
    bool read_only;
    unsigned aio_in_flight; /* aio_read/aio_write requests not completed */
};

/* argv[0] is the command name as typed; returns 0, or 1 when the command
 * failed (the exit status of `qed io` becomes 1). */
typedef int io_handler(struct io_session *session, int argc, char **argv);

struct io_command {
    const char *name;
    const char *altname;
    io_handler *run;
    int argmin, argmax;   /* arguments after the name; argmax -1: any */
    bool writes;          /* refused on an image opened read-only */
    const char *args;     /* synopsis of the arguments, NULL for none */
    const char *oneline;
    const char *help;     /* extended help, NULL for none */
};

/* The commands, each defined next to its handler. */
extern const struct io_command io_read_command, io_readv_command,
    io_write_command, io_writev_command, io_discard_command,
    io_flush_command, io_aio_read_command, io_aio_write_command,
    io_aio_flush_command, io_map_command, io_length_command,
    io_info_command, io_truncate_command, io_alloc_command,
    io_sleep_command, io_help_command;

/* Prints "NAME ARGS -- ONELINE" on stdout, as qemu-io does for a bad
 * option or argument count; returns 1. */
int io_usage(const struct io_command *cmd);
/* For getopt's '?' and ':' results: one error line on stderr, then the
 * usage line; returns 1. */
int io_bad_option(const struct io_command *cmd, int ch);

/* Parses an offset, length or count with tool_parse_size; anything it
 * refuses, or above INT64_MAX, gets qemu-io's "Parsing error: ..." line on
 * stdout (tool_parse_size says on stderr what is wrong with the WHAT).
 * Returns false on error. */
bool io_parse_number(const char *text, const char *what,
                     uint64_t *out);
/* A pattern byte, decimal, octal or hex; qemu-io's message otherwise. */
bool io_parse_pattern(const char *text, int *pattern);

/* True when offset+length lies inside the image.  Otherwise prints
 * qemu-io's "FAILED failed: Input/output error" (the block layer's answer
 * to a request outside the image) on stdout and the range on stderr. */
bool io_range_ok(struct io_session *session, const char *name,
                 const char *failed, uint64_t offset, uint64_t length);
/* "FAILED failed: strerror" on stdout (qemu-io's line) and the library's
 * message on stderr.  Returns 1. */
int io_report_failure(struct io_session *session, const char *failed,
                      int ret, const qed_error *err);

/* qemu-io's amount: "512 bytes", "64 KiB", "63.812 MiB". */
void io_format_amount(double value, char *buf, size_t len);
double io_seconds_since(const struct timespec *start);
/* "wrote 512/512 bytes at offset 0" and the timing line, or the -C line. */
void io_print_report(const char *op, double seconds, uint64_t offset,
                     uint64_t bytes, bool machine);
/* Hex dump in qemu-io's layout. */
void io_dump_buffer(const unsigned char *buf, size_t len, uint64_t offset);

/* The buffers of readv, writev, aio_read and aio_write: one allocation
 * cut into the lengths given. */
struct io_vector {
    struct iovec *iov;
    int count;
    uint64_t total;
    int fill;            /* byte the buffer starts filled with */
    unsigned char *buf;
};

/* Parses the lengths (qemu-io's checks and messages); allocates nothing
 * big yet.  Returns false (vec freed) on a bad length. */
bool io_vector_new(struct io_vector *vec, char **lengths, int count,
                   int fill);
/* Allocates and fills the buffer; false when out of memory. */
bool io_vector_alloc(struct io_vector *vec);
void io_vector_free(struct io_vector *vec);

/* Runs the image's loop until *done is set by a callback.  Returns 0 or
 * the loop's negative errno. */
int io_wait_until(struct io_session *session, const bool *done);
/* Waits for every aio request; their completion lines get printed. */
int io_drain(struct io_session *session);

#endif
