/* SPDX-License-Identifier: MIT */
/* Format drivers: what a format (qed, raw) implements, and the request the
 * front (image.c, request.c) hands it.
 *
 * The front owns an image's life cycle and every request's: it checks the
 * caller's arguments, allocates the request (the driver's request_size
 * bytes, a struct request first), counts it in flight, and completes it
 * (request_complete).  A driver only maps requests onto its storage
 * (img->file) and, for a chain, onto the image below (img->backing).
 *
 * Life of an image:
 *   open      reads and validates the format's metadata; sets img->size,
 *             img->driver_state and, when the image has one, the backing
 *             file's name and format (img->backing_name, backing_format);
 *   activate  once the front opened the backing chain: anything the open
 *             needs the chain for (the QED driver's check on open);
 *   start     runs a request;
 *   finish    before a request completes: releases what the driver held
 *             for it; returns true when it keeps the request a little
 *             longer (it completes it again later);
 *   quiesce   nothing is in flight: stops the driver's own activity
 *             (timers, metadata writes);
 *   close     writable images: makes everything durable and the image
 *             clean; errors name what failed;
 *   free      releases img->driver_state.
 *
 * Whole-image operations on an idle image (NULL: the format has none):
 *   resize    the format's part of qed_resize, once the front checked the
 *             flags and that the image is writable and idle;
 *   check_backing_name
 *             can the image record this backing file name?
 *   set_backing
 *             records a new backing file name ("" for none) and whether
 *             its format is raw, durably; img->backing_name follows;
 *   busy      is anything still under way with no request in flight
 *             (metadata writes of completed requests)?
 *   check     checks the metadata (repairing as asked);
 *   compact   gives back the space of zeroed clusters and leaks;
 *   create    writes a new image file. */
#ifndef QED_LIB_DRIVER_H
#define QED_LIB_DRIVER_H

#include <sys/uio.h>

#include "base.h"
#include "storage.h"

enum request_kind {
    REQ_READ,
    REQ_WRITE,
    REQ_ZEROES,
    REQ_DISCARD,
    REQ_FLUSH,
    REQ_STATUS,
};

/* Writes and write-zeroes (struct request flags): only where the image has
 * no cluster yet, for copy-on-read; clusters it has (data or zero) are left
 * as they are. */
#define REQ_FLAG_FILL 0x80000000u

/* A client request as the front sees it.  Drivers embed it first in their
 * own request structure (driver->request_size bytes in all). */
struct request {
    qed_image *img;
    enum request_kind kind;
    uint64_t offset, length; /* the whole request */
    struct iovec *iov;       /* the caller's vector (copied) */
    int iovcnt;
    unsigned flags;
    struct qed_block_status *status;
    qed_callback *cb;
    void *opaque;
    qed_error err;
    struct loop_task task;   /* the front's and the driver's deferred runs */
};

/* What the front tells a driver's open. */
struct format_open {
    const struct qed_open_options *options;
    /* The format was probed, not given: the file's first block follows. */
    bool probed;
    const uint8_t *first_block; /* PROBE_BLOCK_SIZE bytes, or NULL */
};

struct format_driver {
    const char *name;
    enum qed_format format;
    size_t request_size;
    /* Does the first block carry this format's signature? */
    bool (*probe)(const uint8_t *first_block);
    int (*open)(qed_image *img, const struct format_open *how,
                qed_error *err);
    int (*activate)(qed_image *img, const struct qed_open_options *o,
                    qed_error *err);
    void (*start)(struct request *req);
    bool (*finish)(struct request *req, int ret);
    void (*quiesce)(qed_image *img);
    int (*close)(qed_image *img, qed_error *err);
    void (*free)(qed_image *img);
    /* Fills what qed_get_info reports of the format (the front filled the
     * rest). */
    void (*get_info)(qed_image *img, struct qed_image_info *info);
    int (*resize)(qed_image *img, uint64_t size, unsigned flags,
                  qed_error *err);
    int (*check_backing_name)(qed_image *img, const char *name,
                              qed_error *err);
    int (*set_backing)(qed_image *img, const char *name, bool raw,
                       qed_error *err);
    bool (*busy)(const qed_image *img);
    int (*check)(qed_image *img, unsigned repair,
                 struct qed_check_result *result, qed_error *err);
    int (*compact)(qed_image *img, struct qed_compact_result *result,
                   qed_error *err);
    /* Lays out a new image at path (no image is open): qed_create's part
     * once ops/create.c checked the options. */
    int (*create)(const char *path, const struct qed_create_options *o,
                  qed_error *err);
};

extern const struct format_driver qedi_qed_format_driver;
extern const struct format_driver qedi_raw_format_driver;


/* ---- format probing (probe.c) -------------------------------------------- */
/* Format probing: what the first sector of a file says it is. */


/* Probing looks at the first sector only, as QEMU's does. */
#define PROBE_SECTOR_SIZE 512u
/* The front reads this much of a file to probe it (a block that direct
 * I/O can read too); drivers get it in format_open.first_block. */
#define PROBE_BLOCK_SIZE 4096u

/* True when the sector starts with the QED magic. */
bool qedi_probe_is_qed(const uint8_t *sector);

/* The name of another image format whose signature the sector carries (one
 * QEMU would detect when probing: "qcow2", "vmdk", ...), or NULL when
 * QEMU's probing would find nothing but raw or QED. */
const char *qedi_probe_foreign_format(const uint8_t *sector);

/* ---- the image --------------------------------------------------------------- */

/* The calls that go back up from a driver to the front, lent to every
 * image by the front when it opens it: a driver completes requests, reads
 * the image below it in the chain, and runs whole-image operations through
 * requests on its own image with these, never by naming the front. */
struct front_ops {
    void (*complete)(struct request *req, int ret);
    int (*aio_readv)(qed_image *img, const struct iovec *iov, int iovcnt,
                     uint64_t offset, qed_callback *cb, void *opaque);
    /* A write, and a write-zeroes, with REQ_FLAG_FILL (copy-on-read). */
    int (*aio_fill)(qed_image *img, const struct iovec *iov, int iovcnt,
                    uint64_t offset, qed_callback *cb, void *opaque);
    int (*aio_fill_zeroes)(qed_image *img, uint64_t offset, uint64_t length,
                           qed_callback *cb, void *opaque);
    int (*aio_block_status)(qed_image *img, uint64_t offset, uint64_t length,
                            struct qed_block_status *status,
                            qed_callback *cb, void *opaque);
    int (*block_status)(qed_image *img, uint64_t offset, uint64_t length,
                        struct qed_block_status *status, qed_error *err);
    int (*write_zeroes)(qed_image *img, uint64_t offset, uint64_t length,
                        unsigned flags, qed_error *err);
    int (*flush)(qed_image *img, qed_error *err);
};

/* An open image, whatever its format: its storage, its place in a backing
 * chain, and its format driver with the driver's own state. */
struct qed_image {
    qed_loop *loop;
    bool owns_loop;
    struct io_file *file;
    char *filename;
    const struct front_ops *front;
    const struct format_driver *driver;
    void *driver_state;       /* the driver's, from open to free */
    enum qed_format format;
    bool writable;
    bool copy_on_read;        /* QED_OPEN_COPY_ON_READ (the top image) */
    bool copy_on_read_warned; /* a failed copy-on-read was reported */
    bool probed;              /* the format was probed, not given */
    enum qed_cache cache;
    /* The settings it was opened with for storage behind URLs (strings
     * owned here; read_cache_bytes as qed_open_options has it), for the
     * files operations add to its chain. */
    struct storage_settings remote;
    enum qed_lock_mode locking; /* as opened; files added to the chain
                                   later are locked the same way */
    uint64_t size;            /* virtual size */
    /* The unit the format allocates in (the QED cluster size); 0 for a
     * format that maps every byte to its place in the file (raw). */
    uint32_t cluster_size;
    /* The backing file, as the driver's open found it named: */
    char *backing_name;       /* malloc'd, or NULL for none */
    bool backing_raw;         /* its format is recorded as raw (no probing) */
    char *backing_path;       /* the name resolved against the image's path */
    qed_image *backing;
    bool backing_unavailable; /* opened with QED_OPEN_NO_BACKING */
    unsigned in_flight;       /* requests not yet completed */
    char *warnings;           /* lines for qed_warnings(), or NULL */
};

/* Ends the request: the driver's finish runs now, the caller's callback
 * later from the loop, never from inside the call that submitted it. */
static inline void request_complete(struct request *req, int ret)
{
    req->img->front->complete(req, ret);
}

/* image-util.c */
/* Adds a line to the image's warnings (qed_warnings). */
void qedi_image_warn(qed_image *img, const char *fmt, ...) QED_PRINTF(2, 3);
/* Reads len bytes at offset of the storage synchronously; the error names
 * what was read. */
int qedi_image_read_exact(struct io_file *file, void *buf, size_t len,
                     uint64_t offset, qed_error *err, const char *what);
/* The storage open flags (IO_OPEN_LOCK_*, IO_OPEN_SHARE_ALL) for the
 * locking the options ask for. */
unsigned qedi_image_lock_flags(const struct qed_open_options *o);
/* Rejects a locking mode that is none of AUTO, ON and OFF, and
 * force-share on a read-write open; the error names the field. */
int qedi_image_validate_locking(const struct qed_open_options *o, qed_error *err);
/* Takes the locks QEMU takes to create an image on fd (opened for reading
 * and writing), before anything truncates or writes it: -EAGAIN when
 * another open refuses it.  They go when fd is closed. */
int qedi_image_lock_for_create(int fd, const char *path, enum qed_lock_mode mode,
                          qed_error *err);
/* The path a backing file name stored in image_path's header refers to:
 * relative names are relative to the image's directory.  malloc'd; NULL
 * when out of memory. */
char *qedi_image_resolve_backing(const char *image_path, const char *name);
/* Copies the remote settings of image into o (tls_*, s3_*): the strings
 * stay the image's. */
void qedi_image_remote_options(const qed_image *image,
                               struct qed_open_options *o);
/* True when the backing file name would make of image_path (an existing
 * file) its own backing file: the name resolves (as qedi_image_resolve_backing)
 * to the same file, whatever hard link, symbolic link or relative spelling
 * leads there. */
bool qedi_image_backing_is_self(const char *image_path, const char *name);

/* image-fill.c: for a driver's resize of an idle image */
/* Reserves [offset, offset + len) of the file (falloc), or writes zeros
 * there (full, after reserving when the file system can). */
int qedi_image_preallocate(qed_image *img, uint64_t offset, uint64_t len,
                      enum qed_preallocation mode, qed_error *err);
/* Flushes the file; the error says so. */
int qedi_image_flush(qed_image *img, qed_error *err);

#endif
