/* SPDX-License-Identifier: MIT */
/* Shared by the tests that run images on the simulated file system of
 * io-sim.c (test-crash: power loss, test-faults: injected I/O errors):
 * self-describing sector contents, so that every 512-byte sector read names
 * the write it came from, and template images that each run copies into a
 * fresh memfs.  Nothing here prints TAP. */
#ifndef QED_TESTS_SUPPORT_SIM_H
#define QED_TESTS_SUPPORT_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io-sim.h"
#include "qed.h"

/* The unit the contents are described in. */
#define SECT 512u
/* Content ids: zeros, the backing file's data, and what no write left
 * (torn or foreign bytes).  Writes number their contents from 2. */
#define ID_ZERO 0u
#define ID_BASE 1u
#define ID_GARBAGE UINT32_MAX

/* The content write id leaves in sector s (ID_ZERO: zeros): the id and s,
 * then bytes derived from both. */
void support_fill_sector(uint8_t *buf, uint32_t id, uint64_t s);
/* count sectors from sector first, all with write id's content. */
void support_fill_sectors(uint8_t *buf, uint32_t id, uint64_t first,
                          uint64_t count);
/* Which write the content of sector s came from: its id (below max_id),
 * ID_ZERO, or ID_GARBAGE. */
uint32_t support_identify(const uint8_t *buf, uint64_t s, uint32_t max_id);
/* A raw file of count sectors, sector s holding content ids[s]. */
int support_write_sectors(const char *path, const uint32_t *ids,
                          uint64_t count);

/* One image as every run starts from it: the bytes of the QED image (named
 * "top.qed" in the memfs) and of its backing file (base NULL: none), and the
 * content id of each sector of the virtual disk. */
struct support_template {
    uint8_t *top, *base;
    size_t top_len, base_len;
    uint32_t *base_ids;
};

/* Reads the files top and base (NULL: no backing file) into t. */
int support_template_read(struct support_template *t, const char *top,
                          const char *base);
/* Frees the n templates t[0..n). */
void support_templates_free(struct support_template *t, unsigned n);
/* A fresh memfs holding the template's files, the backing file under
 * base_name, with or without fallocate and room for the images to grow
 * (64 MiB a file).  Aborts when out of memory: a run cannot go on. */
struct memfs *support_template_load(const struct support_template *t,
                                    const char *base_name, bool fallocate);
/* Opens "top.qed" of fs read-write on loop (l2_cache_bytes 0: default). */
int support_template_open(struct memfs *fs, qed_loop *loop,
                          enum qed_cache cache, size_t l2_cache_bytes,
                          qed_image **out, qed_error *err);
/* The same with other QED_OPEN_* flags (copy-on-read, say). */
int support_template_open_flags(struct memfs *fs, qed_loop *loop,
                                enum qed_cache cache, size_t l2_cache_bytes,
                                unsigned flags, qed_image **out,
                                qed_error *err);

#endif
