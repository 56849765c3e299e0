/* SPDX-License-Identifier: MIT */
/* An open image as the front sees it, whatever its format: its storage, its
 * place in a backing chain, and its format driver (driver.h) with the
 * driver's own state. */
#ifndef QED_LIB_IMAGE_H
#define QED_LIB_IMAGE_H

#include "driver.h"
#include "format.h"
#include "io.h"
#include "iov.h"
#include "loop.h"
#include "util.h"

struct qed_image {
    qed_loop *loop;
    bool owns_loop;
    struct io_file *file;
    char *filename;
    const struct format_driver *driver;
    void *driver_state;       /* the driver's, from open to free */
    enum qed_format format;
    bool writable;
    bool probed;              /* the format was probed, not given */
    enum qed_cache cache;
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

/* Adds a line to the image's warnings (qed_warnings). */
void image_warn(qed_image *img, const char *fmt, ...) QED_PRINTF(2, 3);

/* Fails with EDEADLK (naming what) when called from a callback of the
 * image's loop: a synchronous call there would wait for itself. */
int image_refuse_nested(const qed_image *img, const char *what,
                        qed_error *err);

/* Reads len bytes at offset of the storage synchronously; the error names
 * what was read. */
int image_read_exact(struct io_file *file, void *buf, size_t len,
                     uint64_t offset, qed_error *err, const char *what);

/* qed_open with the chain's files opened through a storage driver (NULL:
 * local files); tests and fuzzers use memory, crash-simulating or
 * fault-injecting files. */
int image_open(const char *path, const struct qed_open_options *options,
               const struct storage_driver *driver, qed_image **out,
               qed_error *err);
/* image-fill.c: for a driver's resize of an idle image */
/* Reserves [offset, offset + len) of the file (falloc), or writes zeros
 * there (full, after reserving when the file system can). */
int image_preallocate(qed_image *img, uint64_t offset, uint64_t len,
                      enum qed_preallocation mode, qed_error *err);
/* Flushes the file; the error says so. */
int image_flush(qed_image *img, qed_error *err);

/* Rejects a locking mode that is none of AUTO, ON and OFF, and
 * force-share on a read-write open; the error names the field. */
int image_validate_locking(const struct qed_open_options *o, qed_error *err);
/* Takes the locks QEMU takes to create an image on fd (opened for reading
 * and writing), before anything truncates or writes it: -EAGAIN when
 * another open refuses it.  They go when fd is closed. */
int image_lock_for_create(int fd, const char *path, enum qed_lock_mode mode,
                          qed_error *err);
/* The path a backing file name stored in image_path's header refers to:
 * relative names are relative to the image's directory.  malloc'd; NULL
 * when out of memory. */
char *image_resolve_backing(const char *image_path, const char *name);
/* True when the backing file name would make of image_path (an existing
 * file) its own backing file: the name resolves (as image_resolve_backing)
 * to the same file, whatever hard link, symbolic link or relative spelling
 * leads there. */
bool image_backing_is_self(const char *image_path, const char *name);

#endif
