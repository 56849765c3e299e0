/* SPDX-License-Identifier: MIT */
/* Minimal TAP producer for the C unit tests; prove (TAP::Harness) runs and
 * counts them.  Each check is one test point named for what it checks. */
#ifndef QED_TESTS_TAP_H
#define QED_TESTS_TAP_H

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tap_count;
static int tap_failed;

static inline int tap_ok(int cond, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline int tap_ok(int cond, const char *fmt, ...)
{
    va_list ap;
    tap_count++;
    if (!cond)
        tap_failed++;
    printf("%s %d - ", cond ? "ok" : "not ok", tap_count);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    return cond;
}

#define ok(cond, ...) tap_ok(!!(cond), __VA_ARGS__)

#define is_u64(got, want, ...)                                                \
    do {                                                                      \
        uint64_t got_ = (uint64_t)(got), want_ = (uint64_t)(want);            \
        if (!tap_ok(got_ == want_, __VA_ARGS__))                              \
            printf("#   got %" PRIu64 " (0x%" PRIx64 "), want %" PRIu64       \
                   " (0x%" PRIx64 ")\n", got_, got_, want_, want_);           \
    } while (0)

#define is_str(got, want, ...)                                                \
    do {                                                                      \
        const char *got_ = (got), *want_ = (want);                           \
        if (!tap_ok(got_ && want_ && strcmp(got_, want_) == 0, __VA_ARGS__))  \
            printf("#   got \"%s\", want \"%s\"\n", got_ ? got_ : "(null)",   \
                   want_ ? want_ : "(null)");                                 \
    } while (0)

#define has_substr(got, needle, ...)                                          \
    do {                                                                      \
        const char *got_ = (got), *needle_ = (needle);                       \
        if (!tap_ok(got_ && strstr(got_, needle_) != NULL, __VA_ARGS__))      \
            printf("#   \"%s\" does not contain \"%s\"\n",                    \
                   got_ ? got_ : "(null)", needle_);                          \
    } while (0)

static inline void tap_diag(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static inline void tap_diag(const char *fmt, ...)
{
    va_list ap;
    printf("# ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

/* Ends the test program: prints the plan, exit status says whether all passed. */
static inline int tap_done(void)
{
    printf("1..%d\n", tap_count);
    return tap_failed ? 1 : 0;
}

#endif
