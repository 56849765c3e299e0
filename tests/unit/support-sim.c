/* SPDX-License-Identifier: MIT */
/* Sector contents and template images of the simulated-disk tests; see
 * support-sim.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "qed-image.h"
#include "support-image.h"
#include "support-sim.h"

void support_fill_sector(uint8_t *buf, uint32_t id, uint64_t s)
{
    uint64_t w[SECT / 8];

    if (id == ID_ZERO) {
        memset(buf, 0, SECT);
        return;
    }
    w[0] = id;
    w[1] = s;
    for (unsigned i = 2; i < SECT / 8; i++)
        w[i] = support_mix64(((uint64_t)id << 40) ^ (s << 8) ^ i);
    memcpy(buf, w, SECT);
}

void support_fill_sectors(uint8_t *buf, uint32_t id, uint64_t first,
                          uint64_t count)
{
    for (uint64_t i = 0; i < count; i++)
        support_fill_sector(buf + i * SECT, id, first + i);
}

uint32_t support_identify(const uint8_t *buf, uint64_t s, uint32_t max_id)
{
    uint8_t want[SECT];
    uint64_t id;

    if (support_first_nonzero(buf, SECT) == SECT)
        return ID_ZERO;
    memcpy(&id, buf, 8);
    /* The id stored in the sector is only a claim: the whole content must
     * be the one that write leaves there. */
    if (id == 0 || id >= max_id)
        return ID_GARBAGE;
    support_fill_sector(want, (uint32_t)id, s);
    return memcmp(want, buf, SECT) == 0 ? (uint32_t)id : ID_GARBAGE;
}

int support_write_sectors(const char *path, const uint32_t *ids,
                          uint64_t count)
{
    uint8_t *buf = malloc(count ? count * SECT : 1);
    int ret;

    if (!buf)
        return -ENOMEM;
    for (uint64_t s = 0; s < count; s++)
        support_fill_sector(buf + s * SECT, ids[s], s);
    ret = support_write_file(path, buf, count * SECT);
    free(buf);
    return ret;
}

int support_template_read(struct support_template *t, const char *top,
                          const char *base)
{
    int ret = support_read_file(top, &t->top, &t->top_len);

    if (ret == 0 && base)
        ret = support_read_file(base, &t->base, &t->base_len);
    return ret;
}

void support_templates_free(struct support_template *t, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        free(t[i].top);
        free(t[i].base);
        free(t[i].base_ids);
        memset(&t[i], 0, sizeof(t[i]));
    }
}

struct memfs *support_template_load(const struct support_template *t,
                                    const char *base_name, bool fallocate)
{
    struct memfs *fs = memfs_new();

    if (!fs)
        abort();
    memfs_set_fallocate(fs, fallocate);
    memfs_set_max_file_size(fs, 64 * MiB);
    if (memfs_add(fs, "top.qed", t->top, t->top_len) < 0 ||
        (t->base && memfs_add(fs, base_name, t->base, t->base_len) < 0))
        abort();
    return fs;
}

int support_template_open(struct memfs *fs, qed_loop *loop,
                          enum qed_cache cache, size_t l2_cache_bytes,
                          qed_image **out, qed_error *err)
{
    return support_template_open_flags(fs, loop, cache, l2_cache_bytes,
                                       QED_OPEN_RDWR, out, err);
}

int support_template_open_flags(struct memfs *fs, qed_loop *loop,
                                enum qed_cache cache, size_t l2_cache_bytes,
                                unsigned flags, qed_image **out,
                                qed_error *err)
{
    struct qed_open_options o = {
        .size = sizeof(struct qed_open_options),
        .flags = flags,
        .cache = cache,
        .loop = loop,
        .l2_cache_bytes = l2_cache_bytes,
    };
    struct storage_driver opener = memfs_opener(fs);

    return qedi_image_open("top.qed", &o, &opener, out, err);
}
