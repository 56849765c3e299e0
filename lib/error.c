/* The error object: a positive errno plus one line that names what failed. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "util.h"

int qed_fail(qed_error *err, int code, const char *fmt, ...)
{
    if (code <= 0)
        code = EIO;
    if (err) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
    }
    return -code;
}

void qed_error_prefix(qed_error *err, const char *fmt, ...)
{
    char joined[sizeof(err->message)];
    size_t used, rest;
    va_list ap;

    if (!err)
        return;
    va_start(ap, fmt);
    vsnprintf(joined, sizeof(joined), fmt, ap);
    va_end(ap);
    used = strlen(joined);
    rest = strnlen(err->message, sizeof(err->message) - 1);
    if (rest > sizeof(joined) - 1 - used)
        rest = sizeof(joined) - 1 - used;
    memcpy(joined + used, err->message, rest);
    joined[used + rest] = '\0';
    memcpy(err->message, joined, sizeof(joined));
}

void qed_error_clear(qed_error *err)
{
    if (err) {
        err->code = 0;
        err->message[0] = '\0';
    }
}

void qed_error_copy(qed_error *dst, const qed_error *src)
{
    if (dst && src && dst != src)
        *dst = *src;
}

void *qed_aligned_alloc(size_t size)
{
    void *p = NULL;
    if (posix_memalign(&p, 4096, size ? size : 1) != 0)
        return NULL;
    return p;
}

void *qed_aligned_zalloc(size_t size)
{
    void *p = qed_aligned_alloc(size);
    if (p)
        memset(p, 0, size);
    return p;
}
