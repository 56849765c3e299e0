/* Consistency check of a QED image, and the repair run when a dirty image is
 * opened read-write. */
#ifndef QED_LIB_CHECK_H
#define QED_LIB_CHECK_H

#include "image.h"

struct check_result {
    uint64_t corruptions;
    uint64_t corruptions_fixed;
    uint64_t leaks;
    uint64_t total_clusters;      /* clusters of the virtual disk */
    uint64_t allocated_clusters;  /* data clusters referenced */
    uint64_t fragmented_clusters; /* data clusters not following the last */
    uint64_t image_end_offset;
};

/* Scans every table.  With repair, entries that point outside the file, at
 * metadata, or at a cluster already referenced are cleared and written back.
 * Memory: one bit per cluster of the file, plus one L2 table at a time. */
int check_image(qed_image *img, bool repair, struct check_result *result,
                qed_error *err);

/* For a read-write open: a dirty image is checked and repaired before any
 * I/O, then marked clean. */
int check_on_open(qed_image *img, qed_error *err);

#endif
