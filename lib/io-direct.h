/* SPDX-License-Identifier: MIT */
/* O_DIRECT support for requests that are not block aligned; see io-direct.c. */
#ifndef QED_LIB_IO_DIRECT_H
#define QED_LIB_IO_DIRECT_H

#include "io.h"

void io_direct_probe(struct io_file *file);
bool io_direct_aligned(const struct io_file *file, const struct iovec *iov,
                       int iovcnt, uint64_t offset);
void io_direct_readv(struct io_file *file, const struct iovec *iov, int iovcnt,
                     uint64_t offset, io_callback *cb, void *opaque);
/* Every write to a direct file goes through here. */
void io_direct_writev(struct io_file *file, const struct iovec *iov,
                      int iovcnt, uint64_t offset, io_callback *cb,
                      void *opaque);

void io_direct_fallocate(struct io_file *file, int mode, uint64_t offset,
                         uint64_t length, io_callback *cb, void *opaque);

/* The plain paths underneath, which never bounce. */
void io_plain_fallocate(struct io_file *file, int mode, uint64_t offset,
                        uint64_t length, io_callback *cb, void *opaque);
void io_plain_writev(struct io_file *file, const struct iovec *iov, int iovcnt,
                     uint64_t offset, io_callback *cb, void *opaque);
void io_plain_pread(struct io_file *file, void *buf, size_t len,
                    uint64_t offset, io_callback *cb, void *opaque);
void io_plain_pwrite(struct io_file *file, const void *buf, size_t len,
                     uint64_t offset, io_callback *cb, void *opaque);

#endif
