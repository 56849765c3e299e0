/* SPDX-License-Identifier: MIT */
/* Inside the FUSE export: the state the session (session.c), the file's
 * attributes and names (inode.c) and its I/O (io.c) share. */
#ifndef QED_FUSE_EXPORT_H
#define QED_FUSE_EXPORT_H

#define FUSE_USE_VERSION 31

#include <errno.h>
#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#include "mount.h"

/* Inode numbers: the root is the file itself when the mount point is a
 * regular file, else a directory holding the file. */
#define EXPORT_ROOT_INO FUSE_ROOT_ID
#define EXPORT_FILE_INO 2

/* Attributes and entries stay valid in the kernel this long: the file only
 * changes through this mount, but its allocated size (st_blocks) moves. */
#define EXPORT_ATTR_TIMEOUT_S 1.0

/* Requests the kernel may keep in flight in the background (readahead,
 * asynchronous direct I/O); its default of 12 would cap an io_depth of 16. */
#define EXPORT_MAX_BACKGROUND 128

/* Receive buffers kept for reuse once a write that took one is done. */
#define EXPORT_SPARE_BUFFERS 32

/* Read buffers from EXPORT_POOL_MIN_BYTES to EXPORT_POOL_BUFFER_BYTES (the
 * largest read the kernel sends: 256 pages) are kept for reuse, up to
 * EXPORT_POOL_BUFFERS of them (buffers.c). */
#define EXPORT_POOL_MIN_BYTES (64u * 1024)
#define EXPORT_POOL_BUFFER_BYTES (1024u * 1024)
#define EXPORT_POOL_BUFFERS 32

/* Requests read from /dev/fuse per wake-up before the loop runs other
 * events (completions, signals). */
#define EXPORT_RECEIVE_BATCH 32

struct qedi_mount {
    qed_image *img;
    qed_loop *loop;
    struct fuse_session *se;
    int fd;                      /* the session's /dev/fuse descriptor */
    char *mountpoint;            /* absolute */
    bool dir_mode;               /* the mount point is a directory */
    char *file_name;             /* dir_mode: the file's name */
    bool read_only;
    void (*notice)(void *opaque, const char *message);
    void *notice_opaque;

    /* The file's attributes; the size is the image's. */
    mode_t file_mode;            /* permission bits */
    mode_t dir_mode_bits;
    uid_t uid;
    gid_t gid;
    struct timespec atime, mtime, ctime;

    /* Life cycle. */
    bool mounted;                /* fuse_session_mount succeeded */
    bool watching;               /* fd watched on the loop */
    bool detached;               /* shutdown asked once: lazily unmounted */
    bool aborted;                /* shutdown asked twice */
    bool ended;                  /* the kernel ended the session */
    unsigned in_flight;          /* requests handed to the engine */
    unsigned open_files;

    /* The buffer requests are read into.  A write keeps the buffer its
     * data arrived in until the engine is done with it (no copy); the
     * next request is then read into a spare one. */
    struct fuse_buf rx;
    bool rx_taken;
    void *spare[EXPORT_SPARE_BUFFERS];
    unsigned nspare;

    /* A resize (ftruncate) waiting for the requests in flight to finish:
     * reading from the kernel stops meanwhile. */
    fuse_req_t resize_req;
    uint64_t resize_to;

    /* Large read buffers kept for reuse (buffers.c). */
    struct {
        void *free[EXPORT_POOL_BUFFERS];
        unsigned count;
    } pool;
};

/* session.c */
void qedi_mount_notice(struct qedi_mount *m, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A request handed to the engine, and its end (answered or not). */
static inline void qedi_mount_request_begin(struct qedi_mount *m)
{
    m->in_flight++;
}

static inline void qedi_mount_request_end(struct qedi_mount *m)
{
    m->in_flight--;
}

/* A negative errno from the engine as the positive value fuse_reply_err
 * takes (EIO for anything out of range). */
static inline int qedi_mount_errno(int ret)
{
    return ret < 0 && ret > -4096 ? -ret : EIO;
}

/* buffers.c: read buffers (aligned), reused when large. */
void *qedi_mount_buffer_get(struct qedi_mount *m, size_t length);
void qedi_mount_buffer_put(struct qedi_mount *m, void *buf, size_t length);
void qedi_mount_buffers_free(struct qedi_mount *m);
/* The receive buffer holding data[0..len), now owned by the caller, or
 * NULL when data is not in it (the caller copies then); given back with
 * qedi_mount_return_buffer.  The session reads the next request into a
 * spare after one was taken (qedi_mount_replace_taken_buffer). */
void *qedi_mount_take_buffer(struct qedi_mount *m, const void *data,
                             size_t len);
void qedi_mount_return_buffer(struct qedi_mount *m, void *buffer);
void qedi_mount_replace_taken_buffer(struct qedi_mount *m);

/* inode.c: the metadata operations and the file's attributes. */
void qedi_mount_set_inode_ops(struct fuse_lowlevel_ops *ops);
/* ftruncate: the size change waits (the session stops reading requests)
 * until the requests in flight are done; then qedi_mount_run_resize,
 * outside any loop callback, resizes and answers.  It returns 0 or the
 * negative errno, with err saying why. */
void qedi_mount_defer_resize(struct qedi_mount *m, fuse_req_t req,
                             uint64_t size);
int qedi_mount_run_resize(struct qedi_mount *m, qed_error *err);
void qedi_mount_file_stat(struct qedi_mount *m, struct stat *st);
void qedi_mount_touch(struct timespec *when);

/* io.c: the data operations. */
void qedi_mount_set_io_ops(struct fuse_lowlevel_ops *ops);

#endif
