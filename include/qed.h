/* SPDX-License-Identifier: MIT */
/*
 * libqed — QED (QEMU Enhanced Disk) images without QEMU.
 *
 * Threading: an image and everything opened with it (its backing chain) belong
 * to one event loop (qed_loop) and must only be used from the thread that runs
 * that loop.  Different loops may run on different threads.
 *
 * Errors: every call that can fail returns 0 on success or a negative errno
 * value, and fills the caller's qed_error (when not NULL) with the positive
 * errno and a message naming the field and value at fault.  The library never
 * prints and never exits.
 *
 * Blocking: qed_aio_* calls never block; their callback runs later from
 * qed_loop_run() on the loop's thread, never from inside the submitting call.
 * The synchronous calls (qed_pread, qed_pwrite, ...) submit the same request
 * and run the image's loop until it completes.  Every call documented below
 * as blocking waits for file I/O; those that take an image (or open one)
 * run its loop meanwhile, dispatching the loop's other events, and must not
 * be called from a callback running on that same loop.  Calls not marked
 * as blocking return at once.
 */
#ifndef QED_H
#define QED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- version and features -------------------------------------------------
 *
 * The version of this header; qed_version() and qed_version_number() give
 * the library's, which may be newer (never older: the soname changes when
 * a release drops or changes anything).  QED_HAVE_* says that this header
 * offers a capability added after 2.0, for code built against several. */
#define QED_VERSION_MAJOR 2
#define QED_VERSION_MINOR 0
#define QED_VERSION_MICRO 0
#define QED_VERSION_STRING "2.0.0"
#define QED_VERSION_ENCODE(major, minor, micro)                                \
    (((unsigned)(major) << 16) | ((unsigned)(minor) << 8) | (unsigned)(micro))
#define QED_VERSION_NUMBER                                                     \
    QED_VERSION_ENCODE(QED_VERSION_MAJOR, QED_VERSION_MINOR, QED_VERSION_MICRO)
/* True when this header is at least major.minor.micro. */
#define QED_CHECK_VERSION(major, minor, micro)                                 \
    (QED_VERSION_NUMBER >= QED_VERSION_ENCODE(major, minor, micro))

#define QED_HAVE_LOOP_FD 1        /* qed_loop_get_fd, _get_timeout, _dispatch */
#define QED_HAVE_LOOP_CALL_SOON 1 /* qed_loop_call_soon */
#define QED_HAVE_TRACE 1          /* qed_set_trace */

/* The library's version, as "major.minor.micro" (a static string) and as
 * QED_VERSION_ENCODE would give it. */
const char *qed_version(void);
unsigned qed_version_number(void);

/* ---- growable structs ------------------------------------------------------
 *
 * Every struct a program fills for the library (options) or receives from it
 * (results, information) starts with a size_t size: the program sets it to
 * sizeof the struct as it was compiled, with the struct's init function
 * (qed_open_options_init(&o), ...), which also zeroes every field (zero is
 * each field's default) before the program sets the ones it wants.  The
 * struct then grows in later releases, at its end only, without breaking
 * programs built against an older qed.h:
 *   - a smaller size (an older program) is accepted: options it does not
 *     have take their defaults, and results past its size are not written;
 *   - a size below that of the struct's first version (2.0) fails with
 *     EINVAL, err naming size and its value: size was not set;
 *   - a larger size (a newer program with an older library) is accepted for
 *     options when every byte past what the library knows is zero (options
 *     left at their defaults), else EINVAL; results past what the library
 *     knows are zeroed.
 * qed_error never changes: it is code and message, as here. */

/* ---- errors -------------------------------------------------------------- */

typedef struct qed_error {
    int code;           /* positive errno value, 0 for none */
    char message[512];  /* one line, no trailing newline */
} qed_error;

/* ---- on-disk constants ---------------------------------------------------- */

#define QED_MAGIC 0x00444551u /* "QED\0" little-endian */
#define QED_F_BACKING_FILE 0x01ull
#define QED_F_NEED_CHECK 0x02ull
#define QED_F_BACKING_FORMAT_NO_PROBE 0x04ull
#define QED_FEATURE_MASK                                                      \
    (QED_F_BACKING_FILE | QED_F_NEED_CHECK | QED_F_BACKING_FORMAT_NO_PROBE)

#define QED_MIN_CLUSTER_SIZE 4096u
#define QED_MAX_CLUSTER_SIZE (64u * 1024 * 1024)
#define QED_DEFAULT_CLUSTER_SIZE (64u * 1024)
#define QED_MIN_TABLE_SIZE 1u
#define QED_MAX_TABLE_SIZE 16u
#define QED_DEFAULT_TABLE_SIZE 4u
/* Longest backing file name accepted, in bytes. */
#define QED_MAX_BACKING_NAME 4095u
/* Deepest backing chain followed before giving up. */
#define QED_MAX_CHAIN_DEPTH 64u

/* ---- event loop ----------------------------------------------------------- */

typedef struct qed_loop qed_loop;

enum qed_engine {
    QED_ENGINE_AUTO = 0, /* io_uring when the kernel allows it, else
                            threads (the library reads no environment:
                            the qed tool maps QED_IO_ENGINE to these) */
    QED_ENGINE_URING,
    QED_ENGINE_THREADS,
};

/* Creates an event loop with its file I/O engine (AUTO: io_uring when
 * available, else a thread pool).  On success stores the loop in *out and
 * returns 0; on failure *out is NULL and a negative errno is returned with
 * err filled (e.g. URING where io_uring is forbidden).  Does not block. */
int qed_loop_new(enum qed_engine engine, qed_loop **out, qed_error *err);
/* Frees a loop (NULL is ignored), with its engine, watches and timers;
 * every image on it must have been closed.  Watched descriptors are not
 * closed.  A loop an image made for itself is freed by qed_close. */
void qed_loop_free(qed_loop *loop);
/* Name of the I/O engine in use: "io_uring" or "threads" (a static
 * string). */
const char *qed_loop_engine_name(const qed_loop *loop);
/* Runs one iteration: waits up to timeout_ms (-1 forever, 0 not at all) for
 * events and dispatches them.  Returns the number of events dispatched or a
 * negative errno.  Blocks up to timeout_ms (less when something is ready
 * or a timer is due); 0 means nothing was dispatched (the timeout expired
 * or a signal interrupted the wait).  Every callback (requests, watches,
 * timers) runs from here, on the calling thread, which must be the one
 * that uses the loop's images; not to be called from one of those
 * callbacks. */
int qed_loop_run(qed_loop *loop, int timeout_ms);

/* Driving the loop from another event loop (glib, libuv, a server's own
 * epoll or poll) instead of qed_loop_run, all on the loop's thread:
 *   1. qed_loop_get_timeout: call it right before waiting.  It hands the
 *      I/O queued since the last dispatch to the kernel, and returns how
 *      long the caller may wait at most: 0 when work is ready, the time to
 *      the next timer in milliseconds, or -1 for no limit;
 *   2. wait until qed_loop_get_fd's descriptor is readable (POLLIN) or that
 *      time has passed;
 *   3. qed_loop_dispatch: runs whatever is ready without blocking, and
 *      returns the number of events dispatched or a negative errno.
 * The descriptor stays the same for the loop's life; it is the loop's own,
 * not to be read or closed.  Callbacks run from qed_loop_dispatch. */
int qed_loop_get_fd(const qed_loop *loop);
int qed_loop_get_timeout(qed_loop *loop);
int qed_loop_dispatch(qed_loop *loop);

/* File-descriptor watches, for servers that share the image's loop. */
#define QED_LOOP_READ 1u
#define QED_LOOP_WRITE 2u
#define QED_LOOP_HANGUP 4u /* reported (never requested): the peer hung up
                              or the descriptor is in error */
typedef void qed_fd_callback(void *opaque, int fd, unsigned events);
/* Calls cb(opaque, fd, ready) from qed_loop_run whenever fd is ready for
 * events (QED_LOOP_READ and/or QED_LOOP_WRITE; level-triggered: the
 * callback must consume what is ready or change the watch).  Watching a
 * watched fd again replaces its events, cb and opaque (also from inside
 * cb).  The fd stays the caller's: unwatch it before closing it.  Returns
 * 0 or a negative errno (from epoll_ctl, or -ENOMEM).  Does not block. */
int qed_loop_watch_fd(qed_loop *loop, int fd, unsigned events,
                      qed_fd_callback *cb, void *opaque);
/* Stops watching fd.  Returns 0, or -ENOENT when fd was not watched.  Does
 * not block. */
int qed_loop_unwatch_fd(qed_loop *loop, int fd);

/* One-shot timers.  Returns an id > 0; qed_loop_cancel_timer(id) before it
 * fires cancels it.  cb(opaque) runs once from qed_loop_run when delay_ms
 * milliseconds (monotonic clock) have passed.  qed_loop_add_timer returns
 * 0 when out of memory (no timer is set); cancelling an id that already
 * fired or was cancelled does nothing.  Neither blocks. */
typedef void qed_timer_callback(void *opaque);
uint64_t qed_loop_add_timer(qed_loop *loop, uint64_t delay_ms,
                            qed_timer_callback *cb, void *opaque);
void qed_loop_cancel_timer(qed_loop *loop, uint64_t id);

/* Calls cb(opaque) once from qed_loop_run, on the loop's next iteration,
 * never from inside this call: for work that must not run on the stack of
 * the code that asks for it (freeing an object whose callback is running).
 * Returns 0, or -ENOMEM (nothing is queued).  Does not block. */
int qed_loop_call_soon(qed_loop *loop, qed_timer_callback *cb, void *opaque);

/* ---- tracing --------------------------------------------------------------- */

/* Receives one line (without a newline) per event the engine traces: an
 * image opened or closed, a request submitted or completed, each state a
 * QED request enters and each phase of a table's group write (the names
 * docs/architecture.md gives).  It runs on the thread of the event, inside
 * the engine: it must not call libqed. */
typedef void qed_trace_callback(void *opaque, const char *line);
/* Turns tracing on for the whole process (cb) or off (NULL); off costs
 * one predictable branch per event.  Set it while no image is in use: the
 * switch is not synchronised with other threads.  `qed` turns it on when
 * the environment has QED_TRACE=1. */
void qed_set_trace(qed_trace_callback *cb, void *opaque);

/* ---- images --------------------------------------------------------------- */

typedef struct qed_image qed_image;

enum qed_format {
    QED_FORMAT_PROBE = 0, /* QED magic -> qed, anything else -> raw */
    QED_FORMAT_QED,
    QED_FORMAT_RAW,
};

enum qed_cache {
    QED_CACHE_WRITEBACK = 0,
    QED_CACHE_NONE, /* O_DIRECT */
};

#define QED_OPEN_RDWR 0x1u       /* read-write; default is read-only */
#define QED_OPEN_NO_BACKING 0x2u /* do not open the backing chain; reads of
                                    unallocated ranges then fail with ENOTSUP;
                                    only read-only for images with one */
#define QED_OPEN_NO_CHECK 0x4u   /* read-write open of a dirty image without
                                    the automatic check and repair (for
                                    qed_check to examine it first) */
#define QED_OPEN_COPY_ON_READ 0x10u /* read-write opens only: what a read
                                       takes from the backing chain is
                                       also written into the image (whole
                                       clusters, only where the image still
                                       has none; the read completes once it
                                       is), so the image holds its data
                                       itself over time */
#define QED_OPEN_FORCE_SHARE 0x8u /* read-only opens only: share every
                                     permission, so that writers of the
                                     image (and its chain) do not stop the
                                     open, as qemu-img -U; what is read may
                                     then be inconsistent */

/* Image locking.  The files of an image and its backing chain carry the
 * open-file-description locks QEMU (2.10 and later) takes, for as long as
 * they are open: a read-write open refuses, and is refused by, any other
 * open of the file, QEMU's included, except force-sharing readers; read-only
 * opens do not refuse each other.  A conflict fails the open with -EAGAIN
 * (err->code EAGAIN) before anything is read or written, and err->message
 * says, as QEMU does, 'Failed to get "write" lock' (or 'shared "write"',
 * "resize", ...) and 'Is another process using the image [FILE]?'. */
enum qed_lock_mode {
    QED_LOCK_AUTO = 0, /* lock; where the file system has no OFD locks,
                          open without them and add a warning to
                          qed_warnings() */
    QED_LOCK_ON,       /* lock, and fail where that is not supported */
    QED_LOCK_OFF,      /* take no locks (and respect none) */
};

struct qed_open_options {
    size_t size;               /* sizeof(struct qed_open_options) */
    unsigned flags;            /* QED_OPEN_* */
    enum qed_format format;    /* PROBE by default */
    enum qed_cache cache;
    enum qed_engine engine;    /* used when loop is NULL */
    qed_loop *loop;            /* NULL: the image makes and owns its loop */
    size_t l2_cache_bytes;     /* 0: default (32 MiB) */
    enum qed_lock_mode locking; /* for the image and its backing chain */
    /* Added after 2.0.0, for images (and backing files) behind https://
     * URLs: */
    const char *tls_ca_file;   /* PEM file of the CAs to verify servers
                                  with; NULL: the system's */
    bool tls_no_verify;        /* do not verify servers' certificates (an
                                  explicit opt-out: anyone on the path can
                                  then serve other data) */
    /* s3://BUCKET/KEY objects (read-only), signed with AWS Signature V4
     * when both keys are given (else unsigned, for public objects): */
    const char *s3_endpoint;   /* "http://127.0.0.1:9000": path-style
                                  requests there; NULL: AWS itself */
    const char *s3_region;     /* NULL: us-east-1 */
    const char *s3_access_key_id;
    const char *s3_secret_access_key;
    const char *s3_session_token; /* temporary credentials; NULL: none */
    /* Images behind http(s):// and s3:// names: each remote file's read
     * cache and read-ahead, in bytes (at least 1 MiB); 0: the default,
     * QED_REMOTE_CACHE_DEFAULT; QED_REMOTE_CACHE_OFF: none. */
    uint64_t remote_cache_bytes;
};

#define QED_REMOTE_CACHE_DEFAULT (UINT64_C(64) << 20)
#define QED_REMOTE_CACHE_OFF UINT64_MAX

/* Sets size and every option to its default (the init functions of the
 * other structs below do the same for theirs). */
static inline void qed_open_options_init(struct qed_open_options *o)
{
    memset(o, 0, sizeof(*o));
    o->size = sizeof(*o);
}

/* Opens an image and its backing chain.  options may be NULL (read-only,
 * probed format, own loop, locking AUTO); else options->size must be set
 * (qed_open_options_init).  On success stores the handle in
 * *out and returns 0; on failure *out is NULL and a negative errno is
 * returned with err saying what is wrong (and with which backing file):
 * -EAGAIN when another open of one of the files conflicts (see
 * qed_lock_mode), -EINVAL for FORCE_SHARE with RDWR.  Backing files are
 * opened read-only with the same locking and FORCE_SHARE.  Blocks: reads
 * the header and L1 table, opens the backing chain, and for a read-write
 * open of a dirty image checks and repairs it (see QED_OPEN_NO_CHECK),
 * running the loop (options->loop, or the image's own) meanwhile. */
int qed_open(const char *path, const struct qed_open_options *options,
             qed_image **out, qed_error *err);
/* Waits for every request in flight, flushes, marks the image clean (clears
 * QED_F_NEED_CHECK; failed writes that left clusters only a check can
 * reclaim keep it set, for the next read-write open to repair), closes the
 * chain and frees everything, even on error.
 * Blocks, running the image's loop; frees the loop too when the image made
 * it.  NULL is ignored.  Returns 0, or a negative errno when the flush or
 * the header update failed (the image may then still be marked dirty; it
 * is freed all the same). */
int qed_close(qed_image *image, qed_error *err);

/* The loop the image (and its backing chain) runs on: options->loop given
 * to qed_open, or the loop the image made for itself. */
qed_loop *qed_image_loop(const qed_image *image);
/* Runs the image's loop until no request on it (or its backing chain) is in
 * flight.  Blocks. */
int qed_drain(qed_image *image, qed_error *err);

/* What a new image (or the range a resize adds) gets allocated up front. */
enum qed_preallocation {
    QED_PREALLOC_OFF = 0,   /* nothing: tables and clusters on first write */
    QED_PREALLOC_METADATA,  /* every L2 table, zeroed */
    QED_PREALLOC_FALLOC,    /* metadata, and every data cluster allocated in
                               guest order with fallocate (reads zeros) */
    QED_PREALLOC_FULL,      /* as falloc, the data clusters written with
                               zeros */
};

/* "off", "metadata", "falloc", "full"; NULL for other values. */
const char *qed_preallocation_name(enum qed_preallocation mode);

struct qed_create_options {
    size_t size;                /* sizeof(struct qed_create_options) */
    uint64_t virtual_size;      /* in bytes, a multiple of 512 */
    bool size_from_backing;     /* take the size from the backing file */
    uint32_t cluster_size;      /* 0: 64 KiB */
    uint32_t table_size;        /* 0: 4 */
    const char *backing_file;   /* NULL or "": none; stored as given */
    enum qed_format backing_format; /* RAW sets QED_F_BACKING_FORMAT_NO_PROBE;
                                       PROBE/QED leave the format to probing */
    enum qed_preallocation preallocation;
    enum qed_lock_mode locking; /* of the file while it is written (and of
                                   the backing file while it is read) */
    /* Added after 2.0.0: how the backing file is opened to read its size,
     * for one behind a URL (tls_*, s3_*); NULL: the defaults. */
    const struct qed_open_options *backing_options;
};

static inline void qed_create_options_init(struct qed_create_options *o)
{
    memset(o, 0, sizeof(*o));
    o->size = sizeof(*o);
}

/* Creates (or truncates) a QED image at path.  Refuses non-regular files,
 * and (-EAGAIN, see qed_lock_mode) files another open is writing or
 * reading without sharing resize, before anything in them changes.
 * The header and an empty L1 table are written and synced before it
 * returns; with preallocation, the L1 table, every L2 table (one after the
 * other) and the data clusters (after them, in guest order) are written
 * and synced before the header, so until the image is complete the file
 * has no QED magic; on failure the file is emptied (and removed when this
 * call created it).  With a backing file, an image that would be its own
 * backing file is refused before path is opened, and the backing file is
 * opened read-only first (to check it, and for size_from_backing to take
 * its size).  Blocks (plain
 * system calls; no image loop is involved).  Returns 0 or a negative
 * errno with err naming the value at fault (e.g. an invalid cluster
 * size). */
int qed_create(const char *path, const struct qed_create_options *options,
               qed_error *err);

/* Why QEMU 7.2 refuses to open a valid QED image of this geometry, or NULL
 * when it opens it.  QEMU computes the largest image size as
 * (cluster_size * table_size / 8)^2 * cluster_size in 64 bits, which wraps
 * for large geometries (e.g. 8 MiB clusters, or 2 MiB clusters with
 * table_size=16), and its table offset check fails for table_size=1.
 * cluster_size and table_size of 0 mean the defaults. */
const char *qed_qemu_open_problem(uint64_t size, uint32_t cluster_size,
                                  uint32_t table_size);

struct qed_image_info {
    size_t size;               /* sizeof(struct qed_image_info), set by the
                                  caller */
    enum qed_format format;
    char filename[4096];
    uint64_t virtual_size;
    uint64_t file_size;        /* length of the file in bytes */
    uint64_t actual_size;      /* bytes allocated on the host (st_blocks) */
    bool dirty;                /* QED_F_NEED_CHECK set */
    /* QED only: */
    uint32_t cluster_size;
    uint32_t table_size;
    uint32_t header_size;      /* in clusters */
    uint64_t features;
    uint64_t compat_features;
    uint64_t autoclear_features;
    uint64_t l1_table_offset;
    bool has_backing;
    char backing_file[QED_MAX_BACKING_NAME + 1];      /* as stored */
    char backing_file_full[4096];                     /* resolved path */
    enum qed_format backing_format; /* the recorded format: RAW when the
                                       header has NO_PROBE, else PROBE
                                       (probed at every open) */
    /* Added after 2.0.0 (programs built before do not get it): */
    bool actual_size_unknown;  /* the storage cannot tell the space it
                                  takes (an NBD export): actual_size 0 */
};

/* Sets size (and zeroes the rest) before the struct is handed over. */
static inline void qed_image_info_init(struct qed_image_info *info)
{
    memset(info, 0, sizeof(*info));
    info->size = sizeof(*info);
}

/* Fills *info (its size set: qed_image_info_init) with what `qed info`
 * shows: format, file name, sizes, the
 * dirty bit and, for QED, the header fields and the backing file as stored
 * and as resolved.  Does not run the loop (it only asks the file system
 * for sizes).  Returns 0 or a negative errno. */
int qed_get_info(qed_image *image, struct qed_image_info *info,
                 qed_error *err);
/* Warnings from opening the image: NULL, or one or more lines separated by
 * '\n' (no trailing newline), e.g. that a raw image's format was probed and
 * writes into its first sector are restricted.  Valid until qed_close. */
const char *qed_warnings(const qed_image *image);

/* The open backing image, or NULL.  It belongs to image and is closed with
 * it. */
qed_image *qed_backing(qed_image *image);
/* The virtual size in bytes (for a raw image: its length rounded up to a
 * multiple of 512). */
uint64_t qed_size(const qed_image *image);
/* QED_FORMAT_QED or QED_FORMAT_RAW: what the image was opened as. */
enum qed_format qed_format_of(const qed_image *image);
/* "qed", "raw", or "probe" for QED_FORMAT_PROBE (static strings). */
const char *qed_format_name(enum qed_format format);

/* ---- I/O ------------------------------------------------------------------ */

/* Called once per request on the loop's thread.  ret is 0 or -errno; err is
 * NULL on success and valid only during the call otherwise. */
typedef void qed_callback(void *opaque, int ret, const qed_error *err);

/* write_zeroes flags */
#define QED_ZERO_MAY_UNMAP 0x1u  /* whole clusters may become zero clusters
                                    (the default way zeroes are stored) */
#define QED_ZERO_NO_FALLBACK 0x2u /* fail with ENOTSUP rather than write
                                     zero bytes */

/* Block status of the range starting at an offset, resolved through the
 * backing chain, with the meaning of `qemu-img map`. */
struct qed_block_status {
    size_t size;       /* sizeof(struct qed_block_status), set by the caller */
    uint64_t length;   /* bytes from the offset with the same status */
    unsigned depth;    /* layer that answered: 0 = this image */
    bool present;      /* allocated in some layer (reads come from it) */
    bool zero;         /* reads as zeros */
    bool data;         /* backed by host data */
    bool has_offset;   /* host offset known (in the layer at depth) */
    uint64_t offset;   /* host offset of the first byte */
};

static inline void qed_block_status_init(struct qed_block_status *status)
{
    memset(status, 0, sizeof(*status));
    status->size = sizeof(*status);
}

/* Asynchronous requests.  None of them blocks.  Each returns 0 when the
 * request was accepted: cb(opaque, ret, err) then runs exactly once, later,
 * from qed_loop_run on the image's loop.  Or it returns a negative errno at
 * once and cb never runs: -EINVAL (the range is not inside the virtual
 * size), -EPERM (a change to an image opened read-only), -ENOMEM.  The iov
 * array is copied; the buffers it points to must stay valid (and, for
 * writes, unchanged) until cb runs.  Requests in flight complete in any
 * order. */

/* Reads the iov's total length at offset.  Ranges the image does not
 * allocate read from the backing chain, as zeros past its end or without
 * one. */
int qed_aio_readv(qed_image *image, const struct iovec *iov, int iovcnt,
                  uint64_t offset, qed_callback *cb, void *opaque);
/* Writes the iov's total length at offset, allocating clusters as needed. */
int qed_aio_writev(qed_image *image, const struct iovec *iov, int iovcnt,
                   uint64_t offset, qed_callback *cb, void *opaque);
/* Makes length bytes at offset read as zeros (flags: QED_ZERO_*): whole
 * clusters become zero clusters or are zeroed in place, partial ones get
 * zero bytes. */
int qed_aio_write_zeroes(qed_image *image, uint64_t offset, uint64_t length,
                         unsigned flags, qed_callback *cb, void *opaque);
/* Releases the host space of the whole allocated clusters in the range
 * (they read as zeros afterwards); partial clusters are left as they are. */
int qed_aio_discard(qed_image *image, uint64_t offset, uint64_t length,
                    qed_callback *cb, void *opaque);
/* Makes the writes that completed before it durable. */
int qed_aio_flush(qed_image *image, qed_callback *cb, void *opaque);
/* Fills *status (which must stay valid until the callback; its size set:
 * qed_block_status_init) for the range at offset, at most length bytes.
 * offset must be inside the image and length > 0, and status->size valid
 * (else -EINVAL). */
int qed_aio_block_status(qed_image *image, uint64_t offset, uint64_t length,
                         struct qed_block_status *status, qed_callback *cb,
                         void *opaque);

/* Synchronous forms: block until done, running the image's loop.  Each
 * submits the matching qed_aio_* request (qed_pread: qed_aio_readv, ...)
 * and returns its result: 0, or a negative errno with err filled (for a
 * request that could not be submitted: "range outside the image" EINVAL,
 * "image is read-only" EPERM).  Other events on the loop are dispatched
 * meanwhile.  Called from a callback running on the image's loop (where
 * they would wait for themselves), they, qed_drain and qed_close fail at
 * once with EDEADLK and change nothing: use the qed_aio_* calls there. */
int qed_pread(qed_image *image, void *buf, size_t length, uint64_t offset,
              qed_error *err);
int qed_pwrite(qed_image *image, const void *buf, size_t length,
               uint64_t offset, qed_error *err);
int qed_write_zeroes(qed_image *image, uint64_t offset, uint64_t length,
                     unsigned flags, qed_error *err);
int qed_discard(qed_image *image, uint64_t offset, uint64_t length,
                qed_error *err);
int qed_flush(qed_image *image, qed_error *err);
int qed_block_status(qed_image *image, uint64_t offset, uint64_t length,
                     struct qed_block_status *status, qed_error *err);

/* ---- consistency check -------------------------------------------------- */

struct qed_check_result {
    size_t size;                  /* sizeof(struct qed_check_result), set by
                                     the caller */
    uint64_t check_errors;        /* I/O errors that stopped parts of the check */
    uint64_t corruptions;         /* found (before any repair) */
    uint64_t leaks;               /* found (before any repair) */
    uint64_t corruptions_fixed;
    uint64_t leaks_fixed;
    uint64_t total_clusters;      /* clusters of the virtual disk */
    uint64_t allocated_clusters;  /* data clusters referenced */
    uint64_t fragmented_clusters; /* data clusters not right after the
                                     previous one */
    uint64_t image_end_offset;    /* end of the last cluster in use */
};

static inline void qed_check_result_init(struct qed_check_result *r)
{
    memset(r, 0, sizeof(*r));
    r->size = sizeof(*r);
}

#define QED_CHECK_REPAIR_LEAKS 0x1u /* reclaim clusters nothing references */
#define QED_CHECK_REPAIR_ALL 0x3u   /* leaks and corruptions */

/* Checks a QED image (opened read-only, or read-write for repair; a dirty
 * image opened read-write with QED_OPEN_NO_CHECK is examined as it is).
 * Blocks.  Repair never changes what a reader of the image sees, except
 * that entries pointing outside the file read as unallocated afterwards.
 * Returns 0 when the check ran (what it found and fixed is in *result) or
 * a negative errno: EINVAL (not a QED image, unknown repair bits), EPERM
 * (repair of a read-only image), EBUSY (requests in flight), or the error
 * that stopped it. */
int qed_check(qed_image *image, unsigned repair,
              struct qed_check_result *result, qed_error *err);

/* ---- helpers ---------------------------------------------------------------- */

/* Parses a size as qemu-img does: "512", "64k", "1G", "1.5G", "10b",
 * "0x1000" (suffixes bB (bytes) and kKMGTPE (powers of 1024); a fraction
 * needs a suffix and is rounded to the nearest byte; hexadecimal after
 * "0x").  Fails on garbage and overflow.  Stores the value in *out and returns 0, or
 * returns -EINVAL (not a size) or -ERANGE (too large) with err quoting the
 * text; *out is then unchanged.  Does not block. */
int qed_parse_size(const char *text, uint64_t *out, qed_error *err);

/* ---- image operations ---- */

/* Whole-image operations (lib/ops/).  Each blocks until done, running the
 * loop of the images involved, and keeps many requests in flight on it:
 * every image an operation uses must be on the same loop and idle (no
 * request in flight) when it starts. */

/* Progress of a long operation: done of total bytes of the virtual disk
 * handled.  Called on the loop's thread. */
typedef void qed_progress_callback(void *opaque, uint64_t done,
                                   uint64_t total);

/* How an operation runs.  NULL or zeroed members mean the defaults. */
struct qed_op_options {
    size_t size;              /* sizeof(struct qed_op_options) */
    unsigned requests;        /* requests in flight at once: 0 = 8, at
                                 most 256 */
    uint32_t request_size;    /* bytes per request: 0 = 2 MiB; a multiple
                                 of 4096, at most 64 MiB */
    qed_progress_callback *progress; /* NULL: none */
    void *progress_opaque;
};

static inline void qed_op_options_init(struct qed_op_options *o)
{
    memset(o, 0, sizeof(*o));
    o->size = sizeof(*o);
}

struct qed_convert_options {
    size_t size;              /* sizeof(struct qed_convert_options) */
    enum qed_format format;   /* output: RAW (PROBE means RAW) or QED */
    /* QED output (NULL: the defaults): cluster_size, table_size,
     * backing_file, backing_format.  virtual_size and size_from_backing
     * are ignored: the output has the source's size (rounded up to 512).
     * With a backing file, the output holds only what differs from it, and
     * reads exactly like the source.  A pointer, so that either struct can
     * grow. */
    const struct qed_create_options *create;
    enum qed_cache cache;     /* how the output is opened */
    bool unsafe;              /* no flushes at all on the output, like
                                 qemu-img convert's default cache=unsafe:
                                 faster, but not durable until the system
                                 writes it back */
    const struct qed_op_options *op; /* NULL: the defaults */
    /* Write into the existing image at dst_path (opened as format, which
     * is not probed) instead of creating one: create is ignored, the
     * image must be at least as large as src, and ranges that read as
     * zeros in src are made to read as zeros in it (qemu-img convert -n). */
    bool existing;
    /* Sparseness (qemu-img convert -S): runs of zero bytes at least
     * min_sparse long (a multiple of 512; 0 = 4096) inside what is copied
     * are left unwritten; shorter ones are written as data.  write_all
     * (-S 0) writes every byte of the source, zeros included, so the
     * output is fully allocated. */
    uint32_t min_sparse;
    bool write_all;
    /* Without it, a QED output's writes are submitted in order of offset
     * (reads still run ahead, and the writes run in parallel), so its
     * clusters are allocated in guest order; with it (-W), and always for
     * a raw output (whose layout writes cannot change), writes go out as
     * soon as their data is read. */
    bool out_of_order;
    uint64_t rate_limit;      /* bytes of data per second; 0: no limit */
    /* Go on past ranges of the source that cannot be read: block status
     * and reads are retried on smaller ranges, down to 512 bytes, and
     * what still fails is written as zeros; each such range is passed to
     * warning (when set) as a message "error while reading offset N:
     * ...".  The convert then succeeds.  Only for outputs without a
     * backing file (EINVAL otherwise, before anything is written). */
    bool salvage;
    void (*warning)(void *opaque, const char *message);
    void *warning_opaque;
};

static inline void qed_convert_options_init(struct qed_convert_options *o)
{
    memset(o, 0, sizeof(*o));
    o->size = sizeof(*o);
}

/* Copies what src reads into a new image at dst_path (created, or
 * truncated; an existing block device is written in place and must be
 * large enough).  The output stays sparse: ranges the source reports as
 * unallocated or zero, and blocks it reads as all zeros, are not written
 * (zeros are written only where the output would not read as zeros
 * otherwise: block devices, backing files).  The output is opened on src's
 * loop; dst_path must not be a file of src's backing chain.  On failure the
 * output is left as far as it got. */
int qed_convert(qed_image *src, const char *dst_path,
                const struct qed_convert_options *options, qed_error *err);

struct qed_compare_result {
    size_t size;              /* sizeof(struct qed_compare_result), set by
                                 the caller */
    bool identical;           /* same content (the larger image's extra
                                 part reads as zeros) */
    uint64_t mismatch_offset; /* first differing byte when not identical */
    uint64_t size_a, size_b;  /* virtual sizes */
};

static inline void qed_compare_result_init(struct qed_compare_result *r)
{
    memset(r, 0, sizeof(*r));
    r->size = sizeof(*r);
}

/* Compares what two images read (a and b on the same loop).  Ranges both
 * report as zeros are not read.  Returns 0 when the comparison ran to the
 * end, identical or not (see *result), or a negative errno. */
int qed_compare(qed_image *a, qed_image *b, const struct qed_op_options *o,
                struct qed_compare_result *result, qed_error *err);

/* Compares a and b as `qemu-img compare -s` does: images of different sizes
 * differ (result->identical false, the sizes say why), and so do images
 * whose block status differs (allocated or not, zeros, data, host offset
 * known, as QEMU reports them) anywhere before their content does.  When
 * the first difference is one of status, *status_mismatch is set and
 * result->mismatch_offset is where it starts; otherwise result is as
 * qed_compare fills it.  Returns 0 or a negative errno. */
int qed_compare_strict(qed_image *a, qed_image *b,
                       const struct qed_op_options *o,
                       struct qed_compare_result *result,
                       bool *status_mismatch, qed_error *err);

struct qed_commit_options {
    size_t size;              /* sizeof(struct qed_commit_options) */
    enum qed_format format;   /* of the image at path: PROBE by default */
    enum qed_engine engine;
    enum qed_cache cache;
    const struct qed_op_options *op; /* NULL: the defaults */
    /* NULL: commit into the backing file.  Else a file of the backing
     * chain (below the image) to commit into, as `qemu-img commit -b`
     * names it: relative to the directory of the image above it. */
    const char *base;
    enum qed_lock_mode locking; /* of the image and its backing chain */
};

static inline void qed_commit_options_init(struct qed_commit_options *o)
{
    memset(o, 0, sizeof(*o));
    o->size = sizeof(*o);
}

/* Writes what the QED image at path holds itself (data and zero clusters)
 * into its backing file (QED or raw), which grows first when it is smaller
 * than the image; with o->base, what every layer above that base holds
 * goes into the base (EINVAL "Did not find 'BASE' in the backing chain of
 * 'PATH'" when it is not in the chain), so that the base reads like the
 * image.  Everything written is flushed before the call returns; the image
 * and the layers in between are not changed (the image reads as before;
 * the layers in between, over the new base, may not).  The image and the
 * layers above the base are opened (and locked) read-only, the base
 * read-write: -EAGAIN when another open of any of them conflicts. */
int qed_commit(const char *path, const struct qed_commit_options *o,
               qed_error *err);

/* Points img (QED, opened read-write and idle) at another backing file
 * (name as stored: relative names are relative to img's directory; NULL or
 * "" for none) and reopens the chain: the new backing file is opened first
 * (read-only, with format: PROBE probes, locked as img was opened: -EAGAIN
 * when a writer holds it; a chain leading back to img is ELOOP), then the
 * header block is
 * rewritten and flushed (backing name, QED_F_BACKING_FILE, and
 * QED_F_BACKING_FORMAT_NO_PROBE when the backing file is raw), then the old
 * chain is closed.  Only the header changes: what img reads may change
 * (see qed_rebase).  A name that does not fit in the header, a file that
 * cannot be opened or a chain that would loop fail before anything is
 * written. */
int qed_set_backing(qed_image *img, const char *name, enum qed_format format,
                    qed_error *err);

/* Like qed_set_backing on the QED image file at path, without opening any
 * backing file, old or new (qemu-img rebase -u): NO_PROBE is set only for
 * format RAW; with PROBE the format is probed at every open. */
int qed_set_backing_at(const char *path, const char *name,
                       enum qed_format format, qed_error *err);

#define QED_REBASE_UNSAFE 0x1u /* only rewrite the header (qed_set_backing) */

/* Changes img's backing file (as qed_set_backing) so that img reads the
 * same afterwards: first, for every range img does not allocate itself,
 * whatever the new backing file (NULL or "": none) reads differently from
 * the old chain is copied into img (as data, or zero clusters); then it is
 * flushed; then the header changes.  A crash before the header changes
 * leaves img reading as before over its old backing file. */
int qed_rebase(qed_image *img, const char *backing, enum qed_format format,
               unsigned flags, const struct qed_op_options *o,
               qed_error *err);

struct qed_compact_result {
    size_t size;                    /* sizeof(struct qed_compact_result),
                                       set by the caller */
    uint64_t zero_clusters_dropped; /* all-zero data clusters released */
    uint64_t leaks_reclaimed;       /* clusters moved or truncated away */
    uint64_t size_before, size_after; /* file size in bytes */
};

static inline void qed_compact_result_init(struct qed_compact_result *r)
{
    memset(r, 0, sizeof(*r));
    r->size = sizeof(*r);
}

/* Rewrites an idle QED image opened read-write in place without holes or
 * leaks: data clusters that read as all zeros become unallocated (zero
 * clusters where a backing file would show through), then every cluster
 * nothing references is reclaimed by moving the last clusters of the file
 * into the gaps (copy, flush, update the entry, flush) and truncating.
 * What readers see never changes, a crash at any point leaves a consistent
 * image, and a second run finds nothing to do.  Blocks; returns 0 or -errno
 * with err filled. */
int qed_compact(qed_image *img, struct qed_compact_result *result,
                qed_error *err);

#define QED_RESIZE_SHRINK 0x1u /* allow a smaller size */
/* Preallocate what growing adds (an enum qed_preallocation): for QED, the
 * L2 tables covering it and (falloc, full) a data cluster for every whole
 * cluster past the old size, in guest order after the file's end; for raw,
 * falloc and full reserve or write the new bytes (metadata is refused). */
#define QED_RESIZE_PREALLOC(mode) (((unsigned)(mode) & 0x3u) << 4)
#define QED_RESIZE_PREALLOC_MASK 0x30u

/* Changes the virtual size of an idle image opened read-write.  Raw: the
 * file is truncated or extended to size.  QED: size must be a multiple of
 * 512 and at most what the tables address (the error names the maximum);
 * growing makes the new range read as zeros (even over a longer backing
 * file); shrinking (only with QED_RESIZE_SHRINK) zeroes the rest of the
 * last cluster, frees every cluster past the new end and moves the
 * clusters at the end of the file into the holes left, then truncates the
 * file, so nothing leaks.  The header's image_size is written last when
 * growing and first when shrinking (with NEED_CHECK set until the tables
 * are settled), so a crash leaves at worst leaked clusters.  Preallocation
 * (only when growing) comes after the new size is written: data clusters
 * and new tables first, flushed, then the entries that link them, so a
 * crash leaves the grown image, partly preallocated, with at worst leaked
 * clusters. */
int qed_resize(qed_image *img, uint64_t size, unsigned flags, qed_error *err);

#ifdef __cplusplus
}
#endif

#endif /* QED_H */
