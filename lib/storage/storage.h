/* SPDX-License-Identifier: MIT */
/* Storage: the bytes under a format, behind one interface.
 *
 * A storage driver opens a name into a storage (struct io_file, the name the
 * engine has always used for it) whose operations a format calls through
 * io.h (qedi_io_readv, qedi_io_writev, qedi_io_sync, qedi_io_fallocate ...).  Drivers: local
 * files (io-file.c, on the loop's io_uring or thread-pool engine), and
 * layers stacked over another storage: aligned requests for O_DIRECT
 * (io-direct.c) and flushes that return at once (qemu-img's cache=unsafe,
 * ops/walk.c).  Tests add a simulated file system (tests/unit/io-sim.c).
 *
 * What every driver guarantees to the engine:
 *   - readv, writev, flush and fallocate complete through their callback on
 *     the loop's thread, from qed_loop_run, never from inside the call that
 *     submitted them (qedi_storage_complete_later reports a result known at
 *     submission, such as -ENOMEM);
 *   - whole-buffer semantics: a read fills every byte asked for, bytes past
 *     the end of the storage reading as zeros; a write completes whole or
 *     fails (short transfers are the driver's to continue);
 *   - results are 0 or -errno: -EIO for a failed transfer, -ENOSPC when
 *     there is no room, -EOPNOTSUPP for a fallocate mode it cannot do,
 *     -EBADF for a change to a storage opened read-only, -ENOMEM;
 *   - get_size, truncate, allocated_bytes and seek are synchronous and
 *     return 0 or -errno (-ENOTSUP from seek: the storage cannot tell).
 * What the engine guarantees to drivers: calls come from the loop's thread;
 * a request's buffers stay valid until its completion, its iovec array only
 * during the call;
 * reads and writes are never empty (io.c completes those itself); nothing
 * is submitted after close, and close comes when nothing is in flight. */
#ifndef QED_LIB_STORAGE_H
#define QED_LIB_STORAGE_H

#include <fcntl.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "base.h"

typedef void io_callback(void *opaque, int ret);

#define IO_OPEN_WRITE 0x1u
#define IO_OPEN_DIRECT 0x2u
#define IO_OPEN_CREATE 0x4u /* create or truncate */
/* Locking (QED_LOCK_AUTO without either of the first two): */
#define IO_OPEN_LOCK_OFF 0x8u      /* take no locks */
#define IO_OPEN_LOCK_REQUIRED 0x10u /* fail where OFD locks are unsupported */
#define IO_OPEN_SHARE_ALL 0x20u    /* read-only: share every permission */

struct io_file;

struct storage_ops {
    const char *name;
    void (*readv)(struct io_file *file, const struct iovec *iov, int iovcnt,
                  uint64_t offset, io_callback *cb, void *opaque);
    void (*writev)(struct io_file *file, const struct iovec *iov, int iovcnt,
                   uint64_t offset, io_callback *cb, void *opaque);
    /* Makes every write completed before the call durable (fdatasync). */
    void (*flush)(struct io_file *file, io_callback *cb, void *opaque);
    /* fallocate(2)'s modes: 0 allocates (and extends), FALLOC_FL_KEEP_SIZE
     * allocates inside, FALLOC_FL_ZERO_RANGE or FALLOC_FL_PUNCH_HOLE with
     * FALLOC_FL_KEEP_SIZE zero (punching may free the space); anything
     * else may fail with -EOPNOTSUPP. */
    void (*fallocate)(struct io_file *file, int mode, uint64_t offset,
                      uint64_t length, io_callback *cb, void *opaque);
    int (*get_size)(struct io_file *file, uint64_t *size);
    int (*truncate)(struct io_file *file, uint64_t size);
    int (*allocated_bytes)(struct io_file *file, uint64_t *bytes);
    /* Next data/hole boundary at or after offset, like SEEK_DATA/SEEK_HOLE;
     * -ENXIO past the end, -ENOTSUP when the storage cannot tell. */
    int (*seek)(struct io_file *file, uint64_t offset, bool data,
                uint64_t *out);
    /* Optional (NULL: the storage has no locks, as memory or a server that
     * arbitrates its clients itself): takes the locks of the role that the
     * open flags (IO_OPEN_LOCK_*, IO_OPEN_SHARE_ALL) and file->writable ask
     * for, or sets file->lock_unsupported when locking was AUTO and cannot
     * be done.  Called by qedi_storage_open once the driver opened the file;
     * -EAGAIN with a message naming the conflict when another holder
     * refuses.  Calling it again with the same flags changes nothing. */
    int (*lock)(struct io_file *file, const char *path, unsigned flags,
                qed_error *err);
    void (*close)(struct io_file *file);
};

/* One open storage.  Drivers embed it first in their own structure. */
struct io_file {
    const struct storage_ops *ops;
    qed_loop *loop;
    bool writable;         /* writes, fallocate and truncate are allowed */
    unsigned align;        /* reads and writes need offsets, lengths and
                              buffer addresses that are multiples of this
                              (a power of two; 0 or 1: no such need) */
    bool lock_unsupported; /* locking was AUTO and the storage could not:
                              opened without locks */
};

/* What the front passes to the drivers of remote storage (as the ctx of a
 * copy of their driver): valid during open only. */
struct storage_settings {
    const char *tls_ca_file;   /* NULL: the system's CAs */
    bool tls_no_verify;
    /* s3:// objects: NULL endpoint: AWS (https, virtual-hosted);
     * NULL region: us-east-1; no keys: unsigned (public) requests. */
    const char *s3_endpoint, *s3_region;
    const char *s3_access_key_id, *s3_secret_access_key, *s3_session_token;
    /* http(s):// and s3://: the read cache's size in bytes (io-cache.c);
     * 0: none. */
    uint64_t read_cache_bytes;
};

/* Opens a name into a storage.  ctx is the driver's (a simulated file
 * system, say; struct storage_settings for the remote drivers).  The driver fills writable, align and loop, and applies
 * IO_OPEN_WRITE, IO_OPEN_CREATE and IO_OPEN_DIRECT as far as they mean
 * something to it; qedi_storage_open does the rest. */
struct storage_driver {
    const char *name;
    int (*open)(const struct storage_driver *driver, qed_loop *loop,
                const char *path, unsigned flags, struct io_file **out,
                qed_error *err);
    void *ctx;
};

/* Local files and block devices (io-file.c): the default. */
extern const struct storage_driver qedi_storage_file_driver;
/* Images inside NBD exports, named by NBD URIs (io-nbd.c, libnbd). */
extern const struct storage_driver qedi_storage_nbd_driver;
/* Read-only images behind http:// and https:// URLs (io-http.c, libcurl). */
extern const struct storage_driver qedi_storage_http_driver;
/* Read-only images in S3-compatible object stores, s3://BUCKET/KEY
 * (io-http.c: the HTTP driver with AWS Signature V4). */
extern const struct storage_driver qedi_storage_s3_driver;

/* The driver a name asks for: the NBD driver for nbd://, nbds://,
 * nbd+unix:// and nbds+unix:// URIs, the HTTP driver for http:// and
 * https:// URLs, the S3 driver for s3://, else local files. */
const struct storage_driver *qedi_storage_driver_for(const char *name);
/* Whether a name is a URI of one of the storage drivers (not a path). */
bool qedi_storage_is_uri(const char *name);
/* name as messages may show it: a URI's password (user:password@) is
 * replaced by "***".  The text lives in a buffer of the calling thread,
 * valid until the next call. */
const char *qedi_storage_uri_for_messages(const char *name);
/* text with every occurrence of name's password replaced by "***" (in a
 * buffer of the calling thread, valid until the next call); text itself
 * when name has none. */
const char *qedi_storage_scrub(const char *name, const char *text);

/* Opens path through driver (NULL: the one qedi_storage_driver_for(path)
 * names), takes its locks
 * (ops->lock) and, when the storage wants aligned requests, stacks the
 * aligning layer (io-direct.c) over it, so the engine may issue any
 * request.  A driver that builds on another opens that one through here
 * and returns a layer of its own over it. */
int qedi_storage_open(const struct storage_driver *driver, qed_loop *loop,
                 const char *path, unsigned flags, struct io_file **out,
                 qed_error *err);

/* Calls cb(opaque, ret) from file's loop, never from inside this call: for
 * results known when a request is submitted (an empty transfer, -ENOMEM).
 * Needs no memory of its own: a reserve taken when the first storage was
 * opened on the loop covers it, and when that is spent too it waits for
 * memory rather than lose the completion. */
void qedi_storage_complete_later(struct io_file *file, io_callback *cb,
                            void *opaque, int ret);

/* The allocator of the memory a request needs on the submission path (and
 * of the reserve above); tests substitute one that fails. */
QED_INTERNAL extern void *(*qedi_io_calloc)(size_t count, size_t size);

/* For storage that cannot tell how much space it takes or where its data
 * is (a server): allocated_bytes and seek answering -ENOTSUP. */
int qedi_storage_unknown_allocation(struct io_file *file, uint64_t *bytes);
int qedi_storage_cannot_seek(struct io_file *file, uint64_t offset, bool data,
                             uint64_t *out);

/* ---- layers stacked over another storage ---------------------------------- */

struct storage_layer {
    struct io_file base;
    struct io_file *lower;
};

/* Fills the layer's io_file from lower: loop, writable, lock_unsupported;
 * align 1 (a layer takes requests of every shape unless it says so). */
void qedi_storage_layer_init(struct storage_layer *layer,
                        const struct storage_ops *ops, struct io_file *lower);
/* Operations that pass straight through to the lower storage. */
void qedi_storage_layer_readv(struct io_file *file, const struct iovec *iov,
                         int iovcnt, uint64_t offset, io_callback *cb,
                         void *opaque);
void qedi_storage_layer_writev(struct io_file *file, const struct iovec *iov,
                          int iovcnt, uint64_t offset, io_callback *cb,
                          void *opaque);
void qedi_storage_layer_flush(struct io_file *file, io_callback *cb, void *opaque);
void qedi_storage_layer_fallocate(struct io_file *file, int mode, uint64_t offset,
                             uint64_t length, io_callback *cb, void *opaque);
int qedi_storage_layer_get_size(struct io_file *file, uint64_t *size);
int qedi_storage_layer_truncate(struct io_file *file, uint64_t size);
int qedi_storage_layer_allocated_bytes(struct io_file *file, uint64_t *bytes);
int qedi_storage_layer_seek(struct io_file *file, uint64_t offset, bool data,
                       uint64_t *out);
/* Closes the lower storage and frees the layer (allocated with malloc,
 * the storage_layer first). */
void qedi_storage_layer_close(struct io_file *file);

/* A read cache with read-ahead of bytes (at least 1 MiB) over lower,
 * read-only remote storage (io-cache.c); closing it closes lower. */
int qedi_storage_cache_open(struct io_file *lower, uint64_t bytes,
                            struct io_file **out, qed_error *err);

/* ---- the engine's calls (io.c) ------------------------------------------- */
/* Asynchronous I/O on a storage, as the engine calls it.
 *
 * An io_file is a storage (storage.h) opened on a loop: a local file by
 * default.  Operations complete through a callback on the loop's thread,
 * never from inside the submitting call.  Reads always fill the whole
 * buffer: bytes past the end read as zeros.  Writes complete whole or fail. */



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
void qedi_io_lock_role(bool writer, bool share_all, struct io_lock *out);
void qedi_io_lock_create_role(struct io_lock *out);
/* Moves the locks on fd from *current to *want: first takes every byte
 * either needs, then tests that no other open file holds a byte that
 * conflicts with want, then releases what want does not need.  On a
 * conflict everything is as before and -EAGAIN is returned with QEMU's
 * message naming the permission and path; other lock failures return their
 * -errno (see qedi_io_lock_unsupported). */
int qedi_io_lock_change(int fd, const char *path, struct io_lock *current,
                   const struct io_lock *want, qed_error *err);
/* Is errnum (positive) a lock call's way of saying that the file system
 * has no OFD locks? */
bool qedi_io_lock_unsupported(int errnum);
/* Name of one permission bit as QEMU spells it ("write"). */
const char *qedi_io_lock_perm_name(unsigned perm);
/* The fcntl(2) the lock code calls; tests substitute one that fails. */
typedef int io_lock_fcntl_fn(int fd, int cmd, struct flock *fl);
QED_INTERNAL extern io_lock_fcntl_fn *qedi_io_lock_fcntl;

/* Kinds of file an image may live in, for qedi_io_open_fd. */
#define IO_KIND_REGULAR 0x1u
#define IO_KIND_BLOCK 0x2u

/* open(2) that never blocks on a FIFO or a device and refuses every kind of
 * file not in kinds, naming the kind it found.  Returns the descriptor (in
 * blocking mode again) or -errno. */
int qedi_io_open_fd(const char *path, int oflags, mode_t mode, unsigned kinds,
               qed_error *err);

/* Opens a local file (qedi_storage_open with qedi_storage_file_driver) and takes the
 * locks of its role (IO_OPEN_LOCK_*).  When the file system has no OFD
 * locks and locking is not required, the file is opened without them and
 * (*out)->lock_unsupported says so. */
int qedi_io_file_open(qed_loop *loop, const char *path, unsigned flags,
                 struct io_file **out, qed_error *err);
/* Takes the locks io_flags ask for on fd (for files opened by other
 * means).  Returns 0 (*unsupported set when AUTO found no OFD locks),
 * -EAGAIN on a conflict, or another -errno. */
int qedi_io_lock_open_fd(int fd, const char *path, unsigned io_flags,
                    const struct io_lock *want, struct io_lock *current,
                    bool *unsupported, qed_error *err);
void qedi_io_file_close(struct io_file *file);

void qedi_io_readv(struct io_file *file, const struct iovec *iov, int iovcnt,
              uint64_t offset, io_callback *cb, void *opaque);
void qedi_io_writev(struct io_file *file, const struct iovec *iov, int iovcnt,
               uint64_t offset, io_callback *cb, void *opaque);
void qedi_io_pread(struct io_file *file, void *buf, size_t len, uint64_t offset,
              io_callback *cb, void *opaque);
void qedi_io_pwrite(struct io_file *file, const void *buf, size_t len,
               uint64_t offset, io_callback *cb, void *opaque);
void qedi_io_sync(struct io_file *file, io_callback *cb, void *opaque);
void qedi_io_fallocate(struct io_file *file, int mode, uint64_t offset,
                  uint64_t length, io_callback *cb, void *opaque);

/* Runs the loop until one asynchronous io call completes; for start-up
 * paths (open, create) that have nothing else to do. */
int qedi_io_pread_sync(struct io_file *file, void *buf, size_t len,
                  uint64_t offset);
int qedi_io_pwrite_sync(struct io_file *file, const void *buf, size_t len,
                   uint64_t offset);
int qedi_io_sync_sync(struct io_file *file);
int qedi_io_fallocate_sync(struct io_file *file, int mode, uint64_t offset,
                      uint64_t length);

#endif
