/* SPDX-License-Identifier: MIT */
/* Views of a caller's scatter/gather vector: slicing a byte range out of it
 * and filling ranges, without copying the data. */
#include <errno.h>
#include <stdlib.h>

#include <string.h>

#include "iov.h"
#include "util.h"

uint64_t qedi_iov_size(const struct iovec *iov, int iovcnt)
{
    uint64_t n = 0;
    for (int i = 0; i < iovcnt; i++)
        n += iov[i].iov_len;
    return n;
}

int qedi_iov_slice(const struct iovec *iov, int iovcnt, uint64_t offset,
              uint64_t length, struct iovec **out, int *outcnt)
{
    struct iovec *v;
    int first = 0, n = 0;

    while (first < iovcnt && offset >= iov[first].iov_len) {
        offset -= iov[first].iov_len;
        first++;
    }
    v = malloc(sizeof(*v) * (size_t)(iovcnt - first + 1));
    if (!v)
        return -ENOMEM;
    for (int i = first; i < iovcnt && length > 0; i++) {
        uint64_t take = QED_MIN(iov[i].iov_len - offset, length);
        v[n].iov_base = (char *)iov[i].iov_base + offset;
        v[n].iov_len = take;
        n++;
        length -= take;
        offset = 0;
    }
    *out = v;
    *outcnt = n;
    return 0;
}

void qedi_iov_memset(const struct iovec *iov, int iovcnt, uint64_t offset,
                int byte, uint64_t length)
{
    for (int i = 0; i < iovcnt && length > 0; i++) {
        if (offset >= iov[i].iov_len) {
            offset -= iov[i].iov_len;
            continue;
        }
        uint64_t take = QED_MIN(iov[i].iov_len - offset, length);
        memset((char *)iov[i].iov_base + offset, byte, take);
        length -= take;
        offset = 0;
    }
}

void qedi_iov_to_buf(const struct iovec *iov, int iovcnt, uint64_t offset,
                void *buf, uint64_t length)
{
    uint8_t *out = buf;

    for (int i = 0; i < iovcnt && length > 0; i++) {
        if (offset >= iov[i].iov_len) {
            offset -= iov[i].iov_len;
            continue;
        }
        uint64_t take = QED_MIN(iov[i].iov_len - offset, length);
        memcpy(out, (const char *)iov[i].iov_base + offset, take);
        out += take;
        length -= take;
        offset = 0;
    }
}

bool qedi_buf_is_zero(const void *buf, size_t len)
{
    const unsigned char *p = buf;

    /* Equal to itself shifted by one byte, with a zero first byte: all
     * zeros.  memcmp is vectorised; a byte loop is not. */
    return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

void qedi_iov_from_buf(const struct iovec *iov, int iovcnt, const void *buf,
                       uint64_t length)
{
    const uint8_t *in = buf;

    for (int i = 0; i < iovcnt && length > 0; i++) {
        uint64_t take = QED_MIN(iov[i].iov_len, length);
        memcpy(iov[i].iov_base, in, take);
        in += take;
        length -= take;
    }
}
