/* SPDX-License-Identifier: MIT */
/* The QED format driver's private state: the open image's geometry and
 * tables, the L2 cache, allocation, and the request that walks a QED image
 * one chunk at a time.  Only the driver's files include it. */
#ifndef QED_LIB_QED_IMAGE_H
#define QED_LIB_QED_IMAGE_H

#include "format.h"
#include "header.h"
#include "driver.h"

struct qed_request;
struct l2cache;

/* What a range of a QED image maps to. */
enum extent_kind { EXTENT_UNALLOCATED, EXTENT_ZERO, EXTENT_DATA };

struct extent {
    enum extent_kind kind;
    uint64_t length; /* bytes from the looked-up position */
    uint64_t host;   /* EXTENT_DATA: file offset of the first byte */
};

/* A loaded table (L2) in on-disk byte order; see table.c. */
struct table {
    uint64_t offset;     /* in the file */
    uint8_t *bytes;      /* table_size * cluster_size, 4096-aligned */
    unsigned refs;       /* requests using it; pinned while > 0 */
    bool loading;        /* read in flight: waiters queue on it */
    bool failed;
    struct qed_request *load_waiters;
    struct table *lru_prev, *lru_next;
    struct table *hash_next;
};

/* The group write of one L2 table's entry updates goes through these
 * phases in order (alloc.c), skipping those it does not need; the slot
 * stays in the last one reached until the whole group has completed. */
enum slot_phase {
    SLOT_IDLE,          /* no group write in flight */
    SLOT_APPLY,         /* the group's entries applied to the table */
    SLOT_FLUSH_DATA,    /* backing file: the group's data made durable */
    SLOT_WRITE_TABLE,   /* the table's changed blocks (or a new table) */
    SLOT_FLUSH_TABLE,   /* backing file: a new table durable before L1 */
    SLOT_LINK,          /* the L1 entry of a new table written */
};

/* Allocation state of one L2 table while anything allocates in it: the
 * clusters being allocated (so no cluster is allocated twice), and the table
 * writer that sends the entry updates queued behind a write in flight out
 * together in the next one (group commit). */
struct table_slot {
    qed_image *img;
    uint64_t l1_index;
    struct table *table;       /* pinned; NULL until a request brings it */
    bool unlinked;             /* new table whose L1 entry is not on disk */
    bool on_disk;              /* the new table was written whole */
    enum slot_phase phase;     /* of the group write in flight */
    struct qed_request *ranges;    /* requests allocating clusters here */
    struct qed_request *pending, *pending_tail; /* applied in memory, waiting */
    struct qed_request *inflight;  /* covered by the write in flight */
    struct table_slot *next;
    struct table_slot *l1_next; /* in the L1 writer's batch */
};

/* Serialised writer of the header block: requests that arrive while a write
 * is in flight wait for the next one. */
struct block_writer {
    bool busy;
    /* Waiting for a write, oldest first: they resume in the order they
     * came, so allocations keep the order their requests were made in. */
    struct qed_request *pending, *pending_tail;
    struct qed_request *inflight; /* covered by the write in flight */
};

struct qed_state {
    struct qed_header header;
    uint8_t *header_block;    /* first 4096 bytes of the file, as on disk */
    uint32_t cluster_size;
    unsigned cluster_bits;
    uint64_t table_bytes;     /* table_size * cluster_size */
    uint64_t table_entries;
    unsigned table_bits;      /* log2(table_entries) */
    uint64_t header_bytes;    /* header_size * cluster_size */
    uint8_t *l1;              /* L1 table, on-disk byte order */
    uint64_t file_end;        /* next cluster handed out, cluster aligned */
    /* A file whose size was not a multiple of the cluster size at open: its
     * partial last cluster [tail_gap_start, tail_gap_end) is no valid
     * cluster (as for QEMU), and new clusters come after it. */
    uint64_t tail_gap_start, tail_gap_end;
    /* Offsets of the L2 tables (linked or being created), sorted: no data
     * cluster may lie inside one. */
    uint64_t *table_offsets;
    size_t ntables, tables_cap;
    /* The file is known to be at least size_ensured bytes long; clusters
     * below it lie wholly inside the file.  Extensions run one at a time. */
    uint64_t size_ensured;
    uint64_t extend_target;
    bool extending;
    bool no_fallocate;        /* the file system cannot fallocate */
    struct extend_waiter *extend_waiters;
    struct l2cache *l2cache;
    struct table_slot *slots;
    /* NEED_CHECK: durable before the first table update (no backing). */
    bool dirty_durable;
    /* Opened dirty without the check (QED_OPEN_NO_CHECK): a clean close
     * must not mark it clean until a repair has left it consistent. */
    bool unchecked_dirty;
    /* Clusters of failed allocations that no table on disk can reference,
     * [start, end) each: given back once they reach the end of the file. */
    struct qed_span { uint64_t start, end; } *abandoned;
    size_t nabandoned, abandoned_cap;
    /* A failed table write may have left entries or unreferenced clusters
     * on disk: only a check can tell, so the image stays marked dirty. */
    bool leak_unknown;
    struct block_writer header_writer;
    uint64_t idle_timer;            /* marks the image clean when idle */
    uint64_t last_table_update_ms;
    /* L1 updates: new tables linked together in one write. */
    bool l1_busy;
    struct table_slot *l1_pending, *l1_inflight;
    char backing_name[QED_MAX_BACKING_NAME + 1];
};

/* Where a QED request is: each chunk goes from LOOKUP to one of READ,
 * WRITE_IN_PLACE or STATUS, or through the allocation states CLAIM,
 * MARK_DIRTY, COPY_ON_WRITE, EXTEND, WRITE_DATA and COMMIT (write-zeroes of
 * whole clusters go from MARK_DIRTY straight to COMMIT); FLUSH stands
 * alone; ABANDON gives a failed request's clusters back before DONE. */
enum qed_req_state {
    QRS_START,
    QRS_LOOKUP,         /* the chunk's L2 table loaded (or loading) */
    QRS_READ,           /* data, zeros or the backing file read */
    QRS_COPY_ON_READ,   /* what the backing file gave written into the
                           image (QED_OPEN_COPY_ON_READ) */
    QRS_WRITE_IN_PLACE, /* into clusters the table already maps */
    QRS_STATUS,         /* block status of the chunk */
    QRS_CLAIM,          /* the clusters claimed (waits for overlaps) */
    QRS_MARK_DIRTY,     /* NEED_CHECK durable before anything changes */
    QRS_COPY_ON_WRITE,  /* head and tail read from the backing file */
    QRS_EXTEND,         /* the file extended over the new clusters */
    QRS_WRITE_DATA,     /* the new clusters written */
    QRS_COMMIT,         /* entries queued for the table's group write */
    QRS_FLUSH,
    QRS_ABANDON,        /* a failed request's clusters given back */
    QRS_DONE,
};

const char *qedi_qed_req_state_name(enum qed_req_state state);
const char *qedi_slot_phase_name(enum slot_phase phase);

/* A continuation: where a request goes on once a wait is over. */
typedef void qed_step(struct qed_request *req);

/* One request and its progress through the QED state machine
 * (qed-request.c).  A request walks its range a chunk at a time; each chunk
 * lies within one L2 table and maps to one extent kind. */
struct qed_request {
    struct request base;
    uint64_t pos;             /* start of the current chunk */

    /* Current chunk. */
    struct table *l2;         /* pinned while the chunk uses it */
    uint64_t l1_index;
    struct extent ext;
    struct table_slot *slot;  /* allocating in this table */
    struct qed_request *range_next;    /* in slot->ranges */
    struct qed_request *range_waiters; /* overlapping requests waiting on us */
    uint64_t chunk_len;       /* bytes of the request the chunk covers */
    uint64_t alloc_host;      /* first new cluster */
    /* The new clusters: none, handed out (no table on disk can point at
     * them yet), or carried by a table write that failed (one may). */
    enum { SPACE_NONE, SPACE_CLAIMED, SPACE_REFERENCED } space;
    uint64_t alloc_first;     /* first L2 index updated (cluster range) */
    uint64_t alloc_count;     /* entries updated */
    uint64_t *saved_entries;  /* old values, to undo a failed update */
    uint64_t new_entry_value; /* ZERO/DATA base for the update */
    uint8_t *head_buf, *tail_buf; /* copy-on-write from the backing file */
    uint8_t *data_buf;            /* zeros written for write-zeroes */
    uint64_t fallback_host, fallback_len; /* zeroing without fallocate */
    uint64_t head_len, tail_len;
    struct iovec *chunk_iov;
    int chunk_iovcnt;
    int pending;              /* sub-operations in flight */
    int sub_ret;              /* first failure among them */
    enum qed_req_state state; /* where the request is (for traces) */
    qed_step *resume;         /* continuation after a wait */
    /* Where lookup and allocation hand a failure back (the error is in
     * base.err): the request layer's, set when the request starts.  They
     * never complete a request themselves. */
    void (*fail)(struct qed_request *req, int ret);
    struct qed_request *next; /* in wait queues */
};

static inline struct qed_request *qed_request_of(struct request *req)
{
    return (struct qed_request *)((char *)req -
                                  offsetof(struct qed_request, base));
}

static inline struct qed_state *qed_of(const qed_image *img)
{
    return img->driver_state;
}

static inline void qed_request_run_resume(struct loop_task *task)
{
    struct request *base = (struct request *)((char *)task -
                                              offsetof(struct request, task));
    struct qed_request *req = qed_request_of(base);
    req->resume(req);
}

/* Runs fn(req) from the loop, not from inside the caller: waking a waiter
 * must not grow the stack of whoever it waited for. */
static inline void qed_request_defer(struct qed_request *req, qed_step *fn)
{
    req->resume = fn;
    req->base.task.run = qed_request_run_resume;
    qedi_loop_defer(req->base.img->loop, &req->base.task);
}

/* table.c: byte order of tables lives here only */
uint64_t qedi_table_entry(const uint8_t *table, uint64_t index);
void qedi_table_set_entry(uint8_t *table, uint64_t index, uint64_t value);
/* Is a data cluster or table offset usable in this image? */
QED_INTERNAL bool qedi_offset_valid(const struct qed_state *s, uint64_t offset,
                      uint64_t length);
/* The same test against another end than the file's (the check measures
 * against the file as it finds it). */
QED_INTERNAL bool qedi_offset_valid_below(const struct qed_state *s,
                                         uint64_t offset, uint64_t length,
                                         uint64_t limit);
/* An L2 table of an idle image read, or rewritten (its cached copy
 * dropped), synchronously; errors name the table's offset. */
int qedi_table_read_sync(qed_image *img, uint64_t offset, uint8_t *table,
                    qed_error *err);
int qedi_table_write_sync(qed_image *img, uint64_t offset, const uint8_t *table,
                     qed_error *err);
void qedi_table_poison_invalid(const struct qed_state *s, uint8_t *table,
                          uint64_t entries, uint64_t span);
/* A data cluster must also lie clear of every L2 table. */
QED_INTERNAL bool qedi_data_offset_valid(const struct qed_state *s, uint64_t offset,
                           uint64_t length);
/* The value stored on disk for an entry that was marked invalid in memory. */
uint64_t qedi_table_entry_on_disk(const struct qed_state *s, uint64_t entry);
int qedi_table_index_build(struct qed_state *s);
int qedi_table_index_add(struct qed_state *s, uint64_t offset);

/* l2cache.c */
int qedi_l2cache_new(size_t budget_bytes, uint64_t table_bytes,
                struct l2cache **out);
void qedi_l2cache_free(struct l2cache *cache);
/* Looks a table up; NULL when not cached. Takes a reference when found. */
struct table *qedi_l2cache_find(struct l2cache *cache, uint64_t offset);
/* Inserts a fresh table (zeroed, or to be loaded) with one reference. */
struct table *qedi_l2cache_insert(struct l2cache *cache, uint64_t offset,
                             bool zeroed);
void qedi_l2cache_put(struct l2cache *cache, struct table *t);
void qedi_l2cache_drop(struct l2cache *cache, struct table *t);
/* Drops the cached copy of the table at offset, if any: it is loaded (and
 * its invalid entries marked) again at its next use. */
void qedi_l2cache_forget(struct l2cache *cache, uint64_t offset);

/* lookup.c */
void qedi_lookup_extent(const qed_image *img, const struct table *l2, uint64_t pos,
                   uint64_t max_len, struct extent *ext);
uint64_t qedi_lookup_l1_index(const qed_image *img, uint64_t pos);
uint64_t qedi_lookup_table_end(const qed_image *img, uint64_t pos);
int qedi_lookup_validate_extent(const qed_image *img, uint64_t l1_index,
                           uint64_t pos, const struct extent *ext,
                           bool writing, qed_error *err);
/* Makes req->l2 the L2 table for req->pos (loading it); calls next. Sets
 * req->l2 = NULL when the L1 entry is unallocated. */
void qedi_lookup_load_l2(struct qed_request *req, qed_step *next);

/* alloc.c */
/* Claims the clusters [alloc_first, alloc_first + alloc_count) of the table
 * for req->l1_index.  Returns true when claimed; false when another request
 * is allocating some of them (retry runs once it is done, and must look the
 * range up again) or on failure (handed back through req->fail). */
bool qedi_alloc_begin(struct qed_request *req, qed_step *retry);
/* Gives the claimed range its table: the loaded one, the one a concurrent
 * request is creating, or a new zeroed one at the end of the file. */
int qedi_alloc_table(struct qed_request *req);
uint64_t qedi_alloc_clusters(qed_image *img, uint64_t count);
void qedi_alloc_make_dirty(struct qed_request *req, qed_step *next);
/* Sets the claimed entries in memory and queues them for the table's next
 * write; next runs once they are on disk (and the table linked in L1). */
void qedi_alloc_commit(struct qed_request *req, qed_step *next);
/* Releases the claim and wakes requests waiting on it. */
void qedi_alloc_end(struct qed_request *req);
/* For a write in place into clusters [first, first + count) of the table
 * for l1_index: when an allocation in flight claims some of them, req
 * waits for it (false; retry runs once it is done); else true. */
bool qedi_alloc_wait_unclaimed(struct qed_request *req, uint64_t l1_index,
                          uint64_t first, uint64_t count,
                          qed_step *retry);
void qedi_alloc_free_slots(struct qed_state *s);
/* A request fails: the clusters it was given go back to the file when they
 * lie at its end, else the image is (durably) marked dirty so a check
 * reclaims them.  True when the request waits for that mark; it then
 * is handed back through req->fail once marked. */
bool qedi_alloc_abandon(struct qed_request *req, int ret);
/* Gives abandoned clusters at the end of the file back (truncating it). */
void qedi_alloc_give_back(qed_image *img);
/* Clusters of failed allocations not given back, or possibly referenced. */
bool qedi_alloc_leaks_outstanding(const struct qed_state *s);
/* Stops the idle timer and waits for a header update in flight. */
void qedi_alloc_quiesce(qed_image *img);
/* Makes sure the file extends to at least end, so the uncovered tail
 * [end - tail_len, end) of a new cluster lies inside it; cb runs when done.
 * Extends ahead in large steps; qed_close trims what is left unused. */
void qedi_alloc_extend_file(qed_image *img, uint64_t end, uint64_t tail_len,
                       io_callback *cb, void *opaque);
int qedi_image_write_header(qed_image *img, uint64_t features);

/* qed-request.c: the request layer of the driver */
void qedi_qed_request_start(struct request *req);
bool qedi_qed_request_finish(struct request *req, int ret);

/* qed-resize.c */
int qedi_qed_resize(qed_image *img, uint64_t size, unsigned flags,
                      qed_error *err);

/* qed-backing.c */
int qedi_qed_check_backing_name(qed_image *img, const char *name,
                                  qed_error *err);
int qedi_qed_set_backing(qed_image *img, const char *name, bool raw,
                           qed_error *err);

/* check.c: the consistency check and repair (qed_check's driver hook). */
/* For a read-write open: a dirty image is checked and repaired (corruptions
 * and leaks) before any I/O, the file ends at its last cluster in use, and
 * once that is durable NEED_CHECK is cleared. */
int qedi_check_on_open(qed_image *img, qed_error *err);
int qedi_qed_check(qed_image *img, unsigned repair,
                     struct qed_check_result *r, qed_error *err);
/* Allocation state outlives the requests in flight (group writes). */
bool qedi_qed_busy(const qed_image *img);

/* qed-create.c */
int qedi_qed_create(const char *path, const struct qed_create_options *o,
                      qed_error *err);

/* qed-compact.c */
int qedi_qed_compact(qed_image *img, struct qed_compact_result *result,
                       qed_error *err);

/* Does [offset, end) touch the partial last cluster the file had at open?
 * A file that ended on a cluster boundary has none: its empty gap must not
 * catch the extents that run across that boundary. */
static inline bool in_tail_gap(const struct qed_state *s, uint64_t offset,
                               uint64_t end)
{
    return s->tail_gap_start < s->tail_gap_end &&
           offset < s->tail_gap_end && end > s->tail_gap_start;
}

static inline uint64_t cluster_start(const struct qed_state *s, uint64_t pos)
{
    return pos & ~(uint64_t)(s->cluster_size - 1);
}

static inline uint64_t cluster_offset_in(const struct qed_state *s,
                                         uint64_t pos)
{
    return pos & (s->cluster_size - 1);
}

#endif
