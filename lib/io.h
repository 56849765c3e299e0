/* Asynchronous file I/O: one interface over several back ends.
 *
 * An io_file is a file opened on a loop.  Operations complete through a
 * callback on the loop's thread, never from inside the submitting call.  Reads
 * always fill the whole buffer: bytes past the end of the file read as zeros.
 * Writes are retried until complete or failed. */
#ifndef QED_LIB_IO_H
#define QED_LIB_IO_H

#include <sys/types.h>
#include <sys/uio.h>

#include "loop.h"

typedef void io_callback(void *opaque, int ret);

enum io_kind { IO_READ, IO_WRITE, IO_SYNC, IO_FALLOCATE };

/* One operation handed to an engine.  The engine sets result (bytes done or
 * -errno) and calls complete() from the loop thread. */
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

struct io_engine_ops {
    const char *name;
    /* Accepts op; the completion comes later. */
    void (*submit)(struct io_engine *engine, struct io_op *op);
    /* Pushes accepted ops to the kernel; called before the loop sleeps. */
    void (*flush)(struct io_engine *engine);
    /* Reaps completions; called when the engine's event fd is readable. */
    void (*reap)(struct io_engine *engine);
    void (*destroy)(struct io_engine *engine);
};

struct io_engine {
    const struct io_engine_ops *ops;
    qed_loop *loop;
    int event_fd;       /* readable when completions wait */
    unsigned in_flight; /* ops accepted and not yet completed */
};

int io_engine_uring_new(qed_loop *loop, struct io_engine **out, qed_error *err);
int io_engine_threads_new(qed_loop *loop, struct io_engine **out,
                          qed_error *err);
/* Used by engines: hands a finished op back on the loop thread. */
void io_engine_completed(struct io_engine *engine, struct io_op *op);

struct io_file;

/* Back ends of an io_file: a real file descriptor on the loop's engine, or
 * (for tests) memory and fault-injecting files. */
struct io_file_ops {
    void (*submit)(struct io_file *file, struct io_op *op);
    int (*get_size)(struct io_file *file, uint64_t *size);
    int (*truncate)(struct io_file *file, uint64_t size);
    int (*allocated_bytes)(struct io_file *file, uint64_t *bytes);
    /* Next data/hole boundary at or after offset, like SEEK_DATA/SEEK_HOLE;
     * -ENXIO past the end, -ENOTSUP when the file cannot tell. */
    int (*seek)(struct io_file *file, uint64_t offset, bool data,
                uint64_t *out);
    void (*close)(struct io_file *file);
};

struct direct_write;

struct io_file {
    const struct io_file_ops *ops;
    qed_loop *loop;
    int fd;
    bool direct;   /* O_DIRECT: buffers and offsets must be aligned */
    bool writable;
    unsigned dio_align;                 /* direct: block alignment */
    struct direct_write *direct_writes; /* direct: writes in flight */
    struct direct_write *direct_writes_tail;
    unsigned direct_rmw_count;
};

#define IO_OPEN_WRITE 0x1u
#define IO_OPEN_DIRECT 0x2u
#define IO_OPEN_CREATE 0x4u /* create or truncate */

/* Kinds of file an image may live in, for io_open_fd. */
#define IO_KIND_REGULAR 0x1u
#define IO_KIND_BLOCK 0x2u

/* open(2) that never blocks on a FIFO or a device and refuses every kind of
 * file not in kinds, naming the kind it found.  Returns the descriptor (in
 * blocking mode again) or -errno. */
int io_open_fd(const char *path, int oflags, mode_t mode, unsigned kinds,
               qed_error *err);

int io_file_open(qed_loop *loop, const char *path, unsigned flags,
                 struct io_file **out, qed_error *err);
void io_file_close(struct io_file *file);

void io_readv(struct io_file *file, const struct iovec *iov, int iovcnt,
              uint64_t offset, io_callback *cb, void *opaque);
void io_writev(struct io_file *file, const struct iovec *iov, int iovcnt,
               uint64_t offset, io_callback *cb, void *opaque);
void io_pread(struct io_file *file, void *buf, size_t len, uint64_t offset,
              io_callback *cb, void *opaque);
void io_pwrite(struct io_file *file, const void *buf, size_t len,
               uint64_t offset, io_callback *cb, void *opaque);
void io_sync(struct io_file *file, io_callback *cb, void *opaque);
void io_fallocate(struct io_file *file, int mode, uint64_t offset,
                  uint64_t length, io_callback *cb, void *opaque);

/* Runs the loop until one asynchronous io call completes; for start-up
 * paths (open, create) that have nothing else to do. */
int io_pread_sync(struct io_file *file, void *buf, size_t len,
                  uint64_t offset);
int io_pwrite_sync(struct io_file *file, const void *buf, size_t len,
                   uint64_t offset);
int io_sync_sync(struct io_file *file);

#endif
