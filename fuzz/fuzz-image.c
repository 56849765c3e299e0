/* SPDX-License-Identifier: MIT */
/* libFuzzer target: open, check, read and map an image held in memory.
 * The input is the image file; if it contains the marker "\0BACKING\0",
 * what follows the marker is a second file named "base" (the seeds' images
 * name it as their backing file), so backing chains are fuzzed too.
 * Then the image is opened read-write (running the repair of a dirty image),
 * repaired, written and closed. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io-sim.h"
#include "qed.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char marker[] = "\0BACKING\0";

static void read_around(qed_image *img)
{
    static uint8_t buf[1 << 16];
    uint64_t size = qed_size(img);
    uint64_t offsets[] = { 0, size / 2, size > sizeof(buf) ? size - sizeof(buf) : 0 };
    qed_error err;

    for (unsigned i = 0; i < sizeof(offsets) / sizeof(offsets[0]); i++) {
        uint64_t len = size - offsets[i] < sizeof(buf) ? size - offsets[i] : sizeof(buf);
        if (len)
            qed_pread(img, buf, len, offsets[i], &err);
    }
}

static void map_some(qed_image *img)
{
    struct qed_block_status st = { .size = sizeof(st) };
    uint64_t pos = 0, size = qed_size(img);
    qed_error err;

    /* Bounded: a hostile image may have millions of extents. */
    for (int i = 0; i < 256 && pos < size; i++) {
        if (qed_block_status(img, pos, size - pos, &st, &err) < 0 ||
            st.length == 0)
            break;
        pos += st.length;
    }
}

static void exercise(struct memfs *fs, unsigned flags)
{
    struct storage_driver opener = memfs_opener(fs);
    struct qed_open_options o = { .size = sizeof(o), .flags = flags };
    struct qed_check_result r = { .size = sizeof(r) };
    qed_image *img;
    qed_error err;

    if (qedi_image_open("image", &o, &opener, &img, &err) < 0)
        return;
    if (qed_format_of(img) == QED_FORMAT_QED)
        qed_check(img, (flags & QED_OPEN_RDWR) ? QED_CHECK_REPAIR_ALL : 0, &r,
                  &err);
    read_around(img);
    map_some(img);
    if (flags & QED_OPEN_RDWR) {
        static const uint8_t pattern[4096] = { 0x5a };
        if (qed_size(img) >= sizeof(pattern))
            qed_pwrite(img, pattern, sizeof(pattern), 0, &err);
        if (qed_size(img) >= 3 * 65536)
            qed_write_zeroes(img, 65536, 2 * 65536, QED_ZERO_MAY_UNMAP, &err);
    }
    qed_close(img, &err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct memfs *fs = memfs_new();
    const uint8_t *split = NULL;

    if (!fs)
        return 0;
    memfs_set_max_file_size(fs, 64u << 20);
    for (size_t i = 0; i + sizeof(marker) - 1 <= size; i++) {
        if (memcmp(data + i, marker, sizeof(marker) - 1) == 0) {
            split = data + i;
            break;
        }
    }
    if (split) {
        size_t top = (size_t)(split - data);
        const uint8_t *base = split + sizeof(marker) - 1;
        memfs_add(fs, "image", data, top);
        memfs_add(fs, "base", base, size - top - (sizeof(marker) - 1));
    } else {
        memfs_add(fs, "image", data, size);
    }
    exercise(fs, 0);
    exercise(fs, QED_OPEN_RDWR);
    memfs_free(fs);
    return 0;
}
