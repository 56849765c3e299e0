/* SPDX-License-Identifier: MIT */
/* Logical offset -> extent: which L1 entry and L2 table cover a position,
 * and how far the same kind of mapping runs from there. */
#include <errno.h>
#include <inttypes.h>

#include "qed-image.h"

static unsigned table_span_bits(const struct qed_state *s)
{
    return s->cluster_bits + s->table_bits;
}

uint64_t qedi_lookup_l1_index(const qed_image *img, uint64_t pos)
{
    return pos >> table_span_bits(qed_of(img));
}

/* First logical offset past the L2 table that covers pos. */
uint64_t qedi_lookup_table_end(const qed_image *img, uint64_t pos)
{
    unsigned bits = table_span_bits(qed_of(img));
    uint64_t next = (qedi_lookup_l1_index(img, pos) + 1);
    if (bits >= 64 || next > (UINT64_MAX >> bits))
        return UINT64_MAX;
    return next << bits;
}

static enum extent_kind kind_of(uint64_t entry)
{
    if (entry == QED_ENTRY_UNALLOCATED)
        return EXTENT_UNALLOCATED;
    if (entry == QED_ENTRY_ZERO)
        return EXTENT_ZERO;
    return EXTENT_DATA;
}

void qedi_lookup_extent(const qed_image *img, const struct table *l2, uint64_t pos,
                   uint64_t max_len, struct extent *ext)
{
    const struct qed_state *s = qed_of(img);
    uint64_t index = (pos >> s->cluster_bits) & (s->table_entries - 1);
    uint64_t len = s->cluster_size - cluster_offset_in(s, pos);
    uint64_t first;

    max_len = QED_MIN(max_len, qedi_lookup_table_end(img, pos) - pos);
    if (!l2) {
        ext->kind = EXTENT_UNALLOCATED;
        ext->length = max_len;
        ext->host = 0;
        return;
    }
    first = qedi_table_entry(l2->bytes, index);
    ext->kind = kind_of(first);
    ext->host = ext->kind == EXTENT_DATA ? first + cluster_offset_in(s, pos) : 0;
    for (uint64_t i = index + 1; len < max_len && i < s->table_entries; i++) {
        uint64_t e = qedi_table_entry(l2->bytes, i);
        if (kind_of(e) != ext->kind)
            break;
        if (ext->kind == EXTENT_DATA &&
            e != first + (i - index) * (uint64_t)s->cluster_size)
            break;
        len += s->cluster_size;
    }
    ext->length = QED_MIN(len, max_len);
}

int qedi_lookup_validate_extent(const qed_image *img, uint64_t l1_index,
                           uint64_t pos, const struct extent *ext,
                           bool writing, qed_error *err)
{
    const struct qed_state *s = qed_of(img);
    uint64_t entry, first, span;

    if (ext->kind != EXTENT_DATA)
        return 0;
    /* The entry as stored, for the message: the host offset less the
     * position's offset in its cluster. */
    entry = ext->host - cluster_offset_in(s, pos);
    first = cluster_start(s, ext->host);
    span = cluster_start(s, ext->host + ext->length - 1) - first +
           s->cluster_size;
    /* Writing through an entry that points into an L2 table would destroy
     * the table; reading shows its bytes, as QEMU does, and the check
     * reports it either way. */
    if ((entry & (s->cluster_size - 1)) ||
        !(writing ? qedi_data_offset_valid(s, first, span)
                  : qedi_offset_valid(s, first, span)))
        return qedi_fail(err, EIO,
                        "corrupt image: L2 table %" PRIu64 " maps offset %"
                        PRIu64 " to invalid cluster offset 0x%" PRIx64
                        " (file end 0x%" PRIx64 ")",
                        l1_index, pos, qedi_table_entry_on_disk(s, entry),
                        s->file_end);
    return 0;
}

static void finish_load(void *opaque, int ret)
{
    struct table *t = opaque;
    struct qed_request *waiters = t->load_waiters;
    struct qed_request *req;

    t->loading = false;
    t->load_waiters = NULL;
    if (ret < 0)
        t->failed = true;
    else if (waiters)
        qedi_table_poison_invalid(qed_of(waiters->base.img), t->bytes,
                             qed_of(waiters->base.img)->table_entries,
                             qed_of(waiters->base.img)->cluster_size);
    while ((req = waiters) != NULL) {
        waiters = req->next;
        req->next = NULL;
        if (ret < 0) {
            /* The message first: the last put frees the table. */
            qedi_fail(&req->base.err, -ret, "reading L2 table at offset 0x%" PRIx64
                     ": %s", t->offset, strerror(-ret));
            qedi_l2cache_put(qed_of(req->base.img)->l2cache, t);
            req->l2 = NULL;
            req->fail(req, ret);
        } else {
            req->resume(req);
        }
    }
}

void qedi_lookup_load_l2(struct qed_request *req, qed_step *next)
{
    struct qed_state *s = qed_of(req->base.img);
    uint64_t l2_offset;
    struct table *t;

    req->l1_index = qedi_lookup_l1_index(req->base.img, req->pos);
    l2_offset = qedi_table_entry(s->l1, req->l1_index);
    if (l2_offset == 0) {
        req->l2 = NULL;
        next(req);
        return;
    }
    if (!qedi_offset_valid(s, l2_offset, s->table_bytes)) {
        qedi_fail(&req->base.err, EIO,
                 "corrupt image: L1 entry %" PRIu64 " points at invalid L2 "
                 "table offset 0x%" PRIx64 " (file end 0x%" PRIx64 ")",
                 req->l1_index, qedi_table_entry_on_disk(s, l2_offset),
                 s->file_end);
        req->fail(req, -EIO);
        return;
    }
    t = qedi_l2cache_find(s->l2cache, l2_offset);
    if (!t) {
        t = qedi_l2cache_insert(s->l2cache, l2_offset, false);
        if (!t) {
            qedi_fail(&req->base.err, ENOMEM, "out of memory for an L2 table");
            req->fail(req, -ENOMEM);
            return;
        }
        t->loading = true;
        qedi_io_pread(req->base.img->file, t->bytes, s->table_bytes, l2_offset,
                 finish_load, t);
    }
    req->l2 = t;
    if (t->loading) {
        req->resume = next;
        req->next = t->load_waiters;
        t->load_waiters = req;
        return;
    }
    next(req);
}
