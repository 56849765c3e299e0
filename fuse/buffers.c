/* SPDX-License-Identifier: MIT */
/* The buffers requests arrive in and the buffers reads are answered from.
 *
 * Read buffers.  Large ones are kept for reuse: a fresh 1 MiB allocation
 * comes from memory the allocator has just returned to the kernel, and
 * touching it costs a page fault per 4 KiB (measured: 256 faults per MiB
 * read; 1 MiB sequential reads went from 1.4 to 5.4 GB/s without them).
 * Everything here runs on the loop's thread. */
#include <stdlib.h>

#include "export.h"

/* Read buffers are aligned so that an image opened with O_DIRECT can read
 * into them directly. */
#define BUFFER_ALIGN 4096

void *qedi_mount_buffer_get(struct qedi_mount *m, size_t length)
{
    void *buf = NULL;

    if (length >= EXPORT_POOL_MIN_BYTES && length <= EXPORT_POOL_BUFFER_BYTES) {
        if (m->pool.count > 0)
            return m->pool.free[--m->pool.count];
        length = EXPORT_POOL_BUFFER_BYTES;
    }
    if (posix_memalign(&buf, BUFFER_ALIGN, length ? length : 1) != 0)
        return NULL;
    return buf;
}

void qedi_mount_buffer_put(struct qedi_mount *m, void *buf, size_t length)
{
    if (buf && length >= EXPORT_POOL_MIN_BYTES &&
        length <= EXPORT_POOL_BUFFER_BYTES) {
        if (m->pool.count < EXPORT_POOL_BUFFERS) {
            m->pool.free[m->pool.count++] = buf;
            return;
        }
    }
    free(buf);
}

void qedi_mount_buffers_free(struct qedi_mount *m)
{
    while (m->pool.count > 0)
        free(m->pool.free[--m->pool.count]);
}

/* ---- receive buffers --------------------------------------------------------- */

void *qedi_mount_take_buffer(struct qedi_mount *m, const void *data,
                             size_t len)
{
    const char *start = m->rx.mem;
    const char *p = data;

    if (m->rx_taken || !start || p < start || p + len > start + m->rx.size)
        return NULL;
    m->rx_taken = true;
    return m->rx.mem;
}

void qedi_mount_return_buffer(struct qedi_mount *m, void *buffer)
{
    if (m->nspare < EXPORT_SPARE_BUFFERS)
        m->spare[m->nspare++] = buffer;
    else
        free(buffer);
}

/* After a request took the buffer it arrived in, the next one is read into
 * a spare (or, with none left, one libfuse allocates at its own size). */
void qedi_mount_replace_taken_buffer(struct qedi_mount *m)
{
    if (!m->rx_taken)
        return;
    m->rx.mem = m->nspare > 0 ? m->spare[--m->nspare] : NULL;
    m->rx_taken = false;
}
