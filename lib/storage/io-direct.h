/* SPDX-License-Identifier: MIT */
/* The aligning layer (io-direct.c): stacked by qedi_storage_open over a storage
 * that wants aligned requests (a file opened with O_DIRECT), so that the
 * engine may issue any request. */
#ifndef QED_LIB_IO_DIRECT_H
#define QED_LIB_IO_DIRECT_H

#include "storage.h"

/* Puts the layer over lower, which it owns from now on (closing the layer
 * closes lower).  On failure lower is left as it was. */
int qedi_io_direct_stack(struct io_file *lower, struct io_file **out,
                    qed_error *err);

#endif
