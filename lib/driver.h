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
 *   compact   gives back the space of zeroed clusters and leaks. */
#ifndef QED_LIB_DRIVER_H
#define QED_LIB_DRIVER_H

#include <sys/uio.h>

#include "loop.h"
#include "util.h"

enum request_kind {
    REQ_READ,
    REQ_WRITE,
    REQ_ZEROES,
    REQ_DISCARD,
    REQ_FLUSH,
    REQ_STATUS,
};

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
    const uint8_t *first_block; /* QED_HEADER_BLOCK_SIZE bytes, or NULL */
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
};

extern const struct format_driver qed_format_driver;
extern const struct format_driver raw_format_driver;

/* Ends the request: the driver's finish runs now, the caller's callback
 * later from the loop, never from inside the call that submitted it. */
void request_complete(struct request *req, int ret);

#endif
