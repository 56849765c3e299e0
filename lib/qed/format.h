/* SPDX-License-Identifier: MIT */
/* On-disk values of the QED format that the library's code uses by name
 * (the header's fields and feature bits are public: include/qed.h; the
 * sector size is in util.h, as devices have it too).  One place, so that a
 * bare 1 or 4096 in the code is a count, never one of these. */
#ifndef QED_LIB_FORMAT_H
#define QED_LIB_FORMAT_H

/* L2 (and L1) table entries. */
#define QED_ENTRY_UNALLOCATED 0u /* read from the backing file, or zeros */
#define QED_ENTRY_ZERO 1u        /* a zero cluster (L2 only) */
/* In memory only: an entry that pointed outside the file when its table
 * was read.  Bit 1 is never set in a cluster-aligned offset, so the mark
 * cannot be mistaken for one; it is cleared before the entry is written. */
#define QED_ENTRY_POISON 2u

/* Bytes of one table entry (little-endian). */
#define QED_ENTRY_SIZE 8u

/* The header is read and written as this one block at offset 0 (its first
 * cluster holds the header and the backing file name). */
#define QED_HEADER_BLOCK_SIZE 4096u
/* A table update writes the blocks of this size that changed. */
#define QED_TABLE_BLOCK_SIZE 4096u

#endif
