/* SPDX-License-Identifier: MIT */
/* The file's metadata: names (a directory mount holds one file), attributes,
 * opening and closing, and what changes of the tree are refused. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/statvfs.h>

#include "export.h"

#define STAT_BLOCK_SIZE 512      /* st_blocks counts these */
#define DEFAULT_IO_SIZE 4096u    /* st_blksize when the image has no
                                    clusters (raw) */
#define NAME_MAX_LEN 255

static struct qedi_mount *mount_of(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

static bool is_file(const struct qedi_mount *m, fuse_ino_t ino)
{
    return ino == (m->dir_mode ? EXPORT_FILE_INO : EXPORT_ROOT_INO);
}

static bool is_dir(const struct qedi_mount *m, fuse_ino_t ino)
{
    return m->dir_mode && ino == EXPORT_ROOT_INO;
}

void qedi_mount_touch(struct timespec *when)
{
    clock_gettime(CLOCK_REALTIME_COARSE, when);
}

/* st_blocks is the space the image file takes on the host, as du shows
 * for the image itself; st_blksize the cluster size, the unit the image
 * allocates in. */
void qedi_mount_file_stat(struct qedi_mount *m, struct stat *st)
{
    struct qed_image_info info;

    qed_image_info_init(&info);
    memset(st, 0, sizeof(*st));
    st->st_ino = m->dir_mode ? EXPORT_FILE_INO : EXPORT_ROOT_INO;
    st->st_mode = S_IFREG | m->file_mode;
    st->st_nlink = 1;
    st->st_uid = m->uid;
    st->st_gid = m->gid;
    st->st_size = (off_t)qed_size(m->img);
    st->st_blksize = DEFAULT_IO_SIZE;
    if (qed_get_info(m->img, &info, NULL) == 0) {
        st->st_blocks = (blkcnt_t)((info.actual_size + STAT_BLOCK_SIZE - 1) /
                                   STAT_BLOCK_SIZE);
        if (info.cluster_size)
            st->st_blksize = info.cluster_size;
    }
    st->st_atim = m->atime;
    st->st_mtim = m->mtime;
    st->st_ctim = m->ctime;
}

static void dir_stat(const struct qedi_mount *m, struct stat *st)
{
    memset(st, 0, sizeof(*st));
    st->st_ino = EXPORT_ROOT_INO;
    st->st_mode = S_IFDIR | m->dir_mode_bits;
    st->st_nlink = 2;
    st->st_uid = m->uid;
    st->st_gid = m->gid;
    st->st_blksize = DEFAULT_IO_SIZE;
    st->st_atim = m->atime;
    st->st_mtim = m->ctime;
    st->st_ctim = m->ctime;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct qedi_mount *m = mount_of(req);
    struct fuse_entry_param e;

    if (!is_dir(m, parent) || strcmp(name, m->file_name) != 0) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    memset(&e, 0, sizeof(e));
    e.ino = EXPORT_FILE_INO;
    e.attr_timeout = EXPORT_ATTR_TIMEOUT_S;
    e.entry_timeout = EXPORT_ATTR_TIMEOUT_S;
    qedi_mount_file_stat(m, &e.attr);
    fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
                       struct fuse_file_info *fi)
{
    struct qedi_mount *m = mount_of(req);
    struct stat st;
    (void)fi;

    if (is_file(m, ino))
        qedi_mount_file_stat(m, &st);
    else if (is_dir(m, ino))
        dir_stat(m, &st);
    else {
        fuse_reply_err(req, ENOENT);
        return;
    }
    fuse_reply_attr(req, &st, EXPORT_ATTR_TIMEOUT_S);
}

static void set_time(struct timespec *t, const struct timespec *given,
                     bool now)
{
    if (now)
        qedi_mount_touch(t);
    else
        *t = *given;
}

/* Mode, owner and times are kept for the mount's life (so chmod, touch and
 * cp -p work); they do not reach the image. */
static void change_attributes(struct qedi_mount *m, bool dir,
                              const struct stat *attr, int to_set)
{
    if (to_set & FUSE_SET_ATTR_MODE) {
        if (dir)
            m->dir_mode_bits = attr->st_mode & 07777;
        else
            m->file_mode = attr->st_mode & 07777;
    }
    if (to_set & FUSE_SET_ATTR_UID)
        m->uid = attr->st_uid;
    if (to_set & FUSE_SET_ATTR_GID)
        m->gid = attr->st_gid;
    if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW))
        set_time(&m->atime, &attr->st_atim, to_set & FUSE_SET_ATTR_ATIME_NOW);
    if (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW))
        set_time(&m->mtime, &attr->st_mtim, to_set & FUSE_SET_ATTR_MTIME_NOW);
    qedi_mount_touch(&m->ctime);
}

/* A size change is a resize of the image, except a truncation to zero
 * bytes that comes without an open file: that is open(O_TRUNC) (or
 * truncate(1) by name), ignored as a block device ignores it, so that
 * `cp disk.raw MOUNTED` or a shell redirection overwrites the disk instead
 * of emptying it. */
static bool is_open_truncation(const struct stat *attr,
                               const struct fuse_file_info *fi)
{
    return attr->st_size == 0 && fi == NULL;
}

void qedi_mount_defer_resize(struct qedi_mount *m, fuse_req_t req,
                             uint64_t size)
{
    m->resize_req = req;
    m->resize_to = size;
}

int qedi_mount_run_resize(struct qedi_mount *m, qed_error *err)
{
    fuse_req_t req = m->resize_req;
    uint64_t old = qed_size(m->img);
    struct stat st;
    int r;

    r = qed_resize(m->img, m->resize_to,
                   m->resize_to < old ? QED_RESIZE_SHRINK : 0, err);
    m->resize_req = NULL;
    if (r < 0) {
        fuse_reply_err(req, qedi_mount_errno(r));
        return r;
    }
    qedi_mount_touch(&m->mtime);
    m->ctime = m->mtime;
    qedi_mount_file_stat(m, &st);
    fuse_reply_attr(req, &st, EXPORT_ATTR_TIMEOUT_S);
    return 0;
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
                       int to_set, struct fuse_file_info *fi)
{
    struct qedi_mount *m = mount_of(req);
    bool dir = is_dir(m, ino);
    struct stat st;

    if (!dir && !is_file(m, ino)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if ((to_set & FUSE_SET_ATTR_SIZE) && dir) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    if ((to_set & FUSE_SET_ATTR_SIZE) && m->read_only) {
        fuse_reply_err(req, EROFS);
        return;
    }
    if ((to_set & FUSE_SET_ATTR_SIZE) && attr->st_size < 0) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    change_attributes(m, dir, attr, to_set);
    if ((to_set & FUSE_SET_ATTR_SIZE) && !is_open_truncation(attr, fi) &&
        (uint64_t)attr->st_size != qed_size(m->img)) {
        qedi_mount_defer_resize(m, req, (uint64_t)attr->st_size);
        return;
    }
    if (dir)
        dir_stat(m, &st);
    else
        qedi_mount_file_stat(m, &st);
    fuse_reply_attr(req, &st, EXPORT_ATTR_TIMEOUT_S);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct qedi_mount *m = mount_of(req);

    if (is_dir(m, ino)) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    if (!is_file(m, ino)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if ((fi->flags & O_ACCMODE) != O_RDONLY && m->read_only) {
        fuse_reply_err(req, EROFS);
        return;
    }
    /* The data changes only through this mount, so what the kernel has
     * cached stays right from one open to the next. */
    fi->keep_cache = 1;
    m->open_files++;
    fuse_reply_open(req, fi);
}

static void op_release(fuse_req_t req, fuse_ino_t ino,
                       struct fuse_file_info *fi)
{
    struct qedi_mount *m = mount_of(req);
    (void)ino;
    (void)fi;

    if (m->open_files > 0)
        m->open_files--;
    fuse_reply_err(req, 0);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino,
                       struct fuse_file_info *fi)
{
    struct qedi_mount *m = mount_of(req);

    if (!is_dir(m, ino)) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    fuse_reply_open(req, fi);
}

/* ".", ".." and the file, at offsets 1, 2, 3 (the offset of an entry is
 * where the next listing starts). */
static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    struct qedi_mount *m = mount_of(req);
    const char *names[] = { ".", "..", m->file_name };
    char buf[3 * (NAME_MAX_LEN + 64)];
    size_t used = 0, limit = size < sizeof(buf) ? size : sizeof(buf);
    struct stat st;
    (void)fi;

    if (!is_dir(m, ino)) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    for (off_t i = off < 0 ? 0 : off; i < 3; i++) {
        size_t n;

        memset(&st, 0, sizeof(st));
        st.st_ino = i == 2 ? EXPORT_FILE_INO : EXPORT_ROOT_INO;
        st.st_mode = i == 2 ? S_IFREG : S_IFDIR;
        n = fuse_add_direntry(req, buf + used, limit - used, names[i], &st,
                              i + 1);
        if (n > limit - used)
            break;
        used += n;
    }
    fuse_reply_buf(req, buf, used);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    struct qedi_mount *m = mount_of(req);
    struct statvfs sv;
    (void)ino;

    memset(&sv, 0, sizeof(sv));
    sv.f_bsize = DEFAULT_IO_SIZE;
    sv.f_frsize = DEFAULT_IO_SIZE;
    sv.f_blocks = qed_size(m->img) / DEFAULT_IO_SIZE;
    sv.f_files = m->dir_mode ? 2 : 1;
    sv.f_namemax = NAME_MAX_LEN;
    fuse_reply_statfs(req, &sv);
}

/* The mount holds exactly one file: nothing is created, removed or
 * renamed. */
static void refuse_entry(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct qedi_mount *m = mount_of(req);
    (void)parent;
    (void)name;
    fuse_reply_err(req, m->read_only ? EROFS : EPERM);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
                     mode_t mode, dev_t rdev)
{
    (void)mode;
    (void)rdev;
    refuse_entry(req, parent, name);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
                     mode_t mode)
{
    (void)mode;
    refuse_entry(req, parent, name);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name,
                      mode_t mode, struct fuse_file_info *fi)
{
    (void)mode;
    (void)fi;
    refuse_entry(req, parent, name);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
                       const char *name)
{
    (void)link;
    refuse_entry(req, parent, name);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent,
                    const char *name)
{
    (void)ino;
    refuse_entry(req, parent, name);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
                      fuse_ino_t newparent, const char *newname,
                      unsigned int flags)
{
    (void)newparent;
    (void)newname;
    (void)flags;
    refuse_entry(req, parent, name);
}

void qedi_mount_set_inode_ops(struct fuse_lowlevel_ops *ops)
{
    ops->lookup = op_lookup;
    ops->getattr = op_getattr;
    ops->setattr = op_setattr;
    ops->open = op_open;
    ops->release = op_release;
    ops->opendir = op_opendir;
    ops->readdir = op_readdir;
    ops->statfs = op_statfs;
    ops->mknod = op_mknod;
    ops->mkdir = op_mkdir;
    ops->create = op_create;
    ops->symlink = op_symlink;
    ops->link = op_link;
    ops->rename = op_rename;
    ops->unlink = refuse_entry;
    ops->rmdir = refuse_entry;
}
