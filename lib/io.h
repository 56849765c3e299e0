/* SPDX-License-Identifier: MIT */
/* Asynchronous I/O on a storage, as the engine calls it.
 *
 * An io_file is a storage (storage.h) opened on a loop: a local file by
 * default.  Operations complete through a callback on the loop's thread,
 * never from inside the submitting call.  Reads always fill the whole
 * buffer: bytes past the end read as zeros.  Writes complete whole or fail. */
#ifndef QED_LIB_IO_H
#define QED_LIB_IO_H

#include <fcntl.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "storage.h"

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

/* Kinds of file an image may live in, for io_open_fd. */
#define IO_KIND_REGULAR 0x1u
#define IO_KIND_BLOCK 0x2u

/* open(2) that never blocks on a FIFO or a device and refuses every kind of
 * file not in kinds, naming the kind it found.  Returns the descriptor (in
 * blocking mode again) or -errno. */
int io_open_fd(const char *path, int oflags, mode_t mode, unsigned kinds,
               qed_error *err);

/* Opens a local file (storage_open with storage_file_driver) and takes the
 * locks of its role (IO_OPEN_LOCK_*).  When the file system has no OFD
 * locks and locking is not required, the file is opened without them and
 * (*out)->lock_unsupported says so. */
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
int io_fallocate_sync(struct io_file *file, int mode, uint64_t offset,
                      uint64_t length);

#endif
