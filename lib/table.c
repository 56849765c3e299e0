/* L1 and L2 tables: entries are little-endian on disk and stay so in memory,
 * so tables can be written straight from their buffers; this file is the
 * only place that converts them. */
#include "image.h"

uint64_t table_entry(const uint8_t *table, uint64_t index)
{
    return load_le64(table + index * 8u);
}

void table_set_entry(uint8_t *table, uint64_t index, uint64_t value)
{
    store_le64(table + index * 8u, value);
}

/* An offset from a table is trusted only if it is cluster aligned, past the
 * header, and [offset, offset + length) lies inside the allocated file. */
bool qed_offset_valid(const struct qed_state *s, uint64_t offset,
                      uint64_t length)
{
    uint64_t end;

    if (offset & (s->cluster_size - 1))
        return false;
    if (offset < s->header_bytes)
        return false;
    if (add_overflows(offset, length, &end))
        return false;
    if (end > s->file_end)
        return false;
    /* Writing through an entry that points into the L1 table would destroy
     * the image: refuse it like any other bad offset. */
    return end <= s->header.l1_table_offset ||
           offset >= s->header.l1_table_offset + s->table_bytes;
}

/* Entries that point outside the file when a table is read are corrupt; if
 * they stayed as they are, the file growing later would make them point at
 * clusters allocated for something else.  They are marked in memory (bit 1,
 * never set in a cluster-aligned offset) so every use fails as corrupt,
 * which is also what the check reports for them. */
void table_poison_invalid(const struct qed_state *s, uint8_t *table,
                          uint64_t entries, uint64_t span)
{
    for (uint64_t i = 0; i < entries; i++) {
        uint64_t e = table_entry(table, i);
        if (e > 1 && !(e & (s->cluster_size - 1)) &&
            !qed_offset_valid(s, e, span))
            table_set_entry(table, i, e | 2);
    }
}
