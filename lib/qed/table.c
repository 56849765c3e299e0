/* SPDX-License-Identifier: MIT */
/* L1 and L2 tables: entries are little-endian on disk and stay so in memory,
 * so tables can be written straight from their buffers; this file is the
 * only place that converts them. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "qed-image.h"

uint64_t qedi_table_entry(const uint8_t *table, uint64_t index)
{
    return load_le64(table + index * QED_ENTRY_SIZE);
}

void qedi_table_set_entry(uint8_t *table, uint64_t index, uint64_t value)
{
    store_le64(table + index * QED_ENTRY_SIZE, value);
}

/* An offset from a table is trusted only if it is cluster aligned, past the
 * header, and [offset, offset + length) lies inside the allocated file. */
bool qedi_offset_valid(const struct qed_state *s, uint64_t offset,
                      uint64_t length)
{
    return qedi_offset_valid_below(s, offset, length, s->file_end);
}

bool qedi_offset_valid_below(const struct qed_state *s, uint64_t offset,
                            uint64_t length, uint64_t limit)
{
    uint64_t end;

    if (offset & (s->cluster_size - 1))
        return false;
    if (offset < s->header_bytes)
        return false;
    if (add_overflows(offset, length, &end))
        return false;
    if (end > limit)
        return false;
    /* A cluster cut short by the end of the file is no cluster. */
    if (in_tail_gap(s, offset, end))
        return false;
    /* Writing through an entry that points into the L1 table would destroy
     * the image: refuse it like any other bad offset. */
    return end <= s->header.l1_table_offset ||
           offset >= s->header.l1_table_offset + s->table_bytes;
}

/* Entries that point outside the file when a table is read are corrupt; if
 * they stayed as they are, the file growing later would make them point at
 * clusters allocated for something else.  They are marked in memory
 * (QED_ENTRY_POISON) so every use fails as corrupt,
 * which is also what the check reports for them. */
void qedi_table_poison_invalid(const struct qed_state *s, uint8_t *table,
                          uint64_t entries, uint64_t span)
{
    for (uint64_t i = 0; i < entries; i++) {
        uint64_t e = qedi_table_entry(table, i);
        if (e > QED_ENTRY_ZERO && !(e & (s->cluster_size - 1)) &&
            !qedi_offset_valid(s, e, span))
            qedi_table_set_entry(table, i, e | QED_ENTRY_POISON);
    }
}

uint64_t qedi_table_entry_on_disk(const struct qed_state *s, uint64_t entry)
{
    /* Marked entries were cluster aligned: the mark is all that is left of
     * the low bits. */
    if ((entry & (s->cluster_size - 1)) == QED_ENTRY_POISON)
        return entry & ~(uint64_t)QED_ENTRY_POISON;
    return entry;
}

/* ---- whole tables of an idle image ----------------------------------------- */

int qedi_table_read_sync(qed_image *img, uint64_t offset, uint8_t *table,
                    qed_error *err)
{
    int ret = qedi_io_pread_sync(img->file, table, qed_of(img)->table_bytes, offset);

    if (ret < 0)
        return qedi_fail(err, -ret, "reading the L2 table at offset 0x%" PRIx64
                        ": %s", offset, strerror(-ret));
    return 0;
}

/* The cached copy goes first: whether the write lands or not, the next
 * use loads what is on disk (and marks its invalid entries again), never a
 * copy that may differ from it. */
int qedi_table_write_sync(qed_image *img, uint64_t offset, const uint8_t *table,
                     qed_error *err)
{
    int ret;

    qedi_l2cache_forget(qed_of(img)->l2cache, offset);
    ret = qedi_io_pwrite_sync(img->file, table, qed_of(img)->table_bytes, offset);
    if (ret < 0)
        return qedi_fail(err, -ret, "writing the L2 table at offset 0x%" PRIx64
                        ": %s", offset, strerror(-ret));
    return 0;
}

/* ---- the index of L2 table offsets ------------------------------------------ */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int qedi_table_index_add(struct qed_state *s, uint64_t offset)
{
    size_t i;

    if (s->ntables == s->tables_cap) {
        size_t cap = s->tables_cap ? s->tables_cap * 2 : 16;
        uint64_t *n = realloc(s->table_offsets, cap * sizeof(*n));
        if (!n)
            return -ENOMEM;
        s->table_offsets = n;
        s->tables_cap = cap;
    }
    for (i = s->ntables; i > 0 && s->table_offsets[i - 1] > offset; i--)
        s->table_offsets[i] = s->table_offsets[i - 1];
    s->table_offsets[i] = offset;
    s->ntables++;
    return 0;
}

/* From the L1 table as loaded (invalid entries already marked). */
int qedi_table_index_build(struct qed_state *s)
{
    s->ntables = 0;
    for (uint64_t i = 0; i < s->table_entries; i++) {
        uint64_t e = qedi_table_entry(s->l1, i);
        if (e == 0 || (e & (s->cluster_size - 1)))
            continue;
        if (s->ntables == s->tables_cap) {
            size_t cap = s->tables_cap ? s->tables_cap * 2 : 16;
            uint64_t *n = realloc(s->table_offsets, cap * sizeof(*n));
            if (!n)
                return -ENOMEM;
            s->table_offsets = n;
            s->tables_cap = cap;
        }
        s->table_offsets[s->ntables++] = e;
    }
    if (s->ntables > 1)
        qsort(s->table_offsets, s->ntables, sizeof(uint64_t), cmp_u64);
    return 0;
}

bool qedi_data_offset_valid(const struct qed_state *s, uint64_t offset,
                           uint64_t length)
{
    size_t lo = 0, hi = s->ntables;

    if (!qedi_offset_valid(s, offset, length))
        return false;
    /* The last table starting before the range's end must end before it. */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->table_offsets[mid] < offset + length)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == 0 || s->table_offsets[lo - 1] + s->table_bytes <= offset;
}
