/* SPDX-License-Identifier: MIT */
/* Whole-buffer requests on top of operations shaped like system calls.
 *
 * A driver whose primitive is a preadv/pwritev/fdatasync/fallocate-like
 * operation (a transfer may come back short, -EINTR and -EAGAIN ask to try
 * again) gets the storage operations of storage.h from here: reads past
 * the end are completed with zeros, short transfers are continued and
 * retried operations resubmitted.  The local file driver and the tests'
 * simulated file system are built this way. */
#ifndef QED_LIB_IO_OP_H
#define QED_LIB_IO_OP_H

#include "storage.h"

enum io_kind { IO_READ, IO_WRITE, IO_SYNC, IO_FALLOCATE };

/* One operation handed to a driver (and on to an engine).  Whoever runs it
 * sets result (bytes done or -errno) and calls complete() from the loop
 * thread. */
struct io_op {
    enum io_kind kind;
    int fd;
    struct iovec *iov;
    int iovcnt;
    uint64_t offset;
    uint64_t length; /* fallocate */
    int mode;        /* fallocate */
    ssize_t result;
    void (*complete)(struct io_op *op);
    struct io_op *next; /* engine queues */
};

/* Starts op on file: returns 0 and completes it later, or returns -errno
 * when it cannot take it (op->complete is then never called). */
typedef int io_op_submit_fn(struct io_file *file, struct io_op *op);

/* The storage operations over submit.  A short read on a storage with an
 * alignment (O_DIRECT) ends at its end, which need not be aligned: the
 * rest reads as zeros without asking again. */
void qedi_io_op_readv(struct io_file *file, io_op_submit_fn *submit,
                 const struct iovec *iov, int iovcnt, uint64_t offset,
                 io_callback *cb, void *opaque);
void qedi_io_op_writev(struct io_file *file, io_op_submit_fn *submit,
                  const struct iovec *iov, int iovcnt, uint64_t offset,
                  io_callback *cb, void *opaque);
void qedi_io_op_flush(struct io_file *file, io_op_submit_fn *submit,
                 io_callback *cb, void *opaque);
void qedi_io_op_fallocate(struct io_file *file, io_op_submit_fn *submit, int mode,
                     uint64_t offset, uint64_t length, io_callback *cb,
                     void *opaque);

#endif
