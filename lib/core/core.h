/* SPDX-License-Identifier: MIT */
/* The front's face for the layers above it (the image operations, tests):
 * opening through a storage driver of the caller's choosing, and the guard
 * of the synchronous calls. */
#ifndef QED_LIB_CORE_H
#define QED_LIB_CORE_H

#include "driver.h"

/* qed_open with the chain's files opened through a storage driver (NULL:
 * local files); tests and fuzzers use memory, crash-simulating or
 * fault-injecting files. */
int qedi_image_open(const char *path, const struct qed_open_options *options,
               const struct storage_driver *driver, qed_image **out,
               qed_error *err);

/* Fails with EDEADLK (naming what) when called from a callback of the
 * image's loop: a synchronous call there would wait for itself. */
int qedi_image_refuse_nested(const qed_image *img, const char *what,
                        qed_error *err);

/* The calls the front lends every image it opens (request.c). */
extern const struct front_ops qedi_image_front;

#endif
