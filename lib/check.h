/* SPDX-License-Identifier: MIT */
/* Consistency check and repair of a QED image (qed_check, declared in
 * qed.h), and the repair run when a dirty image is opened read-write. */
#ifndef QED_LIB_CHECK_H
#define QED_LIB_CHECK_H

#include "qed-image.h"

/* For a read-write open: a dirty image is checked and repaired (corruptions
 * and leaks) before any I/O, the file ends at its last cluster in use, and
 * once that is durable NEED_CHECK is cleared. */
int check_on_open(qed_image *img, qed_error *err);

#endif
