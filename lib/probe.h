/* SPDX-License-Identifier: MIT */
/* Format probing: what the first sector of a file says it is. */
#ifndef QED_LIB_PROBE_H
#define QED_LIB_PROBE_H

#include "util.h"

/* Probing looks at the first sector only, as QEMU's does. */
#define PROBE_SECTOR_SIZE 512u

/* True when the sector starts with the QED magic. */
bool probe_is_qed(const uint8_t *sector);

/* The name of another image format whose signature the sector carries (one
 * QEMU would detect when probing: "qcow2", "vmdk", ...), or NULL when
 * QEMU's probing would find nothing but raw or QED. */
const char *probe_foreign_format(const uint8_t *sector);

#endif
