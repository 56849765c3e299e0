/* SPDX-License-Identifier: MIT */
/* The consistency check of a QED image, and its repair.
 *
 * The check walks L1 and every L2 table, one table in memory at a time, and
 * accounts each cluster of the file in a bitmap (one bit per cluster of the
 * file, never per cluster of the virtual disk): a reference to a cluster
 * already marked is a double reference, a cluster after the header that
 * nothing marks is a leak.  The file's clusters are those of its size
 * rounded up to the cluster size.  L1 entries naming one table have its
 * entries looked at once, so hostile images cost no more than the file.
 *
 * Repair marks the image dirty for its duration and runs in phases, each
 * crash-safe (a crash leaves at worst leaked clusters, never a lost or
 * changed one; the dirty flag makes the next read-write open finish):
 *
 *  1. Corruptions (REPAIR_ALL).  First invalid entries are cleared, and
 *     that is flushed.  Then a second reference to a cluster gets a copy of
 *     its own at the end of the file: copy, flush, then the entry.  An L2
 *     table that shares clusters with an earlier table, or that data entries
 *     point into, moves to a copy (the old clusters are left to whoever else
 *     reads them), so a table is rewritten in place only where nothing else
 *     reads its bytes.  Data clusters are never written, so every copy has
 *     the original bytes.  Copies skip the clusters an invalid entry not yet
 *     cleared points at (an entry past the end of the file must not come to
 *     name a copy), and may grow the file by its size and 1 GiB at most.
 *
 *  2. Leaks.  The objects (data clusters, L2 tables) at the end of the file
 *     move into the gaps in rounds: copy every object of the round, flush,
 *     update the entries that point at them (L2 entries; L1 entries for
 *     tables), flush; then the file is truncated after its last cluster in
 *     use.  A cluster freed in one round is reused only in a later one,
 *     after the flush that made the reference to it go away.  A table that
 *     fits in no gap is parked at the end or given room by moving data out
 *     of its way.  A reverse map (cluster -> owner: virtual cluster for
 *     data, L1 index for a table) covers the clusters past the end the file
 *     shrinks to, i.e. the ones to move.
 *
 *  3. The in-memory state follows the disk: L1 is read again, every cached
 *     L2 table that might be stale is dropped, and the end of the file is
 *     set; the image is checked again for the statistics. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qed-image.h"

#define COPY_CHUNK (1u << 20)
#define APPEND_SLACK (UINT64_C(1) << 30)

/* ---- growable bitmaps ---------------------------------------------------- */

struct bitmap {
    uint8_t *bits;
    uint64_t size; /* bits in use */
    uint64_t cap;  /* bytes allocated */
};

static int bitmap_resize(struct bitmap *b, uint64_t size)
{
    uint64_t need = size / 8 + 1;

    if (need > b->cap) {
        uint64_t cap = QED_MAX(need, b->cap + b->cap / 2);
        uint8_t *bits;

        if (cap > SIZE_MAX)
            return -ENOMEM;
        bits = realloc(b->bits, (size_t)cap);
        if (!bits)
            return -ENOMEM;
        memset(bits + b->cap, 0, (size_t)(cap - b->cap));
        b->bits = bits;
        b->cap = cap;
    }
    if (size > b->size)
        b->size = size;
    return 0;
}

static bool bit_test(const struct bitmap *b, uint64_t i)
{
    return i < b->size && (b->bits[i / 8] >> (i % 8)) & 1u;
}

static void bit_set(struct bitmap *b, uint64_t i)
{
    if (i < b->size)
        b->bits[i / 8] |= (uint8_t)(1u << (i % 8));
}

static void bitmap_free(struct bitmap *b)
{
    free(b->bits);
    memset(b, 0, sizeof(*b));
}

/* ---- the check's shared state --------------------------------------------- */

struct ck {
    qed_image *img;
    struct qed_state *s;
    qed_error *err;
    uint64_t k;           /* clusters per table */
    uint8_t *table;       /* one L2 table */
    uint8_t *chunk;       /* copy buffer */
    size_t chunk_bytes;
    uint64_t end;         /* repair: where the next new cluster goes */
    /* Repair: new clusters go below append_end, and never where an invalid
     * entry points (forbid: clusters from forbid_base on), so that such an
     * entry cannot come to name a copy before it is cleared. */
    uint64_t append_end;
    uint64_t forbid_base;
    struct bitmap forbid;
    /* The last read that failed while checking. */
    int read_ret;
    qed_error read_err;
};

static uint64_t clusters_of(const struct ck *c, uint64_t bytes)
{
    return bytes >> c->s->cluster_bits;
}

static uint64_t bytes_of(const struct ck *c, uint64_t clusters)
{
    return clusters << c->s->cluster_bits;
}

/* Is [offset, offset + length) a place a table entry may point at: cluster
 * aligned, past the header, clear of the L1 table, below limit? */
static int write_at(struct ck *c, const void *buf, uint64_t len,
                    uint64_t offset, const char *what)
{
    int ret = qedi_io_pwrite_sync(c->img->file, buf, (size_t)len, offset);
    if (ret < 0)
        return qedi_fail(c->err, -ret, "writing %s at offset 0x%" PRIx64
                        ": %s", what, offset, strerror(-ret));
    return 0;
}

static int read_at(struct ck *c, void *buf, uint64_t len, uint64_t offset,
                   const char *what)
{
    int ret = qedi_io_pread_sync(c->img->file, buf, (size_t)len, offset);
    if (ret < 0)
        return qedi_fail(c->err, -ret, "reading %s at offset 0x%" PRIx64
                        ": %s", what, offset, strerror(-ret));
    return 0;
}

static int flush(struct ck *c)
{
    int ret = qedi_io_sync_sync(c->img->file);
    if (ret < 0)
        return qedi_fail(c->err, -ret, "flushing the repaired image: %s",
                        strerror(-ret));
    return 0;
}

static int write_l1(struct ck *c)
{
    return write_at(c, c->s->l1, c->s->table_bytes,
                    c->s->header.l1_table_offset, "the L1 table");
}

/* Copies len bytes (whole clusters) within the file. */
static int copy_bytes(struct ck *c, uint64_t from, uint64_t to, uint64_t len)
{
    for (uint64_t done = 0; done < len;) {
        uint64_t n = QED_MIN(len - done, (uint64_t)c->chunk_bytes);
        int ret = read_at(c, c->chunk, n, from + done, "a cluster to copy");
        if (ret == 0)
            ret = write_at(c, c->chunk, n, to + done, "a copied cluster");
        if (ret < 0)
            return ret;
        done += n;
    }
    return 0;
}

/* ---- tables met before ---------------------------------------------------- */

/* L1 entries naming the same table: its entries are looked at once; what
 * they held is remembered for the count.  (Distinct tables are at most as
 * many as clusters in the file, so the work stays bounded by the file even
 * when every L1 entry names one table.) */
struct seen {
    uint64_t offset; /* 0: free slot */
    uint32_t valid, invalid, allocated, fragmented; /* entries of one table */
};

struct seen_set {
    struct seen *slots;
    uint64_t mask;
    uint64_t count, max; /* slots used, and at most */
};

/* Room for as many tables as L1 names, or as fit in the file's clusters,
 * whichever is fewer (distinct tables cannot be more). */
static int seen_init(struct seen_set *ss, const struct qed_state *s)
{
    uint64_t n = 0, cap = 16;

    for (uint64_t i = 0; i < s->table_entries; i++)
        n += qedi_table_entry(s->l1, i) != 0;
    n = QED_MIN(n, (s->file_end >> s->cluster_bits) + 1);
    while (cap < 2 * n)
        cap *= 2;
    ss->slots = calloc(cap, sizeof(*ss->slots));
    ss->mask = cap - 1;
    ss->count = 0;
    ss->max = cap / 2;
    return ss->slots ? 0 : -ENOMEM;
}

/* The slot of a table offset; with insert, a new one (NULL when full). */
static struct seen *seen_get(struct seen_set *ss, uint64_t offset, bool insert)
{
    uint64_t h = (offset >> 12) * UINT64_C(0x9e3779b97f4a7c15);

    for (uint64_t i = h >> 20;; i++) {
        struct seen *sn = &ss->slots[i & ss->mask];
        if (sn->offset == offset)
            return sn;
        if (sn->offset == 0) {
            if (!insert || ss->count >= ss->max)
                return NULL;
            ss->count++;
            memset(sn, 0, sizeof(*sn));
            sn->offset = offset;
            return sn;
        }
    }
}

static void seen_free(struct seen_set *ss)
{
    free(ss->slots);
    ss->slots = NULL;
}

/* ---- the walk: check, and repair of corruptions ------------------------- */

enum fix_mode {
    FIX_NONE,
    FIX_CLEAR, /* clear invalid entries */
    FIX_COPY,  /* give second references copies of their own */
};

struct walk {
    enum fix_mode fix;
    uint64_t limit;                  /* references must end at or below */
    struct bitmap used;              /* clusters referenced so far */
    struct bitmap *targets_out;      /* check: collects data targets */
    bool collect_forbid;             /* check: fills c->forbid */
    const struct bitmap *targets_in; /* fix: clusters data points at */
    bool l1_changed;
    uint64_t corruptions, fixed, check_errors;
    uint64_t invalid, clashes;       /* the corruptions, by kind */
    uint64_t copy_clusters;          /* clusters a repair would copy */
    struct seen_set seen;
    uint64_t allocated, fragmented, leaks, end;
};

static void mark(struct walk *w, uint64_t first, uint64_t count)
{
    for (uint64_t i = first; i < first + count; i++)
        bit_set(&w->used, i);
}

static bool any_marked(const struct bitmap *b, uint64_t first,
                       uint64_t count)
{
    for (uint64_t i = first; i < first + count; i++)
        if (bit_test(b, i))
            return true;
    return false;
}

/* An invalid entry naming [offset, offset + length): the part past the
 * end of the file is kept clear of copies. */
static void forbid(struct ck *c, uint64_t offset, uint64_t length,
                   uint64_t limit)
{
    uint64_t end, first, last;

    if (offset & (c->s->cluster_size - 1))
        return; /* misaligned: invalid wherever it points */
    if (add_overflows(offset, length, &end))
        end = UINT64_MAX;
    if (end <= limit)
        return;
    first = clusters_of(c, QED_MAX(offset, limit));
    last = clusters_of(c, end - 1);
    for (uint64_t x = first; x <= last && x - c->forbid_base < c->forbid.size;
         x++)
        bit_set(&c->forbid, x - c->forbid_base);
}

/* A new cluster range at the end of the file, for a copy. */
static int take_new(struct ck *c, struct walk *w, uint64_t count,
                    uint64_t *offset)
{
    uint64_t start = clusters_of(c, c->end), x;

    /* Skipped clusters are holes the leak repair reclaims. */
    for (x = start; x < start + count; x++)
        if (x >= c->forbid_base && bit_test(&c->forbid, x - c->forbid_base))
            start = x + 1;
    if (bytes_of(c, start + count) > c->append_end ||
        bytes_of(c, start + count) < c->end)
        return qedi_fail(c->err, EFBIG, "the copies for the repair would "
                        "grow the file past %" PRIu64 " bytes; refusing",
                        c->append_end);
    if (bitmap_resize(&w->used, start + count) < 0)
        return qedi_fail(c->err, ENOMEM, "out of memory for the check");
    *offset = bytes_of(c, start);
    c->end = bytes_of(c, start + count);
    mark(w, start, count);
    return 0;
}

static void note_read_error(struct ck *c, struct walk *w, int ret,
                            uint64_t l1_index, uint64_t offset)
{
    w->check_errors++;
    c->read_ret = ret;
    qedi_fail(&c->read_err, -ret, "reading the L2 table of L1 entry %" PRIu64
             " at offset 0x%" PRIx64 ": %s", l1_index, offset, strerror(-ret));
}

/* An entry naming a copy this pass appended: only a table copied after its
 * twin was repaired holds one (a clash, not an invalid entry).  Holes left
 * where invalid entries point are never marked used. */
static bool names_copy(const struct ck *c, const struct walk *w, uint64_t d)
{
    return w->fix == FIX_COPY && !(d & (c->s->cluster_size - 1)) &&
           d >= w->limit && d < c->end && bit_test(&w->used, clusters_of(c, d));
}

/* One L2 table's entries, in c->table. */
static int walk_entries(struct ck *c, struct walk *w, bool in_place,
                        bool *changed, bool *copied)
{
    struct qed_state *s = c->s;
    uint64_t last = 0;

    for (uint64_t j = 0; j < s->table_entries; j++) {
        uint64_t d = qedi_table_entry(c->table, j), copy;
        int ret;

        if (d == QED_ENTRY_UNALLOCATED || d == QED_ENTRY_ZERO)
            continue;
        /* Counted like qemu-img: every entry with an offset, in the
         * table's order. */
        w->allocated++;
        if (last && last + s->cluster_size != d)
            w->fragmented++;
        last = d;
        if (!qedi_offset_valid_below(c->s, d, s->cluster_size, w->limit) &&
            !names_copy(c, w, d)) {
            w->corruptions++;
            w->invalid++;
            if (w->collect_forbid)
                forbid(c, d, s->cluster_size, w->limit);
            if (w->fix && in_place) {
                qedi_table_set_entry(c->table, j, 0);
                *changed = true;
                w->fixed++;
            }
            continue;
        }
        if (w->targets_out)
            bit_set(w->targets_out, clusters_of(c, d));
        if (!bit_test(&w->used, clusters_of(c, d))) {
            bit_set(&w->used, clusters_of(c, d));
            continue;
        }
        w->corruptions++;
        w->clashes++;
        w->copy_clusters++;
        if (w->fix != FIX_COPY)
            continue;
        /* A second reference: it gets its own copy of the bytes. */
        ret = take_new(c, w, 1, &copy);
        if (ret == 0)
            ret = copy_bytes(c, d, copy, s->cluster_size);
        if (ret < 0)
            return ret;
        qedi_table_set_entry(c->table, j, copy);
        *changed = *copied = true;
        w->fixed++;
    }
    return 0;
}

static int walk_table(struct ck *c, struct walk *w, uint64_t i, uint64_t e)
{
    struct qed_state *s = c->s;
    uint64_t first = clusters_of(c, e), where = e;
    bool clash, shared, move, changed = false, copied = false;
    uint64_t allocated, fragmented, invalid;
    struct seen *sn;
    int ret;

    if (!qedi_offset_valid_below(c->s, e, s->table_bytes, w->limit)) {
        w->corruptions++;
        w->invalid++;
        if (w->collect_forbid)
            forbid(c, e, s->table_bytes, w->limit);
        if (w->fix) {
            qedi_table_set_entry(s->l1, i, 0);
            w->l1_changed = true;
            w->fixed++;
        }
        return 0;
    }
    clash = any_marked(&w->used, first, c->k);
    if (clash) {
        w->corruptions++;
        w->clashes++;
        w->copy_clusters += c->k;
    }
    /* A table whose clusters something else reads is not rewritten in
     * place: it moves to a copy, and the old clusters stay as they are.
     * (Clearing invalid entries leaves such a table to the copy pass.) */
    shared = clash || (w->targets_in && any_marked(w->targets_in, first, c->k));
    move = w->fix == FIX_COPY && shared;
    if (clash && w->fix != FIX_COPY) {
        /* The same table again: every entry is met a second time. */
        sn = seen_get(&w->seen, e, false);
        if (sn) {
            w->corruptions += sn->valid + sn->invalid;
            w->clashes += sn->valid;
            w->invalid += sn->invalid;
            w->copy_clusters += sn->valid;
            w->allocated += sn->allocated;
            w->fragmented += sn->fragmented;
            return 0;
        }
    }
    ret = qedi_io_pread_sync(c->img->file, c->table, s->table_bytes, e);
    if (ret < 0) {
        note_read_error(c, w, ret, i, e);
        if (!move)
            mark(w, first, c->k);
        return 0;
    }
    if (move) {
        ret = take_new(c, w, c->k, &where);
        if (ret < 0)
            return ret;
        w->fixed++;
    } else {
        mark(w, first, c->k);
    }
    allocated = w->allocated;
    fragmented = w->fragmented;
    invalid = w->invalid;
    ret = walk_entries(c, w, !shared || move, &changed, &copied);
    if (ret < 0)
        return ret;
    sn = seen_get(&w->seen, e, true);
    if (sn) {
        sn->allocated = (uint32_t)(w->allocated - allocated);
        sn->fragmented = (uint32_t)(w->fragmented - fragmented);
        sn->invalid = (uint32_t)(w->invalid - invalid);
        sn->valid = sn->allocated - sn->invalid;
    }
    if (!w->fix)
        return 0;
    if (move) {
        /* Table and copied data durable, then the L1 entry. */
        ret = write_at(c, c->table, s->table_bytes, where, "a copied L2 table");
        if (ret == 0)
            ret = flush(c);
        if (ret < 0)
            return ret;
        qedi_table_set_entry(s->l1, i, where);
        w->l1_changed = true;
    } else if (changed) {
        if (copied)
            ret = flush(c);
        if (ret == 0)
            ret = qedi_table_write_sync(c->img, e, c->table, c->err);
    }
    return ret;
}

static void walk_free(struct walk *w)
{
    bitmap_free(&w->used);
    seen_free(&w->seen);
}

/* Walks every table; limit is the end of the file the references must lie
 * in.  Returns < 0 only when a repair failed. */
static int walk(struct ck *c, struct walk *w, uint64_t limit)
{
    struct qed_state *s = c->s;
    uint64_t header = clusters_of(c, s->header_bytes);
    uint64_t nclusters = clusters_of(c, limit);
    int ret = 0;

    w->limit = limit;
    if (seen_init(&w->seen, s) < 0 ||
        bitmap_resize(&w->used, QED_MAX(nclusters, clusters_of(c, c->end))) < 0 ||
        (w->targets_out && bitmap_resize(w->targets_out, nclusters) < 0))
        return qedi_fail(c->err, ENOMEM, "out of memory for the check "
                        "(%" PRIu64 " clusters)", nclusters);
    mark(w, 0, header);
    mark(w, clusters_of(c, s->header.l1_table_offset), c->k);
    for (uint64_t i = 0; i < s->table_entries && ret == 0; i++) {
        uint64_t e = qedi_table_entry(s->l1, i);
        if (e != 0)
            ret = walk_table(c, w, i, e);
    }
    if (ret == 0 && w->l1_changed) {
        ret = write_l1(c);
        w->l1_changed = false;
    }
    if (ret < 0)
        return ret;
    /* Leaks only count when every table was read. */
    if (w->check_errors == 0)
        for (uint64_t i = header; i < nclusters; i++)
            if (!bit_test(&w->used, i))
                w->leaks++;
    for (uint64_t i = w->used.size; i-- > 0;) {
        if (bit_test(&w->used, i)) {
            w->end = bytes_of(c, i + 1);
            break;
        }
    }
    return 0;
}

/* ---- leaks: moving the last clusters into the gaps ----------------------- */

enum { CL_FREE, CL_DATA, CL_TABLE, CL_FIXED };

#define OWNER_NONE 0u
#define OWNER_TABLE (UINT64_C(1) << 63) /* | L1 index; data: vcluster + 1 */
#define NO_INDEX UINT64_MAX

struct move {
    uint64_t owner;
    uint64_t from, to, count; /* clusters */
};

struct leaker {
    uint8_t *state;      /* 2 bits per cluster: CL_* */
    uint64_t n;          /* clusters of the file */
    uint64_t state_cap;  /* bytes */
    uint64_t first;      /* first cluster after the header */
    uint64_t base;       /* owners are known from this cluster on */
    uint64_t *owner;     /* owner[c - base] */
    uint64_t owner_cap;
    uint64_t target;     /* the file should end here (clusters) */
    bool may_grow;       /* tables may be parked past the end */
    struct bitmap data_moving, table_moving; /* by L1 index, this round */
    struct move *moves;
    size_t nmoves, moves_cap;
};

static unsigned st_get(const struct leaker *lf, uint64_t c)
{
    return (lf->state[c / 4] >> (2 * (c % 4))) & 3u;
}

static void st_set(struct leaker *lf, uint64_t c, unsigned v)
{
    uint8_t *p = &lf->state[c / 4];
    *p = (uint8_t)((*p & ~(3u << (2 * (c % 4)))) | (v << (2 * (c % 4))));
}

/* Grows the file (in the maps) to n clusters. */
static int leaker_grow(struct leaker *lf, uint64_t n)
{
    uint64_t need = n / 4 + 1;

    if (need > lf->state_cap) {
        uint64_t cap = QED_MAX(need, lf->state_cap + lf->state_cap / 2);
        uint8_t *p = cap > SIZE_MAX ? NULL : realloc(lf->state, (size_t)cap);
        if (!p)
            return -ENOMEM;
        memset(p + lf->state_cap, 0, (size_t)(cap - lf->state_cap));
        lf->state = p;
        lf->state_cap = cap;
    }
    if (lf->owner && n - lf->base > lf->owner_cap) {
        uint64_t cap = QED_MAX(n - lf->base, lf->owner_cap * 2);
        uint64_t *p = cap > SIZE_MAX / 8 ? NULL
                                         : realloc(lf->owner, (size_t)cap * 8);
        if (!p)
            return -ENOMEM;
        memset(p + lf->owner_cap, 0, (size_t)(cap - lf->owner_cap) * 8);
        lf->owner = p;
        lf->owner_cap = cap;
    }
    lf->n = QED_MAX(lf->n, n);
    return 0;
}

static uint64_t owner_get(const struct leaker *lf, uint64_t c)
{
    return c >= lf->base && c - lf->base < lf->owner_cap ? lf->owner[c - lf->base]
                                                         : OWNER_NONE;
}

static void owner_set(struct leaker *lf, uint64_t c, uint64_t owner)
{
    if (c >= lf->base && c - lf->base < lf->owner_cap)
        lf->owner[c - lf->base] = owner;
}

enum leak_walk_mode {
    LW_STATE,  /* classify every cluster */
    LW_OWNERS, /* owners of the clusters from base on */
    LW_WINDOW, /* owners of the data clusters in [win, win + c->k) */
};

/* Walks the (consistent or not) tables: only valid references count; a
 * cluster referenced twice is CL_FIXED (never moved). */
static int leak_walk(struct ck *c, struct leaker *lf, enum leak_walk_mode mode,
                     uint64_t win, uint64_t *win_owner)
{
    struct qed_state *s = c->s;
    uint64_t limit = bytes_of(c, lf->n);
    struct seen_set seen;
    int ret = 0;

    if (seen_init(&seen, s) < 0)
        return qedi_fail(c->err, ENOMEM, "out of memory for the repair");
    if (mode == LW_STATE) {
        for (uint64_t i = 0; i < lf->first; i++)
            st_set(lf, i, CL_FIXED);
        for (uint64_t i = 0; i < c->k; i++)
            st_set(lf, clusters_of(c, s->header.l1_table_offset) + i, CL_FIXED);
    }
    for (uint64_t i = 0; i < s->table_entries && ret == 0; i++) {
        uint64_t e = qedi_table_entry(s->l1, i), t = clusters_of(c, e);
        bool again;

        if (e == 0 || !qedi_offset_valid_below(c->s, e, s->table_bytes, limit))
            continue;
        /* A table named twice stays put; its entries are its own once. */
        again = seen_get(&seen, e, false) != NULL;
        seen_get(&seen, e, true);
        for (uint64_t x = t; x < t + c->k; x++) {
            if (mode == LW_STATE)
                st_set(lf, x, st_get(lf, x) == CL_FREE ? CL_TABLE : CL_FIXED);
            else if (mode == LW_OWNERS && st_get(lf, x) == CL_TABLE)
                owner_set(lf, x, OWNER_TABLE | i);
        }
        if (again)
            continue;
        ret = read_at(c, c->table, s->table_bytes, e, "an L2 table");
        if (ret < 0)
            break;
        for (uint64_t j = 0; j < s->table_entries; j++) {
            uint64_t d = qedi_table_entry(c->table, j), x = clusters_of(c, d);
            uint64_t owner = (i << s->table_bits) + j + 1;

            if (d == QED_ENTRY_UNALLOCATED || d == QED_ENTRY_ZERO ||
                !qedi_offset_valid_below(c->s, d, s->cluster_size, limit))
                continue;
            if (mode == LW_STATE)
                st_set(lf, x, st_get(lf, x) == CL_FREE ? CL_DATA : CL_FIXED);
            else if (mode == LW_OWNERS && st_get(lf, x) == CL_DATA)
                owner_set(lf, x, owner);
            else if (mode == LW_WINDOW && x >= win && x < win + c->k &&
                     st_get(lf, x) == CL_DATA)
                win_owner[x - win] = owner;
        }
    }
    seen_free(&seen);
    return ret;
}

static uint64_t count_free(const struct leaker *lf, uint64_t from,
                           uint64_t to)
{
    uint64_t n = 0;
    for (uint64_t i = from; i < to; i++)
        n += st_get(lf, i) == CL_FREE;
    return n;
}

static int plan_add(struct ck *c, struct leaker *lf, uint64_t owner,
                    uint64_t from, uint64_t to, uint64_t count)
{
    if (lf->nmoves == lf->moves_cap) {
        size_t cap = lf->moves_cap ? lf->moves_cap * 2 : 64;
        struct move *m = realloc(lf->moves, cap * sizeof(*m));
        if (!m)
            return qedi_fail(c->err, ENOMEM, "out of memory for the repair");
        lf->moves = m;
        lf->moves_cap = cap;
    }
    lf->moves[lf->nmoves++] = (struct move){ owner, from, to, count };
    for (uint64_t x = 0; x < count; x++)
        st_set(lf, to + x, (owner & OWNER_TABLE) ? CL_TABLE : CL_DATA);
    return 0;
}

/* Forgets the moves planned so far (their destinations are free again). */
static void plan_reset(struct leaker *lf)
{
    for (size_t m = 0; m < lf->nmoves; m++)
        for (uint64_t x = 0; x < lf->moves[m].count; x++)
            st_set(lf, lf->moves[m].to + x, CL_FREE);
    lf->nmoves = 0;
    memset(lf->data_moving.bits, 0, (size_t)lf->data_moving.cap);
    memset(lf->table_moving.bits, 0, (size_t)lf->table_moving.cap);
}

/* The table object of L1 entry l1 starts at cluster t and is whole: all
 * its clusters are table clusters owned by nothing else. */
static bool table_intact(const struct ck *c, const struct leaker *lf,
                         uint64_t l1, uint64_t t)
{
    if (t + c->k > lf->n)
        return false;
    for (uint64_t x = t; x < t + c->k; x++) {
        if (st_get(lf, x) != CL_TABLE)
            return false;
        if (x >= lf->base && owner_get(lf, x) != (OWNER_TABLE | l1))
            return false;
    }
    return true;
}

/* Lowest run of count free clusters in [*cursor, end); moves the cursor
 * past it. */
static uint64_t find_run(const struct leaker *lf, uint64_t *cursor,
                         uint64_t end, uint64_t count)
{
    uint64_t run = 0;

    for (uint64_t x = *cursor; x < end; x++) {
        run = st_get(lf, x) == CL_FREE ? run + 1 : 0;
        if (run == count) {
            *cursor = x + 1;
            return x + 1 - count;
        }
    }
    *cursor = end;
    return NO_INDEX;
}

/* A table that fits in no gap: move it out of the way, or clear a window
 * of data clusters for it.  Plans nothing when neither is possible. */
static int plan_stuck(struct ck *c, struct leaker *lf, uint64_t l1, uint64_t t)
{
    uint64_t k = c->k, E = lf->target, free_below, best = NO_INDEX;
    uint64_t *win_owner, g;
    int ret;

    if (t < E) {
        /* Part of it lies below the target end: park it at the end of the
         * file first, so its clusters below the end become gaps. */
        uint64_t to = lf->n;
        if (!lf->may_grow)
            return 0;
        if (leaker_grow(lf, lf->n + k) < 0)
            return qedi_fail(c->err, ENOMEM, "out of memory for the repair");
        return plan_add(c, lf, OWNER_TABLE | l1, t, to, k);
    }
    /* Lowest window of k clusters below the target end holding only data
     * and gaps, at least one gap, with room for its data elsewhere. */
    free_below = count_free(lf, lf->first, E);
    for (uint64_t w = lf->first; w + k <= E && best == NO_INDEX; w++) {
        uint64_t f = 0;
        bool usable = true;
        for (uint64_t x = w; x < w + k && usable; x++) {
            unsigned st = st_get(lf, x);
            usable = st == CL_FREE || st == CL_DATA;
            f += st == CL_FREE;
        }
        if (usable && f > 0 && free_below - f >= k - f)
            best = w;
    }
    if (best == NO_INDEX)
        return 0;
    win_owner = calloc(k, sizeof(*win_owner));
    if (!win_owner)
        return qedi_fail(c->err, ENOMEM, "out of memory for the repair");
    ret = leak_walk(c, lf, LW_WINDOW, best, win_owner);
    g = lf->first;
    for (uint64_t x = best; x < best + k && ret == 0; x++) {
        if (st_get(lf, x) != CL_DATA)
            continue;
        if (win_owner[x - best] == OWNER_NONE) {
            plan_reset(lf);
            break;
        }
        while (g < E && (st_get(lf, g) != CL_FREE || (g >= best && g < best + k)))
            g++;
        if (g >= E) {
            plan_reset(lf);
            break;
        }
        ret = plan_add(c, lf, win_owner[x - best], x, g, 1);
    }
    free(win_owner);
    return ret;
}

/* Plans one round of moves into lf->moves; none planned means done. */
static int plan_round(struct ck *c, struct leaker *lf)
{
    struct qed_state *s = c->s;
    uint64_t k = c->k, stuck_l1 = NO_INDEX, stuck_t = 0, cursor, g;
    int ret;

restart:
    plan_reset(lf);
    stuck_l1 = NO_INDEX;
    /* Nothing can move past a cluster that must stay. */
    for (uint64_t x = lf->n; x-- > lf->target;) {
        if (st_get(lf, x) == CL_FIXED) {
            lf->target = x + 1;
            break;
        }
    }
    /* Tables first: they need runs of free clusters. */
    cursor = lf->first;
    for (uint64_t x = lf->n; x-- > lf->target;) {
        uint64_t owner, l1, t, to;

        if (st_get(lf, x) != CL_TABLE)
            continue;
        owner = owner_get(lf, x);
        l1 = owner & ~OWNER_TABLE;
        if (!(owner & OWNER_TABLE) || l1 >= s->table_entries) {
            lf->target = x + 1; /* unknown owner: it stays */
            goto restart;
        }
        t = clusters_of(c, qedi_table_entry(s->l1, l1));
        if (!table_intact(c, lf, l1, t)) {
            lf->target = QED_MAX(lf->target, QED_MIN(t + k, lf->n));
            lf->target = QED_MAX(lf->target, x + 1);
            goto restart;
        }
        x = t; /* the loop goes on below the table */
        to = find_run(lf, &cursor, lf->target, k);
        if (to == NO_INDEX) {
            if (stuck_l1 == NO_INDEX) {
                stuck_l1 = l1;
                stuck_t = t;
            }
            continue;
        }
        ret = plan_add(c, lf, OWNER_TABLE | l1, t, to, k);
        if (ret < 0)
            return ret;
        bit_set(&lf->table_moving, l1);
    }
    /* Then data, except of tables moving in this round (their entries are
     * updated in place, so the table must stay put meanwhile). */
    g = lf->first;
    for (uint64_t x = lf->n; x-- > lf->target;) {
        uint64_t owner, l1;

        if (st_get(lf, x) != CL_DATA)
            continue;
        owner = owner_get(lf, x);
        if (owner == OWNER_NONE || (owner & OWNER_TABLE)) {
            lf->target = x + 1;
            goto restart;
        }
        l1 = (owner - 1) >> s->table_bits;
        if (bit_test(&lf->table_moving, l1))
            continue; /* next round */
        while (g < lf->target && st_get(lf, g) != CL_FREE)
            g++;
        if (g >= lf->target)
            break;
        ret = plan_add(c, lf, owner, x, g, 1);
        if (ret < 0)
            return ret;
        bit_set(&lf->data_moving, l1);
    }
    if (lf->nmoves == 0 && stuck_l1 != NO_INDEX)
        return plan_stuck(c, lf, stuck_l1, stuck_t);
    return 0;
}

static int cmp_move(const void *a, const void *b)
{
    const struct move *x = a, *y = b;
    return x->owner < y->owner ? -1 : x->owner > y->owner;
}

/* Copy everything, flush, repoint the references, flush. */
static int run_round(struct ck *c, struct leaker *lf)
{
    struct qed_state *s = c->s;
    bool l1_changed = false;
    int ret = 0;

    for (size_t m = 0; m < lf->nmoves && ret == 0; m++)
        ret = copy_bytes(c, bytes_of(c, lf->moves[m].from),
                         bytes_of(c, lf->moves[m].to),
                         bytes_of(c, lf->moves[m].count));
    if (ret == 0)
        ret = flush(c);
    if (ret < 0)
        return ret;
    /* Data moves sort by virtual cluster, so by table. */
    qsort(lf->moves, lf->nmoves, sizeof(*lf->moves), cmp_move);
    for (size_t m = 0; m < lf->nmoves && ret == 0;) {
        struct move *mv = &lf->moves[m];
        uint64_t l1, e;
        size_t end;

        if (mv->owner & OWNER_TABLE) {
            l1 = mv->owner & ~OWNER_TABLE;
            if (qedi_table_entry(s->l1, l1) != bytes_of(c, mv->from))
                return qedi_fail(c->err, EIO, "L1 entry %" PRIu64 " changed "
                                "while its table was moved", l1);
            qedi_table_set_entry(s->l1, l1, bytes_of(c, mv->to));
            l1_changed = true;
            m++;
            continue;
        }
        l1 = (mv->owner - 1) >> s->table_bits;
        e = qedi_table_entry(s->l1, l1);
        ret = read_at(c, c->table, s->table_bytes, e, "an L2 table");
        for (end = m; ret == 0 && end < lf->nmoves &&
                      !(lf->moves[end].owner & OWNER_TABLE) &&
                      (lf->moves[end].owner - 1) >> s->table_bits == l1;
             end++) {
            uint64_t j = (lf->moves[end].owner - 1) & (s->table_entries - 1);
            if (qedi_table_entry(c->table, j) != bytes_of(c, lf->moves[end].from))
                return qedi_fail(c->err, EIO, "L2 entry %" PRIu64 " of table "
                                "%" PRIu64 " changed while its cluster was "
                                "moved", j, l1);
            qedi_table_set_entry(c->table, j, bytes_of(c, lf->moves[end].to));
        }
        if (ret == 0)
            ret = qedi_table_write_sync(c->img, e, c->table, c->err);
        m = end;
    }
    if (ret == 0 && l1_changed)
        ret = write_l1(c);
    if (ret == 0)
        ret = flush(c);
    if (ret < 0)
        return ret;
    for (size_t m = 0; m < lf->nmoves; m++) {
        const struct move *mv = &lf->moves[m];
        for (uint64_t x = 0; x < mv->count; x++) {
            st_set(lf, mv->from + x, CL_FREE);
            owner_set(lf, mv->from + x, OWNER_NONE);
            owner_set(lf, mv->to + x, mv->owner);
        }
    }
    lf->nmoves = 0;
    return 0;
}

static void leaker_free(struct leaker *lf)
{
    free(lf->state);
    free(lf->owner);
    free(lf->moves);
    bitmap_free(&lf->data_moving);
    bitmap_free(&lf->table_moving);
}

/* Reclaims the leaked clusters of a file that ends at c->end; the file is
 * then truncated after its last cluster in use. */
static int repair_leaks(struct ck *c, bool may_grow, uint64_t *fixed)
{
    struct qed_state *s = c->s;
    struct leaker lf = { 0 };
    uint64_t used = 0, before, after, new_end, size, rounds = 0, max_rounds;
    int ret;

    *fixed = 0;
    lf.first = clusters_of(c, s->header_bytes);
    lf.may_grow = may_grow;
    if (leaker_grow(&lf, clusters_of(c, c->end)) < 0 ||
        bitmap_resize(&lf.data_moving, s->table_entries) < 0 ||
        bitmap_resize(&lf.table_moving, s->table_entries) < 0) {
        ret = qedi_fail(c->err, ENOMEM, "out of memory for the repair");
        goto out;
    }
    /* Nothing may be copied over a cluster whose last reference went away
     * without a flush: make the current state durable first. */
    ret = flush(c);
    if (ret == 0)
        ret = leak_walk(c, &lf, LW_STATE, 0, NULL);
    if (ret < 0)
        goto out;
    for (uint64_t x = 0; x < lf.n; x++)
        used += st_get(&lf, x) != CL_FREE;
    before = count_free(&lf, lf.first, lf.n);
    if (before == 0)
        goto truncate;
    /* The clusters past the end the file shrinks to are the ones that
     * move: only they need their owners. */
    lf.base = lf.target = used;
    lf.owner_cap = lf.n - lf.base;
    lf.owner = calloc(QED_MAX(lf.owner_cap, 1), sizeof(*lf.owner));
    if (!lf.owner) {
        ret = qedi_fail(c->err, ENOMEM, "out of memory for the repair");
        goto out;
    }
    ret = leak_walk(c, &lf, LW_OWNERS, 0, NULL);
    max_rounds = 4 * (lf.n - lf.base) + 16;
    while (ret == 0 && rounds++ < max_rounds) {
        ret = plan_round(c, &lf);
        if (ret < 0 || lf.nmoves == 0)
            break;
        ret = run_round(c, &lf);
    }
    if (ret < 0)
        goto out;
truncate:
    new_end = lf.n;
    while (new_end > 0 && st_get(&lf, new_end - 1) == CL_FREE)
        new_end--;
    after = count_free(&lf, lf.first, new_end);
    ret = c->img->file->ops->get_size(c->img->file, &size);
    if (ret == 0 && size != bytes_of(c, new_end))
        ret = c->img->file->ops->truncate(c->img->file, bytes_of(c, new_end));
    if (ret == 0)
        ret = qedi_io_sync_sync(c->img->file);
    if (ret < 0) {
        ret = qedi_fail(c->err, -ret, "truncating the repaired image to %" PRIu64
                       " bytes: %s", bytes_of(c, new_end), strerror(-ret));
        goto out;
    }
    c->end = bytes_of(c, new_end);
    /* Clusters parked at the end and moved back count as nothing. */
    *fixed = before > after ? before - after : 0;
out:
    leaker_free(&lf);
    return ret;
}

/* ---- qed_check ----------------------------------------------------------- */

static void fill_stats(const struct ck *c, const struct walk *w,
                       struct qed_check_result *r)
{
    r->allocated_clusters = w->allocated;
    r->fragmented_clusters = w->fragmented;
    r->image_end_offset = w->end;
    r->total_clusters = (c->img->size + c->s->cluster_size - 1) >>
                        c->s->cluster_bits;
}

/* After a repair: L1 as on disk, no cached table that may be stale, the
 * end of the file where the repair left it.  Every cached table sits at an
 * offset L1 pointed at before the repair (requests load tables through L1;
 * unlinked new tables leave the cache), so dropping the tables at the old
 * and new L1 offsets drops them all. */
static int resync_state(struct ck *c, const uint8_t *old_l1)
{
    struct qed_state *s = c->s;
    uint64_t size = 0;
    int ret;

    for (int pass = 0; pass < 2; pass++) {
        const uint8_t *l1 = pass == 0 ? old_l1 : s->l1;
        for (uint64_t i = 0; l1 && i < s->table_entries; i++) {
            uint64_t e = qedi_table_entry(l1, i);
            if (e != QED_ENTRY_UNALLOCATED)
                qedi_l2cache_forget(s->l2cache, e);
        }
    }
    ret = read_at(c, s->l1, s->table_bytes, s->header.l1_table_offset,
                  "the L1 table");
    if (ret == 0) {
        ret = c->img->file->ops->get_size(c->img->file, &size);
        if (ret < 0)
            return qedi_fail(c->err, -ret, "size of the repaired image: %s",
                            strerror(-ret));
    }
    /* Space past c->end is not the image's (extended ahead, or gone). */
    s->file_end = c->end;
    s->size_ensured = size;
    if (s->tail_gap_end > s->file_end || size >= s->tail_gap_end)
        s->tail_gap_start = s->tail_gap_end = 0; /* the partial cluster went */
    if (ret == 0) {
        qedi_table_poison_invalid(s, s->l1, s->table_entries, s->table_bytes);
        if (qedi_table_index_build(s) < 0)
            ret = qedi_fail(c->err, ENOMEM, "out of memory");
    }
    return ret;
}

/* Clusters that failed allocations left behind (alloc.c) may have moved or
 * been reclaimed: the record of them no longer holds.  Unless the leaks
 * were reclaimed, the image stays dirty for them. */
static void forget_failed_allocations(struct qed_state *s, bool reclaimed)
{
    if (!reclaimed && qedi_alloc_leaks_outstanding(s))
        s->leak_unknown = true;
    else if (reclaimed)
        s->leak_unknown = false;
    s->nabandoned = 0;
}

/* The check and repair behind qed_check and qedi_check_on_open.  mark_clean:
 * clear NEED_CHECK when the repair leaves no corruption. */
static int check_run(qed_image *img, unsigned repair,
                     struct qed_check_result *r, bool mark_clean,
                     qed_error *err)
{
    struct qed_state *s = qed_of(img);
    struct ck c = { .img = img, .s = s, .err = err };
    struct walk first = { 0 }, clear = { 0 }, copy = { 0 }, again = { 0 };
    struct bitmap targets = { 0 };
    uint8_t *old_l1 = NULL;
    uint64_t remaining;
    bool changed = false, was_clean = false;
    int ret;

    memset(r, 0, sizeof(*r));
    c.k = s->table_bytes >> s->cluster_bits;
    c.end = s->file_end;
    c.chunk_bytes = (size_t)QED_MIN((uint64_t)s->cluster_size, COPY_CHUNK);
    c.table = qedi_aligned_alloc(s->table_bytes);
    c.chunk = repair ? qedi_aligned_alloc(c.chunk_bytes) : NULL;
    old_l1 = repair ? qedi_aligned_alloc(s->table_bytes) : NULL;
    if (!c.table || (repair && (!c.chunk || !old_l1))) {
        ret = qedi_fail(err, ENOMEM, "out of memory for the check");
        goto out;
    }
    if (repair)
        memcpy(old_l1, s->l1, s->table_bytes);

    /* Copies may grow the file by its size and a GiB, no more: a few bad
     * entries must not make the repair fill the disk. */
    c.forbid_base = clusters_of(&c, s->file_end);
    c.append_end = 2 * s->file_end + APPEND_SLACK;
    if (repair && bitmap_resize(&c.forbid, clusters_of(&c, c.append_end -
                                                            s->file_end)) < 0) {
        ret = qedi_fail(err, ENOMEM, "out of memory for the check");
        goto out;
    }

    /* The check: what is wrong, as found. */
    first.targets_out = repair ? &targets : NULL;
    first.collect_forbid = repair != 0;
    ret = walk(&c, &first, s->file_end);
    if (ret < 0)
        goto out;
    r->corruptions = first.corruptions;
    r->leaks = first.leaks;
    r->check_errors = first.check_errors;
    fill_stats(&c, &first, r);
    if (!repair || first.check_errors)
        goto out;
    remaining = first.corruptions;
    if (first.clashes && (repair & ~QED_CHECK_REPAIR_LEAKS) &&
        bytes_of(&c, first.copy_clusters) > c.append_end - s->file_end) {
        ret = qedi_fail(err, EFBIG, "repairing %" PRIu64 " clusters referenced "
                       "more than once needs %" PRIu64 " bytes of copies, "
                       "more than the file's size and 1 GiB; refusing",
                       first.clashes, bytes_of(&c, first.copy_clusters));
        goto out;
    }
    /* While the repair runs the image is dirty: a crash in the middle
     * leaves at worst leaked clusters, which the next read-write open
     * then reclaims. */
    if ((((first.invalid || first.clashes) &&
          (repair & ~QED_CHECK_REPAIR_LEAKS)) ||
         (first.leaks && (repair & QED_CHECK_REPAIR_LEAKS))) &&
        !(s->header.features & QED_F_NEED_CHECK)) {
        ret = qedi_image_write_header(img, s->header.features | QED_F_NEED_CHECK);
        if (ret < 0) {
            ret = qedi_fail(err, -ret, "marking the image dirty for the "
                           "repair: %s", strerror(-ret));
            goto out;
        }
        was_clean = true;
    }

    /* Invalid entries go first, durably: an entry pointing past the end
     * of the file must not come to point at a copy appended later. */
    if (first.invalid && (repair & ~QED_CHECK_REPAIR_LEAKS)) {
        changed = true;
        clear.fix = FIX_CLEAR;
        clear.targets_in = &targets;
        ret = walk(&c, &clear, s->file_end);
        r->corruptions_fixed += clear.fixed;
        r->check_errors += clear.check_errors;
        if (ret == 0)
            ret = flush(&c);
        if (ret < 0 || clear.check_errors)
            goto settle;
    }
    if (first.clashes && (repair & ~QED_CHECK_REPAIR_LEAKS)) {
        changed = true;
        copy.fix = FIX_COPY;
        copy.targets_in = &targets;
        ret = walk(&c, &copy, s->file_end);
        r->corruptions_fixed += copy.fixed;
        r->check_errors += copy.check_errors;
        if (ret == 0)
            ret = flush(&c);
        if (ret < 0 || copy.check_errors)
            goto settle;
    }
    if ((repair & QED_CHECK_REPAIR_LEAKS) &&
        (first.leaks || changed || c.end != s->file_end)) {
        /* With invalid entries left, the file must not grow: one pointing
         * past its end would come to point at what moved there. */
        bool may_grow = first.invalid == 0 ||
                        (repair & ~QED_CHECK_REPAIR_LEAKS);
        changed = true;
        ret = repair_leaks(&c, may_grow, &r->leaks_fixed);
        if (ret < 0)
            goto settle;
    }
settle:
    if (changed) {
        int r2 = resync_state(&c, old_l1);
        if (ret == 0)
            ret = r2;
        forget_failed_allocations(s, ret == 0 &&
                                         (repair & QED_CHECK_REPAIR_LEAKS));
    }
    if (ret < 0)
        goto out;
    if (changed) {
        /* Statistics of the repaired image, and what is left. */
        ret = walk(&c, &again, s->file_end);
        if (ret < 0)
            goto out;
        r->check_errors += again.check_errors;
        fill_stats(&c, &again, r);
        remaining = again.corruptions;
    }
    /* Like QEMU: a repaired image without corruptions is marked clean; one
     * that was clean before is clean again. */
    if (mark_clean && (remaining == 0 || was_clean) &&
        r->check_errors == 0 && (s->header.features & QED_F_NEED_CHECK)) {
        ret = flush(&c);
        if (ret == 0)
            ret = qedi_image_write_header(img, s->header.features & ~QED_F_NEED_CHECK);
        if (ret == 0)
            s->unchecked_dirty = false;
        if (ret < 0)
            ret = qedi_fail(err, -ret, "clearing the dirty flag: %s",
                           strerror(-ret));
    }
out:
    if (ret == 0 && r->check_errors && c.read_ret < 0)
        qedi_error_copy(err, &c.read_err);
    walk_free(&first);
    walk_free(&clear);
    walk_free(&copy);
    walk_free(&again);
    bitmap_free(&targets);
    bitmap_free(&c.forbid);
    free(c.table);
    free(c.chunk);
    free(old_l1);
    return ret;
}

/* The driver's check of an idle image (ops/maintain.c checked the
 * arguments and zeroed the result). */
int qedi_qed_check(qed_image *img, unsigned repair,
                     struct qed_check_result *r, qed_error *err)
{
    if (repair)
        qedi_alloc_quiesce(img);
    return check_run(img, repair, r, true, err);
}

bool qedi_qed_busy(const qed_image *img)
{
    return qed_of(img)->slots != NULL;
}

int qedi_check_on_open(qed_image *img, qed_error *err)
{
    struct qed_state *s = qed_of(img);
    struct qed_check_result res;
    uint64_t file_size;
    int ret;

    if (!(s->header.features & QED_F_NEED_CHECK))
        return 0;
    ret = check_run(img, QED_CHECK_REPAIR_ALL, &res, false, err);
    if (ret == 0 && res.check_errors)
        ret = -(err && err->code ? err->code : EIO);
    if (ret < 0) {
        qedi_error_prefix(err, "checking the dirty image: ");
        return ret;
    }
    /* The file ends with the last referenced cluster: space a crashed
     * writer extended ahead (or allocated and never linked) goes, and a
     * referenced cluster sticking out past the end is made whole. */
    ret = img->file->ops->get_size(img->file, &file_size);
    if (ret == 0 && file_size != res.image_end_offset) {
        ret = img->file->ops->truncate(img->file, res.image_end_offset);
        s->file_end = res.image_end_offset;
        s->size_ensured = res.image_end_offset;
    }
    if (ret == 0)
        ret = qedi_io_sync_sync(img->file);
    if (ret == 0)
        ret = qedi_image_write_header(img, s->header.features & ~QED_F_NEED_CHECK);
    if (ret < 0)
        return qedi_fail(err, -ret, "repairing the dirty image: %s",
                        strerror(-ret));
    return 0;
}
