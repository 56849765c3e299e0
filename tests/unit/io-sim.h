/* SPDX-License-Identifier: MIT */
/* Simulated files for tests: an in-memory "file system" of named files that
 * images open through qedi_image_open() as a storage driver (storage.h), with
 * power-loss simulation and fault injection.
 *
 * Every operation completes asynchronously from the loop (a task of the loop),
 * never inside submit.  Content is kept in 4 KiB pages allocated on first
 * write, so sparse files (extended ahead by fallocate) cost nothing.
 *
 * Crash model (memfs_set_volatile(fs, true)): writes, fallocates and
 * truncates are seen by readers at once but become durable only when a SYNC
 * of the same file completes, and then only those that completed before the
 * SYNC was submitted (like fsync).  memfs_crash() is a power loss: for every
 * file, a random subset of its not yet durable operations (completed ones and
 * those still in flight), in a random order, reaches the durable content;
 * some writes are torn at 512-byte granularity.  Afterwards every operation
 * on files opened before the crash fails with EIO and changes nothing, and
 * opens fail until memfs_revive() starts the next "boot", where files read
 * as their durable content.
 *
 * Not thread-safe: a memfs belongs to the thread that runs the loops of the
 * images using it. */
#ifndef QED_TESTS_IO_SIM_H
#define QED_TESTS_IO_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core.h"
#include "qed-image.h"

struct memfs;

struct memfs *memfs_new(void);
/* Frees the file system.  Files still open stay usable until closed. */
void memfs_free(struct memfs *fs);

/* Adds (or replaces) a file with durable content.  Returns 0 or -errno. */
int memfs_add(struct memfs *fs, const char *name, const void *data,
              size_t len);
/* Copies a file from disk into the file system under name. */
int memfs_load(struct memfs *fs, const char *name, const char *disk_path);
/* The current content of a file, as a reader sees it, in a malloc'd buffer
 * (free it); -ENOENT when there is no such file. */
int memfs_get(struct memfs *fs, const char *name, uint8_t **data,
              size_t *len);
/* Reads len bytes at off of a file's current content (zeros past its end);
 * -ENOENT when there is no such file. */
int memfs_pread(struct memfs *fs, const char *name, void *buf, size_t len,
                uint64_t off);
bool memfs_exists(struct memfs *fs, const char *name);

/* The storage driver for qedi_image_open() and qedi_storage_open(): files are looked
 * up by the exact path given. */
struct storage_driver memfs_opener(struct memfs *fs);

/* Writes, fallocates and truncates that would make a file longer than this
 * fail with ENOSPC (default 256 MiB). */
void memfs_set_max_file_size(struct memfs *fs, uint64_t bytes);
/* Whether fallocate is supported at all (default yes); without it every
 * fallocate fails with EOPNOTSUPP, as on file systems that lack it. */
void memfs_set_fallocate(struct memfs *fs, bool supported);
/* Alignment O_DIRECT opens (QED_CACHE_NONE) demand (default 512): requests
 * not aligned to it fail with EINVAL, as the kernel's do. */
void memfs_set_direct_align(struct memfs *fs, unsigned align);
/* Completions are delayed by a random number (0..max_rounds) of loop
 * rounds, so operations in flight together complete in a random order. */
void memfs_set_delays(struct memfs *fs, unsigned max_rounds, uint64_t seed);

/* ---- power loss ---------------------------------------------------------- */

/* Turns the write cache on or off.  Turning it off makes everything
 * durable. */
void memfs_set_volatile(struct memfs *fs, bool on);
/* Power loss now; seed chooses what survives. */
void memfs_crash(struct memfs *fs, uint64_t seed);
/* Power loss when the n-th I/O operation from now (n >= 1; READ, WRITE,
 * SYNC and FALLOCATE count) is submitted: that operation and all later ones
 * fail.  0 cancels. */
void memfs_crash_at(struct memfs *fs, uint64_t n, uint64_t seed);
bool memfs_crashed(const struct memfs *fs);
/* Starts the next boot: opens work again and see the durable content. */
void memfs_revive(struct memfs *fs);

/* ---- fault injection ------------------------------------------------------ */

/* The n-th I/O operation from now (n >= 1) fails with -errno_value and
 * changes nothing; everything else works.  0 cancels. */
void memfs_fail_nth(struct memfs *fs, uint64_t n, int errno_value);
/* How many injected failures have fired so far. */
uint64_t memfs_faults_fired(const struct memfs *fs);

/* ---- statistics -------------------------------------------------------------- */

/* I/O operations (READ, WRITE, SYNC, FALLOCATE) submitted since memfs_new. */
uint64_t memfs_op_count(const struct memfs *fs);
/* Operations submitted and not yet completed. */
unsigned memfs_in_flight(const struct memfs *fs);

#endif
