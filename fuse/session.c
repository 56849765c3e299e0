/* SPDX-License-Identifier: MIT */
/* The FUSE session, the top of the export: the operations table, mounting,
 * reading requests from /dev/fuse on the image's loop, running a deferred
 * resize between loop iterations, detaching, aborting and unmounting. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include "export.h"

extern char **environ;

static void set_error(qed_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_error(qed_error *err, int code, const char *fmt, ...)
{
    va_list ap;

    if (!err)
        return;
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
}

void qedi_mount_notice(struct qedi_mount *m, const char *fmt, ...)
{
    char line[512];
    va_list ap;

    if (!m->notice)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    m->notice(m->notice_opaque, line);
}

/* ---- libfuse's messages ------------------------------------------------------ */

/* libfuse reports through a process-wide log function.  While mounting,
 * its last message becomes the error's text; afterwards messages go to the
 * mount's notice callback (one mount per process). */
static char fuse_last_message[256];
static struct qedi_mount *fuse_log_target;

static void capture_fuse_log(enum fuse_log_level level, const char *fmt,
                             va_list ap)
{
    char line[256];
    size_t n;

    if (level > FUSE_LOG_WARNING)
        return;
    vsnprintf(line, sizeof(line), fmt, ap);
    n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == ' '))
        line[--n] = '\0';
    if (n == 0)
        return;
    if (fuse_log_target)
        qedi_mount_notice(fuse_log_target, "%s", line);
    else
        snprintf(fuse_last_message, sizeof(fuse_last_message), "%s", line);
}

/* ---- reading requests -------------------------------------------------------- */

static void on_readable(void *opaque, int fd, unsigned events);

static void watch(struct qedi_mount *m, bool on)
{
    if (on == m->watching || m->ended)
        return;
    if (on)
        m->watching = qed_loop_watch_fd(m->loop, m->fd, QED_LOOP_READ,
                                        on_readable, m) == 0;
    else {
        qed_loop_unwatch_fd(m->loop, m->fd);
        m->watching = false;
    }
}

/* The kernel ended the session (unmounted, or the connection aborted). */
static void session_ended(struct qedi_mount *m)
{
    watch(m, false);
    m->ended = true;
    fuse_session_exit(m->se);
}

static void on_readable(void *opaque, int fd, unsigned events)
{
    struct qedi_mount *m = opaque;
    (void)fd;
    (void)events;

    for (int i = 0; i < EXPORT_RECEIVE_BATCH && !m->resize_req; i++) {
        int r = fuse_session_receive_buf(m->se, &m->rx);
        if (r == -EAGAIN)
            return;
        if (r == -EINTR)
            continue;
        if (r <= 0 || fuse_session_exited(m->se)) {
            if (r < 0 && r != -ENODEV)
                qedi_mount_notice(m, "reading /dev/fuse: %s", strerror(-r));
            session_ended(m);
            return;
        }
        fuse_session_process_buf(m->se, &m->rx);
        qedi_mount_replace_taken_buffer(m);
    }
    /* A resize waits for the requests in flight: read nothing more until
     * it is done (the descriptor stays readable, so stop watching it). */
    if (m->resize_req)
        watch(m, false);
}

/* ---- resize ------------------------------------------------------------------- */

void qedi_mount_service(struct qedi_mount *m)
{
    uint64_t size = m->resize_to;
    qed_error err = { 0 };
    int r;

    if (!m->resize_req || m->in_flight > 0)
        return;
    r = qedi_mount_run_resize(m, &err);
    if (r < 0)
        qedi_mount_notice(m, "truncate to %llu bytes: %s",
                          (unsigned long long)size,
                          err.message[0] ? err.message : strerror(-r));
    watch(m, true);
}

/* ---- the session's start ------------------------------------------------------ */

static void on_init(void *userdata, struct fuse_conn_info *conn)
{
    (void)userdata;
    /* Data reaches us only through the kernel, so its cache stays right:
     * no invalidation when the modification time moves; no splicing (a
     * write's data is taken from the buffer it arrived in); O_TRUNC comes
     * as a size change we can tell from ftruncate (see inode.c). */
    conn->want &= ~(unsigned)(FUSE_CAP_AUTO_INVAL_DATA | FUSE_CAP_SPLICE_READ |
                              FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE |
                              FUSE_CAP_ATOMIC_O_TRUNC);
    if (conn->capable & FUSE_CAP_ASYNC_DIO)
        conn->want |= FUSE_CAP_ASYNC_DIO;
    if (conn->capable & FUSE_CAP_ASYNC_READ)
        conn->want |= FUSE_CAP_ASYNC_READ;
    conn->max_background = EXPORT_MAX_BACKGROUND;
    conn->congestion_threshold = EXPORT_MAX_BACKGROUND * 3 / 4;
    conn->time_gran = 1;
}

static void append(char *out, size_t len, const char *text)
{
    size_t n = strlen(out);

    snprintf(out + n, len - n, "%s", text);
}

/* Commas and backslashes in a -o value are escaped for libfuse's parser. */
static void append_escaped(char *out, size_t len, const char *text)
{
    size_t n = strlen(out);

    for (; *text && n + 2 < len; text++) {
        if (*text == ',' || *text == '\\')
            out[n++] = '\\';
        out[n++] = *text;
    }
    out[n] = '\0';
}

static int make_session(struct qedi_mount *m,
                        const struct qedi_mount_options *o, qed_error *err)
{
    struct fuse_lowlevel_ops ops;
    char builtin[PATH_MAX + 128] = "default_permissions,subtype=qed,fsname=";
    char *argv[6];
    int argc = 0;
    struct fuse_args args;

    append_escaped(builtin, sizeof(builtin), o->fs_name ? o->fs_name : "qed");
    if (o->allow_other)
        append(builtin, sizeof(builtin), ",allow_other");
    if (o->read_only)
        append(builtin, sizeof(builtin), ",ro");
    argv[argc++] = "qed";
    argv[argc++] = "-o";
    argv[argc++] = builtin;
    if (o->fuse_options && o->fuse_options[0]) {
        argv[argc++] = "-o";
        argv[argc++] = (char *)o->fuse_options;
    }
    argv[argc] = NULL;
    args = (struct fuse_args)FUSE_ARGS_INIT(argc, argv);

    memset(&ops, 0, sizeof(ops));
    ops.init = on_init;
    qedi_mount_set_inode_ops(&ops);
    qedi_mount_set_io_ops(&ops);
    fuse_last_message[0] = '\0';
    m->se = fuse_session_new(&args, &ops, sizeof(ops), m);
    fuse_opt_free_args(&args);
    if (!m->se) {
        set_error(err, EINVAL, "FUSE options '%s': %s",
                  o->fuse_options ? o->fuse_options : "",
                  fuse_last_message[0] ? fuse_last_message : "not accepted");
        return -EINVAL;
    }
    return 0;
}

/* The mount point and the modes the file and directory start with. */
static int check_mountpoint(struct qedi_mount *m, const char *mountpoint,
                            const struct qedi_mount_options *o, qed_error *err)
{
    char resolved[PATH_MAX];
    struct stat st;

    if (!realpath(mountpoint, resolved) || stat(resolved, &st) < 0) {
        set_error(err, errno, "mount point %s: %s", mountpoint,
                  strerror(errno));
        return -errno;
    }
    if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
        set_error(err, EINVAL, "mount point %s: not a directory or a "
                  "regular file", mountpoint);
        return -EINVAL;
    }
    m->dir_mode = S_ISDIR(st.st_mode);
    if (m->dir_mode && (!o->file_name || !o->file_name[0] ||
                        strchr(o->file_name, '/') ||
                        strcmp(o->file_name, ".") == 0 ||
                        strcmp(o->file_name, "..") == 0)) {
        set_error(err, EINVAL, "file name '%s' cannot be used in %s",
                  o->file_name ? o->file_name : "", mountpoint);
        return -EINVAL;
    }
    m->mountpoint = strdup(resolved);
    m->file_name = strdup(m->dir_mode ? o->file_name : "");
    if (!m->mountpoint || !m->file_name) {
        set_error(err, ENOMEM, "out of memory");
        return -ENOMEM;
    }
    /* The owner may write unless read-only; --allow-other lets the others
     * read (chmod widens it further). */
    m->file_mode = o->read_only ? 0400 : 0600;
    m->dir_mode_bits = 0700;
    if (o->allow_other) {
        m->file_mode |= 0044;
        m->dir_mode_bits |= 0055;
    }
    m->uid = getuid();
    m->gid = getgid();
    qedi_mount_touch(&m->mtime);
    m->atime = m->ctime = m->mtime;
    return 0;
}

static int start_reading(struct qedi_mount *m, qed_error *err)
{
    int flags;

    m->fd = fuse_session_fd(m->se);
    flags = fcntl(m->fd, F_GETFL);
    if (flags < 0 || fcntl(m->fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        set_error(err, errno, "/dev/fuse: %s", strerror(errno));
        return -errno;
    }
    watch(m, true);
    if (!m->watching) {
        set_error(err, EIO, "cannot watch /dev/fuse on the image's loop");
        return -EIO;
    }
    return 0;
}

int qedi_mount_new(qed_image *image, const char *mountpoint,
                   const struct qedi_mount_options *o,
                   struct qedi_mount **out, qed_error *err)
{
    struct qedi_mount *m = calloc(1, sizeof(*m));
    int r;

    *out = NULL;
    if (!m) {
        set_error(err, ENOMEM, "out of memory");
        return -ENOMEM;
    }
    m->img = image;
    m->loop = qed_image_loop(image);
    m->fd = -1;
    m->read_only = o->read_only;
    m->notice = o->notice;
    m->notice_opaque = o->notice_opaque;
    fuse_set_log_func(capture_fuse_log);
    r = check_mountpoint(m, mountpoint, o, err);
    if (r == 0)
        r = make_session(m, o, err);
    if (r == 0) {
        fuse_last_message[0] = '\0';
        if (fuse_session_mount(m->se, m->mountpoint) != 0) {
            set_error(err, EIO, "cannot mount on %s: %s", mountpoint,
                      fuse_last_message[0] ? fuse_last_message
                                           : "fuse_session_mount failed");
            r = -EIO;
        } else {
            m->mounted = true;
            r = start_reading(m, err);
        }
    }
    if (r < 0) {
        qedi_mount_free(m);
        return r;
    }
    fuse_log_target = m;
    *out = m;
    return 0;
}

/* ---- the end -------------------------------------------------------------------- */

/* umount -l: the mount point goes at once, files open on it keep working
 * and the kernel ends the session when the last one closes.  Root does it
 * itself; others through fusermount3, as libfuse does. */
static int detach_mountpoint(struct qedi_mount *m)
{
    char *argv[] = { "fusermount3", "-u", "-z", "-q", "--", m->mountpoint,
                     NULL };
    pid_t pid;
    int status;

    if (geteuid() == 0)
        return umount2(m->mountpoint, MNT_DETACH) == 0 ? 0 : -errno;
    if (posix_spawnp(&pid, "fusermount3", NULL, NULL, argv, environ) != 0)
        return -ENOENT;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

/* Closing the last descriptor of the session aborts the connection.  The
 * descriptor is replaced by the write end of a pipe without a reader:
 * libfuse, which still holds its number, then finds it in error
 * (POLLERR) when asked to unmount, as it finds a session the kernel
 * ended, and unmounts nothing; replies written to it fail with EPIPE
 * (SIGPIPE must be ignored). */
static void abort_connection(struct qedi_mount *m)
{
    int p[2];

    watch(m, false);
    if (pipe2(p, O_CLOEXEC) == 0) {
        close(p[0]);
        dup2(p[1], m->fd);
        close(p[1]);
    }
    m->ended = true;
    fuse_session_exit(m->se);
}

void qedi_mount_shutdown(struct qedi_mount *m)
{
    int r;

    if (m->ended)
        return;
    if (!m->detached) {
        m->detached = true;
        r = detach_mountpoint(m);
        if (r < 0)
            qedi_mount_notice(m, "cannot unmount %s: %s", m->mountpoint,
                              strerror(-r));
        else if (m->open_files > 0)
            qedi_mount_notice(m, "unmounted; serving %u open file%s until "
                              "closed (signal again to stop now)",
                              m->open_files, m->open_files == 1 ? "" : "s");
        return;
    }
    abort_connection(m);
}

bool qedi_mount_finished(const struct qedi_mount *m)
{
    return m->ended && m->in_flight == 0 && !m->resize_req;
}

void qedi_mount_free(struct qedi_mount *m)
{
    if (!m)
        return;
    if (fuse_log_target == m)
        fuse_log_target = NULL;
    watch(m, false);
    if (m->se) {
        /* Unmounts unless the session ended (unmounted, detached and
         * closed, or aborted): libfuse sees the descriptor in error then. */
        if (m->mounted)
            fuse_session_unmount(m->se);
        fuse_session_destroy(m->se);
    }
    while (m->nspare > 0)
        free(m->spare[--m->nspare]);
    free(m->rx.mem);
    qedi_mount_buffers_free(m);
    free(m->mountpoint);
    free(m->file_name);
    free(m);
}
