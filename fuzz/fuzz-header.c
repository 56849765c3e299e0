/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the header decoder and validator, and the backing name
 * extraction, on arbitrary bytes presented as the start of a file. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "header.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t block[QED_HEADER_BYTES] = { 0 };
    struct qed_header h;
    qed_error err;
    char name[QED_MAX_BACKING_NAME + 1];
    uint64_t file_size;

    if (size < 8)
        return 0;
    /* The first 8 bytes pick the file size the header is checked against;
     * the rest is the file's start. */
    memcpy(&file_size, data, 8);
    data += 8;
    size -= 8;
    memcpy(block, data, size < sizeof(block) ? size : sizeof(block));
    qedi_header_decode(block, &h);
    if (qedi_header_validate(&h, file_size, &err) == 0) {
        qedi_header_backing_name(&h, data, size, name, sizeof(name), &err);
        (void)qedi_header_max_image_size(h.cluster_size, h.table_size);
        uint8_t again[QED_HEADER_BYTES];
        qedi_header_encode(&h, again);
        if (memcmp(again, block, sizeof(again)) != 0)
            __builtin_trap(); /* decode and encode must round-trip */
    }
    return 0;
}
