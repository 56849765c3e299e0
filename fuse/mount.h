/* SPDX-License-Identifier: MIT */
/* The FUSE export: an open image shown as one plain file whose content is
 * the image's content as raw, through libfuse's low-level API.
 *
 * One thread: the session's /dev/fuse descriptor is watched on the image's
 * own event loop, each request is read and handed to the engine as an
 * asynchronous request, and answered from its completion callback.  Many
 * requests are in flight at once (as many as the kernel sends: every
 * process's synchronous I/O plus max_background asynchronous ones) without
 * a thread per request and without locking around the engine, which is
 * single-threaded by design.
 *
 * The file behaves as a block device would: its size is the virtual size,
 * writes past the end fail with ENOSPC (a write that crosses the end is
 * cut short), O_TRUNC is ignored; ftruncate resizes the image. */
#ifndef QED_FUSE_MOUNT_H
#define QED_FUSE_MOUNT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qed.h"

struct qedi_mount_options {
    bool read_only;            /* writes fail with EROFS */
    bool allow_other;          /* other users may use the file (the
                                  kernel checks its mode bits) */
    const char *fuse_options;  /* passed as -o to libfuse; NULL: none */
    /* When the mount point is a directory, the name of the one file it
     * holds; unused when it is a regular file. */
    const char *file_name;
    const char *fs_name;       /* the source /proc/mounts shows */
    /* Conditions an operator should hear of while the mount runs (a
     * resize that failed, files still open at shutdown); NULL: none. */
    void (*notice)(void *opaque, const char *message);
    void *notice_opaque;
};

struct qedi_mount;

/* Mounts image at mountpoint (an existing directory or regular file) and
 * watches the session on the image's loop.  Returns 0, or a negative
 * errno with err saying what failed (libfuse's own message included). */
int qedi_mount_new(qed_image *image, const char *mountpoint,
                   const struct qedi_mount_options *options,
                   struct qedi_mount **out, qed_error *err);
/* SIGINT/SIGTERM.  The first call detaches the mount point (as umount -l):
 * new opens fail, files already open keep working, and the session ends
 * when the last one closes.  A second call aborts the connection: requests
 * the kernel has not sent fail with ENOTCONN, those in flight finish.  The
 * process must ignore SIGPIPE (answers to an aborted session fail with
 * EPIPE). */
void qedi_mount_shutdown(struct qedi_mount *m);
/* True once the session ended (unmounted, detached and closed, or
 * aborted) and no request is in flight. */
bool qedi_mount_finished(const struct qedi_mount *m);
/* Runs the work that must not run inside a loop callback (a resize waits
 * for every request in flight, then blocks): call it after each
 * qed_loop_run, never from a callback. */
void qedi_mount_service(struct qedi_mount *m);
/* Unmounts if still mounted, and frees everything.  The image stays open.
 * Requests must not be in flight (qedi_mount_finished). */
void qedi_mount_free(struct qedi_mount *m);

#endif
