/* SPDX-License-Identifier: MIT */
/* The storage driver interface (lib/storage.h): a driver written here, in
 * memory, plugs in through qedi_storage_open; one that asks for aligned requests
 * gets the aligning layer over it and sees nothing else; its lock hook runs
 * once, and a refusal closes it.  Requests that cannot get memory complete
 * with -ENOMEM through their callback, from the loop, never inside the
 * call, also beyond the reserve kept for that; so do empty transfers. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "storage.h"
#include "qed.h"
#include "support-image.h"
#include "../tap.h"

/* ---- a driver in memory ------------------------------------------------------ */

#define MEM_SIZE (256u * 1024)

struct mem_ctx {
    unsigned align;       /* what the storage asks for */
    int lock_ret;         /* what the lock hook returns */
    unsigned locks;       /* lock hook calls */
    unsigned misaligned;  /* requests that broke the alignment */
    unsigned transfers;   /* reads and writes seen */
    unsigned closes;
};

struct mem_file {
    struct io_file base;
    struct mem_ctx *ctx;
    uint8_t data[MEM_SIZE];
    uint64_t size;
};

static struct mem_file *mem_of(struct io_file *file)
{
    return (struct mem_file *)file;
}

static void check_alignment(struct mem_file *m, const struct iovec *iov,
                            int iovcnt, uint64_t offset)
{
    uint64_t mask = m->base.align > 1 ? m->base.align - 1 : 0;
    bool bad = (offset & mask) != 0;

    for (int i = 0; i < iovcnt; i++)
        bad = bad || ((uintptr_t)iov[i].iov_base & mask) ||
              (iov[i].iov_len & mask);
    m->ctx->misaligned += bad;
    m->ctx->transfers++;
}

static void mem_readv(struct io_file *file, const struct iovec *iov,
                      int iovcnt, uint64_t offset, io_callback *cb,
                      void *opaque)
{
    struct mem_file *m = mem_of(file);

    check_alignment(m, iov, iovcnt, offset);
    for (int i = 0; i < iovcnt; i++) {
        uint8_t *dst = iov[i].iov_base;
        for (size_t j = 0; j < iov[i].iov_len; j++, offset++)
            dst[j] = offset < m->size ? m->data[offset] : 0;
    }
    qedi_storage_complete_later(file, cb, opaque, 0);
}

static void mem_writev(struct io_file *file, const struct iovec *iov,
                       int iovcnt, uint64_t offset, io_callback *cb,
                       void *opaque)
{
    struct mem_file *m = mem_of(file);
    int ret = 0;

    check_alignment(m, iov, iovcnt, offset);
    for (int i = 0; i < iovcnt && ret == 0; i++) {
        if (offset + iov[i].iov_len > MEM_SIZE) {
            ret = -ENOSPC;
            break;
        }
        memcpy(m->data + offset, iov[i].iov_base, iov[i].iov_len);
        offset += iov[i].iov_len;
        if (offset > m->size)
            m->size = offset;
    }
    qedi_storage_complete_later(file, cb, opaque, ret);
}

static void mem_flush(struct io_file *file, io_callback *cb, void *opaque)
{
    qedi_storage_complete_later(file, cb, opaque, 0);
}

static void mem_fallocate(struct io_file *file, int mode, uint64_t offset,
                          uint64_t length, io_callback *cb, void *opaque)
{
    (void)mode;
    (void)offset;
    (void)length;
    qedi_storage_complete_later(file, cb, opaque, -EOPNOTSUPP);
}

static int mem_get_size(struct io_file *file, uint64_t *size)
{
    *size = mem_of(file)->size;
    return 0;
}

static int mem_truncate(struct io_file *file, uint64_t size)
{
    if (size > MEM_SIZE)
        return -ENOSPC;
    mem_of(file)->size = size;
    return 0;
}

static int mem_allocated_bytes(struct io_file *file, uint64_t *bytes)
{
    *bytes = mem_of(file)->size;
    return 0;
}

static int mem_seek(struct io_file *file, uint64_t offset, bool data,
                    uint64_t *out)
{
    (void)file;
    (void)offset;
    (void)data;
    (void)out;
    return -ENOTSUP;
}

static int mem_lock(struct io_file *file, const char *path, unsigned flags,
                    qed_error *err)
{
    struct mem_ctx *ctx = mem_of(file)->ctx;

    (void)flags;
    ctx->locks++;
    if (ctx->lock_ret < 0)
        return qedi_fail(err, -ctx->lock_ret, "%s is taken", path);
    return 0;
}

static void mem_close(struct io_file *file)
{
    mem_of(file)->ctx->closes++;
    free(file);
}

static const struct storage_ops mem_ops = {
    .name = "test-memory",
    .readv = mem_readv,
    .writev = mem_writev,
    .flush = mem_flush,
    .fallocate = mem_fallocate,
    .get_size = mem_get_size,
    .truncate = mem_truncate,
    .allocated_bytes = mem_allocated_bytes,
    .seek = mem_seek,
    .lock = mem_lock,
    .close = mem_close,
};

static int mem_open(const struct storage_driver *driver, qed_loop *loop,
                    const char *path, unsigned flags, struct io_file **out,
                    qed_error *err)
{
    struct mem_ctx *ctx = driver->ctx;
    struct mem_file *m = calloc(1, sizeof(*m));

    (void)path;
    if (!m)
        return qedi_fail(err, ENOMEM, "out of memory");
    m->base.ops = &mem_ops;
    m->base.loop = loop;
    m->base.writable = (flags & IO_OPEN_WRITE) != 0;
    m->base.align = ctx->align;
    m->ctx = ctx;
    *out = &m->base;
    return 0;
}

/* ---- helpers ----------------------------------------------------------------- */

struct result {
    bool done;
    int ret;
    unsigned *count; /* incremented on completion when set */
};

static void record(void *opaque, int ret)
{
    struct result *r = opaque;
    r->done = true;
    r->ret = ret;
    if (r->count)
        (*r->count)++;
}

static int wait_result(qed_loop *loop, struct result *r)
{
    while (!r->done)
        if (qed_loop_run(loop, 1000) < 0)
            return -EIO;
    return r->ret;
}

/* An allocator for qedi_io_calloc that fails the next fail_next calls, and
 * every call above fail_above bytes. */
static unsigned fail_next;
static size_t fail_above = SIZE_MAX;

static void *failing_calloc(size_t count, size_t size)
{
    if (fail_next > 0) {
        fail_next--;
        return NULL;
    }
    if (count * size > fail_above)
        return NULL;
    return calloc(count, size);
}

static void allocations_work(void)
{
    qedi_io_calloc = calloc;
    fail_next = 0;
    fail_above = SIZE_MAX;
}

/* ---- tests ------------------------------------------------------------------- */

static void test_plugged_driver(qed_loop *loop)
{
    struct mem_ctx ctx = { .align = 1 };
    struct storage_driver drv = { .name = "test-memory", .open = mem_open,
                                  .ctx = &ctx };
    struct io_file *f = NULL;
    qed_error err = { 0 };
    uint8_t buf[100], back[150];

    ok(qedi_storage_open(&drv, loop, "m", IO_OPEN_WRITE, &f, &err) == 0 && f,
       "a driver of the test's own opens through qedi_storage_open");
    if (!f)
        return;
    ok(f->ops == &mem_ops, "without an alignment it is used as it is");
    is_u64(ctx.locks, 1, "its lock hook ran once");
    memset(buf, 0x5a, sizeof(buf));
    ok(qedi_io_pwrite_sync(f, buf, sizeof(buf), 10) == 0 &&
       qedi_io_pread_sync(f, back, sizeof(back), 0) == 0 && back[9] == 0 &&
       back[10] == 0x5a && back[109] == 0x5a && back[110] == 0,
       "the engine's calls reach it: write, then a read past its end");
    qedi_io_file_close(f);
    is_u64(ctx.closes, 1, "qedi_io_file_close closes it");
}

static void test_aligning_layer(qed_loop *loop)
{
    struct mem_ctx ctx = { .align = 4096 };
    struct storage_driver drv = { .name = "test-memory", .open = mem_open,
                                  .ctx = &ctx };
    struct io_file *f = NULL;
    qed_error err = { 0 };
    uint8_t *buf = malloc(20000), *back = malloc(20000);
    uint64_t size = 0;
    bool same = true;

    ok(qedi_storage_open(&drv, loop, "m", IO_OPEN_WRITE, &f, &err) == 0 && f,
       "a driver asking for 4096-byte alignment opens");
    if (!f || !buf || !back)
        goto out;
    ok(f->ops != &mem_ops && f->align <= 1,
       "the aligning layer is stacked over it and takes any request");
    for (unsigned i = 0; i < 20000; i++)
        buf[i] = (uint8_t)(i * 7 + 1);
    ok(qedi_io_pwrite_sync(f, buf + 1, 10000, 4097) == 0 &&
       qedi_io_pwrite_sync(f, buf + 3, 513, 100) == 0,
       "unaligned writes of unaligned buffers succeed");
    ok(qedi_io_pread_sync(f, back + 5, 10000, 4097) == 0,
       "an unaligned read succeeds");
    for (unsigned i = 0; i < 10000; i++)
        same = same && back[5 + i] == buf[1 + i];
    ok(same, "it reads back what was written");
    ok(qedi_io_pread_sync(f, back, 513, 100) == 0 && memcmp(back, buf + 3, 513) == 0,
       "a write inside one block kept its neighbours (read-modify-write)");
    is_u64(ctx.misaligned, 0, "the driver saw only aligned requests (of %u)",
           ctx.transfers);
    ok(f->ops->get_size(f, &size) == 0 && size == 16384,
       "sizes pass through the layer (the file ends on a block)");
    qedi_io_file_close(f);
    is_u64(ctx.closes, 1, "closing the layer closes the driver's file");
out:
    free(buf);
    free(back);
}

static void test_lock_refused(qed_loop *loop)
{
    struct mem_ctx ctx = { .align = 1, .lock_ret = -EAGAIN };
    struct storage_driver drv = { .name = "test-memory", .open = mem_open,
                                  .ctx = &ctx };
    struct io_file *f = NULL;
    qed_error err = { 0 };
    int ret = qedi_storage_open(&drv, loop, "busy", IO_OPEN_WRITE, &f, &err);

    ok(ret == -EAGAIN && f == NULL, "a lock hook's refusal fails the open");
    is_str(err.message, "busy is taken", "with the hook's message");
    is_u64(ctx.closes, 1, "and closes what the driver opened");
}

static void test_empty_transfer(qed_loop *loop, struct io_file *f)
{
    struct result r = { 0 };

    qedi_io_pread(f, NULL, 0, 0, record, &r);
    ok(!r.done, "an empty read does not complete inside the call");
    ok(wait_result(loop, &r) == 0, "it completes with 0 from the loop");
}

static void test_no_memory(qed_loop *loop, struct io_file *f)
{
    struct result r = { 0 };
    uint8_t buf[512];

    qedi_io_calloc = failing_calloc;
    fail_next = 1;
    qedi_io_pread(f, buf, sizeof(buf), 0, record, &r);
    allocations_work();
    ok(!r.done, "a read that cannot get memory does not complete inside "
       "the call");
    is_u64(wait_result(loop, &r), (uint64_t)-ENOMEM,
           "its callback gets -ENOMEM from the loop");
    r.done = false;
    qedi_io_pread(f, buf, sizeof(buf), 0, record, &r);
    ok(wait_result(loop, &r) == 0, "the next read works");
}

/* Requests need more than 128 bytes, a report less: every request fails,
 * far more of them than the reserve holds. */
static void test_many_without_memory(qed_loop *loop, struct io_file *f)
{
    enum { N = 300 };
    struct result *r = calloc(N, sizeof(*r));
    unsigned done = 0, enomem = 0;
    uint8_t buf[512];

    if (!ok(r != NULL, "room for %d results", N))
        return;
    qedi_io_calloc = failing_calloc;
    fail_above = 128;
    for (int i = 0; i < N; i++) {
        r[i].count = &done;
        qedi_io_pread(f, buf, sizeof(buf), 0, record, &r[i]);
    }
    allocations_work();
    is_u64(done, 0, "%d reads without memory: none completes inside its "
           "call", N);
    while (done < N)
        if (qed_loop_run(loop, 1000) < 0)
            break;
    for (int i = 0; i < N; i++)
        enomem += r[i].ret == -ENOMEM;
    is_u64(enomem, N, "every one gets -ENOMEM from the loop");
    free(r);
}

/* Nothing can be allocated for a while, not even a report, once the
 * reserve is spent: the last read waits for memory and still completes. */
static void test_reserve_spent(qed_loop *loop, struct io_file *f)
{
    enum { N = 65 };
    struct result r[N];
    unsigned done = 0, enomem = 0;
    uint8_t buf[512];

    memset(r, 0, sizeof(r));
    qedi_io_calloc = failing_calloc;
    fail_next = N + 3;
    for (int i = 0; i < N; i++) {
        r[i].count = &done;
        qedi_io_pread(f, buf, sizeof(buf), 0, record, &r[i]);
    }
    allocations_work();
    is_u64(done, 0, "%d reads with no memory at all: none completes inside "
           "its call", N);
    while (done < N)
        if (qed_loop_run(loop, 1000) < 0)
            break;
    for (int i = 0; i < N; i++)
        enomem += r[i].ret == -ENOMEM;
    is_u64(enomem, N, "every one gets -ENOMEM from the loop");
}

int main(void)
{
    char dir[256];
    const char *path;
    qed_loop *loop = NULL;
    struct io_file *f = NULL;
    qed_error err = { 0 };
    int fd;

    /* A fresh loop: its reserve is whole for test_reserve_spent. */
    if (support_mkdtemp("storage", dir, sizeof(dir)) < 0 ||
        qed_loop_new(QED_ENGINE_AUTO, &loop, &err) < 0) {
        ok(0, "a temporary directory and a loop: %s", err.message);
        return tap_done();
    }
    path = support_path(dir, "f.raw");
    fd = open(path, O_RDWR | O_CREAT, 0644);
    ok(fd >= 0 && ftruncate(fd, 65536) == 0, "a 64 KiB file");
    if (fd >= 0)
        close(fd);
    if (ok(qedi_io_file_open(loop, path, IO_OPEN_WRITE, &f, &err) == 0,
           "the file opens through the local file driver")) {
        test_reserve_spent(loop, f);
        test_no_memory(loop, f);
        test_many_without_memory(loop, f);
        test_empty_transfer(loop, f);
        qedi_io_file_close(f);
    }
    test_plugged_driver(loop);
    test_aligning_layer(loop);
    test_lock_refused(loop);
    qed_loop_free(loop);
    support_rmtree(dir);
    return tap_done();
}
