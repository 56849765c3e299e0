/* SPDX-License-Identifier: MIT */
/* Shared machinery of the image operations (convert, compare, commit,
 * rebase, resize): a walk over a virtual disk that keeps many requests in
 * flight on one loop, and helpers the operations have in common.
 *
 * The walk asks for the block status of one or two images at its cursor,
 * lets the operation classify the run (skip it, or an action), and hands
 * the runs to be acted on to a pool of workers in segments of at most
 * request_size bytes that never cross a multiple of request_size.  Each
 * worker runs its segment as a small state machine of asynchronous image
 * requests (qedi_ops_read, qedi_ops_write, ...), then reports back; the walk refills
 * it.  Everything runs on the images' loop. */
#ifndef QED_LIB_OPS_H
#define QED_LIB_OPS_H

#include "core.h"

#define OPS_MAX_SOURCES 2
/* Eight 2 MiB requests keep a disk busy, and when both files sit in the
 * page cache (where a copy is CPU-bound) more only add buffer pages to fault
 * in and evict the data from the CPU cache between its read and its write:
 * 16 cost 12% more CPU for the same wall time. */
#define OPS_DEFAULT_REQUESTS 8u
#define OPS_MAX_REQUESTS 256u
#define OPS_DEFAULT_REQUEST_SIZE (2u << 20)
#define OPS_MAX_REQUEST_SIZE (64u << 20)
#define OPS_SKIP 0 /* classify: nothing to do in this run */

struct ops_walk;

struct ops_worker {
    struct ops_walk *walk;
    bool busy;
    uint64_t offset, length;   /* the segment */
    uint64_t counted;          /* bytes of it that are new to the walk */
    int action;                /* what classify said about its run */
    /* Status of each image at offset; length runs to the end of the run. */
    struct qed_block_status st[OPS_MAX_SOURCES];
    uint8_t *buf[OPS_MAX_SOURCES]; /* request_size bytes each, aligned */
    /* Sub-requests in flight (qedi_ops_begin .. qedi_ops_end). */
    int pending;
    int sub_ret;
    qed_error sub_err;
    bool tolerant;             /* qedi_ops_begin_tolerant: next sees failures */
    void (*next)(struct ops_worker *k);
    /* In-order writes: the segment's place in the walk, whether it holds
     * the turn, and what runs once it gets it. */
    uint64_t seq;
    bool has_turn;
    void (*parked)(struct ops_worker *k);
    /* Free for the operation's own bookkeeping of the segment. */
    uint64_t cursor, piece_end, bad_start, bad_end;
    int bad_code;
};

struct ops_walk {
    /* Filled in by the operation. */
    qed_loop *loop;
    uint64_t end;                          /* walk [0, end) */
    qed_image *status[OPS_MAX_SOURCES];    /* NULL: reads as zeros */
    unsigned nstatus;
    unsigned nbufs;                        /* buffers per worker */
    unsigned requests;                     /* workers; 0: default */
    uint64_t request_size;                 /* 0: default */
    /* Segments of runs that act are widened to multiples of align (a power
     * of two dividing request_size; 0: none), so a run that starts or ends
     * inside a cluster is handled a whole cluster at a time.  Widened
     * segments overlap their neighbours: the action must be idempotent. */
    uint64_t align;
    /* Decides what to do with the run [pos, pos + *len) whose status is
     * st[] (one per status image): OPS_SKIP or an action > 0.  May shorten
     * *len (never to 0). */
    int (*classify)(struct ops_walk *w, uint64_t pos, uint64_t *len,
                    const struct qed_block_status *st);
    /* Starts a worker on its segment; it ends with qedi_ops_worker_done. */
    void (*start)(struct ops_worker *k);
    qed_progress_callback *progress;
    void *progress_opaque;
    void *opaque;
    /* Writes submitted in order of offset: workers call qedi_ops_await_turn
     * before they write and pass the turn on once their writes are
     * submitted (the engine allocates clusters in the order writes
     * arrive). */
    bool in_order;
    /* At most rate_limit bytes per second (0: no limit) of the segments
     * whose action is in rate_actions (bit 1 << action): a segment starts
     * no sooner than the time its bytes and all before them take at that
     * rate, on a loop timer. */
    uint64_t rate_limit;
    unsigned rate_actions;
    /* Block status failures are retried on shorter ranges down to 512
     * bytes; a range that still fails is handed out with salvage_action
     * (up to the next multiple of salvage_gran) and reported to warning. */
    bool salvage;
    uint64_t salvage_gran;
    int salvage_action;
    void (*warning)(void *opaque, const char *message);
    void *warning_opaque;

    /* State of the walk. */
    uint64_t limit;          /* no segment starts at or past it (may drop) */
    uint64_t pos;            /* next byte to hand out */
    uint64_t run_start, run_end;
    int run_action;
    struct qed_block_status run_st[OPS_MAX_SOURCES];
    struct qed_block_status q_st[OPS_MAX_SOURCES];
    uint64_t q_len;          /* bytes the status query asked about */
    unsigned q_pending;
    int q_ret;
    qed_error q_err;
    bool querying;
    bool pumping, repump;
    struct ops_worker *workers;
    unsigned nworkers, busy;
    void *pool;              /* the workers' buffers, one mapping */
    size_t pool_size;
    uint64_t done_bytes;
    uint64_t q_shrink;       /* salvage: shorter status query; 0: none */
    uint64_t next_seq, turn; /* in-order writes */
    uint64_t rate_bytes;     /* rate limit: bytes let through */
    uint64_t rate_start_ns;
    uint64_t rate_timer;     /* armed timer id; 0: none */
    int ret;
    qed_error err;
};

/* Applies the defaults of a qed_op_options (NULL: all defaults) to a walk
 * and checks them. */
int qedi_ops_walk_configure(struct ops_walk *w, const struct qed_op_options *o,
                       qed_error *err);
/* Runs the walk to its end (or its first error) on w->loop; blocks. */
int qedi_ops_walk_run(struct ops_walk *w, qed_error *err);

/* Sub-requests of a worker: qedi_ops_begin(k, next); any number of qedi_ops_read /
 * qedi_ops_write / qedi_ops_write_zeroes; qedi_ops_end(k).  next runs once all are done;
 * the first failure ends the segment with that error instead. */
void qedi_ops_begin(struct ops_worker *k, void (*next)(struct ops_worker *k));
/* The same, but next runs even when a sub-request failed, with k->sub_ret
 * and k->sub_err telling the first failure. */
void qedi_ops_begin_tolerant(struct ops_worker *k,
                        void (*next)(struct ops_worker *k));
/* Runs then(k) once it is k's turn to write (at once unless the walk is
 * in_order); when the walk has failed meanwhile, ends k instead.  then
 * passes the turn on (qedi_ops_pass_turn) once its writes are submitted; a
 * worker that ends without doing so passes it when it is done. */
void qedi_ops_await_turn(struct ops_worker *k, void (*then)(struct ops_worker *k));
/* Gives the turn to the next segment once k's writes are all submitted:
 * the engine allocates clusters in the order writes arrive. */
void qedi_ops_pass_turn(struct ops_worker *k);
/* Reports a warning through the walk's warning callback (if any). */
void qedi_ops_warn(struct ops_walk *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void qedi_ops_end(struct ops_worker *k);
void qedi_ops_read(struct ops_worker *k, qed_image *img, void *buf, uint64_t len,
              uint64_t offset);
void qedi_ops_write(struct ops_worker *k, qed_image *img, const void *buf,
               uint64_t len, uint64_t offset);
void qedi_ops_write_zeroes(struct ops_worker *k, qed_image *img, uint64_t offset,
                      uint64_t len, unsigned flags);
/* Fills buf[i] with [offset, offset + len) of img as a source: zeros when
 * the status says the range reads as zeros (or img is NULL), else a read. */
void qedi_ops_fill(struct ops_worker *k, unsigned i, qed_image *img);
/* Ends a worker's segment (ret 0 or -errno with err). */
void qedi_ops_worker_done(struct ops_worker *k, int ret, const qed_error *err);

/* Writes runs of buf (the worker's segment) to dst at granularity gran
 * (aligned to absolute offsets): blocks that are all zero become
 * write-zeroes (QED_ZERO_MAY_UNMAP) when write_zero_blocks, else are left
 * out; blocks equal to the same bytes of cmp (when not NULL) are left out
 * altogether. */
void qedi_ops_write_blocks(struct ops_worker *k, qed_image *dst, const uint8_t *buf,
                      const uint8_t *cmp, uint64_t gran,
                      bool write_zero_blocks);

/* Like qedi_ops_write_blocks without cmp, but a run of zero blocks between
 * data of the segment that is shorter than min_zero bytes is written as
 * data (qemu-img convert -S): only longer runs, and runs at the edges of
 * the segment, are left out (or written as zeroes). */
void qedi_ops_write_sparse(struct ops_worker *k, qed_image *dst, const uint8_t *buf,
                      uint64_t gran, uint64_t min_zero,
                      bool write_zero_blocks);

/* Allocates space (fallocate, keeping the size) in the raw image dst under
 * the blocks of buf that qedi_ops_write_blocks(k, dst, buf, NULL, gran, ...)
 * writes as data.  For a fresh sparse output: ext4 fills allocated space
 * with buffered writes much faster than it fills holes (delayed allocation
 * tracks every block), while the blocks left out stay holes. */
void qedi_ops_preallocate_data_blocks(struct ops_worker *k, qed_image *dst,
                                 const uint8_t *buf, uint64_t gran);

/* Are two paths the same file?  false when either cannot be looked at. */
bool qedi_ops_same_file(const char *a, const char *b);
/* The depth in img's backing chain (0 = img) of the layer that is the same
 * file, opened with the same format, as other; -1 when there is none. */
int qedi_ops_chain_depth_of(qed_image *img, qed_image *other);
/* Is the image idle (nothing in flight, nothing allocating)? */
int qedi_ops_require_idle(qed_image *img, const char *what, qed_error *err);

/* A storage driver whose files ignore flushes (qemu-img's cache=unsafe). */
extern const struct storage_driver qedi_ops_unsafe_opener;
/* A storage driver that opens files writable whatever the image open asks,
 * so a read-only open (without the backing chain) can rewrite a header. */
extern const struct storage_driver qedi_ops_writable_opener;


#endif
