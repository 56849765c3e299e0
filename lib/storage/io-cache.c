/* SPDX-License-Identifier: MIT */
/* A read cache with read-ahead, stacked over read-only remote storage
 * (http, https, s3: io-http.c), where every read is a round trip and the
 * reads that matter most are small: a guest's 4 KiB reads through a local
 * overlay, the engine's table reads.
 *
 * The object is cut in blocks of CACHE_BLOCK bytes.  A read copies the
 * blocks it covers that are cached, waits for those on their way, and
 * fetches each run of missing ones with one lower read.  A run that
 * follows blocks already held (a sequential reader) is fetched with a
 * read-ahead window after it, which doubles from 256 KiB up to 2 MiB while
 * the reader keeps going; the window's middle block carries a mark, and a
 * read that reaches it fetches the next window before it is needed.
 * Fetches queued in one loop iteration whose runs touch become one lower
 * read (coalescing).  They wait in two queues, the readers' first and
 * read-ahead after, and at most CACHE_MAX_FETCHES are at the lower storage
 * at once: a table read waits behind a few transfers at most, never behind
 * the read-ahead.
 *
 * Reads of CACHE_DIRECT_MIN bytes or more that find none of their blocks
 * held go to the lower storage directly, into the caller's buffers: bulk
 * readers (convert) keep many such reads in flight themselves and would
 * only pay a copy here.
 *
 * The cache holds at most its capacity (blocks on their way count too);
 * the least recently used block goes first.  Once the lower storage says
 * the object changed (-ESTALE), every later read fails with it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "storage.h"

#define CACHE_BLOCK_SHIFT 16u
#define CACHE_BLOCK (1u << CACHE_BLOCK_SHIFT)
#define CACHE_MIN_BYTES (1u << 20)
#define CACHE_DIRECT_MIN (1u << 20)
#define READAHEAD_FIRST_BLOCKS 4u  /* 256 KiB */
#define READAHEAD_MAX_BLOCKS 32u   /* 2 MiB */
#define CACHE_MAX_FETCH_BLOCKS 64u /* 4 MiB in one lower read */
#define CACHE_MAX_FETCHES 4u

struct cache_fetch;

struct cache_block {
    uint64_t index;
    char *data;
    struct cache_block *hash_next;
    struct cache_block *older, *newer; /* the LRU list (held blocks) */
    struct cache_fetch *fetch;         /* on its way: what brings it */
    bool mark;        /* the middle of a read-ahead window: a read that
                         reaches it fetches the next window */
};

struct cache_read {
    struct cache_storage *cs;
    io_callback *cb;
    void *opaque;
    uint64_t offset, length;
    unsigned pending; /* fetches it still waits for */
    int ret;
    int iovcnt;
    struct iovec iov[];
};

struct cache_wait {
    struct cache_read *read;
    struct cache_wait *next;
};

struct fetch_queue;

struct cache_fetch {
    struct cache_storage *cs;
    uint64_t first;      /* block index */
    unsigned count;
    struct cache_wait *waiters;
    struct fetch_queue *queue; /* where it waits; NULL once sent */
    struct cache_fetch *next;  /* in its queue, or among those sent */
    struct cache_fetch *prev;  /* among those sent */
    struct cache_block *blocks[CACHE_MAX_FETCH_BLOCKS];
};

struct fetch_queue {
    struct cache_fetch *head, *tail;
};

struct cache_storage {
    struct storage_layer layer;
    uint64_t size;         /* of the object */
    uint64_t capacity;     /* in blocks */
    uint64_t held;         /* blocks in the table, cached or on their way */
    struct cache_block **table;
    uint64_t table_mask;
    struct cache_block *oldest, *newest;
    struct fetch_queue demand, ahead;
    struct cache_fetch *sent; /* at the lower storage */
    unsigned sending;
    uint64_t send_timer;
    unsigned window;       /* the next read-ahead window, in blocks */
    bool stale;
};

static struct cache_storage *cache_of(struct io_file *file)
{
    return (struct cache_storage *)file;
}

static struct io_file *lower_of(struct cache_storage *cs)
{
    return cs->layer.lower;
}

/* ---- the table and the LRU list -------------------------------------------------- */

static uint64_t slot_of(const struct cache_storage *cs, uint64_t index)
{
    return (index * UINT64_C(0x9E3779B97F4A7C15) >> 20) & cs->table_mask;
}

static struct cache_block *lookup(const struct cache_storage *cs,
                                  uint64_t index)
{
    struct cache_block *b = cs->table[slot_of(cs, index)];

    while (b && b->index != index)
        b = b->hash_next;
    return b;
}

static void lru_unlink(struct cache_storage *cs, struct cache_block *b)
{
    if (b->older)
        b->older->newer = b->newer;
    else
        cs->oldest = b->newer;
    if (b->newer)
        b->newer->older = b->older;
    else
        cs->newest = b->older;
    b->older = b->newer = NULL;
}

static void lru_push(struct cache_storage *cs, struct cache_block *b)
{
    b->older = cs->newest;
    b->newer = NULL;
    if (cs->newest)
        cs->newest->newer = b;
    else
        cs->oldest = b;
    cs->newest = b;
}

static void touch(struct cache_storage *cs, struct cache_block *b)
{
    if (cs->newest != b) {
        lru_unlink(cs, b);
        lru_push(cs, b);
    }
}

static void table_remove(struct cache_storage *cs, struct cache_block *b)
{
    struct cache_block **p = &cs->table[slot_of(cs, b->index)];

    while (*p != b)
        p = &(*p)->hash_next;
    *p = b->hash_next;
    cs->held--;
    free(b->data);
    free(b);
}

/* Cached blocks beyond the capacity go, least recently used first. */
static void evict(struct cache_storage *cs)
{
    while (cs->held > cs->capacity && cs->oldest) {
        struct cache_block *b = cs->oldest;
        lru_unlink(cs, b);
        table_remove(cs, b);
    }
}

/* A new block on its way (not in the LRU list until it arrives). */
static struct cache_block *block_new(struct cache_storage *cs, uint64_t index,
                                     struct cache_fetch *fetch)
{
    struct cache_block *b = calloc(1, sizeof(*b));
    uint64_t slot = slot_of(cs, index);

    if (!b || !(b->data = malloc(CACHE_BLOCK))) {
        free(b);
        return NULL;
    }
    b->index = index;
    b->fetch = fetch;
    b->hash_next = cs->table[slot];
    cs->table[slot] = b;
    cs->held++;
    return b;
}

/* ---- reads ------------------------------------------------------------------------ */

/* Copies what block b holds of the read into its buffers. */
static void copy_out(const struct cache_read *rd, const struct cache_block *b)
{
    uint64_t start = b->index << CACHE_BLOCK_SHIFT;
    uint64_t from = rd->offset > start ? rd->offset : start;
    uint64_t end = start + CACHE_BLOCK;
    uint64_t to = rd->offset + rd->length < end ? rd->offset + rd->length : end;
    uint64_t at, left;
    const char *src;

    if (from >= to)
        return; /* the block is not in the read */
    at = from - rd->offset;
    src = b->data + (from - start);
    left = to - from;
    for (int i = 0; i < rd->iovcnt && left > 0; i++) {
        if (at >= rd->iov[i].iov_len) {
            at -= rd->iov[i].iov_len;
            continue;
        }
        uint64_t n = rd->iov[i].iov_len - at;
        if (n > left)
            n = left;
        memcpy((char *)rd->iov[i].iov_base + at, src, n);
        src += n;
        left -= n;
        at = 0;
    }
}

static void read_release(struct cache_read *rd)
{
    if (--rd->pending > 0)
        return;
    if (rd->ret == -ESTALE)
        rd->cs->stale = true;
    rd->cb(rd->opaque, rd->ret);
    free(rd);
}

static int add_waiter(struct cache_fetch *f, struct cache_read *rd)
{
    struct cache_wait *w;

    if (f->waiters && f->waiters->read == rd)
        return 0; /* it already waits for this one */
    if (!(w = malloc(sizeof(*w))))
        return -ENOMEM;
    w->read = rd;
    w->next = f->waiters;
    f->waiters = w;
    rd->pending++;
    return 0;
}

/* ---- fetching ----------------------------------------------------------------------- */

static void send_queued(void *opaque);

/* Sends from the loop's next iteration, so that the reads submitted until
 * then can still join the queued fetches (a timer: close can cancel it). */
static void schedule_send(struct cache_storage *cs)
{
    if (cs->send_timer || cs->sending >= CACHE_MAX_FETCHES)
        return;
    if (!cs->demand.head && !cs->ahead.head)
        return;
    cs->send_timer = qed_loop_add_timer(cs->layer.base.loop, 0, send_queued, cs);
    if (!cs->send_timer)
        send_queued(cs); /* no memory for a timer: send from here */
}

static void queue_push(struct fetch_queue *q, struct cache_fetch *f)
{
    f->queue = q;
    f->next = NULL;
    if (q->tail)
        q->tail->next = f;
    else
        q->head = f;
    q->tail = f;
}

static struct cache_fetch *queue_pop(struct fetch_queue *q)
{
    struct cache_fetch *f = q->head;

    if (f && !(q->head = f->next))
        q->tail = NULL;
    if (f)
        f->queue = NULL;
    return f;
}

/* A reader waits for a block that read-ahead queued: it goes first now. */
static void promote(struct cache_storage *cs, struct cache_fetch *f)
{
    struct cache_fetch **p = &cs->ahead.head, *prev = NULL;

    if (f->queue != &cs->ahead)
        return;
    while (*p != f) {
        prev = *p;
        p = &(*p)->next;
    }
    *p = f->next;
    if (cs->ahead.tail == f)
        cs->ahead.tail = prev;
    queue_push(&cs->demand, f);
}

/* An unsent fetch that block index would extend, if any. */
static struct cache_fetch *queued_before(struct fetch_queue *q, uint64_t index)
{
    for (struct cache_fetch *f = q->head; f; f = f->next)
        if (f->first + f->count == index && f->count < CACHE_MAX_FETCH_BLOCKS)
            return f;
    return NULL;
}

static void fetch_done(void *opaque, int ret)
{
    struct cache_fetch *f = opaque;
    struct cache_storage *cs = f->cs;
    struct cache_wait *w = f->waiters;

    cs->sending--;
    if (f->prev)
        f->prev->next = f->next;
    else
        cs->sent = f->next;
    if (f->next)
        f->next->prev = f->prev;
    for (unsigned i = 0; i < f->count; i++)
        f->blocks[i]->fetch = NULL;
    while (w) {
        struct cache_wait *next = w->next;
        if (ret < 0)
            w->read->ret = ret;
        else
            for (unsigned i = 0; i < f->count; i++)
                copy_out(w->read, f->blocks[i]);
        read_release(w->read);
        free(w);
        w = next;
    }
    for (unsigned i = 0; i < f->count; i++) {
        if (ret < 0)
            table_remove(cs, f->blocks[i]);
        else
            lru_push(cs, f->blocks[i]);
    }
    free(f);
    evict(cs);
    schedule_send(cs);
}

static void send_fetch(struct cache_storage *cs, struct cache_fetch *f)
{
    struct iovec iov[CACHE_MAX_FETCH_BLOCKS];
    uint64_t start = f->first << CACHE_BLOCK_SHIFT;

    for (unsigned i = 0; i < f->count; i++) {
        uint64_t at = start + (uint64_t)i * CACHE_BLOCK;
        iov[i].iov_base = f->blocks[i]->data;
        /* The object's last block: only what it has. */
        iov[i].iov_len = cs->size - at < CACHE_BLOCK ? cs->size - at
                                                     : CACHE_BLOCK;
    }
    cs->sending++;
    f->prev = NULL;
    f->next = cs->sent;
    if (cs->sent)
        cs->sent->prev = f;
    cs->sent = f;
    qedi_io_readv(lower_of(cs), iov, (int)f->count, start, fetch_done, f);
}

static void send_queued(void *opaque)
{
    struct cache_storage *cs = opaque;
    struct cache_fetch *f;

    cs->send_timer = 0;
    while (cs->sending < CACHE_MAX_FETCHES &&
           ((f = queue_pop(&cs->demand)) || (f = queue_pop(&cs->ahead))))
        send_fetch(cs, f);
}

static uint64_t block_count(const struct cache_storage *cs)
{
    return (cs->size + CACHE_BLOCK - 1) >> CACHE_BLOCK_SHIFT;
}

/* Queues blocks [first, first + count) (none of them held) for fetching,
 * extending a queued fetch they continue; rd (NULL for read-ahead) waits
 * for them.  Block mark_at gets the read-ahead mark. */
static int fetch_run(struct cache_storage *cs, struct fetch_queue *q,
                     uint64_t first, uint64_t count, uint64_t mark_at,
                     struct cache_read *rd)
{
    while (count > 0) {
        struct cache_fetch *f = queued_before(q, first);
        if (!f) {
            if (!(f = calloc(1, sizeof(*f))))
                return -ENOMEM;
            f->cs = cs;
            f->first = first;
            queue_push(q, f);
        }
        while (count > 0 && f->count < CACHE_MAX_FETCH_BLOCKS) {
            struct cache_block *b = block_new(cs, first, f);
            if (!b)
                return -ENOMEM;
            b->mark = first == mark_at;
            f->blocks[f->count++] = b;
            first++;
            count--;
        }
        if (rd && add_waiter(f, rd) < 0)
            return -ENOMEM;
    }
    return 0;
}

/* How many blocks from first on are not held (up to limit and the end). */
static uint64_t missing_from(const struct cache_storage *cs, uint64_t first,
                             uint64_t limit)
{
    uint64_t end = block_count(cs), n = 0;

    while (n < limit && first + n < end && !lookup(cs, first + n))
        n++;
    return n;
}

static unsigned next_window(struct cache_storage *cs)
{
    unsigned w = cs->window;
    uint64_t room = cs->capacity / 4;

    if (cs->window < READAHEAD_MAX_BLOCKS)
        cs->window *= 2;
    return w < room ? w : (unsigned)(room ? room : 1);
}

/* A reader reached a window's mark: the next window, behind the readers'
 * own fetches. */
static void read_ahead_after(struct cache_storage *cs, uint64_t index)
{
    uint64_t first = index + 1, end = block_count(cs), n;

    while (first < end && lookup(cs, first))
        first++;
    n = missing_from(cs, first, next_window(cs));
    if (n > 0)
        fetch_run(cs, &cs->ahead, first, n, first + n / 2, NULL);
}

/* Fetches missing blocks [first, first + count) for rd, with a read-ahead
 * window after them when the run follows held blocks and ends the read. */
static int fetch_missing(struct cache_storage *cs, struct cache_read *rd,
                         uint64_t first, uint64_t count, bool ends_read)
{
    uint64_t ahead = 0, after = first + count;
    bool sequential = first > 0 && lookup(cs, first - 1);

    if (!sequential)
        cs->window = READAHEAD_FIRST_BLOCKS;
    else if (ends_read)
        ahead = missing_from(cs, after, next_window(cs));
    return fetch_run(cs, &cs->demand, first, count + ahead,
                     ahead ? after + ahead / 2 : UINT64_MAX, rd);
}

/* Goes over the read's blocks: copies the cached ones, waits for those on
 * their way, fetches the rest. */
static int read_blocks(struct cache_storage *cs, struct cache_read *rd)
{
    uint64_t first = rd->offset >> CACHE_BLOCK_SHIFT;
    uint64_t last = (rd->offset + rd->length - 1) >> CACHE_BLOCK_SHIFT;
    uint64_t run = 0, run_first = 0;
    int ret;

    for (uint64_t i = first; i <= last; i++) {
        struct cache_block *b = lookup(cs, i);
        if (!b) {
            if (run++ == 0)
                run_first = i;
            continue;
        }
        if (run > 0 && (ret = fetch_missing(cs, rd, run_first, run, false)) < 0)
            return ret;
        run = 0;
        if (b->fetch) {
            promote(cs, b->fetch);
            if ((ret = add_waiter(b->fetch, rd)) < 0)
                return ret;
            continue;
        }
        copy_out(rd, b);
        touch(cs, b);
        if (b->mark) {
            b->mark = false;
            read_ahead_after(cs, i);
        }
    }
    if (run > 0)
        return fetch_missing(cs, rd, run_first, run, true);
    return 0;
}

static bool holds_any(const struct cache_storage *cs, uint64_t offset,
                      uint64_t length)
{
    uint64_t first = offset >> CACHE_BLOCK_SHIFT;
    uint64_t last = (offset + length - 1) >> CACHE_BLOCK_SHIFT;

    for (uint64_t i = first; i <= last; i++)
        if (lookup(cs, i))
            return true;
    return false;
}

struct direct_read {
    struct cache_storage *cs;
    io_callback *cb;
    void *opaque;
};

static void direct_done(void *opaque, int ret)
{
    struct direct_read *d = opaque;

    if (ret == -ESTALE)
        d->cs->stale = true;
    d->cb(d->opaque, ret);
    free(d);
}

static void direct_read(struct cache_storage *cs, const struct iovec *iov,
                        int iovcnt, uint64_t offset, io_callback *cb,
                        void *opaque)
{
    struct direct_read *d = malloc(sizeof(*d));

    if (!d) {
        qedi_storage_complete_later(&cs->layer.base, cb, opaque, -ENOMEM);
        return;
    }
    *d = (struct direct_read){ .cs = cs, .cb = cb, .opaque = opaque };
    qedi_io_readv(lower_of(cs), iov, iovcnt, offset, direct_done, d);
}

/* The cache's ops never complete a read from inside the call: a read whose
 * blocks are all cached is answered from the loop. */
static void answer_later(void *opaque)
{
    struct cache_read *rd = opaque;

    read_release(rd);
}

static void cache_readv(struct io_file *file, const struct iovec *iov,
                        int iovcnt, uint64_t offset, io_callback *cb,
                        void *opaque)
{
    struct cache_storage *cs = cache_of(file);
    uint64_t total = qedi_iov_size(iov, iovcnt);
    uint64_t inside = offset >= cs->size ? 0 : cs->size - offset;
    struct cache_read *rd;
    int ret;

    if (cs->stale) {
        qedi_storage_complete_later(file, cb, opaque, -ESTALE);
        return;
    }
    if (inside == 0 || (total >= CACHE_DIRECT_MIN &&
                        !holds_any(cs, offset, inside < total ? inside : total))) {
        direct_read(cs, iov, iovcnt, offset, cb, opaque);
        return;
    }
    rd = calloc(1, sizeof(*rd) + (size_t)iovcnt * sizeof(*iov));
    if (!rd) {
        qedi_storage_complete_later(file, cb, opaque, -ENOMEM);
        return;
    }
    *rd = (struct cache_read){ .cs = cs, .cb = cb, .opaque = opaque,
                               .offset = offset,
                               .length = inside < total ? inside : total,
                               .pending = 1, .iovcnt = iovcnt };
    memcpy(rd->iov, iov, (size_t)iovcnt * sizeof(*iov));
    /* Past the object's end: zeros. */
    if (rd->length < total)
        qedi_iov_memset(iov, iovcnt, rd->length, 0, total - rd->length);
    ret = read_blocks(cs, rd);
    if (ret < 0)
        rd->ret = ret;
    evict(cs);
    schedule_send(cs);
    if (rd->pending == 1 &&
        qed_loop_call_soon(file->loop, answer_later, rd) == 0)
        return;
    if (rd->pending == 1) {
        /* No memory to answer from the loop: the reserve does it. */
        int result = rd->ret;
        free(rd);
        qedi_storage_complete_later(file, cb, opaque, result);
        return;
    }
    read_release(rd); /* the fetches it waits for answer it */
}

static void cache_close(struct io_file *file)
{
    struct cache_storage *cs = cache_of(file);

    struct cache_fetch *f;

    /* No reader waits at close; read-ahead may still be queued or on its
     * way (the lower storage drops it unanswered).  The blocks of those
     * fetches are in the table. */
    if (cs->send_timer)
        qed_loop_cancel_timer(file->loop, cs->send_timer);
    qedi_io_file_close(lower_of(cs));
    while ((f = queue_pop(&cs->demand)) || (f = queue_pop(&cs->ahead)))
        free(f);
    while ((f = cs->sent) != NULL) {
        cs->sent = f->next;
        free(f);
    }
    for (uint64_t i = 0; i <= cs->table_mask; i++) {
        struct cache_block *b = cs->table[i];
        while (b) {
            struct cache_block *next = b->hash_next;
            free(b->data);
            free(b);
            b = next;
        }
    }
    free(cs->table);
    free(cs);
}

static const struct storage_ops cache_ops = {
    .name = "read cache",
    .readv = cache_readv,
    .writev = qedi_storage_layer_writev,
    .flush = qedi_storage_layer_flush,
    .fallocate = qedi_storage_layer_fallocate,
    .get_size = qedi_storage_layer_get_size,
    .truncate = qedi_storage_layer_truncate,
    .allocated_bytes = qedi_storage_layer_allocated_bytes,
    .seek = qedi_storage_layer_seek,
    .close = cache_close,
};

int qedi_storage_cache_open(struct io_file *lower, uint64_t bytes,
                            struct io_file **out, qed_error *err)
{
    struct cache_storage *cs = calloc(1, sizeof(*cs));
    uint64_t slots = 64;
    int ret;

    *out = NULL;
    if (!cs)
        return qedi_fail(err, ENOMEM, "out of memory");
    qedi_storage_layer_init(&cs->layer, &cache_ops, lower);
    if ((ret = lower->ops->get_size(lower, &cs->size)) < 0) {
        free(cs);
        return qedi_fail(err, -ret, "cannot read the size: %s", strerror(-ret));
    }
    if (bytes < CACHE_MIN_BYTES)
        bytes = CACHE_MIN_BYTES;
    cs->capacity = bytes >> CACHE_BLOCK_SHIFT;
    while (slots < cs->capacity * 2 && slots < (UINT64_C(1) << 30))
        slots *= 2;
    cs->table = calloc(slots, sizeof(*cs->table));
    if (!cs->table) {
        free(cs);
        return qedi_fail(err, ENOMEM, "out of memory for a read cache of "
                         "%llu bytes", (unsigned long long)bytes);
    }
    cs->table_mask = slots - 1;
    cs->window = READAHEAD_FIRST_BLOCKS;
    *out = &cs->layer.base;
    return 0;
}
