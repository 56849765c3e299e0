/* SPDX-License-Identifier: MIT */
/* `qed mount`: the image as a plain raw file, through FUSE. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "mount.h"

#define MAX_FUSE_OPTIONS 4096

struct mount_settings {
    struct qedi_mount_options mount;
    enum qed_format format;
    bool force_share;
    bool copy_on_read;
    bool daemon;
    char fuse_options[MAX_FUSE_OPTIONS];
    char file_name[256];
};

/* The file a directory mount point holds: the image's base name without
 * its extension ("disk.qed" -> "disk"; ".qed" and "disk" stay). */
static void derive_file_name(const char *image, char *out, size_t len)
{
    const char *base = strrchr(image, '/');
    const char *dot;
    size_t n;

    base = base ? base + 1 : image;
    dot = strrchr(base, '.');
    n = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    if (n >= len)
        n = len - 1;
    memcpy(out, base, n);
    out[n] = '\0';
}

/* ---- signals ------------------------------------------------------------------ */

static void on_signal(void *opaque, int fd, unsigned events)
{
    struct qedi_mount *m = opaque;
    struct signalfd_siginfo si;
    (void)events;

    while (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
        qedi_mount_shutdown(m);
}

static void shutdown_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGHUP);
}

/* Blocked from just before the mount: a signal that comes while the mount
 * is being set up waits (pending) for the signalfd, instead of killing the
 * process and leaving a dead mount behind. */
static void block_signals(void)
{
    sigset_t set;

    shutdown_signals(&set);
    sigprocmask(SIG_BLOCK, &set, NULL);
}

static int watch_signals(qed_loop *loop, struct qedi_mount *m)
{
    sigset_t set;
    int fd;

    shutdown_signals(&set);
    fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (qed_loop_watch_fd(loop, fd, QED_LOOP_READ, on_signal, m) < 0) {
        close(fd);
        return -EIO;
    }
    return fd;
}

/* ---- --daemon ------------------------------------------------------------------ */

/* The parent waits on a pipe: one byte means the mount is usable and it
 * exits 0; the pipe closing without it means the child failed (and said
 * why on the shared stderr), and the parent exits with its status. */
static int ready_fd = -1;

static bool fork_daemon(int *exit_status)
{
    int p[2], status = 0;
    ssize_t n;
    pid_t pid;
    char c;

    if (pipe2(p, O_CLOEXEC) < 0) {
        tool_error(NULL, "pipe: %s", strerror(errno));
        *exit_status = 1;
        return false;
    }
    pid = fork();
    if (pid < 0) {
        tool_error(NULL, "fork: %s", strerror(errno));
        *exit_status = 1;
        return false;
    }
    if (pid == 0) {
        close(p[0]);
        ready_fd = p[1];
        setsid();
        return true;
    }
    close(p[1]);
    do
        n = read(p[0], &c, 1);
    while (n < 0 && errno == EINTR);
    close(p[0]);
    if (n == 1) {
        *exit_status = 0;
        return false;
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    *exit_status = WIFEXITED(status) && WEXITSTATUS(status) != 0
                       ? WEXITSTATUS(status) : 1;
    return false;
}

/* The mount is usable: tell the parent, and let go of the terminal and of
 * whatever pipes the caller may be reading (so `$(qed mount --daemon ...)`
 * returns). */
static void daemon_ready(void)
{
    int null;

    if (ready_fd < 0)
        return;
    null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        if (null > STDERR_FILENO)
            close(null);
    }
    if (chdir("/") < 0) {
        /* Nothing depends on the directory: paths are absolute by now. */
    }
    if (write(ready_fd, "", 1) < 0) {
        /* The parent is gone; nothing to tell. */
    }
    close(ready_fd);
    ready_fd = -1;
}

/* ---- running ------------------------------------------------------------------ */

static int run_mount(qed_image *img, struct qedi_mount *m, const char *file)
{
    qed_loop *loop = qed_image_loop(img);
    int sigfd = watch_signals(loop, m), status = 0;

    if (sigfd < 0) {
        tool_error(file, "cannot watch signals: %s", strerror(-sigfd));
        qedi_mount_shutdown(m);
        qedi_mount_shutdown(m);
        status = 1;
    }
    daemon_ready();
    while (!qedi_mount_finished(m)) {
        int r = qed_loop_run(loop, -1);
        if (r < 0) {
            tool_error(file, "event loop: %s", strerror(-r));
            qedi_mount_shutdown(m);
            qedi_mount_shutdown(m);
            status = 1;
            qed_drain(img, NULL);
            break;
        }
        qedi_mount_service(m);
    }
    if (sigfd >= 0) {
        qed_loop_unwatch_fd(loop, sigfd);
        close(sigfd);
    }
    return status;
}

static int mount_image(struct mount_settings *s, const char *file,
                       const char *mountpoint)
{
    unsigned flags = (s->mount.read_only ? 0 : QED_OPEN_RDWR) |
                     (s->force_share ? QED_OPEN_FORCE_SHARE : 0) |
                     (s->copy_on_read ? QED_OPEN_COPY_ON_READ : 0);
    struct qedi_mount *m;
    qed_image *img;
    qed_error err = { 0 };
    int status;

    if (!tool_open(file, s->format, flags, &img))
        return 1;
    s->mount.notice = tool_print_notice;
    s->mount.notice_opaque = (void *)file;
    s->mount.fs_name = file;
    block_signals();
    signal(SIGPIPE, SIG_IGN);
    if (qedi_mount_new(img, mountpoint, &s->mount, &m, &err) < 0) {
        tool_report(file, NULL, &err);
        tool_close(file, img);
        return 1;
    }
    status = run_mount(img, m, file);
    qedi_mount_free(m);
    if (!tool_close(file, img))
        status = 1;
    return status;
}

static bool add_fuse_options(struct mount_settings *s, const char *text)
{
    size_t n = strlen(s->fuse_options);

    if (n + strlen(text) + 2 > sizeof(s->fuse_options)) {
        tool_error(NULL, "-o options are longer than %d bytes",
                   MAX_FUSE_OPTIONS - 1);
        return false;
    }
    snprintf(s->fuse_options + n, sizeof(s->fuse_options) - n, "%s%s",
             n ? "," : "", text);
    return true;
}

enum { OPT_ALLOW_OTHER = TOOL_OPT_HELP + 1, OPT_DAEMON, OPT_COPY_ON_READ };

static int mount_main(const struct tool_command *cmd, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, TOOL_OPT_HELP },
        { "read-only", no_argument, NULL, 'r' },
        { "format", required_argument, NULL, 'f' },
        TOOL_FORCE_SHARE_OPTION,
        { "allow-other", no_argument, NULL, OPT_ALLOW_OTHER },
        { "daemon", no_argument, NULL, OPT_DAEMON },
        { "copy-on-read", no_argument, NULL, OPT_COPY_ON_READ },
        { "options", required_argument, NULL, 'o' },
        { NULL, 0, NULL, 0 },
    };
    struct mount_settings s;
    int ch, status;

    memset(&s, 0, sizeof(s));
    while ((ch = getopt_long(argc, argv, ":hrf:Uo:", longopts, NULL)) != -1) {
        switch (ch) {
        case 'h':
        case TOOL_OPT_HELP:
            tool_print_help(stdout, cmd);
            return 0;
        case 'r':
            s.mount.read_only = true;
            break;
        case 'f':
            if (!tool_parse_format(optarg, &s.format))
                return 1;
            break;
        case 'U':
            s.force_share = true;
            break;
        case OPT_ALLOW_OTHER:
            s.mount.allow_other = true;
            break;
        case OPT_DAEMON:
            s.daemon = true;
            break;
        case OPT_COPY_ON_READ:
            s.copy_on_read = true;
            break;
        case 'o':
            if (!add_fuse_options(&s, optarg))
                return 1;
            break;
        default:
            return tool_bad_option(cmd, ch, argv);
        }
    }
    if (optind != argc - 2)
        return tool_bad_usage(cmd, "expected an image and a mount point");
    if (s.force_share && !s.mount.read_only)
        return tool_bad_usage(cmd, "-U/--force-share needs -r: a writable "
                                   "mount cannot share the image");
    if (s.copy_on_read && s.mount.read_only)
        return tool_bad_usage(cmd, "--copy-on-read writes into the image: "
                                   "it cannot be used with -r");
    s.mount.fuse_options = s.fuse_options;
    derive_file_name(argv[optind], s.file_name, sizeof(s.file_name));
    s.mount.file_name = s.file_name;
    if (s.daemon && !fork_daemon(&status))
        return status;
    return mount_image(&s, argv[optind], argv[optind + 1]);
}

const struct tool_command mount_command = {
    .name = "mount",
    .synopsis = "[-r [-U]] [-f FMT] [--allow-other] [--daemon] [--copy-on-read] "
                "[-o FUSE_OPTIONS] IMAGE MOUNTPOINT",
    .summary = "Show an image as a plain raw file (FUSE).",
    .details =
        "MOUNTPOINT is an existing regular file, which the image's content\n"
        "covers, or a directory, which then holds one file named after the\n"
        "image without its extension (disk.qed -> MOUNTPOINT/disk).\n"
        "Options:\n"
        "  -r, --read-only        read-only: writes fail with EROFS\n"
        "  -U, --force-share      with -r: open without conflicting with a\n"
        "                         program writing the image (what is read\n"
        "                         may then be inconsistent)\n"
        "  -f, --format=FMT       image format (qed or raw; default probed)\n"
        "  --copy-on-read         what is read from the backing chain is also\n"
        "                         written into the image (not with -r)\n"
        "  --allow-other          let other users open the file (mode 0644,\n"
        "                         0444 with -r; chmod changes it)\n"
        "  --daemon               detach once the mount is usable; the\n"
        "                         command returns then (exit status 0), or\n"
        "                         with the error if it failed\n"
        "  -o OPTIONS             FUSE mount options (e.g. max_read=N);\n"
        "                         may be repeated\n"
        "The file is like a disk: writes past its end fail with ENOSPC and\n"
        "O_TRUNC is ignored; ftruncate resizes the image.  fsync flushes,\n"
        "fallocate punches holes or zeroes, SEEK_DATA/SEEK_HOLE follow the\n"
        "image's allocation.\n"
        "Runs until unmounted (fusermount3 -u, umount) or SIGINT/SIGTERM,\n"
        "which detach the mount point (files still open keep working until\n"
        "closed; a second signal cuts them off); then requests in flight\n"
        "finish, the image is flushed and closed clean, exit status 0.\n",
    .run = mount_main,
};
