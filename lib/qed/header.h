/* SPDX-License-Identifier: MIT */
/* The QED header: decode, encode and validate.  Pure functions, no I/O. */
#ifndef QED_LIB_HEADER_H
#define QED_LIB_HEADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qed.h"
#include "base.h"

/* Bytes the fixed header fields take on disk (backing name fields included). */
#define QED_HEADER_BYTES 64u

struct qed_header {
    uint32_t magic;
    uint32_t cluster_size;
    uint32_t table_size;   /* clusters per table */
    uint32_t header_size;  /* clusters */
    uint64_t features;
    uint64_t compat_features;
    uint64_t autoclear_features;
    uint64_t l1_table_offset;
    uint64_t image_size;
    uint32_t backing_filename_offset;
    uint32_t backing_filename_size;
};

void qedi_header_decode(const uint8_t buf[QED_HEADER_BYTES], struct qed_header *h);
void qedi_header_encode(const struct qed_header *h, uint8_t buf[QED_HEADER_BYTES]);

bool qedi_header_cluster_size_valid(uint64_t cluster_size);
bool qedi_header_table_size_valid(uint64_t table_size);
/* Largest image size the tables can address: entries^2 * cluster_size, with
 * entries = table_size * cluster_size / 8; saturates at UINT64_MAX.  Only for
 * valid cluster and table sizes. */
uint64_t qedi_header_max_image_size(uint32_t cluster_size, uint32_t table_size);

/* Checks every rule of the specification against a file of file_size bytes.
 * Order: magic, features (ENOTSUP, "Unsupported QED features: 0x<unknown
 * bits>"), cluster size, table size, header size, image size, L1 offset,
 * backing name placement.  Returns 0 or -errno with err naming the field. */
int qedi_header_validate(const struct qed_header *h, uint64_t file_size,
                    qed_error *err);

/* Copies the backing file name (not NUL-terminated on disk) out of the header
 * clusters held in buf (buf_len bytes from the start of the file) into out as
 * a NUL-terminated string.  The header must have passed qedi_header_validate. */
int qedi_header_backing_name(const struct qed_header *h, const uint8_t *buf,
                        size_t buf_len, char *out, size_t out_size,
                        qed_error *err);

/* Fills a header for a new image as qemu-img lays it out: one header
 * cluster, the L1 table right after it, the backing name (if any) right
 * after the fixed fields.  Validates the options (cluster size, table size,
 * image size, name length fits in the header cluster). */
int qedi_header_init_new(struct qed_header *h, uint64_t image_size,
                     uint32_t cluster_size, uint32_t table_size,
                     size_t backing_name_len, bool backing_no_probe,
                     qed_error *err);

#endif
