/* SPDX-License-Identifier: MIT */
/* The engine's calls on a storage (io.h) and what every driver shares
 * (storage.h): opening through a driver, results reported from the loop,
 * layers passing operations down. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>

#include "io-direct.h"
#include "storage.h"

void *(*qedi_io_calloc)(size_t count, size_t size) = calloc;

/* ---- results reported from the loop ---------------------------------------- */

/* Reports in hand when the first storage opens on a loop: a request that
 * cannot get memory still has one to complete with. */
#define REPORT_RESERVE 64

struct report {
    struct loop_task task; /* first: the loop hands it back */
    struct report_pool *pool;
    io_callback *cb;
    void *opaque;
    int ret;
    struct report *next_free;
};

/* A loop's reports: used ones come back here, so the reserve only grows. */
struct report_pool {
    struct report *free;
    unsigned count; /* reports the pool owns, free or in use */
};

/* Its address finds the pool among the loop's slots. */
static const char report_key;

static void pool_destroy(void *opaque)
{
    struct report_pool *pool = opaque;

    while (pool->free) {
        struct report *r = pool->free;
        pool->free = r->next_free;
        free(r);
    }
    free(pool);
}

/* The loop's pool with its reserve, made on the first open (and completed
 * on a later one if memory ran out meanwhile). */
static int pool_ensure(qed_loop *loop, qed_error *err)
{
    struct report_pool *pool = qedi_loop_slot(loop, &report_key);

    if (!pool) {
        pool = qedi_io_calloc(1, sizeof(*pool));
        if (!pool ||
            qedi_loop_slot_fill(loop, &report_key, pool, pool_destroy) < 0) {
            free(pool);
            return qedi_fail(err, ENOMEM, "out of memory");
        }
    }
    while (pool->count < REPORT_RESERVE) {
        struct report *r = qedi_io_calloc(1, sizeof(*r));
        if (!r)
            return qedi_fail(err, ENOMEM, "out of memory");
        r->pool = pool;
        r->next_free = pool->free;
        pool->free = r;
        pool->count++;
    }
    return 0;
}

static void run_report(struct loop_task *task)
{
    struct report *r = (struct report *)task;
    io_callback *cb = r->cb;
    void *opaque = r->opaque;
    int ret = r->ret;

    if (r->pool) {
        r->next_free = r->pool->free;
        r->pool->free = r;
    } else {
        free(r);
    }
    cb(opaque, ret);
}

/* A report beyond the reserve.  Without memory even for that, waiting is
 * the one choice left: a lost completion would hang its caller forever and
 * the library does not abort. */
static struct report *report_alloc(void)
{
    struct timespec pause = { 0, 1000000 };

    for (;;) {
        struct report *r = qedi_io_calloc(1, sizeof(*r));
        if (r)
            return r;
        nanosleep(&pause, NULL);
        if (pause.tv_nsec < 100000000)
            pause.tv_nsec *= 2;
    }
}

void qedi_storage_complete_later(struct io_file *file, io_callback *cb,
                            void *opaque, int ret)
{
    struct report_pool *pool = qedi_loop_slot(file->loop, &report_key);
    struct report *r = pool ? pool->free : NULL;

    if (r) {
        pool->free = r->next_free;
    } else {
        r = report_alloc();
        r->pool = pool;
        if (pool)
            pool->count++;
    }
    r->task.run = run_report;
    r->cb = cb;
    r->opaque = opaque;
    r->ret = ret;
    qedi_loop_defer(file->loop, &r->task);
}

/* ---- the engine's calls ------------------------------------------------------- */

static bool empty(const struct iovec *iov, int iovcnt)
{
    for (int i = 0; i < iovcnt; i++)
        if (iov[i].iov_len)
            return false;
    return true;
}

void qedi_io_readv(struct io_file *file, const struct iovec *iov, int iovcnt,
              uint64_t offset, io_callback *cb, void *opaque)
{
    if (empty(iov, iovcnt))
        qedi_storage_complete_later(file, cb, opaque, 0);
    else
        file->ops->readv(file, iov, iovcnt, offset, cb, opaque);
}

void qedi_io_writev(struct io_file *file, const struct iovec *iov, int iovcnt,
               uint64_t offset, io_callback *cb, void *opaque)
{
    if (empty(iov, iovcnt))
        qedi_storage_complete_later(file, cb, opaque, 0);
    else
        file->ops->writev(file, iov, iovcnt, offset, cb, opaque);
}

void qedi_io_pread(struct io_file *file, void *buf, size_t len, uint64_t offset,
              io_callback *cb, void *opaque)
{
    struct iovec v = { buf, len };
    qedi_io_readv(file, &v, 1, offset, cb, opaque);
}

void qedi_io_pwrite(struct io_file *file, const void *buf, size_t len,
               uint64_t offset, io_callback *cb, void *opaque)
{
    struct iovec v = { (void *)buf, len };
    qedi_io_writev(file, &v, 1, offset, cb, opaque);
}

void qedi_io_sync(struct io_file *file, io_callback *cb, void *opaque)
{
    file->ops->flush(file, cb, opaque);
}

void qedi_io_fallocate(struct io_file *file, int mode, uint64_t offset,
                  uint64_t length, io_callback *cb, void *opaque)
{
    file->ops->fallocate(file, mode, offset, length, cb, opaque);
}

/* ---- synchronous helpers for start-up paths ------------------------------ */

struct sync_wait {
    bool done;
    int ret;
};

static void sync_done(void *opaque, int ret)
{
    struct sync_wait *w = opaque;
    w->done = true;
    w->ret = ret;
}

static int wait_for(qed_loop *loop, struct sync_wait *w)
{
    while (!w->done) {
        int r = qed_loop_run(loop, -1);
        if (r < 0)
            return r;
    }
    return w->ret;
}

int qedi_io_pread_sync(struct io_file *file, void *buf, size_t len, uint64_t offset)
{
    struct sync_wait w = { 0 };
    qedi_io_pread(file, buf, len, offset, sync_done, &w);
    return wait_for(file->loop, &w);
}

int qedi_io_pwrite_sync(struct io_file *file, const void *buf, size_t len,
                   uint64_t offset)
{
    struct sync_wait w = { 0 };
    qedi_io_pwrite(file, buf, len, offset, sync_done, &w);
    return wait_for(file->loop, &w);
}

int qedi_io_fallocate_sync(struct io_file *file, int mode, uint64_t offset,
                      uint64_t length)
{
    struct sync_wait w = { 0 };
    qedi_io_fallocate(file, mode, offset, length, sync_done, &w);
    return wait_for(file->loop, &w);
}

int qedi_io_sync_sync(struct io_file *file)
{
    struct sync_wait w = { 0 };
    qedi_io_sync(file, sync_done, &w);
    return wait_for(file->loop, &w);
}

/* ---- opening and closing ------------------------------------------------------ */

int qedi_storage_unknown_allocation(struct io_file *file, uint64_t *bytes)
{
    (void)file;
    *bytes = 0;
    return -ENOTSUP;
}

int qedi_storage_cannot_seek(struct io_file *file, uint64_t offset, bool data,
                             uint64_t *out)
{
    (void)file;
    (void)offset;
    (void)data;
    (void)out;
    return -ENOTSUP;
}

int qedi_storage_open(const struct storage_driver *driver, qed_loop *loop,
                 const char *path, unsigned flags, struct io_file **out,
                 qed_error *err)
{
    struct io_file *file, *aligned;
    int ret;

    *out = NULL;
    if (!driver)
        driver = qedi_storage_driver_for(path);
    ret = pool_ensure(loop, err);
    if (ret < 0)
        return ret;
    ret = driver->open(driver, loop, path, flags, &file, err);
    if (ret < 0)
        return ret;
    if (file->ops->lock) {
        ret = file->ops->lock(file, path, flags, err);
        if (ret < 0) {
            qedi_io_file_close(file);
            return ret;
        }
    }
    if (file->align > 1) {
        ret = qedi_io_direct_stack(file, &aligned, err);
        if (ret < 0) {
            qedi_io_file_close(file);
            return ret;
        }
        file = aligned;
    }
    *out = file;
    return 0;
}

int qedi_io_file_open(qed_loop *loop, const char *path, unsigned flags,
                 struct io_file **out, qed_error *err)
{
    return qedi_storage_open(&qedi_storage_file_driver, loop, path, flags, out, err);
}

void qedi_io_file_close(struct io_file *file)
{
    if (file)
        file->ops->close(file);
}

/* ---- layers ----------------------------------------------------------------- */

static struct io_file *lower_of(struct io_file *file)
{
    return ((struct storage_layer *)file)->lower;
}

void qedi_storage_layer_init(struct storage_layer *layer,
                        const struct storage_ops *ops, struct io_file *lower)
{
    layer->base.ops = ops;
    layer->base.loop = lower->loop;
    layer->base.writable = lower->writable;
    layer->base.align = 1;
    layer->base.lock_unsupported = lower->lock_unsupported;
    layer->lower = lower;
}

void qedi_storage_layer_readv(struct io_file *file, const struct iovec *iov,
                         int iovcnt, uint64_t offset, io_callback *cb,
                         void *opaque)
{
    qedi_io_readv(lower_of(file), iov, iovcnt, offset, cb, opaque);
}

void qedi_storage_layer_writev(struct io_file *file, const struct iovec *iov,
                          int iovcnt, uint64_t offset, io_callback *cb,
                          void *opaque)
{
    qedi_io_writev(lower_of(file), iov, iovcnt, offset, cb, opaque);
}

void qedi_storage_layer_flush(struct io_file *file, io_callback *cb, void *opaque)
{
    qedi_io_sync(lower_of(file), cb, opaque);
}

void qedi_storage_layer_fallocate(struct io_file *file, int mode, uint64_t offset,
                             uint64_t length, io_callback *cb, void *opaque)
{
    qedi_io_fallocate(lower_of(file), mode, offset, length, cb, opaque);
}

int qedi_storage_layer_get_size(struct io_file *file, uint64_t *size)
{
    struct io_file *lower = lower_of(file);
    return lower->ops->get_size(lower, size);
}

int qedi_storage_layer_truncate(struct io_file *file, uint64_t size)
{
    struct io_file *lower = lower_of(file);
    return lower->ops->truncate(lower, size);
}

int qedi_storage_layer_allocated_bytes(struct io_file *file, uint64_t *bytes)
{
    struct io_file *lower = lower_of(file);
    return lower->ops->allocated_bytes(lower, bytes);
}

int qedi_storage_layer_seek(struct io_file *file, uint64_t offset, bool data,
                       uint64_t *out)
{
    struct io_file *lower = lower_of(file);
    return lower->ops->seek(lower, offset, data, out);
}

void qedi_storage_layer_close(struct io_file *file)
{
    qedi_io_file_close(lower_of(file));
    free(file);
}
