/* SPDX-License-Identifier: MIT */
/* Views of a caller's scatter/gather vector (iov.c). */
#ifndef QED_LIB_IOV_H
#define QED_LIB_IOV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

int qedi_iov_slice(const struct iovec *iov, int iovcnt, uint64_t offset,
              uint64_t length, struct iovec **out, int *outcnt);
void qedi_iov_memset(const struct iovec *iov, int iovcnt, uint64_t offset,
                int byte, uint64_t length);
uint64_t qedi_iov_size(const struct iovec *iov, int iovcnt);
/* Copies length bytes from offset in the vector to buf. */
void qedi_iov_to_buf(const struct iovec *iov, int iovcnt, uint64_t offset,
                void *buf, uint64_t length);
/* Copies length bytes of buf into the vector, from its start. */
void qedi_iov_from_buf(const struct iovec *iov, int iovcnt, const void *buf,
                       uint64_t length);

/* Are the len bytes at buf all zero? */
bool qedi_buf_is_zero(const void *buf, size_t len);

#endif
