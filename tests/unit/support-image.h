/* SPDX-License-Identifier: MIT */
/* Shared helpers of the engine tests: temporary directories, the two I/O
 * engines, raw file access behind the library's back (to read or craft
 * on-disk bytes), deterministic data patterns and running qemu-img.
 * Nothing here prints TAP: the helpers return values, the tests check them. */
#ifndef QED_TESTS_SUPPORT_IMAGE_H
#define QED_TESTS_SUPPORT_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qed.h"

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)

/* Byte offsets of header fields (QED specification). */
#define HDR_CLUSTER_SIZE 4
#define HDR_TABLE_SIZE 8
#define HDR_FEATURES 16
#define HDR_COMPAT_FEATURES 24
#define HDR_AUTOCLEAR_FEATURES 32
#define HDR_L1_TABLE_OFFSET 40
#define HDR_IMAGE_SIZE 48

/* The engines every test program runs its checks with. */
#define SUPPORT_ENGINE_COUNT 2
extern const enum qed_engine support_engines[SUPPORT_ENGINE_COUNT];
/* "io_uring" or "threads": the name qed_loop_engine_name reports. */
const char *support_engine_name(enum qed_engine engine);

/* Makes a fresh directory /tmp/libqed-<tag>-XXXXXX; out gets its path. */
int support_mkdtemp(const char *tag, char *out, size_t size);
/* Removes a directory tree (like rm -rf). */
void support_rmtree(const char *path);
/* dir + "/" + name into a static rotating buffer (8 slots). */
const char *support_path(const char *dir, const char *name);

/* Creates a QED image; returns 0 or -errno (err filled). */
int support_create(const char *path, uint64_t size, uint32_t cluster_size,
                   uint32_t table_size, const char *backing,
                   enum qed_format backing_format, qed_error *err);
/* A zeroed qed_image_info with its size set (qed_image_info_init), for
 * qed_get_info; NULL when out of memory.  free() it. */
struct qed_image_info *support_image_info_new(void);
/* Opens an image with the given engine and QED_OPEN_* flags. */
int support_open(const char *path, unsigned flags, enum qed_engine engine,
                 qed_image **out, qed_error *err);

/* Whole-file and ranged access with plain system calls. */
int support_write_file(const char *path, const void *buf, size_t len);
/* Reads the whole file into a malloc'd buffer (*len bytes). */
int support_read_file(const char *path, uint8_t **buf, size_t *len);
int support_pread(const char *path, void *buf, size_t len, uint64_t offset);
int support_pwrite(const char *path, const void *buf, size_t len,
                   uint64_t offset);
uint64_t support_file_size(const char *path);
/* Little-endian fields; reading returns UINT64_MAX on failure. */
uint64_t support_read_le64(const char *path, uint64_t offset);
uint32_t support_read_le32(const char *path, uint64_t offset);
int support_write_le64(const char *path, uint64_t offset, uint64_t value);
/* Are the two files byte-identical? */
bool support_files_equal(const char *a, const char *b);
/* Copies a file. */
int support_copy_file(const char *from, const char *to);

/* Deterministic data: the byte at absolute position pos of pattern seed, so
 * two writes with the same seed agree wherever they overlap. */
uint8_t support_pattern_byte(uint64_t seed, uint64_t pos);
void support_fill(uint8_t *buf, size_t len, uint64_t seed, uint64_t pos);
/* Index of the first byte where buf differs from the pattern (len if none). */
size_t support_check_pattern(const uint8_t *buf, size_t len, uint64_t seed,
                             uint64_t pos);
/* Index of the first non-zero byte (len if none). */
size_t support_first_nonzero(const uint8_t *buf, size_t len);
/* The splitmix64 finalizer: a well-mixed 64-bit hash of z. */
uint64_t support_mix64(uint64_t z);
/* splitmix64 */
uint64_t support_rand(uint64_t *state);
/* Uniform in [0, n). */
uint64_t support_rand_below(uint64_t *state, uint64_t n);

/* Runs a shell command; its output (stdout and stderr) goes into out (may be
 * NULL).  Returns the exit status, or -1 when it did not exit normally. */
int support_run(char *out, size_t out_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
bool support_have_qemu_img(void);

/* `qemu-img check --output=json -f qed` and what it found.  QEMU 7.2's
 * qed_bytes_to_clusters() divides by cluster_size - 1, so a consistent file
 * of N clusters is reported with floor(N * cs / (cs - 1)) - N leaks (none
 * below cs - 1 clusters): phantom_leaks; clean means nothing but those. */
struct support_check {
    int status; /* exit status of qemu-img check, -1 if it did not run */
    long leaks, corruptions, check_errors;
    uint64_t phantom_leaks;
    bool clean;
    char output[2048];
};
void support_qemu_check(const char *path, struct support_check *res);

/* Runs loop iterations until *counter reaches target (or an error or the
 * deadline of timeout_ms passes); returns 0 or -errno / -ETIMEDOUT. */
int support_run_until(qed_loop *loop, const unsigned *counter, unsigned target,
                      int timeout_ms);

#endif
