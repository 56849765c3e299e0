/* SPDX-License-Identifier: MIT */
/* `qed io` commands about the image rather than its data: map, alloc,
 * length, info, truncate; and sleep. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"

/* ---- allocation (map, alloc) --------------------------------------------- */

/* Whether the bytes at offset are allocated in the image itself (data or a
 * zero cluster; what a backing file holds does not count), as qemu's
 * bdrv_is_allocated says, and for how many bytes (at most max) that holds.
 * A raw image has no backing file: all of it is allocated. */
static int allocated_run(struct io_session *session, uint64_t offset,
                         uint64_t max, bool *allocated, uint64_t *length,
                         qed_error *err)
{
    struct qed_block_status status;
    int ret;

    qed_block_status_init(&status);
    if (qed_format_of(session->image) == QED_FORMAT_RAW) {
        *allocated = true;
        *length = max;
        return 0;
    }
    ret = qed_block_status(session->image, offset, max, &status, err);
    if (ret < 0)
        return ret;
    if (status.length == 0)
        return -EIO; /* would never get anywhere */
    *allocated = status.present && status.depth == 0;
    *length = status.length < max ? status.length : max;
    return 0;
}

static int allocation_failed(struct io_session *session, int ret,
                             const qed_error *err)
{
    tool_error(session->path, "Failed to get allocation status: %s",
               err->message[0] ? err->message : strerror(-ret));
    return 1;
}

/* One line per run of bytes that are (or are not) allocated. */
static int io_map(struct io_session *session, int argc, char **argv)
{
    uint64_t size = qed_size(session->image), offset = 0;

    (void)argc;
    (void)argv;
    while (offset < size) {
        char amount[64], where[64];
        qed_error err = {0};
        bool allocated, next_allocated;
        uint64_t run, next;
        int ret = allocated_run(session, offset, size - offset, &allocated,
                                &run, &err);

        while (ret == 0 && offset + run < size) {
            ret = allocated_run(session, offset + run, size - offset - run,
                                &next_allocated, &next, &err);
            if (ret < 0 || next_allocated != allocated)
                break;
            run += next;
        }
        if (ret < 0)
            return allocation_failed(session, ret, &err);
        io_format_amount((double)run, amount, sizeof(amount));
        io_format_amount((double)offset, where, sizeof(where));
        printf("%s (0x%" PRIx64 ") bytes %s at offset %s (0x%" PRIx64 ")\n",
               amount, run, allocated ? "    allocated" : "not allocated",
               where, offset);
        offset += run;
    }
    return 0;
}

const struct io_command io_map_command = {
    .name = "map",
    .run = io_map,
    .argmin = 0,
    .argmax = 0,
    .args = "",
    .oneline = "prints the allocated areas of a file",
};

/* Bytes allocated among count bytes at offset; the count stops at the end
 * of the image, as qemu-io's does. */
static int io_alloc(struct io_session *session, int argc, char **argv)
{
    uint64_t size = qed_size(session->image);
    uint64_t start, count = 512, sum = 0;
    char where[64];

    if (!io_parse_number(argv[1], "offset", &start) ||
        (argc == 3 && !io_parse_number(argv[2], "count", &count)))
        return 1;
    if (start >= size)
        count = 0;
    else if (count > size - start)
        count = size - start;
    for (uint64_t done = 0; done < count;) {
        qed_error err = {0};
        bool allocated;
        uint64_t run;
        int ret = allocated_run(session, start + done, count - done,
                                &allocated, &run, &err);

        if (ret < 0) {
            printf("is_allocated failed: %s\n",
                   strerror(err.code ? err.code : -ret));
            return allocation_failed(session, ret, &err);
        }
        if (allocated)
            sum += run;
        done += run;
    }
    io_format_amount((double)start, where, sizeof(where));
    printf("%" PRIu64 "/%" PRIu64 " bytes allocated at offset %s\n", sum,
           count, where);
    return 0;
}

const struct io_command io_alloc_command = {
    .name = "alloc",
    .altname = "a",
    .run = io_alloc,
    .argmin = 1,
    .argmax = 2,
    .args = "offset [count]",
    .oneline = "checks if offset is allocated in the file",
};

/* ---- length, info -------------------------------------------------------- */

static int io_length(struct io_session *session, int argc, char **argv)
{
    char size[64];

    (void)argc;
    (void)argv;
    io_format_amount((double)qed_size(session->image), size, sizeof(size));
    printf("%s\n", size);
    return 0;
}

const struct io_command io_length_command = {
    .name = "length",
    .altname = "l",
    .run = io_length,
    .argmin = 0,
    .argmax = 0,
    .oneline = "gets the length of the current file",
};

/* QED keeps no VM state, so its offset is 0, as qemu reports it. */
static int io_info(struct io_session *session, int argc, char **argv)
{
    struct qed_image_info *info = calloc(1, sizeof(*info));
    qed_error err = {0};
    char cluster[64], vm_state[64];

    (void)argc;
    (void)argv;
    if (!info) {
        tool_error(NULL, "out of memory");
        return 1;
    }
    qed_image_info_init(info);
    if (qed_get_info(session->image, info, &err) < 0) {
        tool_report(session->path, NULL, &err);
        free(info);
        return 1;
    }
    printf("format name: %s\n", qed_format_name(info->format));
    io_format_amount(info->format == QED_FORMAT_QED ? info->cluster_size : 0,
                     cluster, sizeof(cluster));
    io_format_amount(0, vm_state, sizeof(vm_state));
    printf("cluster size: %s\n", cluster);
    printf("vm state offset: %s\n", vm_state);
    free(info);
    return 0;
}

const struct io_command io_info_command = {
    .name = "info",
    .altname = "i",
    .run = io_info,
    .argmin = 0,
    .argmax = 0,
    .oneline = "prints information about the current file",
};

/* ---- truncate ------------------------------------------------------------ */

/* The largest virtual size the image's tables can address. */
static uint64_t max_qed_size(const struct qed_image_info *info)
{
    uint64_t entries = (uint64_t)info->cluster_size * info->table_size / 8;
    uint64_t l2_span = entries * info->cluster_size;

    if (l2_span && entries > UINT64_MAX / l2_span)
        return UINT64_MAX;
    return entries * l2_span;
}

/* What qemu's QED driver checks before it resizes: a valid size, and no
 * shrinking (qemu cannot shrink QED images; raw images can). */
static bool qed_truncate_ok(struct io_session *session, uint64_t size)
{
    struct qed_image_info *info = calloc(1, sizeof(*info));
    qed_error err = {0};
    bool ok = false;

    if (!info) {
        tool_error(NULL, "out of memory");
        return false;
    }
    qed_image_info_init(info);
    if (qed_get_info(session->image, info, &err) < 0)
        tool_report(session->path, NULL, &err);
    else if (size % 512 || size > max_qed_size(info))
        tool_error(session->path, "Invalid image size specified");
    else if (size < info->virtual_size)
        tool_error(session->path,
                   "Shrinking images is currently not supported");
    else
        ok = true;
    free(info);
    return ok;
}

static bool preallocation_ok(struct io_session *session, const char *mode)
{
    static const char *const modes[] = {"off", "metadata", "falloc", "full"};

    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        if (strcmp(mode, modes[i]) == 0) {
            if (i == 0)
                return true;
            tool_error(session->path, "Unsupported preallocation mode '%s'",
                       mode);
            return false;
        }
    }
    tool_error(session->path, "Invalid preallocation mode '%s'", mode);
    return false;
}

static int io_truncate(struct io_session *session, int argc, char **argv)
{
    const char *mode = "off";
    bool raw = qed_format_of(session->image) == QED_FORMAT_RAW;
    qed_error err = {0};
    uint64_t size;
    int ch;

    while ((ch = getopt(argc, argv, ":m:")) != -1) {
        if (ch != 'm')
            return io_bad_option(&io_truncate_command, ch);
        mode = optarg;
    }
    if (strcmp(mode, "off") != 0 && !preallocation_ok(session, mode))
        return 1;
    if (optind != argc - 1)
        return io_usage(&io_truncate_command);
    if (!io_parse_number(argv[optind], "size", &size))
        return 1;
    /* Requests in flight finish first (the image must be idle). */
    if (io_drain(session) != 0)
        return 1;
    if (!raw && !qed_truncate_ok(session, size))
        return 1;
    if (qed_resize(session->image, size, raw ? QED_RESIZE_SHRINK : 0,
                   &err) < 0) {
        tool_report(session->path, NULL, &err);
        return 1;
    }
    return 0;
}

const struct io_command io_truncate_command = {
    .name = "truncate",
    .altname = "t",
    .run = io_truncate,
    .argmin = 1,
    .argmax = 3,
    .writes = true,
    .args = "[-m prealloc_mode] off",
    .oneline = "truncates the current file at the given offset",
};

/* ---- sleep --------------------------------------------------------------- */

static void sleep_expired(void *opaque)
{
    *(bool *)opaque = true;
}

/* Milliseconds, as qemu-io reads them (strtol, any base); the image's loop
 * runs meanwhile, so aio requests complete and report. */
static int io_sleep(struct io_session *session, int argc, char **argv)
{
    bool expired = false;
    char *end;
    long ms;

    (void)argc;
    errno = 0;
    ms = strtol(argv[1], &end, 0);
    if (ms < 0 || *end || errno) {
        printf("%s is not a valid number\n", argv[1]);
        return 1;
    }
    if (qed_loop_add_timer(qed_image_loop(session->image), (uint64_t)ms,
                           sleep_expired, &expired) == 0) {
        tool_error(NULL, "sleep: out of memory");
        return 1;
    }
    return io_wait_until(session, &expired) < 0;
}

const struct io_command io_sleep_command = {
    .name = "sleep",
    .run = io_sleep,
    .argmin = 1,
    .argmax = 1,
    .oneline = "waits for the given value in milliseconds",
};
