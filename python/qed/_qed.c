/* SPDX-License-Identifier: MIT */
/* qed._qed: the C half of the Python bindings, over libqed's public API
 * (qed.h) only.  qed/__init__.py builds the file object and the friendly
 * signatures on top; this file does the calls.
 *
 * Threads: every blocking call runs with the GIL released, holding the
 * image's own lock, so threads working on different images run in parallel
 * and two threads on one image take turns.  Asynchronous reads complete in
 * C (aio_done) into a list that dispatch() hands to Python afterwards, so
 * no Python code ever runs inside a libqed call. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>

#include <errno.h>
#include <string.h>

#include <qed.h>

/* ---- errors ----------------------------------------------------------------- */

static PyObject *error_type;                 /* qed.Error(OSError) */

struct errno_class {
    int code;
    const char *name;  /* qed.NAME, a subclass of qed.Error and of base */
    PyObject **base;
    PyObject *type;
};

static struct errno_class errno_classes[] = {
    { ENOENT, "qed.FileNotFoundError", &PyExc_FileNotFoundError, NULL },
    { EEXIST, "qed.FileExistsError", &PyExc_FileExistsError, NULL },
    { EACCES, "qed.PermissionError", &PyExc_PermissionError, NULL },
    { EPERM, "qed.PermissionError", &PyExc_PermissionError, NULL },
    { EISDIR, "qed.IsADirectoryError", &PyExc_IsADirectoryError, NULL },
    { ENOTDIR, "qed.NotADirectoryError", &PyExc_NotADirectoryError, NULL },
    { ETIMEDOUT, "qed.TimeoutError", &PyExc_TimeoutError, NULL },
    { EAGAIN, "qed.BlockingIOError", &PyExc_BlockingIOError, NULL },
    { ECONNREFUSED, "qed.ConnectionRefusedError",
      &PyExc_ConnectionRefusedError, NULL },
};

static PyObject *class_for(int code)
{
    for (size_t i = 0; i < sizeof(errno_classes) / sizeof(errno_classes[0]); i++)
        if (errno_classes[i].code == code && errno_classes[i].type)
            return errno_classes[i].type;
    return error_type;
}

/* Raises qed.Error (or the subclass for its errno) with libqed's message
 * and the file name; returns NULL. */
static PyObject *raise_qed(int ret, const qed_error *err, const char *path)
{
    int code = err && err->code ? err->code : (ret < 0 ? -ret : EIO);
    const char *message = err && err->message[0] ? err->message : strerror(code);
    PyObject *args = path ? Py_BuildValue("(iss)", code, message, path)
                          : Py_BuildValue("(is)", code, message);

    if (args) {
        PyErr_SetObject(class_for(code), args);
        Py_DECREF(args);
    }
    return NULL;
}

/* ---- the image ---------------------------------------------------------------- */

struct aio_read;

typedef struct {
    PyObject_HEAD
    qed_image *img;              /* NULL once closed (changed under lock) */
    PyThread_type_lock lock;
    uint64_t size;               /* the virtual size (fixed while open) */
    int loop_fd;                 /* qed_loop_get_fd of the image's loop */
    PyObject *path;              /* str, for messages */
    struct aio_read *done;       /* completed, not yet handed to Python */
    unsigned in_flight;          /* asynchronous reads submitted */
} ImageObject;

static PyTypeObject ImageType;

/* Runs stmt (which sets ret) without the GIL, holding the image's lock;
 * an image another thread closed meanwhile gives ret = -EBADF instead. */
#define WITH_IMAGE(self, stmt)                                               \
    do {                                                                     \
        Py_BEGIN_ALLOW_THREADS                                               \
        PyThread_acquire_lock((self)->lock, WAIT_LOCK);                      \
        if ((self)->img) {                                                   \
            stmt;                                                            \
        } else {                                                             \
            ret = -EBADF;                                                    \
        }                                                                    \
        PyThread_release_lock((self)->lock);                                 \
        Py_END_ALLOW_THREADS                                                 \
    } while (0)

static bool check_open(ImageObject *self)
{
    if (self->img)
        return true;
    PyErr_SetString(PyExc_ValueError, "I/O operation on a closed image");
    return false;
}

static const char *path_of(ImageObject *self)
{
    return self->path ? PyUnicode_AsUTF8(self->path) : NULL;
}

/* A call on the image failed: ValueError when another thread closed it
 * meanwhile, else the library's error. */
static PyObject *fail_call(ImageObject *self, int ret, const qed_error *err)
{
    if (ret == -EBADF && !self->img) {
        check_open(self);
        return NULL;
    }
    return raise_qed(ret, err, path_of(self));
}

static bool parse_format(PyObject *obj, enum qed_format *out)
{
    const char *s;

    if (obj == Py_None) {
        *out = QED_FORMAT_PROBE;
        return true;
    }
    if (!(s = PyUnicode_AsUTF8(obj)))
        return false;
    if (strcmp(s, "qed") == 0)
        *out = QED_FORMAT_QED;
    else if (strcmp(s, "raw") == 0)
        *out = QED_FORMAT_RAW;
    else {
        PyErr_Format(PyExc_ValueError, "format must be 'qed', 'raw' or None, "
                     "not %R", obj);
        return false;
    }
    return true;
}

/* _qed.open(path, writable, format, force_share, copy_on_read, direct) */
static PyObject *mod_open(PyObject *mod, PyObject *args, PyObject *kw)
{
    static char *names[] = { "path", "writable", "format", "force_share",
                             "copy_on_read", "direct", NULL };
    PyObject *path_obj, *format_obj = Py_None, *bytes = NULL;
    int writable = 0, force_share = 0, copy_on_read = 0, direct = 0;
    struct qed_open_options o;
    qed_error err = { 0 };
    ImageObject *self;
    qed_image *img = NULL;
    int ret;
    (void)mod;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|pOppp", names, &path_obj,
                                     &writable, &format_obj, &force_share,
                                     &copy_on_read, &direct))
        return NULL;
    if (!PyUnicode_FSConverter(path_obj, &bytes))
        return NULL;
    qed_open_options_init(&o);
    o.flags = (writable ? QED_OPEN_RDWR : 0) |
              (force_share ? QED_OPEN_FORCE_SHARE : 0) |
              (copy_on_read ? QED_OPEN_COPY_ON_READ : 0);
    o.cache = direct ? QED_CACHE_NONE : QED_CACHE_WRITEBACK;
    if (!parse_format(format_obj, &o.format)) {
        Py_DECREF(bytes);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    ret = qed_open(PyBytes_AS_STRING(bytes), &o, &img, &err);
    Py_END_ALLOW_THREADS
    if (ret < 0) {
        raise_qed(ret, &err, PyBytes_AS_STRING(bytes));
        Py_DECREF(bytes);
        return NULL;
    }
    self = PyObject_New(ImageObject, &ImageType);
    if (self) {
        self->img = NULL;
        self->path = NULL;
        self->done = NULL;
        self->in_flight = 0;
        self->lock = PyThread_allocate_lock();
    }
    if (!self || !self->lock) {
        qed_close(img, NULL);
        Py_XDECREF(self);
        Py_DECREF(bytes);
        return PyErr_NoMemory();
    }
    self->img = img;
    self->size = qed_size(img);
    self->loop_fd = qed_loop_get_fd(qed_image_loop(img));
    self->path = PyUnicode_DecodeFSDefault(PyBytes_AS_STRING(bytes));
    Py_DECREF(bytes);
    return (PyObject *)self;
}

static void free_done(ImageObject *self);

static PyObject *image_close(ImageObject *self, PyObject *unused)
{
    qed_error err = { 0 };
    qed_image *img;
    int ret = 0;
    (void)unused;

    /* Under the lock: a thread in a call on the image finishes first, and
     * one waiting for it then finds it closed.  qed_close waits for
     * asynchronous reads still in flight. */
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    img = self->img;
    self->img = NULL;
    if (img)
        ret = qed_close(img, &err);
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS
    if (!img)
        Py_RETURN_NONE;
    self->in_flight = 0;
    free_done(self);
    if (ret < 0)
        return fail_call(self, ret, &err);
    Py_RETURN_NONE;
}

static void image_dealloc(ImageObject *self)
{
    if (self->img) {
        qed_close(self->img, NULL);
        self->img = NULL;
    }
    free_done(self);
    if (self->lock)
        PyThread_free_lock(self->lock);
    Py_XDECREF(self->path);
    PyObject_Free(self);
}

static PyObject *image_size(ImageObject *self, void *closure)
{
    (void)closure;
    if (!check_open(self))
        return NULL;
    return PyLong_FromUnsignedLongLong(self->size);
}

static PyObject *image_closed(ImageObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->img == NULL);
}

/* Ranges must lie inside the image (the Python layer clips reads). */
static bool check_range(ImageObject *self, unsigned long long offset,
                        unsigned long long length)
{
    uint64_t size = self->size;

    if (offset > size || length > size - offset) {
        PyErr_Format(PyExc_ValueError, "range %llu+%llu is outside the image "
                     "(%llu bytes)", offset, length, (unsigned long long)size);
        return false;
    }
    return true;
}

static PyObject *image_pread(ImageObject *self, PyObject *args)
{
    unsigned long long length, offset;
    qed_error err = { 0 };
    PyObject *out;
    int ret = 0;

    if (!PyArg_ParseTuple(args, "KK", &length, &offset) || !check_open(self) ||
        !check_range(self, offset, length))
        return NULL;
    if (length > PY_SSIZE_T_MAX)
        return PyErr_NoMemory();
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)length);
    if (!out)
        return NULL;
    if (length)
        WITH_IMAGE(self, ret = qed_pread(self->img, PyBytes_AS_STRING(out),
                                         (size_t)length, offset, &err));
    if (ret < 0) {
        Py_DECREF(out);
        return fail_call(self, ret, &err);
    }
    return out;
}

static PyObject *image_preadinto(ImageObject *self, PyObject *args)
{
    unsigned long long offset;
    qed_error err = { 0 };
    Py_buffer buf;
    int ret = 0;

    if (!PyArg_ParseTuple(args, "w*K", &buf, &offset))
        return NULL;
    if (!check_open(self) || !check_range(self, offset, (unsigned long long)buf.len)) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    if (buf.len)
        WITH_IMAGE(self, ret = qed_pread(self->img, buf.buf, (size_t)buf.len,
                                         offset, &err));
    PyBuffer_Release(&buf);
    if (ret < 0)
        return fail_call(self, ret, &err);
    return PyLong_FromSsize_t(buf.len);
}

static PyObject *image_pwrite(ImageObject *self, PyObject *args)
{
    unsigned long long offset;
    qed_error err = { 0 };
    Py_buffer buf;
    int ret = 0;

    if (!PyArg_ParseTuple(args, "y*K", &buf, &offset))
        return NULL;
    if (!check_open(self) || !check_range(self, offset, (unsigned long long)buf.len)) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    if (buf.len)
        WITH_IMAGE(self, ret = qed_pwrite(self->img, buf.buf, (size_t)buf.len,
                                          offset, &err));
    PyBuffer_Release(&buf);
    if (ret < 0)
        return fail_call(self, ret, &err);
    return PyLong_FromSsize_t(buf.len);
}

static PyObject *image_flush(ImageObject *self, PyObject *unused)
{
    qed_error err = { 0 };
    int ret;
    (void)unused;

    if (!check_open(self))
        return NULL;
    WITH_IMAGE(self, ret = qed_flush(self->img, &err));
    if (ret < 0)
        return fail_call(self, ret, &err);
    Py_RETURN_NONE;
}

static PyObject *image_write_zeroes(ImageObject *self, PyObject *args)
{
    unsigned long long offset, length;
    int unmap = 1, ret;
    qed_error err = { 0 };

    if (!PyArg_ParseTuple(args, "KK|p", &offset, &length, &unmap) ||
        !check_open(self) || !check_range(self, offset, length))
        return NULL;
    WITH_IMAGE(self, ret = qed_write_zeroes(self->img, offset, length,
                                            unmap ? QED_ZERO_MAY_UNMAP : 0,
                                            &err));
    if (ret < 0)
        return fail_call(self, ret, &err);
    Py_RETURN_NONE;
}

static PyObject *image_discard(ImageObject *self, PyObject *args)
{
    unsigned long long offset, length;
    qed_error err = { 0 };
    int ret;

    if (!PyArg_ParseTuple(args, "KK", &offset, &length) || !check_open(self) ||
        !check_range(self, offset, length))
        return NULL;
    WITH_IMAGE(self, ret = qed_discard(self->img, offset, length, &err));
    if (ret < 0)
        return fail_call(self, ret, &err);
    Py_RETURN_NONE;
}

/* block_status(offset, length) -> (length, depth, present, zero, data,
 * host offset or None) of the extent starting at offset. */
static PyObject *image_block_status(ImageObject *self, PyObject *args)
{
    unsigned long long offset, length;
    struct qed_block_status st;
    qed_error err = { 0 };
    int ret;

    if (!PyArg_ParseTuple(args, "KK", &offset, &length) || !check_open(self) ||
        !check_range(self, offset, length))
        return NULL;
    if (length == 0)
        return PyErr_Format(PyExc_ValueError, "length must not be 0");
    qed_block_status_init(&st);
    WITH_IMAGE(self, ret = qed_block_status(self->img, offset, length, &st,
                                            &err));
    if (ret < 0)
        return fail_call(self, ret, &err);
    if (st.has_offset)
        return Py_BuildValue("(KIOOOK)", (unsigned long long)st.length,
                             st.depth, st.present ? Py_True : Py_False,
                             st.zero ? Py_True : Py_False,
                             st.data ? Py_True : Py_False,
                             (unsigned long long)st.offset);
    return Py_BuildValue("(KIOOOO)", (unsigned long long)st.length, st.depth,
                         st.present ? Py_True : Py_False,
                         st.zero ? Py_True : Py_False,
                         st.data ? Py_True : Py_False, Py_None);
}

static const char *format_name(enum qed_format f)
{
    return f == QED_FORMAT_QED ? "qed" : f == QED_FORMAT_RAW ? "raw" : NULL;
}

static PyObject *image_info(ImageObject *self, PyObject *unused)
{
    struct qed_image_info *info;
    qed_error err = { 0 };
    PyObject *d, *actual;
    int ret;
    (void)unused;

    if (!check_open(self))
        return NULL;
    if (!(info = PyMem_Malloc(sizeof(*info))))
        return PyErr_NoMemory();
    qed_image_info_init(info);
    WITH_IMAGE(self, ret = qed_get_info(self->img, info, &err));
    if (ret < 0) {
        PyMem_Free(info);
        return fail_call(self, ret, &err);
    }
    actual = info->actual_size_unknown
                 ? Py_NewRef(Py_None)
                 : PyLong_FromUnsignedLongLong(info->actual_size);
    d = actual ? Py_BuildValue(
        "{s:s,s:s,s:K,s:K,s:N,s:O}", "format", format_name(info->format),
        "filename", info->filename, "virtual_size",
        (unsigned long long)info->virtual_size, "file_size",
        (unsigned long long)info->file_size, "actual_size", actual,
        "dirty", info->dirty ? Py_True : Py_False) : NULL;
    if (d && info->format == QED_FORMAT_QED) {
        PyObject *more = Py_BuildValue(
            "{s:I,s:I,s:I,s:K,s:K,s:K,s:K}", "cluster_size", info->cluster_size,
            "table_size", info->table_size, "header_size", info->header_size,
            "features", (unsigned long long)info->features, "compat_features",
            (unsigned long long)info->compat_features, "autoclear_features",
            (unsigned long long)info->autoclear_features, "l1_table_offset",
            (unsigned long long)info->l1_table_offset);
        if (!more || PyDict_Update(d, more) < 0)
            Py_CLEAR(d);
        Py_XDECREF(more);
        if (d && info->has_backing) {
            PyObject *b = PyUnicode_DecodeFSDefault(info->backing_file);
            PyObject *full = PyUnicode_DecodeFSDefault(info->backing_file_full);
            const char *bf = format_name(info->backing_format);
            PyObject *bfo = bf ? PyUnicode_FromString(bf) : Py_NewRef(Py_None);
            if (!b || !full || !bfo ||
                PyDict_SetItemString(d, "backing_file", b) < 0 ||
                PyDict_SetItemString(d, "backing_file_full", full) < 0 ||
                PyDict_SetItemString(d, "backing_format", bfo) < 0)
                Py_CLEAR(d);
            Py_XDECREF(b);
            Py_XDECREF(full);
            Py_XDECREF(bfo);
        }
    }
    PyMem_Free(info);
    return d;
}

static PyObject *image_check(ImageObject *self, PyObject *args)
{
    unsigned repair = 0;
    struct qed_check_result r;
    qed_error err = { 0 };
    int ret;

    if (!PyArg_ParseTuple(args, "|I", &repair) || !check_open(self))
        return NULL;
    qed_check_result_init(&r);
    WITH_IMAGE(self, ret = qed_check(self->img, repair, &r, &err));
    if (ret < 0)
        return fail_call(self, ret, &err);
    return Py_BuildValue(
        "{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K}", "check_errors",
        (unsigned long long)r.check_errors, "corruptions",
        (unsigned long long)r.corruptions, "leaks", (unsigned long long)r.leaks,
        "corruptions_fixed", (unsigned long long)r.corruptions_fixed,
        "leaks_fixed", (unsigned long long)r.leaks_fixed, "total_clusters",
        (unsigned long long)r.total_clusters, "allocated_clusters",
        (unsigned long long)r.allocated_clusters, "fragmented_clusters",
        (unsigned long long)r.fragmented_clusters, "image_end_offset",
        (unsigned long long)r.image_end_offset);
}

/* ---- asynchronous reads (asyncio) ---------------------------------------------------- */

struct aio_read {
    ImageObject *image;
    PyObject *buffer;        /* bytes being filled */
    PyObject *callback;      /* callback(error_or_None, bytes) */
    struct iovec iov;
    int ret;
    qed_error err;
    struct aio_read *next;   /* in image->done */
};

/* Runs inside qed_loop_dispatch: no Python here, only bookkeeping. */
static void aio_done(void *opaque, int ret, const qed_error *err)
{
    struct aio_read *r = opaque;

    r->ret = ret;
    if (ret < 0 && err)
        r->err = *err;
    r->next = r->image->done;
    r->image->done = r;
    r->image->in_flight--;
}

static void free_done(ImageObject *self)
{
    while (self->done) {
        struct aio_read *r = self->done;
        self->done = r->next;
        Py_XDECREF(r->buffer);
        Py_XDECREF(r->callback);
        PyMem_Free(r);
    }
}

/* aio_read(length, offset, callback): submits a read; callback(exception
 * or None, data) runs from a later dispatch(). */
static PyObject *image_aio_read(ImageObject *self, PyObject *args)
{
    unsigned long long length, offset;
    PyObject *callback;
    struct aio_read *r;
    int ret;

    if (!PyArg_ParseTuple(args, "KKO", &length, &offset, &callback) ||
        !check_open(self) || !check_range(self, offset, length))
        return NULL;
    if (!PyCallable_Check(callback))
        return PyErr_Format(PyExc_TypeError, "callback must be callable");
    if (length == 0 || length > PY_SSIZE_T_MAX)
        return PyErr_Format(PyExc_ValueError, "length must be 1 to %zd",
                            PY_SSIZE_T_MAX);
    if (!(r = PyMem_Calloc(1, sizeof(*r))))
        return PyErr_NoMemory();
    r->image = self;
    r->buffer = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)length);
    if (!r->buffer) {
        PyMem_Free(r);
        return NULL;
    }
    r->callback = Py_NewRef(callback);
    r->iov.iov_base = PyBytes_AS_STRING(r->buffer);
    r->iov.iov_len = (size_t)length;
    WITH_IMAGE(self, ret = qed_aio_readv(self->img, &r->iov, 1, offset,
                                         aio_done, r);
               if (ret == 0) self->in_flight++);
    if (ret < 0) {
        Py_DECREF(r->buffer);
        Py_DECREF(r->callback);
        PyMem_Free(r);
        return fail_call(self, ret, NULL);
    }
    Py_RETURN_NONE;
}

/* dispatch(): runs what is ready on the image's loop without waiting, then
 * the callbacks of the reads that completed.  Returns the loop's timeout
 * (ms; -1: nothing scheduled) for the caller to call it again. */
static PyObject *image_dispatch(ImageObject *self, PyObject *unused)
{
    struct aio_read *r, *list;
    int ret, timeout = -1;
    (void)unused;

    if (!check_open(self))
        return NULL;
    WITH_IMAGE(self, ret = qed_loop_dispatch(qed_image_loop(self->img));
               timeout = qed_loop_get_timeout(qed_image_loop(self->img)));
    if (ret < 0)
        return fail_call(self, ret, NULL);
    /* Oldest first. */
    list = NULL;
    while ((r = self->done) != NULL) {
        self->done = r->next;
        r->next = list;
        list = r;
    }
    while ((r = list) != NULL) {
        PyObject *exc = Py_NewRef(Py_None), *res;
        list = r->next;
        if (r->ret < 0) {
            PyObject *type, *value, *tb;
            raise_qed(r->ret, &r->err, path_of(self));
            PyErr_Fetch(&type, &value, &tb);
            PyErr_NormalizeException(&type, &value, &tb);
            if (value && tb)
                PyException_SetTraceback(value, tb);
            Py_XDECREF(type);
            Py_XDECREF(tb);
            Py_DECREF(exc);
            exc = value ? value : Py_NewRef(Py_None);
        }
        res = PyObject_CallFunctionObjArgs(r->callback, exc,
                                           r->ret < 0 ? Py_None : r->buffer,
                                           NULL);
        Py_DECREF(exc);
        if (!res)
            PyErr_WriteUnraisable(r->callback);
        Py_XDECREF(res);
        Py_DECREF(r->buffer);
        Py_DECREF(r->callback);
        PyMem_Free(r);
    }
    return PyLong_FromLong(timeout);
}

static PyObject *image_loop_fd(ImageObject *self, PyObject *unused)
{
    (void)unused;
    if (!check_open(self))
        return NULL;
    return PyLong_FromLong(self->loop_fd);
}

static PyMethodDef image_methods[] = {
    { "close", (PyCFunction)image_close, METH_NOARGS, "Close the image." },
    { "pread", (PyCFunction)image_pread, METH_VARARGS,
      "pread(length, offset) -> bytes" },
    { "preadinto", (PyCFunction)image_preadinto, METH_VARARGS,
      "preadinto(buffer, offset) -> bytes read" },
    { "pwrite", (PyCFunction)image_pwrite, METH_VARARGS,
      "pwrite(data, offset) -> bytes written" },
    { "flush", (PyCFunction)image_flush, METH_NOARGS, "Make writes durable." },
    { "write_zeroes", (PyCFunction)image_write_zeroes, METH_VARARGS,
      "write_zeroes(offset, length, unmap=True)" },
    { "discard", (PyCFunction)image_discard, METH_VARARGS,
      "discard(offset, length)" },
    { "block_status", (PyCFunction)image_block_status, METH_VARARGS,
      "block_status(offset, length) -> (length, depth, present, zero, data, "
      "offset)" },
    { "info", (PyCFunction)image_info, METH_NOARGS, "info() -> dict" },
    { "check", (PyCFunction)image_check, METH_VARARGS,
      "check(repair_bits=0) -> dict" },
    { "aio_read", (PyCFunction)image_aio_read, METH_VARARGS,
      "aio_read(length, offset, callback)" },
    { "dispatch", (PyCFunction)image_dispatch, METH_NOARGS,
      "dispatch() -> timeout in ms (-1: none)" },
    { "loop_fd", (PyCFunction)image_loop_fd, METH_NOARGS,
      "loop_fd() -> the descriptor to poll for readability" },
    { NULL, NULL, 0, NULL },
};

static PyGetSetDef image_getset[] = {
    { "size", (getter)image_size, NULL, "virtual size in bytes", NULL },
    { "closed", (getter)image_closed, NULL, "whether close() was called",
      NULL },
    { NULL, NULL, NULL, NULL, NULL },
};

static PyTypeObject ImageType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "qed._qed.Image",
    .tp_basicsize = sizeof(ImageObject),
    .tp_dealloc = (destructor)image_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An open image (see qed.open).",
    .tp_methods = image_methods,
    .tp_getset = image_getset,
};

/* ---- whole-image operations ----------------------------------------------------------- */

/* create(path, size, cluster_size=0, table_size=0, backing_file=None,
 *        backing_format=None, preallocation="off") */
static PyObject *mod_create(PyObject *mod, PyObject *args, PyObject *kw)
{
    static char *names[] = { "path", "size", "cluster_size", "table_size",
                             "backing_file", "backing_format",
                             "preallocation", NULL };
    PyObject *path_obj, *backing_obj = Py_None, *bformat_obj = Py_None;
    PyObject *path = NULL, *backing = NULL;
    unsigned long long size = 0;
    unsigned int cluster_size = 0, table_size = 0;
    const char *prealloc = "off";
    struct qed_create_options o;
    qed_error err = { 0 };
    int ret;
    (void)mod;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "OK|IIOOs", names, &path_obj,
                                     &size, &cluster_size, &table_size,
                                     &backing_obj, &bformat_obj, &prealloc))
        return NULL;
    qed_create_options_init(&o);
    o.virtual_size = size;
    o.cluster_size = cluster_size;
    o.table_size = table_size;
    if (!parse_format(bformat_obj, &o.backing_format))
        return NULL;
    if (strcmp(prealloc, "off") == 0)
        o.preallocation = QED_PREALLOC_OFF;
    else if (strcmp(prealloc, "metadata") == 0)
        o.preallocation = QED_PREALLOC_METADATA;
    else if (strcmp(prealloc, "falloc") == 0)
        o.preallocation = QED_PREALLOC_FALLOC;
    else if (strcmp(prealloc, "full") == 0)
        o.preallocation = QED_PREALLOC_FULL;
    else
        return PyErr_Format(PyExc_ValueError, "preallocation must be 'off', "
                            "'metadata', 'falloc' or 'full', not '%s'",
                            prealloc);
    if (!PyUnicode_FSConverter(path_obj, &path))
        return NULL;
    if (backing_obj != Py_None) {
        if (!PyUnicode_FSConverter(backing_obj, &backing)) {
            Py_DECREF(path);
            return NULL;
        }
        o.backing_file = PyBytes_AS_STRING(backing);
        o.size_from_backing = size == 0;
    }
    Py_BEGIN_ALLOW_THREADS
    ret = qed_create(PyBytes_AS_STRING(path), &o, &err);
    Py_END_ALLOW_THREADS
    if (ret < 0)
        raise_qed(ret, &err, PyBytes_AS_STRING(path));
    Py_DECREF(path);
    Py_XDECREF(backing);
    if (ret < 0)
        return NULL;
    Py_RETURN_NONE;
}

struct progress {
    PyObject *callback;
    bool failed;
};

/* Called by qed_convert on the thread that runs it, without the GIL. */
static void convert_progress(void *opaque, uint64_t done, uint64_t total)
{
    struct progress *p = opaque;
    PyGILState_STATE g;
    PyObject *res;

    if (p->failed)
        return;
    g = PyGILState_Ensure();
    res = PyObject_CallFunction(p->callback, "KK", (unsigned long long)done,
                                (unsigned long long)total);
    if (!res) {
        /* Nothing can stop a convert half way: the exception is reported,
         * and the callback not called again. */
        PyErr_WriteUnraisable(p->callback);
        p->failed = true;
    }
    Py_XDECREF(res);
    PyGILState_Release(g);
}

/* convert(image, dst, format="raw", progress=None, cluster_size=0,
 *         backing_file=None, backing_format=None) */
static PyObject *mod_convert(PyObject *mod, PyObject *args, PyObject *kw)
{
    static char *names[] = { "image", "dst", "format", "progress",
                             "cluster_size", "backing_file",
                             "backing_format", NULL };
    PyObject *dst_obj, *progress_obj = Py_None, *dst = NULL;
    PyObject *backing_obj = Py_None, *bformat_obj = Py_None, *backing = NULL;
    ImageObject *src;
    const char *format = "raw";
    unsigned int cluster_size = 0;
    struct qed_convert_options co;
    struct qed_create_options cr;
    struct qed_op_options op;
    struct progress p = { NULL, false };
    qed_error err = { 0 };
    int ret;
    (void)mod;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O|sOIOO", names, &ImageType,
                                     &src, &dst_obj, &format, &progress_obj,
                                     &cluster_size, &backing_obj,
                                     &bformat_obj))
        return NULL;
    if (!check_open(src))
        return NULL;
    qed_convert_options_init(&co);
    qed_create_options_init(&cr);
    qed_op_options_init(&op);
    if (strcmp(format, "raw") == 0)
        co.format = QED_FORMAT_RAW;
    else if (strcmp(format, "qed") == 0)
        co.format = QED_FORMAT_QED;
    else
        return PyErr_Format(PyExc_ValueError, "format must be 'raw' or "
                            "'qed', not '%s'", format);
    if (progress_obj != Py_None) {
        if (!PyCallable_Check(progress_obj))
            return PyErr_Format(PyExc_TypeError, "progress must be callable");
        p.callback = progress_obj;
        op.progress = convert_progress;
        op.progress_opaque = &p;
    }
    if (!parse_format(bformat_obj, &cr.backing_format))
        return NULL;
    cr.cluster_size = cluster_size;
    co.create = &cr;
    co.op = &op;
    co.unsafe = true; /* as qemu-img convert: the system writes it back */
    if (!PyUnicode_FSConverter(dst_obj, &dst))
        return NULL;
    if (backing_obj != Py_None) {
        if (!PyUnicode_FSConverter(backing_obj, &backing)) {
            Py_DECREF(dst);
            return NULL;
        }
        cr.backing_file = PyBytes_AS_STRING(backing);
    }
    WITH_IMAGE(src, ret = qed_convert(src->img, PyBytes_AS_STRING(dst), &co,
                                      &err));
    if (ret < 0)
        raise_qed(ret, &err, PyBytes_AS_STRING(dst));
    Py_DECREF(dst);
    Py_XDECREF(backing);
    if (ret < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *mod_version(PyObject *mod, PyObject *unused)
{
    (void)mod;
    (void)unused;
    return PyUnicode_FromString(qed_version());
}

static PyMethodDef module_methods[] = {
    { "open", (PyCFunction)(void (*)(void))mod_open,
      METH_VARARGS | METH_KEYWORDS, "open an image" },
    { "create", (PyCFunction)(void (*)(void))mod_create,
      METH_VARARGS | METH_KEYWORDS, "create a QED image" },
    { "convert", (PyCFunction)(void (*)(void))mod_convert,
      METH_VARARGS | METH_KEYWORDS, "copy an image into a new one" },
    { "version", mod_version, METH_NOARGS, "libqed's version" },
    { NULL, NULL, 0, NULL },
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "qed._qed",
    "libqed's C calls (use the qed package)", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__qed(void)
{
    PyObject *m;

    if (PyType_Ready(&ImageType) < 0 || !(m = PyModule_Create(&module)))
        return NULL;
    error_type = PyErr_NewExceptionWithDoc(
        "qed.Error", "An error from libqed: errno, and its message in "
        "strerror.", PyExc_OSError, NULL);
    if (!error_type || PyModule_AddObjectRef(m, "Error", error_type) < 0)
        goto fail;
    for (size_t i = 0; i < sizeof(errno_classes) / sizeof(errno_classes[0]); i++) {
        struct errno_class *c = &errno_classes[i];
        const char *short_name = strchr(c->name, '.') + 1;
        PyObject *bases;
        /* EPERM shares EACCES's class. */
        for (size_t j = 0; j < i && !c->type; j++)
            if (strcmp(errno_classes[j].name, c->name) == 0)
                c->type = Py_NewRef(errno_classes[j].type);
        if (c->type)
            continue;
        bases = PyTuple_Pack(2, error_type, *c->base);
        if (!bases)
            goto fail;
        c->type = PyErr_NewException(c->name, bases, NULL);
        Py_DECREF(bases);
        if (!c->type || PyModule_AddObjectRef(m, short_name, c->type) < 0)
            goto fail;
    }
    if (PyModule_AddObjectRef(m, "Image", (PyObject *)&ImageType) < 0 ||
        PyModule_AddIntConstant(m, "CHECK_REPAIR_LEAKS", QED_CHECK_REPAIR_LEAKS) < 0 ||
        PyModule_AddIntConstant(m, "CHECK_REPAIR_ALL", QED_CHECK_REPAIR_ALL) < 0)
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
