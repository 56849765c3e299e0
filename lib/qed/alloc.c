/* SPDX-License-Identifier: MIT */
/* Allocation: new clusters from the end of the file; claims on the clusters
 * being allocated, so none is allocated twice; the NEED_CHECK bit before the
 * first table change; and the table writes, grouped per L2 table, in
 * crash-safe order:
 *   data -> (flush, images with a backing file) -> L2
 *        -> (flush, backing, new tables) -> L1.
 * Data writes of different requests run in parallel; entry updates that
 * queue behind a table write in flight go out together in the next one, and
 * for images with a backing file one flush covers the data of the group. */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "qed-image.h"

static bool has_backing_file(const struct qed_state *s)
{
    return (s->header.features & QED_F_BACKING_FILE) != 0;
}

/* ---- cluster allocation ---------------------------------------------------- */

/* New space always comes from the end: it has never held anything, so it
 * reads as zeros until written, and a crash cannot expose old data. */
uint64_t qedi_alloc_clusters(qed_image *img, uint64_t count)
{
    struct qed_state *s = qed_of(img);
    uint64_t offset = s->file_end;
    s->file_end += count << s->cluster_bits;
    return offset;
}

/* ---- giving back the clusters of failed allocations ------------------------ *
 * A failed allocation's clusters go back when no table on disk can point at
 * them (no table write carrying them was issued, or only one into a new
 * table that L1 never pointed at) and they lie at the end of the file: the
 * end moves back and the file is truncated, so the space reads as zeros
 * when it is handed out again.  Clusters with later allocations after them
 * wait in s->abandoned until those went the same way (or the close).  What
 * cannot go back keeps the image marked dirty, durably, also with a backing
 * file: the check on the next read-write open reclaims it. */

bool qedi_alloc_leaks_outstanding(const struct qed_state *s)
{
    return s->leak_unknown || s->nabandoned > 0;
}

static void note_abandoned(struct qed_state *s, uint64_t start, uint64_t end)
{
    if (s->nabandoned == s->abandoned_cap) {
        size_t cap = s->abandoned_cap ? 2 * s->abandoned_cap : 8;
        struct qed_span *n = realloc(s->abandoned, cap * sizeof(*n));
        if (!n) {
            s->leak_unknown = true; /* the check will find them */
            return;
        }
        s->abandoned = n;
        s->abandoned_cap = cap;
    }
    s->abandoned[s->nabandoned++] = (struct qed_span){ start, end };
}

/* Takes the abandoned spans that end where the file ends, and those that
 * then end there, off the list; returns where the file can end. */
static uint64_t take_abandoned_tail(struct qed_state *s)
{
    uint64_t end = s->file_end;
    size_t i = 0;

    while (i < s->nabandoned) {
        if (s->abandoned[i].end != end) {
            i++;
            continue;
        }
        end = s->abandoned[i].start;
        s->abandoned[i] = s->abandoned[--s->nabandoned];
        i = 0;
    }
    return end;
}

void qedi_alloc_give_back(qed_image *img)
{
    struct qed_state *s = qed_of(img);
    uint64_t old_end = s->file_end, end;

    /* An extension in flight could land after the truncation, and the
     * file would be longer than size_ensured then says: wait for it. */
    if (s->extending || s->nabandoned == 0)
        return;
    end = take_abandoned_tail(s);
    if (end == old_end)
        return;
    /* What the failed writes left there must not show through a later
     * allocation's unwritten head or tail. */
    if (img->file->ops->truncate(img->file, end) < 0) {
        note_abandoned(s, end, old_end);
        return;
    }
    s->file_end = end;
    s->size_ensured = QED_MIN(s->size_ensured, end);
    /* New tables given back leave the index (it is sorted). */
    while (s->ntables > 0 && s->table_offsets[s->ntables - 1] >= end)
        s->ntables--;
}

/* The new table the request's clusters were to be linked in may be left
 * unused, and then not at the end of the file: mark the image dirty for it
 * now, before the failure is reported, rather than when the slot goes. */
static bool table_may_stay(const struct qed_request *req)
{
    const struct qed_state *s = qed_of(req->base.img);
    const struct table_slot *slot = req->slot;

    return slot && slot->table && slot->unlinked &&
           slot->table->offset + s->table_bytes != s->file_end;
}

static void abandoned_reported(struct qed_request *req)
{
    req->fail(req, -req->base.err.code);
}

bool qedi_alloc_abandon(struct qed_request *req, int ret)
{
    qed_image *img = req->base.img;
    struct qed_state *s = qed_of(img);
    int space = req->space;

    req->space = SPACE_NONE;
    if (space == SPACE_NONE)
        return false;
    if (space == SPACE_CLAIMED) {
        note_abandoned(s, req->alloc_host,
                       req->alloc_host + (req->alloc_count << s->cluster_bits));
        qedi_alloc_give_back(img);
    } else {
        s->leak_unknown = true;
    }
    if ((!qedi_alloc_leaks_outstanding(s) && !table_may_stay(req)) ||
        s->dirty_durable)
        return false;
    /* The failure is reported once the image is marked dirty on disk. */
    if (req->base.err.code == 0)
        qedi_fail(&req->base.err, -ret, "%s", strerror(-ret));
    qedi_alloc_make_dirty(req, abandoned_reported);
    return true;
}

/* ---- file extension ---------------------------------------------------------- */

#define EXTEND_STEP (4u * 1024 * 1024)
#define EXTEND_STEP_MAX (64u * 1024 * 1024)

struct extend_waiter {
    uint64_t end;
    uint64_t tail_len;
    io_callback *cb;
    void *opaque;
    uint8_t *zeros;          /* fallback: the tail written as zeros */
    struct extend_waiter *next;
};

static void start_extension(qed_image *img, uint64_t end);

static void extension_done(void *opaque, int ret)
{
    qed_image *img = opaque;
    struct qed_state *s = qed_of(img);
    struct extend_waiter *w, *keep = NULL, *done = NULL;
    uint64_t next_end = 0;

    s->extending = false;
    if (ret == -EOPNOTSUPP || ret == -ENOTSUP)
        s->no_fallocate = true;
    if (ret == 0)
        s->size_ensured = QED_MAX(s->size_ensured, s->extend_target);
    /* Answer the waiters this extension covered; keep the rest. */
    while ((w = s->extend_waiters) != NULL) {
        s->extend_waiters = w->next;
        if (ret < 0 || w->end <= s->size_ensured) {
            w->next = done;
            done = w;
        } else {
            w->next = keep;
            keep = w;
            next_end = QED_MAX(next_end, w->end);
        }
    }
    s->extend_waiters = keep;
    if (keep)
        start_extension(img, next_end);
    else
        qedi_alloc_give_back(img); /* what waited for the extension to end */
    while ((w = done) != NULL) {
        done = w->next;
        if (ret == -EOPNOTSUPP || ret == -ENOTSUP) {
            /* No fallocate: write this tail as zeros instead. */
            qedi_alloc_extend_file(img, w->end, w->tail_len, w->cb, w->opaque);
            free(w);
            continue;
        }
        w->cb(w->opaque, ret);
        free(w);
    }
}

/* fallocate never shrinks the file and never touches data, so it is safe
 * while data writes into the same region are in flight. */
static void start_extension(qed_image *img, uint64_t end)
{
    struct qed_state *s = qed_of(img);
    /* Steps grow with the file (1/16 of it, 4 to 64 MiB): few extensions
     * for big sequential writers, little left over for small images. */
    uint64_t step = QED_MIN(QED_MAX(s->file_end / 16, (uint64_t)EXTEND_STEP),
                            (uint64_t)EXTEND_STEP_MAX);
    uint64_t target = round_up_u64(end, step);

    s->extending = true;
    s->extend_target = QED_MAX(target, end);
    qedi_io_fallocate(img->file, 0, s->size_ensured,
                 s->extend_target - s->size_ensured, extension_done, img);
}

static void zeros_written(void *opaque, int ret)
{
    struct extend_waiter *w = opaque;
    free(w->zeros);
    w->cb(w->opaque, ret);
    free(w);
}

void qedi_alloc_extend_file(qed_image *img, uint64_t end, uint64_t tail_len,
                       io_callback *cb, void *opaque)
{
    struct qed_state *s = qed_of(img);
    struct extend_waiter *w = calloc(1, sizeof(*w));

    if (!w) {
        cb(opaque, -ENOMEM);
        return;
    }
    w->end = end;
    w->tail_len = tail_len;
    w->cb = cb;
    w->opaque = opaque;
    if (s->no_fallocate) {
        /* The tail belongs to a cluster only this request may write yet. */
        w->zeros = qedi_aligned_zalloc(tail_len);
        if (!w->zeros) {
            free(w);
            cb(opaque, -ENOMEM);
            return;
        }
        qedi_io_pwrite(img->file, w->zeros, tail_len, end - tail_len,
                  zeros_written, w);
        return;
    }
    w->next = s->extend_waiters;
    s->extend_waiters = w;
    if (!s->extending)
        start_extension(img, end);
}

/* ---- slots and claims -------------------------------------------------------- */

static struct table_slot *find_slot(struct qed_state *s, uint64_t l1_index)
{
    for (struct table_slot *t = s->slots; t; t = t->next)
        if (t->l1_index == l1_index)
            return t;
    return NULL;
}

/* A new table whose L1 entry never reached the disk goes back like data;
 * after a failed L1 write the entry may have, in part. */
static void abandon_table(qed_image *img, uint64_t offset, bool written)
{
    struct qed_state *s = qed_of(img);

    if (written) {
        s->leak_unknown = true;
        return;
    }
    note_abandoned(s, offset, offset + s->table_bytes);
    qedi_alloc_give_back(img);
}

static void slot_maybe_free(struct qed_state *s, struct table_slot *slot)
{
    struct table_slot **p;

    if (slot->ranges || slot->phase != SLOT_IDLE || slot->pending ||
        slot->inflight)
        return;
    for (p = &s->slots; *p && *p != slot; p = &(*p)->next)
        ;
    if (*p)
        *p = slot->next;
    if (slot->table) {
        uint64_t offset = slot->table->offset;
        /* A new table that never got linked into L1 is garbage. */
        if (slot->unlinked)
            qedi_l2cache_drop(s->l2cache, slot->table);
        qedi_l2cache_put(s->l2cache, slot->table);
        if (slot->unlinked)
            abandon_table(slot->img, offset, slot->on_disk);
    }
    free(slot);
}

void qedi_alloc_free_slots(struct qed_state *s)
{
    while (s->slots) {
        struct table_slot *slot = s->slots;
        s->slots = slot->next;
        if (slot->table)
            qedi_l2cache_put(s->l2cache, slot->table);
        free(slot);
    }
}

static bool range_overlaps(const struct qed_request *a, uint64_t first,
                           uint64_t count)
{
    return a->alloc_first < first + count &&
           first < a->alloc_first + a->alloc_count;
}

static bool ranges_overlap(const struct qed_request *a, const struct qed_request *b)
{
    return range_overlaps(a, b->alloc_first, b->alloc_count);
}

static void wait_for(struct qed_request *req, struct qed_request *claimer,
                     qed_step *retry)
{
    req->resume = retry;
    req->next = claimer->range_waiters;
    claimer->range_waiters = req;
}

bool qedi_alloc_begin(struct qed_request *req, qed_step *retry)
{
    struct qed_state *s = qed_of(req->base.img);
    struct table_slot *slot = find_slot(s, req->l1_index);

    if (!slot) {
        slot = calloc(1, sizeof(*slot));
        if (!slot) {
            qedi_fail(&req->base.err, ENOMEM, "out of memory");
            req->fail(req, -ENOMEM);
            return false;
        }
        slot->img = req->base.img;
        slot->l1_index = req->l1_index;
        slot->next = s->slots;
        s->slots = slot;
    }
    for (struct qed_request *other = slot->ranges; other; other = other->range_next) {
        /* A request claims one range at a time. */
        assert(other != req);
        if (ranges_overlap(req, other)) {
            /* Wait for that allocation, then look again from scratch. */
            wait_for(req, other, retry);
            return false;
        }
    }
    req->slot = slot;
    req->range_next = slot->ranges;
    slot->ranges = req;
    return true;
}

void qedi_alloc_end(struct qed_request *req)
{
    struct table_slot *slot = req->slot;
    struct qed_request *waiters = req->range_waiters;

    if (!slot)
        return;
    for (struct qed_request **p = &slot->ranges; *p; p = &(*p)->range_next) {
        if (*p == req) {
            *p = req->range_next;
            break;
        }
    }
    req->slot = NULL;
    req->range_next = NULL;
    req->range_waiters = NULL;
    while (waiters) {
        struct qed_request *w = waiters;
        waiters = w->next;
        w->next = NULL;
        qed_request_defer(w, w->resume);
    }
    slot_maybe_free(qed_of(req->base.img), slot);
}

/* A group's entries enter the in-memory table when its write starts, so a
 * lookup can find a cluster mapped before that mapping is on disk.  A write
 * into it that completed then, and a flush after it, would promise data a
 * crash can still unmap: such writes wait until the allocation is done. */
bool qedi_alloc_wait_unclaimed(struct qed_request *req, uint64_t l1_index,
                          uint64_t first, uint64_t count,
                          qed_step *retry)
{
    struct table_slot *slot = find_slot(qed_of(req->base.img), l1_index);

    if (!slot)
        return true;
    for (struct qed_request *other = slot->ranges; other;
         other = other->range_next) {
        if (range_overlaps(other, first, count)) {
            wait_for(req, other, retry);
            return false;
        }
    }
    return true;
}

int qedi_alloc_table(struct qed_request *req)
{
    struct qed_state *s = qed_of(req->base.img);
    struct table_slot *slot = req->slot;
    uint64_t offset;

    if (slot->table)
        return 0;
    if (req->l2) {
        slot->table = qedi_l2cache_find(s->l2cache, req->l2->offset);
        if (slot->table == req->l2)
            return 0;
        if (slot->table)
            qedi_l2cache_put(s->l2cache, slot->table);
        slot->table = NULL;
        return qedi_fail(&req->base.err, EIO, "L2 table at 0x%" PRIx64
                        " left the cache while in use", req->l2->offset);
    }
    offset = qedi_alloc_clusters(req->base.img, s->table_bytes >> s->cluster_bits);
    slot->table = qedi_l2cache_insert(s->l2cache, offset, true);
    if (!slot->table) {
        note_abandoned(s, offset, offset + s->table_bytes);
        qedi_alloc_give_back(req->base.img);
        return qedi_fail(&req->base.err, ENOMEM, "out of memory for an L2 table");
    }
    /* From here the slot gives the table back when it goes unused. */
    slot->unlinked = true;
    slot->on_disk = false;
    if (qedi_table_index_add(s, offset) < 0)
        return qedi_fail(&req->base.err, ENOMEM, "out of memory for an L2 table");
    return 0;
}

/* ---- serialised block writers (header, L1) ---------------------------------- */

static void writer_enqueue(struct block_writer *w, struct qed_request *req,
                           qed_step *next)
{
    req->resume = next;
    req->next = NULL;
    if (w->pending_tail)
        w->pending_tail->next = req;
    else
        w->pending = req;
    w->pending_tail = req;
}

static void writer_finish(struct block_writer *w, int ret,
                          void (*undo)(struct qed_request *))
{
    struct qed_request *done = w->inflight;
    w->inflight = NULL;
    w->busy = false;
    while (done) {
        struct qed_request *req = done;
        done = req->next;
        req->next = NULL;
        if (ret < 0) {
            if (undo)
                undo(req);
            /* A request that failed before keeps its own error. */
            if (req->base.err.code == 0)
                qedi_fail(&req->base.err, -ret, "updating image metadata: %s",
                         strerror(-ret));
            req->fail(req, -req->base.err.code);
        } else {
            req->resume(req);
        }
    }
}

/* ---- header: NEED_CHECK ------------------------------------------------------- */

struct header_write {
    qed_image *img;
    void (*done)(void *opaque, int ret);
    void *opaque;
};

static void header_synced(void *opaque, int ret);

static void header_written(void *opaque, int ret)
{
    struct header_write *hw = opaque;
    if (ret < 0) {
        header_synced(hw, ret);
        return;
    }
    qedi_io_sync(hw->img->file, header_synced, hw);
}

static void header_synced(void *opaque, int ret)
{
    struct header_write *hw = opaque;
    void (*done)(void *, int) = hw->done;
    void *done_opaque = hw->opaque;
    free(hw);
    done(done_opaque, ret);
}

/* Writes the header block with the given features, then flushes. */
static void write_header_async(qed_image *img, uint64_t features,
                               void (*done)(void *opaque, int ret),
                               void *opaque)
{
    struct qed_state *s = qed_of(img);
    struct header_write *hw = calloc(1, sizeof(*hw));

    if (!hw) {
        done(opaque, -ENOMEM);
        return;
    }
    hw->img = img;
    hw->done = done;
    hw->opaque = opaque;
    s->header.features = features;
    qedi_header_encode(&s->header, s->header_block);
    qedi_io_pwrite(img->file, s->header_block, QED_HEADER_BLOCK_SIZE, 0,
              header_written, hw);
}

static void wake_dirty_waiters(struct qed_state *s);

static void dirty_done(void *opaque, int ret)
{
    qed_image *img = opaque;
    struct qed_state *s = qed_of(img);
    if (ret == 0)
        s->dirty_durable = true;
    else
        s->header.features &= ~QED_F_NEED_CHECK;
    writer_finish(&s->header_writer, ret, NULL);
    /* Requests that queued meanwhile find the bit durable (or retry). */
    wake_dirty_waiters(s);
}

/* ---- marking the image clean again ---------------------------------------- *
 * A dirty image is marked clean once allocations have been idle for a while:
 * flush, then clear NEED_CHECK (and flush that).  Allocations that arrive
 * meanwhile wait and mark it dirty again. */

#define IDLE_CLEAN_MS 2000u

static void idle_check(void *opaque);

static void wake_dirty_waiters(struct qed_state *s)
{
    struct qed_request *waiting = s->header_writer.pending;

    s->header_writer.pending = s->header_writer.pending_tail = NULL;
    while (waiting) {
        struct qed_request *req = waiting;
        waiting = req->next;
        req->next = NULL;
        qedi_alloc_make_dirty(req, req->resume);
    }
}

static void clean_done(void *opaque, int ret)
{
    qed_image *img = opaque;
    struct qed_state *s = qed_of(img);

    s->header_writer.busy = false;
    /* On failure the bit's state on disk is unknown: keep treating the
     * image as dirty so the next allocation writes it again. */
    if (ret < 0)
        s->header.features |= QED_F_NEED_CHECK;
    wake_dirty_waiters(s);
}

static void clean_synced(void *opaque, int ret)
{
    qed_image *img = opaque;

    if (ret < 0) {
        clean_done(img, ret);
        return;
    }
    write_header_async(img, qed_of(img)->header.features & ~QED_F_NEED_CHECK,
                       clean_done, img);
}

static void arm_idle_timer(qed_image *img, uint64_t delay_ms)
{
    qed_of(img)->idle_timer = qed_loop_add_timer(img->loop, delay_ms, idle_check,
                                              img);
}

static void idle_check(void *opaque)
{
    qed_image *img = opaque;
    struct qed_state *s = qed_of(img);
    uint64_t idle = qedi_loop_now_ms() - s->last_table_update_ms;

    s->idle_timer = 0;
    if (!(s->header.features & QED_F_NEED_CHECK) || s->unchecked_dirty ||
        qedi_alloc_leaks_outstanding(s))
        return;
    if (s->slots || s->header_writer.busy || idle < IDLE_CLEAN_MS) {
        arm_idle_timer(img, idle < IDLE_CLEAN_MS ? IDLE_CLEAN_MS - idle
                                                 : IDLE_CLEAN_MS);
        return;
    }
    s->header_writer.busy = true;
    s->dirty_durable = false;
    qedi_io_sync(img->file, clean_synced, img);
}

static void note_table_update(qed_image *img)
{
    struct qed_state *s = qed_of(img);

    s->last_table_update_ms = qedi_loop_now_ms();
    if (!s->idle_timer && (s->header.features & QED_F_NEED_CHECK))
        arm_idle_timer(img, IDLE_CLEAN_MS);
}

void qedi_alloc_quiesce(qed_image *img)
{
    struct qed_state *s = qed_of(img);

    if (s->idle_timer) {
        qed_loop_cancel_timer(img->loop, s->idle_timer);
        s->idle_timer = 0;
    }
    while (s->header_writer.busy)
        if (qed_loop_run(img->loop, -1) < 0)
            break;
}

void qedi_alloc_make_dirty(struct qed_request *req, qed_step *next)
{
    qed_image *img = req->base.img;
    struct qed_state *s = qed_of(img);
    struct block_writer *w = &s->header_writer;

    /* With a backing file the order of writes keeps the image consistent;
     * only clusters a failed allocation leaked make it dirty. */
    if ((has_backing_file(s) && !qedi_alloc_leaks_outstanding(s)) ||
        s->dirty_durable) {
        next(req);
        return;
    }
    writer_enqueue(w, req, next);
    if (w->busy)
        return;
    w->busy = true;
    w->inflight = w->pending;
    w->pending = w->pending_tail = NULL;
    write_header_async(img, s->header.features | QED_F_NEED_CHECK, dirty_done,
                       img);
}

/* Synchronous header rewrite for open and close paths. */
struct header_sync {
    bool done;
    int ret;
};

static void header_sync_done(void *opaque, int ret)
{
    struct header_sync *hs = opaque;
    hs->done = true;
    hs->ret = ret;
}

int qedi_image_write_header(qed_image *img, uint64_t features)
{
    struct header_sync hs = { 0 };

    write_header_async(img, features, header_sync_done, &hs);
    while (!hs.done) {
        int r = qed_loop_run(img->loop, -1);
        if (r < 0)
            return r;
    }
    qed_of(img)->dirty_durable = hs.ret == 0 && (features & QED_F_NEED_CHECK);
    return hs.ret;
}

/* ---- L1 updates -------------------------------------------------------------- */

const char *qedi_slot_phase_name(enum slot_phase phase)
{
    static const char *const names[] = {
        [SLOT_IDLE] = "idle",
        [SLOT_APPLY] = "apply",
        [SLOT_FLUSH_DATA] = "flush-data",
        [SLOT_WRITE_TABLE] = "write-table",
        [SLOT_FLUSH_TABLE] = "flush-table",
        [SLOT_LINK] = "link",
    };
    return (unsigned)phase < QED_ARRAY_SIZE(names) ? names[phase] : "?";
}

static void slot_enter(struct table_slot *slot, enum slot_phase phase)
{
    slot->phase = phase;
    QEDI_TRACE("qed table %" PRIu64 " group write: %s", slot->l1_index,
               qedi_slot_phase_name(phase));
}

static void slot_group_done(struct qed_state *s, struct table_slot *slot,
                            int ret, const char *what);
static void l1_start_write(qed_image *img);

static void l1_written(void *opaque, int ret)
{
    qed_image *img = opaque;
    struct qed_state *s = qed_of(img);
    struct table_slot *done = s->l1_inflight;

    s->l1_inflight = NULL;
    s->l1_busy = false;
    while (done) {
        struct table_slot *slot = done;
        done = slot->l1_next;
        slot->l1_next = NULL;
        if (ret < 0)
            qedi_table_set_entry(s->l1, slot->l1_index, 0);
        else
            slot->unlinked = false;
        slot_group_done(s, slot, ret, "writing the L1 table");
    }
    if (s->l1_pending)
        l1_start_write(img);
}

/* Writes the 4 KiB blocks of the L1 table that hold every pending entry. */
static void l1_start_write(qed_image *img)
{
    struct qed_state *s = qed_of(img);
    uint64_t lo = UINT64_MAX, hi = 0;

    s->l1_busy = true;
    s->l1_inflight = s->l1_pending;
    s->l1_pending = NULL;
    for (struct table_slot *t = s->l1_inflight; t; t = t->l1_next) {
        lo = QED_MIN(lo, t->l1_index * 8u);
        hi = QED_MAX(hi, t->l1_index * 8u + 8u);
    }
    lo = round_down_u64(lo, QED_TABLE_BLOCK_SIZE);
    hi = QED_MIN(round_up_u64(hi, QED_TABLE_BLOCK_SIZE), s->table_bytes);
    qedi_io_pwrite(img->file, s->l1 + lo, hi - lo, s->header.l1_table_offset + lo,
              l1_written, img);
}

static void l1_link(qed_image *img, struct table_slot *slot)
{
    struct qed_state *s = qed_of(img);

    slot_enter(slot, SLOT_LINK);
    qedi_table_set_entry(s->l1, slot->l1_index, slot->table->offset);
    slot->l1_next = s->l1_pending;
    s->l1_pending = slot;
    if (!s->l1_busy)
        l1_start_write(img);
}

/* ---- L2 group commit ------------------------------------------------------------ */

static void restore_entries(struct qed_request *req, struct table *t)
{
    for (uint64_t i = 0; i < req->alloc_count; i++)
        qedi_table_set_entry(t->bytes, req->alloc_first + i, req->saved_entries[i]);
}

static void slot_start(qed_image *img, struct table_slot *slot);

/* After a failed group: can the table on disk point at its clusters?  Not
 * when its write was never issued, nor from a new table that L1 never
 * pointed at; a torn write of a linked table may have landed in part. */
static bool table_may_point(const struct table_slot *slot)
{
    return slot->phase >= SLOT_WRITE_TABLE &&
           !(slot->unlinked && !slot->on_disk);
}

static void slot_group_done(struct qed_state *s, struct table_slot *slot,
                            int ret, const char *what)
{
    struct qed_request *done = slot->inflight;

    assert(slot->phase != SLOT_IDLE);
    slot->inflight = NULL;
    /* Still busy while the group completes, so nothing frees the slot. */
    while (done) {
        struct qed_request *req = done;
        done = req->next;
        req->next = NULL;
        if (ret < 0) {
            restore_entries(req, slot->table);
            if (req->space == SPACE_CLAIMED && table_may_point(slot))
                req->space = SPACE_REFERENCED;
            qedi_fail(&req->base.err, -ret, "%s: %s", what, strerror(-ret));
            req->fail(req, ret);
        } else {
            req->space = SPACE_NONE;
            req->resume(req);
        }
    }
    if (ret == 0)
        note_table_update(slot->img);
    slot_enter(slot, SLOT_IDLE);
    if (slot->pending)
        slot_start(slot->img, slot);
    else
        slot_maybe_free(s, slot);
}

struct slot_io {
    qed_image *img;
    struct table_slot *slot;
    int pending;   /* block runs of a table write in flight */
    int ret;
};

static void slot_synced_for_l1(void *opaque, int ret)
{
    struct slot_io *io = opaque;
    qed_image *img = io->img;
    struct table_slot *slot = io->slot;
    free(io);
    if (ret < 0) {
        slot_group_done(qed_of(img), slot, ret, "flush before linking a table");
        return;
    }
    l1_link(img, slot);
}

static void slot_table_written(void *opaque, int ret)
{
    struct slot_io *io = opaque;
    qed_image *img = io->img;
    struct qed_state *s = qed_of(img);
    struct table_slot *slot = io->slot;

    if (ret < 0 || !slot->unlinked) {
        free(io);
        slot_group_done(s, slot, ret, "writing an L2 table");
        return;
    }
    slot->on_disk = true;
    /* A new table must be on disk before L1 points at it. */
    if (has_backing_file(s)) {
        slot_enter(slot, SLOT_FLUSH_TABLE);
        qedi_io_sync(img->file, slot_synced_for_l1, io);
        return;
    }
    free(io);
    l1_link(img, slot);
}

/* One of the block runs of a table write finished. */
static void table_run_written(void *opaque, int ret)
{
    struct slot_io *io = opaque;

    if (ret < 0 && io->ret == 0)
        io->ret = ret;
    if (--io->pending == 0)
        slot_table_written(io, io->ret);
}

/* Writes the 4 KiB blocks of the table that the group changed, adjacent
 * blocks together: random updates touch a few blocks of a large table. */
static void write_dirty_blocks(struct slot_io *io)
{
    struct qed_state *s = qed_of(io->img);
    struct table_slot *slot = io->slot;
    uint64_t nblocks = s->table_bytes / QED_TABLE_BLOCK_SIZE;
    uint8_t *dirty = calloc(nblocks / 8 + 1, 1);

    if (!dirty) {
        slot_table_written(io, -ENOMEM);
        return;
    }
    for (struct qed_request *r = slot->inflight; r; r = r->next) {
        uint64_t first = r->alloc_first * QED_ENTRY_SIZE / QED_TABLE_BLOCK_SIZE;
        uint64_t last = ((r->alloc_first + r->alloc_count) * QED_ENTRY_SIZE - 1) /
                        QED_TABLE_BLOCK_SIZE;
        for (uint64_t b = first; b <= last; b++)
            dirty[b / 8] |= (uint8_t)(1u << (b % 8));
    }
    io->pending = 1; /* held until every run is submitted */
    for (uint64_t b = 0; b < nblocks;) {
        uint64_t end = b;
        if (!(dirty[b / 8] & (1u << (b % 8)))) {
            b++;
            continue;
        }
        while (end < nblocks && (dirty[end / 8] & (1u << (end % 8))))
            end++;
        io->pending++;
        qedi_io_pwrite(io->img->file, slot->table->bytes + b * QED_TABLE_BLOCK_SIZE,
                  (end - b) * QED_TABLE_BLOCK_SIZE,
                  slot->table->offset + b * QED_TABLE_BLOCK_SIZE,
                  table_run_written, io);
        b = end;
    }
    free(dirty);
    table_run_written(io, 0);
}

static void slot_write_table(void *opaque, int ret)
{
    struct slot_io *io = opaque;
    struct qed_state *s = qed_of(io->img);
    struct table_slot *slot = io->slot;

    if (ret < 0) {
        free(io);
        slot_group_done(s, slot, ret, "flush before a table update");
        return;
    }
    io->ret = 0;
    slot_enter(slot, SLOT_WRITE_TABLE);
    if (slot->unlinked && !slot->on_disk) {
        qedi_io_pwrite(io->img->file, slot->table->bytes, s->table_bytes,
                  slot->table->offset, slot_table_written, io);
        return;
    }
    write_dirty_blocks(io);
}

static void apply_entries(struct qed_request *req, struct table *t)
{
    const struct qed_state *s = qed_of(req->base.img);

    for (uint64_t i = 0; i < req->alloc_count; i++) {
        uint64_t value = req->new_entry_value == QED_ENTRY_ZERO
                             ? 1
                             : req->new_entry_value + (i << s->cluster_bits);
        req->saved_entries[i] = qedi_table_entry(t->bytes, req->alloc_first + i);
        qedi_table_set_entry(t->bytes, req->alloc_first + i, value);
    }
}

static void slot_start(qed_image *img, struct table_slot *slot)
{
    struct slot_io *io = calloc(1, sizeof(*io));

    /* One group at a time per table: its entries are applied and written
     * from the one buffer. */
    assert(slot->phase == SLOT_IDLE && slot->pending);
    /* Not idle from here until the group completed: requests resumed by
     * its completion queue for the next group instead of starting one. */
    slot_enter(slot, SLOT_APPLY);
    slot->inflight = slot->pending;
    slot->pending = slot->pending_tail = NULL;
    for (struct qed_request *r = slot->inflight; r; r = r->next)
        apply_entries(r, slot->table);
    if (!io) {
        slot_group_done(qed_of(img), slot, -ENOMEM, "table update");
        return;
    }
    io->img = img;
    io->slot = slot;
    /* Images with a backing file are not marked dirty for allocations
     * (only for the leaks of failed ones): the data of the whole group
     * must be on disk before the table points at it. */
    if (has_backing_file(qed_of(img))) {
        slot_enter(slot, SLOT_FLUSH_DATA);
        qedi_io_sync(img->file, slot_write_table, io);
    }
    else
        slot_write_table(io, 0);
}

/* Queues the request's entries for its table's next group write.  They
 * enter the in-memory table only when that group starts (slot_start): the
 * table is written from that buffer, so entries added while an earlier
 * group is being flushed or written would reach the disk before their data
 * is flushed. */
void qedi_alloc_commit(struct qed_request *req, qed_step *next)
{
    struct table_slot *slot = req->slot;

    req->saved_entries = malloc(sizeof(uint64_t) * req->alloc_count);
    if (!req->saved_entries) {
        qedi_fail(&req->base.err, ENOMEM, "out of memory");
        req->fail(req, -ENOMEM);
        return;
    }
    req->resume = next;
    req->next = NULL;
    if (slot->pending_tail)
        slot->pending_tail->next = req;
    else
        slot->pending = req;
    slot->pending_tail = req;
    if (slot->phase == SLOT_IDLE)
        slot_start(req->base.img, slot);
}
