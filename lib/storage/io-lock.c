/* SPDX-License-Identifier: MIT */
/* Image locks with QEMU's layout (see io.h).  A lock state is changed the
 * way QEMU changes it: take the union of the old and the new bytes, then
 * test for conflicting bytes held by other open files, then drop what is no
 * longer needed (or, on a conflict, what the old state did not hold).
 * Taking before testing means two programs racing for one image both see
 * each other's bytes; shared read locks never conflict among themselves,
 * so taking them can only fail for reasons other than another user. */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "storage.h"

#define LOCK_HELD_BASE 100
#define LOCK_UNSHARED_BASE 200
#define PERM_COUNT 4

static int real_fcntl(int fd, int cmd, struct flock *fl)
{
    return fcntl(fd, cmd, fl);
}

io_lock_fcntl_fn *qedi_io_lock_fcntl = real_fcntl;

static const char *const perm_names[PERM_COUNT] = {
    "consistent read",
    "write",
    "write unchanged",
    "resize",
};

const char *qedi_io_lock_perm_name(unsigned perm)
{
    for (unsigned i = 0; i < PERM_COUNT; i++)
        if (perm == 1u << i)
            return perm_names[i];
    return "unknown";
}

void qedi_io_lock_role(bool writer, bool share_all, struct io_lock *out)
{
    /* A writer also resizes (the image grows as clusters are allocated);
     * neither a reader nor a writer lets others write or resize under it,
     * unless the reader was told to share everything. */
    out->held = IO_PERM_CONSISTENT_READ;
    if (writer)
        out->held |= IO_PERM_WRITE | IO_PERM_RESIZE;
    out->unshared = share_all && !writer ? 0
                                         : IO_PERM_WRITE | IO_PERM_RESIZE;
}

void qedi_io_lock_create_role(struct io_lock *out)
{
    /* Creating writes and truncates the file; others may go on reading or
     * writing it, as QEMU's create lets them, but not resize it. */
    out->held = IO_PERM_WRITE | IO_PERM_RESIZE;
    out->unshared = IO_PERM_RESIZE;
}

bool qedi_io_lock_unsupported(int errnum)
{
    return errnum == EINVAL || errnum == ENOTSUP || errnum == EOPNOTSUPP ||
           errnum == ENOLCK;
}

static int lock_byte(int fd, int byte, short type)
{
    struct flock fl = {
        .l_type = type,
        .l_whence = SEEK_SET,
        .l_start = byte,
        .l_len = 1,
    };

    return qedi_io_lock_fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* 1 when another open file holds byte (in any mode that a write lock would
 * conflict with), 0 when nobody does, or -errno. */
static int byte_taken(int fd, int byte)
{
    struct flock fl = {
        .l_type = F_WRLCK,
        .l_whence = SEEK_SET,
        .l_start = byte,
        .l_len = 1,
    };

    if (qedi_io_lock_fcntl(fd, F_OFD_GETLK, &fl) < 0)
        return -errno;
    return fl.l_type != F_UNLCK;
}

/* Locks the bytes of want missing from *have, and, when release, unlocks
 * those of *have that want lacks; *have follows every byte changed, so a
 * failure leaves it true. */
static int apply(int fd, struct io_lock *have, const struct io_lock *want,
                 bool release)
{
    static const int bases[2] = { LOCK_HELD_BASE, LOCK_UNSHARED_BASE };
    unsigned *have_bits[2] = { &have->held, &have->unshared };
    const unsigned want_bits[2] = { want->held, want->unshared };

    for (int set = 0; set < 2; set++) {
        for (unsigned i = 0; i < PERM_COUNT; i++) {
            unsigned bit = 1u << i;
            bool has = (*have_bits[set] & bit) != 0;
            bool wants = (want_bits[set] & bit) != 0;
            int ret;

            if (wants && !has) {
                ret = lock_byte(fd, bases[set] + (int)i, F_RDLCK);
                if (ret < 0)
                    return ret;
                *have_bits[set] |= bit;
            } else if (release && has && !wants) {
                ret = lock_byte(fd, bases[set] + (int)i, F_UNLCK);
                if (ret < 0)
                    return ret;
                *have_bits[set] &= ~bit;
            }
        }
    }
    return 0;
}

static int conflict(const char *path, bool shared, unsigned perm,
                    qed_error *err)
{
    return qedi_fail(err, EAGAIN, "Failed to get %s\"%s\" lock. Is another "
                    "process using the image [%s]?", shared ? "shared " : "",
                    qedi_io_lock_perm_name(perm), path);
}

/* QEMU's order: the permissions to hold first (is any of them not shared
 * by someone?), then those not to share (does anyone hold one?). */
static int test_conflicts(int fd, const char *path, const struct io_lock *want,
                          qed_error *err)
{
    for (int pass = 0; pass < 2; pass++) {
        unsigned bits = pass == 0 ? want->held : want->unshared;
        int base = pass == 0 ? LOCK_UNSHARED_BASE : LOCK_HELD_BASE;

        for (unsigned i = 0; i < PERM_COUNT; i++) {
            int taken;

            if (!(bits & (1u << i)))
                continue;
            taken = byte_taken(fd, base + (int)i);
            if (taken < 0)
                return qedi_fail(err, -taken, "testing lock byte %d: %s",
                                base + (int)i, strerror(-taken));
            if (taken)
                return conflict(path, pass == 1, 1u << i, err);
        }
    }
    return 0;
}

int qedi_io_lock_change(int fd, const char *path, struct io_lock *current,
                   const struct io_lock *want, qed_error *err)
{
    struct io_lock before = *current;
    struct io_lock both = {
        .held = current->held | want->held,
        .unshared = current->unshared | want->unshared,
    };
    int ret = apply(fd, current, &both, false);

    if (ret < 0)
        ret = qedi_fail(err, -ret, "locking: %s", strerror(-ret));
    else
        ret = test_conflicts(fd, path, want, err);
    if (ret < 0) {
        /* Back to what was held: only unlocking, which does not fail on a
         * file that could be locked. */
        apply(fd, current, &before, true);
        return ret;
    }
    ret = apply(fd, current, want, true);
    if (ret < 0)
        return qedi_fail(err, -ret, "unlocking: %s", strerror(-ret));
    return 0;
}

int qedi_io_lock_open_fd(int fd, const char *path, unsigned io_flags,
                    const struct io_lock *want, struct io_lock *current,
                    bool *unsupported, qed_error *err)
{
    qed_error lock_err = { 0 };
    int ret;

    *unsupported = false;
    if (io_flags & IO_OPEN_LOCK_OFF)
        return 0;
    ret = qedi_io_lock_change(fd, path, current, want, &lock_err);
    if (ret == 0)
        return 0;
    if (ret == -EAGAIN || !qedi_io_lock_unsupported(-ret)) {
        qedi_error_copy(err, &lock_err);
        return ret;
    }
    if (io_flags & IO_OPEN_LOCK_REQUIRED)
        return qedi_fail(err, -ret, "locking was required but the file "
                        "system does not support OFD locks (%s)",
                        strerror(-ret));
    *unsupported = true;
    return 0;
}
