/* Allocation: new clusters from the end of the file, one allocating updater
 * per L2 table at a time, the NEED_CHECK bit before the first table change,
 * and the table writes themselves in crash-safe order:
 *   data -> (flush, backing images) -> L2 -> (flush, backing images) -> L1.
 * Updates of the L1 table that arrive while one is being written go out
 * together in the next write. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "image.h"

/* ---- per-L2 locks ---------------------------------------------------------- */

static struct l2_lock *find_lock(struct qed_state *s, uint64_t l1_index)
{
    for (struct l2_lock *l = s->locks; l; l = l->next)
        if (l->l1_index == l1_index)
            return l;
    return NULL;
}

void alloc_lock(struct request *req, void (*next)(struct request *))
{
    struct qed_state *s = req->img->qed;
    uint64_t l1_index = lookup_l1_index(req->img, req->pos);
    struct l2_lock *lock = find_lock(s, l1_index);

    req->l1_index = l1_index;
    if (!lock) {
        lock = calloc(1, sizeof(*lock));
        if (!lock) {
            qed_fail(&req->err, ENOMEM, "out of memory");
            request_complete(req, -ENOMEM);
            return;
        }
        lock->l1_index = l1_index;
        lock->next = s->locks;
        s->locks = lock;
        req->holds_lock = true;
        next(req);
        return;
    }
    req->resume = next;
    req->next = NULL;
    if (lock->waiters_tail)
        lock->waiters_tail->next = req;
    else
        lock->waiters_head = req;
    lock->waiters_tail = req;
}

void alloc_unlock(struct request *req)
{
    struct qed_state *s = req->img->qed;
    struct l2_lock **p, *lock;
    struct request *heir;

    if (!req->holds_lock)
        return;
    req->holds_lock = false;
    for (p = &s->locks; *p && (*p)->l1_index != req->l1_index; p = &(*p)->next)
        ;
    lock = *p;
    if (!lock)
        return;
    heir = lock->waiters_head;
    if (!heir) {
        *p = lock->next;
        free(lock);
        return;
    }
    lock->waiters_head = heir->next;
    if (!lock->waiters_head)
        lock->waiters_tail = NULL;
    heir->next = NULL;
    heir->holds_lock = true;
    request_resume_later(heir, heir->resume);
}

/* ---- cluster allocation ---------------------------------------------------- */

/* New space always comes from the end: it has never held anything, so it
 * reads as zeros until written, and a crash cannot expose old data. */
uint64_t alloc_clusters(qed_image *img, uint64_t count)
{
    struct qed_state *s = img->qed;
    uint64_t offset = s->file_end;
    s->file_end += count << s->cluster_bits;
    return offset;
}

/* ---- serialised block writers (header, L1) ---------------------------------- */

static void writer_enqueue(struct block_writer *w, struct request *req,
                           void (*next)(struct request *))
{
    req->resume = next;
    req->next = w->pending;
    w->pending = req;
}

static void writer_finish(struct block_writer *w, int ret,
                          void (*undo)(struct request *))
{
    struct request *done = w->inflight;
    w->inflight = NULL;
    w->busy = false;
    while (done) {
        struct request *req = done;
        done = req->next;
        req->next = NULL;
        if (ret < 0) {
            if (undo)
                undo(req);
            qed_fail(&req->err, -ret, "updating image metadata: %s",
                     strerror(-ret));
            request_complete(req, ret);
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
    io_sync(hw->img->file, header_synced, hw);
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
    struct qed_state *s = img->qed;
    struct header_write *hw = calloc(1, sizeof(*hw));

    if (!hw) {
        done(opaque, -ENOMEM);
        return;
    }
    hw->img = img;
    hw->done = done;
    hw->opaque = opaque;
    s->header.features = features;
    header_encode(&s->header, s->header_block);
    io_pwrite(img->file, s->header_block, 4096, 0, header_written, hw);
}

static void dirty_done(void *opaque, int ret)
{
    qed_image *img = opaque;
    struct qed_state *s = img->qed;
    if (ret == 0)
        s->dirty_durable = true;
    else
        s->header.features &= ~QED_F_NEED_CHECK;
    writer_finish(&s->header_writer, ret, NULL);
    /* Requests that queued meanwhile find the bit durable (or retry). */
    if (s->header_writer.pending) {
        struct request *waiting = s->header_writer.pending;
        s->header_writer.pending = NULL;
        while (waiting) {
            struct request *req = waiting;
            waiting = req->next;
            req->next = NULL;
            alloc_make_dirty(req, req->resume);
        }
    }
}

void alloc_make_dirty(struct request *req, void (*next)(struct request *))
{
    qed_image *img = req->img;
    struct qed_state *s = img->qed;
    struct block_writer *w = &s->header_writer;

    if ((s->header.features & QED_F_BACKING_FILE) || s->dirty_durable) {
        next(req);
        return;
    }
    writer_enqueue(w, req, next);
    if (w->busy)
        return;
    w->busy = true;
    w->inflight = w->pending;
    w->pending = NULL;
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

int image_write_header(qed_image *img, uint64_t features)
{
    struct header_sync hs = { 0 };

    write_header_async(img, features, header_sync_done, &hs);
    while (!hs.done) {
        int r = qed_loop_run(img->loop, -1);
        if (r < 0)
            return r;
    }
    img->qed->dirty_durable = hs.ret == 0 && (features & QED_F_NEED_CHECK);
    return hs.ret;
}

/* ---- L1 updates ---------------------------------------------------------------- */

static void l1_start_write(qed_image *img);

static void l1_undo(struct request *req)
{
    struct qed_state *s = req->img->qed;
    table_set_entry(s->l1, req->l1_index, 0);
}

static void l1_written(void *opaque, int ret)
{
    qed_image *img = opaque;
    struct qed_state *s = img->qed;

    if (ret == 0)
        for (struct request *r = s->l1_writer.inflight; r; r = r->next)
            r->new_table = false; /* linked: the cache may keep it */
    writer_finish(&s->l1_writer, ret, l1_undo);
    if (s->l1_writer.pending)
        l1_start_write(img);
}

/* Writes the 4 KiB blocks of the L1 table that hold every pending entry. */
static void l1_start_write(qed_image *img)
{
    struct qed_state *s = img->qed;
    struct block_writer *w = &s->l1_writer;
    uint64_t lo = UINT64_MAX, hi = 0;

    w->busy = true;
    w->inflight = w->pending;
    w->pending = NULL;
    for (struct request *r = w->inflight; r; r = r->next) {
        lo = QED_MIN(lo, r->l1_index * 8u);
        hi = QED_MAX(hi, r->l1_index * 8u + 8u);
    }
    lo = round_down_u64(lo, 4096);
    hi = QED_MIN(round_up_u64(hi, 4096), s->table_bytes);
    io_pwrite(img->file, s->l1 + lo, hi - lo, s->header.l1_table_offset + lo,
              l1_written, img);
}

static void l1_update(struct request *req, void (*next)(struct request *))
{
    struct qed_state *s = req->img->qed;

    table_set_entry(s->l1, req->l1_index, req->l2->offset);
    writer_enqueue(&s->l1_writer, req, next);
    if (!s->l1_writer.busy)
        l1_start_write(req->img);
}

/* ---- L2 updates ------------------------------------------------------------------ */

static void restore_entries(struct request *req)
{
    for (uint64_t i = 0; i < req->alloc_count; i++)
        table_set_entry(req->l2->bytes, req->alloc_first + i,
                        req->saved_entries[i]);
}

static void l2_linked(struct request *req)
{
    alloc_unlock(req);
    req->saved_next(req);
}

static void l2_synced_before_l1(void *opaque, int ret)
{
    struct request *req = opaque;
    if (ret < 0) {
        qed_fail(&req->err, -ret, "flush before L1 update: %s", strerror(-ret));
        request_complete(req, ret);
        return;
    }
    l1_update(req, l2_linked);
}

static void l2_written(void *opaque, int ret)
{
    struct request *req = opaque;

    if (ret < 0) {
        restore_entries(req);
        qed_fail(&req->err, -ret, "writing L2 table at offset 0x%" PRIx64
                 ": %s", req->l2->offset, strerror(-ret));
        request_complete(req, ret);
        return;
    }
    if (!req->new_table) {
        l2_linked(req);
        return;
    }
    /* A new table must be on disk before L1 points at it. */
    if (req->img->qed->header.features & QED_F_BACKING_FILE)
        io_sync(req->img->file, l2_synced_before_l1, req);
    else
        l1_update(req, l2_linked);
}

void alloc_update_l2(struct request *req, void (*next)(struct request *))
{
    struct qed_state *s = req->img->qed;
    uint64_t lo, hi;

    req->saved_entries = malloc(sizeof(uint64_t) * req->alloc_count);
    if (!req->saved_entries) {
        qed_fail(&req->err, ENOMEM, "out of memory");
        request_complete(req, -ENOMEM);
        return;
    }
    for (uint64_t i = 0; i < req->alloc_count; i++) {
        uint64_t value = req->new_entry_value == 1
                             ? 1
                             : req->new_entry_value + (i << s->cluster_bits);
        req->saved_entries[i] = table_entry(req->l2->bytes, req->alloc_first + i);
        table_set_entry(req->l2->bytes, req->alloc_first + i, value);
    }
    req->saved_next = next;
    if (req->new_table) {
        lo = 0;
        hi = s->table_bytes;
    } else {
        lo = round_down_u64(req->alloc_first * 8u, 4096);
        hi = QED_MIN(round_up_u64((req->alloc_first + req->alloc_count) * 8u,
                                  4096),
                     s->table_bytes);
    }
    io_pwrite(req->img->file, req->l2->bytes + lo, hi - lo, req->l2->offset + lo,
              l2_written, req);
}
