/* SPDX-License-Identifier: MIT */
/* The error object: a positive errno plus one line that names what failed. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "util.h"

int qedi_fail(qed_error *err, int code, const char *fmt, ...)
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

/* Context goes in front; when the whole does not fit, the prefix is cut,
 * never the cause at the end. */
void qedi_error_prefix(qed_error *err, const char *fmt, ...)
{
    char prefix[sizeof(err->message)];
    char joined[sizeof(err->message)];
    size_t cap = sizeof(joined) - 1, plen, mlen;
    va_list ap;

    if (!err)
        return;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    plen = strlen(prefix);
    mlen = strnlen(err->message, cap);
    if (plen + mlen > cap) {
        size_t keep;
        const char *msg = err->message;
        if (mlen > cap - 3) {
            /* The cause is at the end: keep the end. */
            msg += mlen - (cap - 3);
            mlen = cap - 3;
        }
        keep = cap - 3 - mlen;
        /* "...<end of the prefix><cause>" */
        memcpy(joined, "...", 3);
        memcpy(joined + 3, prefix + plen - keep, keep);
        memmove(joined + 3 + keep, msg, mlen);
        joined[3 + keep + mlen] = '\0';
    } else {
        memcpy(joined, prefix, plen);
        memcpy(joined + plen, err->message, mlen);
        joined[plen + mlen] = '\0';
    }
    memcpy(err->message, joined, sizeof(joined));
}

void qedi_error_clear(qed_error *err)
{
    if (err) {
        err->code = 0;
        err->message[0] = '\0';
    }
}

void qedi_error_copy(qed_error *dst, const qed_error *src)
{
    if (dst && src && dst != src)
        *dst = *src;
}

void *qedi_aligned_alloc(size_t size)
{
    void *p = NULL;
    if (posix_memalign(&p, QED_BUFFER_ALIGN, size ? size : 1) != 0)
        return NULL;
    return p;
}

void *qedi_aligned_zalloc(size_t size)
{
    void *p = qedi_aligned_alloc(size);
    if (p)
        memset(p, 0, size);
    return p;
}
