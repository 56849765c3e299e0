/* SPDX-License-Identifier: MIT */
/* Helpers shared by the engine tests; see support-image.h. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "support-image.h"

const enum qed_engine support_engines[SUPPORT_ENGINE_COUNT] = {
    QED_ENGINE_URING,
    QED_ENGINE_THREADS,
};

const char *support_engine_name(enum qed_engine engine)
{
    switch (engine) {
    case QED_ENGINE_URING:
        return "io_uring";
    case QED_ENGINE_THREADS:
        return "threads";
    default:
        return "auto";
    }
}

int support_mkdtemp(const char *tag, char *out, size_t size)
{
    int n = snprintf(out, size, "/tmp/libqed-%s-XXXXXX", tag);
    if (n < 0 || (size_t)n >= size)
        return -ENAMETOOLONG;
    if (!mkdtemp(out))
        return -errno;
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void support_rmtree(const char *path)
{
    /* LIBQED_TEST_KEEP=1 keeps the files for a post-mortem. */
    const char *keep = getenv("LIBQED_TEST_KEEP");
    if (keep && keep[0] && strcmp(keep, "0") != 0) {
        printf("# kept %s\n", path);
        return;
    }
    if (path && path[0])
        nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *support_path(const char *dir, const char *name)
{
    static char slots[8][4096];
    static unsigned next;
    char *out = slots[next++ % 8];

    snprintf(out, sizeof(slots[0]), "%s/%s", dir, name);
    return out;
}

int support_create(const char *path, uint64_t size, uint32_t cluster_size,
                   uint32_t table_size, const char *backing,
                   enum qed_format backing_format, qed_error *err)
{
    struct qed_create_options o = {
        .size = sizeof(struct qed_create_options),
        .virtual_size = size,
        .size_from_backing = size == 0 && backing != NULL,
        .cluster_size = cluster_size,
        .table_size = table_size,
        .backing_file = backing,
        .backing_format = backing_format,
    };
    return qed_create(path, &o, err);
}

int support_open(const char *path, unsigned flags, enum qed_engine engine,
                 qed_image **out, qed_error *err)
{
    struct qed_open_options o = { .size = sizeof(o),
                                  .flags = flags, .engine = engine };
    return qed_open(path, &o, out, err);
}

int support_write_file(const char *path, const void *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int ret = 0;

    if (fd < 0)
        return -errno;
    if (len && pwrite(fd, buf, len, 0) != (ssize_t)len)
        ret = -EIO;
    if (close(fd) < 0 && ret == 0)
        ret = -errno;
    return ret;
}

int support_read_file(const char *path, uint8_t **buf, size_t *len)
{
    uint64_t size = support_file_size(path);
    uint8_t *b;
    int ret;

    *buf = NULL;
    *len = 0;
    if (size == UINT64_MAX)
        return -ENOENT;
    b = malloc(size ? size : 1);
    if (!b)
        return -ENOMEM;
    ret = support_pread(path, b, size, 0);
    if (ret < 0) {
        free(b);
        return ret;
    }
    *buf = b;
    *len = size;
    return 0;
}

int support_pread(const char *path, void *buf, size_t len, uint64_t offset)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t done = 0;
    int ret = 0;

    if (fd < 0)
        return -errno;
    while (done < len) {
        ssize_t n = pread(fd, (char *)buf + done, len - done,
                          (off_t)(offset + done));
        if (n < 0) {
            ret = -errno;
            break;
        }
        if (n == 0) {
            /* Past the end: zeros, like the library's reads. */
            memset((char *)buf + done, 0, len - done);
            break;
        }
        done += (size_t)n;
    }
    close(fd);
    return ret;
}

int support_pwrite(const char *path, const void *buf, size_t len,
                   uint64_t offset)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    int ret = 0;

    if (fd < 0)
        return -errno;
    if (pwrite(fd, buf, len, (off_t)offset) != (ssize_t)len)
        ret = -EIO;
    if (close(fd) < 0 && ret == 0)
        ret = -errno;
    return ret;
}

uint64_t support_file_size(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return UINT64_MAX;
    return (uint64_t)st.st_size;
}

uint64_t support_read_le64(const char *path, uint64_t offset)
{
    uint8_t b[8];
    uint64_t v = 0;

    if (support_pread(path, b, 8, offset) < 0)
        return UINT64_MAX;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | b[i];
    return v;
}

uint32_t support_read_le32(const char *path, uint64_t offset)
{
    uint8_t b[4];

    if (support_pread(path, b, 4, offset) < 0)
        return UINT32_MAX;
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
           (uint32_t)b[3] << 24;
}

int support_write_le64(const char *path, uint64_t offset, uint64_t value)
{
    uint8_t b[8];

    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(value >> (8 * i));
    return support_pwrite(path, b, 8, offset);
}

bool support_files_equal(const char *a, const char *b)
{
    uint8_t *ba, *bb;
    size_t la, lb;
    bool same;

    if (support_read_file(a, &ba, &la) < 0)
        return false;
    if (support_read_file(b, &bb, &lb) < 0) {
        free(ba);
        return false;
    }
    same = la == lb && memcmp(ba, bb, la) == 0;
    free(ba);
    free(bb);
    return same;
}

int support_copy_file(const char *from, const char *to)
{
    uint8_t *buf;
    size_t len;
    int ret = support_read_file(from, &buf, &len);

    if (ret < 0)
        return ret;
    ret = support_write_file(to, buf, len);
    free(buf);
    return ret;
}

uint64_t support_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

uint8_t support_pattern_byte(uint64_t seed, uint64_t pos)
{
    /* One 64-bit hash per 8 bytes; never all-zero runs by accident. */
    uint64_t h = support_mix64(seed * UINT64_C(0x9e3779b97f4a7c15) +
                               (pos >> 3) + 1);
    uint8_t b = (uint8_t)(h >> (8 * (pos & 7)));
    return b ? b : 0xa5;
}

void support_fill(uint8_t *buf, size_t len, uint64_t seed, uint64_t pos)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = support_pattern_byte(seed, pos + i);
}

size_t support_check_pattern(const uint8_t *buf, size_t len, uint64_t seed,
                             uint64_t pos)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] != support_pattern_byte(seed, pos + i))
            return i;
    return len;
}

size_t support_first_nonzero(const uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i])
            return i;
    return len;
}

uint64_t support_rand(uint64_t *state)
{
    *state += UINT64_C(0x9e3779b97f4a7c15);
    return support_mix64(*state);
}

uint64_t support_rand_below(uint64_t *state, uint64_t n)
{
    return n ? support_rand(state) % n : 0;
}

int support_run(char *out, size_t out_size, const char *fmt, ...)
{
    char cmd[8192];
    char sink[256];
    va_list ap;
    FILE *p;
    size_t used = 0;
    int status, n;

    va_start(ap, fmt);
    n = vsnprintf(cmd, sizeof(cmd) - 8, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(cmd) - 8)
        return -1;
    memcpy(cmd + n, " 2>&1", sizeof(" 2>&1"));
    if (out && out_size)
        out[0] = '\0';
    fflush(stdout);
    p = popen(cmd, "r");
    if (!p)
        return -1;
    for (;;) {
        size_t got;
        if (out && used + 1 < out_size) {
            got = fread(out + used, 1, out_size - used - 1, p);
            used += got;
            out[used] = '\0';
        } else {
            got = fread(sink, 1, sizeof(sink), p);
        }
        if (got == 0)
            break;
    }
    status = pclose(p);
    if (status < 0 || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

bool support_have_qemu_img(void)
{
    return support_run(NULL, 0, "qemu-img --version") == 0;
}

static long json_number(const char *json, const char *key)
{
    char pattern[64];
    const char *p;

    snprintf(pattern, sizeof(pattern), "\"%s\":", key);
    p = strstr(json, pattern);
    if (!p)
        return 0;
    return strtol(p + strlen(pattern), NULL, 10);
}

void support_qemu_check(const char *path, struct support_check *res)
{
    uint64_t size = support_file_size(path);
    uint32_t cs = support_read_le32(path, HDR_CLUSTER_SIZE);

    memset(res, 0, sizeof(*res));
    res->status = support_run(res->output, sizeof(res->output),
                              "qemu-img check --output=json -f qed '%s'",
                              path);
    res->leaks = json_number(res->output, "leaks");
    res->corruptions = json_number(res->output, "corruptions");
    res->check_errors = json_number(res->output, "check-errors");
    if (cs >= 2 && size != UINT64_MAX) {
        uint64_t n = (size + cs - 1) / cs;
        res->phantom_leaks = n * cs / (cs - 1) - n;
    }
    res->clean = res->corruptions == 0 && res->check_errors == 0 &&
                 (uint64_t)res->leaks == res->phantom_leaks &&
                 (res->status == 0 ||
                  (res->status == 3 && res->phantom_leaks > 0));
}

int support_run_until(qed_loop *loop, const unsigned *counter, unsigned target,
                      int timeout_ms)
{
    struct timespec start, now;

    clock_gettime(CLOCK_MONOTONIC, &start);
    while (*counter < target) {
        int r = qed_loop_run(loop, 100);
        if (r < 0)
            return r;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - start.tv_sec) * 1000 +
                (now.tv_nsec - start.tv_nsec) / 1000000 >
            timeout_ms)
            return -ETIMEDOUT;
    }
    return 0;
}

struct qed_image_info *support_image_info_new(void)
{
    struct qed_image_info *info = malloc(sizeof(*info));

    if (info)
        qed_image_info_init(info);
    return info;
}
