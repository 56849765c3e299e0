/* SPDX-License-Identifier: MIT */
/* Small helpers shared by every module of libqed. */
#ifndef QED_LIB_UTIL_H
#define QED_LIB_UTIL_H

#include <endian.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "qed.h"

#define QED_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define QED_MIN(a, b) ((a) < (b) ? (a) : (b))
#define QED_MAX(a, b) ((a) > (b) ? (a) : (b))
#define QED_UNUSED __attribute__((unused))
#define QED_PRINTF(f, a) __attribute__((format(printf, f, a)))
/* Library-internal functions that carry the qed_ prefix stay out of the
 * shared library's interface (the version script exports qed_*). */
#define QED_INTERNAL __attribute__((visibility("hidden")))

/* Fills err (when not NULL) and returns -code, so callers can write
 * `return qedi_fail(err, EINVAL, "...", ...)`. */
QED_INTERNAL int qedi_fail(qed_error *err, int code, const char *fmt, ...) QED_PRINTF(3, 4);
/* Prefixes an existing message with more context ("L2 table 3: " + msg). */
QED_INTERNAL void qedi_error_prefix(qed_error *err, const char *fmt, ...) QED_PRINTF(2, 3);
QED_INTERNAL void qedi_error_clear(qed_error *err);
QED_INTERNAL void qedi_error_copy(qed_error *dst, const qed_error *src);

/* trace.c: one line to the trace callback, when there is one. */
extern qed_trace_callback *qedi_trace_callback;
void qedi_trace_line(const char *fmt, ...) QED_PRINTF(1, 2);
#define QEDI_TRACE(...)                                                        \
    do {                                                                       \
        if (__builtin_expect(qedi_trace_callback != NULL, 0))                  \
            qedi_trace_line(__VA_ARGS__);                                      \
    } while (0)

static inline uint32_t load_le32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return le32toh(v);
}

static inline uint64_t load_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return le64toh(v);
}

static inline void store_le32(uint8_t *p, uint32_t v)
{
    v = htole32(v);
    memcpy(p, &v, sizeof(v));
}

static inline void store_le64(uint8_t *p, uint64_t v)
{
    v = htole64(v);
    memcpy(p, &v, sizeof(v));
}

static inline bool is_power_of_2(uint64_t v)
{
    return v != 0 && (v & (v - 1)) == 0;
}

static inline unsigned log2_u64(uint64_t v)
{
    return 63u - (unsigned)__builtin_clzll(v);
}

/* a + b without wrapping; false when it would overflow. */
static inline bool add_overflows(uint64_t a, uint64_t b, uint64_t *sum)
{
    return __builtin_add_overflow(a, b, sum);
}

static inline uint64_t round_up_u64(uint64_t v, uint64_t align)
{
    return (v + align - 1) & ~(align - 1);
}

static inline uint64_t round_down_u64(uint64_t v, uint64_t align)
{
    return v & ~(align - 1);
}

/* Allocation helpers that never return NULL silently: callers check. */
/* A sector: virtual disks are a whole number of them (raw images are
 * rounded up to one), and the smallest O_DIRECT alignment. */
#define QED_SECTOR_SIZE 512u
/* Largest virtual size libqed accepts at all (offset arithmetic stays in
 * signed 64-bit file offsets): INT64_MAX rounded down to a sector. */
#define QED_MAX_VIRTUAL_SIZE (INT64_MAX & ~(uint64_t)511)
/* Alignment of I/O buffers: enough for O_DIRECT on any device (its
 * largest logical block size), and a page. */
#define QED_BUFFER_ALIGN 4096u
QED_INTERNAL void *qedi_aligned_alloc(size_t size);          /* QED_BUFFER_ALIGN-aligned, uninitialised */
QED_INTERNAL void *qedi_aligned_zalloc(size_t size);         /* QED_BUFFER_ALIGN-aligned, zeroed */

#endif
