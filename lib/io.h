/* SPDX-License-Identifier: MIT */
/* Asynchronous file I/O: one interface over several back ends.
 *
 * An io_file is a file opened on a loop.  Operations complete through a
 * callback on the loop's thread, never from inside the submitting call.  Reads
 * always fill the whole buffer: bytes past the end of the file read as zeros.
 * Writes are retried until complete or failed. */
#ifndef QED_LIB_IO_H
#define QED_LIB_IO_H

#include <fcntl.h>
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

struct io_engine;

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
/* The engine qed_loop_new started in the loop (io-engine.c). */
struct io_engine *loop_io_engine(qed_loop *loop);

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

/* ---- image locks (io-lock.c) ----------------------------------------------
 *
 * The byte-range locks QEMU takes on image files, so that QEMU's programs
 * and ours refuse each other as QEMU's refuse each other.  Permission bit i
 * (in QEMU's order) is held while byte 100+i is read-locked, and not shared
 * with others while byte 200+i is.  Locks are open-file-description (OFD)
 * locks: they belong to the descriptor's open file, are never lost when
 * another descriptor of the same file closes, and are released when the
 * last descriptor of that open file is closed. */
#define IO_PERM_CONSISTENT_READ 0x1u
#define IO_PERM_WRITE 0x2u
#define IO_PERM_WRITE_UNCHANGED 0x4u
#define IO_PERM_RESIZE 0x8u
#define IO_PERM_ALL 0xfu

struct io_lock {
    unsigned held;     /* permissions whose byte 100+i is locked */
    unsigned unshared; /* permissions whose byte 200+i is locked */
};

/* What a reader, a writer and a creator hold: a force-sharing reader shares
 * everything. */
void io_lock_role(bool writer, bool share_all, struct io_lock *out);
void io_lock_create_role(struct io_lock *out);
/* Moves the locks on fd from *current to *want: first takes every byte
 * either needs, then tests that no other open file holds a byte that
 * conflicts with want, then releases what want does not need.  On a
 * conflict everything is as before and -EAGAIN is returned with QEMU's
 * message naming the permission and path; other lock failures return their
 * -errno (see io_lock_unsupported). */
int io_lock_change(int fd, const char *path, struct io_lock *current,
                   const struct io_lock *want, qed_error *err);
/* Is errnum (positive) a lock call's way of saying that the file system
 * has no OFD locks? */
bool io_lock_unsupported(int errnum);
/* Name of one permission bit as QEMU spells it ("write"). */
const char *io_lock_perm_name(unsigned perm);
/* The fcntl(2) the lock code calls; tests substitute one that fails. */
typedef int io_lock_fcntl_fn(int fd, int cmd, struct flock *fl);
QED_INTERNAL extern io_lock_fcntl_fn *qed_io_lock_fcntl;

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
    struct io_lock lock;                /* OFD locks held on fd */
    bool lock_unsupported; /* locking was AUTO and the file system has no
                              OFD locks: opened without them */
};

#define IO_OPEN_WRITE 0x1u
#define IO_OPEN_DIRECT 0x2u
#define IO_OPEN_CREATE 0x4u /* create or truncate */
/* Locking (QED_LOCK_AUTO without either of the first two): */
#define IO_OPEN_LOCK_OFF 0x8u      /* take no locks */
#define IO_OPEN_LOCK_REQUIRED 0x10u /* fail where OFD locks are unsupported */
#define IO_OPEN_SHARE_ALL 0x20u    /* read-only: share every permission */

/* Kinds of file an image may live in, for io_open_fd. */
#define IO_KIND_REGULAR 0x1u
#define IO_KIND_BLOCK 0x2u

/* open(2) that never blocks on a FIFO or a device and refuses every kind of
 * file not in kinds, naming the kind it found.  Returns the descriptor (in
 * blocking mode again) or -errno. */
int io_open_fd(const char *path, int oflags, mode_t mode, unsigned kinds,
               qed_error *err);

/* Opens path and takes the locks of its role (IO_OPEN_LOCK_*).  When the
 * file system has no OFD locks and locking is not required, the file is
 * opened without them and (*out)->lock_unsupported says so. */
int io_file_open(qed_loop *loop, const char *path, unsigned flags,
                 struct io_file **out, qed_error *err);
/* Takes the locks io_flags ask for on fd (for files opened by other
 * means).  Returns 0 (*unsupported set when AUTO found no OFD locks),
 * -EAGAIN on a conflict, or another -errno. */
int io_lock_open_fd(int fd, const char *path, unsigned io_flags,
                    const struct io_lock *want, struct io_lock *current,
                    bool *unsupported, qed_error *err);
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
