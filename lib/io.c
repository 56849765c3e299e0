/* SPDX-License-Identifier: MIT */
/* The engine's calls on a storage (io.h) and what every driver shares
 * (storage.h): opening through a driver, results reported from the loop,
 * layers passing operations down. */
#include <errno.h>
#include <stdlib.h>

#include "io-direct.h"
#include "io.h"

/* ---- results reported from the loop ---------------------------------------- */

struct later_call {
    io_callback *cb;
    void *opaque;
    int ret;
};

static void run_later_call(void *arg)
{
    struct later_call *c = arg;
    io_callback *cb = c->cb;
    void *opaque = c->opaque;
    int ret = c->ret;
    free(c);
    cb(opaque, ret);
}

void storage_complete_later(struct io_file *file, io_callback *cb,
                            void *opaque, int ret)
{
    struct later_call *c = malloc(sizeof(*c));
    if (c) {
        c->cb = cb;
        c->opaque = opaque;
        c->ret = ret;
        if (loop_defer_call(file->loop, run_later_call, c) == 0)
            return;
        free(c);
    }
    /* Not even a few bytes to report the failure with. */
    abort();
}

/* ---- the engine's calls ------------------------------------------------------- */

static bool empty(const struct iovec *iov, int iovcnt)
{
    for (int i = 0; i < iovcnt; i++)
        if (iov[i].iov_len)
            return false;
    return true;
}

void io_readv(struct io_file *file, const struct iovec *iov, int iovcnt,
              uint64_t offset, io_callback *cb, void *opaque)
{
    if (empty(iov, iovcnt))
        storage_complete_later(file, cb, opaque, 0);
    else
        file->ops->readv(file, iov, iovcnt, offset, cb, opaque);
}

void io_writev(struct io_file *file, const struct iovec *iov, int iovcnt,
               uint64_t offset, io_callback *cb, void *opaque)
{
    if (empty(iov, iovcnt))
        storage_complete_later(file, cb, opaque, 0);
    else
        file->ops->writev(file, iov, iovcnt, offset, cb, opaque);
}

void io_pread(struct io_file *file, void *buf, size_t len, uint64_t offset,
              io_callback *cb, void *opaque)
{
    struct iovec v = { buf, len };
    io_readv(file, &v, 1, offset, cb, opaque);
}

void io_pwrite(struct io_file *file, const void *buf, size_t len,
               uint64_t offset, io_callback *cb, void *opaque)
{
    struct iovec v = { (void *)buf, len };
    io_writev(file, &v, 1, offset, cb, opaque);
}

void io_sync(struct io_file *file, io_callback *cb, void *opaque)
{
    file->ops->flush(file, cb, opaque);
}

void io_fallocate(struct io_file *file, int mode, uint64_t offset,
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

int io_pread_sync(struct io_file *file, void *buf, size_t len, uint64_t offset)
{
    struct sync_wait w = { 0 };
    io_pread(file, buf, len, offset, sync_done, &w);
    return wait_for(file->loop, &w);
}

int io_pwrite_sync(struct io_file *file, const void *buf, size_t len,
                   uint64_t offset)
{
    struct sync_wait w = { 0 };
    io_pwrite(file, buf, len, offset, sync_done, &w);
    return wait_for(file->loop, &w);
}

int io_sync_sync(struct io_file *file)
{
    struct sync_wait w = { 0 };
    io_sync(file, sync_done, &w);
    return wait_for(file->loop, &w);
}

/* ---- opening and closing ------------------------------------------------------ */

int storage_open(const struct storage_driver *driver, qed_loop *loop,
                 const char *path, unsigned flags, struct io_file **out,
                 qed_error *err)
{
    struct io_file *file, *aligned;
    int ret;

    *out = NULL;
    if (!driver)
        driver = &storage_file_driver;
    ret = driver->open(driver, loop, path, flags, &file, err);
    if (ret < 0)
        return ret;
    if (file->ops->lock) {
        ret = file->ops->lock(file, path, flags, err);
        if (ret < 0) {
            io_file_close(file);
            return ret;
        }
    }
    if (file->align > 1) {
        ret = io_direct_stack(file, &aligned, err);
        if (ret < 0) {
            io_file_close(file);
            return ret;
        }
        file = aligned;
    }
    *out = file;
    return 0;
}

int io_file_open(qed_loop *loop, const char *path, unsigned flags,
                 struct io_file **out, qed_error *err)
{
    return storage_open(&storage_file_driver, loop, path, flags, out, err);
}

void io_file_close(struct io_file *file)
{
    if (file)
        file->ops->close(file);
}

/* ---- layers ----------------------------------------------------------------- */

static struct io_file *lower_of(struct io_file *file)
{
    return ((struct storage_layer *)file)->lower;
}

void storage_layer_init(struct storage_layer *layer,
                        const struct storage_ops *ops, struct io_file *lower)
{
    layer->base.ops = ops;
    layer->base.loop = lower->loop;
    layer->base.writable = lower->writable;
    layer->base.align = 1;
    layer->base.lock_unsupported = lower->lock_unsupported;
    layer->lower = lower;
}

void storage_layer_readv(struct io_file *file, const struct iovec *iov,
                         int iovcnt, uint64_t offset, io_callback *cb,
                         void *opaque)
{
    io_readv(lower_of(file), iov, iovcnt, offset, cb, opaque);
}

void storage_layer_writev(struct io_file *file, const struct iovec *iov,
                          int iovcnt, uint64_t offset, io_callback *cb,
                          void *opaque)
{
    io_writev(lower_of(file), iov, iovcnt, offset, cb, opaque);
}

void storage_layer_flush(struct io_file *file, io_callback *cb, void *opaque)
{
    io_sync(lower_of(file), cb, opaque);
}

void storage_layer_fallocate(struct io_file *file, int mode, uint64_t offset,
                             uint64_t length, io_callback *cb, void *opaque)
{
    io_fallocate(lower_of(file), mode, offset, length, cb, opaque);
}

int storage_layer_get_size(struct io_file *file, uint64_t *size)
{
    struct io_file *lower = lower_of(file);
    return lower->ops->get_size(lower, size);
}

int storage_layer_truncate(struct io_file *file, uint64_t size)
{
    struct io_file *lower = lower_of(file);
    return lower->ops->truncate(lower, size);
}

int storage_layer_allocated_bytes(struct io_file *file, uint64_t *bytes)
{
    struct io_file *lower = lower_of(file);
    return lower->ops->allocated_bytes(lower, bytes);
}

int storage_layer_seek(struct io_file *file, uint64_t offset, bool data,
                       uint64_t *out)
{
    struct io_file *lower = lower_of(file);
    return lower->ops->seek(lower, offset, data, out);
}

void storage_layer_close(struct io_file *file)
{
    io_file_close(lower_of(file));
    free(file);
}
