/* SPDX-License-Identifier: MIT */
/* Simulated files for tests: memory, power loss, injected faults.  See
 * io-sim.h for the model. */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io-op.h"
#include "io-sim.h"

#define PAGE_BYTES 4096u
#define SECTOR_BYTES 512u
#define DEFAULT_MAX_FILE_SIZE (256ull * 1024 * 1024)

/* ---- sparse page store ------------------------------------------------------ */

/* Bytes of a file in pages; a NULL page reads as zeros.  Invariant: every
 * byte at or past size reads as zero, so growing the file needs no work. */
struct pages {
    uint8_t **pg;
    size_t cap;    /* entries in pg */
    uint64_t size; /* file length */
};

static size_t pages_for(uint64_t size)
{
    return (size_t)((size + PAGE_BYTES - 1) / PAGE_BYTES);
}

static int pages_reserve(struct pages *p, uint64_t size)
{
    size_t need = pages_for(size), cap;
    uint8_t **n;

    if (need <= p->cap)
        return 0;
    cap = p->cap ? p->cap : 16;
    while (cap < need)
        cap *= 2;
    n = realloc(p->pg, cap * sizeof(*n));
    if (!n)
        return -ENOMEM;
    memset(n + p->cap, 0, (cap - p->cap) * sizeof(*n));
    p->pg = n;
    p->cap = cap;
    return 0;
}

static void pages_free(struct pages *p)
{
    for (size_t i = 0; i < p->cap; i++)
        free(p->pg[i]);
    free(p->pg);
    memset(p, 0, sizeof(*p));
}

static uint8_t *page_at(const struct pages *p, uint64_t index)
{
    return index < p->cap ? p->pg[index] : NULL;
}

/* Copies into dst what lies inside the file; returns the bytes copied. */
static uint64_t pages_read(const struct pages *p, uint64_t off, uint8_t *dst,
                           uint64_t len)
{
    uint64_t n, done = 0;

    if (off >= p->size)
        return 0;
    n = QED_MIN(len, p->size - off);
    while (done < n) {
        uint64_t pos = off + done;
        uint64_t in = pos % PAGE_BYTES;
        uint64_t chunk = QED_MIN(n - done, PAGE_BYTES - in);
        const uint8_t *page = page_at(p, pos / PAGE_BYTES);
        if (page)
            memcpy(dst + done, page + in, chunk);
        else
            memset(dst + done, 0, chunk);
        done += chunk;
    }
    return n;
}

static bool all_zero(const uint8_t *buf, uint64_t len)
{
    for (uint64_t i = 0; i < len; i++)
        if (buf[i])
            return false;
    return true;
}

/* Writes src (NULL: zeros) at off, growing the file. */
static int pages_write(struct pages *p, uint64_t off, const uint8_t *src,
                       uint64_t len)
{
    uint64_t done = 0;

    if (len == 0)
        return 0;
    if (pages_reserve(p, off + len) < 0)
        return -ENOMEM;
    while (done < len) {
        uint64_t pos = off + done;
        uint64_t in = pos % PAGE_BYTES;
        uint64_t chunk = QED_MIN(len - done, PAGE_BYTES - in);
        uint8_t **slot = &p->pg[pos / PAGE_BYTES];
        const uint8_t *from = src ? src + done : NULL;

        if (!*slot) {
            /* Zeros into a missing page change nothing. */
            if (!from || all_zero(from, chunk)) {
                done += chunk;
                continue;
            }
            *slot = calloc(1, PAGE_BYTES);
            if (!*slot)
                return -ENOMEM;
        }
        if (from)
            memcpy(*slot + in, from, chunk);
        else if (chunk == PAGE_BYTES) {
            free(*slot);
            *slot = NULL;
        } else {
            memset(*slot + in, 0, chunk);
        }
        done += chunk;
    }
    p->size = QED_MAX(p->size, off + len);
    return 0;
}

/* Zeros [off, off + len) inside the file; the length does not change. */
static void pages_zero(struct pages *p, uint64_t off, uint64_t len)
{
    if (off >= p->size)
        return;
    len = QED_MIN(len, p->size - off);
    /* Cannot fail: only existing pages are touched. */
    (void)pages_write(p, off, NULL, len);
}

static void pages_set_size(struct pages *p, uint64_t size)
{
    if (size < p->size) {
        uint64_t first = pages_for(size);
        for (uint64_t i = first; i < p->cap; i++) {
            free(p->pg[i]);
            p->pg[i] = NULL;
        }
        if (size % PAGE_BYTES) {
            uint8_t *page = page_at(p, size / PAGE_BYTES);
            if (page)
                memset(page + size % PAGE_BYTES, 0,
                       PAGE_BYTES - size % PAGE_BYTES);
        }
    }
    p->size = size;
}

static int pages_clone(struct pages *dst, const struct pages *src)
{
    struct pages n = { 0 };

    if (pages_reserve(&n, src->size) < 0)
        return -ENOMEM;
    for (size_t i = 0; i < src->cap && i < n.cap; i++) {
        if (!src->pg[i])
            continue;
        n.pg[i] = malloc(PAGE_BYTES);
        if (!n.pg[i]) {
            pages_free(&n);
            return -ENOMEM;
        }
        memcpy(n.pg[i], src->pg[i], PAGE_BYTES);
    }
    n.size = src->size;
    pages_free(dst);
    *dst = n;
    return 0;
}

static uint64_t pages_allocated(const struct pages *p)
{
    uint64_t n = 0;
    for (size_t i = 0; i < p->cap && i < pages_for(p->size); i++)
        if (p->pg[i])
            n += PAGE_BYTES;
    return n;
}

/* ---- files, handles, operations ----------------------------------------------- */

/* A change not yet durable. */
enum change_kind {
    CHANGE_WRITE,  /* data at [off, off + len) */
    CHANGE_ZERO,   /* punch or zero [off, off + len) inside the file */
    CHANGE_EXTEND, /* length at least off + len */
    CHANGE_SIZE,   /* truncate to off */
};

struct change {
    enum change_kind kind;
    uint64_t off, len;
    uint8_t *data; /* CHANGE_WRITE */
    uint64_t seq;  /* when it happened, in the file system's order */
    struct change *next;
};

struct mfile {
    char *name;
    struct pages cur;     /* what readers see */
    struct pages durable; /* volatile mode: what survives a crash */
    struct change *changes, *changes_tail; /* volatile: not yet durable */
    struct mfile *next;
};

struct mhandle {
    struct io_file base;
    struct memfs *fs;
    struct mfile *file;
    uint64_t boot;    /* the boot it was opened in */
    unsigned pending; /* operations not yet completed */
    bool closed;
};

/* An operation between submission and completion. */
struct mop {
    struct loop_task task; /* first: runs it from the loop */
    struct mhandle *h;
    struct io_op *op;
    unsigned delay;     /* loop rounds left before it runs */
    int forced;         /* injected error (positive errno) */
    uint64_t sync_mark; /* SYNC: changes up to here become durable */
    struct mop *prev, *next;
};

struct memfs {
    struct mfile *files;
    bool is_volatile;
    bool fallocate_ok;
    unsigned direct_align;
    uint64_t max_size;
    uint64_t boot;
    bool crashed;
    bool freed;
    unsigned handles;
    uint64_t ops;
    uint64_t fail_countdown;
    int fail_errno;
    uint64_t faults_fired;
    uint64_t crash_countdown;
    uint64_t crash_seed;
    unsigned delay_max;
    uint64_t rng;
    uint64_t change_seq;
    struct mop *inflight;
    unsigned n_inflight;
};

static uint64_t next_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rand_below(uint64_t *state, uint64_t n)
{
    return n ? next_rand(state) % n : 0;
}

static struct mfile *find_file(struct memfs *fs, const char *name)
{
    for (struct mfile *f = fs->files; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

static void free_changes(struct mfile *f)
{
    while (f->changes) {
        struct change *c = f->changes;
        f->changes = c->next;
        free(c->data);
        free(c);
    }
    f->changes_tail = NULL;
}

static void free_file(struct mfile *f)
{
    free_changes(f);
    pages_free(&f->cur);
    pages_free(&f->durable);
    free(f->name);
    free(f);
}

static void really_free(struct memfs *fs)
{
    while (fs->files) {
        struct mfile *f = fs->files;
        fs->files = f->next;
        free_file(f);
    }
    free(fs);
}

static struct mfile *new_file(struct memfs *fs, const char *name)
{
    struct mfile *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->name = strdup(name);
    if (!f->name) {
        free(f);
        return NULL;
    }
    f->next = fs->files;
    fs->files = f;
    return f;
}

/* Applies a change to a page store; torn writes keep only the 512-byte
 * sectors keep() chooses. */
static int apply_change(struct pages *p, const struct change *c,
                        uint64_t *torn_rng)
{
    switch (c->kind) {
    case CHANGE_WRITE:
        if (!torn_rng)
            return pages_write(p, c->off, c->data, c->len);
        for (uint64_t done = 0; done < c->len;) {
            uint64_t pos = c->off + done;
            uint64_t chunk = QED_MIN(c->len - done,
                                     SECTOR_BYTES - pos % SECTOR_BYTES);
            if (next_rand(torn_rng) & 1) {
                int ret = pages_write(p, pos, c->data + done, chunk);
                if (ret < 0)
                    return ret;
            }
            done += chunk;
        }
        return 0;
    case CHANGE_ZERO:
        pages_zero(p, c->off, c->len);
        return 0;
    case CHANGE_EXTEND:
        if (c->off + c->len > p->size)
            pages_set_size(p, c->off + c->len);
        return 0;
    case CHANGE_SIZE:
        pages_set_size(p, c->off);
        return 0;
    }
    return 0;
}

/* Volatile mode: remembers a change that readers already see. */
static int record_change(struct memfs *fs, struct mfile *f,
                         enum change_kind kind, uint64_t off, uint64_t len,
                         uint8_t *data)
{
    struct change *c;

    if (!fs->is_volatile) {
        free(data);
        return 0;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        free(data);
        return -ENOMEM;
    }
    c->kind = kind;
    c->off = off;
    c->len = len;
    c->data = data;
    c->seq = ++fs->change_seq;
    if (f->changes_tail)
        f->changes_tail->next = c;
    else
        f->changes = c;
    f->changes_tail = c;
    return 0;
}

/* A completed SYNC: the changes up to mark are durable, in order. */
static int make_durable(struct mfile *f, uint64_t mark)
{
    while (f->changes && f->changes->seq <= mark) {
        struct change *c = f->changes;
        int ret = apply_change(&f->durable, c, NULL);
        if (ret < 0)
            return ret;
        f->changes = c->next;
        if (!f->changes)
            f->changes_tail = NULL;
        free(c->data);
        free(c);
    }
    return 0;
}

static uint64_t iov_total(const struct iovec *iov, int iovcnt)
{
    uint64_t n = 0;
    for (int i = 0; i < iovcnt; i++)
        n += iov[i].iov_len;
    return n;
}

static uint8_t *gather(const struct iovec *iov, int iovcnt, uint64_t len)
{
    uint8_t *buf = malloc(len ? len : 1), *p = buf;
    if (!buf)
        return NULL;
    for (int i = 0; i < iovcnt; i++) {
        memcpy(p, iov[i].iov_base, iov[i].iov_len);
        p += iov[i].iov_len;
    }
    return buf;
}

static bool direct_misaligned(const struct mhandle *h, const struct io_op *op)
{
    uint64_t mask = h->base.align - 1;

    if (h->base.align <= 1 || op->kind == IO_SYNC ||
        op->kind == IO_FALLOCATE)
        return false;
    if (op->offset & mask)
        return true;
    for (int i = 0; i < op->iovcnt; i++)
        if (((uintptr_t)op->iov[i].iov_base & mask) ||
            (op->iov[i].iov_len & mask))
            return true;
    return false;
}

static ssize_t exec_read(struct mhandle *h, struct io_op *op)
{
    uint64_t off = op->offset, total = 0;

    for (int i = 0; i < op->iovcnt; i++) {
        uint64_t len = op->iov[i].iov_len;
        uint64_t n = pages_read(&h->file->cur, off, op->iov[i].iov_base, len);
        total += n;
        off += n;
        if (n < len)
            break;
    }
    return (ssize_t)total;
}

static ssize_t exec_write(struct mhandle *h, struct io_op *op)
{
    struct memfs *fs = h->fs;
    struct mfile *f = h->file;
    uint64_t len = iov_total(op->iov, op->iovcnt);
    uint8_t *data;
    int ret;

    if (op->offset + len > fs->max_size)
        return -ENOSPC;
    data = gather(op->iov, op->iovcnt, len);
    if (!data)
        return -ENOMEM;
    ret = pages_write(&f->cur, op->offset, data, len);
    if (ret == 0)
        ret = record_change(fs, f, CHANGE_WRITE, op->offset, len, data);
    else
        free(data);
    return ret < 0 ? ret : (ssize_t)len;
}

static ssize_t exec_fallocate(struct mhandle *h, struct io_op *op)
{
    struct memfs *fs = h->fs;
    struct mfile *f = h->file;
    uint64_t end;

    if (!fs->fallocate_ok)
        return -EOPNOTSUPP;
    if (add_overflows(op->offset, op->length, &end) || op->length == 0)
        return -EINVAL;
    switch (op->mode) {
    case 0:
        if (end > fs->max_size)
            return -ENOSPC;
        if (end > f->cur.size)
            pages_set_size(&f->cur, end);
        return record_change(fs, f, CHANGE_EXTEND, op->offset, op->length,
                             NULL);
    case FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE:
    case FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE:
        pages_zero(&f->cur, op->offset, op->length);
        return record_change(fs, f, CHANGE_ZERO, op->offset, op->length,
                             NULL);
    default:
        return -EOPNOTSUPP;
    }
}

static ssize_t exec_op(struct mop *m)
{
    struct mhandle *h = m->h;
    struct memfs *fs = h->fs;
    struct io_op *op = m->op;

    if (m->forced)
        return -m->forced;
    if (fs->crashed || h->boot != fs->boot)
        return -EIO;
    if (op->kind != IO_READ && op->kind != IO_SYNC && !h->base.writable)
        return -EBADF;
    if (direct_misaligned(h, op))
        return -EINVAL;
    switch (op->kind) {
    case IO_READ:
        return exec_read(h, op);
    case IO_WRITE:
        return exec_write(h, op);
    case IO_SYNC:
        if (fs->is_volatile)
            return make_durable(h->file, m->sync_mark);
        return 0;
    case IO_FALLOCATE:
        return exec_fallocate(h, op);
    }
    return -EINVAL;
}

static void handle_free(struct mhandle *h)
{
    struct memfs *fs = h->fs;
    free(h);
    if (--fs->handles == 0 && fs->freed)
        really_free(fs);
}

static void unlink_mop(struct memfs *fs, struct mop *m)
{
    if (m->prev)
        m->prev->next = m->next;
    else
        fs->inflight = m->next;
    if (m->next)
        m->next->prev = m->prev;
    fs->n_inflight--;
}

static void defer_mop(struct mop *m);

static void run_mop(struct loop_task *task)
{
    struct mop *m = (struct mop *)task;
    struct mhandle *h = m->h;
    struct io_op *op = m->op;

    if (m->delay > 0) {
        m->delay--;
        defer_mop(m);
        return;
    }
    unlink_mop(h->fs, m);
    op->result = exec_op(m);
    free(m);
    if (--h->pending == 0 && h->closed)
        handle_free(h);
    op->complete(op);
}

static void defer_mop(struct mop *m)
{
    m->task.run = run_mop;
    qedi_loop_defer(m->h->base.loop, &m->task);
}

static void do_crash(struct memfs *fs, uint64_t seed);

static int sim_submit(struct io_file *file, struct io_op *op)
{
    struct mhandle *h = (struct mhandle *)file;
    struct memfs *fs = h->fs;
    struct mop *m = calloc(1, sizeof(*m));

    if (!m)
        return -ENOMEM;
    fs->ops++;
    if (fs->crash_countdown && --fs->crash_countdown == 0)
        do_crash(fs, fs->crash_seed);
    m->h = h;
    m->op = op;
    if (fs->fail_countdown && --fs->fail_countdown == 0) {
        m->forced = fs->fail_errno;
        fs->faults_fired++;
    }
    if (op->kind == IO_SYNC)
        m->sync_mark = fs->change_seq;
    if (fs->delay_max)
        m->delay = (unsigned)rand_below(&fs->rng, fs->delay_max + 1u);
    m->next = fs->inflight;
    if (m->next)
        m->next->prev = m;
    fs->inflight = m;
    fs->n_inflight++;
    h->pending++;
    defer_mop(m);
    return 0;
}

static void sim_readv(struct io_file *file, const struct iovec *iov,
                      int iovcnt, uint64_t offset, io_callback *cb,
                      void *opaque)
{
    qedi_io_op_readv(file, sim_submit, iov, iovcnt, offset, cb, opaque);
}

static void sim_writev(struct io_file *file, const struct iovec *iov,
                       int iovcnt, uint64_t offset, io_callback *cb,
                       void *opaque)
{
    qedi_io_op_writev(file, sim_submit, iov, iovcnt, offset, cb, opaque);
}

static void sim_flush(struct io_file *file, io_callback *cb, void *opaque)
{
    qedi_io_op_flush(file, sim_submit, cb, opaque);
}

static void sim_fallocate(struct io_file *file, int mode, uint64_t offset,
                          uint64_t length, io_callback *cb, void *opaque)
{
    qedi_io_op_fallocate(file, sim_submit, mode, offset, length, cb, opaque);
}

static bool handle_dead(const struct mhandle *h)
{
    return h->fs->crashed || h->boot != h->fs->boot;
}

static int sim_get_size(struct io_file *file, uint64_t *size)
{
    struct mhandle *h = (struct mhandle *)file;
    if (handle_dead(h))
        return -EIO;
    *size = h->file->cur.size;
    return 0;
}

static int sim_truncate(struct io_file *file, uint64_t size)
{
    struct mhandle *h = (struct mhandle *)file;
    if (handle_dead(h))
        return -EIO;
    if (!h->base.writable)
        return -EBADF;
    if (size > h->fs->max_size)
        return -ENOSPC;
    pages_set_size(&h->file->cur, size);
    return record_change(h->fs, h->file, CHANGE_SIZE, size, 0, NULL);
}

static int sim_allocated_bytes(struct io_file *file, uint64_t *bytes)
{
    struct mhandle *h = (struct mhandle *)file;
    if (handle_dead(h))
        return -EIO;
    *bytes = pages_allocated(&h->file->cur);
    return 0;
}

/* Pages present are data, missing ones holes; the end of the file is a
 * hole. */
static int sim_seek(struct io_file *file, uint64_t offset, bool data,
                    uint64_t *out)
{
    struct mhandle *h = (struct mhandle *)file;
    const struct pages *p = &h->file->cur;

    if (handle_dead(h))
        return -EIO;
    if (offset >= p->size)
        return -ENXIO;
    for (uint64_t i = offset / PAGE_BYTES; i < pages_for(p->size); i++) {
        if ((page_at(p, i) != NULL) == data) {
            *out = QED_MAX(offset, i * PAGE_BYTES);
            return 0;
        }
    }
    if (data)
        return -ENXIO;
    *out = p->size;
    return 0;
}

static void sim_close(struct io_file *file)
{
    struct mhandle *h = (struct mhandle *)file;
    h->closed = true;
    if (h->pending == 0)
        handle_free(h);
}

static const struct storage_ops sim_file_ops = {
    .name = "memfs",
    .readv = sim_readv,
    .writev = sim_writev,
    .flush = sim_flush,
    .fallocate = sim_fallocate,
    .get_size = sim_get_size,
    .truncate = sim_truncate,
    .allocated_bytes = sim_allocated_bytes,
    .seek = sim_seek,
    .close = sim_close,
};

/* IO_OPEN_DIRECT asks for aligned requests, as the kernel does, so the
 * aligning layer goes over these files as over O_DIRECT ones. */
static int sim_open(const struct storage_driver *driver, qed_loop *loop,
                    const char *path, unsigned io_flags, struct io_file **out,
                    qed_error *err)
{
    struct memfs *fs = driver->ctx;
    struct mfile *f;
    struct mhandle *h;

    *out = NULL;
    if (fs->crashed)
        return qedi_fail(err, EIO, "%s (the simulated machine is down)",
                        strerror(EIO));
    f = find_file(fs, path);
    if (!f && (io_flags & IO_OPEN_CREATE))
        f = new_file(fs, path);
    if (!f)
        return qedi_fail(err, ENOENT, "%s", strerror(ENOENT));
    h = calloc(1, sizeof(*h));
    if (!h)
        return qedi_fail(err, ENOMEM, "out of memory");
    h->base.ops = &sim_file_ops;
    h->base.loop = loop;
    h->base.writable = (io_flags & IO_OPEN_WRITE) != 0;
    h->base.align = (io_flags & IO_OPEN_DIRECT) ? fs->direct_align : 1;
    h->fs = fs;
    h->file = f;
    h->boot = fs->boot;
    fs->handles++;
    *out = &h->base;
    return 0;
}

/* ---- crashes ---------------------------------------------------------------- */

/* What might reach the disk at a power loss: a change not yet durable, or an
 * operation still in flight. */
struct candidate {
    struct change change;
    bool owned; /* change.data belongs to the candidate */
};

static int inflight_candidate(struct mop *m, struct candidate *c)
{
    struct io_op *op = m->op;

    memset(c, 0, sizeof(*c));
    if (m->forced || !m->h->base.writable || direct_misaligned(m->h, op))
        return 0;
    switch (op->kind) {
    case IO_WRITE:
        c->change.kind = CHANGE_WRITE;
        c->change.off = op->offset;
        c->change.len = iov_total(op->iov, op->iovcnt);
        c->change.data = gather(op->iov, op->iovcnt, c->change.len);
        if (!c->change.data)
            return -ENOMEM;
        c->owned = true;
        return 1;
    case IO_FALLOCATE:
        if (!m->h->fs->fallocate_ok)
            return 0;
        if (op->mode == 0)
            c->change.kind = CHANGE_EXTEND;
        else if (op->mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) ||
                 op->mode == (FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE))
            c->change.kind = CHANGE_ZERO;
        else
            return 0;
        c->change.off = op->offset;
        c->change.len = op->length;
        return 1;
    default:
        return 0;
    }
}

static void crash_file(struct memfs *fs, struct mfile *f, uint64_t *rng)
{
    size_t n = 0, cap = 0;
    struct candidate *cands = NULL;
    uint64_t keep_per_256;

    for (struct change *c = f->changes; c; c = c->next)
        cap++;
    for (struct mop *m = fs->inflight; m; m = m->next)
        if (m->h->file == f && m->h->boot == fs->boot)
            cap++;
    if (cap)
        cands = calloc(cap, sizeof(*cands));
    if (cap && !cands)
        abort();
    for (struct change *c = f->changes; c; c = c->next)
        cands[n++].change = *c;
    for (struct mop *m = fs->inflight; m; m = m->next) {
        if (m->h->file != f || m->h->boot != fs->boot)
            continue;
        int r = inflight_candidate(m, &cands[n]);
        if (r < 0)
            abort();
        if (r > 0)
            n++;
    }
    /* Shuffle, then keep each with one probability per file: none, all,
     * or anything in between. */
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)rand_below(rng, i);
        struct candidate t = cands[i - 1];
        cands[i - 1] = cands[j];
        cands[j] = t;
    }
    switch (rand_below(rng, 4)) {
    case 0:
        keep_per_256 = 0;
        break;
    case 1:
        keep_per_256 = 256;
        break;
    default:
        keep_per_256 = 1 + rand_below(rng, 255);
        break;
    }
    for (size_t i = 0; i < n; i++) {
        const struct change *c = &cands[i].change;
        bool torn = c->kind == CHANGE_WRITE && rand_below(rng, 4) == 0;
        if (rand_below(rng, 256) >= keep_per_256)
            continue;
        if (apply_change(&f->durable, c, torn ? rng : NULL) < 0)
            abort();
    }
    for (size_t i = 0; i < n; i++)
        if (cands[i].owned)
            free(cands[i].change.data);
    free(cands);
    free_changes(f);
    if (pages_clone(&f->cur, &f->durable) < 0)
        abort();
}

static void do_crash(struct memfs *fs, uint64_t seed)
{
    uint64_t rng = seed ^ 0x5bd1e9955bd1e995ull;

    fs->crash_countdown = 0;
    if (fs->crashed)
        return;
    if (fs->is_volatile)
        for (struct mfile *f = fs->files; f; f = f->next)
            crash_file(fs, f, &rng);
    fs->boot++;
    fs->crashed = true;
}

/* ---- public interface ----------------------------------------------------------- */

struct memfs *memfs_new(void)
{
    struct memfs *fs = calloc(1, sizeof(*fs));
    if (!fs)
        return NULL;
    fs->fallocate_ok = true;
    fs->direct_align = SECTOR_BYTES;
    fs->max_size = DEFAULT_MAX_FILE_SIZE;
    return fs;
}

void memfs_free(struct memfs *fs)
{
    if (!fs)
        return;
    if (fs->handles == 0)
        really_free(fs);
    else
        fs->freed = true;
}

static int set_content(struct memfs *fs, struct mfile *f, const void *data,
                       size_t len)
{
    struct pages p = { 0 };
    int ret;

    if (len > fs->max_size)
        return -ENOSPC;
    ret = pages_write(&p, 0, data, len);
    if (ret == 0 && fs->is_volatile)
        ret = pages_clone(&f->durable, &p);
    if (ret < 0) {
        pages_free(&p);
        return ret;
    }
    free_changes(f);
    pages_free(&f->cur);
    f->cur = p;
    return 0;
}

int memfs_add(struct memfs *fs, const char *name, const void *data,
              size_t len)
{
    struct mfile *f = find_file(fs, name);
    bool created = false;
    int ret;

    if (!f) {
        f = new_file(fs, name);
        if (!f)
            return -ENOMEM;
        created = true;
    }
    ret = set_content(fs, f, data, len);
    if (ret < 0 && created) {
        fs->files = f->next;
        free_file(f);
    }
    return ret;
}

int memfs_load(struct memfs *fs, const char *name, const char *disk_path)
{
    int fd = open(disk_path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    uint8_t *buf;
    size_t done = 0;
    int ret;

    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        ret = -errno;
        close(fd);
        return ret;
    }
    buf = malloc(st.st_size ? (size_t)st.st_size : 1);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    while (done < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + done, (size_t)st.st_size - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            ret = n < 0 ? -errno : -EIO;
            free(buf);
            close(fd);
            return ret;
        }
        done += (size_t)n;
    }
    close(fd);
    ret = memfs_add(fs, name, buf, done);
    free(buf);
    return ret;
}

int memfs_get(struct memfs *fs, const char *name, uint8_t **data, size_t *len)
{
    struct mfile *f = find_file(fs, name);
    uint8_t *buf;

    *data = NULL;
    *len = 0;
    if (!f)
        return -ENOENT;
    buf = malloc(f->cur.size ? (size_t)f->cur.size : 1);
    if (!buf)
        return -ENOMEM;
    pages_read(&f->cur, 0, buf, f->cur.size);
    *data = buf;
    *len = (size_t)f->cur.size;
    return 0;
}

int memfs_pread(struct memfs *fs, const char *name, void *buf, size_t len,
                uint64_t off)
{
    struct mfile *f = find_file(fs, name);
    uint64_t n;

    if (!f)
        return -ENOENT;
    n = pages_read(&f->cur, off, buf, len);
    memset((uint8_t *)buf + n, 0, len - n);
    return 0;
}

bool memfs_exists(struct memfs *fs, const char *name)
{
    return find_file(fs, name) != NULL;
}

struct storage_driver memfs_opener(struct memfs *fs)
{
    struct storage_driver d = { .name = "memfs", .open = sim_open, .ctx = fs };
    return d;
}

void memfs_set_max_file_size(struct memfs *fs, uint64_t bytes)
{
    fs->max_size = bytes;
}

void memfs_set_fallocate(struct memfs *fs, bool supported)
{
    fs->fallocate_ok = supported;
}

void memfs_set_direct_align(struct memfs *fs, unsigned align)
{
    fs->direct_align = align && is_power_of_2(align) ? align : SECTOR_BYTES;
}

void memfs_set_delays(struct memfs *fs, unsigned max_rounds, uint64_t seed)
{
    fs->delay_max = max_rounds;
    fs->rng = seed;
}

void memfs_set_volatile(struct memfs *fs, bool on)
{
    if (on == fs->is_volatile)
        return;
    for (struct mfile *f = fs->files; f; f = f->next) {
        free_changes(f);
        if (on) {
            if (pages_clone(&f->durable, &f->cur) < 0)
                abort();
        } else {
            pages_free(&f->durable);
        }
    }
    fs->is_volatile = on;
}

void memfs_crash(struct memfs *fs, uint64_t seed)
{
    do_crash(fs, seed);
}

void memfs_crash_at(struct memfs *fs, uint64_t n, uint64_t seed)
{
    fs->crash_countdown = n;
    fs->crash_seed = seed;
}

bool memfs_crashed(const struct memfs *fs)
{
    return fs->crashed;
}

void memfs_revive(struct memfs *fs)
{
    fs->crashed = false;
}

void memfs_fail_nth(struct memfs *fs, uint64_t n, int errno_value)
{
    fs->fail_countdown = n;
    fs->fail_errno = errno_value > 0 ? errno_value : EIO;
}

uint64_t memfs_faults_fired(const struct memfs *fs)
{
    return fs->faults_fired;
}

uint64_t memfs_op_count(const struct memfs *fs)
{
    return fs->ops;
}

unsigned memfs_in_flight(const struct memfs *fs)
{
    return fs->n_inflight;
}
