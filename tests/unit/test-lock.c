/* SPDX-License-Identifier: MIT */
/* Image locking: child processes (fork) hold images open through the
 * library while this one opens, creates, commits and rebases them, and
 * every combination QEMU refuses is refused here too, with EAGAIN and
 * QEMU's message, and nothing else is.  The lock bytes each role holds are
 * read back from /proc/locks (QEMU 7.2's layout: a writer holds 100, 101,
 * 103, 201 and 203, a reader 100, 201 and 203, a force-sharing reader 100).
 * Every refused open and every error path after the lock was taken must
 * leave no lock behind.  Where the file system has no OFD locks (simulated
 * by failing the fcntl), AUTO opens without them and warns, ON fails and
 * OFF never asks. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "storage.h"
#include "qed.h"
#include "support-image.h"
#include "../tap.h"

#define HOLD_SECONDS 120

/* ---- holders: child processes with an image open ------------------------ */

struct holder {
    pid_t pid;
    int release_fd; /* closing it makes the child close the image */
    int ret;        /* what the child's qed_open returned */
    qed_error err;
};

struct report {
    int ret;
    qed_error err;
};

static bool read_all(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

static void holder_child(const char *path, const struct qed_open_options *o,
                         int report_fd, int release_fd)
{
    struct report r = { 0 };
    qed_image *img = NULL;
    char byte;

    /* Never outlive a test that lost track of us. */
    alarm(HOLD_SECONDS);
    r.ret = qed_open(path, o, &img, &r.err);
    if (write(report_fd, &r, sizeof(r)) != (ssize_t)sizeof(r))
        _exit(2);
    if (r.ret == 0) {
        while (read(release_fd, &byte, 1) > 0)
            ;
        qed_close(img, NULL);
    }
    _exit(0);
}

/* Starts a child that opens path with o and keeps it open until
 * holder_stop; returns false when the child could not be started. */
static bool holder_start(struct holder *h, const char *path,
                         const struct qed_open_options *o)
{
    int report[2], release[2];
    struct report r;

    memset(h, 0, sizeof(*h));
    h->pid = -1;
    h->release_fd = -1;
    if (pipe2(report, O_CLOEXEC) < 0)
        return false;
    if (pipe2(release, O_CLOEXEC) < 0) {
        close(report[0]);
        close(report[1]);
        return false;
    }
    fflush(stdout);
    h->pid = fork();
    if (h->pid == 0) {
        close(report[0]);
        close(release[1]);
        holder_child(path, o, report[1], release[0]);
    }
    close(report[1]);
    close(release[0]);
    h->release_fd = release[1];
    if (h->pid < 0 || !read_all(report[0], &r, sizeof(r))) {
        close(report[0]);
        return false;
    }
    close(report[0]);
    h->ret = r.ret;
    h->err = r.err;
    return true;
}

static void holder_stop(struct holder *h)
{
    if (h->release_fd >= 0)
        close(h->release_fd);
    if (h->pid > 0)
        waitpid(h->pid, NULL, 0);
    h->release_fd = -1;
    h->pid = -1;
}

/* One test point: a child holds path with flags (read-only by default). */
static bool hold(struct holder *h, const char *path, unsigned flags,
                 const char *what)
{
    struct qed_open_options o = { .size = sizeof(o), .flags = flags };

    if (!holder_start(h, path, &o) || h->ret != 0) {
        ok(0, "a child holds %s", what);
        tap_diag("ret %d: %s", h->ret, h->err.message);
        holder_stop(h);
        return false;
    }
    ok(1, "a child holds %s", what);
    return true;
}

/* ---- opens in this process ------------------------------------------------- */

static int try_open(const char *path, unsigned flags, enum qed_lock_mode mode,
                    qed_error *err)
{
    struct qed_open_options o = { .size = sizeof(o),
                                  .flags = flags, .locking = mode };
    qed_image *img = NULL;
    int ret;

    memset(err, 0, sizeof(*err));
    ret = qed_open(path, &o, &img, err);
    if (ret == 0)
        qed_close(img, NULL);
    return ret;
}

static void expect_open(const char *path, unsigned flags, const char *what)
{
    qed_error err;
    int ret = try_open(path, flags, QED_LOCK_AUTO, &err);

    if (!ok(ret == 0, "%s", what))
        tap_diag("ret %d: %s", ret, err.message);
}

/* The open is refused with EAGAIN and QEMU's words: the permission it
 * could not get, and which file. */
static void expect_refused(const char *path, unsigned flags,
                           const char *lock_words, const char *file,
                           const char *what)
{
    char want[1024];
    qed_error err;
    int ret = try_open(path, flags, QED_LOCK_AUTO, &err);

    if (!ok(ret == -EAGAIN && err.code == EAGAIN, "%s: EAGAIN", what))
        tap_diag("ret %d: %s", ret, err.message);
    snprintf(want, sizeof(want), "Failed to get %s lock", lock_words);
    has_substr(err.message, want, "%s: message says %s", what, want);
    snprintf(want, sizeof(want), "Is another process using the image [%s]?",
             file);
    has_substr(err.message, want, "%s: message asks about %s", what, file);
}

/* ---- /proc/locks ------------------------------------------------------------- */

/* The QEMU lock bytes (100..103, 200..203) locked on path by anyone, as
 * "100 101 103 201 203"; a byte locked by two open files is listed
 * twice. */
static const char *lock_bytes(const char *path)
{
    static char out[256];
    char line[512], id[64];
    unsigned counts[8] = { 0 };
    struct stat st;
    FILE *f;
    size_t used = 0;

    out[0] = '\0';
    if (stat(path, &st) < 0 || !(f = fopen("/proc/locks", "re")))
        return "(unreadable)";
    snprintf(id, sizeof(id), "%02x:%02x:%lu", major(st.st_dev),
             minor(st.st_dev), (unsigned long)st.st_ino);
    while (fgets(line, sizeof(line), f)) {
        char file[64];
        long long start, end;
        if (strstr(line, "->") ||
            sscanf(line, "%*s %*s %*s %*s %*s %63s %lld %lld", file, &start,
                   &end) != 3 ||
            strcmp(file, id) != 0)
            continue;
        for (long long b = start; b <= end; b++) {
            if (b >= 100 && b <= 103)
                counts[b - 100]++;
            else if (b >= 200 && b <= 203)
                counts[4 + b - 200]++;
        }
    }
    fclose(f);
    for (unsigned i = 0; i < 8; i++)
        for (unsigned n = 0; n < counts[i]; n++)
            used += (size_t)snprintf(out + used, sizeof(out) - used, "%s%u",
                                     used ? " " : "",
                                     (i < 4 ? 100 : 200) + i % 4);
    return out;
}

static bool have_proc_locks(void)
{
    return access("/proc/locks", R_OK) == 0;
}

/* One test point: the lock bytes on path are want (a skip without
 * /proc/locks). */
static void locks_are(const char *path, const char *want, const char *what)
{
    if (!have_proc_locks()) {
        ok(1, "%s # SKIP /proc/locks is not readable", what);
        return;
    }
    is_str(lock_bytes(path), want, "%s", what);
}

/* ---- the cases ----------------------------------------------------------------- */

struct env {
    char dir[1024];
    char top[4096], base[4096], other[4096], plain[4096];
};

static bool make_images(struct env *e)
{
    qed_error err = { 0 };

    snprintf(e->base, sizeof(e->base), "%s/base.qed", e->dir);
    snprintf(e->top, sizeof(e->top), "%s/top.qed", e->dir);
    snprintf(e->other, sizeof(e->other), "%s/other.qed", e->dir);
    snprintf(e->plain, sizeof(e->plain), "%s/plain.qed", e->dir);
    return support_create(e->base, 4 * MiB, 0, 0, NULL, QED_FORMAT_PROBE,
                          &err) == 0 &&
           support_create(e->top, 4 * MiB, 0, 0, "base.qed", QED_FORMAT_QED,
                          &err) == 0 &&
           support_create(e->other, 4 * MiB, 0, 0, NULL, QED_FORMAT_PROBE,
                          &err) == 0 &&
           support_create(e->plain, 4 * MiB, 0, 0, NULL, QED_FORMAT_PROBE,
                          &err) == 0;
}

static void test_writer_held(const struct env *e)
{
    struct holder h;

    if (!hold(&h, e->plain, QED_OPEN_RDWR, "an image read-write"))
        return;
    expect_refused(e->plain, QED_OPEN_RDWR, "\"write\"", e->plain,
                   "read-write open of an image a writer holds");
    expect_refused(e->plain, 0, "shared \"write\"", e->plain,
                   "read-only open of an image a writer holds");
    expect_open(e->plain, QED_OPEN_FORCE_SHARE,
                "force-sharing read-only open of an image a writer holds");
    locks_are(e->plain, "100 101 103 201 203",
               "a writer holds QEMU's writer bytes 100 101 103 201 203, and "
               "refused opens left none");
    holder_stop(&h);
    expect_open(e->plain, QED_OPEN_RDWR,
                "read-write open once the writer closed (no lock leaked)");
}

static void test_reader_held(const struct env *e)
{
    struct holder h;

    if (!hold(&h, e->plain, 0, "an image read-only"))
        return;
    expect_refused(e->plain, QED_OPEN_RDWR, "\"write\"", e->plain,
                   "read-write open of an image a reader holds");
    expect_open(e->plain, 0, "read-only open of an image a reader holds");
    locks_are(e->plain, "100 201 203",
               "a reader holds QEMU's reader bytes 100 201 203");
    holder_stop(&h);
}

static void test_force_share_held(const struct env *e)
{
    struct holder h;

    if (!hold(&h, e->top, QED_OPEN_FORCE_SHARE,
              "an image and its chain read-only, forcing share"))
        return;
    expect_open(e->top, QED_OPEN_RDWR,
                "read-write open of an image a force-sharing reader holds");
    expect_open(e->base, QED_OPEN_RDWR,
                "read-write open of the backing file of a force-sharing "
                "reader (force share reaches the chain)");
    locks_are(e->top, "100", "a force-sharing reader holds byte 100 only");
    locks_are(e->base, "100", "... and so does its backing file");
    holder_stop(&h);
}

static void test_chain_of_writer(const struct env *e)
{
    struct holder h;

    if (!hold(&h, e->top, QED_OPEN_RDWR, "an image with a backing file "
              "read-write"))
        return;
    expect_open(e->base, 0, "the backing file of a writer opens read-only");
    expect_refused(e->base, QED_OPEN_RDWR, "\"write\"", e->base,
                   "the backing file of a writer does not open read-write");
    locks_are(e->top, "100 101 103 201 203",
              "the writer's image holds the writer bytes");
    locks_are(e->base, "100 201 203", "its backing file holds the reader "
              "bytes, as QEMU's backing files do");
    holder_stop(&h);
}

static void test_backing_refused(const struct env *e)
{
    struct holder h;
    qed_error err;
    int ret;

    if (!hold(&h, e->base, QED_OPEN_RDWR, "a backing file read-write"))
        return;
    ret = try_open(e->top, QED_OPEN_RDWR, QED_LOCK_AUTO, &err);
    ok(ret == -EAGAIN, "an image whose backing file a writer holds does not "
       "open");
    has_substr(err.message, "backing file '", "... naming the backing file");
    has_substr(err.message, "Failed to get shared \"write\" lock",
               "... and the lock");
    locks_are(e->top, "", "... and the image's own lock, taken "
               "first, was released");
    holder_stop(&h);
    expect_open(e->top, QED_OPEN_RDWR, "the image opens once the backing "
                "file is free");
}

static void test_options(const struct env *e)
{
    struct qed_open_options o = { .size = sizeof(o), .flags = QED_OPEN_RDWR |
                                           QED_OPEN_FORCE_SHARE };
    qed_image *img = NULL;
    qed_error err = { 0 };
    int ret = qed_open(e->plain, &o, &img, &err);

    ok(ret == -EINVAL && !img, "force sharing a read-write open is refused");
    is_str(err.message, "force-share=on can only be used with read-only "
           "images", "... with QEMU's message");
    memset(&o, 0, sizeof(o));
    o.locking = (enum qed_lock_mode)7;
    ret = qed_open(e->plain, &o, &img, &err);
    ok(ret == -EINVAL && !img, "an unknown locking mode is refused");
    locks_are(e->plain, "", "refused options leave no lock");
}

static void test_lock_off(const struct env *e)
{
    struct holder h;
    qed_error err;
    int ret;

    if (!hold(&h, e->plain, QED_OPEN_RDWR, "an image read-write (for OFF)"))
        return;
    ret = try_open(e->plain, 0, QED_LOCK_OFF, &err);
    if (!ok(ret == 0, "locking OFF opens what a writer holds"))
        tap_diag("ret %d: %s", ret, err.message);
    ret = try_open(e->plain, 0, QED_LOCK_ON, &err);
    ok(ret == -EAGAIN, "locking ON is refused like AUTO");
    holder_stop(&h);
}

static void test_create(const struct env *e)
{
    struct qed_create_options co = { .size = sizeof(co),
                                     .virtual_size = 1 * MiB };
    struct holder h;
    qed_error err = { 0 };
    uint8_t *before = NULL, *after = NULL;
    size_t before_len = 0, after_len = 0;
    int ret;

    if (!hold(&h, e->other, 0, "an image read-only (for create)"))
        return;
    support_read_file(e->other, &before, &before_len);
    ret = qed_create(e->other, &co, &err);
    ok(ret == -EAGAIN, "creating over an image a reader holds fails");
    has_substr(err.message, "Failed to get \"write\" lock",
               "... with QEMU's message");
    support_read_file(e->other, &after, &after_len);
    ok(before && after && before_len == after_len &&
       memcmp(before, after, before_len) == 0,
       "... leaving the file byte-identical (%zu bytes)", before_len);
    holder_stop(&h);
    locks_are(e->other, "", "... and no lock behind");
    ret = qed_create(e->other, &co, &err);
    if (!ok(ret == 0, "creating works once the reader closed"))
        tap_diag("%s", err.message);
    free(before);
    free(after);
}

static void test_error_paths(const struct env *e)
{
    char missing[1200], bad[1200];
    qed_error err = { 0 };
    uint8_t junk[4096];
    int ret;

    /* A backing file that does not exist: the image was locked, then the
     * open failed. */
    snprintf(missing, sizeof(missing), "%s/orphan.qed", e->dir);
    snprintf(bad, sizeof(bad), "%s/gone.qed", e->dir);
    support_create(bad, 1 * MiB, 0, 0, NULL, QED_FORMAT_PROBE, &err);
    support_create(missing, 1 * MiB, 0, 0, "gone.qed", QED_FORMAT_QED, &err);
    unlink(bad);
    ret = try_open(missing, QED_OPEN_RDWR, QED_LOCK_AUTO, &err);
    ok(ret < 0 && ret != -EAGAIN, "an image whose backing file is missing "
       "does not open");
    locks_are(missing, "", "... and leaves no lock");
    /* Not a QED image, opened as one. */
    snprintf(bad, sizeof(bad), "%s/bad.qed", e->dir);
    memset(junk, 0xa5, sizeof(junk));
    support_write_file(bad, junk, sizeof(junk));
    {
        struct qed_open_options o = { .size = sizeof(o), .flags = QED_OPEN_RDWR,
                                      .format = QED_FORMAT_QED };
        qed_image *img = NULL;
        ret = qed_open(bad, &o, &img, &err);
    }
    ok(ret < 0 && ret != -EAGAIN, "a file with a bad header does not open "
       "as QED");
    locks_are(bad, "", "... and leaves no lock");
}

/* Locks changed in place on one descriptor: up to a writer, refused when
 * a reader holds the file (and left as they were), down again. */
static void test_upgrade(const struct env *e)
{
    struct io_lock have = { 0 }, reader, writer;
    struct holder h;
    qed_error err = { 0 };
    int fd = open(e->other, O_RDWR | O_CLOEXEC);
    int ret;

    if (!ok(fd >= 0, "descriptor for the in-place changes"))
        return;
    qedi_io_lock_role(false, false, &reader);
    qedi_io_lock_role(true, false, &writer);
    ret = qedi_io_lock_change(fd, e->other, &have, &reader, &err);
    ok(ret == 0 && have.held == reader.held &&
       have.unshared == reader.unshared, "a descriptor takes the reader "
       "locks");
    ret = qedi_io_lock_change(fd, e->other, &have, &writer, &err);
    ok(ret == 0, "... and is upgraded to a writer's");
    locks_are(e->other, "100 101 103 201 203",
               "... holding the writer bytes");
    ret = qedi_io_lock_change(fd, e->other, &have, &reader, &err);
    ok(ret == 0 && have.held == reader.held, "... and downgraded again");
    locks_are(e->other, "100 201 203",
               "... holding the reader bytes");
    if (hold(&h, e->other, 0, "the file read-only (for the upgrade)")) {
        ret = qedi_io_lock_change(fd, e->other, &have, &writer, &err);
        ok(ret == -EAGAIN && have.held == reader.held &&
           have.unshared == reader.unshared,
           "an upgrade another reader conflicts with is refused and the "
           "descriptor keeps the reader locks");
        has_substr(err.message, "Failed to get \"write\" lock",
                   "... with QEMU's message");
        locks_are(e->other, "100 100 201 201 203 203",
                   "... and no byte of the refused upgrade stays locked");
        holder_stop(&h);
    }
    close(fd);
}

/* ---- file systems without OFD locks -------------------------------------------- */

static int fake_errno;
static unsigned fake_calls;

static int failing_fcntl(int fd, int cmd, struct flock *fl)
{
    (void)fd;
    (void)cmd;
    (void)fl;
    fake_calls++;
    errno = fake_errno;
    return -1;
}

static void test_unsupported(const struct env *e)
{
    static const struct { int code; const char *name; } unsupported[] = {
        { EINVAL, "EINVAL" }, { ENOTSUP, "ENOTSUP" },
        { EOPNOTSUPP, "EOPNOTSUPP" }, { ENOLCK, "ENOLCK" },
    }, other[] = {
        { EAGAIN, "EAGAIN" }, { EACCES, "EACCES" }, { EBADF, "EBADF" },
        { EIO, "EIO" },
    };
    struct qed_open_options o = { .size = sizeof(o) };
    io_lock_fcntl_fn *saved = qedi_io_lock_fcntl;
    qed_image *img = NULL;
    qed_error err = { 0 };
    int ret;

    for (size_t i = 0; i < sizeof(unsupported) / sizeof(*unsupported); i++)
        ok(qedi_io_lock_unsupported(unsupported[i].code), "%s means no OFD locks",
           unsupported[i].name);
    for (size_t i = 0; i < sizeof(other) / sizeof(*other); i++)
        ok(!qedi_io_lock_unsupported(other[i].code), "%s is not a missing-lock "
           "answer", other[i].name);

    qedi_io_lock_fcntl = failing_fcntl;
    fake_errno = ENOLCK;
    ret = qed_open(e->top, &o, &img, &err);
    if (ok(ret == 0, "AUTO opens where the file system has no OFD locks")) {
        has_substr(qed_warnings(img), "does not support OFD locks",
                   "... with a warning");
        has_substr(qed_warnings(img), "backing file '",
                   "... and one for the backing file");
        qed_close(img, NULL);
    } else {
        tap_diag("ret %d: %s", ret, err.message);
    }
    o.locking = QED_LOCK_ON;
    ret = qed_open(e->top, &o, &img, &err);
    ok(ret == -ENOLCK && !img, "ON fails there");
    has_substr(err.message, "does not support OFD locks", "... saying why");
    fake_errno = EIO;
    o.locking = QED_LOCK_AUTO;
    ret = qed_open(e->top, &o, &img, &err);
    ok(ret == -EIO && !img, "AUTO fails on other lock errors");
    fake_calls = 0;
    o.locking = QED_LOCK_OFF;
    ret = qed_open(e->top, &o, &img, &err);
    ok(ret == 0 && fake_calls == 0 && !qed_warnings(img),
       "OFF opens without asking for locks, and without a warning");
    qed_close(img, NULL);
    qedi_io_lock_fcntl = saved;
    o.locking = QED_LOCK_AUTO;
    ret = qed_open(e->top, &o, &img, &err);
    ok(ret == 0 && !qed_warnings(img), "with OFD locks, no warning");
    qed_close(img, NULL);
}

/* ---- operations on chains ------------------------------------------------------ */

static void test_commit_rebase(const struct env *e)
{
    struct holder h;
    qed_error err = { 0 };
    qed_image *img = NULL;
    int ret;

    ret = qed_commit(e->top, NULL, &err);
    if (!ok(ret == 0, "commit into an unheld backing file works (no "
            "conflict with itself)"))
        tap_diag("%s", err.message);
    if (hold(&h, e->base, 0, "the backing file read-only (for commit)")) {
        ret = qed_commit(e->top, NULL, &err);
        ok(ret == -EAGAIN, "commit into a backing file a reader holds fails");
        has_substr(err.message, "Failed to get \"write\" lock",
                   "... with QEMU's message");
        holder_stop(&h);
    }
    if (hold(&h, e->top, QED_OPEN_RDWR, "the image read-write (for commit)")) {
        ret = qed_commit(e->top, NULL, &err);
        ok(ret == -EAGAIN, "commit of an image a writer holds fails");
        holder_stop(&h);
    }
    locks_are(e->base, "", "refused commits leave no lock on "
               "the backing file");

    {
        struct qed_open_options o = { .size = sizeof(o),
                                      .flags = QED_OPEN_RDWR };
        ret = qed_open(e->top, &o, &img, &err);
    }
    if (!ok(ret == 0, "open the image read-write for rebase")) {
        tap_diag("%s", err.message);
        return;
    }
    if (hold(&h, e->other, QED_OPEN_RDWR, "a new backing file read-write")) {
        ret = qed_rebase(img, "other.qed", QED_FORMAT_QED, 0, NULL, &err);
        ok(ret == -EAGAIN, "rebase onto a file a writer holds fails with "
           "EAGAIN, not as a loop");
        has_substr(err.message, "Failed to get shared \"write\" lock",
                   "... with QEMU's message");
        holder_stop(&h);
    }
    ret = qed_rebase(img, "top.qed", QED_FORMAT_QED, 0, NULL, &err);
    ok(ret == -ELOOP, "rebase onto itself is a loop, not a lock conflict");
    ret = qed_rebase(img, "other.qed", QED_FORMAT_QED, 0, NULL, &err);
    if (!ok(ret == 0, "rebase onto a free file works"))
        tap_diag("%s", err.message);
    locks_are(e->other, "100 201 203",
              "the new backing file holds the reader bytes");
    locks_are(e->base, "", "the old one none");
    qed_close(img, NULL);
}

int main(void)
{
    struct env e;

    signal(SIGPIPE, SIG_IGN);
    if (support_mkdtemp("lock", e.dir, sizeof(e.dir)) < 0 ||
        !make_images(&e)) {
        printf("1..0 # SKIP cannot make test images\n");
        return 0;
    }
    test_writer_held(&e);
    test_reader_held(&e);
    test_force_share_held(&e);
    test_chain_of_writer(&e);
    test_backing_refused(&e);
    test_options(&e);
    test_lock_off(&e);
    test_create(&e);
    test_error_paths(&e);
    test_upgrade(&e);
    test_unsupported(&e);
    test_commit_rebase(&e);
    support_rmtree(e.dir);
    return tap_done();
}
